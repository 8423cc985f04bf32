"""The figure of a training run: its ``metrics.csv`` against epochs, with what theory predicts.

Panels (x: epoch); a panel without data is left out and the grid closes up (two columns for four
panels, one row otherwise):

1. Fractions of samples: training accuracy on the observed and on the true labels, test
   accuracy, and NC4 (the fraction where the nearest class centre and the classifier disagree,
   for each tracked layer that feeds the classifier). Terminal phase of training (TPT, Papyan
   et al. 2020): zero training error on the labels trained on, and NC4 -> 0. Under label noise,
   a network that fits every observed label is right on the true labels exactly where the label
   is not corrupted: training accuracy on the true labels = 1 - noise_rate (the measured
   fraction of corrupted labels), drawn as a reference.
2. NC1 = (1/K) tr(Σ_W Σ_B^†) per tracked layer (log scale; test split dashed when measured),
   and under label noise the NC1 of the clean samples alone (dotted; MD's dilation seen by NC1):
   -> 0 in TPT.
3. Geometry of the classifier's input, the layer whose rows carry the classifier metrics
   (``nc3_duality``; any name, usually ``penultimate``; log scale): distances of the centred
   class means and of the classifier rows from a simplex ETF (NC2) and of the normalized
   classifier from the normalized centred means (NC3): -> 0 in TPT. Without classifier metrics
   (that layer not tracked) the means' ETF distance of every tracked layer.
4. Under label noise only: memorization and dilation (Nguyen et al., ICLR 2023, MD), each divided
   by the mean distance between clean class means, per tracked layer. MD's model: as the network
   memorizes the noisy labels (memorization rises towards 1, a noisy sample moved a whole
   inter-class distance from its true class), the clean classes dilate.

Every panel marks the epochs after which the learning-rate schedule of the run's config lowers
the rate (step and multistep schedules; cosine lowers it every epoch and is not marked). A layer
has the same colour in every figure of the run, whichever layers are drawn. Legends sit below
their panel, outside the data. A log axis with fewer than three powers of ten in view labels
intermediate ticks too (matplotlib alone may show one or two labels). Every key is described in
:data:`nclab.train.table.DESCRIPTIONS`.
"""

from __future__ import annotations

import math
import os
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

import yaml

from nclab.errors import InputError
from nclab.io import atomic_write
from nclab.train.table import read_metrics

if TYPE_CHECKING:
    from nclab.train.config import TrainConfig

__all__ = ["FORMATS", "figure_format", "lr_drops", "plot_run", "run_figure"]

FORMATS: dict[str, str] = {".png": "png", ".pdf": "pdf", ".svg": "svg"}
"""File extension -> the format :func:`plot_run` writes."""

_CLASSIFIER_KEY = "nc3_duality"  # a row has it exactly when its layer is the classifier's input
_GEOMETRY = [
    ("nc2_etf_means", "NC2: centred means vs simplex ETF"),
    ("nc2_etf_weights", "NC2: classifier rows vs simplex ETF"),
    ("nc3_duality", "NC3: ‖W/‖W‖ − M̃/‖M̃‖‖²"),
]
_ACC_COLOR = {"acc_observed": 0, "acc_true": 1, "test_acc": 2}  # indices in the colour cycle
_SPLIT_STYLE = {"train": "-", "test": "--"}


def figure_format(path: str | os.PathLike[str], name: str = "out") -> str:
    """The format (``png``, ``pdf`` or ``svg``) that ``path``'s extension asks for; ``name`` is
    the argument named in the error raised for any other extension."""
    suffix = Path(path).suffix.lower()
    if suffix not in FORMATS:
        got = f"ends in {suffix!r}" if suffix else "has no extension"
        raise InputError(f"{name}: {os.fspath(path)!r} {got}; expected one of {', '.join(FORMATS)}")
    return FORMATS[suffix]


def _trainer_factor(config: Mapping[str, Any]) -> Callable[[int], float] | None:
    """The trainer's schedule factor for ``config``; None where this version cannot read the
    config (written by another version, or its data absent here) or has no ``lr_factor``."""
    try:
        from nclab.train.config import TrainConfig
        from nclab.train.trainer import lr_factor

        cfg = TrainConfig.from_dict(dict(config))
    except (ImportError, ValueError, TypeError):
        return None
    return lambda e: lr_factor(cfg, e)


