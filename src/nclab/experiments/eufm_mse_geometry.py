"""``eufm-mse-geometry``: the geometry of the regularized MSE UFM and of the extended model
(Tirer & Bruna, ICML 2022), solved across the regularization λ against the closed forms.

Three models, each in Tirer & Bruna's normalization (``convention="tirer"``) with every
penalty equal to λ, K = 4 classes, n = 5 samples per class, d = 8:

* UFM, MSE, no bias: min (1/2Kn)‖WH − Y‖² + (λ/2K)‖W‖² + (λ/2Kn)‖H‖². Theorem: for λ < 1 the
  class means form an **orthogonal frame** and the mean squared feature norm is 1 − λ; for
  λ ≥ 1 the minimizer is zero.
* UFM, MSE, unregularized bias: the same with W H + b 1ᵀ. Theorem: the centred means form a
  **simplex ETF**, mean squared feature norm (K − 1)/K · (1 − λ).
* Extended UFM: min (1/2Kn)‖W2 σ(W1 H1) − Y‖² + (λ/2K)‖W2‖² + (λ/2K)‖W1‖² + (λ/2Kn)‖H1‖²
  with σ = ReLU: H2 = σ(W1 H1)'s means form an **orthogonal frame** below a threshold λ* and
  the minimizer is zero above it (``ExtendedUFM.theory()``, via its p and δ).

Each grid point is a ``solve:ufm`` / ``solve:extended-ufm`` trial of the sweep engine (L-BFGS
with restarts); the figure sets the measured feature norms beside the closed forms (dashed,
drawn on a dense grid) and the distances of the solutions' class means to the orthogonal frame
‖G/‖G‖_F − I/√K‖_F (uncentred means) and to the simplex ETF (centred means), with the zero
regime shaded. Note that centring an orthogonal frame gives a simplex ETF, so an OF solution
is near both; an ETF solution (with bias) is far from the OF.
"""

from __future__ import annotations

import math
from pathlib import Path
from typing import Any

from nclab.experiments.common import (
    band,
    check_preset,
    group_mean_std,
    mean_std,
    new_grid,
    run_grid,
    save_figure,
    write_csv,
)
from nclab.experiments.registry import Reproduction, ReproductionResult, RunOptions

__all__ = ["REPRODUCTION"]

_K, _N, _D = 4, 5, 8
_GRIDS: dict[str, dict[str, Any]] = {
    "smoke": {"lambdas": [0.1, 0.3, 1.5], "seeds": [0]},
    "cpu": {
        "lambdas": [0.001, 0.003, 0.01, 0.03, 0.1, 0.2, 0.3, 0.45, 0.7, 1.0, 1.5],
        "seeds": [0, 1],
    },
    "gpu": {
        "lambdas": [
            0.001,
            0.002,
            0.005,
            0.01,
            0.02,
            0.05,
            0.1,
            0.2,
            0.3,
            0.4,
            0.45,
            0.5,
            0.7,
            1.0,
            1.5,
        ],
        "seeds": [0, 1, 2, 3, 4],
    },
}
# Smoke solves stop at a looser gradient norm: seconds in CI, objectives still within ~1e-9.
_SOLVERS: dict[str, dict[str, Any]] = {
    "smoke": {"tol": 1e-6, "max_iter": 1000, "restarts": 1, "convention": "tirer"},
    "cpu": {"tol": 1e-7, "max_iter": 4000, "restarts": 2, "convention": "tirer"},
    "gpu": {"tol": 1e-8, "max_iter": 20000, "restarts": 4, "convention": "tirer"},
}
_MODELS = ("mse, no bias", "mse, bias", "extended, relu")


def _specs(preset: str) -> dict[str, dict[str, Any]]:
    grid = _GRIDS[preset]
    size = {"classes": _K, "per_class": _N, "dim": _D, **_SOLVERS[preset]}
    ufm = {
        "base": "solve:ufm",
        "zip": [{"lambda_w": grid["lambdas"], "lambda_h": grid["lambdas"]}],
        "seeds": grid["seeds"],
    }
    return {
        "mse, no bias": {**ufm, "set": {"loss": "mse", **size}},
        "mse, bias": {
            **ufm,
            "set": {"loss": "mse", "bias": True, "lambda_b": 0.0, **size},
        },
        "extended, relu": {
            "base": "solve:extended-ufm",
            "zip": [
                {
                    "lambda_w2": grid["lambdas"],
                    "lambda_w1": grid["lambdas"],
                    "lambda_h1": grid["lambdas"],
                }
            ],
            "seeds": grid["seeds"],
            "set": {"activation": "relu", **size},
        },
    }


