"""The memorization–dilation (M-D) model: collapse under label noise with limited expressivity.

Our model (built on the description in the abstract of Nguyen, Levie, Lienen, Kutyniok &
Hüllermeier, ICLR 2023; not their text), documented in docs/models.md, section "M-D model (ours)".

Data: K classes, n samples per class in class-major order; the first q = η n samples of each class
carry a wrong observed label ỹ (``symmetric``: the j-th noisy sample of class k is observed as
k + 1 + (j mod (K - 1)) mod K, so every observed class has n samples; ``pair``: k + 1 mod K).
Features: h_i >= 0 in R^d (d >= K), seen by the classifier, and e_i ∈ R² (nuisance coordinates,
no sign constraint, not seen by the classifier); φ_i = (h_i, e_i). Standard convention:

    F(W, H, E, b) = (1/N) Σ_i ℓ(W h_i + b, ỹ_i) + (λ_W/2)‖W‖² + (λ_H/2)(‖H‖² + ‖E‖²)
                    (+ (λ_b/2)‖b‖²)

    subject to  H >= 0  and  D_k >= λ M_k  for every class k with noisy samples,

with M_k (memorization) and D_k (dilation) the definitions of :mod:`nclab.metrics.noise` on φ:
M_k = mean over the noisy samples of true class k of ‖φ_i - μ^clean_k‖, D_k = mean over the clean
samples of class k of ‖φ_i - μ^clean_k‖, μ^clean_k the mean of the clean samples of class k.
λ >= 0 is the inverse expressivity (λ = 0: the unconstrained model, which memorizes for free).

Two routes: :meth:`MDModel.theory` (the exact reduction of :mod:`nclab.models.md_reduced`,
solved to machine precision) and :meth:`MDModel.solve` (all of H, E, W, b by an augmented
Lagrangian from several starts). :func:`nclab.models.md_error.predict_test_error` predicts the
test error.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

import numpy as np
import torch

from nclab.losses import Loss
from nclab.metrics import CollapseReport, measure, measure_noise
from nclab.metrics.noise import NoiseReport
from nclab.models.conventions import check_penalty, to_standard_feature, to_standard_weight
from nclab.models.md_error import predict_test_error
from nclab.models.md_reduced import circulant, solve_reduced
from nclab.models.solvers import minimize
from nclab.models.ufm import check_start

if TYPE_CHECKING:
    import os

    from nclab.models.md_fit import MDFit

__all__ = [
    "NOISE_KINDS",
    "NUISANCE_DIM",
    "MDModel",
    "MDSolution",
    "fit",
    "noise_counts",
    "noise_offset",
    "noisy_per_class",
    "observed_labels",
]

NOISE_KINDS: tuple[str, ...] = ("symmetric", "pair")
# Two nuisance coordinates hold any number n_c >= 2 of equal-norm displacements summing to 0
# (a regular polygon), which is what makes the dilation cost exactly (λ_H/2) D² (md_reduced).
NUISANCE_DIM = 2
_F64 = torch.float64
# Beyond this the inner problems' curvature (ρ times the constraint's) swamps the objective's and
# L-BFGS-B stalls; the multiplier update alone then closes the remaining violation.
_MAX_RHO = 1e6


def _check_int(name: str, value: int, minimum: int) -> int:
    if isinstance(value, bool) or not isinstance(value, int) or value < minimum:
        raise ValueError(f"{name}: expected an integer >= {minimum}, got {value!r}")
    return value


def _check_real(name: str, value: float) -> float:
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not math.isfinite(value):
        raise ValueError(f"{name}: expected a finite number, got {value!r}")
    return float(value)


def noisy_per_class(noise: float, per_class: int) -> int:
    """q = η n, refused unless it is an integer (to 1e-9): the model has no fractional samples."""
    q = round(noise * per_class)
    if abs(noise * per_class - q) > 1e-9:
        raise ValueError(
            f"noise: η·n = {noise!r}·{per_class} = {noise * per_class:.6g} is not a whole number "
            f"of noisy samples per class; choose η as a multiple of 1/n = 1/{per_class}"
        )
    return q


def noise_offset(j: int, num_classes: int, kind: str) -> int:
    """The j-th noisy sample of class k is observed as k + offset (mod K)."""
    if kind not in NOISE_KINDS:
        raise ValueError(f"noise_kind: expected one of {NOISE_KINDS}, got {kind!r}")
    return 1 if kind == "pair" else 1 + j % (num_classes - 1)


def noise_counts(num_classes: int, noisy: int, kind: str) -> dict[int, int]:
    """Offset o -> q_o, the noisy samples of each class observed as class + o (mod K)."""
    counts: dict[int, int] = {}
    for j in range(noisy):
        o = noise_offset(j, num_classes, kind)
        counts[o] = counts.get(o, 0) + 1
    return counts


def observed_labels(num_classes: int, per_class: int, noisy: int, kind: str) -> torch.Tensor:
    """Observed labels ỹ in class-major order (true label i // n); the first ``noisy`` samples
    of each class are noisy (see the module docstring for the assignment)."""
    labels = torch.arange(num_classes).repeat_interleave(per_class)
    for j in range(noisy):
        o = noise_offset(j, num_classes, kind)
        for k in range(num_classes):
            labels[k * per_class + j] = (k + o) % num_classes
    return labels


@dataclass(frozen=True)
class MDSolution:
    """A point of the M-D model with what it predicts.

    ``features`` is φ (d + 2 x N: H over E); ``memorization`` and ``dilation`` (and their
    ``*_scaled`` forms, divided by the mean distance between clean class means) are those of
    :func:`nclab.metrics.measure_noise` on φ; ``margin`` is the mean over clean samples of
    z_y - max_{j≠y} z_j; ``test_error`` (± ``test_error_stderr``) is
    :func:`nclab.models.md_error.predict_test_error`. ``violation`` = max_k (λ M_k - D_k)_+.
    """

    model: MDModel
    route: str
    weight: torch.Tensor
    bias: torch.Tensor | None
    features: torch.Tensor
    objective: float
    memorization: float
    dilation: float
    memorization_scaled: float
    dilation_scaled: float
    margin: float
    test_error: float
    test_error_stderr: float
    violation: float
    gradient_norm: float
    converged: bool
    noise_report: NoiseReport
    restart_objectives: list[float] = field(default_factory=list)

    def clean_mask(self) -> torch.Tensor:
        return self.model.observed() == self.model.true_labels()

    def metrics(self, **options: Any) -> CollapseReport:
        """The NC report of the clean features φ with the classifier (extended by zeros over
        the nuisance coordinates, which it does not see)."""
        mask = self.clean_mask()
        w = torch.cat(
            [self.weight, torch.zeros(self.model.num_classes, NUISANCE_DIM, dtype=_F64)], 1
        )
        labels = self.model.true_labels()[mask]
        return measure(self.features.T[mask], labels, w, self.bias, **options)

    def summary(self) -> dict[str, float]:
        return {
            "objective": self.objective,
            "memorization": self.memorization,
            "dilation": self.dilation,
            "memorization_scaled": self.memorization_scaled,
            "dilation_scaled": self.dilation_scaled,
            "margin": self.margin,
            "test_error": self.test_error,
            "test_error_stderr": self.test_error_stderr,
            "violation": self.violation,
            "gradient_norm": self.gradient_norm,
        }


@dataclass(frozen=True)
class MDModel:
    """The M-D model of the module docstring; λ's are given in ``convention`` and kept as given.

    Parameters
    ----------
    loss : ``make_loss("ce")`` or ``make_loss("ls", smoothing=α)``.
    num_classes, per_class, dim : K >= 2, n, d >= K.
    noise : η in [0, 1) with η n a whole number q < n.
    expressivity : λ >= 0, the inverse expressivity (λ = 0: memorizing is free).
    lambda_w, lambda_h : weight and feature penalties (> 0).
    noise_kind : ``"symmetric"`` or ``"pair"``.
    bias, lambda_b : a classifier bias and its penalty (>= 0), as in the UFM.
    convention : ``"standard"`` or ``"tirer"`` (:mod:`nclab.models.conventions`).
    """

    loss: Loss
    num_classes: int
    per_class: int
    dim: int
    noise: float
    expressivity: float
    lambda_w: float
    lambda_h: float
    noise_kind: str = "symmetric"
    bias: bool = False
    lambda_b: float = 0.0
    convention: str = "standard"

    def __post_init__(self) -> None:
        if not isinstance(self.loss, Loss) or self.loss.name not in ("ce", "ls"):
            raise ValueError(
                f"loss: expected make_loss('ce') or make_loss('ls', smoothing=α), got {self.loss!r}"
            )
        k = _check_int("num_classes", self.num_classes, 2)
        n = _check_int("per_class", self.per_class, 1)
        d = _check_int("dim", self.dim, 1)
        if d < k:
            raise ValueError(
                f"dim: the M-D model needs d >= K = {k} (non-negative features), got {d}"
            )
        eta = _check_real("noise", self.noise)
        if not 0.0 <= eta < 1.0:
            raise ValueError(f"noise: expected η in [0, 1), got {eta!r}")
        lam = _check_real("expressivity", self.expressivity)
        if lam < 0.0:
            raise ValueError(f"expressivity: expected λ >= 0, got {lam!r}")
        if self.noise_kind not in NOISE_KINDS:
            raise ValueError(f"noise_kind: expected one of {NOISE_KINDS}, got {self.noise_kind!r}")
        q = noisy_per_class(eta, n)
        if q >= n:
            raise ValueError(
                f"noise: η = {eta!r} leaves class no clean sample (η n = {q} of n = {n})"
            )
        if q and lam > 0 and n - q < 2:
            raise ValueError(
                f"noise: η = {eta!r} leaves one clean sample per class, which cannot dilate; "
                f"λ > 0 needs n - η n >= 2 (n = {n})"
            )
        if not isinstance(self.bias, bool):
            raise ValueError(f"bias: expected True or False, got {self.bias!r}")
        check_penalty("lambda_w", self.lambda_w, positive=True)
        check_penalty("lambda_h", self.lambda_h, positive=True)
        check_penalty("lambda_b", self.lambda_b, positive=False)
        if self.lambda_b and not self.bias:
            raise ValueError("lambda_b: given without bias=True")
        to_standard_weight(1.0, self.convention, k)

    @property
    def num_samples(self) -> int:
        return self.num_classes * self.per_class

    @property
    def noisy(self) -> int:
        """q = η n, the noisy samples per class."""
        return noisy_per_class(self.noise, self.per_class)

    def standard_penalties(self) -> tuple[float, float, float]:
        """(λ_W, λ_H, λ_b) in the standard convention."""
        k, n, conv = self.num_classes, self.per_class, self.convention
        return (
            to_standard_weight(self.lambda_w, conv, k),
            to_standard_feature(self.lambda_h, conv, k, n),
            to_standard_weight(self.lambda_b, conv, k),
        )

    def true_labels(self) -> torch.Tensor:
        return torch.arange(self.num_classes).repeat_interleave(self.per_class)

    def observed(self) -> torch.Tensor:
        return observed_labels(self.num_classes, self.per_class, self.noisy, self.noise_kind)

    def objective(
        self,
        weight: torch.Tensor,
        features: torch.Tensor,
        nuisance: torch.Tensor,
        bias: torch.Tensor | None = None,
    ) -> torch.Tensor:
        """F(W, H, E, b) of the module docstring (without the constraints)."""
        lw, lh, lb = self.standard_penalties()
        z = weight @ features
        if bias is not None:
            z = z + bias.unsqueeze(1)
        value = self.loss(z.T, self.observed().to(z.device)) + 0.5 * lw * weight.square().sum()
        value = value + 0.5 * lh * (features.square().sum() + nuisance.square().sum())
        if bias is not None and lb:
            value = value + 0.5 * lb * bias.square().sum()
        return value

    def memorization_dilation(
        self, features: torch.Tensor, nuisance: torch.Tensor
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """Per class (M_k, D_k) on φ = (H; E), differentiable; the same definitions as
        :func:`nclab.metrics.measure_noise` (tests/test_md.py checks the two agree)."""
        k, n, q = self.num_classes, self.per_class, self.noisy
        phi = torch.cat([features, nuisance]).reshape(-1, k, n)
        clean, noisy = phi[:, :, q:], phi[:, :, :q]
        mu = clean.mean(2, keepdim=True)
        dil = torch.linalg.vector_norm(clean - mu, dim=0).mean(1)
        if q == 0:
            return torch.zeros_like(dil), dil
        return torch.linalg.vector_norm(noisy - mu, dim=0).mean(1), dil

    def _solution(
        self,
        route: str,
        weight: torch.Tensor,
        features: torch.Tensor,
        nuisance: torch.Tensor,
        bias: torch.Tensor | None,
        gradient_norm: float,
        converged: bool,
        restart_objectives: list[float],
    ) -> MDSolution:
        w, h, e = weight.detach(), features.detach(), nuisance.detach()
        b = bias.detach() if bias is not None else None
        phi = torch.cat([h, e])
        obs, true = self.observed(), self.true_labels()
        report = measure_noise(phi.T, obs, true) if self.noisy else _noiseless_report(phi, true)
        mem, dil = self.memorization_dilation(h, e)
        violation = float((self.expressivity * mem - dil).clamp_min(0).max()) if self.noisy else 0.0
        z = w @ h + (b.unsqueeze(1) if b is not None else 0.0)
        clean = obs == true
        zc, yc = z[:, clean], true[clean]
        target = zc.gather(0, yc.unsqueeze(0)).squeeze(0)
        others = zc.scatter(0, yc.unsqueeze(0), float("-inf")).max(0).values
        means = h.reshape(h.shape[0], self.num_classes, self.per_class)[:, :, self.noisy :].mean(2)
        err, stderr = predict_test_error(w, b, means.T, dil)
        return MDSolution(
            model=self,
            route=route,
            weight=w,
            bias=b,
            features=phi,
            objective=float(self.objective(w, h, e, b)),
            memorization=report["memorization"],
            dilation=report["dilation_mean"],
            memorization_scaled=report["memorization_scaled"],
            dilation_scaled=report["dilation_mean_scaled"],
            margin=float((target - others).mean()),
            test_error=err,
            test_error_stderr=stderr,
            violation=violation,
            gradient_norm=gradient_norm,
            converged=converged,
            noise_report=report,
            restart_objectives=restart_objectives,
        )

    def theory(self, *, seed: int = 0) -> MDSolution:
        """The reduced optimum (:mod:`nclab.models.md_reduced`), as features: clean samples of
        class k at (roll(u, k), D_k·(cos, sin) of a regular n_c-gon), noisy ones at (x_o, 0)."""
        k, n, d, q = self.num_classes, self.per_class, self.dim, self.noisy
        lw, lh, _ = self.standard_penalties()
        counts = noise_counts(k, q, self.noise_kind)
        opt = solve_reduced(self.loss, k, n, counts, lw, lh, self.expressivity, seed=seed)
        w_row = torch.tensor(opt.w, dtype=_F64)
        weight = torch.zeros(k, d, dtype=_F64)
        weight[:, :k] = circulant(w_row)
        features = torch.zeros(d, k, n, dtype=_F64)
        nuisance = torch.zeros(NUISANCE_DIM, k, n, dtype=_F64)
        n_clean = n - q
        angles = 2 * math.pi * torch.arange(n_clean, dtype=_F64) / n_clean
        radius = self.expressivity * opt.memorization
        offsets_of = [noise_offset(j, k, self.noise_kind) for j in range(q)]
        row_of = {o: i for i, o in enumerate(opt.offsets)}
        for c in range(k):
            features[:k, c, q:] = torch.tensor(np.roll(opt.u, c), dtype=_F64).unsqueeze(1)
            if n_clean >= 2:
                nuisance[0, c, q:] = radius * torch.cos(angles)
                nuisance[1, c, q:] = radius * torch.sin(angles)
            for j, o in enumerate(offsets_of):
                features[:k, c, j] = torch.tensor(np.roll(opt.x[row_of[o]], c), dtype=_F64)
        bias = torch.zeros(k, dtype=_F64) if self.bias else None
        return self._solution(
            "reduced",
            weight,
            features.reshape(d, -1),
            nuisance.reshape(NUISANCE_DIM, -1),
            bias,
            opt.gradient_norm,
            opt.converged,
            [opt.objective],
        )

    def _constraint(self, params: list[torch.Tensor]) -> torch.Tensor:
        mem, dil = self.memorization_dilation(params[1], params[2])
        return dil - self.expressivity * mem

    def solve(
        self,
        *,
        restarts: int = 4,
        seed: int = 0,
        tol: float = 1e-8,
        constraint_tol: float = 1e-9,
        max_iter: int = 20_000,
        max_outer: int = 30,
        init_scale: float = 0.5,
        progress: Callable[[str], None] | None = None,
    ) -> MDSolution:
        """The features-level problem by an augmented Lagrangian (Powell–Hestenes–Rockafellar):
        for the constraints c_k = D_k - λ M_k >= 0 each inner problem minimizes
        F + Σ_k ψ(c_k, ν_k, ρ), ψ = -ν c + (ρ/2)c² where c <= ν/ρ and -ν²/(2ρ) otherwise, over
        W, H >= 0, E, b by L-BFGS-B (:func:`nclab.models.solvers.minimize`); then
        ν <- max(0, ν - ρ c), and ρ grows tenfold when the violation fell by less than 4x.
        ``converged``: the last inner solve met ``tol``, the violation is <= ``constraint_tol``
        and so is max_k ν_k |c_k| (complementarity). The lowest objective among the starts
        that end feasible (violation <= ``constraint_tol``) is kept.
        """
        _check_int("restarts", restarts, 1)
        _check_int("max_outer", max_outer, 1)
        check_start(seed, init_scale)
        for name, value in (("tol", tol), ("constraint_tol", constraint_tol)):
            if (
                isinstance(value, bool)
                or not isinstance(value, (int, float))
                or not 0 < value < math.inf
            ):
                raise ValueError(f"{name}: expected a finite tolerance > 0, got {value!r}")
        gen = torch.Generator().manual_seed(seed)
        k, d, big_n = self.num_classes, self.dim, self.num_samples
        constrained = self.noisy > 0 and self.expressivity > 0
        bounded = [False, True, False, False][: 4 if self.bias else 3]
        runs: list[tuple[float, float, list[torch.Tensor], float, bool]] = []
        for start in range(restarts):
            params = [
                init_scale * torch.randn(k, d, generator=gen, dtype=_F64),
                init_scale * torch.randn(d, big_n, generator=gen, dtype=_F64).abs(),
                init_scale * torch.randn(NUISANCE_DIM, big_n, generator=gen, dtype=_F64),
            ]
            if self.bias:
                params.append(torch.zeros(k, dtype=_F64))
            nu = torch.zeros(k, dtype=_F64)
            rho, last_violation = 1.0, math.inf
            converged = False
            norm = math.inf
            for outer in range(max_outer if constrained else 1):

                def fn(p: Any, nu: torch.Tensor = nu, rho: float = rho) -> torch.Tensor:
                    value = self.objective(*p)
                    if not constrained:
                        return value
                    c = self._constraint(list(p))
                    psi = torch.where(
                        c <= nu / rho, -nu * c + 0.5 * rho * c.square(), -nu.square() / (2 * rho)
                    )
                    return value + psi.sum()

                res = minimize(
                    params, fn, method="lbfgs", tol=tol, max_iter=max_iter, bounded=bounded
                )
                params = res.params
                norm = res.gradient_norm
                if not constrained:
                    converged = res.converged
                    break
                with torch.no_grad():
                    c = self._constraint(params)
                violation = float((-c).clamp_min(0).max())
                new_nu = (nu - rho * c).clamp_min(0)
                slack = float((new_nu * c.abs()).max())
                if progress is not None:
                    progress(
                        f"start {start + 1}, round {outer + 1}: objective "
                        f"{float(self.objective(*params)):.12g}, violation {violation:.1e}"
                    )
                nu = new_nu
                if violation <= constraint_tol and slack <= constraint_tol:
                    converged = res.converged
                    break
                if violation > 0.25 * last_violation:
                    rho = min(10.0 * rho, _MAX_RHO)
                last_violation = violation
            with torch.no_grad():
                final_violation = (
                    float((-self._constraint(params)).clamp_min(0).max()) if constrained else 0.0
                )
                value = float(self.objective(*params))
            runs.append((value, final_violation, params, norm, converged))
        feasible = [r for r in runs if r[1] <= constraint_tol] or runs
        best = min(feasible, key=lambda r: r[0] if math.isfinite(r[0]) else math.inf)
        value, _, params, norm, converged = best
        return self._solution(
            "features",
            params[0],
            params[1],
            params[2],
            params[3] if self.bias else None,
            norm,
            converged,
            [r[0] for r in runs],
        )


def fit(source: str | os.PathLike[str] | tuple[Any, Any, Any], **options: Any) -> MDFit:
    """Fit the inverse expressivity λ̂ = D / M to a trained network (a run directory, or
    (features, observed, true)); see :func:`nclab.models.md_fit.fit` for ``options``."""
    from nclab.models.md_fit import fit as fit_source

    return fit_source(source, **options)


def _noiseless_report(phi: torch.Tensor, true: torch.Tensor) -> NoiseReport:
    """measure_noise's report when no sample is noisy: memorization 0 (nothing memorized)."""
    report = measure_noise(phi.T, true, true)
    values = dict(report.values)
    values["memorization"] = 0.0
    values["memorization_scaled"] = 0.0
    return NoiseReport(values=values, per_class=report.per_class)
