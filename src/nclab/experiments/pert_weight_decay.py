"""``pert-weight-decay``: the role of the regularization hyper-parameters in practical
networks (Tirer, Huang & Niles-Weed, ICML 2023, Figure-3-style study).

The baseline recipe (SGD, lr 0.05, momentum 0.9, weight decay 5e-4 on every layer) and its four
modifications — the classifier's weight decay doubled or zeroed, the feature layers' weight
decay doubled or zeroed (``optim.classifier_weight_decay`` and ``optim.weight_decay``) — each
trained with MSE and with CE, through the sweep engine. Per epoch, on the penultimate features:
NC1 = (1/K) tr(Σ_W Σ_B^†) and NC2 = ‖G/‖G‖_F − (I − 11ᵀ/K)/√(K−1)‖_F for G = M̃M̃ᵀ (the
centred class means' Gram matrix against the simplex ETF's).

PERT's analysis (the perturbation model, features near H0 with λ_H the feature penalty) predicts
that stronger regularization of the features pulls them towards collapse faster: NC1 falls
faster with more feature weight decay and more slowly without it; the classifier's weight decay
matters less for the features' collapse.

As in the paper, MSE is trained without a classifier bias (``model.bias=false``) and CE with one.
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

__all__ = ["REPRODUCTION", "VARIANTS"]

_WD = 5e-4
# name -> (feature layers' weight decay, classifier's weight decay), as factors of the baseline.
VARIANTS: dict[str, tuple[float, float]] = {
    "baseline": (1.0, 1.0),
    "features ×2": (2.0, 1.0),
    "features ×0": (0.0, 1.0),
    "classifier ×2": (1.0, 2.0),
    "classifier ×0": (1.0, 0.0),
}
_COLORS = {
    "baseline": "black",
    "features ×2": "tab:red",
    "features ×0": "tab:pink",
    "classifier ×2": "tab:blue",
    "classifier ×0": "tab:cyan",
}
_PRESETS: dict[str, dict[str, Any]] = {
    "smoke": {
        "base": "smoke",
        "seeds": [0],
        "set": {
            "optim.epochs": 2,
            "model.name": "cnn",
            "model.widths": [4, 8, 8],
            "data.per_class": 10,
            "data.test_per_class": 5,
            "noise.rate": 0.0,
        },
    },
    "cpu": {
        "base": "cpu-cnn",
        "seeds": [0],
        "set": {
            "optim.epochs": 30,
            "optim.step_size": 20,
            "model.widths": [16, 32, 32],
            "data.per_class": 100,
            "data.test_per_class": 50,
            "noise.rate": 0.0,
        },
    },
    "gpu": {
        "base": "gpu-resnet18-cifar10",
        "seeds": [0, 1],
        "set": {"track.layers": ["penultimate"], "track.test_metrics": False},
    },
}


def _variant(row: dict[str, Any]) -> str:
    pair = (
        float(row["optim.weight_decay"]) / _WD,
        float(row["optim.classifier_weight_decay"]) / _WD,
    )
    for name, factors in VARIANTS.items():
        if abs(factors[0] - pair[0]) < 1e-9 and abs(factors[1] - pair[1]) < 1e-9:
            return name
    return f"features ×{pair[0]:g}, classifier ×{pair[1]:g}"


def _spec(preset: str, options: RunOptions) -> dict[str, Any]:
    p = _PRESETS[preset]
    fixed = dict(p["set"])
    if preset == "gpu" and options.data_dir is not None:
        fixed["data.data_dir"] = options.data_dir
    return {
        "base": p["base"],
        "zip": [
            # the paper's two recipes: MSE without a classifier bias, CE with one
            {"loss.name": ["mse", "ce"], "model.bias": [False, True]},
            {
                "optim.weight_decay": [f * _WD for f, _ in VARIANTS.values()],
                "optim.classifier_weight_decay": [c * _WD for _, c in VARIANTS.values()],
            },
        ],
        "seeds": p["seeds"],
        "set": fixed,
    }


def _run(out: Path, preset: str, options: RunOptions) -> ReproductionResult:
    check_preset("pert-weight-decay", preset, _PRESETS)
    spec = _spec(preset, options)
    rows = [
        r
        for r in run_grid(spec, out / "sweep", options)
        if r.get("split") == "train" and r.get("layer") == "penultimate"
    ]
    fig, grid = new_grid(2, 2, width=5.2, height=3.9)
    summary: list[dict[str, Any]] = []
    for i, loss in enumerate(("mse", "ce")):
        nc1_ax, nc2_ax = grid[i]
        for variant in VARIANTS:
            pts = [r for r in rows if r["loss.name"] == loss and _variant(r) == variant]
            if not pts:
                continue
            epochs = sorted({int(r["epoch"]) for r in pts})
            for ax, column in ((nc1_ax, "nc1"), (nc2_ax, "nc2_etf_means")):
                stats = [
                    mean_std(r.get(column) for r in pts if int(r["epoch"]) == e) for e in epochs
                ]
                ax.set_yscale("log")
                band(
                    ax,
                    [float(e) for e in epochs],
                    [m for m, _ in stats],
                    [s for _, s in stats],
                    label=variant,
                    color=_COLORS[variant],
                    marker="",
                )
            last = [r for r in pts if int(r["epoch"]) == epochs[-1]]
            summary.append(
                {
                    "loss": loss,
                    "variant": variant,
                    "weight_decay": float(pts[0]["optim.weight_decay"]),
                    "classifier_weight_decay": float(pts[0]["optim.classifier_weight_decay"]),
                    "epoch": epochs[-1],
                    "nc1_mean": mean_std(r.get("nc1") for r in last)[0],
                    "nc2_etf_means_mean": mean_std(r.get("nc2_etf_means") for r in last)[0],
                    "acc_true_mean": mean_std(r.get("acc_true") for r in last)[0],
                    "test_acc_mean": mean_std(r.get("test_acc") for r in last)[0],
                }
            )
        name = "MSE" if loss == "mse" else "CE"
        nc1_ax.set(xlabel="epoch", ylabel="NC1 (log)", title=f"{name}: NC1 = (1/K) tr(Σ_W Σ_B^†)")
        nc2_ax.set(
            xlabel="epoch",
            ylabel="distance to simplex ETF (log)",
            title=f"{name}: NC2 of the class means",
        )
        for ax in (nc1_ax, nc2_ax):
            ax.grid(True, which="both", alpha=0.3)
            ax.legend(fontsize=7, title="weight decay", title_fontsize=7)
    png = save_figure(fig, out / "figures", "pert_weight_decay")
    table = write_csv(out / "summary.csv", summary)
    caption = (
        "NC1 (left) and the distance of the centred class means to the simplex ETF (right) of "
        "the penultimate features against the epoch, for the baseline weight decay 5e-4 and its "
        "four modifications (feature layers' or classifier's weight decay doubled or zeroed); "
        "top MSE, bottom CE; log scale, mean ± std band over seeds. PERT predicts NC1 to fall "
        "faster with more feature weight decay (red below black below pink)."
    )
    return ReproductionResult(
        figures=[(png, caption)],
        tables=[table, out / "sweep" / "results.csv"],
        notes=[_verdict(summary, preset), _BIAS_NOTE],
        summary=table,
        spec={"sweep": spec},
    )


_BIAS_NOTE = "As in the paper, MSE is trained without a classifier bias and CE with one."


def _verdict(summary: list[dict[str, Any]], preset: str) -> str:
    parts, ordered = [], 0
    for loss in ("mse", "ce"):
        by = {r["variant"]: r["nc1_mean"] for r in summary if r["loss"] == loss}
        if {"features ×2", "baseline", "features ×0"} <= set(by):
            ok = by["features ×2"] < by["baseline"] < by["features ×0"]
            ordered += ok
            parts.append(
                f"{loss.upper()}: final NC1 {by['features ×2']:.3g} (features ×2), "
                f"{by['baseline']:.3g} (baseline), {by['features ×0']:.3g} (features ×0)"
                + ("" if ok else " — not in the predicted order")
            )
    text = "; ".join(parts) + "."
    if ordered < len(parts):
        text += (
            f" At the {preset} preset's scale (a narrow CNN, few epochs, one seed) the claim "
            "does not show for every loss; the gpu preset (ResNet-18 on CIFAR-10, 200 epochs, "
            "2 seeds) is the paper's setting."
        )
    return text


REPRODUCTION = Reproduction(
    name="pert-weight-decay",
    paper="PERT: Tirer, Huang & Niles-Weed, Perturbation Analysis of Neural Collapse, ICML 2023",
    reproduces="Figure 3-style study: NC1 and NC2 against epochs when the feature layers' or the classifier's weight decay is doubled or zeroed",
    prediction="Stronger regularization of the features speeds up collapse: NC1 falls faster with more feature "
    "weight decay and more slowly without it.",
    presets=("smoke", "cpu", "gpu"),
    runtime={
        "smoke": "measured: 3 s in the tests, under 15 s through the CLI (worker start-up)",
        "cpu": "measured: 2.5 min on 2 cores (load 2; 10 trials)",
        "gpu": "estimated: about 20 GPU-hours on one H100 (20 ResNet-18 runs × 200 epochs)",
    },
    run=_run,
    datasets={"gpu": ("cifar10",)},
)
