"""The unconstrained-features model (UFM): objective, theory, numerical solution.

Standard form (Zhu et al., NeurIPS 2021), balanced classes, N = K n, W: K x d, H: d x N (the
features are the columns h_i of H, class-major order: sample i has label i // n), bias b: K:

    F(W, H, b) = (1/N) Σ_i ℓ(W h_i + b, y_i) + (λ_W/2)‖W‖²_F + (λ_H/2)‖H‖²_F + (λ_b/2)‖b‖²,

with ℓ from :mod:`nclab.losses` (CE, MSE = ½‖z - e_y‖², label smoothing, focal); λ_b = 0 means
an unregularized bias. Option ``nonneg``: H >= 0 (the positive layer-peeled model of Nguyen et
al., ICLR 2023: features after a ReLU). The ``tirer`` convention is accepted and mapped exactly
(:mod:`nclab.models.conventions`). The closed forms are in :mod:`nclab.models.theory`.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import torch

from nclab.devices import check_device
from nclab.losses import Loss
from nclab.metrics import CollapseReport, measure
from nclab.models import theory
from nclab.models.conventions import check_penalty, to_standard_feature, to_standard_weight
from nclab.models.solvers import check_solver_options, multistart

__all__ = [
    "NONNEG_RESTARTS",
    "UFM",
    "ZERO_LOGITS",
    "UFMSolution",
    "check_start",
    "class_labels",
    "zero_metrics_error",
]

# A solution whose logits W H (bias excluded) are all below this, relative to the loss's target
# scale, is the zero solution W = H = 0 reached to the solver's tolerance: its class means
# coincide up to rounding, and NC metrics of it would measure the rounding, not a geometry.
ZERO_LOGITS = 1e-6

# Default random starts of the non-negative UFM (see UFM.solve).
NONNEG_RESTARTS = 4


def zero_metrics_error(largest_logit: float) -> ValueError:
    return ValueError(
        f"metrics: the solution is the zero point W = H = 0 (largest |logit| {largest_logit:.1e}): "
        "its class means coincide, so the NC metrics are undefined (zero_solution is True)"
    )


def class_labels(
    num_classes: int, per_class: int, device: torch.device | str = "cpu"
) -> torch.Tensor:
    """Balanced labels in class-major order: 0 (n times), 1 (n times), ..."""
    return torch.arange(num_classes, device=device).repeat_interleave(per_class)


def _check_size(name: str, value: int, minimum: int) -> int:
    if isinstance(value, bool) or not isinstance(value, int) or value < minimum:
        raise ValueError(f"{name}: expected an integer >= {minimum}, got {value!r}")
    return value


def _check_flag(name: str, value: bool) -> bool:
    if not isinstance(value, bool):
        raise ValueError(f"{name}: expected True or False, got {value!r}")
    return value


def check_start(seed: int, init_scale: float) -> None:
    """Validate a solve's seed (an integer in [0, 2**63)) and start scale (finite, > 0: from
    W = H = 0, a stationary point of every model here, no step is ever taken)."""
    if isinstance(seed, bool) or not isinstance(seed, int) or not 0 <= seed < 2**63:
        raise ValueError(f"seed: expected an integer in [0, 2**63), got {seed!r}")
    if (
        isinstance(init_scale, bool)
        or not isinstance(init_scale, (int, float))
        or not 0 < init_scale < math.inf
    ):
        raise ValueError(
            f"init_scale: expected a finite scale > 0 (W = H = 0 is a stationary point), "
            f"got {init_scale!r}"
        )


@dataclass(frozen=True)
class UFMSolution:
    """A numerical solution of a UFM: the point reached and how well it was reached."""

    model: UFM
    weight: torch.Tensor
    features: torch.Tensor
    bias: torch.Tensor | None
    objective: float
    gradient_norm: float
    iterations: int
    converged: bool
    method: str
    restart_objectives: list[float] = field(default_factory=list)
    path: list[dict[str, float]] = field(default_factory=list)

    def logits(self) -> torch.Tensor:
        z = self.weight @ self.features
        return z + self.bias.unsqueeze(1) if self.bias is not None else z

    @property
    def largest_logit(self) -> float:
        """max |W H| over the entries (the bias excluded), relative to the loss's target scale."""
        return float((self.weight @ self.features).abs().max()) / self.model.loss.target_scale

    @property
    def zero_solution(self) -> bool:
        """Whether the solver reached the zero point W = H = 0 (every |W H| entry below
        :data:`ZERO_LOGITS` times the target scale): a minimizer beyond the regularization
        threshold (e.g. c >= 1 for MSE), whose NC metrics are undefined."""
        return self.largest_logit <= ZERO_LOGITS

    def summary(self) -> dict[str, float]:
        """feature_norm_sq (mean ‖h̄_k‖²), weight_norm_sq (mean ‖w_k‖²), margin (mean over
        samples of z_y - max_{j≠y} z_j), bias_mean."""
        m = self.model
        means = self.features.reshape(self.features.shape[0], m.num_classes, m.per_class).mean(2)
        z = self.logits()
        labels = class_labels(m.num_classes, m.per_class, z.device)
        target = z.gather(0, labels.unsqueeze(0)).squeeze(0)
        others = z.scatter(0, labels.unsqueeze(0), float("-inf")).max(0).values
        out = {
            "feature_norm_sq": float(means.square().sum(0).mean()),
            "weight_norm_sq": float(self.weight.square().sum(1).mean()),
            "margin": float((target - others).mean()),
        }
        if self.bias is not None:
            out["bias_mean"] = float(self.bias.mean())
        return out

    def metrics(self, **options: Any) -> CollapseReport:
        """The NC report of the features (rows h_i) with the classifier (W, b); ValueError for
        the zero solution, whose class means coincide."""
        if self.zero_solution:
            raise zero_metrics_error(self.largest_logit)
        m = self.model
        labels = class_labels(m.num_classes, m.per_class, self.features.device)
        return measure(self.features.T, labels, self.weight, self.bias, **options)


