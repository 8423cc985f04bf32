"""Finite input far from unit scale: the scale laws, and the inputs that must be refused by name.

Every NC quantity is invariant under h -> s·h except the traces (∝ s²), the noise distances (∝ s)
and the bias relation ‖Wμ_G + b‖ (∝ the scale of the logits). float64 features beyond 2^±200 are
multiplied by a power of two inside the accumulators (exact), so the invariant keys agree with unit
scale to the rounding of the unit-scale computation: 1e-9 relative (values ~1e-1 .. 1; near-zero
values such as an ETF distance of 1e-16 are compared absolutely to 1e-12).
"""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch

from nclab.metrics import (
    ClassMeans,
    CollapseAccumulator,
    measure,
    measure_noise,
    mse_decomposition,
)
from nclab.metrics.accumulators import choose_scale_exp

H = np.array([[0, 1], [0.2, 1.1], [1, 0], [1.1, 0.3]])
Y = np.array([0, 0, 1, 1])
W = np.array([[0, 1.0], [1, 0]])
B = np.array([0.1, -0.2])
SQUARED = {"within_class_trace", "between_class_trace"}


def close(a: float, b: float) -> bool:
    return math.isclose(a, b, rel_tol=1e-9, abs_tol=1e-12)


def rich(seed: int = 0) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    g = np.random.default_rng(seed)
    y = np.repeat(np.arange(4), 30)
    h = g.normal(size=(4, 6))[y] + 0.3 * g.normal(size=(120, 6))
    return h, y, g.normal(size=(4, 6)), g.normal(size=4)


@pytest.mark.parametrize("scale", [1e150, 1e-150, 1e160, 1e-160, 1e-200, 1e-310, 1e300])
def test_feature_scale_laws(scale: float) -> None:
    h, y, w, b = rich()
    base = measure(h, y, w, b).as_dict()
    got = measure(h * scale, y, w, b * scale).as_dict()  # logits scale with the features
    for key, value in got.items():
        assert math.isfinite(value) or key in SQUARED or key == "bias_relation", key
        if key in SQUARED:
            expected = base[key] * scale * scale  # may overflow to inf: the true value does
            assert value == pytest.approx(expected, rel=1e-9) or (
                math.isinf(expected) and math.isinf(value)
            ), key
        elif key == "bias_relation":
            assert value == pytest.approx(base[key] * scale, rel=1e-9), key
        else:
            assert close(value, base[key]), (key, value, base[key])


@pytest.mark.parametrize("scale", [1e150, 1e-150, 1e160, 1e-160, 1e300, 1e-300])
def test_classifier_scale_laws(scale: float) -> None:
    h, y, w, b = rich(1)
    base = measure(h, y, w, b).as_dict()
    got = measure(h, y, w * scale, b * scale).as_dict()
    for key, value in got.items():
        expected = base[key] * scale if key == "bias_relation" else base[key]
        assert value == pytest.approx(expected, rel=1e-9, abs=1e-12), key


def test_the_issue_reproducers_are_finite() -> None:
    base = measure(H, Y, W).as_dict()
    for scale in (1e160, 1e-310, 1e-200):
        got = measure(H * scale, Y, W).as_dict()
        for key in (
            "nc1",
            "nc1_trace_ratio",
            "cdnv",
            "nc2_etf_means",
            "nc2_of_means",
            "nc3_duality",
        ):
            assert close(got[key], base[key]), (scale, key)
    got = measure(H, Y, W * 1e160).as_dict()
    for key in ("nc2_equinorm_weights", "nc2_etf_weights", "nc2_of_weights", "nc3_duality"):
        assert close(got[key], base[key]), key


