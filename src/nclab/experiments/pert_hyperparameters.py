"""``pert-hyperparameters``: how far the perturbation model's minimizer is from collapse, from a
perturbed collapsed H0, as λ_H, λ_W and β vary (Tirer, Huang & Niles-Weed 2023, Sec. 4 insights;
their Figure 3 shows the analogue in trained networks).

H0 = H* + σG with H* collapsed (same λ's; Theorem 2.1) and G a seeded standard Gaussian. To first
order in σ, δH = J δH0, and the within-class deviations are eigen-directions of J (module
docstring of :mod:`nclab.models.perturbation_spectrum`) with the values J_out = β/(β + λ_H)
(outside the span of the class means, (d - K)(n - 1) per class) and J_in = β/(β + √(λ_H/λ_W))
(inside it, K(n - 1) per class). An isotropic G spreads its within-class energy evenly over these
directions, so the attenuation of the within-class variability is

    tr Σ_W(H) / tr Σ_W(H0) ≈ [(d - K) J_out² + K J_in²] / d       (the theory curves),

exact to first order in σ in expectation (per seed it fluctuates by O(1/√(d K n))). λ_H enters
J_in and J_out; λ_W only J_in (through √(λ_H/λ_W)) and the inter-class block
σ_max(F_kk') = 2λ_H(1 - √(λ_Hλ_W))/β, the cross-talk it damps.
"""

from __future__ import annotations

import math
from pathlib import Path
from typing import Any

import numpy as np
import torch

from nclab.experiments.pert_common import (
    PAPER,
    check_preset,
    figure,
    legend_below,
    save_figure,
    write_csv,
)
from nclab.experiments.registry import Reproduction, ReproductionResult, RunOptions

__all__ = ["REPRODUCTION", "SETTINGS", "run", "theory_attenuation"]

SETTINGS: dict[str, dict[str, Any]] = {
    "smoke": {
        "K": 3,
        "n": 4,
        "d": 6,
        "sigma": 1e-3,
        "seeds": 1,
        "lambda_w": math.sqrt(2),
        "lambda_h": 0.1,
        "beta": 2.0,
        "grid_lambda_h": [0.01, 0.1, 0.5],
        "grid_lambda_w": [0.1, 1.0, 5.0],
        "grid_beta": [2.0, 10.0, 50.0],
    },
    "cpu": {
        "K": 4,
        "n": 10,
        "d": 10,
        "sigma": 1e-3,
        "seeds": 3,
        "lambda_w": math.sqrt(2),
        "lambda_h": 0.1,
        "beta": 2.0,
        "grid_lambda_h": [0.005, 0.01, 0.02, 0.05, 0.1, 0.2, 0.4, 0.6],
        "grid_lambda_w": [0.05, 0.1, 0.2, 0.5, 1.0, 2.0, 4.0, 8.0],
        "grid_beta": [0.2, 0.5, 1.0, 2.0, 5.0, 10.0, 30.0, 100.0],
    },
}


def theory_attenuation(k: int, d: int, lambda_w: float, lambda_h: float, beta: float) -> float:
    """[(d - K) J_out² + K J_in²] / d of the module docstring."""
    j_out = beta / (beta + lambda_h)
    j_in = beta / (beta + math.sqrt(lambda_h / lambda_w))
    return ((d - k) * j_out**2 + k * j_in**2) / d


def _point(
    k: int, n: int, d: int, lw: float, lh: float, beta: float, sigma: float, seed: int
) -> dict[str, float]:
    from nclab.metrics import measure
    from nclab.models.perturbation import PerturbationModel, collapsed_features
    from nclab.models.perturbation_spectrum import response_operators
    from nclab.models.ufm import class_labels

    h_star = collapsed_features(k, n, d, lw, lh, seed=seed)
    gen = torch.Generator().manual_seed(10_000 + seed)
    h0 = h_star + sigma * torch.randn(h_star.shape, generator=gen, dtype=torch.float64)
    model = PerturbationModel(k, n, d, lw, lh, beta, h0)
    sol = model.solve(tol=1e-12)
    rep = sol.metrics().as_dict()

    before = measure(h0.T, class_labels(k, n)).as_dict()
    ops = response_operators(sol.features, n, lw, lh, beta)
    return {
        "converged": float(sol.converged),
        "trace_ratio": rep["nc1_trace_ratio"],
        "trace_ratio_h0": before["nc1_trace_ratio"],
        "attenuation": rep["within_class_trace"] / before["within_class_trace"],
        "nc1": rep["nc1"],
        "nc1_h0": before["nc1"],
        "nc2_etf_means": rep["nc2_etf_means"],
        "nc2_of_means": rep["nc2_of_means"],
        "inter_max_F": ops.inter_max("F"),
    }


