"""The perturbation model of neural collapse (Tirer, Huang & Niles-Weed, ICML 2023, eq. 2).

Features held near a given matrix H0 (e.g. the features of a shallower layer), in the paper's
normalization (the ``tirer`` convention of :mod:`nclab.models.conventions`), MSE, no bias:

    f(W, H; H0) = (1/(2Kn))‖WH - Y‖²_F + (λ_W/(2K))‖W‖²_F + (λ_H/(2Kn))‖H‖²_F
                  + (β/(2Kn))‖H - H0‖²_F,

W: K x d, H: d x Kn with the features as columns in class-major order (column (k-1)n + i is
sample i of class k), Y = I_K ⊗ 1_nᵀ. With H0 = 0 it is the plain MSE UFM (their eq. 1) with
feature penalty λ_H + β.

Closed forms used throughout (A = HHᵀ + nλ_W I_d):

* W*(H) = Y Hᵀ A⁻¹: the unique minimizer over W (the normal equations W A = Y Hᵀ of the strictly
  convex quadratic in W).
* L(H) = f(W*(H), H; ·) without the proximity term (the "central path" objective, their Sec. 3).
  By the envelope theorem (∂f/∂W = 0 at W*), ∇L(H) = (1/(Kn))[W*ᵀ(W*H - Y) + λ_H H].
* H_{1/β} = argmin_H L(H) + (β/(2Kn))‖H - H0‖², the proximal map: its optimality condition
  (H - H0)/(1/β) = -Kn ∇L(H) is one backward-Euler step of length 1/β of the flow
  dH/dt = -Kn ∇L(H) (their eq. 4; :mod:`nclab.models.perturbation_flow`).

A "collapsed" H0 is a minimizer of eq. 1 with the same λ_W, λ_H (Theorem 2.1 of the paper, i.e.
Tirer & Bruna 2022): H* = √ρ R ⊗ 1_nᵀ with R (d x K) orthonormal and ρ = (1 - c)√(λ_W/λ_H),
c = √(λ_Hλ_W) < 1; by Corollary 2.2 it is then its own minimizer for every β > 0.
The response of the minimizer to H0 (Theorems 4.1, 4.2) is in
:mod:`nclab.models.perturbation_spectrum`.
"""

from __future__ import annotations

import math
import warnings
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

import numpy as np
import torch

from nclab.metrics import CollapseReport, measure
from nclab.models.conventions import check_penalty
from nclab.models.solvers import Candidate, check_solver_options, multistart
from nclab.models.ufm import check_start, class_labels

if TYPE_CHECKING:
    from nclab.models.perturbation_spectrum import CollapsedSpectrum

__all__ = [
    "PerturbationModel",
    "PerturbationSolution",
    "check_features",
    "collapsed_features",
    "one_hot_targets",
    "optimal_weight",
    "reduced_gradient",
    "reduced_objective",
]


def _check_size(name: str, value: int, minimum: int) -> int:
    if isinstance(value, bool) or not isinstance(value, int) or value < minimum:
        raise ValueError(f"{name}: expected an integer >= {minimum}, got {value!r}")
    return value


def one_hot_targets(num_classes: int, per_class: int) -> torch.Tensor:
    """Y = I_K ⊗ 1_nᵀ (K x Kn, float64)."""
    eye = torch.eye(num_classes, dtype=torch.float64)
    return eye.repeat_interleave(per_class, dim=1)


def check_features(
    h: Any, dim: int, num_classes: int, per_class: int, name: str = "h0"
) -> torch.Tensor:
    """``h`` as a float64 (d, Kn) tensor; ValueError naming ``name`` for a wrong shape or
    non-finite entries."""
    if isinstance(h, np.ndarray):
        h = torch.from_numpy(np.ascontiguousarray(h))
    if not isinstance(h, torch.Tensor):
        raise ValueError(f"{name}: expected a (d, Kn) array, got {type(h).__name__}")
    if h.is_complex() or h.dtype == torch.bool:
        raise ValueError(f"{name}: expected real numbers, got dtype {h.dtype}")
    expected = (dim, num_classes * per_class)
    if tuple(h.shape) != expected:
        raise ValueError(
            f"{name}: expected shape (d, K n) = {expected} (features as columns, class-major), "
            f"got {tuple(h.shape)}"
        )
    out: torch.Tensor = h.detach().to(device="cpu", dtype=torch.float64)
    if not bool(torch.isfinite(out).all()):
        bad = int((~torch.isfinite(out)).sum())
        raise ValueError(f"{name}: {bad} entries are not finite (NaN or inf)")
    return out


