"""Near-collapse response of the perturbation model (Tirer, Huang & Niles-Weed 2023, Sec. 4).

Vectorization (their eq. 6): vec(H) stacks the columns of H (d x Kn, class-major), so the class-k
block of vec(H) is entries dn(k-1) .. dnk - 1 and holds vec(H^{(k)}), H^{(k)} the d x n columns
of class k. A block vector v of length dn is the d x n matrix ``v.reshape(n, d).T``.

Operators, at a minimizer Ĥ of f(·; H0) with Ŵ = W*(Ĥ), residual R = ŴĤ - Y, A = ĤĤᵀ + nλ_W I,
all in the paper's normalization:

* M = Kn ∇²L(Ĥ), the Hessian of the reduced objective (:mod:`nclab.models.perturbation`), i.e. the
  Schur complement of the (Kn-scaled) Hessian of f without the proximity term:
  M = λ_H I + I_{Kn} ⊗ ŴᵀŴ - Uᵀ C⁻¹ U with C = A ⊗ I_K (the W-W block) and U = Eᵀ + Ĥ ⊗ Ŵ
  (the W-H block; E as in their Theorem 4.1). Acting on matrices: U(Δ) = RΔᵀ + ŴΔĤᵀ (K x d),
  Uᵀ(X) = XᵀR + ŴᵀXĤ (d x Kn), C⁻¹X = XA⁻¹.
* F = I - M/β: their eq. 5 (I - (λ_H/β)I - (1/β) I ⊗ ŴᵀŴ + (1/β)Z*, Z* = UᵀC⁻¹U).
* J = dĤ/dH0 = β(M + βI)⁻¹, exact: differentiate the optimality condition Kn∇L(Ĥ) +
  β(Ĥ - H0) = 0 (their Theorem 4.1, first display). J = F + O(β⁻²). Matrix-free by Woodbury:
  with D = I_{Kn} ⊗ Q, Q = (λ_H + β)I_d + ŴᵀŴ, M + βI = D - UᵀC⁻¹U and
  (M + βI)⁻¹ = D⁻¹ + D⁻¹Uᵀ S⁻¹ U D⁻¹, S = C - U D⁻¹ Uᵀ (dK x dK, positive definite at a minimizer:
  it is a Schur complement of the positive definite Hessian of f). So every block of J and F costs
  O(d²n + dK·d) per product and nothing of size (dKn)² is formed.

Complete spectrum at a collapsed H0 (:func:`collapsed_spectrum`), derived here (the paper states
σ_max, σ_min of F_kk and σ_max of F_kk'). At H* = √ρ R ⊗ 1ᵀ (R orthonormal, u_k = R e_k,
c = √(λ_Hλ_W) < 1, a = (1-c)√(λ_H/λ_W), so W*ᵀW* = a RRᵀ and ac = λ_H(1-c)), write Δ's columns of
class l as δ_{l,i}, their class mean m_l. Expanding the Hessian in the kernel form
Kn L(H) = (nλ_W/2) tr(YᵀY (HᵀH + nλ_W I)⁻¹) + (λ_H/2)‖H‖² at HᵀH = ρ YᵀY gives, column by column,

    (MΔ)_{l,i} = λ_H(δ_{l,i} - m_l) + a P(δ_{l,i} - m_l) + 2ac P m_l + 2ac Σ_j u_j (m_jᵀu_l),

P = RRᵀ. Inside a class block this has five eigen-directions (the multiplicities add up to dn):

=====================================  ======================  ==========  =========================
direction in class k                   multiplicity            M_kk        J_kk
=====================================  ======================  ==========  =========================
v 1ᵀ, v ⊥ span R (shift outside)       d - K                   0           1
v zᵀ, v ⊥ span R, z ⊥ 1 (deviation)    (d - K)(n - 1)          λ_H         β/(β + λ_H)
u_j 1ᵀ, j ≠ k (shift towards u_j)      K - 1                   2ac         (β + 2ac)/(β + 4ac)
u_k 1ᵀ (scaling of the own mean)       1                       4ac         β/(β + 4ac)
u_j zᵀ, z ⊥ 1 (deviation in span)      K(n - 1)                √(λ_H/λ_W)  β/(β + √(λ_H/λ_W))
=====================================  ======================  ==========  =========================

F_kk = I - M_kk/β is symmetric: its singular values are |1 - μ/β|. The shift u_j 1ᵀ in class k
also moves class j along u_k by 2ac (the only inter-class coupling), so F_jk = -(2ac/β) (rank one,
σ = 2λ_H(1-c)/β: Theorem 4.2) and on the pair x = u_j1ᵀ@k, y = u_k1ᵀ@j the whole M has the
eigenvalues 4ac (x + y) and 0 (x - y: a rotation of the frame, tangent to the minimizers);
hence J's class-k part (β + 2ac)/(β + 4ac) and J_jk's σ = 2ac/(β + 4ac). The whole F has the
eigenvalues 1 (multiplicity K(d - K) + K(K-1)/2, the tangent space of the minimizers' orbit
{QH*}), 1 - λ_H/β (K(d - K)(n - 1)), 1 - 4ac/β (K(K+1)/2) and 1 - √(λ_H/λ_W)/β (K²(n - 1)).
Orderings: 0 <= 2ac <= 4ac <= √(λ_H/λ_W) (4c(1-c) <= 1) and λ_H <= √(λ_H/λ_W) (c <= 1); values
merge at c = 1/2 (λ_H = 2ac and 4ac = √(λ_H/λ_W)) and at c = 3/4 (λ_H = 4ac). F_kk is singular
exactly when β equals one of the non-zero M_kk eigenvalues present, and for
β > √(λ_H/λ_W) all its eigenvalues lie in (0, 1], so σ_min = 1 - √(λ_H/λ_W)/β. J_kk is always
full rank. For c >= 1 the collapsed minimizer is H = 0, where M = λ_H I - (1/λ_W)Π (Π the
projector onto class-constant directions): eigenvalues λ_H - 1/λ_W (d, class-constant) and λ_H
(d(n - 1)), no inter-class coupling; the two cases agree at c = 1.
"""

