"""Label noise, deterministic by seed; the true labels and the noisy mask travel with the data.

Kinds (η = ``rate``, K classes):

* ``symmetric`` — each label is replaced, with probability η, by a label drawn uniformly from all
  K classes (possibly itself), as in the MD paper's code: the expected fraction of labels that
  actually change is η(K-1)/K;
* ``symmetric_flip`` — with probability η, by a label drawn uniformly from the K-1 *other*
  classes: the expected flip rate is η;
* ``pair`` — with probability η, class c becomes (c + 1) mod K (pair / asymmetric flipping,
  Han et al., NeurIPS 2018).

What η counts (``convention``):

* ``redraw`` (default, the MD paper's convention: Nguyen et al., ICLR 2023, arXiv 2206.05530) —
  each sample is hit independently with probability η and its label redrawn as the kind says;
  with ``symmetric`` a redraw may return the true label, so only η(K-1)/K of the labels are
  expected to change;
* ``flip`` — exactly m = ⌊ηN + ½⌋ of the N samples, chosen uniformly at random, get a label other
  than their own (``symmetric`` and ``symmetric_flip`` send it uniformly to one of the K-1 other
  classes, ``pair`` to (c + 1) mod K): the realized flip rate is m / N, within 1/(2N) of η.
"""

from __future__ import annotations

import math
import numbers
from dataclasses import dataclass
from typing import Any

import torch

from nclab.errors import InputError
from nclab.metrics._inputs import as_labels, check_num_classes

__all__ = ["NOISE_CONVENTIONS", "NOISE_KINDS", "NoisyLabels", "corrupt_labels"]

NOISE_KINDS: tuple[str, ...] = ("symmetric", "symmetric_flip", "pair")
NOISE_CONVENTIONS: tuple[str, ...] = ("redraw", "flip")


@dataclass(frozen=True)
class NoisyLabels:
    """Observed (possibly corrupted) labels, the true labels, and the mask observed ≠ true."""

    observed: torch.Tensor
    true: torch.Tensor

    @property
    def noisy(self) -> torch.Tensor:
        return self.observed != self.true

    @property
    def flip_rate(self) -> float:
        """The realized fraction of labels that differ from the truth."""
        return float(self.noisy.to(torch.float64).mean()) if self.true.numel() else 0.0


def corrupt_labels(
    labels: Any,
    num_classes: int,
    rate: float,
    kind: str = "symmetric",
    seed: int = 0,
    convention: str = "redraw",
) -> NoisyLabels:
    """Corrupt ``labels`` (N,) with noise of ``kind`` at rate η = ``rate`` in [0, 1), η counted
    as ``convention`` says (see the module docstring).

    The draw uses its own ``torch.Generator`` seeded with ``seed`` (on the CPU), so the same
    arguments give the same labels on any machine and whatever else uses the global RNG.
    """
    k = check_num_classes(num_classes)
    if kind not in NOISE_KINDS:
        raise InputError(f"kind: expected one of {NOISE_KINDS}, got {kind!r}")
    if convention not in NOISE_CONVENTIONS:
        raise InputError(f"convention: expected one of {NOISE_CONVENTIONS}, got {convention!r}")
    if isinstance(rate, bool) or not isinstance(rate, numbers.Real) or not 0.0 <= rate < 1.0:
        raise InputError(f"rate: expected a noise rate in [0, 1), got {rate!r}")
    if isinstance(seed, bool) or not isinstance(seed, numbers.Integral) or not 0 <= seed < 2**63:
        raise InputError(f"seed: expected an integer in [0, 2**63), got {seed!r}")
    true = as_labels(labels, len(labels), torch.device("cpu"))
    if true.numel() and (int(true.min()) < 0 or int(true.max()) >= k):
        raise InputError(f"labels: expected class indices in [0, {k})")
    gen = torch.Generator().manual_seed(int(seed))
    n = true.numel()
    if convention == "flip":
        hit = torch.zeros(n, dtype=torch.bool)
        hit[torch.randperm(n, generator=gen)[: math.floor(rate * n + 0.5)]] = True
    else:
        hit = torch.rand(n, generator=gen, dtype=torch.float64) < rate
    if kind == "symmetric" and convention == "redraw":
        replacement = torch.randint(0, k, (n,), generator=gen)
    elif kind == "pair":
        replacement = (true + 1) % k
    else:
        replacement = (true + torch.randint(1, k, (n,), generator=gen)) % k
    observed = torch.where(hit, replacement, true)
    return NoisyLabels(observed=observed, true=true)
