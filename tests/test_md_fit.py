"""Fitting the M-D model's inverse expressivity to measured memorization and dilation."""

from __future__ import annotations

import csv
from pathlib import Path

import pytest

from nclab.losses import make_loss
from nclab.models.md import MDModel, fit
from nclab.models.md_fit import prediction_error


def test_fit_recovers_the_models_own_expressivity_and_predicts_other_noise_rates() -> None:
    # features of the model's own optimum at λ = 0.7: the measured D / M is λ exactly (the
    # constraint binds), per class too, and the fitted model reproduces the other noise
    # rates' scale-free M and D (prediction error at rounding level)
    lam, kw = 0.7, {"per_class": 10, "lambda_w": 1e-2, "lambda_h": 1e-2}
    m = MDModel(make_loss("ce"), 3, 10, 3, 0.2, lam, 1e-2, 1e-2)
    sol = m.theory()
    fitted = fit((sol.features.T, m.observed(), m.true_labels()), **kw)
    assert fitted.expressivity == pytest.approx(lam, rel=1e-9)
    assert fitted.per_class == pytest.approx([lam] * 3, rel=1e-9)
    assert fitted.noise == pytest.approx(0.2) and fitted.num_classes == 3
    measured = {}
    for eta in (0.1, 0.3):
        other = MDModel(make_loss("ce"), 3, 10, 3, eta, lam, 1e-2, 1e-2).theory()
        measured[eta] = (other.memorization_scaled, other.dilation_scaled)
    err = prediction_error(fitted, measured)
    assert err["max_error"] < 1e-8
    gap = fitted.predict([0.3])[0]
    assert gap["accuracy_gap"] == pytest.approx(gap["ce_test_error"] - gap["ls_test_error"])


def _write_table(run: Path, rows: list[dict[str, object]]) -> None:
    run.mkdir()
    cols = [
        "epoch",
        "split",
        "layer",
        "noise_rate",
        "num_classes",
        "memorization",
        "memorization_scaled",
        "dilation_mean",
        "dilation_mean_scaled",
    ]
    with (run / "metrics.csv").open("w", newline="") as handle:
        writer = csv.DictWriter(handle, fieldnames=cols)
        writer.writeheader()
        writer.writerows(rows)


def test_fit_reads_the_last_train_row_of_a_run(tmp_path: Path) -> None:
    base = {
        "split": "train",
        "noise_rate": 0.18,
        "num_classes": 10,
        "memorization_scaled": 0.9,
        "dilation_mean_scaled": 0.4,
    }
    rows = [
        {**base, "epoch": 1, "layer": "penultimate", "memorization": 2.0, "dilation_mean": 1.0},
        {**base, "epoch": 2, "layer": "penultimate", "memorization": 2.5, "dilation_mean": 1.5},
        {**base, "epoch": 2, "layer": "fc1", "memorization": 1.0, "dilation_mean": 1.0},
        {
            **base,
            "epoch": 2,
            "split": "test",
            "layer": "penultimate",
            "memorization": "",
            "dilation_mean": "",
        },
    ]
    _write_table(tmp_path / "run", rows)
    fitted = fit(tmp_path / "run", layer="penultimate")
    assert fitted.expressivity == pytest.approx(0.6, rel=1e-12)
    assert fitted.noise == 0.18 and fitted.num_classes == 10
    assert "epoch 2, layer penultimate" in fitted.source
    with pytest.raises(
        ValueError, match=r"^layer: .* tracks several layers \['fc1', 'penultimate'\]"
    ):
        fit(tmp_path / "run")
    with pytest.raises(
        ValueError, match=r"^source: .* no train row with memorization for layer 'x'"
    ):
        fit(tmp_path / "run", layer="x")
    with pytest.raises(FileNotFoundError, match=r"^source: .* holds no metrics.csv"):
        fit(tmp_path)


def test_fit_without_memorization_is_refused() -> None:
    m = MDModel(make_loss("ce"), 2, 4, 2, 0.0, 1.0, 1e-2, 1e-2)
    sol = m.theory()
    with pytest.raises(ValueError, match=r"^source: memorization is"):
        fit((sol.features.T, m.observed(), m.true_labels()))