from __future__ import annotations

import math
import warnings
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import scipy.linalg
from scipy.sparse.linalg import LinearOperator, eigsh, svds

__all__ = [
    "DENSE_BLOCK_LIMIT",
    "BlockSpectrum",
    "CollapsedSpectrum",
    "ResponseOperators",
    "collapsed_spectrum",
    "response_operators",
]

# Largest dn for which the complete spectrum of a class block is computed densely (dn block
# products and a dn x dn symmetric eigenproblem: about 3 s + 20 s per operator at dn = 6400,
# K = 10, d = 64, on 2 cores); beyond it only the extreme values (Lanczos).
DENSE_BLOCK_LIMIT = 6400

# ARPACK's relative residual tolerance. The smallest eigenvalue of F_kk sits at the edge of a
# cluster of K(n - 1) nearly equal values near collapse; resolving it to 1e-13 takes ~6000
# products at K = 10, n = 100, d = 64, to 1e-10 ~2000 (2 s for F).
LANCZOS_TOL = 1e-10


@dataclass(frozen=True)
class BlockSpectrum:
    """Singular values of F (or J) blocks: σ_max / σ_min of the intra-class block of class
    ``intra_class``, σ_max of the inter-class block (``inter_classes`` = (row class, column
    class)), and all dn singular values of the intra block sorted descending (None beyond
    :data:`DENSE_BLOCK_LIMIT`)."""

    intra_max: float
    intra_min: float
    inter_max: float
    intra_values: list[float] | None
    intra_class: int = 0
    inter_classes: tuple[int, int] = (1, 0)

    def as_dict(self) -> dict[str, Any]:
        return {
            "intra_max": self.intra_max,
            "intra_min": self.intra_min,
            "inter_max": self.inter_max,
            "intra_values": self.intra_values,
        }


