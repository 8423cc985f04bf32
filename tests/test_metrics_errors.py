"""Bad input gets a clear error that names the argument; legal degenerate input does not crash."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from nclab.metrics import ClassMeans, CollapseAccumulator, measure

FEATS = np.arange(24, dtype=np.float64).reshape(6, 4) ** 1.5
LABELS = np.array([0, 1, 2, 0, 1, 2])


@pytest.mark.parametrize(
    "kwargs,error,pattern",
    [
        ({"features": FEATS[:, 0]}, ValueError, r"features: expected a 2-D array"),
        ({"features": FEATS.reshape(6, 2, 2)}, ValueError, r"features: .*reshape"),
        ({"labels": LABELS[:5]}, ValueError, r"labels: expected one label per feature row \(6\)"),
        ({"labels": LABELS.astype(float)}, TypeError, r"labels: expected integer class indices"),
        ({"labels": LABELS.reshape(3, 2)}, ValueError, r"labels: expected a 1-D array"),
        ({"labels": np.array([0, 1, 3, 0, 1, 3])}, ValueError, r"labels: class\(es\) \[2\]"),
        ({"labels": np.array([0, 1, 2, 0, 1, -1])}, ValueError, r"labels: 1 value\(s\) outside"),
        ({"labels": np.zeros(6, dtype=int)}, ValueError, r"labels: only one class present"),
        ({"num_classes": 2}, ValueError, r"labels: 2 value\(s\) outside the class range \[0, 2\)"),
        ({"weight": np.ones((3, 5))}, ValueError, r"weight: expected shape \(num_classes, dim\)"),
        ({"weight": np.ones((2, 4))}, ValueError, r"weight: expected shape"),
        ({"weight": np.ones((3, 4)), "bias": np.ones(2)}, ValueError, r"bias: expected shape"),
        ({"bias": np.ones(3)}, ValueError, r"bias: given without weight"),
        ({"global_mean": "median"}, ValueError, r"global_mean: expected one of"),
        ({"within_class": "x"}, ValueError, r"within_class: expected one of"),
        ({"rank_rtol": -1.0}, ValueError, r"rank_rtol"),
        ({"colour": 1}, TypeError, r"unknown metric option\(s\) \['colour'\]"),
        ({"features": np.array([["a"] * 4] * 6)}, TypeError, r"features: expected a numeric"),
    ],
)
def test_bad_input_names_the_argument(kwargs: dict, error: type, pattern: str) -> None:
    args = {"features": FEATS, "labels": LABELS, **kwargs}
    with pytest.raises(error, match=pattern):
        measure(**args)


@pytest.mark.parametrize("bad", [np.nan, np.inf, -np.inf])
def test_non_finite_features_are_reported(bad: float) -> None:
    feats = FEATS.copy()
    feats[4, 2] = bad
    with pytest.raises(ValueError, match="features: contain NaN or Inf"):
        measure(feats, LABELS)
    w = np.ones((3, 4))
    w[0, 0] = bad
    with pytest.raises(ValueError, match="weight: contains NaN or Inf"):
        measure(FEATS, LABELS, w)


def test_empty_class_can_be_dropped_explicitly() -> None:
    labels = np.array([0, 1, 3, 0, 1, 3])
    w = np.arange(16, dtype=float).reshape(4, 4)
    dropped = measure(FEATS, labels, w, drop_empty_classes=True)
    assert dropped.classes == (0, 1, 3) and dropped.num_classes == 3
    relabelled = measure(FEATS, np.array([0, 1, 2, 0, 1, 2]), w[[0, 1, 3]])
    for key, value in relabelled.as_dict().items():
        assert dropped[key] == pytest.approx(value, rel=1e-12, abs=1e-15), key


def test_second_pass_on_different_data_is_detected() -> None:
    means = ClassMeans(3)
    means.update(FEATS, LABELS)
    acc = CollapseAccumulator(means.compute())
    acc.update(FEATS[:4], LABELS[:4])
    with pytest.raises(ValueError, match="pass 2 saw different data than pass 1"):
        acc.compute()


def test_dimension_change_between_batches_is_an_error() -> None:
    acc = ClassMeans(3)
    acc.update(FEATS, LABELS)
    with pytest.raises(ValueError, match="features: expected 4 columns"):
        acc.update(FEATS[:, :3], LABELS)


def test_accumulator_without_data_and_merge_mismatch() -> None:
    with pytest.raises(ValueError, match="features: no batch"):
        ClassMeans(3).compute()
    with pytest.raises(ValueError, match="other: accumulators disagree"):
        ClassMeans(3).merge(ClassMeans(4))
    with pytest.raises(TypeError, match="num_classes"):
        ClassMeans(2.5)  # type: ignore[arg-type]


def test_half_precision_torch_input_is_accepted() -> None:
    h = torch.tensor(FEATS, dtype=torch.float32).to(torch.bfloat16)
    report = measure(h, torch.tensor(LABELS))
    assert report.num_samples == 6 and np.isfinite(report["nc1"])
