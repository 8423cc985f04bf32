"""The metrics table reader and the figure of a training run."""

from __future__ import annotations

import math
from pathlib import Path
from typing import Any

import matplotlib.pyplot as plt
import numpy as np
import pytest
import yaml
from matplotlib import rc_context, rcParams
from matplotlib.backends.backend_agg import FigureCanvasAgg
from matplotlib.figure import Figure

from nclab.cli import main
from nclab.errors import InputError
from nclab.train.config import TrainConfig, apply_overrides
from nclab.train.figures import _trainer_factor, lr_drops, plot_run, run_figure
from nclab.train.presets import preset
from nclab.train.table import COLUMNS, DESCRIPTIONS, read_metrics
from nclab.train.trainer import train

PNG_MAGIC = b"\x89PNG\r\n\x1a\n"
CYCLE = rcParams["axes.prop_cycle"].by_key()["color"]


@pytest.fixture(scope="module")
def noisy_run(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A smoke run with 20% label noise, two tracked layers and NC on the test set too; its
    schedule divides the learning rate by 10 after epoch 3."""
    out = tmp_path_factory.mktemp("runs") / "noisy"
    cfg = apply_overrides(
        preset("smoke"),
        ["track.layers=[body.2, penultimate]", "track.test_metrics=true", "optim.epochs=5"],
    )
    train(cfg, out)
    return out


def _line(ax: Any, label: str) -> tuple[list[float], list[float]]:
    for line in ax.get_lines():
        if line.get_label() == label:
            return list(line.get_xdata()), list(line.get_ydata())
    raise AssertionError(f"no line {label!r}; lines: {[x.get_label() for x in ax.get_lines()]}")


def test_every_column_is_described() -> None:
    assert set(DESCRIPTIONS) == set(COLUMNS) and len(COLUMNS) == len(set(COLUMNS))
    assert all(DESCRIPTIONS[c].strip() for c in COLUMNS)


def test_docs_list_every_column() -> None:
    text = (Path(__file__).parents[1] / "docs" / "training.md").read_text()
    section = text.split("## Columns of `metrics.csv`")[1].split("\n## ")[0]
    listed = {
        line.split("`")[1]: line.split("` | ", 1)[1].removesuffix(" |").replace("\\|", "|")
        for line in section.splitlines()
        if line.startswith("| `")
    }
    assert listed == DESCRIPTIONS


def test_figure_draws_the_table(noisy_run: Path) -> None:
    rows = read_metrics(noisy_run)
    assert {(r["split"], r["layer"]) for r in rows} == {
        (s, layer) for s in ("train", "test") for layer in ("body.2", "penultimate")
    }
    fig = run_figure(rows)
    acc, nc1, geo, md = fig.axes
    for layer in ("body.2", "penultimate"):
        for split in ("train", "test"):
            want = [
                (r["epoch"], r["nc1"]) for r in rows if (r["layer"], r["split"]) == (layer, split)
            ]
            xs, ys = _line(nc1, f"{layer} ({split})")
            assert list(zip(xs, ys, strict=True)) == want
        want = [
            r["memorization_scaled"] for r in rows if (r["layer"], r["split"]) == (layer, "train")
        ]
        assert _line(md, f"memorization, {layer}")[1] == want
    penult = [r for r in rows if (r["layer"], r["split"]) == ("penultimate", "train")]
    assert _line(geo, "NC3: ‖W/‖W‖ − M̃/‖M̃‖‖²")[1] == [r["nc3_duality"] for r in penult]
    # The accuracies are drawn once per epoch, whatever the number of layers.
    assert _line(acc, "test accuracy")[1] == [r["test_acc"] for r in penult]
    # Reference: fitting every observed label leaves exactly the uncorrupted ones right.
    noise_rate = penult[-1]["noise_rate"]
    ref = [line for line in acc.get_lines() if line.get_label().startswith("1 − noise rate")]
    assert len(ref) == 1 and ref[0].get_ydata()[0] == pytest.approx(1.0 - noise_rate, abs=0)
    for ax in (acc, nc1, geo, md):
        assert ax.get_xlabel() == "epoch" and ax.get_ylabel() and ax.get_title()
    plt.close(fig)


def test_plot_run_writes_a_png(noisy_run: Path, tmp_path: Path) -> None:
    path = plot_run(noisy_run)
    assert path == noisy_run / "metrics.png" and path.read_bytes()[:8] == PNG_MAGIC
    other = plot_run(noisy_run, tmp_path / "sub" / "fig.png", layers=["penultimate"])
    assert other.read_bytes()[:8] == PNG_MAGIC
    assert [p.name for p in other.parent.iterdir()] == ["fig.png"]  # no temporary file left


def test_figure_without_noise_has_no_empty_panel(tmp_path: Path) -> None:
    train(apply_overrides(preset("smoke"), ["noise.rate=0.0", "optim.epochs=2"]), tmp_path / "r")
    rows = read_metrics(tmp_path / "r")
    assert all(math.isnan(r["memorization"]) for r in rows)
    fig = run_figure(rows)
    # The layout closes up: three panels in a row, each drawing data.
    assert [ax.get_title().split(" (")[0] for ax in fig.axes] == [
        "Accuracy and NC4",
        "Within-class variability",
        "Geometry of penultimate, the classifier input",
    ]
    assert all(ax.axison and ax.get_lines() for ax in fig.axes)
    assert fig.axes[0].get_subplotspec().get_geometry()[:2] == (1, 3)
    labels = {line.get_label() for ax in fig.axes for line in ax.get_lines()}
    # Without noise the true labels are the observed ones: one training accuracy, no reference.
    assert "train accuracy" in labels and "train accuracy, true labels" not in labels
    assert not [label for label in labels if "noise" in label or "clean" in label]
    plt.close(fig)


def test_bad_input_names_the_argument(noisy_run: Path, tmp_path: Path) -> None:
    with pytest.raises(FileNotFoundError, match=r"run: .* is not a directory"):
        plot_run(tmp_path / "absent")
    with pytest.raises(FileNotFoundError, match=r"path: .*metrics\.csv does not exist"):
        plot_run(tmp_path)
    with pytest.raises(InputError, match=r"layers: \['fc'\] not in this run.*'penultimate'"):
        plot_run(noisy_run, tmp_path / "x.png", layers=["fc"])
    table = tmp_path / "metrics.csv"
    table.write_text(",".join(COLUMNS) + "\n")
    with pytest.raises(InputError, match="rows: the run has no evaluated epoch"):
        run_figure(read_metrics(table))
    empty = [{**row, **{c: math.nan for c in COLUMNS[3:]}} for row in read_metrics(noisy_run)]
    with pytest.raises(InputError, match="rows: no evaluated epoch holds a value to draw"):
        run_figure(empty)
    lines = (noisy_run / "metrics.csv").read_text().splitlines()
    cells = lines[1].split(",")
    cells[COLUMNS.index("nc1")] = "abc"
    table.write_text("\n".join([lines[0], ",".join(cells)]) + "\n")
    with pytest.raises(ValueError, match="line 2: column 'nc1' holds 'abc', not a number"):
        read_metrics(table)
    table.write_text("a,b\n1,2\n")
    with pytest.raises(ValueError, match=r"not a metrics table of nclab train \(no \['epoch'"):
        read_metrics(table)


def test_cli_train_then_plot(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    run = tmp_path / "run"
    assert main(["train", "--preset", "smoke", "--out", str(run), "optim.epochs=1"]) == 0
    said = capsys.readouterr().out
    (row,) = read_metrics(run)
    assert f"test acc {row['test_acc']:.4g}, NC1 (penultimate) {row['nc1']:.4g}" in said
    assert said.rstrip().endswith(f"figure: nclab plot {run}")
    out = tmp_path / "f.png"
    assert main(["plot", str(run), "--out", str(out)]) == 0
    assert f"wrote {out}" in capsys.readouterr().out and out.read_bytes()[:8] == PNG_MAGIC
    assert main(["plot", str(tmp_path / "absent")]) == 2
    assert "nclab plot: error: run:" in capsys.readouterr().err


def _synthetic_rows(
    epochs: int = 30,
    layers: tuple[str, ...] = ("body.1", "features"),
    noise: bool = True,
    test_acc: bool = True,
    nc1: tuple[float, float] = (10.0, 0.01),
) -> list[dict[str, Any]]:
    """Rows as read_metrics returns them (every column, NaN where empty) with the last layer as
    the classifier's input. The accuracies sweep the whole range 0..1 in opposite directions
    and the test accuracy zigzags between 0 and 1, so data fill every corner of that panel."""
    rows = []
    for e in range(1, epochs + 1):
        t = (e - 1) / (epochs - 1)
        for i, layer in enumerate(layers):
            row: dict[str, Any] = {c: math.nan for c in COLUMNS}
            row.update(epoch=e, split="train", layer=layer, lr=0.1 if e <= 10 else 0.01)
            row.update(acc_observed=t, acc_true=1.0 - t if noise else t)
            row.update(test_acc=float(e % 2) if test_acc else math.nan)
            row["nc1"] = nc1[0] ** (1 - t) * nc1[1] ** t * (i + 1)
            row["nc2_etf_means"] = 1.0 - 0.5 * t
            row.update(num_samples=100.0, num_classes=4.0)
            if layer == layers[-1]:
                row.update(nc4_ncc_mismatch=1.0 - t, nc2_etf_weights=0.8 - 0.5 * t)
                row["nc3_duality"] = 1.2 - 0.6 * t
            if noise:
                row.update(noise_rate=0.15, clean_nc1=row["nc1"] / 2)
                row.update(memorization_scaled=0.2 + t, dilation_mean_scaled=0.5 + 0.2 * t)
            rows.append(row)
    return rows


def _drawn(fig: Figure) -> Any:
    """Draw ``fig`` on an Agg canvas; returns the renderer."""
    canvas = FigureCanvasAgg(fig)
    canvas.draw()
    return canvas.get_renderer()


def _covered_points(fig: Figure) -> list[tuple[str, str, float, float]]:
    """(legend's panel, line, x, y) for every drawn point (display coordinates, inside its
    axes: the rest is clipped) of every line of every panel that lies in a legend's box."""
    renderer = _drawn(fig)
    covered = []
    for owner in fig.axes:
        legend = owner.get_legend()
        box = legend.get_window_extent(renderer)
        for ax in fig.axes:
            for line in ax.get_lines():
                xy = np.column_stack([line.get_xdata(), line.get_ydata()]).astype(float)
                pts = line.get_transform().transform(xy)
                pts = pts[np.isfinite(pts).all(axis=1)]
                for x, y in pts:
                    if ax.bbox.x0 <= x <= ax.bbox.x1 and ax.bbox.y0 <= y <= ax.bbox.y1:
                        if box.contains(x, y):
                            covered.append((owner.get_title(), str(line.get_label()), x, y))
    return covered


@pytest.mark.parametrize(("noise", "font_size"), [(True, 10.0), (False, 10.0), (True, 20.0)])
def test_legends_cover_no_data(noise: bool, font_size: float) -> None:
    config = {"optim": {"schedule": "step", "step_size": 10, "epochs": 30, "gamma": 0.1}}
    # 10 pt is matplotlib's default; 20 pt a presentation style (a fixed offset fits the one only).
    with rc_context({"font.size": font_size}):
        fig = run_figure(_synthetic_rows(noise=noise), config=config)
        assert len(fig.axes) == (4 if noise else 3)
        assert _covered_points(fig) == []
        renderer = _drawn(fig)
        for ax in fig.axes:
            legend = ax.get_legend()
            box = legend.get_window_extent(renderer)
            # Outside every panel, and clear of the x tick labels and the x label of its own.
            assert not any(box.overlaps(other.bbox) for other in fig.axes), ax.get_title()
            assert not box.overlaps(ax.xaxis.label.get_window_extent(renderer)), ax.get_title()
            for label in ax.xaxis.get_ticklabels():
                if label.get_text():
                    assert not box.overlaps(label.get_window_extent(renderer)), ax.get_title()
            assert len(legend.get_texts()) >= 2
        # The check sees an overlap where there is one: a legend in the middle of the accuracy
        # panel, whose lines cross it.
        fig.axes[0].legend(loc="center")
        covered = {label for _, label, _, _ in _covered_points(fig)}
        assert "NC4: NCC ≠ classifier (features)" in covered
    plt.close(fig)


def test_legend_entries_only_for_series_with_data() -> None:
    rows = _synthetic_rows(test_acc=False)
    fig = run_figure(rows)
    for ax in fig.axes:
        entries = [text.get_text() for text in ax.get_legend().get_texts()]
        with_data = [
            str(line.get_label())
            for line in ax.get_lines()
            if not str(line.get_label()).startswith("_")
            and np.isfinite(np.asarray(line.get_ydata(), dtype=float)).any()
        ]
        assert entries == with_data, ax.get_title()
    assert "test accuracy" not in [t.get_text() for t in fig.axes[0].get_legend().get_texts()]
    plt.close(fig)


def _y_tick_labels(ax: Any) -> list[str]:
    """The non-empty y tick labels (major and minor) whose ticks lie in the axis' view."""
    lo, hi = ax.get_ylim()
    return [
        label.get_text()
        for label in ax.yaxis.get_ticklabels(which="both")
        if label.get_visible() and label.get_text() and lo <= label.get_position()[1] <= hi
    ]


@pytest.mark.parametrize(
    "span",
    [(0.475, 0.3), (0.14, 0.05), (1.97, 0.7), (30.0, 0.3), (4.0, 0.05)],
    ids=["0.2-decade", "0.45-decade", "0.45-decade-across-1", "2-decades", "1.9-decades"],
)
def test_log_axes_label_at_least_three_ticks(span: tuple[float, float]) -> None:
    # NC1 of the second layer is twice the first's: the panel spans the range and a factor 2.
    rows = _synthetic_rows(layers=("features",), noise=False, nc1=span)
    fig = run_figure(rows)
    nc1_ax = fig.axes[1]
    assert nc1_ax.get_yscale() == "log"
    _drawn(fig)
    labels = _y_tick_labels(nc1_ax)
    assert len(labels) >= 3, labels
    # Each label is the number at its tick (plain decimals).
    lo, hi = nc1_ax.get_ylim()
    assert all(lo <= float(text) <= hi for text in labels), labels
    # Matplotlib's own labels over the same range are fewer: what this test guards.
    plain = Figure()
    ax = plain.subplots()
    ax.plot([1, 30], [min(span), max(span)])
    ax.set_yscale("log")
    ax.set_ylim(lo, hi)
    _drawn(plain)
    assert len(_y_tick_labels(ax)) < 3
    plt.close(fig)


def test_layer_keeps_its_colour_and_clean_nc1_is_drawn() -> None:
    rows = _synthetic_rows(layers=("body.1", "body.2", "features"))
    everything = run_figure(rows)
    alone = run_figure(rows, layers=["features"])
    for fig in (everything, alone):
        nc1_ax = fig.axes[1]
        for label in ("features (train)", "features, clean samples (train)"):
            line = next(x for x in nc1_ax.get_lines() if x.get_label() == label)
            assert line.get_color() == CYCLE[2]  # its index among the three tracked layers
        clean = _line(nc1_ax, "features, clean samples (train)")
        want = [(r["epoch"], r["clean_nc1"]) for r in rows if r["layer"] == "features"]
        assert list(zip(*clean, strict=True)) == want
        md = _line(fig.axes[3], "memorization, features")
        assert md[1] == [r["memorization_scaled"] for r in rows if r["layer"] == "features"]
        assert (
            next(
                x for x in fig.axes[3].get_lines() if x.get_label() == "memorization, features"
            ).get_color()
            == CYCLE[2]
        )
    assert [x.get_label() for x in alone.axes[1].get_lines()] == [
        "features (train)",
        "features, clean samples (train)",
    ]
    plt.close(everything)
    plt.close(alone)


def test_geometry_panel_for_a_classifier_input_of_any_name() -> None:
    rows = _synthetic_rows(layers=("body.1", "features"))
    fig = run_figure(rows)
    acc, _, geo, _ = fig.axes
    assert geo.get_title().startswith("Geometry of features, the classifier input")
    feats = [r for r in rows if r["layer"] == "features"]
    for key, label in [
        ("nc2_etf_means", "NC2: centred means vs simplex ETF"),
        ("nc2_etf_weights", "NC2: classifier rows vs simplex ETF"),
        ("nc3_duality", "NC3: ‖W/‖W‖ − M̃/‖M̃‖‖²"),
    ]:
        assert _line(geo, label)[1] == [r[key] for r in feats]
    assert _line(acc, "NC4: NCC ≠ classifier (features)")[1] == [
        r["nc4_ncc_mismatch"] for r in feats
    ]
    plt.close(fig)


def _drop_lines(fig: Figure) -> list[list[float]]:
    return [
        sorted(line.get_xdata()[0] for line in ax.get_lines() if line.get_gid() == "lr_drop")
        for ax in fig.axes
    ]


def test_lr_drops_follow_the_schedule() -> None:
    step = {"optim": {"schedule": "step", "step_size": 3, "epochs": 10, "gamma": 0.1}}
    assert lr_drops(step, 10) == [(3, 0.1), (6, 0.1), (9, 0.1)]
    assert lr_drops(step, 7) == [(3, 0.1), (6, 0.1)]  # a run still going: drawn so far
    assert lr_drops(TrainConfig.from_dict(step), 10) == lr_drops(step, 10)  # load_run's config
    multi = {"optim": {"schedule": "multistep", "milestones": [2, 5], "epochs": 8, "gamma": 0.5}}
    assert lr_drops(multi, 8) == [(2, 0.5), (5, 0.5)]
    # The rate after the last epoch is never used: no drop at the end of a finished run.
    assert lr_drops({"optim": {"schedule": "step", "step_size": 5, "epochs": 10}}, 10) == [(5, 0.1)]
    for schedule in ("cosine", "constant"):
        assert lr_drops({"optim": {"schedule": schedule, "epochs": 10}}, 10) == []
    # A config this version cannot read (a key from another version) is read by its keys.
    other = {"optim": {**multi["optim"], "warmup_epochs": 2}}
    with pytest.raises(ValueError, match="warmup_epochs"):
        TrainConfig.from_dict(other)
    assert lr_drops(other, 8) == [(2, 0.5), (5, 0.5)]

    fig = run_figure(_synthetic_rows(epochs=10), config=step)
    assert _drop_lines(fig) == [[3.0, 6.0, 9.0]] * 4
    legend = [t.get_text() for t in fig.axes[0].get_legend().get_texts()]
    assert legend.count("learning rate ×0.1") == 1
    assert _drop_lines(run_figure(_synthetic_rows(epochs=10))) == [[]] * 4
    plt.close(fig)


def test_lr_drops_of_a_run_match_its_lr_column(noisy_run: Path) -> None:
    rows = read_metrics(noisy_run)
    config = yaml.safe_load((noisy_run / "config.yaml").read_text())
    assert _trainer_factor(config) is not None  # the trainer's own schedule, not the fallback
    lr = dict(zip(*_series_of(rows, "lr"), strict=True))
    lowered = [e for e in sorted(lr)[:-1] if lr[e + 1] < lr[e]]
    assert lowered == [3]  # step_size 3 of the smoke preset
    fig = run_figure(rows, config=config)
    assert _drop_lines(fig) == [[3.0]] * len(fig.axes)
    plt.close(fig)


def _series_of(rows: list[dict[str, Any]], key: str) -> tuple[list[int], list[float]]:
    first = [r for r in rows if r["layer"] == rows[0]["layer"] and r["split"] == "train"]
    return [r["epoch"] for r in first], [r[key] for r in first]


@pytest.mark.parametrize(
    ("name", "magic"),
    [("fig.pdf", b"%PDF-"), ("fig.svg", b"<?xml"), ("fig.PNG", PNG_MAGIC)],
)
def test_plot_run_writes_the_format_of_the_extension(
    noisy_run: Path, tmp_path: Path, name: str, magic: bytes
) -> None:
    path = plot_run(noisy_run, tmp_path / name)
    data = path.read_bytes()
    assert data.startswith(magic)
    if name.endswith(".svg"):
        assert b"<svg" in data[:1000]
    assert [p.name for p in tmp_path.iterdir()] == [name]  # no temporary file left


def test_unknown_extension_is_refused(
    noisy_run: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    with pytest.raises(
        InputError,
        match=r"^out: '.*fig\.jpg' ends in '\.jpg'; expected one of \.png, \.pdf, \.svg$",
    ):
        plot_run(noisy_run, tmp_path / "fig.jpg")
    with pytest.raises(InputError, match=r"^out: '.*fig' has no extension; expected one of"):
        plot_run(noisy_run, tmp_path / "fig")
    out = tmp_path / "fig.eps"
    assert main(["plot", str(noisy_run), "--out", str(out)]) == 2
    assert capsys.readouterr().err == (
        f"nclab plot: error: --out: {str(out)!r} ends in '.eps'; expected one of .png, .pdf, .svg\n"
    )
    assert list(tmp_path.iterdir()) == []