@dataclass
class ResponseOperators:
    """F (eq. 5) and J (exact) at a point Ĥ (a minimizer of f(·; H0)), block by block, matrix-free.

    Build with :func:`response_operators`. Blocks are indexed by class (0-based): block (k, j)
    maps class j of δH0 to class k of δH.
    """

    h: np.ndarray
    w: np.ndarray
    per_class: int
    lambda_w: float
    lambda_h: float
    beta: float
    _ainv: np.ndarray = field(repr=False)
    _qinv: np.ndarray = field(repr=False)
    _small_inv: np.ndarray = field(repr=False)
    _residual: np.ndarray = field(repr=False)
    _s_factor: Any = field(default=None, repr=False)

    @property
    def num_classes(self) -> int:
        return int(self.w.shape[0])

    @property
    def dim(self) -> int:
        return int(self.h.shape[0])

    @property
    def block_size(self) -> int:
        return self.dim * self.per_class

    def _cols(self, m: np.ndarray, k: int) -> np.ndarray:
        n = self.per_class
        return m[:, k * n : (k + 1) * n]

    def _mat(self, v: np.ndarray) -> np.ndarray:
        """Block vectors (..., dn) -> (..., d, n) matrices (column-stacked vec)."""
        return np.swapaxes(v.reshape(*v.shape[:-1], self.per_class, self.dim), -1, -2)

    def _vec(self, m: np.ndarray) -> np.ndarray:
        return np.swapaxes(m, -1, -2).reshape(*m.shape[:-2], -1)

    def _u(self, delta: np.ndarray, k: int) -> np.ndarray:
        """U restricted to class k: Δ (..., d, n) -> R_k Δᵀ + W Δ H_kᵀ (..., K, d)."""
        dt = np.swapaxes(delta, -1, -2)
        out: np.ndarray = (
            self._cols(self._residual, k) @ dt + self.w @ delta @ self._cols(self.h, k).T
        )
        return out

    def _ut(self, x: np.ndarray, k: int) -> np.ndarray:
        """Uᵀ restricted to class k: X (..., K, d) -> Xᵀ R_k + Wᵀ X H_k (..., d, n)."""
        xt = np.swapaxes(x, -1, -2)
        # Wᵀ(X H_k), not (WᵀX)H_k: rank K, O(K d n) instead of O(d² n).
        out: np.ndarray = xt @ self._cols(self._residual, k) + self.w.T @ (
            x @ self._cols(self.h, k)
        )
        return out

    def hessian_block(self, v: np.ndarray, k: int, j: int) -> np.ndarray:
        """M_kl v (v: (..., dn)), M = Kn ∇²L(Ĥ)."""
        delta = self._mat(v)
        out = -self._ut(self._u(delta, j) @ self._ainv, k)
        if k == j:
            out = out + self.lambda_h * delta + self.w.T @ (self.w @ delta)
        return self._vec(out)

    def f_block(self, v: np.ndarray, k: int, j: int) -> np.ndarray:
        """F_kl v = δ_kl v - M_kl v / β (their eq. 5 and 6)."""
        out = -self.hessian_block(v, k, j) / self.beta
        return out + v if k == j else out

    def _s_solve(self, x: np.ndarray) -> np.ndarray:
        """S⁻¹ X for X (..., K, d) (vec column-stacked, dK)."""
        if self._s_factor is None:
            self._s_factor = scipy.linalg.cho_factor(self._schur(), lower=True)
        kk, d = self.num_classes, self.dim
        flat = np.swapaxes(x, -1, -2).reshape(-1, d * kk).T
        sol = scipy.linalg.cho_solve(self._s_factor, flat)
        return np.swapaxes(sol.T.reshape(*x.shape[:-2], d, kk), -1, -2)

    def _schur(self) -> np.ndarray:
        """S = C - U D⁻¹ Uᵀ (dK x dK, vec column-stacked): with P1 = RRᵀ, P2 = RHᵀ, P3 = WQ⁻¹,
        P4 = WQ⁻¹Wᵀ, U D⁻¹ Uᵀ X = P1 X Q⁻¹ + P2 Xᵀ P3 + P3 Xᵀ P2 + P4 X HHᵀ (Q symmetric)."""
        kk, d = self.num_classes, self.dim
        r, h, w, qinv = self._residual, self.h, self.w, self._qinv
        hht = h @ h.T
        a = hht + self.per_class * self.lambda_w * np.eye(d)
        p1, p2, p3 = r @ r.T, r @ h.T, w @ qinv
        p4 = p3 @ w.T

        def with_transpose(mat: np.ndarray) -> np.ndarray:
            # mat @ T, T the commutation matrix (T vec X = vec Xᵀ): column i K + k <- k d + i.
            return mat.reshape(d * kk, kk, d).transpose(0, 2, 1).reshape(d * kk, d * kk)

        s = np.kron(a, np.eye(kk)) - np.kron(qinv, p1) - np.kron(hht, p4)
        s -= with_transpose(np.kron(p3.T, p2)) + with_transpose(np.kron(p2.T, p3))
        sym: np.ndarray = 0.5 * (s + s.T)
        return sym

    def j_block(self, v: np.ndarray, k: int, j: int) -> np.ndarray:
        """J_kl v, J = β(M + βI)⁻¹ = β[D⁻¹ + D⁻¹UᵀS⁻¹UD⁻¹] (Woodbury; exact)."""
        delta = self.qinv_apply(self._mat(v))
        out = self.qinv_apply(self._ut(self._s_solve(self._u(delta, j)), k))
        if k == j:
            out = out + delta
        return self.beta * self._vec(out)

    def qinv_apply(self, delta: np.ndarray) -> np.ndarray:
        """Q⁻¹ Δ, Q = (λ_H + β)I + ŴᵀŴ."""
        # Woodbury with the rank-K WᵀW: Q⁻¹ = (I - Wᵀ(q I_K + WWᵀ)⁻¹W)/q, q = λ_H + β.
        q = self.lambda_h + self.beta
        out: np.ndarray = (delta - self.w.T @ (self._small_inv @ (self.w @ delta))) / q
        return out

    def block_operator(self, which: str, k: int, j: int) -> LinearOperator:
        """Block (k, j) of ``which`` ("F" or "J") as a scipy LinearOperator (dn x dn); F and J
        are symmetric, so the adjoint of block (k, j) is block (j, k)."""
        apply = self._apply(which)
        size = self.block_size
        return LinearOperator(
            (size, size),
            matvec=lambda v: apply(np.asarray(v).reshape(-1), k, j),
            rmatvec=lambda v: apply(np.asarray(v).reshape(-1), j, k),
            dtype=np.float64,
        )

    def _apply(self, which: str) -> Any:
        if which == "F":
            return self.f_block
        if which == "J":
            return self.j_block
        raise ValueError(f"which: expected 'F' or 'J', got {which!r}")

    def dense_block(self, which: str, k: int, j: int, chunk: int = 1024) -> np.ndarray:
        """Block (k, j) as a dense dn x dn matrix (applied to the identity, ``chunk`` columns
        at a time)."""
        apply = self._apply(which)
        size = self.block_size
        out = np.empty((size, size))
        for start in range(0, size, chunk):
            stop = min(size, start + chunk)
            basis = np.zeros((stop - start, size))
            basis[np.arange(stop - start), np.arange(start, stop)] = 1.0
            out[:, start:stop] = apply(basis, k, j).T
        return out

    def intra_extremes(self, which: str, k: int = 0) -> tuple[float, float]:
        """(σ_max, σ_min) of the symmetric block (k, k) by Lanczos (scipy eigsh, relative
        residual :data:`LANCZOS_TOL`): the extreme eigenvalues give σ_max; σ_min is the smallest
        |eigenvalue|, the smallest eigenvalue when the block is positive definite, else from
        eigsh of the block squared."""
        op = self.block_operator(which, k, k)
        size = op.shape[0]
        if size <= 2:
            values = np.abs(np.linalg.eigvalsh(self.dense_block(which, k, k)))
            return float(values.max()), float(values.min())
        tol = LANCZOS_TOL
        v0 = np.ones(size) / math.sqrt(size)
        top = float(eigsh(op, k=1, which="LA", tol=tol, v0=v0, return_eigenvectors=False)[0])
        bottom = float(eigsh(op, k=1, which="SA", tol=tol, v0=v0, return_eigenvectors=False)[0])
        largest = max(abs(top), abs(bottom))
        if bottom > 0:
            return largest, bottom
        squared = LinearOperator(
            (size, size), matvec=lambda v: op.matvec(op.matvec(v)), dtype=np.float64
        )
        low = float(eigsh(squared, k=1, which="SA", tol=tol, v0=v0, return_eigenvectors=False)[0])
        return largest, math.sqrt(max(low, 0.0))

    def inter_max(self, which: str, k: int = 1, j: int = 0) -> float:
        """σ_max of block (k, j), k ≠ j, by Lanczos bidiagonalization (scipy svds)."""
        if k == j:
            raise ValueError(f"inter_max: expected two different classes, got {k} and {j}")
        op = self.block_operator(which, k, j)
        if op.shape[0] <= 2:
            return float(np.linalg.norm(self.dense_block(which, k, j), 2))
        v0 = np.ones(op.shape[0]) / math.sqrt(op.shape[0])
        return float(
            svds(op, k=1, which="LM", tol=LANCZOS_TOL, v0=v0, return_singular_vectors=False)[0]
        )

    def intra_values(self, which: str, k: int = 0) -> np.ndarray:
        """All dn singular values of block (k, k), sorted descending (dense; symmetric block)."""
        block = self.dense_block(which, k, k)
        values = np.abs(np.linalg.eigvalsh(0.5 * (block + block.T)))
        return np.sort(values)[::-1]

    def spectrum(
        self,
        which: str,
        *,
        intra_class: int = 0,
        inter: tuple[int, int] = (1, 0),
        values: bool | None = None,
    ) -> BlockSpectrum:
        """The :class:`BlockSpectrum` of ``which``; ``values`` (default: dn <= DENSE_BLOCK_LIMIT)
        asks for the complete intra spectrum."""
        if values is None:
            values = self.block_size <= DENSE_BLOCK_LIMIT
        top, bottom = self.intra_extremes(which, intra_class)
        listed = self.intra_values(which, intra_class).tolist() if values else None
        return BlockSpectrum(
            intra_max=top,
            intra_min=bottom,
            inter_max=self.inter_max(which, *inter),
            intra_values=listed,
            intra_class=intra_class,
            inter_classes=inter,
        )


