"""Property-based tests of the metrics' entry points: generated bad and edge inputs (shapes,
dtypes, NaN/Inf, magnitudes 1e±300, label values, degenerate geometries, options of every type).

Each case ends in one of two ways:
* a result whose values are finite, except the documented degenerate values
  (docs/conventions.md, "Degenerate geometries"), each checked against the condition that allows
  it;
* a ValueError (nclab's InputError / InputTypeError are ValueErrors) whose message starts with
  the name of an argument of the call.
Nothing else may escape: no TypeError from numpy, no RuntimeError from torch, no NaN that the
mathematics does not have.

Deterministic (``derandomize=True``, no example database) and bounded: 300 + 200 + 150 + 100 + 100 =
850 cases per run (README, reliability section).
"""

from __future__ import annotations

import math
from typing import Any

import numpy as np
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from nclab.metrics import (
    ClassMeans,
    CollapseAccumulator,
    measure,
    measure_noise,
    mse_decomposition,
)
from nclab.metrics.accumulators import choose_scale_exp

FUZZ = settings(derandomize=True, database=None, deadline=None)

ARGUMENTS = (
    "features", "labels", "weight", "bias", "num_classes", "global_mean", "within_class",
    "center_weights", "rank_rtol", "drop_empty_classes", "unknown metric option", "observed",
    "true", "observed/true", "weight_decay", "lam", "weight_decay/lam", "stats", "dim", "device",
    "mask", "scale_exp",
)  # fmt: skip

MAGNITUDES = st.sampled_from([1.0, 1e-300, 1e-160, 1e-40, 1e40, 1e160, 1e300, 0.0])
SPECIAL = st.sampled_from([math.nan, math.inf, -math.inf, 5e-324, -0.0])


@st.composite
def arrays(draw: Any, rows: int, max_cols: int = 4, special: float = 0.1) -> np.ndarray:
    cols = draw(st.integers(0, max_cols))
    dtype = draw(st.sampled_from(["float64", "float32", "float16", "int64", "bool", "complex"]))
    g = np.random.default_rng(draw(st.integers(0, 2**32 - 1)))
    base = g.normal(size=(rows, cols)) * draw(MAGNITUDES)
    if draw(st.floats(0, 1)) < special and base.size:
        base.flat[draw(st.integers(0, base.size - 1))] = draw(SPECIAL)
    if draw(st.booleans()):  # classes that collapse exactly, or coincide
        base = np.round(base, 0)
    with np.errstate(all="ignore"):
        if dtype == "complex":
            return base.astype(complex)
        return base.astype(dtype)


@st.composite
def labels(draw: Any, rows: int) -> Any:
    kind = draw(
        st.sampled_from(["small", "small", "small", "huge", "negative", "float", "list", "short"])
    )
    g = np.random.default_rng(draw(st.integers(0, 2**32 - 1)))
    k = draw(st.integers(1, 4))
    y = g.integers(0, k, size=rows)
    if kind == "huge" and rows:
        y[0] = draw(st.sampled_from([2**31, 2**40, 2**63 - 1]))
    if kind == "negative" and rows:
        y[0] = -1
    if kind == "float":
        return y.astype(float)
    if kind == "list":
        return y.tolist()
    if kind == "short":
        return y[:-1]
    return y


OPTION_VALUES = {
    "global_mean": st.sampled_from(["sample", "class", "median", 1, None]),
    "within_class": st.sampled_from(["pooled", "class_balanced", "x"]),
    "center_weights": st.sampled_from([True, False, 1, "yes"]),
    "rank_rtol": st.sampled_from([None, 0.0, 1e-3, 0.5, 1.0, -1.0, math.nan, "0.1", True]),
    "drop_empty_classes": st.sampled_from([True, False, 0]),
    "colour": st.just(1),
}


@st.composite
def options(draw: Any) -> dict[str, Any]:
    keys = draw(st.lists(st.sampled_from(sorted(OPTION_VALUES)), max_size=3, unique=True))
    return {k: draw(OPTION_VALUES[k]) for k in keys}


