"""Label noise: realized rates within binomial bounds, determinism, the kinds' structure."""

from __future__ import annotations

import math

import pytest
import torch

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