def response_operators(
    h: Any, per_class: int, lambda_w: float, lambda_h: float, beta: float
) -> ResponseOperators:
    """F and J at the point ``h`` (d x Kn, a minimizer of f(·; H0); paper normalization)."""
    h = np.asarray(h.detach().cpu().numpy() if hasattr(h, "detach") else h, dtype=np.float64)
    d, big_n = h.shape
    k = big_n // per_class
    a = h @ h.T + per_class * lambda_w * np.eye(d)
    ainv = np.linalg.inv(a)
    y = np.repeat(np.eye(k), per_class, axis=1)
    w = (y @ h.T) @ ainv
    qinv = np.linalg.inv((lambda_h + beta) * np.eye(d) + w.T @ w)
    return ResponseOperators(
        h=h,
        w=w,
        per_class=per_class,
        lambda_w=lambda_w,
        lambda_h=lambda_h,
        beta=beta,
        _ainv=0.5 * (ainv + ainv.T),
        _qinv=0.5 * (qinv + qinv.T),
        _small_inv=np.linalg.inv((lambda_h + beta) * np.eye(k) + w @ w.T),
        _residual=w @ h - y,
    )


@dataclass(frozen=True)
class CollapsedSpectrum:
    """The closed forms at a collapsed H0 (module docstring), paper normalization.

    directions : per eigen-direction of a class block, (name, multiplicity, μ of M_kk, value of
        F_kk = 1 - μ/β, value of J_kk), directions of multiplicity 0 left out.
    theorem : Theorem 4.2's intra_max (1), intra_min (1 - β⁻¹√(λ_H/λ_W)), inter_max
        (2β⁻¹λ_H(1 - √(λ_Hλ_W))).
    intra_max, intra_min, inter_max : the same three from the complete spectrum (equal to the
        theorem's where its assumptions hold: d > K, λ_Hλ_W < 1, β > √(λ_H/λ_W)).
    inter_max_exact : σ of J's rank-one inter-class block, 2ac/(β + 4ac).
    whole : eigenvalues of the whole F with multiplicities.
    singular_betas : the β at which F_kk is singular.
    assumptions : the theorem's assumptions that do not hold, in words (empty when all do).
    """

    c: float
    rho: float
    directions: list[tuple[str, int, float, float, float]]
    theorem: dict[str, float]
    intra_max: float
    intra_min: float
    inter_max: float
    inter_max_exact: float
    whole: list[tuple[float, int]]
    singular_betas: list[float]
    assumptions: list[str]

    def values(self, which: str = "F") -> list[float]:
        """The dn singular values of F_kk (or J_kk), multiplicities expanded, sorted descending."""
        col = {"F": 3, "J": 4}[which]
        out: list[float] = []
        for row in self.directions:
            out += [abs(float(row[col]))] * int(row[1])
        return sorted(out, reverse=True)

    def as_dict(self) -> dict[str, Any]:
        return {
            "c": self.c,
            "rho": self.rho,
            "intra_max": self.intra_max,
            "intra_min": self.intra_min,
            "inter_max": self.inter_max,
            "inter_max_exact": self.inter_max_exact,
            "theorem_4_2": self.theorem,
            "directions": [
                {"direction": name, "multiplicity": m, "hessian": mu, "F": f, "J": j}
                for name, m, mu, f, j in self.directions
            ],
            "whole_F": [{"value": v, "multiplicity": m} for v, m in self.whole],
            "singular_betas": self.singular_betas,
            "assumptions": self.assumptions,
        }


