"""The extended unconstrained-features model (EUFM) of Tirer & Bruna (ICML 2022), any depth.

Standard form, balanced classes (N = K n), L >= 1 hidden layers, σ = identity or ReLU:

    H_{l+1} = σ(W_l H_l)  (l = 1..L, W_l: d x d),   Z = W_{L+1} H_{L+1}  (W_{L+1}: K x d),
    F = (1/N) Σ_i ℓ(z_i, y_i) + (λ_{L+1}/2)‖W_{L+1}‖² + Σ_l (λ_l/2)‖W_l‖² + (λ_H/2)‖H_1‖².

For L = 1 these are the paper's W2 = W_{L+1}, W1, H1 and the deep features H2 = σ(W1 H1). In the
``tirer`` convention every weight penalty is λ/(2K) and the feature penalty λ/(2Kn).

Closed form (MSE, linear σ, any L; ReLU for L = 1). With m = L + 2 factors the balanced
factorization of Z costs (m/2) Λ Σ_j s_j(Z)^{2/m}, Λ = (λ_{L+1} λ_L ... λ_1 λ_H)^{1/m}, and each of
the K singular values √n of Y is shrunk to p√n, so Z = W_{L+1} H_{L+1} = p Y with

    g(p) = (1-p)²/2 + (m/2) δ p^{2/m},   δ = K n^{1/m} Λ,

stationary where (1 - p) p^{1-2/m} = δ; p is the largest root. Comparing g(p) with g(0) = 1/2
gives the threshold: the non-zero solution is optimal iff its root p >= (m-2)/(m-1) (for L = 1,
m = 3: p >= 1/2, i.e. δ <= 2^{-4/3}); beyond it W = H = 0. (m = 2 is the plain UFM: p = 1 - c.)
At the optimum each factor A_i has K equal singular values with a_i² = (p√n)^{2/m} Λ/λ_i, so
‖w_{L+1,k}‖² = a²_{L+1}, ‖W_l‖²_F = K a_l², ‖h̄_1k‖² = a_H²/n and ‖h̄_{l+1,k}‖² = (a_l … a_1 a_H)²/n.
The class means of every H_l form an orthogonal frame; with ReLU (L = 1) the same value is reached
with H2 >= 0 an orthogonal frame, while the means of H1 need not be orthogonal (Tirer & Bruna,
Thm 4.2). In the ``tirer`` convention δ = (Π λ)^{1/m}: for L = 1, (λ_W2 λ_W1 λ_H1)^{1/3}.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass, field, replace
from typing import Any

import torch
from scipy import optimize

from nclab.devices import check_device
from nclab.losses import Loss
from nclab.metrics import CollapseReport, measure
from nclab.models.conventions import check_penalty, to_standard_feature, to_standard_weight
from nclab.models.solvers import Candidate, check_solver_options, minimize, multistart
from nclab.models.theory import Prediction
from nclab.models.ufm import (
    ZERO_LOGITS,
    _check_size,
    check_start,
    class_labels,
    zero_metrics_error,
)

__all__ = ["ACTIVATIONS", "ExtendedSolution", "ExtendedUFM", "extended_root"]

ACTIVATIONS: tuple[str, ...] = ("linear", "relu")


def extended_root(delta: float, factors: int) -> float:
    """The largest root p in (0, 1) of (1 - p) p^{1 - 2/m} = δ, or 0 when none exists (m >= 3)."""
    m = factors
    expo = 1.0 - 2.0 / m
    p_peak = expo / (1.0 + expo)  # argmax of (1 - p) p^expo

    def h(p: float) -> float:
        return float((1.0 - p) * p**expo - delta)

    if h(p_peak) < 0:
        return 0.0
    if h(p_peak) == 0:
        return p_peak
    return float(optimize.brentq(h, p_peak, 1.0, xtol=1e-16, rtol=1e-15))


@dataclass(frozen=True)
class ExtendedSolution:
    """A numerical solution of the EUFM: weights W_1..W_{L+1}, features H_1..H_{L+1}."""

    model: ExtendedUFM
    weights: list[torch.Tensor]
    features: list[torch.Tensor]
    objective: float
    gradient_norm: float
    iterations: int
    converged: bool
    method: str
    restart_objectives: list[float] = field(default_factory=list)
    path: list[dict[str, float]] = field(default_factory=list)

    @property
    def largest_logit(self) -> float:
        """max |W_{L+1} H_{L+1}| over the entries, relative to the loss's target scale."""
        z = self.weights[-1] @ self.features[-1]
        return float(z.abs().max()) / self.model.loss.target_scale

    @property
    def zero_solution(self) -> bool:
        """Whether the solution is the zero point (every logit below :data:`ZERO_LOGITS` times
        the target scale): the minimizer beyond the threshold; its NC metrics are undefined."""
        return self.largest_logit <= ZERO_LOGITS

    def summary(self) -> dict[str, float]:
        """Mean ‖h̄_{l,k}‖² per feature layer (h1_norm_sq, h2_norm_sq, ...), the classifier's mean
        ‖w_k‖² (w{L+1}_norm_sq) and ‖W_l‖²_F of the hidden weights (w{l}_fro_sq)."""
        m = self.model
        out: dict[str, float] = {}
        for i, h in enumerate(self.features, start=1):
            means = h.reshape(h.shape[0], m.num_classes, m.per_class).mean(2)
            out[f"h{i}_norm_sq"] = float(means.square().sum(0).mean())
        last = len(self.weights)
        for i, w in enumerate(self.weights, start=1):
            if i == last:
                out[f"w{i}_norm_sq"] = float(w.square().sum(1).mean())
            else:
                out[f"w{i}_fro_sq"] = float(w.square().sum())
        return out

    def metrics(self, **options: Any) -> dict[str, CollapseReport]:
        """The NC report of each feature layer ("H1", "H2", ...); the last one with W_{L+1}.
        ValueError for the zero solution, whose class means coincide."""
        if self.zero_solution:
            raise zero_metrics_error(self.largest_logit)
        m = self.model
        labels = class_labels(m.num_classes, m.per_class, self.features[0].device)
        reports = {}
        for i, h in enumerate(self.features, start=1):
            last = i == len(self.features)
            weight = self.weights[-1] if last else None
            reports[f"H{i}"] = measure(h.T, labels, weight, **options)
        return reports


