"""The perturbation-model reproductions (pert-spectrum, pert-central-path, pert-hyperparameters):
registered, their smoke presets run, and their tables hold what the theory says."""

from __future__ import annotations

import csv
import itertools
from pathlib import Path

import pytest

from nclab.errors import InputError
from nclab.experiments import (
    pert_central_path,
    pert_hyperparameters,
    pert_layerwise,
    pert_spectrum,
)
from nclab.experiments.registry import RunOptions, reproductions

NAMES = ("pert-central-path", "pert-hyperparameters", "pert-layerwise", "pert-spectrum")


def rows(path: Path) -> list[dict[str, str]]:
    with path.open() as handle:
        return list(csv.DictReader(handle))


def test_registered_with_smoke_and_cpu_presets() -> None:
    found = reproductions()
    for name in NAMES:
        assert found[name].presets == ("smoke", "cpu")
        assert found[name].paper.startswith("PERT: Tirer, Huang & Niles-Weed")


def test_smoke_presets_write_their_tables_and_figures(tmp_path: Path) -> None:
    # Imported directly: the registry also imports every other reproduction module.
    modules = (pert_central_path, pert_hyperparameters, pert_layerwise, pert_spectrum)
    found = {m.REPRODUCTION.name: m.REPRODUCTION for m in modules}
    results = {name: found[name].run(tmp_path / name, "smoke", RunOptions()) for name in NAMES}
    for result in results.values():
        for png, caption in result.figures:
            assert png.is_file() and png.with_suffix(".pdf").is_file() and caption
        assert all(table.is_file() for table in result.tables)
    # pert-spectrum: every computed singular value equals its closed form (1e-12, float64).
    table = rows(results["pert-spectrum"].tables[0])
    assert len(table) == 3 * 5 * 4  # three λ_H, d n = 20 values each
    for row in table:
        assert abs(float(row["F_kk"]) - float(row["F_kk_theory"])) < 1e-12
        assert abs(float(row["J_kk"]) - float(row["J_kk_theory"])) < 1e-12
        assert abs(float(row["F_inter_max"]) - float(row["F_inter_theory"])) < 1e-9
    # pert-central-path: no violation of Theorem 3.1 on the recorded grid.
    assert "on the recorded grid: 0 " in results["pert-central-path"].notes[0]
    # pert-hyperparameters: attenuation within 5% of the first-order closed form (σ = 1e-3:
    # the second-order error is ~1e-3, the per-seed fluctuation of an isotropic draw a few %).
    for row in rows(results["pert-hyperparameters"].tables[0]):
        assert row["converged"] == "1"
        ratio = float(row["attenuation"]) / float(row["attenuation_theory"])
        assert abs(ratio - 1) < 0.05
        inter = float(row["inter_max_F"]) / float(row["inter_max_theory"])
        assert abs(inter - 1) < 0.05
    # pert-layerwise: the model's minimizer from the previous layer's features has a smaller
    # trace ratio than those features (Corollary 3.2 at the fitted β).
    layers = rows(results["pert-layerwise"].tables[0])
    assert [row["layer"] for row in layers] == ["1", "2", "3"]
    for before, after in itertools.pairwise(layers):
        assert float(after["model_trace_ratio"]) < float(before["trace_ratio"])


def test_unknown_preset_names_the_flag(tmp_path: Path) -> None:
    with pytest.raises(InputError, match="--preset: pert-spectrum has presets"):
        pert_spectrum.REPRODUCTION.run(tmp_path, "gpu", RunOptions())
