"""The reduced memorization–dilation problem: a few scalars, solved to machine precision.

The features-level M-D model (:mod:`nclab.models.md`) reduces exactly, in two proven steps and
one stated and tested step, to a problem over one class's quantities:

1. *Dilation costs (λ_H/2)·D² per clean sample, no more and no less.* For fixed W and clean mean
   μ, f(h) = ℓ(Wh + b)/N + (λ_H/2)‖h‖² is λ_H-strongly convex, so for displacements δ_i with
   Σδ_i = 0, Σ f(μ + δ_i) >= n_c f(μ) + (λ_H/2) Σ‖δ_i‖² >= n_c f(μ) + (λ_H/2) n_c D², D the mean
   ‖δ_i‖ (the linear term sums to 0; Cauchy–Schwarz for the last step). The nuisance coordinates
   E (unseen by the classifier, no sign constraint) reach the bound: n_c >= 2 points of norm D on
   a circle, summing to 0. So the clean features collapse in the classifier's coordinates, and
   the constraint D_k >= λ M_k, active wherever it binds, costs (λ_H/2) n_c λ² M_k².
2. *Identical samples coincide.* Given W, the remaining problem is strictly convex in the
   features (λ_H > 0, and M_k² is the square of a non-negative convex function), so its unique
   minimizer gives the same feature to samples with the same true and observed class.
3. *Cyclic symmetry* (stated, tested against the features-level solver in tests/test_md.py). The
   noise assignment is invariant under relabelling k -> k + 1 (mod K); the minimizer is taken
   circulant: W[c, j] = w[(j - c) mod K], the clean mean of class k is roll(u, k), the noisy
   samples of class k observed as k + o sit at roll(x_o, k), and feature coordinates beyond K
   are 0 (d >= K). A constant bias shifts every logit equally, so it is 0.

With n_c = n - q clean and q_o noisy samples per class at offset o (Σ_o q_o = q), the reduced
objective (standard convention) is

    R = (1/n)[n_c ℓ(W u, 0) + Σ_o q_o ℓ(W x_o, o)] + (λ_W K/2)‖w‖²
        + (λ_H K/2)[n_c ‖u‖² + Σ_o q_o ‖x_o‖² + n_c λ² M²],   M = (1/q) Σ_o q_o ‖x_o - u‖,

over w ∈ R^K, u >= 0, x_o >= 0; the dilation is D = λ M. It is minimized by L-BFGS-B from
several structured starts, the best polished by projected Newton steps (exact Hessian) to a
projected gradient below 1e-11 (``converged``); typically ~1e-15.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass

import numpy as np
import torch
from scipy.optimize import minimize as scipy_minimize

from nclab.losses import Loss

__all__ = ["ReducedOptimum", "circulant", "solve_reduced"]

_F64 = torch.float64
# L-BFGS-B's projected-gradient target: the objective is O(1) and its rounding error ~1e-16, so
# a gradient of 1e-11 leaves the value within ~1e-20 of the minimum along a quadratic basin.
_GTOL = 1e-11
_CONTINUE_BELOW = 1e-4


def circulant(row: torch.Tensor) -> torch.Tensor:
    """The K x K matrix with entries C[c, j] = row[(j - c) mod K]."""
    k = row.shape[0]
    idx = (torch.arange(k).unsqueeze(0) - torch.arange(k).unsqueeze(1)) % k
    return row[idx]


@dataclass(frozen=True)
class ReducedOptimum:
    """The reduced minimizer: w (classifier row 0), u (clean mean of class 0), x (one row per
    offset o in ``offsets``: the noisy samples of class 0 observed as o), its value and the
    solver's projected gradient norm."""

    objective: float
    w: np.ndarray
    u: np.ndarray
    x: np.ndarray
    offsets: tuple[int, ...]
    memorization: float
    gradient_norm: float
    converged: bool


def _objective(
    params: torch.Tensor,
    loss: Loss,
    k: int,
    n: int,
    counts: dict[int, int],
    lambda_w: float,
    lambda_h: float,
    expressivity: float,
) -> tuple[torch.Tensor, torch.Tensor]:
    offsets = sorted(counts)
    w, u = params[:k], params[k : 2 * k]
    x = params[2 * k :].reshape(len(offsets), k)
    q = sum(counts.values())
    n_clean = n - q
    weight = circulant(w)
    rows = torch.cat([u.unsqueeze(0), x])
    labels = torch.tensor([0, *offsets])
    counts_t = torch.tensor([float(n_clean)] + [float(counts[o]) for o in offsets], dtype=_F64)
    per_sample = loss.per_sample(rows @ weight.T, labels)
    mem = (
        (counts_t[1:] * torch.linalg.vector_norm(x - u, dim=1)).sum() / q
        if q
        else torch.zeros((), dtype=_F64)
    )
    value = (counts_t * per_sample).sum() / n + 0.5 * lambda_w * k * w.square().sum()
    sq = (counts_t * rows.square().sum(1)).sum() + n_clean * expressivity**2 * mem.square()
    return value + 0.5 * lambda_h * k * sq, mem


def _starts(k: int, offsets: list[int], m0: float, rng: np.random.Generator) -> list[np.ndarray]:
    """Structured starts (the noiseless orthogonal frame with the noisy samples at their true
    class, at their observed class, and half-way) and random non-negative ones."""
    scale = math.sqrt(max(m0, 0.5))
    w = scale * (np.eye(k)[0] - 1.0 / k)
    u = scale * np.eye(k)[0]
    starts = []
    for t in (0.1, 0.5, 0.9):
        x = [(1 - t) * u + t * np.roll(u, o) for o in offsets]
        starts.append(np.concatenate([w, u, *x]))
    for _ in range(3):
        starts.append(
            np.concatenate(
                [rng.normal(size=k) * scale, np.abs(rng.normal(size=k * (1 + len(offsets))))]
            )
        )
    return starts


