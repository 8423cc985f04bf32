"""The central path of the MSE UFM (Tirer, Huang & Niles-Weed 2023, eq. 4 and Theorem 3.1).

    dH/dt = -Kn ∇L(H_t) = -W*(H)ᵀ(W*(H) H - Y) - λ_H H,   H_0 = H0,

(paper normalization; L and W* as in :mod:`nclab.models.perturbation`). Column (k, i) moves by
-(W*ᵀW* + λ_H I) h_{k,i} + w*_k, so with class means H̄ (d x K) and within-class deviations
D = H - H̄ ⊗ 1ᵀ the flow splits exactly into

    dH̄/dt = -(W*ᵀW* + λ_H I) H̄ + W*ᵀ,     dD/dt = -(W*ᵀW* + λ_H I) D,

with W* = n H̄ᵀ A⁻¹ and A = n H̄H̄ᵀ + DDᵀ + nλ_W I (the cross terms vanish: each class's
deviations sum to 0). These are integrated as separate variables: integrating H itself would
compute D as a difference of nearly equal columns near collapse, where rounding, not the flow,
decides tr Σ_W. Theorem 3.1 (λ_W > 0, λ_H >= 0, Σ_W(H0) ≠ 0): tr Σ_W / tr Σ_B strictly
decreases, e^{2λ_H t} tr Σ_B strictly increases and e^{2λ_H t} tr Σ_W does not increase; the last
is exactly constant when the columns of D are orthogonal to the class means (then W*ᵀW* D = 0,
since A⁻¹ keeps span(H̄) and its complement apart, and this persists along the flow).
"""

from __future__ import annotations

import math
import warnings
from dataclasses import dataclass
from typing import Any

import numpy as np
import torch
from scipy.integrate import solve_ivp

from nclab.metrics import measure
from nclab.models.conventions import check_penalty
from nclab.models.perturbation import check_features

__all__ = ["PATH_QUANTITIES", "CentralPath", "central_path"]

PATH_QUANTITIES: dict[str, str] = {
    "trace_ratio": "tr Σ_W / tr Σ_B (their eq. 3): strictly decreasing (Theorem 3.1)",
    "exp_trace_w": "e^{2λ_H t} tr Σ_W: non-increasing (Theorem 3.1)",
    "exp_trace_b": "e^{2λ_H t} tr Σ_B: strictly increasing (Theorem 3.1)",
    "trace_w": "tr Σ_W = ‖D‖²_F/(Kn)",
    "trace_b": "tr Σ_B = (1/K) Σ_k ‖h̄_k - h̄_G‖²",
    "nc1": "NC1 = (1/K) tr(Σ_W Σ_B^†) (Papyan et al. 2020; no monotonicity claimed)",
    "nc2_etf_means": "distance of the centred class means' Gram to the simplex ETF",
    "nc2_of_means": "distance of the uncentred class means' Gram to an orthogonal frame",
}

RTOL = 1e-10


@dataclass(frozen=True)
class CentralPath:
    """The recorded flow: ``t`` and each of :data:`PATH_QUANTITIES` at those times; ``final``
    is H at the last time (d x Kn, float64)."""

    t: list[float]
    values: dict[str, list[float]]
    final: np.ndarray
    nfev: int

    def as_dict(self) -> dict[str, list[float]]:
        return {"t": self.t, **self.values}


def _split(h: np.ndarray, k: int, n: int) -> tuple[np.ndarray, np.ndarray]:
    d = h.shape[0]
    cube = h.reshape(d, k, n)
    means = cube.mean(2)
    return means, (cube - means[:, :, None]).reshape(d, k * n)


