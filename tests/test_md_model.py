"""The md-model reproduction: registered, its grid, table, notes and figures (smoke preset)."""

from __future__ import annotations

import csv
from pathlib import Path

import pytest

from nclab.experiments import registry
from nclab.experiments.md_model import COLUMNS, SETTINGS, compare
from nclab.experiments.registry import RunOptions


def test_smoke_run_writes_grid_table_and_figures(tmp_path: Path) -> None:
    rep = registry.get("md-model")
    assert set(rep.presets) == {"smoke", "cpu"} and set(rep.runtime) == set(rep.presets)
    result = rep.run(tmp_path, "smoke", RunOptions())
    rows = list(csv.DictReader((tmp_path / "md_grid.csv").open()))
    s = SETTINGS["smoke"]
    assert len(rows) == (1 + len(s["smoothing"])) * len(s["noise"]) * len(s["expressivity"])
    assert tuple(rows[0]) == COLUMNS and all(r["converged"] == "True" for r in rows)
    # λ = 2 binds the constraint: D = λ M at every point
    for r in rows:
        assert float(r["dilation"]) == pytest.approx(2.0 * float(r["memorization"]), rel=1e-9)
    table = (tmp_path / "md_table.md").read_text()
    assert table.count("\n") == 2 + len(s["noise"]) * len(s["expressivity"])
    assert [p.name for p, _ in result.figures] == ["md_curves.png", "md_test_error.png"]
    for png, caption in result.figures:
        assert png.stat().st_size > 10_000 and png.with_suffix(".pdf").is_file() and caption
    assert result.tables == [tmp_path / "md_grid.csv"]
    assert any("grid points" in note for note in result.notes)


def test_compare_uses_twice_the_standard_error() -> None:
    ce = {"memorization": 1.0, "dilation": 1.0, "test_error": 0.100, "test_error_stderr": 0.001}
    ls = {"memorization": 0.9, "dilation": 0.9, "test_error": 0.0985, "test_error_stderr": 0.001}
    assert compare(ls, ce) == {"memorization": "lower", "dilation": "lower", "test_error": "equal"}
    ls["test_error"] = 0.0975
    assert compare(ls, ce)["test_error"] == "lower"
    ls["test_error"], ls["dilation"] = 0.1025, 1.0
    assert compare(ls, ce) == {
        "memorization": "lower",
        "dilation": "not lower",
        "test_error": "higher",
    }


def test_unknown_preset_names_the_flag(tmp_path: Path) -> None:
    with pytest.raises(ValueError, match=r"^--preset: md-model has presets \['smoke', 'cpu'\]"):
        registry.get("md-model").run(tmp_path, "gpu", RunOptions())


def test_label_noise_predictions_recover_the_models_own_points() -> None:
    # points made by the model itself (λ = 0.8): fitted on η = 0.1, λ̂ is 0.8 and the other
    # rate is predicted exactly; a point moved by 0.05 in dilation shows an error of 0.05
    from nclab.experiments.common import new_figure
    from nclab.experiments.md_model import draw_model_curves, label_noise_predictions
    from nclab.losses import make_loss
    from nclab.models.md import MDModel

    points = []
    for name, alpha in (("ce", 0.0), ("ls", 0.1)):
        for eta in (0.1, 0.3):
            sol = MDModel(make_loss(name, smoothing=alpha), 3, 10, 3, eta, 0.8, 1e-2, 1e-2).theory()
            points.append(
                {
                    "loss": name,
                    "smoothing": alpha,
                    "noise_rate": eta,
                    "memorization_scaled": sol.memorization_scaled,
                    "dilation_mean_scaled": sol.dilation_scaled,
                }
            )
    points[1]["dilation_mean_scaled"] += 0.05  # CE at η = 0.3
    rows, summary = label_noise_predictions(points, 0.1, num_classes=3, per_class=10, reg=1e-2)
    assert summary["ce"]["expressivity"] == pytest.approx(0.8, rel=1e-9)
    assert summary["ls α=0.1"]["expressivity"] == pytest.approx(0.8, rel=1e-9)
    assert summary["ls α=0.1"]["dilation_mae"] < 1e-8
    assert summary["ce"]["dilation_mae"] == pytest.approx(0.05, rel=1e-6)
    assert sum(r["fitted"] for r in rows) == 2
    fig, (ax,) = new_figure(1)
    draw_model_curves(ax, rows)
    assert sorted(line.get_label() for line in ax.get_lines()) == [
        "M-D model, ce (λ̂ = 0.80)",
        "M-D model, ls α=0.1 (λ̂ = 0.80)",
    ]
    import matplotlib.pyplot as plt

    plt.close(fig)