def check_error(err: Exception) -> None:
    assert isinstance(err, ValueError), f"{type(err).__name__}: {err}"
    message = str(err)
    assert message.startswith(ARGUMENTS), message
    assert "\n" not in message.strip(), message


def pair_gap(h: np.ndarray, y: np.ndarray, classes: tuple[int, ...]) -> float:
    """Smallest distance between two measured class means, relative to the largest norm."""
    with np.errstate(all="ignore"):
        means = np.stack([h[y == c].astype(np.float64).mean(0) for c in classes])
        scale = max(float(np.abs(means).max()), 1e-300)
        m = means / scale
        dist = np.sqrt(((m[:, None] - m[None]) ** 2).sum(-1))
    return float(dist[~np.eye(len(classes), dtype=bool)].min())


def check_report(rep: Any, h: np.ndarray, y: np.ndarray, w: Any) -> None:
    values = rep.as_dict()
    allowed: set[str] = set()
    if rep.between_rank == 0 or pair_gap(h, np.asarray(y), rep.classes) < 1e-6:
        allowed |= {"nc1", "nc1_colab", "nc1_trace_ratio", "cdnv", "nc3_duality", "nc3_wh_etf"}
        allowed |= {k for k in values if k.endswith("_means")}
    if float(np.abs(h.astype(np.float64)).max()) > 1e150:  # a trace beyond float64's range
        allowed |= {"within_class_trace", "between_class_trace", "bias_relation"}
    if w is not None:
        rows = np.abs(np.asarray(w, dtype=np.float64)).max(1)
        if (rows == 0).any():
            allowed |= {"nc2_equiangular_weights", "nc2_cos_std_weights"}
        if (rows == 0).all():
            allowed |= {k for k in values if k.endswith("_weights") or k.startswith("nc3")}
        if np.abs(np.asarray(w, dtype=np.float64)).max() > 1e150:
            allowed.add("bias_relation")
    bad = {k: v for k, v in values.items() if not math.isfinite(v) and k not in allowed}
    assert not bad, bad


@st.composite
def valid_case(draw: Any) -> tuple[np.ndarray, np.ndarray, Any, Any, dict[str, Any]]:
    """Data of a classification problem at any magnitude: the results must be finite or a
    documented degenerate value."""
    k = draw(st.integers(2, 4))
    n = draw(st.integers(1, 4))
    d = draw(st.integers(1, 5))
    g = np.random.default_rng(draw(st.integers(0, 2**32 - 1)))
    y = np.repeat(np.arange(k), n)
    spread = draw(st.sampled_from([1.0, 0.1, 0.0]))  # 0: exact collapse
    centres = g.normal(size=(k, d))
    if draw(st.booleans()):
        centres[1] = centres[0]  # two coinciding class means
    h = (centres[y] + spread * g.normal(size=(k * n, d))) * draw(MAGNITUDES.filter(bool))
    with np.errstate(over="ignore"):  # float32 beyond its range: refused by name
        h = h.astype(draw(st.sampled_from(["float64", "float64", "float32"])))
    w = None
    if draw(st.booleans()):
        w = g.normal(size=(k, d)) * draw(MAGNITUDES)
        if draw(st.booleans()):
            w[0] = 0.0
    b = g.normal(size=k) if w is not None and draw(st.booleans()) else None
    opts = {
        "global_mean": draw(st.sampled_from(["sample", "class"])),
        "within_class": draw(st.sampled_from(["pooled", "class_balanced"])),
        "center_weights": draw(st.booleans()),
    }
    return h, y, w, b, opts


@settings(FUZZ, max_examples=300)
@given(valid_case())
def test_measure_of_valid_data_is_finite_or_documented(case: Any) -> None:
    h, y, w, b, opts = case
    try:
        rep = measure(h, y, w, b, **opts)
    except Exception as err:
        check_error(err)
        # float32 input beyond its range is not finite any more: the only refusal allowed
        assert "features: contain NaN or Inf" in str(err) and not np.isfinite(h).all(), err
        return
    check_report(rep, h, y, w)


