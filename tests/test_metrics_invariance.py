"""Invariances of the suite: rotation, global scale, translation, class relabelling."""

from __future__ import annotations

import numpy as np
import pytest
from conftest import gaussian_classes
from hypothesis import given, settings
from hypothesis import strategies as st

from nclab.metrics import measure

# Every transformation below is exact in real arithmetic; in float64 the metrics move by a few
# ulps times the conditioning of the problem, hence 1e-8 relative (1e-11 absolute for values
# near 0).
RTOL, ATOL = 1e-8, 1e-11

SCALE_VARIANT = {"within_class_trace", "between_class_trace", "bias_relation"}
TRANSLATION_VARIANT = {"nc2_of_means"}

problems = st.tuples(
    st.integers(0, 2**31 - 1), st.integers(2, 6), st.integers(2, 9), st.integers(3, 12)
)


def make(seed: int, k: int, d: int, n: int) -> tuple[np.ndarray, ...]:
    rng = np.random.default_rng(seed)
    feats, labels = gaussian_classes(rng, k, n, d, sigma=0.7)
    w = rng.standard_normal((k, d))
    b = rng.standard_normal(k)
    return feats, labels, w, b, rng


def assert_same(a: dict[str, float], b: dict[str, float], skip: set[str] = frozenset()) -> None:
    assert set(a) == set(b)
    for key in a:
        if key not in skip:
            assert np.isclose(a[key], b[key], rtol=RTOL, atol=ATOL), (key, a[key], b[key])


@settings(max_examples=25, deadline=None)
@given(problems)
def test_rotation_invariance(problem: tuple[int, int, int, int]) -> None:
    feats, labels, w, b, rng = make(*problem)
    q, _ = np.linalg.qr(rng.standard_normal((feats.shape[1], feats.shape[1])))
    base = measure(feats, labels, w, b).as_dict()
    rotated = measure(feats @ q, labels, w @ q, b).as_dict()
    assert_same(base, rotated)


@settings(max_examples=25, deadline=None)
@given(problems, st.floats(1e-3, 1e3))
def test_global_scale_invariance(problem: tuple[int, int, int, int], scale: float) -> None:
    feats, labels, w, _, _ = make(*problem)
    base = measure(feats, labels, w).as_dict()
    scaled = measure(scale * feats, labels, w / scale).as_dict()
    assert_same(base, scaled, SCALE_VARIANT)
    ratio = measure(scale * feats, labels, w)
    assert np.isclose(ratio["within_class_trace"], scale**2 * base["within_class_trace"], rtol=RTOL)


@settings(max_examples=25, deadline=None)
@given(problems)
def test_translation_invariance(problem: tuple[int, int, int, int]) -> None:
    feats, labels, w, b, rng = make(*problem)
    shift = 5.0 * rng.standard_normal(feats.shape[1])
    base = measure(feats, labels, w, b).as_dict()
    # Moving the features by t and the bias by -W t leaves every logit, hence every decision and
    # the bias relation ‖Wμ_G + b‖, unchanged.
    moved = measure(feats + shift, labels, w, b - w @ shift).as_dict()
    assert_same(base, moved, TRANSLATION_VARIANT)


@settings(max_examples=25, deadline=None)
@given(problems)
def test_class_relabelling_invariance(problem: tuple[int, int, int, int]) -> None:
    feats, labels, w, b, rng = make(*problem)
    k = w.shape[0]
    perm = rng.permutation(k)  # class c becomes perm[c]
    inv = np.argsort(perm)
    base = measure(feats, labels, w, b).as_dict()
    relabelled = measure(feats, perm[labels], w[inv], b[inv]).as_dict()
    assert_same(base, relabelled)


def test_nearest_class_centre_decisions_survive_a_large_common_offset() -> None:
    # Features 1e8 from the origin (float64 still resolves them to ~1e-8), classes a few units
    # apart: the NCC scores are formed from centred means, so no decision flips; scores from
    # uncentred means carry ~1 of rounding (‖μ‖² ~ 1e17) and flip those near a boundary.
    rng = np.random.default_rng(7)
    feats, labels = gaussian_classes(rng, 6, 2000, 8, sigma=2.5)
    base = measure(feats, labels)
    far = measure(feats + 1e8, labels)
    assert 0.5 < base["ncc_accuracy"] < 0.99  # many samples near a boundary
    assert far["ncc_accuracy"] == base["ncc_accuracy"]
    # The shifted features themselves are rounded to ~1e-8 absolute: NC1 moves by ~1e-8.
    assert far["nc1"] == pytest.approx(base["nc1"], rel=1e-6)
