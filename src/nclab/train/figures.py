"""The figure of a training run: its ``metrics.csv`` against epochs, with what theory predicts.

Panels (x: epoch):

1. Fractions of samples: training accuracy on the observed and on the true labels, test
   accuracy, and NC4 (the fraction where the nearest class centre and the classifier disagree,
   penultimate layer). Terminal phase of training (TPT, Papyan et al. 2020): zero training
   error on the labels trained on, and NC4 -> 0. Under label noise, a network that fits every
   observed label is right on the true labels exactly where the label is not corrupted: training
   accuracy on the true labels = 1 - noise_rate (the measured fraction of corrupted labels),
   drawn as a reference.
2. NC1 = (1/K) tr(Σ_W Σ_B^†) per tracked layer (log scale; test split dashed when measured):
   -> 0 in TPT.
3. Geometry of the penultimate layer (log scale): distances of the centred class means and of
   the classifier rows from a simplex ETF (NC2) and of the normalized classifier from the
   normalized centred means (NC3): -> 0 in TPT. Without a classifier row (the penultimate layer
   not tracked) the means' ETF distance of every tracked layer.
4. Under label noise only: memorization and dilation (Nguyen et al., ICLR 2023, MD), each divided
   by the mean distance between clean class means, per tracked layer. MD's model: as the network
   memorizes the noisy labels (memorization rises towards 1, a noisy sample moved a whole
   inter-class distance from its true class), the clean classes dilate.

Every key is described in :data:`nclab.train.table.DESCRIPTIONS`.
"""

from __future__ import annotations

import math
import os
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import yaml

from nclab.io import atomic_write
from nclab.train.table import read_metrics

__all__ = ["plot_run", "run_figure"]


def _series(
    rows: list[dict[str, Any]], key: str, layer: str | None = None, split: str = "train"
) -> tuple[list[int], list[float]]:
    """Epochs and values of ``key`` for ``layer`` (None: the first layer of each epoch, for the
    columns every layer of an epoch shares) on ``split``, without the empty (NaN) fields."""
    seen: set[int] = set()
    xs, ys = [], []
    for row in rows:
        if row["split"] != split or (layer is not None and row["layer"] != layer):
            continue
        value = row.get(key, math.nan)
        if row["epoch"] in seen or math.isnan(value):
            continue
        seen.add(row["epoch"])
        xs.append(row["epoch"])
        ys.append(value)
    return xs, ys


def _title(config: dict[str, Any] | None, name: str, rows: list[dict[str, Any]]) -> str:
    first = rows[0] if rows else {}
    size = (
        f" (K = {first['num_classes']:g}, N = {first['num_samples']:,.0f})"
        if not math.isnan(first.get("num_samples", math.nan))
        else ""
    )
    if not config:
        return name + size
    data, model, loss = config.get("data", {}), config.get("model", {}), config.get("loss", {})
    noise, track = config.get("noise", {}), config.get("track", {})
    rate = noise.get("rate", 0.0)
    noise_text = f"label noise {rate:g} ({noise.get('kind', 'symmetric')})" if rate else "no noise"
    return (
        f"{name}: {model.get('name', '?')} on {data.get('name', '?')}{size}, "
        f"{loss.get('name', '?')} loss, {noise_text}; NC from the "
        f"{track.get('source', 'eval')} pass"
    )