def _factor_from_keys(optim: Mapping[str, Any]) -> Callable[[int], float]:
    """The schedule's factor from the ``optim`` keys, for a config this version's
    :class:`~nclab.train.config.TrainConfig` does not read (written by another version)."""
    gamma = float(optim.get("gamma", 0.1))
    if optim.get("schedule") == "step":
        step = int(optim.get("step_size", 40))
        return lambda e: gamma ** (e // step)
    if optim.get("schedule") == "multistep":
        milestones = [int(m) for m in optim.get("milestones", [])]
        return lambda e: gamma ** sum(e >= m for m in milestones)
    return lambda e: 1.0


def lr_drops(config: Mapping[str, Any] | TrainConfig, last_epoch: int) -> list[tuple[int, float]]:
    """``(e, ratio)`` for each number of completed epochs e <= ``last_epoch`` after which the
    schedule of ``config`` (a run's ``config.yaml`` as a mapping, or a
    :class:`~nclab.train.config.TrainConfig` such as ``load_run(DIR).config``) lowers the
    learning rate, with ratio = rate of epoch e+1 / rate of epoch e (e.g. 0.1).

    The factors are the trainer's own (:func:`nclab.train.trainer.lr_factor`, the factor of the
    0-based epoch e, i.e. after e completed epochs); a config that this version cannot read is
    interpreted from its ``optim.schedule`` / ``step_size`` / ``milestones`` / ``gamma`` keys.
    A cosine schedule lowers the rate after every epoch: no drops are reported for it.
    """
    if not isinstance(config, Mapping):
        config = config.to_dict()
    optim = config.get("optim") or {}
    if optim.get("schedule") not in ("step", "multistep"):
        return []
    factor = _trainer_factor(config) or _factor_from_keys(optim)
    epochs = int(optim.get("epochs", last_epoch + 1))
    drops = []
    for e in range(1, min(last_epoch, epochs - 1) + 1):
        before, after = factor(e - 1), factor(e)
        if after < before:
            drops.append((e, float(f"{after / before:.6g}")))  # 0.1, not 0.0999...
    return drops


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


@dataclass
class _Panel:
    """What one panel draws: its lines (only those with data) and reference lines."""

    title: str
    ylabel: str
    log: bool = False
    ylim: tuple[float, float] | None = None
    lines: list[tuple[list[int], list[float], dict[str, Any]]] = field(default_factory=list)
    hlines: list[tuple[float, dict[str, Any]]] = field(default_factory=list)

    def add(self, xs: list[int], ys: list[float], **style: Any) -> None:
        if xs:
            self.lines.append((xs, ys, style))


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


def _legend_drop_pt() -> float:
    """How far below the axes (points) a legend starts so that it clears the x tick labels and
    the x label under the current style: tick, pad, label line, label pad, label line, margin
    (40 pt with matplotlib's defaults)."""
    from matplotlib import rcParams
    from matplotlib.font_manager import FontProperties

    def line(size: Any) -> float:
        return 1.25 * float(FontProperties(size=size).get_size_in_points())

    return float(
        rcParams["xtick.major.size"]
        + rcParams["xtick.major.pad"]
        + line(rcParams["xtick.labelsize"])
        + rcParams["axes.labelpad"]
        + line(rcParams["axes.labelsize"])
        + 4.0
    )


def _plain(value: float, _pos: int | None = None) -> str:
    return f"{value:.3g}"


def _label_log_ticks(ax: Any) -> None:
    """Label at least three ticks of a log y axis. Matplotlib labels the powers of ten, and the
    other ticks only over narrow ranges: an axis holding one or two powers of ten often shows
    just those (a spread of 0.3 to 30 reads "1, 10"). Under a decade: evenly spaced round
    values; otherwise, while fewer than three powers of ten are in view: also 2 and 5 times
    each power of ten."""
    from matplotlib.ticker import FuncFormatter, LogLocator, MaxNLocator

    lo, hi = ax.get_ylim()
    if not (lo > 0 and hi > lo):
        return
    powers = math.floor(math.log10(hi)) - math.ceil(math.log10(lo)) + 1
    if powers >= 3:
        return
    if hi / lo < 10:
        ax.yaxis.set_minor_locator(MaxNLocator(nbins=5, steps=[1, 2, 2.5, 5, 10]))
    else:
        ax.yaxis.set_minor_locator(LogLocator(subs=(2.0, 5.0)))
    ax.yaxis.set_major_formatter(FuncFormatter(_plain))
    ax.yaxis.set_minor_formatter(FuncFormatter(_plain))


def _panels(
    rows: list[dict[str, Any]], layers: Sequence[str], present: list[str], marker: str | None
) -> list[_Panel]:
    from matplotlib import rcParams

    cycle = rcParams["axes.prop_cycle"].by_key()["color"]
    # The colour of a layer is its index among all tracked layers, so that it does not change
    # with the layers selected.
    color = {name: cycle[i % len(cycle)] for i, name in enumerate(present)}
    splits = sorted({row["split"] for row in rows}, key=["train", "test"].index)
    classifier = [name for name in layers if _series(rows, _CLASSIFIER_KEY, name)[0]]
    noise_rates = _series(rows, "noise_rate")[1]

    acc = _Panel("Accuracy and NC4", "fraction of samples", ylim=(-0.02, 1.02))
    # Without label noise the true labels are the observed ones: one training accuracy.
    accuracies = (
        [
            ("acc_observed", "train accuracy, observed labels"),
            ("acc_true", "train accuracy, true labels"),
        ]
        if noise_rates
        else [("acc_observed", "train accuracy")]
    )
    for key, label in [*accuracies, ("test_acc", "test accuracy")]:
        acc.add(*_series(rows, key), color=cycle[_ACC_COLOR[key]], marker=marker, label=label)
    for i, name in enumerate(classifier):
        acc.add(
            *_series(rows, "nc4_ncc_mismatch", name),
            ls=":",
            color=cycle[(3 + i) % len(cycle)],
            marker=marker,
            label=f"NC4: NCC ≠ classifier ({name})",
        )
    acc.hlines.append(
        (1.0, {"color": "grey", "ls": "--", "label": "TPT: train accuracy → 1, NC4 → 0"})
    )
    if noise_rates:
        kept = 1.0 - noise_rates[-1]
        acc.hlines.append(
            (
                kept,
                {
                    "color": "black",
                    "ls": "-.",
                    "label": f"1 − noise rate = {kept:.3f}: true-label accuracy when every "
                    "label is fitted",
                },
            )
        )

    nc1 = _Panel(
        "Within-class variability (theory, TPT: → 0)",
        r"NC1 = tr($\Sigma_W \Sigma_B^\dagger$)/K",
        log=True,
    )
    for name in layers:
        for split in splits:
            style = {"color": color[name], "marker": marker}
            nc1.add(
                *_series(rows, "nc1", name, split),
                ls=_SPLIT_STYLE[split],
                label=f"{name} ({split})",
                **style,
            )
            nc1.add(
                *_series(rows, "clean_nc1", name, split),
                ls=":" if split == "train" else "-.",
                label=f"{name}, clean samples ({split})",
                **style,
            )

    if classifier:
        title = (
            f"Geometry of {classifier[0]}, the classifier input"
            if len(classifier) == 1
            else "Geometry of the classifier inputs"
        )
        geo = _Panel(f"{title} (theory, TPT: → 0)", "distance (Frobenius, normalized)", log=True)
        for name in classifier:
            for i, (key, label) in enumerate(_GEOMETRY):
                if len(classifier) == 1:
                    style = {"color": cycle[i], "label": label}
                else:
                    style = {
                        "color": color[name],
                        "ls": ["-", "--", ":"][i],
                        "label": f"{label} ({name})",
                    }
                geo.add(*_series(rows, key, name), marker=marker, **style)
    else:
        geo = _Panel(
            "NC2: centred means vs simplex ETF (theory, TPT: → 0)",
            "distance (Frobenius, normalized)",
            log=True,
        )
        for name in layers:
            geo.add(
                *_series(rows, "nc2_etf_means", name), color=color[name], marker=marker, label=name
            )

    md = _Panel(
        "Label noise (MD): memorization, dilation", "distance ÷ mean distance of clean class means"
    )
    for name in layers:
        md.add(
            *_series(rows, "memorization_scaled", name),
            color=color[name],
            marker=marker,
            label=f"memorization, {name}",
        )
        md.add(
            *_series(rows, "dilation_mean_scaled", name),
            ls=":",
            color=color[name],
            marker=marker,
            label=f"dilation, {name}",
        )
    return [panel for panel in (acc, nc1, geo, md) if panel.lines]


def run_figure(
    rows: list[dict[str, Any]],
    *,
    layers: Sequence[str] | None = None,
    title: str = "",
    config: Mapping[str, Any] | TrainConfig | None = None,
) -> Any:
    """The matplotlib ``Figure`` (not registered with pyplot) of a run's rows (as
    :func:`~nclab.train.table.read_metrics` returns them); ``layers`` restricts the per-layer
    series (default: every tracked layer); ``config`` (the run's ``config.yaml`` as a mapping,
    or its ``TrainConfig``) marks the learning-rate drops (see :func:`lr_drops`)."""
    # The object-oriented Figure, not pyplot: no backend switch, no global figure registry (a
    # notebook calling this keeps its own backend; nothing to close).
    from matplotlib import rcParams
    from matplotlib.figure import Figure
    from matplotlib.ticker import MaxNLocator
    from matplotlib.transforms import ScaledTranslation

    if not rows:
        raise InputError("rows: the run has no evaluated epoch yet")
    present = list(dict.fromkeys(row["layer"] for row in rows))
    if layers is None:
        layers = present
    unknown = [name for name in layers if name not in present]
    if unknown:
        raise InputError(f"layers: {unknown} not in this run; its tracked layers are {present}")
    epochs = {row["epoch"] for row in rows}
    marker = "." if len(epochs) <= 40 else None  # markers hide long runs
    panels = _panels(rows, layers, present, marker)
    if not panels:
        raise InputError("rows: no evaluated epoch holds a value to draw (every field is empty)")
    drops = lr_drops(config, max(epochs)) if config else []
    ratios = {ratio for _, ratio in drops}
    drop_label = f"learning rate ×{ratios.pop():.3g}" if len(ratios) == 1 else "learning-rate drop"

    drop = _legend_drop_pt()
    ncols = 2 if len(panels) == 4 else len(panels)
    nrows = math.ceil(len(panels) / ncols)
    # Sized for matplotlib's default 10 pt text; a style with larger text gets a figure as much
    # larger, so that titles, legends and panels keep their proportions.
    scale = max(1.0, float(rcParams["font.size"]) / 10.0)
    fig = Figure(figsize=(5.8 * ncols * scale, (5.0 * nrows + 0.4) * scale), layout="constrained")
    axes = fig.subplots(nrows, ncols, squeeze=False).ravel()
    for index, (ax, panel) in enumerate(zip(axes, panels, strict=True)):
        for xs, ys, style in panel.lines:
            ax.plot(xs, ys, **style)
        for y, style in panel.hlines:
            ax.axhline(y, lw=0.8, **style)
        for i, (epoch, _) in enumerate(drops):
            ax.axvline(
                epoch,
                color="0.55",
                lw=0.9,
                ls=(0, (2, 2)),
                gid="lr_drop",
                label=drop_label if index == 0 and i == 0 else "_nolegend_",
            )
        if panel.log:
            ax.set_yscale("log", nonpositive="mask")
            _label_log_ticks(ax)
        if panel.ylim:
            ax.set_ylim(*panel.ylim)
        ax.set_title(panel.title)
        ax.set_ylabel(panel.ylabel)
        ax.set_xlabel("epoch")
        ax.xaxis.set_major_locator(MaxNLocator(nbins="auto", steps=[1, 2, 5, 10], integer=True))
        ax.grid(True, which="both", alpha=0.3)
        # Below the axes, clear of every data point (a legend inside hid NC4); the offset is in
        # points so that it clears the tick labels and the x label at any figure size.
        below = ax.transAxes + ScaledTranslation(0, -drop / 72, fig.dpi_scale_trans)
        ax.legend(
            loc="upper center",
            bbox_to_anchor=(0.5, 0.0),
            bbox_transform=below,
            ncols=2,
            fontsize="x-small",  # 7 pt at the default 10 pt, and scales with a style
            frameon=False,
        )
    if title:
        fig.suptitle(title, fontsize=10)
    return fig


def plot_run(
    run: str | os.PathLike[str],
    out: str | os.PathLike[str] | None = None,
    *,
    layers: Sequence[str] | None = None,
) -> Path:
    """Draw the figure of the run in directory ``run`` (see the module docstring) and write it
    atomically to ``out`` (default ``run/metrics.png``) in the format its extension names
    (:data:`FORMATS`: PNG, PDF or SVG; any other is an :class:`~nclab.errors.InputError`);
    returns the path written."""
    path = Path(out) if out is not None else Path(run) / "metrics.png"
    fmt = figure_format(path)
    run_dir = Path(run)
    if not run_dir.is_dir():
        raise FileNotFoundError(f"run: {run_dir} is not a directory")
    rows = read_metrics(run_dir)
    config_path = run_dir / "config.yaml"
    config = yaml.safe_load(config_path.read_text()) if config_path.is_file() else None
    fig = run_figure(
        rows, layers=layers, title=_title(config, run_dir.name, rows), config=config or None
    )
    atomic_write(path, lambda handle: fig.savefig(handle, format=fmt, dpi=110))
    return path