def optimal_weight(h: torch.Tensor, per_class: int, lambda_w: float) -> torch.Tensor:
    """W*(H) = Y Hᵀ (H Hᵀ + n λ_W I_d)⁻¹ (K x d), paper normalization (λ_W > 0)."""
    d, big_n = h.shape
    k = big_n // per_class
    y_ht = h.reshape(d, k, per_class).sum(2).T  # Y Hᵀ: row k is the sum of class k's features
    a = h @ h.T + per_class * lambda_w * torch.eye(d, dtype=h.dtype, device=h.device)
    # A is symmetric positive definite: solve A Wᵀ = H Yᵀ.
    w: torch.Tensor = torch.linalg.solve(a, y_ht.T).T
    return w


def reduced_objective(
    h: torch.Tensor, per_class: int, lambda_w: float, lambda_h: float
) -> torch.Tensor:
    """L(H) = (1/(2Kn))‖W*H - Y‖² + (λ_W/(2K))‖W*‖² + (λ_H/(2Kn))‖H‖², W* = W*(H)
    (differentiable in H through W*)."""
    big_n = h.shape[1]
    k = big_n // per_class
    w = optimal_weight(h, per_class, lambda_w)
    y = one_hot_targets(k, per_class).to(h.device)
    fit = (w @ h - y).square().sum() / (2 * big_n)
    return fit + lambda_w / (2 * k) * w.square().sum() + lambda_h / (2 * big_n) * h.square().sum()


def reduced_gradient(
    h: torch.Tensor, per_class: int, lambda_w: float, lambda_h: float
) -> torch.Tensor:
    """∇L(H) = (1/(Kn))[W*ᵀ(W*H - Y) + λ_H H] (envelope theorem: ∂f/∂W = 0 at W*)."""
    big_n = h.shape[1]
    k = big_n // per_class
    w = optimal_weight(h, per_class, lambda_w)
    y = one_hot_targets(k, per_class).to(h.device)
    return (w.T @ (w @ h - y) + lambda_h * h) / big_n


def collapsed_features(
    num_classes: int,
    per_class: int,
    dim: int,
    lambda_w: float,
    lambda_h: float,
    *,
    seed: int = 0,
    frame: torch.Tensor | None = None,
) -> torch.Tensor:
    """H* = √ρ R ⊗ 1_nᵀ, ρ = (1 - c)√(λ_W/λ_H), c = √(λ_Hλ_W): a minimizer of the plain UFM
    (eq. 1, paper normalization) built from R, a random d x K orthonormal matrix (QR of a seeded
    Gaussian) or ``frame`` when given. Needs d >= K and λ_H > 0; for c >= 1 the minimizer is 0."""
    if isinstance(dim, bool) or not isinstance(dim, int) or dim < num_classes:
        raise ValueError(
            f"dim: a collapsed H0 (an orthogonal frame of K class means, Theorem 2.1) needs "
            f"d >= K = {num_classes}, got {dim!r}"
        )
    check_penalty("lambda_h", lambda_h, positive=True)
    check_penalty("lambda_w", lambda_w, positive=True)
    c = math.sqrt(lambda_h * lambda_w)
    rho = max(0.0, 1.0 - c) * math.sqrt(lambda_w / lambda_h)
    if frame is None:
        gen = torch.Generator().manual_seed(seed)
        gauss = torch.randn(dim, num_classes, generator=gen, dtype=torch.float64)
        frame = torch.linalg.qr(gauss).Q
    elif tuple(frame.shape) != (dim, num_classes):
        raise ValueError(f"frame: expected shape (d, K) = {(dim, num_classes)}")
    return math.sqrt(rho) * frame.to(torch.float64).repeat_interleave(per_class, dim=1)


