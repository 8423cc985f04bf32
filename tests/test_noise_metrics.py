"""Memorization, dilation and corruption bias against values computed by hand."""

from __future__ import annotations

import math

import numpy as np
import pytest

from nclab.metrics import ClassMeans, MetricOptions, measure
from nclab.metrics.noise import NOISE_METRICS, NoiseAccumulator, NoisyClassMeans, measure_noise

# Clean samples: class 0 at (0,0), (2,0) -> mean (1,0); class 1 at (10,0), (10,2), (10,4) ->
# mean (10,2); class 2 at (0,10). Noisy: a sample of true class 1 labelled 0 at (4,0), and one of
# true class 0 labelled 1 at (1,1). Class 2 has no noisy sample.
FEATS = np.array([[0, 0], [2, 0], [10, 0], [10, 2], [10, 4], [0, 10], [4, 0], [1, 1]], dtype=float)
OBSERVED = np.array([0, 0, 1, 1, 1, 2, 0, 1])
TRUE = np.array([0, 0, 1, 1, 1, 2, 1, 0])
D = (math.sqrt(85) + math.sqrt(101) + math.sqrt(164)) / 3  # mean distance between clean means


def test_hand_computed_values() -> None:
    r = measure_noise(FEATS, OBSERVED, TRUE)
    assert list(r.as_dict()) == list(NOISE_METRICS)  # every key documented, in registry order
    expected = {
        "noise_rate": 2 / 8,
        "memorization": (math.sqrt(40) + 1) / 2,
        "dilation_mean": (1 + 4 / 3 + 0) / 3,
        "dilation_std": math.sqrt(8 / 9) / 3,
        "corruption_bias": (27 + 83) / (2 * math.sqrt(85)),
        "corruption_bias_fraction": (27 / 85 + 83 / 85) / 2,
        "clean_mean_distance": D,
    }
    for key, value in expected.items():
        assert r[key] == pytest.approx(value, rel=1e-14), key
    for key in ("memorization", "dilation_mean", "dilation_std", "corruption_bias"):
        assert r[f"{key}_scaled"] == pytest.approx(expected[key] / D, rel=1e-14)
    clean = OBSERVED == TRUE
    assert r["clean_nc1"] == pytest.approx(measure(FEATS[clean], OBSERVED[clean])["nc1"], rel=1e-14)
    per_class = r.per_class
    assert per_class["memorization"][0] == pytest.approx(1.0)
    assert per_class["memorization"][1] == pytest.approx(math.sqrt(40))
    assert math.isnan(per_class["memorization"][2])  # no noisy sample of true class 2
    assert per_class["dilation_std"] == pytest.approx([0.0, math.sqrt(8 / 9), 0.0], abs=1e-15)
    assert per_class["noisy_count"] == [1.0, 1.0, 0.0]


def test_streaming_and_merging_equal_in_memory() -> None:
    whole = measure_noise(FEATS, OBSERVED, TRUE).as_dict()
    parts = [slice(0, 3), slice(3, 7), slice(7, 8)]
    means = [ClassMeans(3) for _ in parts]
    for m, s in zip(means, parts, strict=True):
        m.update(FEATS[s], OBSERVED[s], mask=OBSERVED[s] == TRUE[s])
    for m in means[1:]:
        means[0].merge(m)
    stats = means[0].compute(MetricOptions(drop_empty_classes=True))
    accs = [NoiseAccumulator(stats) for _ in parts]
    for a, s in zip(accs, parts, strict=True):
        a.update(FEATS[s], OBSERVED[s], TRUE[s])
    for a in accs[1:]:
        accs[0].merge(a)
    streamed = accs[0].compute().as_dict()
    for key, value in whole.items():
        assert streamed[key] == pytest.approx(value, rel=1e-12), key
    other = ClassMeans(3)
    other.update(FEATS + 1.0, OBSERVED, mask=OBSERVED == TRUE)
    stranger = NoiseAccumulator(other.compute(MetricOptions(drop_empty_classes=True)))
    with pytest.raises(ValueError, match="other: built from different clean statistics"):
        accs[0].merge(stranger)


def test_no_noise_and_missing_clean_class() -> None:
    r = measure_noise(FEATS[:6], OBSERVED[:6], TRUE[:6])
    assert r["noise_rate"] == 0.0 and math.isnan(r["memorization"])
    with pytest.raises(ValueError, match=r"labels: class\(es\) \[2\] have no clean sample"):
        measure_noise(FEATS, OBSERVED, np.array([0, 0, 1, 1, 1, 0, 1, 0]))
    with pytest.raises(ValueError, match="true: expected one label per feature row"):
        measure_noise(FEATS, OBSERVED, TRUE[:5])


