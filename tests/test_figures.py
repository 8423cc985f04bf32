"""The metrics table reader and the figure of a training run."""

from __future__ import annotations

import math
from pathlib import Path
from typing import Any

import matplotlib.pyplot as plt
import pytest

from nclab.cli import main
from nclab.train.config import apply_overrides
from nclab.train.figures import plot_run, run_figure
from nclab.train.presets import preset
from nclab.train.table import COLUMNS, DESCRIPTIONS, read_metrics
from nclab.train.trainer import train

PNG_MAGIC = b"\x89PNG\r\n\x1a\n"


@pytest.fixture(scope="module")
def noisy_run(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A smoke run with 20% label noise, two tracked layers and NC on the test set too."""
    out = tmp_path_factory.mktemp("runs") / "noisy"
    cfg = apply_overrides(
        preset("smoke"),
        ["track.layers=[body.2, penultimate]", "track.test_metrics=true", "optim.epochs=3"],
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


def test_figure_without_noise_has_no_memorization_panel(tmp_path: Path) -> None:
    train(apply_overrides(preset("smoke"), ["noise.rate=0.0", "optim.epochs=2"]), tmp_path / "r")
    rows = read_metrics(tmp_path / "r")
    assert all(math.isnan(r["memorization"]) for r in rows)
    fig = run_figure(rows)
    acc, _, _, md = fig.axes
    assert not md.axison
    assert not [x for x in acc.get_lines() if x.get_label().startswith("1 − noise rate")]
    plt.close(fig)


def test_bad_input_names_the_argument(noisy_run: Path, tmp_path: Path) -> None:
    with pytest.raises(FileNotFoundError, match=r"run: .* is not a directory"):
        plot_run(tmp_path / "absent")
    with pytest.raises(FileNotFoundError, match=r"path: .*metrics\.csv does not exist"):
        plot_run(tmp_path)
    with pytest.raises(ValueError, match=r"layers: \['fc'\] not in this run.*'penultimate'"):
        plot_run(noisy_run, tmp_path / "x.png", layers=["fc"])
    table = tmp_path / "metrics.csv"
    table.write_text(",".join(COLUMNS) + "\n")
    with pytest.raises(ValueError, match="rows: the run has no evaluated epoch"):
        run_figure(read_metrics(table))
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