def _theory_curves(lams: list[float]) -> dict[str, tuple[list[float], float | None]]:
    """Closed-form mean squared feature norm (H for the UFM, H2 for the extended model) on
    ``lams``, and the smallest λ of the zero regime (None if the grid does not reach it)."""
    from nclab.losses import make_loss
    from nclab.models import UFM
    from nclab.models.extended import ExtendedUFM

    out: dict[str, tuple[list[float], float | None]] = {}
    for model in _MODELS:
        norms, boundary = [], None
        for lam in lams:
            if model == "extended, relu":
                th = ExtendedUFM(
                    _K,
                    _N,
                    _D,
                    lambda_w=lam,
                    lambda_hidden=(lam,),
                    lambda_h=lam,
                    activation="relu",
                    convention="tirer",
                ).theory()
                norm = float(th.extra["h2_norm_sq"])
            else:
                th = UFM(
                    make_loss("mse"),
                    _K,
                    _N,
                    _D,
                    lam,
                    lam,
                    bias=model == "mse, bias",
                    lambda_b=0.0,
                    convention="tirer",
                ).theory()
                norm = float(th.feature_norm_sq)
            norms.append(norm)
            if th.geometry == "zero" and boundary is None:
                boundary = lam
        out[model] = (norms, boundary)
    return out


_FORMULA = {
    "mse, no bias": r"closed form $1-\lambda$ (orthogonal frame)",
    "mse, bias": r"closed form $\frac{K-1}{K}(1-\lambda)$ (simplex ETF)",
    "extended, relu": r"closed form $\|h_2\|^2$ of Tirer & Bruna's theorem (OF)",
}


