"""The suite against a direct float64 implementation with d x d matrices (tests/conftest.py)."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from conftest import gaussian_classes, oracle

from nclab.metrics import measure

# Both sides compute in float64 from the same inputs; they differ only in the order of
# operations, so agreement to 1e-9 relative is expected for these well-conditioned problems.
RTOL = 1e-9


@pytest.mark.parametrize(
    "k,counts,d,global_mean,within",
    [
        (2, 30, 5, "sample", "pooled"),
        (5, [10, 20, 30, 40, 50], 12, "sample", "pooled"),
        (5, [10, 20, 30, 40, 50], 12, "class", "class_balanced"),
        (7, [9, 3, 25, 8, 8, 40, 2], 30, "class", "pooled"),
        (10, 15, 8, "sample", "class_balanced"),
        # Many classes: the per-sample runs shorten (~1,250 rows here) so that their K-wide
        # decision matrices stay bounded; 1,600 samples take two runs.
        (200, 8, 32, "sample", "pooled"),
    ],
)
def test_suite_matches_direct_definitions(
    rng: np.random.Generator, k: int, counts: int | list[int], d: int, global_mean: str, within: str
) -> None:
    feats, labels = gaussian_classes(rng, k, counts, d, sigma=0.8)
    w = rng.standard_normal((k, d))
    b = rng.standard_normal(k)
    got = measure(feats, labels, w, b, global_mean=global_mean, within_class=within).as_dict()
    want = oracle(feats, labels, w, b, global_mean=global_mean, within=within)
    for key, value in want.items():
        assert got[key] == pytest.approx(value, rel=RTOL, abs=1e-13), key


@pytest.mark.parametrize("dtype", [np.float16, np.float32, np.float64])
def test_input_precision_is_upcast_before_accumulating(
    rng: np.random.Generator, dtype: type
) -> None:
    feats, labels = gaussian_classes(rng, 4, 50, 6)
    low = feats.astype(dtype)
    got = measure(low, labels)
    want = oracle(low.astype(np.float64), labels)
    assert got["nc1"] == pytest.approx(want["nc1"], rel=RTOL)
    as_torch = measure(torch.from_numpy(low), torch.from_numpy(labels))
    assert as_torch["nc1"] == got["nc1"]


def test_float32_pseudo_inverse_trap_regression(rng: np.random.Generator) -> None:
    """A float32 Σ_B inverted by a default-tolerance pinv keeps rounding-noise eigenvalues.

    The common pattern (Σ_B formed in float32, then ``pinv`` in float64) inflates NC1 by orders
    of magnitude on these features; nclab decides the rank of M̃ in float64 and matches the
    float64 definition.
    """
    k, d = 10, 64
    feats, labels = gaussian_classes(rng, k, 300, d, sigma=1.0, spread=1.0)
    feats32 = (feats + 50.0).astype(np.float32)  # a common offset, as after a ReLU
    mu = np.stack([feats32[labels == c].mean(0) for c in range(k)])
    mt32 = (mu - feats32.mean(0)).astype(np.float32)
    sb32 = (mt32.T @ mt32) / k
    hc = (feats32 - mu[labels]).astype(np.float64)
    sw = hc.T @ hc / len(labels)
    naive = np.trace(sw @ np.linalg.pinv(sb32.astype(np.float64))) / k
    want = oracle(feats32.astype(np.float64), labels)["nc1"]
    got = measure(feats32, labels)["nc1"]
    assert abs(naive - want) > 1e3 * want  # the trap is real on this input
    assert got == pytest.approx(want, rel=1e-7)