@dataclass(frozen=True)
class ExtendedUFM:
    """The extended UFM with L = len(lambda_hidden) hidden layers.

    Parameters
    ----------
    num_classes, per_class, dim : K, n, d.
    lambda_w : penalty of the classifier W_{L+1} (W2 when L = 1).
    lambda_hidden : penalties of W_1, ..., W_L (for L = 1: (λ_W1,)).
    lambda_h : penalty of the first-layer features H_1.
    activation : ``"linear"`` or ``"relu"``.
    loss : default MSE (the closed forms are for MSE).
    convention : ``"standard"`` or ``"tirer"``.
    """

    num_classes: int
    per_class: int
    dim: int
    lambda_w: float
    lambda_hidden: tuple[float, ...]
    lambda_h: float
    activation: str = "linear"
    loss: Loss = field(default_factory=lambda: Loss("mse"))
    convention: str = "standard"

    def __post_init__(self) -> None:
        if not isinstance(self.loss, Loss):
            raise ValueError(
                f"loss: expected a nclab.losses.Loss (make_loss(name, ...)), got {self.loss!r}"
            )
        _check_size("num_classes", self.num_classes, 2)
        _check_size("per_class", self.per_class, 1)
        _check_size("dim", self.dim, 1)
        check_penalty("lambda_w", self.lambda_w, positive=True)
        check_penalty("lambda_h", self.lambda_h, positive=True)
        if not isinstance(self.lambda_hidden, tuple) or not self.lambda_hidden:
            raise ValueError("lambda_hidden: expected a non-empty tuple, one λ per hidden layer")
        for i, lam in enumerate(self.lambda_hidden, start=1):
            check_penalty(f"lambda_hidden[{i}]", lam, positive=True)
        if self.activation not in ACTIVATIONS:
            raise ValueError(f"activation: expected one of {ACTIVATIONS}, got {self.activation!r}")
        to_standard_weight(1.0, self.convention, self.num_classes)

    @property
    def depth(self) -> int:
        return len(self.lambda_hidden)

    def standard_penalties(self) -> tuple[float, tuple[float, ...], float]:
        """(λ_{L+1}, (λ_1..λ_L), λ_H) in the standard convention."""
        k, n, conv = self.num_classes, self.per_class, self.convention
        return (
            to_standard_weight(self.lambda_w, conv, k),
            tuple(to_standard_weight(lam, conv, k) for lam in self.lambda_hidden),
            to_standard_feature(self.lambda_h, conv, k, n),
        )

    def scaled(self, factor: float) -> ExtendedUFM:
        """The same model with every regularization strength multiplied by ``factor``."""
        return replace(
            self,
            lambda_w=self.lambda_w * factor,
            lambda_hidden=tuple(lam * factor for lam in self.lambda_hidden),
            lambda_h=self.lambda_h * factor,
        )

    def forward(self, weights: list[torch.Tensor], h1: torch.Tensor) -> list[torch.Tensor]:
        """[H_1, ..., H_{L+1}] for hidden weights ``weights`` = [W_1, ..., W_L]."""
        feats = [h1]
        for w in weights:
            pre = w @ feats[-1]
            feats.append(torch.relu(pre) if self.activation == "relu" else pre)
        return feats

    def objective(
        self, classifier: torch.Tensor, hidden: list[torch.Tensor], h1: torch.Tensor
    ) -> torch.Tensor:
        """F as in the module docstring (the same value in every convention)."""
        lw, lhid, lh = self.standard_penalties()
        z = classifier @ self.forward(hidden, h1)[-1]
        labels = class_labels(self.num_classes, self.per_class, z.device)
        value = self.loss(z.T, labels) + 0.5 * lw * classifier.square().sum()
        for lam, w in zip(lhid, hidden, strict=True):
            value = value + 0.5 * lam * w.square().sum()
        return value + 0.5 * lh * h1.square().sum()

    def theory(self) -> Prediction:
        """The closed form of the module docstring (MSE; linear any depth, ReLU for L = 1).

        A target scale M (ℓ = ½‖z - M e_y‖², ``target_scale``) is a rescaling: with every
        factor multiplied by M^{1/m}, F(λ) = M² F_plain(λ M^{2/m - 2}), so the objective is M²
        times the plain one at λ's scaled by M^{2/m-2}, and every squared norm is M^{2/m} times
        its plain value (the products of l factors M^{2l/m}). A target weight k ≠ 1 weights the
        target entry differently from the others and breaks the unitary invariance the
        derivation rests on: refused.
        """
        if self.loss.name != "mse":
            raise ValueError(
                f"loss: the extended-model closed form is for MSE, got {self.loss.name!r}"
            )
        if self.loss.target_weight != 1.0:
            raise ValueError(
                "loss: the extended-model closed form covers the MSE target scale M but not a "
                f"target weight k != 1 (got k = {self.loss.target_weight:g})"
            )
        if self.activation == "relu" and self.depth != 1:
            raise ValueError("activation: the ReLU closed form is derived for one hidden layer")
        k, n, d = self.num_classes, self.per_class, self.dim
        if d < k:
            raise ValueError(f"dim: the extended-model theorem needs d >= K = {k}, got {d}")
        lw, lhid, lh = self.standard_penalties()
        m = self.depth + 2
        big_m = self.loss.target_scale
        shrink = big_m ** (2.0 / m - 2.0)
        lams = [x * shrink for x in (lw, *lhid, lh)]
        big_lambda = math.exp(sum(math.log(x) for x in lams) / m)
        delta = k * n ** (1.0 / m) * big_lambda
        p = extended_root(delta, m)
        if p < (m - 2) / (m - 1):
            p = 0.0
        value = big_m**2 * ((1 - p) ** 2 / 2 + (m / 2) * delta * p ** (2.0 / m))
        sigma_pow = (p * math.sqrt(n)) ** (2.0 / m) * big_lambda  # a_i² λ_i, common to factors
        factor_sq = big_m ** (2.0 / m)  # each factor carries M^{1/m}
        a_sq = [factor_sq * sigma_pow / lam for lam in lams]  # classifier, W_1..W_L, H_1
        extra: dict[str, float] = {"p": p, "delta": delta}
        h_sq = a_sq[-1] / n
        extra["h1_norm_sq"] = h_sq
        for layer, a in enumerate(a_sq[1:-1], start=1):
            h_sq *= a
            extra[f"h{layer + 1}_norm_sq"] = h_sq
            extra[f"w{layer}_fro_sq"] = k * a
        extra[f"w{self.depth + 1}_norm_sq"] = a_sq[0]
        return Prediction(
            objective=value,
            geometry="orthogonal_frame" if p > 0 else "zero",
            feature_norm_sq=h_sq,
            weight_norm_sq=a_sq[0],
            extra=extra,
        )

    def initial_point(
        self,
        generator: torch.Generator,
        device: torch.device | str,
        dtype: torch.dtype,
        scale: float,
    ) -> list[torch.Tensor]:
        k, d, big_n = self.num_classes, self.dim, self.num_classes * self.per_class
        shapes = [(k, d), *[(d, d)] * self.depth, (d, big_n)]
        return [
            (scale * torch.randn(*s, generator=generator, dtype=torch.float64)).to(device, dtype)
            for s in shapes
        ]

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
        init_scale: float = 0.3,
        record_every: int = 0,
        progress: Callable[[str], None] | None = None,
        continuation: tuple[float, ...] = (0.05, 0.3),
    ) -> ExtendedSolution:
        """Minimize F from ``restarts`` random starts and keep the lowest objective, which
        reports its own ``converged``; ``lr`` / ``momentum`` are ``method="gd"``'s; ``progress``
        is called with a status line every few seconds of a long solve.

        The landscape has a local minimum for every subset of the K singular directions of W H
        switched off (each direction's value (1-p)²/2 + (m/2)δ p^{2/m} has a local minimum at
        p = 0), so a random start often lands in one. Each restart therefore first follows the
        non-zero branch by continuation: it solves the problem with every λ multiplied by the
        factors in ``continuation`` (increasing; where all K directions are strongly active) and
        warm-starts the next. ``continuation=()`` gives plain random restarts.

        W = H = 0 is always a candidate too, evaluated as it is: its gradient is exactly 0 and,
        with at least one hidden layer (m >= 3 factors), it is a strict local minimum (the
        penalty is quadratic there while the loss changes only at order m), and beyond the
        threshold the global one.
        """
        restarts = 1 if restarts is None else restarts
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
        if not isinstance(continuation, tuple) or not all(
            isinstance(f, (int, float)) and not isinstance(f, bool) and 0 < f < math.inf
            for f in continuation
        ):
            raise ValueError(
                f"continuation: expected a tuple of finite factors > 0, got {continuation!r}"
            )
        gen = torch.Generator().manual_seed(seed)
        depth = self.depth

        def fn(params: Any) -> torch.Tensor:
            return self.objective(params[0], list(params[1 : 1 + depth]), params[-1])

        def recorder(iteration: int, params: Any) -> dict[str, float]:
            feats = self.forward(list(params[1 : 1 + depth]), params[-1])
            labels = class_labels(self.num_classes, self.per_class, feats[-1].device)
            rep = measure(feats[-1].T, labels, params[0]).as_dict()
            return {
                "iteration": float(iteration),
                "objective": float(fn(params)),
                "nc1": rep["nc1"],
                "nc2_of_means": rep["nc2_of_means"],
                "nc3_duality": rep["nc3_duality"],
            }

        options: dict[str, Any] = {"method": method, "max_iter": max_iter, "lr": lr}
        options["momentum"] = momentum

        def follow_branch(start: list[torch.Tensor]) -> list[torch.Tensor]:
            for factor in continuation:
                easier = self.scaled(factor)

                def easier_fn(params: Any, model: ExtendedUFM = easier) -> torch.Tensor:
                    return model.objective(params[0], list(params[1 : 1 + depth]), params[-1])

                start = minimize(start, easier_fn, tol=max(tol, 1e-6), **options).params
            return start

        zeros = [torch.zeros_like(p) for p in self.initial_point(gen, device, dtype, 1.0)]
        best, results = multistart(
            (self.initial_point(gen, device, dtype, init_scale) for _ in range(restarts)),
            fn,
            warm_up=follow_branch,
            candidates=[Candidate(zeros, "zero point (a strict local minimum, evaluated)")],
            tol=tol,
            record_every=record_every,
            progress=progress,
            recorder=recorder if record_every else None,
            **options,
        )
        hidden = list(best.params[1 : 1 + depth])
        return ExtendedSolution(
            model=self,
            weights=[*hidden, best.params[0]],
            features=self.forward(hidden, best.params[-1]),
            objective=best.objective,
            gradient_norm=best.gradient_norm,
            iterations=best.iterations,
            converged=best.converged,
            method=best.method,
            restart_objectives=[r.objective for r in results],
            path=best.path,
        )