def run_figure(
    rows: list[dict[str, Any]],
    *,
    layers: Sequence[str] | None = None,
    title: str = "",
) -> Any:
    """The matplotlib ``Figure`` (not registered with pyplot) of a run's rows (as :func:`~nclab.train.table.read_metrics` returns
    them); ``layers`` restricts the per-layer panels (default: every tracked layer)."""
    # The object-oriented Figure, not pyplot: no backend switch, no global figure registry (a
    # notebook calling this keeps its own backend; nothing to close).
    from matplotlib import rcParams
    from matplotlib.figure import Figure

    if not rows:
        raise ValueError("rows: the run has no evaluated epoch yet")
    present = list(dict.fromkeys(row["layer"] for row in rows))
    if layers is None:
        layers = present
    unknown = [name for name in layers if name not in present]
    if unknown:
        raise ValueError(f"layers: {unknown} not in this run; its tracked layers are {present}")
    noise = any(not math.isnan(row.get("noise_rate", math.nan)) for row in rows)
    splits = sorted({row["split"] for row in rows}, key=["train", "test"].index)
    dot = "." if len({row["epoch"] for row in rows}) <= 40 else None  # markers hide long runs

    fig = Figure(figsize=(11, 8))
    axes = fig.subplots(2, 2, squeeze=False)
    ax_acc, ax_nc1, ax_geo, ax_md = axes[0, 0], axes[0, 1], axes[1, 0], axes[1, 1]

    for key, label in [
        ("acc_observed", "train accuracy, observed labels"),
        ("acc_true", "train accuracy, true labels"),
        ("test_acc", "test accuracy"),
    ]:
        ax_acc.plot(*_series(rows, key), marker=dot, label=label)
    if "penultimate" in present:
        xs, ys = _series(rows, "nc4_ncc_mismatch", "penultimate")
        if xs:
            ax_acc.plot(xs, ys, ":", marker=dot, label="NC4: NCC ≠ classifier (penultimate)")
    ax_acc.axhline(1.0, color="grey", lw=0.8, ls="--", label="TPT: train accuracy → 1, NC4 → 0")
    if noise:
        rates = _series(rows, "noise_rate")[1]
        ax_acc.axhline(
            1.0 - rates[-1],
            color="black",
            lw=0.8,
            ls="-.",
            label=f"1 − noise rate = {1.0 - rates[-1]:.3f}: true-label accuracy when every "
            "label is fitted",
        )
    ax_acc.set_ylim(-0.02, 1.02)
    ax_acc.set_ylabel("fraction of samples")
    ax_acc.set_title("Accuracy and NC4")

    cycle = rcParams["axes.prop_cycle"].by_key()["color"]
    color = {name: cycle[i % len(cycle)] for i, name in enumerate(layers)}
    styles = {"train": "-", "test": "--"}
    for name in layers:
        for split in splits:
            xs, ys = _series(rows, "nc1", name, split)
            if xs:
                ax_nc1.plot(
                    xs, ys, styles[split], color=color[name], marker=dot, label=f"{name} ({split})"
                )
    ax_nc1.set_yscale("log", nonpositive="mask")
    ax_nc1.set_ylabel(r"NC1 = tr($\Sigma_W \Sigma_B^\dagger$)/K")
    ax_nc1.set_title("Within-class variability (theory, TPT: → 0)")

    if "penultimate" in layers and _series(rows, "nc3_duality", "penultimate")[0]:
        for key, label in [
            ("nc2_etf_means", "NC2: centred means vs simplex ETF"),
            ("nc2_etf_weights", "NC2: classifier rows vs simplex ETF"),
            ("nc3_duality", "NC3: ‖W/‖W‖ − M̃/‖M̃‖‖²"),
        ]:
            ax_geo.plot(*_series(rows, key, "penultimate"), marker=dot, label=label)
        ax_geo.set_title("Penultimate geometry (theory, TPT: → 0)")
    else:
        for name in layers:
            xs, ys = _series(rows, "nc2_etf_means", name)
            ax_geo.plot(xs, ys, color=color[name], marker=dot, label=name)
        ax_geo.set_title("NC2: centred means vs simplex ETF (theory, TPT: → 0)")
    ax_geo.set_yscale("log", nonpositive="mask")
    ax_geo.set_ylabel("distance (Frobenius, normalized)")

    if noise:
        for name in layers:
            xs, ys = _series(rows, "memorization_scaled", name)
            ax_md.plot(xs, ys, color=color[name], marker=dot, label=f"memorization, {name}")
            xs, ys = _series(rows, "dilation_mean_scaled", name)
            ax_md.plot(xs, ys, ":", color=color[name], marker=dot, label=f"dilation, {name}")
        ax_md.set_ylabel("distance ÷ mean distance of clean class means")
        ax_md.set_title("Label noise (MD): memorization, dilation")
    else:
        ax_md.axis("off")
        ax_md.text(0.5, 0.5, "no label noise:\nno memorization / dilation", ha="center")

    for ax in (ax_acc, ax_nc1, ax_geo, ax_md):
        if ax.axison:
            ax.set_xlabel("epoch")
            ax.grid(True, which="both", alpha=0.3)
            ax.legend(fontsize=7)
    if title:
        fig.suptitle(title, fontsize=10)
    fig.tight_layout()
    return fig


def plot_run(
    run: str | os.PathLike[str],
    out: str | os.PathLike[str] | None = None,
    *,
    layers: Sequence[str] | None = None,
) -> Path:
    """Draw the figure of the run in directory ``run`` (see the module docstring) and write it
    atomically as a PNG to ``out`` (default ``run/metrics.png``); returns the path written."""
    run_dir = Path(run)
    if not run_dir.is_dir():
        raise FileNotFoundError(f"run: {run_dir} is not a directory")
    rows = read_metrics(run_dir)
    config_path = run_dir / "config.yaml"
    config = yaml.safe_load(config_path.read_text()) if config_path.is_file() else None
    fig = run_figure(rows, layers=layers, title=_title(config, run_dir.name, rows))
    path = Path(out) if out is not None else run_dir / "metrics.png"
    atomic_write(path, lambda handle: fig.savefig(handle, format="png", dpi=110))
    return path
