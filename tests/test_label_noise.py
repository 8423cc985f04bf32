"""Label noise: realized rates within binomial bounds, determinism, the kinds' structure."""

from __future__ import annotations

import math

import pytest
import torch

from nclab.errors import InputError
from nclab.train.noise import corrupt_labels

N, K, ETA = 20_000, 10, 0.2
LABELS = torch.arange(N) % K


def within_binomial(count: float, n: int, p: float, sigmas: float = 5.0) -> bool:
    """|count - np| <= 5 standard deviations: fails by chance with probability < 1e-6."""
    return abs(count - n * p) <= sigmas * math.sqrt(n * p * (1 - p))


@pytest.mark.parametrize(
    "kind,expected_flip", [("symmetric", ETA * (K - 1) / K), ("symmetric_flip", ETA), ("pair", ETA)]
)
def test_realized_flip_rate_is_binomial(kind: str, expected_flip: float) -> None:
    noisy = corrupt_labels(LABELS, K, ETA, kind=kind, seed=3)
    assert torch.equal(noisy.true, LABELS)
    assert within_binomial(float(noisy.noisy.sum()), N, expected_flip)
    assert noisy.flip_rate == pytest.approx(float(noisy.noisy.sum()) / N)


def test_kinds_send_flips_where_they_should() -> None:
    pair = corrupt_labels(LABELS, K, ETA, kind="pair", seed=0)
    assert torch.equal(pair.observed[pair.noisy], (pair.true[pair.noisy] + 1) % K)
    flip = corrupt_labels(LABELS, K, ETA, kind="symmetric_flip", seed=0)
    from_zero = flip.observed[flip.noisy & (flip.true == 0)]
    counts = torch.bincount(from_zero, minlength=K)
    assert counts[0] == 0  # never to itself
    n0 = from_zero.numel()
    assert all(within_binomial(float(c), n0, 1 / (K - 1)) for c in counts[1:])


def test_determinism_and_validation() -> None:
    a = corrupt_labels(LABELS, K, ETA, seed=7)
    b = corrupt_labels(LABELS, K, ETA, seed=7)
    c = corrupt_labels(LABELS, K, ETA, seed=8)
    assert torch.equal(a.observed, b.observed) and not torch.equal(a.observed, c.observed)
    assert corrupt_labels(LABELS, K, 0.0).flip_rate == 0.0
    with pytest.raises(ValueError, match=r"rate: expected a noise rate in \[0, 1\)"):
        corrupt_labels(LABELS, K, 1.0)
    with pytest.raises(ValueError, match="kind: expected one of"):
        corrupt_labels(LABELS, K, 0.1, kind="asym")
    with pytest.raises(ValueError, match=r"labels: expected class indices in \[0, 5\)"):
        corrupt_labels(LABELS, 5, 0.1)


@pytest.mark.parametrize("kind", ["symmetric", "symmetric_flip", "pair"])
@pytest.mark.parametrize(
    "n,k,eta", [(20_000, 10, 0.2), (7, 2, 0.5), (101, 3, 0.35), (1000, 100, 0.05), (9, 4, 0.0)]
)
def test_flip_convention_flips_exactly_eta(kind: str, n: int, k: int, eta: float) -> None:
    # flip: exactly floor(eta*N + 1/2) labels change (7 * 0.5 = 3.5 -> 4), none to itself.
    labels = torch.arange(n) % k
    noisy = corrupt_labels(labels, k, eta, kind=kind, seed=5, convention="flip")
    assert int(noisy.noisy.sum()) == int(eta * n + 0.5)
    assert abs(noisy.flip_rate - eta) <= 1 / (2 * n)
    if kind == "pair":
        assert torch.equal(noisy.observed[noisy.noisy], (noisy.true[noisy.noisy] + 1) % k)
    again = corrupt_labels(labels, k, eta, kind=kind, seed=5, convention="flip")
    assert torch.equal(noisy.observed, again.observed)


def test_flip_convention_spreads_symmetric_flips_over_the_other_classes() -> None:
    flip = corrupt_labels(LABELS, K, ETA, seed=1, convention="flip")
    from_zero = flip.observed[flip.noisy & (flip.true == 0)]
    counts = torch.bincount(from_zero, minlength=K)
    assert counts[0] == 0
    assert all(within_binomial(float(c), from_zero.numel(), 1 / (K - 1)) for c in counts[1:])


def test_redraw_convention_is_the_default_and_flips_eta_k_minus_1_over_k() -> None:
    # MD's convention: eta of the labels redrawn over all K classes. The counts are those of
    # seed 3 (deterministic); each lies within 5 binomial sigmas of its expectation, 0.18 N for
    # symmetric (eta (K-1)/K) and 0.2 N for the kinds that never redraw a label to itself.
    counts = {"symmetric": 3619, "symmetric_flip": 4027, "pair": 4027}
    for kind, count in counts.items():
        default = corrupt_labels(LABELS, K, ETA, kind=kind, seed=3)
        redraw = corrupt_labels(LABELS, K, ETA, kind=kind, seed=3, convention="redraw")
        assert torch.equal(default.observed, redraw.observed)
        assert int(redraw.noisy.sum()) == count
    assert within_binomial(counts["symmetric"], N, ETA * (K - 1) / K)
    assert within_binomial(counts["pair"], N, ETA)


def test_convention_and_rate_validation() -> None:
    with pytest.raises(InputError, match=r"convention: expected one of \('redraw', 'flip'\)"):
        corrupt_labels(LABELS, K, 0.1, convention="exact")
    for bad in (float("nan"), -0.1, True, "0.1"):
        with pytest.raises(ValueError, match=r"rate: expected a noise rate in \[0, 1\)"):
            corrupt_labels(LABELS, K, bad)  # type: ignore[arg-type]
    for seed in (-1, 2**63, 2**70):
        with pytest.raises(ValueError, match=r"seed: expected an integer in \[0, 2\*\*63\)"):
            corrupt_labels(LABELS, K, 0.1, seed=seed)
