"""Per-class breakdowns of a report against a direct numpy computation, and their consistency
with the overall keys; the notebook representations. Tolerance 1e-10 relative: float64 sums
in a different order."""

from __future__ import annotations

import numpy as np
import pytest

from nclab.metrics import PER_CLASS, measure, measure_batches


def data(seed: int = 0) -> tuple[np.ndarray, ...]:
    g = np.random.default_rng(seed)
    k, d = 5, 7
    y = np.concatenate([np.full(n, c) for c, n in enumerate([11, 20, 7, 15, 9])])
    h = 2.0 * g.normal(size=(k, d))[y] + g.normal(size=(len(y), d))
    return h, y, g.normal(size=(k, d)), g.normal(size=k)


def test_per_class_breakdowns_equal_a_direct_computation() -> None:
    h, y, w, b = data()
    k = 5
    rep = measure(h, y, w, b)
    means = np.stack([h[y == c].mean(0) for c in range(k)])
    mu_g = h.mean(0)
    var = np.array([((h[y == c] - means[c]) ** 2).sum(1).mean() for c in range(k)])
    dist = ((means[:, None] - means[None]) ** 2).sum(-1)
    cdnv_rows = [
        np.mean([(var[c] + var[j]) / (2 * dist[c, j]) for j in range(k) if j != c])
        for c in range(k)
    ]
    ncc = (((h[:, None] - means[None]) ** 2).sum(-1)).argmin(1)
    cls = (h @ w.T + b).argmax(1)
    expected = {
        "count": np.bincount(y),
        "mean_norm": np.linalg.norm(means - mu_g, axis=1),
        "within_variance": var,
        "cdnv": cdnv_rows,
        "ncc_accuracy": [np.mean(ncc[y == c] == c) for c in range(k)],
        "weight_norm": np.linalg.norm(w, axis=1),
        "classifier_accuracy": [np.mean(cls[y == c] == c) for c in range(k)],
        "nc4_ncc_mismatch": [np.mean(cls[y == c] != ncc[y == c]) for c in range(k)],
    }
    assert set(rep.per_class) == set(PER_CLASS) == set(expected)
    for key, value in expected.items():
        assert rep.per_class[key] == pytest.approx(np.asarray(value, float), rel=1e-10), key
    # consistent with the overall keys
    assert rep.per_class["cdnv"].mean() == pytest.approx(rep["cdnv"], rel=1e-12)
    counts = rep.per_class["count"]
    assert (rep.per_class["ncc_accuracy"] * counts).sum() / counts.sum() == pytest.approx(
        rep["ncc_accuracy"]
    )
    assert (rep.per_class["within_variance"] * counts).sum() / counts.sum() == pytest.approx(
        rep["within_class_trace"]
    )


def test_per_class_without_classifier_and_streamed() -> None:
    h, y, _, _ = data(1)
    rep = measure(h, y)
    assert set(rep.per_class) == {"count", "mean_norm", "within_variance", "cdnv", "ncc_accuracy"}
    streamed = measure_batches([(h[i : i + 6], y[i : i + 6]) for i in range(0, len(y), 6)], 5)
    for key, value in rep.per_class.items():
        assert streamed.per_class[key] == pytest.approx(value, rel=1e-10), key
    scaled = measure(h * 1e-170, y)  # the scale laws hold per class too
    assert scaled.per_class["mean_norm"] == pytest.approx(
        rep.per_class["mean_norm"] * 1e-170, rel=1e-10
    )
    assert scaled.per_class["cdnv"] == pytest.approx(rep.per_class["cdnv"], rel=1e-10)


def test_notebook_representations() -> None:
    h, y, w, b = data(2)
    rep = measure(h, y, w, b)
    text = repr(rep)
    assert text.startswith("CollapseReport(K=5, N=62, d=7, nc1=") and "per_class" in text
    page = rep._repr_html_()
    assert page.count("<tr>") == len(rep.as_dict()) + 1  # a header row and one row per key
    assert "(1/K) tr(Σ_W Σ_B^†)" in page and "options: global_mean=sample" in page