def collapsed_spectrum(
    num_classes: int, per_class: int, dim: int, lambda_w: float, lambda_h: float, beta: float
) -> CollapsedSpectrum:
    """The complete closed-form spectrum of F_kk, J_kk, F_kk' and F at a collapsed H0 (module
    docstring). ValueError when d < K (no collapsed minimizer: Theorem 2.1 needs d >= K) or
    λ_H <= 0; a warning naming each other assumption of Theorem 4.2 that does not hold."""
    k, n, d = num_classes, per_class, dim
    if d < k:
        raise ValueError(
            f"dim: Theorems 2.1 and 4.2 need d >= K = {k} (an orthogonal frame of K class means), "
            f"got d = {d}"
        )
    if not lambda_h > 0:
        raise ValueError(f"lambda_h: the collapsed minimizer needs λ_H > 0, got {lambda_h!r}")
    c = math.sqrt(lambda_h * lambda_w)
    notes = []
    if d == k:
        notes.append(f"d = K = {k}: Theorem 4.2 assumes d > K (no directions outside the frame)")
    if n < 2:
        notes.append("n = 1: no within-class directions")
    if c >= 1:
        notes.append(
            f"λ_Hλ_W = {c * c:.6g} >= 1: the collapsed minimizer is H = 0 (Theorem 2.1); "
            "Theorem 4.2 assumes λ_Hλ_W < 1"
        )
        rho = 0.0
        table = [
            ("class-constant shift (H = 0)", d, lambda_h - 1.0 / lambda_w),
            ("within-class deviation (H = 0)", d * (n - 1), lambda_h),
        ]
        exact = {name: beta / (beta + mu) for name, _, mu in table}
        inter, inter_exact = 0.0, 0.0
        whole_mu = [(lambda_h - 1.0 / lambda_w, k * d), (lambda_h, k * d * (n - 1))]
    else:
        rho = (1.0 - c) * math.sqrt(lambda_w / lambda_h)
        ac = lambda_h * (1.0 - c)
        top = math.sqrt(lambda_h / lambda_w)
        table = [
            ("class-constant shift outside the span of the means", d - k, 0.0),
            ("within-class deviation outside the span", (d - k) * (n - 1), lambda_h),
            ("class-constant shift towards another class's mean", k - 1, 2 * ac),
            ("scaling of the class's own mean", 1, 4 * ac),
            ("within-class deviation inside the span", k * (n - 1), top),
        ]
        exact = {name: beta / (beta + mu) for name, _, mu in table}
        exact[table[2][0]] = (beta + 2 * ac) / (beta + 4 * ac)
        inter, inter_exact = 2 * ac / beta, 2 * ac / (beta + 4 * ac)
        whole_mu = [
            (0.0, k * (d - k) + k * (k - 1) // 2),
            (lambda_h, k * (d - k) * (n - 1)),
            (4 * ac, k * (k + 1) // 2),
            (top, k * k * (n - 1)),
        ]
        if beta <= top:
            notes.append(
                f"β = {beta:.6g} <= √(λ_H/λ_W) = {top:.6g}: F_kk is not positive definite "
                "(Theorem 4.2 assumes β ≫ max(1, λ_H)); σ_min(F_kk) is then not 1 - β⁻¹√(λ_H/λ_W)"
            )
    directions = [(name, m, mu, 1.0 - mu / beta, exact[name]) for name, m, mu in table if m > 0]
    singular = sorted({mu for _, m, mu, _, _ in directions if mu > 0})
    if any(math.isclose(beta, mu, rel_tol=1e-12) for mu in singular):
        notes.append(f"β = {beta:.6g} is an eigenvalue of M_kk: F_kk is singular")
    sing = sorted((abs(f) for _, _, _, f, _ in directions), reverse=True)
    theorem = {
        "intra_max": 1.0,
        "intra_min": 1.0 - math.sqrt(lambda_h / lambda_w) / beta,
        "inter_max": 2.0 * lambda_h * (1.0 - c) / beta,
    }
    whole: dict[float, int] = {}
    for mu, m in whole_mu:
        if m > 0:
            whole[1.0 - mu / beta] = whole.get(1.0 - mu / beta, 0) + m
    for note in notes:
        warnings.warn(note, UserWarning, stacklevel=2)
    return CollapsedSpectrum(
        c=c,
        rho=rho,
        directions=directions,
        theorem=theorem,
        intra_max=sing[0],
        intra_min=sing[-1],
        inter_max=inter,
        inter_max_exact=inter_exact,
        whole=sorted(whole.items(), reverse=True),
        singular_betas=singular,
        assumptions=notes,
    )
