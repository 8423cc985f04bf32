"""``eufm-practical``: the extended model's prediction in a practical network (Tirer & Bruna,
ICML 2022, Section 5): the last two feature layers of an MLP, trained with MSE and with CE.

H1 is the input of the last hidden layer (the post-ReLU output of the layer before it, module
``body.6`` of the 3-hidden-layer MLP) and H2 the post-ReLU penultimate features (``penultimate``).
Per epoch, for each layer, NC1 = (1/K) tr(Σ_W Σ_B^†), the distance of the uncentred class
means to an orthogonal frame ‖G/‖G‖_F − I/√K‖_F (G = M Mᵀ) and of the centred means to the
simplex ETF ‖G̃/‖G̃‖_F − (I − 11ᵀ/K)/√(K−1)‖_F (G̃ = M̃M̃ᵀ).

The extended model predicts, for MSE **without** a classifier bias, H2's means approaching an
orthogonal frame; with a bias (and for CE), a simplex ETF. ``nclab.train``'s networks always
have a classifier bias, so this module runs the two arms it can — MSE with bias and CE with
bias — and its report says that the no-bias arm needs a bias switch in the networks. MSE is
trained at lr 0.01 (the recipe's 0.05 stalls, 0.2 diverges for this MLP), CE at 0.05.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from nclab.experiments.common import (
    band,
    check_preset,
    mean_std,
    new_grid,
    run_grid,
    save_figure,
    write_csv,
)
from nclab.experiments.registry import Reproduction, ReproductionResult, RunOptions

__all__ = ["REPRODUCTION"]

_LAYERS = {
    "body.6": "H1 (input of the last hidden layer)",
    "penultimate": "H2 (post-ReLU penultimate)",
}
_PRESETS: dict[str, dict[str, Any]] = {
    "smoke": {
        "base": "smoke",
        "seeds": [0],
        "set": {
            "optim.epochs": 2,
            "model.widths": [16, 16, 16],
            "data.per_class": 10,
            "data.test_per_class": 5,
            "noise.rate": 0.0,
            "track.layers": ["body.6", "penultimate"],
        },
    },
    "cpu": {
        "base": "cpu-mlp",
        "seeds": [0, 1],
        "set": {
            "optim.epochs": 60,
            "optim.step_size": 40,
            "data.per_class": 200,
            "data.test_per_class": 50,
            "noise.rate": 0.0,
            "track.layers": ["body.6", "penultimate"],
        },
    },
}


def _run(out: Path, preset: str, options: RunOptions) -> ReproductionResult:
    check_preset("eufm-practical", preset, _PRESETS)
    p = _PRESETS[preset]
    # MSE trains at lr 0.01: at the recipe's 0.05 this MLP's MSE run stalls at 39 % training
    # accuracy and at 0.2 it diverges (measured); CE keeps the recipe's 0.05.
    spec = {
        "base": p["base"],
        "zip": [{"loss.name": ["mse", "ce"], "optim.lr": [0.01, 0.05]}],
        "seeds": p["seeds"],
        "set": p["set"],
    }
    rows = [r for r in run_grid(spec, out / "sweep", options) if r.get("split") == "train"]
    fig, grid = new_grid(2, 2, width=5.2, height=3.9)
    summary: list[dict[str, Any]] = []
    for i, loss in enumerate(("mse", "ce")):
        for j, (layer, title) in enumerate(_LAYERS.items()):
            ax = grid[i][j]
            pts = [r for r in rows if r["loss.name"] == loss and r["layer"] == layer]
            epochs = sorted({int(r["epoch"]) for r in pts})
            ax.set_yscale("log")
            for column, label, color in (
                ("nc2_of_means", "distance to orthogonal frame", "tab:blue"),
                ("nc2_etf_means", "distance to simplex ETF", "tab:green"),
                ("nc1", "NC1", "tab:gray"),
            ):
                stats = [
                    mean_std(r.get(column) for r in pts if int(r["epoch"]) == e) for e in epochs
                ]
                band(
                    ax,
                    [float(e) for e in epochs],
                    [m for m, _ in stats],
                    [s for _, s in stats],
                    label=label,
                    color=color,
                    marker="",
                )
            last = [r for r in pts if int(r["epoch"]) == epochs[-1]]
            summary.append(
                {
                    "loss": loss,
                    "layer": layer,
                    "epoch": epochs[-1],
                    "nc1_mean": mean_std(r.get("nc1") for r in last)[0],
                    "nc2_of_means_mean": mean_std(r.get("nc2_of_means") for r in last)[0],
                    "nc2_etf_means_mean": mean_std(r.get("nc2_etf_means") for r in last)[0],
                    "test_acc_mean": mean_std(r.get("test_acc") for r in last)[0],
                }
            )
            ax.set(
                xlabel="epoch",
                ylabel="distance / NC1 (log)",
                title=f"{loss.upper()} with bias: {title}",
            )
            ax.grid(True, which="both", alpha=0.3)
            ax.legend(fontsize=7)
    png = save_figure(fig, out / "figures", "eufm_practical")
    table = write_csv(out / "summary.csv", summary)
    h2 = {r["loss"]: r for r in summary if r["layer"] == "penultimate"}
    notes = [
        "nclab.train's networks always have a classifier bias, so the arm the extended model's "
        "orthogonal-frame prediction is about (MSE without bias) is not run; it needs a "
        "model.bias switch in nclab.train (config and networks).",
        "With a bias the model predicts a simplex ETF for H2's centred means. Last epoch, H2: "
        + "; ".join(
            f"{loss.upper()}: distance to ETF {r['nc2_etf_means_mean']:.3g}, to the orthogonal "
            f"frame {r['nc2_of_means_mean']:.3g}, NC1 {r['nc1_mean']:.3g}"
            for loss, r in h2.items()
        )
        + ".",
    ]
    caption = (
        "Per epoch, for H1 (left) and H2 (right) of an MLP with non-negative features, trained "
        "with MSE (top) and CE (bottom), both with a classifier bias: the distance of the "
        "uncentred class means to an orthogonal frame, of the centred means to a simplex ETF, "
        "and NC1 (log scale; mean ± std over seeds). With a bias the extended model predicts H2's "
        "centred means to approach a simplex ETF; the orthogonal frame is its prediction without "
        "bias, which these networks cannot run."
    )
    return ReproductionResult(
        figures=[(png, caption)],
        tables=[table, out / "sweep" / "results.csv"],
        notes=notes,
        summary=table,
        spec={"sweep": spec},
    )


REPRODUCTION = Reproduction(
    name="eufm-practical",
    paper="EUFM: Tirer & Bruna, Extended Unconstrained Features Model for Exploring Deep Neural Collapse, ICML 2022",
    reproduces="Section 5 (partial): per-epoch NC of the last two feature layers of an MLP, MSE and CE, both with bias",
    prediction="H2's class means approach an orthogonal frame for MSE without bias, a simplex ETF with a bias; "
    "only the with-bias arms run here.",
    presets=("smoke", "cpu"),
    runtime={
        "smoke": "measured: 7 s through the CLI",
        "cpu": "measured: 41 s on 2 cores (load 2; 4 trials, 60 epochs)",
    },
    run=_run,
)