def test_inputs_are_never_modified() -> None:
    feats = FEATS.copy()
    measure_noise(feats, OBSERVED, TRUE)
    measure(feats, OBSERVED)
    assert np.array_equal(feats, FEATS)


def _direct(h: np.ndarray, obs: np.ndarray, true: np.ndarray, k: int) -> dict[str, float]:
    """The module docstring's definitions, sample by sample (float64)."""
    clean = obs == true
    mu = np.stack([h[clean & (obs == c)].mean(0) for c in range(k)])
    dist = np.linalg.norm(h - mu[true], axis=1)
    noisy = ~clean
    dil = [dist[clean & (obs == c)] for c in range(k)]
    proj, frac = [], []
    for i in np.flatnonzero(noisy):
        delta = mu[true[i]] - mu[obs[i]]
        gap = np.linalg.norm(delta)
        proj.append((h[i] - mu[obs[i]]) @ delta / gap)
        frac.append(proj[-1] / gap)
    return {
        "memorization": float(dist[noisy].mean()),
        "dilation_mean": float(np.mean([d.mean() for d in dil])),
        "dilation_std": float(np.mean([d.std() for d in dil])),
        "corruption_bias": float(np.mean(proj)),
        "corruption_bias_fraction": float(np.mean(frac)),
    }


@pytest.mark.parametrize("k,d", [(7, 3), (5, 12), (10, 40), (150, 20)])
def test_random_problems_match_the_definitions(k: int, d: int) -> None:
    rng = np.random.default_rng(k * d)
    n = 60 * k
    true = rng.integers(0, k, n)
    true[:k] = np.arange(k)  # every class has a clean sample
    obs = true.copy()
    flip = rng.random(n) < 0.3
    flip[:k] = False
    obs[flip] = rng.integers(0, k, flip.sum())
    # Means far from the origin relative to their distances and the spread: a test of
    # cancellation (distances taken from uncentred means would lose ~8 of the 16 digits).
    centres = 1e4 + rng.standard_normal((k, d))
    h = centres[true] + 0.3 * rng.standard_normal((n, d))
    got = measure_noise(h, obs, true, num_classes=k)
    # Both sides are float64 from the same inputs in a different order of operations; centring
    # features of norm ~1e4 near means ~1 apart costs ~4 of the 16 digits, 1e-10 leaves 2.
    for key, value in _direct(h, obs, true, k).items():
        assert got[key] == pytest.approx(value, rel=1e-10), key
    clean = obs == true
    assert got["clean_nc1"] == pytest.approx(measure(h[clean], obs[clean])["nc1"], rel=1e-10)


def test_one_pass_gives_observed_and_clean_means() -> None:
    parts = [slice(0, 3), slice(3, 7), slice(7, 8)]
    shards = [NoisyClassMeans(3) for _ in parts]
    for m, s in zip(shards, parts, strict=True):
        m.update(FEATS[s], OBSERVED[s], TRUE[s])
    for m in shards[1:]:
        shards[0].merge(m)
    observed, clean = shards[0].compute(MetricOptions(global_mean="class"))
    # By observed label: class 0 = (0,0), (2,0) and the noisy (4,0); class 1 = the three clean
    # ones and the noisy (1,1); class 2 = (0,10). Clean: the module's constants above.
    np.testing.assert_allclose(observed.means.numpy(), [[2, 0], [31 / 4, 7 / 4], [0, 10]])
    assert observed.counts.tolist() == [3, 4, 1] and observed.options.global_mean == "class"
    np.testing.assert_allclose(clean.means.numpy(), [[1, 0], [10, 2], [0, 10]])
    assert clean.counts.tolist() == [2, 3, 1] and clean.options.drop_empty_classes
    both = ClassMeans(3)
    both.update(FEATS, OBSERVED)
    np.testing.assert_allclose(
        observed.svd.s.numpy(), both.compute(MetricOptions(global_mean="class")).svd.s.numpy()
    )
    bad = NoisyClassMeans(3)
    bad.update(FEATS, OBSERVED, np.where(TRUE == 2, 3, TRUE))
    with pytest.raises(ValueError, match=r"observed/true: 1 value\(s\) outside the class range"):
        bad.compute()
    with pytest.raises(TypeError, match="other: expected a NoisyClassMeans"):
        bad.merge(both)  # type: ignore[arg-type]