@settings(FUZZ, max_examples=200)
@given(st.data())
def test_measure_never_crashes_and_never_lies(data: Any) -> None:
    rows = data.draw(st.integers(0, 12))
    h = data.draw(arrays(rows))
    y = data.draw(labels(rows))
    w = data.draw(st.one_of(st.none(), arrays(data.draw(st.integers(0, 5)), special=0.3)))
    b = data.draw(st.one_of(st.none(), arrays(1)))
    b = b[0] if b is not None and b.shape[1] else b
    kwargs = data.draw(options())
    if data.draw(st.booleans()):
        kwargs["num_classes"] = data.draw(st.sampled_from([2, 3, 4, 0, -1, 2.0, 10**12, True]))
    try:
        rep = measure(h, y, w, b, **kwargs)
    except Exception as err:
        check_error(err)
        return
    check_report(rep, h, np.asarray(y), w)


@settings(FUZZ, max_examples=150)
@given(st.data())
def test_streaming_accumulators(data: Any) -> None:
    if data.draw(st.booleans()):
        h, y, w, b, _ = data.draw(valid_case())
        k: Any = int(y.max()) + 1
    else:
        rows = data.draw(st.integers(0, 12))
        h, y, w, b = data.draw(arrays(rows)), np.asarray(data.draw(labels(rows))), None, None
        k = data.draw(st.sampled_from([2, 3, 4, 1, "3"]))
    split = data.draw(st.integers(0, len(y)))
    try:
        means = ClassMeans(
            k, scale_exp=choose_scale_exp(torch.as_tensor(h)) if h.dtype.kind == "f" else 0
        )
        for part in (slice(0, split), slice(split, None)):
            means.update(h[part], y[part])
        acc = CollapseAccumulator(means.compute(), w, b)
        for part in (slice(0, split), slice(split, None)):
            acc.update(h[part], y[part])
        rep = acc.compute()
    except Exception as err:
        check_error(err)
        return
    check_report(rep, h, y, w)


@settings(FUZZ, max_examples=100)
@given(st.data())
def test_measure_noise(data: Any) -> None:
    rows = data.draw(st.integers(0, 12))
    h = data.draw(arrays(rows))
    observed = data.draw(labels(rows))
    true = data.draw(labels(rows))
    try:
        rep = measure_noise(h, observed, true)
    except Exception as err:
        check_error(err)
        return
    values = rep.as_dict()
    noisy = values["noise_rate"] > 0
    degenerate = values["clean_mean_distance"] == 0 or not noisy
    for key, value in values.items():
        if math.isfinite(value):
            continue
        scaled_or_bias = key.endswith("_scaled") or key.startswith("corruption_bias")
        allowed = (
            (degenerate and (scaled_or_bias or key == "memorization"))
            or (key == "clean_nc1")
            or (key == "clean_mean_distance" and np.abs(h).max() > 1e300)
        )
        assert allowed, (key, value, values)


@settings(FUZZ, max_examples=100)
@given(st.data())
def test_mse_decomposition(data: Any) -> None:
    rows = data.draw(st.integers(0, 10))
    h = data.draw(arrays(rows))
    y = data.draw(labels(rows))
    w = data.draw(arrays(data.draw(st.integers(0, 4)), special=0.2))
    ridge = data.draw(st.sampled_from([("weight_decay", 5e-4), ("lam", 0.1), ("lam", 0.0),
                                       ("weight_decay", -1.0), ("lam", math.inf), ("lam", "1")]))  # fmt: skip
    try:
        out = mse_decomposition(h, y, w, **{ridge[0]: ridge[1]})
    except Exception as err:
        check_error(err)
        return
    huge = (
        float(np.abs(h.astype(np.float64)).max(initial=0)) > 1e150
        or float(np.abs(w.astype(np.float64)).max(initial=0)) > 1e150
    )
    for key in ("lnc1", "lnc23", "lperp", "loss"):
        assert math.isfinite(getattr(out, key)) or huge, (key, out)


def test_a_torch_input_on_the_meta_device_is_refused() -> None:
    h = torch.empty(4, 2, device="meta")
    try:
        measure(h, torch.tensor([0, 0, 1, 1]))
    except Exception as err:
        check_error(err)
    else:
        raise AssertionError("meta tensors measured")