def test_noise_distances_scale_linearly() -> None:
    g = np.random.default_rng(3)
    h, y, _, _ = rich(3)
    observed = y.copy()
    flip = g.random(y.size) < 0.2
    observed[flip] = (y[flip] + 1) % 4
    base = measure_noise(h, observed, y)
    for scale in (1e150, 1e-160, 1e-310):
        got = measure_noise(h * scale, observed, y)
        for key, value in got.as_dict().items():
            linear = key in (
                "memorization",
                "dilation_mean",
                "dilation_std",
                "corruption_bias",
                "clean_mean_distance",
            )
            expected = base[key] * scale if linear else base[key]
            assert value == pytest.approx(expected, rel=1e-9, abs=1e-12), (scale, key)
        assert got.per_class["dilation_mean"] == pytest.approx(
            [v * scale for v in base.per_class["dilation_mean"]], rel=1e-9
        )


def test_streaming_with_a_scale_equals_in_memory() -> None:
    h, y, w, b = rich(2)
    h = h * 1e-140  # traces ~1e-281: representable, but the squares of 2^±200 are not the same
    whole = measure(h, y, w, b).as_dict()
    exp = choose_scale_exp(torch.from_numpy(h))
    assert exp == -math.frexp(float(np.abs(h).max()))[1] and exp > 200
    batches = [(h[i : i + 7], y[i : i + 7]) for i in range(0, len(y), 7)]
    means = ClassMeans(4, scale_exp=exp)
    for hb, yb in batches:
        means.update(hb, yb)
    acc = CollapseAccumulator(means.compute(), w, b)
    for hb, yb in batches:
        acc.update(hb, yb)
    streamed = acc.compute().as_dict()
    for key, value in whole.items():
        assert value == pytest.approx(streamed[key], rel=1e-10, abs=1e-300), key
    other = ClassMeans(4)
    other.update(h[:8], y[:8])
    with pytest.raises(ValueError, match=f"scale_exp {exp} vs 0"):
        means.merge(other)
    with pytest.raises(ValueError, match="scale_exp: expected an integer"):
        ClassMeans(4, scale_exp=0.5)  # type: ignore[arg-type]


# --- degenerate geometries: the documented values (docs/conventions.md) --------------------------


def test_degenerate_values_are_the_documented_ones() -> None:
    coinciding = np.array([[0, 1], [0, 1.2], [0, 1.2], [0, 1.0]])  # both means at (0, 1.1)
    rep = measure(coinciding, Y, W).as_dict()
    assert rep["between_rank"] == 0 and rep["nc1"] == math.inf and rep["cdnv"] == math.inf
    assert math.isnan(rep["nc2_etf_means"]) and math.isnan(rep["nc3_duality"])
    zero_row = measure(H, Y, np.array([[0, 0], [1, 0.0]])).as_dict()
    assert math.isnan(zero_row["nc2_equiangular_weights"])  # cosine with a zero vector
    assert zero_row["nc2_etf_weights"] == pytest.approx(1.0)  # the Gram distance is defined
    noise = measure_noise(np.ones((4, 2)), [0, 1, 1, 1], [0, 1, 0, 1]).as_dict()
    assert noise["clean_mean_distance"] == 0.0 and noise["memorization"] == 0.0
    for key in ("memorization_scaled", "dilation_mean_scaled", "corruption_bias"):
        assert math.isnan(noise[key]), key


# --- input refused by name -------------------------------------------------------------------------


@pytest.mark.parametrize(
    "labels,message",
    [
        ([0, 0, 0, 0], "labels: only one class present"),
        (
            [0, 1, 2**40, 1],
            "labels: the largest label is 1099511627776, which would need K = 1099511627777",
        ),
        ([0, 1, 2**63 - 1, 1], "labels: the largest label is 9223372036854775807"),
    ],
)
def test_labels_that_are_not_class_indices(labels: list[int], message: str) -> None:
    with pytest.raises(ValueError, match="^" + message.replace("(", r"\(")):
        measure(H, np.array(labels))


def test_a_class_count_beyond_memory_is_refused_before_allocating() -> None:
    with pytest.raises(
        ValueError, match=r"^num_classes: 1000000000000 classes of dimension 2 need"
    ):
        measure(H, Y, num_classes=10**12)