def run(out: Path, preset: str, options: RunOptions) -> ReproductionResult:
    """Solve the three one-parameter grids of ``preset`` and draw them against the theory."""
    check_preset(REPRODUCTION.name, preset, SETTINGS)
    s = SETTINGS[preset]
    k, n, d, sigma = s["K"], s["n"], s["d"], s["sigma"]
    base = {"lambda_w": s["lambda_w"], "lambda_h": s["lambda_h"], "beta": s["beta"]}
    keys = [
        "attenuation",
        "trace_ratio",
        "trace_ratio_h0",
        "nc1",
        "nc1_h0",
        "nc2_etf_means",
        "nc2_of_means",
        "inter_max_F",
        "converged",
    ]
    rows: list[list[Any]] = []
    stats: dict[str, dict[str, list[tuple[float, float, float, float]]]] = {}
    for vary in ("lambda_h", "lambda_w", "beta"):
        stats[vary] = {key: [] for key in keys}
        for value in s[f"grid_{vary}"]:
            params = dict(base, **{vary: value})
            lw, lh, beta = params["lambda_w"], params["lambda_h"], params["beta"]
            per_seed = [_point(k, n, d, lw, lh, beta, sigma, seed) for seed in range(s["seeds"])]
            for seed, point in enumerate(per_seed):
                rows.append(
                    [
                        vary,
                        lw,
                        lh,
                        beta,
                        seed,
                        *(point[key] for key in keys),
                        theory_attenuation(k, d, lw, lh, beta),
                        2 * lh * (1 - math.sqrt(lh * lw)) / beta,
                    ]
                )
            for key in keys:
                values = np.array([p[key] for p in per_seed])
                std = float(values.std(ddof=1)) if len(values) > 1 else 0.0
                stats[vary][key].append((value, float(values.mean()), std, 0.0))
    table = write_csv(
        out / "hyperparameters.csv",
        [
            "vary",
            "lambda_w",
            "lambda_h",
            "beta",
            "seed",
            *keys,
            "attenuation_theory",
            "inter_max_theory",
        ],
        rows,
    )
    fig, axes = figure(2, 3, width=4.2, height=3.8)
    labels = {"lambda_h": "λ_H", "lambda_w": "λ_W", "beta": "β"}
    fixed = {v: ", ".join(f"{labels[o]} = {base[o]:.3g}" for o in labels if o != v) for v in labels}
    for col, vary in enumerate(("lambda_h", "lambda_w", "beta")):
        ax = axes[0, col]
        xs = np.array([x for x, *_ in stats[vary]["attenuation"]])
        m = np.array([v for _, v, _, _ in stats[vary]["attenuation"]])
        e = np.array([v for _, _, v, _ in stats[vary]["attenuation"]])
        ax.errorbar(xs, m, yerr=e, marker="o", ms=3.5, capsize=2, label="minimizer (mean ± std)")
        fine = np.geomspace(xs[0], xs[-1], 200)
        theory = [
            theory_attenuation(
                k,
                d,
                x if vary == "lambda_w" else base["lambda_w"],
                x if vary == "lambda_h" else base["lambda_h"],
                x if vary == "beta" else base["beta"],
            )
            for x in fine
        ]
        ax.plot(fine, theory, "k--", lw=1, label="[(d−K)J_out² + K J_in²]/d, J = β/(β+μ)")
        ax.set_xscale("log")
        ax.set_xlabel(labels[vary])
        ax.set_ylabel("tr Σ_W(H) / tr Σ_W(H0)")
        ax.set_title(f"within-class attenuation vs {labels[vary]} ({fixed[vary]})", fontsize=8)
        legend_below(ax, ncol=1)
    for col, vary in enumerate(("lambda_h", "lambda_w")):
        ax = axes[1, col]
        xs = np.array([x for x, *_ in stats[vary]["nc1"]])
        for key, label in (
            ("nc1", "NC1 (Papyan)"),
            ("nc2_etf_means", "NC2 (ETF, centred means)"),
            ("nc2_of_means", "NC2 (orthogonal frame)"),
        ):
            m = np.array([v for _, v, _, _ in stats[vary][key]])
            ax.plot(xs, m, marker="o", ms=3.5, label=label)
        ax.set_xscale("log")
        ax.set_yscale("log")
        ax.set_xlabel(labels[vary])
        ax.set_ylabel("distance to collapse of H")
        ax.set_title(f"NC1, NC2 of the minimizer vs {labels[vary]}", fontsize=8)
        legend_below(ax, ncol=1)
    ax = axes[1, 2]
    for vary, marker in (("lambda_w", "o"), ("lambda_h", "s")):
        xs = np.array([x for x, *_ in stats[vary]["inter_max_F"]])
        m = np.array([v for _, v, _, _ in stats[vary]["inter_max_F"]])
        ax.plot(xs, m, marker, ms=4, label=f"σ_max(F_kk') at the minimizer, vs {labels[vary]}")
        fine = np.geomspace(xs[0], xs[-1], 200)
        lw_f = fine if vary == "lambda_w" else np.full_like(fine, base["lambda_w"])
        lh_f = fine if vary == "lambda_h" else np.full_like(fine, base["lambda_h"])
        ax.plot(
            fine,
            2 * lh_f * (1 - np.sqrt(lh_f * lw_f)) / base["beta"],
            "--",
            lw=1,
            color=ax.get_lines()[-1].get_color(),
            label="2λ_H(1 − √(λ_Hλ_W))/β (Thm 4.2)",
        )
    ax.set_xscale("log")
    ax.set_xlabel("λ_W or λ_H")
    ax.set_ylabel("σ_max of an inter-class block")
    ax.set_title(f"cross-talk between classes (β = {base['beta']:g})", fontsize=8)
    legend_below(ax, ncol=1)
    png = save_figure(fig, out / "figures", "pert_hyperparameters")
    ratio_err = max(abs(r[5] / r[-2] - 1) for r in rows if r[-2] > 0)
    notes = [
        f"The measured attenuation tr Σ_W(H)/tr Σ_W(H0) is within {100 * ratio_err:.2f}% of the "
        f"closed form at every grid point and seed (σ = {sigma:g}, {s['seeds']} seed(s)).",
        "λ_H attenuates the within-class variability over a far wider range than λ_W does (top "
        "left vs top middle: λ_W enters only through √(λ_H/λ_W) on the K(n − 1) directions inside "
        "the frame); λ_W mainly damps the inter-class block (bottom right).",
    ]
    caption = (
        "Distance to collapse of the perturbation model's minimizer from a perturbed collapsed H0 "
        f"(σ = {sigma:g}, K = {k}, n = {n}, d = {d}): mean ± std over seeds; dashed, the closed-form "
        "prediction from the complete spectrum of J (top) and Theorem 4.2's inter-class σ (bottom "
        "right)."
    )
    return ReproductionResult(figures=[(png, caption)], tables=[table], notes=notes)


REPRODUCTION = Reproduction(
    name="pert-hyperparameters",
    paper=PAPER,
    reproduces="Section 4 (the role of λ_H, λ_W and β; Figure 3's insight)",
    prediction=(
        "λ_H attenuates the within-class deviations most; λ_W only damps the inter-class cross-talk "
        "σ_max(F_kk') = 2λ_H(1 − √(λ_Hλ_W))/β; larger β keeps the minimizer nearer H0."
    ),
    presets=("smoke", "cpu"),
    runtime={
        "smoke": "measured: 8 s on 2 cores (OMP_NUM_THREADS=1)",
        "cpu": "measured: 10 s on 2 cores (OMP_NUM_THREADS=1)",
    },
    run=run,
)