@dataclass(frozen=True)
class UFM:
    """An unconstrained-features model; λ's are given in ``convention`` and kept as given.

    Parameters
    ----------
    loss : the :class:`~nclab.losses.Loss`.
    num_classes, per_class, dim : K, n (samples per class), d.
    lambda_w, lambda_h : weight and feature penalties (> 0).
    bias : include a bias b.
    lambda_b : bias penalty (>= 0; 0 = unregularized).
    nonneg : constrain H >= 0.
    convention : ``"standard"`` or ``"tirer"``.
    """

    loss: Loss
    num_classes: int
    per_class: int
    dim: int
    lambda_w: float
    lambda_h: float
    bias: bool = False
    lambda_b: float = 0.0
    nonneg: bool = False
    convention: str = "standard"

    def __post_init__(self) -> None:
        if not isinstance(self.loss, Loss):
            raise ValueError(
                f"loss: expected a nclab.losses.Loss (make_loss(name, ...)), got {self.loss!r}"
            )
        _check_flag("bias", self.bias)
        _check_flag("nonneg", self.nonneg)
        _check_size("num_classes", self.num_classes, 2)
        _check_size("per_class", self.per_class, 1)
        _check_size("dim", self.dim, 1)
        check_penalty("lambda_w", self.lambda_w, positive=True)
        check_penalty("lambda_h", self.lambda_h, positive=True)
        check_penalty("lambda_b", self.lambda_b, positive=False)
        if self.lambda_b and not self.bias:
            raise ValueError("lambda_b: given without bias=True")
        to_standard_weight(1.0, self.convention, self.num_classes)

    @property
    def num_samples(self) -> int:
        return self.num_classes * self.per_class

    def standard_penalties(self) -> tuple[float, float, float]:
        """(λ_W, λ_H, λ_b) in the standard convention."""
        k, n, conv = self.num_classes, self.per_class, self.convention
        return (
            to_standard_weight(self.lambda_w, conv, k),
            to_standard_feature(self.lambda_h, conv, k, n),
            to_standard_weight(self.lambda_b, conv, k),
        )

    def objective(
        self, weight: torch.Tensor, features: torch.Tensor, bias: torch.Tensor | None = None
    ) -> torch.Tensor:
        """F(W, H, b) exactly as in the module docstring (the same value in every convention)."""
        lw, lh, lb = self.standard_penalties()
        z = weight @ features
        if bias is not None:
            z = z + bias.unsqueeze(1)
        labels = class_labels(self.num_classes, self.per_class, z.device)
        value = self.loss(z.T, labels) + 0.5 * lw * weight.square().sum()
        value = value + 0.5 * lh * features.square().sum()
        if bias is not None and lb:
            value = value + 0.5 * lb * bias.square().sum()
        return value

    def theory(self) -> theory.Prediction:
        """The theorem's prediction for the global minimizer; ValueError where none applies."""
        k, n, d = self.num_classes, self.per_class, self.dim
        lw, lh, lb = self.standard_penalties()
        name = self.loss.name
        if self.nonneg:
            if name not in ("ce", "ls"):
                raise ValueError(f"loss: no theorem for non-negative features with {name!r}")
            if d < k:
                raise ValueError(f"dim: the non-negative UFM theorem needs d >= K = {k}, got {d}")
            return theory.nonneg_prediction(self.loss, k, n, lw, lh)
        if name == "mse":
            if self.bias and lb > 0:
                raise ValueError("lambda_b: the MSE theorems cover no bias or an unregularized one")
            need = k - 1 if self.bias else k
            if d < need:
                raise ValueError(f"dim: the MSE UFM theorem needs d >= {need}, got {d}")
            return theory.mse_prediction(
                k,
                n,
                lw,
                lh,
                self.bias,
                target_scale=self.loss.target_scale,
                target_weight=self.loss.target_weight,
            )
        if d < k - 1:
            raise ValueError(f"dim: the simplex-ETF theorem needs d >= K - 1 = {k - 1}, got {d}")
        return theory.softmax_prediction(self.loss, k, n, lw, lh, self.bias, lb)

    def initial_point(
        self,
        generator: torch.Generator,
        device: torch.device | str,
        dtype: torch.dtype,
        scale: float,
    ) -> list[torch.Tensor]:
        k, d, big_n = self.num_classes, self.dim, self.num_samples
        w = scale * torch.randn(k, d, generator=generator, dtype=torch.float64)
        h = scale * torch.randn(d, big_n, generator=generator, dtype=torch.float64)
        if self.nonneg:
            h = h.abs()
        params = [w, h]
        if self.bias:
            params.append(scale * torch.randn(k, generator=generator, dtype=torch.float64))
        return [p.to(device=device, dtype=dtype) for p in params]

    def solve(
        self,
        *,
        method: str = "lbfgs",
        restarts: int | None = None,
        seed: int = 0,
        device: torch.device | str = "cpu",
        dtype: torch.dtype = torch.float64,
        tol: float = 1e-8,
        max_iter: int = 20_000,
        lr: float | None = None,
        momentum: float | None = None,
        init_scale: float = 0.1,
        record_every: int = 0,
        progress: Callable[[str], None] | None = None,
    ) -> UFMSolution:
        """Minimize F from ``restarts`` random starting points; keep the lowest objective.

        The kept run reports its own ``converged`` (gradient norm <= ``tol`` after at least one
        step). ``lr`` / ``momentum`` are ``method="gd"``'s (default 0.1, 0). ``record_every`` > 0
        records (iteration, objective, nc1, nc2_etf_means, nc3_duality) along the kept path.
        ``progress`` is called with a status line every few seconds of a long solve.
        ``restarts`` defaults to 1, and to :data:`NONNEG_RESTARTS` with ``nonneg``: the
        non-negative problem has local minima that one start reaches (measured: 3 of 36 seeded
        single starts over K = 3..5, d = K..2K stopped above the theorem's optimum).
        """
        if restarts is None:
            restarts = NONNEG_RESTARTS if self.nonneg else 1
        _check_size("restarts", restarts, 1)
        check_start(seed, init_scale)
        device = check_device(device)
        check_solver_options(
            method=method,
            tol=tol,
            max_iter=max_iter,
            lr=lr,
            momentum=momentum,
            record_every=record_every,
        )
        gen = torch.Generator().manual_seed(seed)

        def fn(params: Any) -> torch.Tensor:
            return self.objective(*params)

        def recorder(iteration: int, params: Any) -> dict[str, float]:
            w, h = params[0], params[1]
            b = params[2] if self.bias else None
            labels = class_labels(self.num_classes, self.per_class, h.device)
            rep = measure(h.T, labels, w, b).as_dict()
            return {
                "iteration": float(iteration),
                "objective": float(self.objective(w, h, b)),
                "nc1": rep["nc1"],
                "nc2_etf_means": rep["nc2_etf_means"],
                "nc3_duality": rep["nc3_duality"],
            }

        best, results = multistart(
            (self.initial_point(gen, device, dtype, init_scale) for _ in range(restarts)),
            fn,
            method=method,
            tol=tol,
            max_iter=max_iter,
            lr=lr,
            momentum=momentum,
            bounded=[False, self.nonneg, False][: 3 if self.bias else 2],
            record_every=record_every,
            progress=progress,
            recorder=recorder if record_every else None,
        )
        return UFMSolution(
            model=self,
            weight=best.params[0],
            features=best.params[1],
            bias=best.params[2] if self.bias else None,
            objective=best.objective,
            gradient_norm=best.gradient_norm,
            iterations=best.iterations,
            converged=best.converged,
            method=best.method,
            restart_objectives=[r.objective for r in results],
            path=best.path,
        )
