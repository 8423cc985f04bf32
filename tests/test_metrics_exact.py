"""Exact geometries: zero where theory says zero, the known constants elsewhere."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch

from nclab.geometry import orthogonal_frame, simplex_etf
from nclab.metrics import measure
from nclab.metrics.report import report_keys

# Exact collapse is measured through float64 class means of identical rows: the residual
# h - μ_y is at most a few ulps, so quantities that vanish in exact arithmetic are below 1e-12
# (first-order quantities) and 1e-24 (squared, like NC1).
ZERO_1 = 1e-12
ZERO_2 = 1e-24


def of_vs_etf(k: int) -> float:
    """Distance between the unit-norm orthogonal-frame and simplex-ETF Gram targets."""
    return math.sqrt(2.0 - 2.0 * math.sqrt((k - 1) / k))


@pytest.mark.parametrize("k,d,n", [(2, 3, 4), (4, 4, 7), (10, 32, 5)])
def test_exact_simplex_etf_collapse(k: int, d: int, n: int) -> None:
    etf = simplex_etf(k, d, scale=3.0, generator=torch.Generator().manual_seed(1))
    labels = torch.arange(k).repeat(n)
    r = measure(etf[labels], labels, weight=0.5 * etf, bias=torch.zeros(k)).as_dict()
    assert set(report_keys(with_weight=True)) <= set(r)
    for key in ("nc1", "nc1_colab", "nc1_trace_ratio", "cdnv"):
        assert 0.0 <= r[key] < ZERO_2, key
    for key in (
        "nc2_equinorm_means",
        "nc2_equiangular_means",
        "nc2_cos_std_means",
        "nc2_etf_means",
        "nc2_equinorm_weights",
        "nc2_equiangular_weights",
        "nc2_etf_weights",
        "nc3_wh_etf",
        "bias_relation",
    ):
        assert abs(r[key]) < ZERO_1, key
    assert r["nc3_duality"] < ZERO_2
    assert r["nc2_of_means"] == pytest.approx(of_vs_etf(k), abs=ZERO_1)
    assert r["nc2_of_weights"] == pytest.approx(of_vs_etf(k), abs=ZERO_1)
    assert r["nc4_ncc_mismatch"] == 0.0
    assert r["ncc_accuracy"] == 1.0 and r["classifier_accuracy"] == 1.0
    assert r["between_rank"] == k - 1
    assert r["between_class_trace"] == pytest.approx(9.0, rel=1e-12)


@pytest.mark.parametrize("k,d", [(3, 3), (5, 12)])
def test_exact_orthogonal_frame_collapse(k: int, d: int) -> None:
    s = 2.0
    of = orthogonal_frame(k, d, scale=s, generator=torch.Generator().manual_seed(2))
    labels = torch.arange(k).repeat_interleave(3)
    r = measure(of[labels], labels, weight=of).as_dict()
    # Centred orthogonal-frame means form a simplex ETF; the uncentred ones an orthogonal frame.
    assert r["nc2_etf_means"] < ZERO_1 and r["nc2_of_means"] < ZERO_1
    assert r["nc2_of_weights"] < ZERO_1
    # Uncentred W = OF measured against the ETF target; centring its rows first gives 0.
    assert r["nc2_etf_weights"] == pytest.approx(of_vs_etf(k), abs=ZERO_1)
    centred = measure(of[labels], labels, weight=of, center_weights=True)
    assert centred["nc2_etf_weights"] < ZERO_1
    # ⟨W, M̃⟩ / (‖W‖‖M̃‖) = √((K-1)/K), so duality = 2 - 2√((K-1)/K); W M̃ᵀ = s²(I - 11ᵀ/K).
    assert r["nc3_duality"] == pytest.approx(2 - 2 * math.sqrt((k - 1) / k), abs=ZERO_1)
    assert r["nc3_wh_etf"] < ZERO_1
    # W μ_G = (s²/K) 1, so ‖W μ_G‖ = s²/√K.
    assert r["bias_relation"] == pytest.approx(s**2 / math.sqrt(k), rel=1e-12)
    assert r["nc1"] < ZERO_2 and r["nc4_ncc_mismatch"] == 0.0


def test_weight_metrics_absent_without_weight() -> None:
    etf = simplex_etf(3, 3)
    labels = torch.arange(3).repeat(2)
    r = measure(etf[labels], labels).as_dict()
    assert set(r) >= set(report_keys(with_weight=False))
    for key in ("nc3_duality", "nc4_ncc_mismatch", "nc2_etf_weights", "bias_relation"):
        assert key not in r


def test_all_class_means_equal_gives_documented_infinities() -> None:
    rng = np.random.default_rng(0)
    block = rng.standard_normal((6, 4))
    feats = np.concatenate([block, block])  # two classes with the very same samples
    labels = np.repeat([0, 1], 6)
    r = measure(feats, labels).as_dict()
    assert r["between_rank"] == 0
    assert r["nc1"] == math.inf and r["nc1_trace_ratio"] == math.inf and r["cdnv"] == math.inf
    assert math.isnan(r["nc2_etf_means"])
    collapsed = measure(np.ones((4, 3)), np.array([0, 0, 1, 1])).as_dict()
    assert math.isnan(collapsed["nc1"]) and math.isnan(collapsed["nc1_trace_ratio"])


def test_fewer_dimensions_than_classes_is_measured_on_the_available_rank() -> None:
    rng = np.random.default_rng(3)
    k, d = 6, 2
    feats = rng.standard_normal((k * 20, d)) + np.repeat(4 * rng.standard_normal((k, d)), 20, 0)
    labels = np.repeat(np.arange(k), 20)
    r = measure(feats, labels).as_dict()
    assert r["between_rank"] == d
    hc = feats - np.stack([feats[labels == c].mean(0) for c in range(k)])[labels]
    mt = np.stack([feats[labels == c].mean(0) for c in range(k)]) - feats.mean(0)
    expected = np.trace(hc.T @ hc / len(labels) @ np.linalg.inv(mt.T @ mt / k)) / k
    assert r["nc1"] == pytest.approx(expected, rel=1e-10)
