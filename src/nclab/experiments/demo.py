"""``nclab demo``: neural collapse measured on features that collapse, against its closed form.

Features are drawn as h = μ_y + σ z with class means on a simplex ETF of radius ρ (‖μ_c - μ_G‖ = ρ)
and z standard Gaussian in R^d. As σ shrinks the features collapse; the population values are

    NC1 = (1/K) tr(Σ_W Σ_B^†) = σ² (K-1)² / (K ρ²),    tr Σ_W / tr Σ_B = d σ² / ρ²,

since Σ_W = σ² I and Σ_B has K-1 eigenvalues ρ²/(K-1). The demo measures the full suite at each σ
with a classifier W equal to the ETF means, writes ``results.json`` (one report per σ, with the
theory) and ``collapse.png`` (NC1 and the trace ratio against σ, measured and predicted).

It then solves four unconstrained-features models (:mod:`nclab.models`) numerically and sets
each solution beside its theorem: objective, geometry, and the collapse of the solution.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import numpy as np
import torch

from nclab.geometry import simplex_etf
from nclab.io import atomic_write, atomic_write_text
from nclab.losses import make_loss
from nclab.metrics import measure
from nclab.models import UFM

__all__ = ["population_nc1", "population_trace_ratio", "print_synthetic", "run_demo"]


def population_nc1(sigma: float, radius: float, num_classes: int) -> float:
    """σ²(K-1)²/(K ρ²): NC1 of isotropic Gaussian classes around a simplex ETF of radius ρ."""
    k = num_classes
    return sigma**2 * (k - 1) ** 2 / (k * radius**2)


def population_trace_ratio(sigma: float, radius: float, dim: int) -> float:
    """d σ² / ρ²: tr Σ_W / tr Σ_B of isotropic Gaussian classes around a simplex ETF."""
    return dim * sigma**2 / radius**2


def run_demo(
    out_dir: str | Path = "nclab-demo",
    *,
    num_classes: int = 10,
    per_class: int = 500,
    dim: int = 64,
    radius: float = 1.0,
    sigmas: tuple[float, ...] = (1.0, 0.3, 0.1, 0.03, 0.01),
    seed: int = 0,
) -> dict[str, Any]:
    """Run the demo; returns the results written to ``out_dir/results.json``."""
    gen = torch.Generator().manual_seed(seed)
    means = simplex_etf(num_classes, dim, scale=radius, generator=gen)
    labels = torch.arange(num_classes).repeat_interleave(per_class)
    noise = torch.randn(labels.numel(), dim, generator=gen, dtype=torch.float64)
    rows = []
    for sigma in sigmas:
        features = (means[labels] + sigma * noise).to(torch.float32)
        report = measure(features, labels, weight=means)
        rows.append(
            {
                "sigma": sigma,
                "theory_nc1": population_nc1(sigma, radius, num_classes),
                "theory_trace_ratio": population_trace_ratio(sigma, radius, dim),
                "metrics": report.as_dict(),
            }
        )
    results = {
        "description": "Gaussian classes around a simplex ETF; NC metrics vs noise level sigma",
        "ufm": ufm_rows(),
        "num_classes": num_classes,
        "per_class": per_class,
        "dim": dim,
        "radius": radius,
        "seed": seed,
        "rows": rows,
    }
    out = Path(out_dir)
    atomic_write_text(out / "results.json", json.dumps(results, indent=2))
    _plot(rows, num_classes, dim, radius, out / "collapse.png")
    return results


def ufm_rows() -> list[dict[str, Any]]:
    """Four UFMs (K = 4, n = 5, d = 8, λ_W = λ_H = 5e-3) solved by L-BFGS beside their theorems."""
    models = {
        "MSE, no bias": UFM(make_loss("mse"), 4, 5, 8, 5e-3, 5e-3),
        "CE, bias": UFM(make_loss("ce"), 4, 5, 8, 5e-3, 5e-3, bias=True),
        "label smoothing 0.1": UFM(make_loss("ls", smoothing=0.1), 4, 5, 8, 5e-3, 5e-3),
        "CE, features >= 0": UFM(make_loss("ce"), 4, 5, 8, 5e-3, 5e-3, nonneg=True),
    }
    rows = []
    for name, model in models.items():
        theory = model.theory()
        sol = model.solve(restarts=2)
        report = sol.metrics()
        rows.append(
            {
                "model": name,
                "theory_objective": theory.objective,
                "objective": sol.objective,
                "converged": sol.converged,
                "geometry": theory.geometry,
                "nc1": report["nc1"],
                "nc2_etf_means": report["nc2_etf_means"],
                "nc2_of_means": report["nc2_of_means"],
            }
        )
    return rows


def _plot(
    rows: list[dict[str, Any]], num_classes: int, dim: int, radius: float, path: Path
) -> None:
    from matplotlib.figure import Figure

    sig = np.array([r["sigma"] for r in rows])
    fig = Figure(figsize=(5.5, 4))
    ax = fig.subplots()
    ratio = r"tr $\Sigma_W$ / tr $\Sigma_B$"
    ax.loglog(sig, [r["metrics"]["nc1"] for r in rows], "o", label="NC1 measured")
    ax.loglog(
        sig, [r["theory_nc1"] for r in rows], "-", label=r"NC1 theory $\sigma^2(K-1)^2/(K\rho^2)$"
    )
    ax.loglog(sig, [r["metrics"]["nc1_trace_ratio"] for r in rows], "s", label=f"{ratio} measured")
    ax.loglog(
        sig,
        [r["theory_trace_ratio"] for r in rows],
        "--",
        label=ratio + r" theory $d\sigma^2/\rho^2$",
    )
    ax.set_xlabel(rf"within-class noise $\sigma$ (class means at radius $\rho$ = {radius:g})")
    ax.set_ylabel("within-class variability (dimensionless)")
    ax.set_title(f"Gaussian classes around a simplex ETF\nK = {num_classes}, d = {dim}")
    ax.legend(fontsize=8)
    ax.grid(True, which="both", alpha=0.3)
    fig.tight_layout()
    atomic_write(path, lambda handle: fig.savefig(handle, format="png", dpi=120))


def print_synthetic(results: dict[str, Any], out: Path) -> None:
    """Print the synthetic demo's tables (measured beside theory) and the files it wrote."""
    print(
        f"Gaussian classes around a simplex ETF: K={results['num_classes']}, "
        f"n={results['per_class']} per class, d={results['dim']}"
    )
    print(
        f"{'sigma':>7}  {'NC1':>10}  {'NC1 theory':>10}  {'trW/trB':>10}  {'theory':>10}  {'NC2 ETF':>8}"
    )
    for row in results["rows"]:
        m = row["metrics"]
        print(
            f"{row['sigma']:>7.3g}  {m['nc1']:>10.4g}  {row['theory_nc1']:>10.4g}  "
            f"{m['nc1_trace_ratio']:>10.4g}  {row['theory_trace_ratio']:>10.4g}  "
            f"{m['nc2_etf_means']:>8.3g}"
        )
    print("\nUnconstrained-features models (K=4, n=5, d=8): solver vs theorem")
    print(
        f"{'model':<22} {'objective':>14} {'theorem':>14}  {'geometry':<17} {'NC1':>9} "
        f"{'ETF dist':>9} {'OF dist':>9}"
    )
    for row in results["ufm"]:
        flag = "" if row["converged"] else "  (NOT converged)"
        print(
            f"{row['model']:<22} {row['objective']:>14.10f} {row['theory_objective']:>14.10f}  "
            f"{row['geometry']:<17} {row['nc1']:>9.1e} {row['nc2_etf_means']:>9.1e} "
            f"{row['nc2_of_means']:>9.1e}{flag}"
        )
    print(f"wrote {out / 'results.json'} and {out / 'collapse.png'}")
