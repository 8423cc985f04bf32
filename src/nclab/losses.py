"""Classification losses, defined once for the UFM solvers and the trainer alike.

For logits z ∈ R^K of a sample with label y (p = softmax(z), e_y the one-hot target):

* ``ce``    cross-entropy            ℓ = -log p_y
* ``mse``   squared error            ℓ = ½ ‖z - e_y‖²  (summed over the K outputs)
* ``ls``    label smoothing (α)      ℓ = -Σ_j q_j log p_j,  q = (1 - α) e_y + α/K · 1
            (Szegedy et al. 2016; the MD paper's α)
* ``focal`` focal loss (γ)           ℓ = -(1 - p_y)^γ log p_y  (Lin et al. 2017)

A batch loss is the mean of ℓ over the samples. :meth:`Loss.equiangular` gives ℓ at the logits
of a neural-collapse solution, where the target logit exceeds every other logit by the same gap
m (the *margin*): the one-dimensional function that the closed forms of the UFM reduce to.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Literal

import torch
import torch.nn.functional as F

__all__ = ["LOSSES", "Loss", "LossName", "make_loss"]

LossName = Literal["ce", "mse", "ls", "focal"]
LOSSES: tuple[str, ...] = ("ce", "mse", "ls", "focal")


@dataclass(frozen=True)
class Loss:
    """A classification loss; see the module docstring for the formulas.

    Parameters
    ----------
    name : ``"ce"``, ``"mse"``, ``"ls"`` or ``"focal"``.
    smoothing : α in [0, 1) for ``ls`` (α = 0 is cross-entropy).
    gamma : γ >= 0 for ``focal`` (γ = 0 is cross-entropy).
    """

    name: str
    smoothing: float = 0.0
    gamma: float = 0.0

    def __post_init__(self) -> None:
        if self.name not in LOSSES:
            raise ValueError(f"loss: expected one of {LOSSES}, got {self.name!r}")
        if not (0.0 <= self.smoothing < 1.0):
            raise ValueError(f"smoothing: expected α in [0, 1), got {self.smoothing!r}")
        if self.smoothing and self.name != "ls":
            raise ValueError(f"smoothing: only the 'ls' loss takes α, got loss {self.name!r}")
        if not (self.gamma >= 0.0 and math.isfinite(self.gamma)):
            raise ValueError(f"gamma: expected γ >= 0, got {self.gamma!r}")
        if self.gamma and self.name != "focal":
            raise ValueError(f"gamma: only the 'focal' loss takes γ, got loss {self.name!r}")

    def per_sample(self, logits: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
        """ℓ for each row of ``logits`` (N, K) with integer ``labels`` (N,)."""
        if self.name == "mse":
            target = F.one_hot(labels, logits.shape[1]).to(logits.dtype)
            return 0.5 * (logits - target).square().sum(1)
        logp = torch.log_softmax(logits, dim=1)
        logp_y = logp.gather(1, labels.unsqueeze(1)).squeeze(1)
        if self.name == "ce":
            return -logp_y
        if self.name == "ls":
            k = logits.shape[1]
            return -(1.0 - self.smoothing) * logp_y - (self.smoothing / k) * logp.sum(1)
        return -((-torch.expm1(logp_y)).pow(self.gamma)) * logp_y

    def __call__(self, logits: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
        """Mean of ℓ over the batch."""
        return self.per_sample(logits, labels).mean()

    def equiangular(self, margin: float, num_classes: int) -> float:
        """ℓ at logits with z_y - z_j = m for every j ≠ y (CE, LS, focal).

        With P = (K-1) e^{-m}: CE = log(1 + P); LS = log(1 + P) + α (K-1) m / K;
        focal = (P/(1+P))^γ log(1 + P).
        """
        k = num_classes
        p_other = (k - 1) * math.exp(-margin)
        ce = math.log1p(p_other)
        if self.name == "ce":
            return ce
        if self.name == "ls":
            return ce + self.smoothing * (k - 1) * margin / k
        if self.name == "focal":
            return (p_other / (1.0 + p_other)) ** self.gamma * ce if self.gamma else ce
        raise ValueError("equiangular: defined for the ce, ls and focal losses, not mse")

    def describe(self) -> str:
        if self.name == "ls":
            return f"ls(α={self.smoothing:g})"
        if self.name == "focal":
            return f"focal(γ={self.gamma:g})"
        return self.name


def make_loss(name: str, *, smoothing: float = 0.0, gamma: float = 0.0) -> Loss:
    """Build a :class:`Loss` by name, validating its parameters."""
    return Loss(name=name, smoothing=float(smoothing), gamma=float(gamma))