@pytest.mark.parametrize(
    "call,error,message",
    [
        (lambda: measure(H, Y, rank_rtol="0.1"), ValueError, "rank_rtol: expected None or a number"),
        (lambda: measure(H, Y, rank_rtol=True), ValueError, "rank_rtol: expected None or a number"),
        (lambda: measure(H, Y, W.astype(bool)), TypeError, "weight: expected real values, got dtype bool"),
        (lambda: measure(H, Y, W, B.astype(bool)), TypeError, "bias: expected real values, got dtype bool"),
        (lambda: CollapseAccumulator(None), TypeError, None),  # type: ignore[arg-type]
        (lambda: ClassMeans(3, device="cuda"), ValueError, "device: 'cuda' requested but CUDA is not available"),
        (lambda: ClassMeans(3, device="meta"), ValueError, "device: the 'meta' device holds no data"),
        (lambda: mse_decomposition(H, Y, W, weight_decay=-1), ValueError, "weight_decay: expected a finite number >= 0, got -1"),
        (lambda: mse_decomposition(H, Y, W, lam="1"), TypeError, "lam: expected a number, got str"),
        (lambda: mse_decomposition(H[:0], Y[:0], W, lam=0.1), ValueError, "labels: empty"),
        (lambda: mse_decomposition(H, [0, 0, 2, 2], np.ones((3, 2)), lam=0.1), ValueError, r"labels: class\(es\) \[1\] of 0..2 have no samples; the decomposition needs"),
    ],
)  # fmt: skip
def test_bad_scalars_and_devices_name_the_argument(
    call: object, error: type, message: str | None
) -> None:
    if torch.cuda.is_available() and message and "CUDA" in message:
        pytest.skip("this machine has CUDA")
    with pytest.raises(error) as info:
        call()  # type: ignore[operator]
    if message is not None:
        assert info.match("^" + message)
    else:
        assert "stats: expected" in str(info.value)


def test_ridge_message_states_the_actual_lambda() -> None:
    flat = np.zeros((4, 3))  # rank-deficient covariance
    with pytest.raises(ValueError, match=r"^lam: the ridge system is singular \(λ = 0 and"):
        mse_decomposition(flat + np.arange(4)[:, None] * [1, 0, 0], Y, np.ones((2, 3)), lam=0.0)


def test_rank_rtol_truncates_the_between_class_pseudo_inverse() -> None:
    """Three class means nearly on a line (second singular value 1e-6 of the first): with the
    default tolerance Σ_B^† inverts the tiny direction; rank_rtol = 1e-3 drops it, and NC1 is
    then (1/K) tr(Σ_W Σ_B^†) with the rank-1 pseudo-inverse (numpy oracle)."""
    g = np.random.default_rng(5)
    centres = np.array([[-1.0, 0, 0], [0.0, 1e-6, 0], [1.0, 0, 0]])
    y = np.repeat(np.arange(3), 40)
    noise = 0.05 * g.normal(size=(120, 3))
    for c in range(3):  # zero-mean noise per class: the class means are the centres exactly
        noise[y == c] -= noise[y == c].mean(0)
    h = centres[y] + noise
    default, truncated = measure(h, y), measure(h, y, rank_rtol=1e-3)
    assert default["between_rank"] == 2 and truncated["between_rank"] == 1
    means = np.stack([h[y == c].mean(0) for c in range(3)])
    centred = means - h.mean(0)
    sigma_w = (h - means[y]).T @ (h - means[y]) / len(y)
    _, s, vt = np.linalg.svd(centred / np.sqrt(3), full_matrices=False)
    pinv1 = vt[:1].T @ np.diag(1 / s[:1] ** 2) @ vt[:1]
    assert truncated["nc1"] == pytest.approx(np.trace(sigma_w @ pinv1) / 3, rel=1e-10)
    assert default["nc1"] > 1e3 * truncated["nc1"]