def _run(out: Path, preset: str, options: RunOptions) -> ReproductionResult:
    import numpy as np

    check_preset("eufm-mse-geometry", preset, _GRIDS)
    specs = _specs(preset)
    rows = {
        m: run_grid(spec, out / "sweeps" / m.replace(", ", "-").replace(" ", "-"), options)
        for m, spec in specs.items()
    }
    lams = [float(v) for v in _GRIDS[preset]["lambdas"]]
    dense = list(np.geomspace(min(lams), max(lams), 200))
    curves = _theory_curves(dense)
    fig, grid = new_grid(2, 3, width=4.8, height=3.7)
    lam_key = {"mse, no bias": "lambda_w", "mse, bias": "lambda_w", "extended, relu": "lambda_w2"}
    summary: list[dict[str, Any]] = []
    notes: list[str] = []
    for col, model in enumerate(_MODELS):
        top, bottom = grid[0][col], grid[1][col]
        data = rows[model]
        x = lam_key[model]
        h = "metrics.H2." if model == "extended, relu" else "metrics."
        norm_col = (
            "solution.h2_norm_sq" if model == "extended, relu" else "solution.feature_norm_sq"
        )
        norms, boundary = curves[model]
        top.plot(dense, norms, "--", color="black", label=_FORMULA[model])
        xs, mean, std = group_mean_std(data, x, norm_col)
        band(
            top,
            xs,
            mean,
            std,
            label="L-BFGS solutions (mean ± std over seeds)",
            color="tab:red",
            linestyle="none",
        )
        top.set(
            xscale="log",
            xlabel="λ (every penalty, Tirer & Bruna's normalization)",
            ylabel=r"mean $\|h\|^2$" + (" of $H_2$" if h != "metrics." else ""),
            title=model,
        )
        for series, label, color in (
            (f"{h}nc2_of_means", "distance to orthogonal frame", "tab:blue"),
            (f"{h}nc2_etf_means", "distance to simplex ETF", "tab:green"),
        ):
            xs, mean, std = group_mean_std(data, x, series)
            keep = [i for i, m in enumerate(mean) if math.isfinite(m) and m > 0]
            bottom.set_yscale("log")
            band(
                bottom,
                [xs[i] for i in keep],
                [max(mean[i], 1e-12) for i in keep],
                [std[i] for i in keep],
                label=label,
                color=color,
            )
        if model == "extended, relu":
            xs, mean, std = group_mean_std(data, x, "metrics.H1.nc2_etf_means")
            keep = [i for i, m in enumerate(mean) if math.isfinite(m) and m > 0]
            band(
                bottom,
                [xs[i] for i in keep],
                [mean[i] for i in keep],
                [std[i] for i in keep],
                label="$H_1$ distance to simplex ETF",
                color="tab:purple",
                linestyle=":",
            )
        bottom.set(xscale="log", xlabel="λ", ylabel="distance of the class means (log)")
        for ax in (top, bottom):
            if boundary is not None:
                ax.axvspan(
                    boundary, max(lams), color="grey", alpha=0.15, label="zero solution (theory)"
                )
            ax.grid(True, which="both", alpha=0.3)
            ax.legend(fontsize=7)
        for lam in sorted({float(r[x]) for r in data}):
            pts = [r for r in data if float(r[x]) == lam]
            summary.append(
                {
                    "model": model,
                    "lambda": lam,
                    "theory_geometry": pts[0].get("theory.geometry"),
                    "objective": min(float(r["objective"]) for r in pts),
                    "theory_objective": pts[0].get("theory.objective"),
                    "feature_norm_sq": mean_std(r.get(norm_col) for r in pts)[0],
                    "nc2_of_means": mean_std(r.get(f"{h}nc2_of_means") for r in pts)[0],
                    "nc2_etf_means": mean_std(r.get(f"{h}nc2_etf_means") for r in pts)[0],
                    "converged": all(bool(r.get("converged")) for r in pts),
                }
            )
        if boundary is not None:
            notes.append(f"{model}: the closed form is zero from λ = {boundary:.3g} on (shaded).")
    png = save_figure(fig, out / "figures", "eufm_mse_geometry")
    worst = max(
        (
            abs(float(r["objective"]) - float(r["theory_objective"]))
            / max(abs(float(r["theory_objective"])), 1e-12),
            r["model"],
            r["lambda"],
        )
        for r in summary
    )
    notes.append(
        f"Largest relative gap between the solver's objective and the theorem's: {worst[0]:.1e} "
        f"({worst[1]}, λ = {worst[2]:g}); L-BFGS with {_SOLVERS[preset]['restarts']} restarts to a gradient "
        f"norm of {_SOLVERS[preset]['tol']:g}."
    )
    table = write_csv(out / "summary.csv", summary)
    caption = (
        "Top: mean squared feature norm of the L-BFGS solutions (red, mean ± std over seeds) "
        "against λ, beside the closed form (dashed; formula in the legend). Bottom: distance "
        "of the solutions' class means to the orthogonal frame (uncentred means) and to the "
        "simplex ETF (centred means), log scale. Theory: without bias the means form an "
        "orthogonal frame (both distances ≈ 0, since a centred OF is an ETF); with an "
        "unregularized bias a simplex ETF (far from the OF); the extended model's H2 an "
        "orthogonal frame. Shaded: λ where the global minimizer is zero."
    )
    return ReproductionResult(
        figures=[(png, caption)],
        tables=[
            table,
            *[
                out / "sweeps" / p / "results.csv"
                for p in ("mse-no-bias", "mse-bias", "extended-relu")
            ],
        ],
        notes=notes,
        summary=table,
        spec=specs,
    )


REPRODUCTION = Reproduction(
    name="eufm-mse-geometry",
    paper="EUFM: Tirer & Bruna, Extended Unconstrained Features Model for Exploring Deep Neural Collapse, ICML 2022",
    reproduces="Theorems 3.1, 3.2 and 4.1 (MSE UFM without / with bias; extended model with ReLU), solved across λ",
    prediction="Without bias the class means form an orthogonal frame, with an unregularized bias a simplex ETF; "
    "the extended model's post-ReLU features H2 an orthogonal frame; above a threshold λ the minimizer is zero.",
    presets=("smoke", "cpu", "gpu"),
    runtime={
        "smoke": "measured: 5 s in the tests, under 15 s through the CLI (worker start-up)",
        "cpu": "measured: 2.0 min on 2 cores (load 2; 66 solves)",
        "gpu": "estimated: a few minutes on one GPU (225 solves; the solves are small)",
    },
    run=_run,
)