def central_path(
    h0: Any,
    per_class: int,
    lambda_w: float,
    lambda_h: float,
    t_end: float,
    *,
    num_points: int = 50,
    times: Any = None,
    rtol: float = RTOL,
    metrics: bool = True,
) -> CentralPath:
    """Integrate the central path from ``h0`` (d x Kn, class-major) to ``t_end`` with DOP853
    (scipy ``solve_ivp``; relative tolerance ``rtol``, absolute tolerance ``rtol`` x 1e-6 x the
    largest initial entry of each variable, class means and deviations separately) and record
    :data:`PATH_QUANTITIES` at ``num_points`` times spread geometrically over (0, t_end] plus 0
    (or at ``times``). ``metrics=False`` skips the NC1 / NC2 report (faster).

    An H0 whose class means all coincide (tr Σ_B = 0) or with no within-class variability
    (Σ_W = 0) is outside Theorem 3.1: a UserWarning says so and the flow is still integrated.
    """
    check_penalty("lambda_w", lambda_w, positive=True)
    check_penalty("lambda_h", lambda_h, positive=False)
    if isinstance(t_end, bool) or not isinstance(t_end, (int, float)) or not 0 < t_end < math.inf:
        raise ValueError(f"t_end: expected a finite time > 0, got {t_end!r}")
    given = torch.as_tensor(h0) if not isinstance(h0, torch.Tensor) else h0
    if given.ndim != 2 or per_class < 1 or given.shape[1] % per_class:
        raise ValueError(
            f"h0: expected a (d, K n) matrix with n = {per_class} columns per class, "
            f"got shape {tuple(given.shape)}"
        )
    k = given.shape[1] // per_class
    d, n = given.shape[0], per_class
    h = check_features(given, d, k, n, "h0").numpy()
    means, dev = _split(h, k, n)
    centred = means - means.mean(1, keepdims=True)
    if float(np.square(centred).sum()) <= 1e-24 * float(np.square(h).sum()):
        warnings.warn(
            "h0: all class means coincide (tr Σ_B = 0): outside Theorem 3.1, the trace ratio is "
            "infinite",
            UserWarning,
            stacklevel=2,
        )
    # Relative to the class means: a collapsed H0 built as H̄ ⊗ 1ᵀ keeps rounding-level deviations.
    if float(np.square(dev).sum()) <= 1e-24 * max(float(np.square(means).sum()), 1e-300):
        warnings.warn(
            "h0: no within-class variability (Σ_W = 0): H0 is collapsed, outside Theorem 3.1 "
            "(tr Σ_W stays 0)",
            UserWarning,
            stacklevel=2,
        )
    size_m = d * k
    nlw = n * lambda_w

    def rhs(_: float, y: np.ndarray) -> np.ndarray:
        hbar = y[:size_m].reshape(d, k)
        dv = y[size_m:].reshape(d, k * n)
        a = n * hbar @ hbar.T + dv @ dv.T + nlw * np.eye(d)
        w = n * np.linalg.solve(a, hbar).T  # W* = n H̄ᵀ A⁻¹ (A symmetric)
        g = w.T @ w + lambda_h * np.eye(d)
        return np.concatenate([(-g @ hbar + w.T).ravel(), (-g @ dv).ravel()])

    y0 = np.concatenate([means.ravel(), dev.ravel()])
    atol = np.empty_like(y0)
    atol[:size_m] = rtol * 1e-6 * max(float(np.abs(means).max()), 1e-300)
    atol[size_m:] = rtol * 1e-6 * max(float(np.abs(dev).max()), 1e-300)
    if times is None:
        grid = np.concatenate([[0.0], np.geomspace(t_end * 1e-3, t_end, num_points)])
    else:
        grid = np.asarray(times, dtype=np.float64)
        if grid.ndim != 1 or grid.size == 0 or np.any(np.diff(grid) <= 0) or grid[0] < 0:
            raise ValueError("times: expected increasing times >= 0")
        t_end = float(grid[-1])
    if grid[-1] == 0:
        ts, ys, nfev = np.zeros(1), y0[:, None], 0
    else:
        sol = solve_ivp(rhs, (0.0, t_end), y0, method="DOP853", t_eval=grid, rtol=rtol, atol=atol)
        if not sol.success:
            raise RuntimeError(f"central_path: the integrator failed: {sol.message}")
        ts, ys, nfev = sol.t, sol.y, int(sol.nfev)
    labels = torch.arange(k).repeat_interleave(n)
    values: dict[str, list[float]] = {key: [] for key in PATH_QUANTITIES}
    for j, t in enumerate(ts):
        hbar = ys[:size_m, j].reshape(d, k)
        dv = ys[size_m:, j].reshape(d, k * n)
        tr_w = float(np.square(dv).sum()) / (k * n)
        tr_b = float(np.square(hbar - hbar.mean(1, keepdims=True)).sum()) / k
        grow = math.exp(2 * lambda_h * t)
        values["trace_w"].append(tr_w)
        values["trace_b"].append(tr_b)
        values["exp_trace_w"].append(grow * tr_w)
        values["exp_trace_b"].append(grow * tr_b)
        values["trace_ratio"].append(tr_w / tr_b if tr_b > 0 else math.inf)  # JSON: null
        if metrics:
            full = np.repeat(hbar, n, axis=1) + dv
            rep = measure(torch.from_numpy(full.T.copy()), labels).as_dict()
            for key in ("nc1", "nc2_etf_means", "nc2_of_means"):
                values[key].append(float(rep[key]))
        else:
            for key in ("nc1", "nc2_etf_means", "nc2_of_means"):
                values[key].append(math.nan)
    last = ys[:, -1]
    final = np.repeat(last[:size_m].reshape(d, k), n, axis=1) + last[size_m:].reshape(d, k * n)
    return CentralPath(t=[float(t) for t in ts], values=values, final=final, nfev=nfev)