def _newton(
    z: np.ndarray,
    k: int,
    fun: Callable[[np.ndarray], tuple[float, np.ndarray]],
    hessian: Callable[[np.ndarray], np.ndarray],
    projected_norm: Callable[[np.ndarray], float],
) -> np.ndarray:
    """Projected Newton polishing: the variables at their bound 0 with a gradient pushing out
    stay fixed, the others take a Newton step (halved until it lowers the projected gradient).
    Small regularizations leave the factorization of the logits determined by the penalty
    alone, a curvature ~√(λ_Wλ_H) against the loss's O(1) (condition numbers up to 1e10), where
    L-BFGS-B stalls far from the minimizer and Newton's method does not."""
    norm = projected_norm(z)
    for _ in range(100):
        _, g = fun(z)
        lower = np.arange(z.size) >= k
        free = ~(lower & (z <= 0) & (g > 0))
        h = hessian(z)[np.ix_(free, free)]
        # |eigenvalues| (floored): a descent direction also where the Hessian is indefinite
        eigval, eigvec = np.linalg.eigh(h)
        floor = 1e-14 * max(float(np.abs(eigval).max()), 1e-300)
        step = -eigvec @ ((eigvec.T @ g[free]) / np.maximum(np.abs(eigval), floor))
        value = fun(z)[0]
        t, improved = 1.0, False
        for _ in range(40):
            trial = z.copy()
            trial[free] = z[free] + t * step
            trial[lower] = np.maximum(trial[lower], 0.0)
            trial_norm = projected_norm(trial)
            if trial_norm < norm and fun(trial)[0] <= value + 1e-14 * (1.0 + abs(value)):
                z, norm, improved = trial, trial_norm, True
                break
            t /= 2
        if not improved or norm <= _GTOL * 1e-3:
            break
    return z


def solve_reduced(
    loss: Loss,
    num_classes: int,
    per_class: int,
    counts: dict[int, int],
    lambda_w: float,
    lambda_h: float,
    expressivity: float,
    *,
    start_margin: float = 2.0,
    seed: int = 0,
) -> ReducedOptimum:
    """Minimize the reduced objective R of the module docstring (standard-convention λ's;
    ``counts`` maps each offset o to q_o, the noisy samples of a class observed as class + o)."""
    k, n = num_classes, per_class
    offsets = sorted(o for o, c in counts.items() if c)
    counts = {o: counts[o] for o in offsets}
    size = 2 * k + k * len(offsets)
    bounds: list[tuple[float | None, float | None]] = [(None, None)] * k + [(0.0, None)] * (
        size - k
    )

    current = [lambda_w, lambda_h]  # the rung of the continuation being solved

    def fun(z: np.ndarray) -> tuple[float, np.ndarray]:
        p = torch.tensor(z, dtype=_F64, requires_grad=True)
        value, _ = _objective(p, loss, k, n, counts, current[0], current[1], expressivity)
        (grad,) = torch.autograd.grad(value, p)
        return float(value.detach()), grad.numpy()

    def projected_norm(z: np.ndarray) -> float:
        _, g = fun(z)
        g = np.where((np.arange(size) >= k) & (z <= 0) & (g > 0), 0.0, g)
        return float(np.linalg.norm(g))

    def hessian(z: np.ndarray) -> np.ndarray:
        def scalar(p: torch.Tensor) -> torch.Tensor:
            return _objective(p, loss, k, n, counts, current[0], current[1], expressivity)[0]

        h = torch.autograd.functional.hessian(scalar, torch.tensor(z, dtype=_F64))  # type: ignore[no-untyped-call]
        return np.asarray(h.detach().numpy())

    def lbfgsb(z0: np.ndarray) -> tuple[float, np.ndarray]:
        res = scipy_minimize(
            fun,
            z0,
            jac=True,
            method="L-BFGS-B",
            bounds=bounds,
            options={"maxiter": 20_000, "maxcor": 30, "gtol": 1e-10, "ftol": 0.0, "maxls": 60},
        )
        return float(res.fun), np.asarray(res.x)

    # Below √(λ_Wλ_H) = 1e-4 the problem is solved first at 1e-4 and then followed down by
    # factors of 10 (same ratio λ_W/λ_H), each rung started at the previous optimum.
    ladder = [1.0]
    while math.sqrt(lambda_w * lambda_h) * ladder[-1] < _CONTINUE_BELOW:
        ladder.append(ladder[-1] * 10.0)
    rng = np.random.default_rng(seed)
    z = np.zeros(size)
    for rung, factor in enumerate(reversed(ladder)):
        current[:] = [lambda_w * factor, lambda_h * factor]
        if rung == 0:
            best = min(
                (lbfgsb(z0) for z0 in _starts(k, offsets, start_margin, rng)),
                key=lambda r: r[0],
            )
            z = best[1]
        else:
            z = lbfgsb(z)[1]
        z = _newton(z, k, fun, hessian, projected_norm)
    p = torch.tensor(z, dtype=_F64)
    obj, mem = _objective(p, loss, k, n, counts, lambda_w, lambda_h, expressivity)
    norm = projected_norm(z)
    return ReducedOptimum(
        objective=float(obj),
        w=z[:k].copy(),
        u=z[k : 2 * k].copy(),
        x=z[2 * k :].reshape(len(offsets), k).copy(),
        offsets=tuple(offsets),
        memorization=float(mem),
        gradient_norm=norm,
        converged=norm <= _GTOL,
    )