@dataclass(frozen=True, eq=False)
class PerturbationSolution:
    """A numerical minimizer of f(·, ·; H0): H, W = W*(H), and how well it was reached.

    ``gradient_norm`` is ‖∇_H f(W*(H), H; H0)‖_F, which is the norm of the full gradient in
    (W, H): ∇_W f vanishes at W = W*(H) by construction.
    """

    model: PerturbationModel
    features: torch.Tensor
    weight: torch.Tensor
    objective: float
    gradient_norm: float
    iterations: int
    converged: bool
    method: str
    restart_objectives: list[float] = field(default_factory=list)

    def metrics(self, **options: Any) -> CollapseReport:
        """The NC report of the optimized features with the classifier W*(H)."""
        m = self.model
        return measure(
            self.features.T, class_labels(m.num_classes, m.per_class), self.weight, **options
        )


@dataclass(frozen=True, eq=False)
class PerturbationModel:
    """f(W, H; H0) of the module docstring.

    Parameters
    ----------
    num_classes, per_class, dim : K (>= 2), n (>= 1), d (>= 1).
    lambda_w : λ_W > 0.
    lambda_h : λ_H >= 0 (Theorem 3.1 allows 0; the collapsed H0 and Theorem 4.2 need > 0).
    beta : β > 0, the proximity weight (1/β plays the role of a step of the flow).
    h0 : H0, (d, Kn), finite; default 0 (then the model is the plain UFM with λ_H + β).
    convention : ``"tirer"`` (the paper's λ's and β, default) or ``"standard"`` (the λ's of
        :class:`~nclab.models.UFM`'s standard form, mapped exactly: λ_W·K, λ_H·Kn, β·Kn).
    """

    num_classes: int
    per_class: int
    dim: int
    lambda_w: float
    lambda_h: float
    beta: float
    h0: torch.Tensor | None = None
    convention: str = "tirer"

    def __post_init__(self) -> None:
        _check_size("num_classes", self.num_classes, 2)
        _check_size("per_class", self.per_class, 1)
        _check_size("dim", self.dim, 1)
        check_penalty("lambda_w", self.lambda_w, positive=True)
        check_penalty("lambda_h", self.lambda_h, positive=False)
        check_penalty("beta", self.beta, positive=True)
        if self.convention not in ("tirer", "standard"):
            raise ValueError(f"convention: expected 'tirer' or 'standard', got {self.convention!r}")
        h0 = torch.zeros(self.dim, self.num_samples, dtype=torch.float64)
        if self.h0 is not None:
            h0 = check_features(self.h0, self.dim, self.num_classes, self.per_class, "h0")
        object.__setattr__(self, "h0", h0)

    @property
    def num_samples(self) -> int:
        return self.num_classes * self.per_class

    @property
    def initial(self) -> torch.Tensor:
        """H0 as a float64 (d, Kn) tensor."""
        assert self.h0 is not None
        return self.h0

    def paper_penalties(self) -> tuple[float, float, float]:
        """(λ_W, λ_H, β) in the paper's (``tirer``) normalization."""
        if self.convention == "tirer":
            return float(self.lambda_w), float(self.lambda_h), float(self.beta)
        kn = self.num_samples
        return self.lambda_w * self.num_classes, self.lambda_h * kn, self.beta * kn

    def with_h0(self, h0: torch.Tensor) -> PerturbationModel:
        """The same model with another H0."""
        return PerturbationModel(
            self.num_classes,
            self.per_class,
            self.dim,
            self.lambda_w,
            self.lambda_h,
            self.beta,
            h0,
            self.convention,
        )

    def objective(self, weight: torch.Tensor, features: torch.Tensor) -> torch.Tensor:
        """f(W, H; H0) exactly as in the module docstring."""
        lw, lh, beta = self.paper_penalties()
        k, big_n = self.num_classes, self.num_samples
        y = one_hot_targets(k, self.per_class).to(features.device)
        value = (weight @ features - y).square().sum() / (2 * big_n)
        value = value + lw / (2 * k) * weight.square().sum()
        value = value + lh / (2 * big_n) * features.square().sum()
        return (
            value
            + beta / (2 * big_n) * (features - self.initial.to(features.device)).square().sum()
        )

    def optimal_weight(self, features: torch.Tensor) -> torch.Tensor:
        """W*(H) = Y Hᵀ (H Hᵀ + n λ_W I)⁻¹."""
        return optimal_weight(features, self.per_class, self.paper_penalties()[0])

    def reduced_objective(self, features: torch.Tensor) -> torch.Tensor:
        """L(H) = f(W*(H), H) without the proximity term."""
        lw, lh, _ = self.paper_penalties()
        return reduced_objective(features, self.per_class, lw, lh)

    def reduced_gradient(self, features: torch.Tensor) -> torch.Tensor:
        """∇L(H) in closed form."""
        lw, lh, _ = self.paper_penalties()
        return reduced_gradient(features, self.per_class, lw, lh)

    def gradient(self, features: torch.Tensor) -> torch.Tensor:
        """∇_H f(W*(H), H; H0) = ∇L(H) + (β/(Kn))(H - H0)."""
        beta = self.paper_penalties()[2]
        return self.reduced_gradient(features) + beta / self.num_samples * (features - self.initial)

    def theory(self) -> CollapsedSpectrum:
        """Theorem 4.2 and the complete spectrum of F_kk, J_kk and F at a collapsed H0
        (:func:`nclab.models.perturbation_spectrum.collapsed_spectrum`); ValueError where no
        collapsed minimizer exists (d < K, λ_H = 0), warnings for the theorem's other
        assumptions."""
        from nclab.models.perturbation_spectrum import collapsed_spectrum

        lw, lh, beta = self.paper_penalties()
        return collapsed_spectrum(self.num_classes, self.per_class, self.dim, lw, lh, beta)

    def solve(
        self,
        *,
        restarts: int = 1,
        seed: int = 0,
        tol: float = 1e-10,
        max_iter: int = 20_000,
        init_scale: float = 0.1,
        progress: Callable[[str], None] | None = None,
    ) -> PerturbationSolution:
        """Minimize f over (W, H) as L(H) + (β/(2Kn))‖H - H0‖² over H (W = W*(H)), by L-BFGS
        to a gradient norm <= ``tol``.

        The first start is H0 itself (the minimizer lies near H0 for large β); each further
        restart is H0 + ``init_scale`` · (seeded Gaussian) · ‖H0‖_F/√(d Kn) (or · 1 when H0 = 0).
        Where H0 is already stationary (e.g. a collapsed H0, Corollary 2.2) it is evaluated as it
        is instead, since a solver that takes no step proves nothing; a stationary H0 that is not
        a minimizer (H0 = 0 is stationary: W*(0) = 0) is beaten by any restart that descends.
        The run with the lowest objective is kept and reports its own ``converged``.
        """
        _check_size("restarts", restarts, 1)
        check_start(seed, init_scale)
        check_solver_options(method="lbfgs", tol=tol, max_iter=max_iter, lr=None, momentum=None)
        h0 = self.initial
        gen = torch.Generator().manual_seed(seed)
        scale = float(h0.norm()) / math.sqrt(h0.numel()) or 1.0

        def fn(params: Any) -> torch.Tensor:
            h = params[0]
            # f at W = W*(H) held fixed: the value of the reduced objective, and (envelope
            # theorem) its gradient in H, without differentiating through the d x d solve.
            return self.objective(self.optimal_weight(h.detach()), h)

        start_grad = float(self.gradient(h0).norm())
        starts = []
        candidates = []
        if start_grad <= tol:
            candidates.append(Candidate([h0.clone()], "H0 (stationary at the start)"))
        else:
            starts.append([h0.clone()])
        for _ in range(restarts - 1):
            noise = torch.randn(h0.shape, generator=gen, dtype=torch.float64)
            starts.append([h0 + init_scale * scale * noise])
        best, results = multistart(
            iter(starts),
            fn,
            candidates=candidates,
            method="lbfgs",
            tol=tol,
            max_iter=max_iter,
            progress=progress,
        )
        h = best.params[0]
        return PerturbationSolution(
            model=self,
            features=h,
            weight=self.optimal_weight(h),
            objective=best.objective,
            gradient_norm=best.gradient_norm,
            iterations=best.iterations,
            converged=best.converged,
            method=best.method,
            restart_objectives=[r.objective for r in results],
        )

    def proximal_map(self, **solve_options: Any) -> torch.Tensor:
        """H_{1/β} = argmin_H L(H) + (β/(2Kn))‖H - H0‖² (one backward-Euler step of length 1/β
        of the central path from H0); warns when the solver did not converge."""
        sol = self.solve(**solve_options)
        if not sol.converged:
            warnings.warn(
                f"proximal_map: the solver stopped at gradient norm {sol.gradient_norm:.2e} "
                "above tol",
                RuntimeWarning,
                stacklevel=2,
            )
        return sol.features
