"""Classification losses, defined once for the UFM solvers and the trainer alike.

For logits z ∈ R^K of a sample with label y (p = softmax(z), e_y the one-hot target):

* ``ce``    cross-entropy            ℓ = -log p_y
* ``mse``   squared error            ℓ = ½ ‖z - e_y‖²  (summed over the K outputs)
* ``ls``    label smoothing (α)      ℓ = -Σ_j q_j log p_j,  q = (1 - α) e_y + α/K · 1
            (Szegedy et al. 2016; the MD paper's α)
* ``focal`` focal loss (γ)           ℓ = -(1 - p_y)^γ log p_y  (Lin et al. 2017)
* ``relaxation`` label relaxation (α) ℓ = KL(p^r ‖ p) if p_y < 1 - α, else 0, with the projection
            p^r_y = 1 - α, p^r_j = α p_j / (1 - p_y) (j ≠ y) held constant in the gradient
            (Lienen & Hüllermeier, AAAI 2021)

``mse`` takes the rescaling of Hui & Belkin (ICLR 2021): ℓ = ½[k (z_y - M)² + Σ_{j≠y} z_j²] with
target scale M (``target_scale``) and weight k (``target_weight``); M = k = 1 is ½‖z - e_y‖².

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

LossName = Literal["ce", "mse", "ls", "focal", "relaxation"]
LOSSES: tuple[str, ...] = ("ce", "mse", "ls", "focal", "relaxation")


@dataclass(frozen=True)
class Loss:
    """A classification loss; see the module docstring for the formulas.

    Parameters
    ----------
    name : ``"ce"``, ``"mse"``, ``"ls"``, ``"focal"`` or ``"relaxation"``.
    smoothing : α in [0, 1) for ``ls`` and ``relaxation`` (α = 0 is cross-entropy).
    gamma : γ >= 0 for ``focal`` (γ = 0 is cross-entropy).
    target_scale, target_weight : M > 0 and k > 0 of the rescaled ``mse``.
    """

    name: str
    smoothing: float = 0.0
    gamma: float = 0.0
    target_scale: float = 1.0
    target_weight: float = 1.0

    def __post_init__(self) -> None:
        if self.name not in LOSSES:
            raise ValueError(f"loss: expected one of {LOSSES}, got {self.name!r}")
        if not (0.0 <= self.smoothing < 1.0):
            raise ValueError(f"smoothing: expected α in [0, 1), got {self.smoothing!r}")
        if self.smoothing and self.name not in ("ls", "relaxation"):
            raise ValueError(
                f"smoothing: only the 'ls' and 'relaxation' losses take α, got loss {self.name!r}"
            )
        if not (0 < self.target_scale < math.inf and 0 < self.target_weight < math.inf):
            raise ValueError(
                "target_scale/target_weight: expected finite M > 0 and k > 0, got "
                f"M = {self.target_scale!r}, k = {self.target_weight!r}"
            )
        if (self.target_scale, self.target_weight) != (1.0, 1.0) and self.name != "mse":
            raise ValueError(f"target_scale: only the 'mse' loss is rescaled, got {self.name!r}")
        if not (self.gamma >= 0.0 and math.isfinite(self.gamma)):
            raise ValueError(f"gamma: expected γ >= 0, got {self.gamma!r}")
        if self.gamma and self.name != "focal":
            raise ValueError(f"gamma: only the 'focal' loss takes γ, got loss {self.name!r}")

    def per_sample(self, logits: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
        """ℓ for each row of ``logits`` (N, K) with integer ``labels`` (N,)."""
        if self.name == "mse":
            onehot = F.one_hot(labels, logits.shape[1]).to(logits.dtype)
            weight = 1.0 + (self.target_weight - 1.0) * onehot
            return 0.5 * (weight * (logits - self.target_scale * onehot).square()).sum(1)
        logp = torch.log_softmax(logits, dim=1)
        logp_y = logp.gather(1, labels.unsqueeze(1)).squeeze(1)
        if self.name == "ce":
            return -logp_y
        if self.name == "ls":
            k = logits.shape[1]
            return -(1.0 - self.smoothing) * logp_y - (self.smoothing / k) * logp.sum(1)
        if self.name == "relaxation":
            return self._relaxation(logp, labels, logp_y)
        return -((-torch.expm1(logp_y)).pow(self.gamma)) * logp_y

    def _relaxation(
        self, logp: torch.Tensor, labels: torch.Tensor, logp_y: torch.Tensor
    ) -> torch.Tensor:
        alpha = self.smoothing
        with torch.no_grad():
            p = logp.exp()
            others = (1.0 - p.gather(1, labels.unsqueeze(1))).clamp_min(1e-30)
            target = alpha * p / others
            target.scatter_(1, labels.unsqueeze(1), 1.0 - alpha)
            active = logp_y.exp() < 1.0 - alpha
        kl = (torch.special.xlogy(target, target) - target * logp).sum(1)
        return torch.where(active, kl, torch.zeros_like(kl))

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
        if self.name in ("ls", "relaxation"):
            return f"{self.name}(α={self.smoothing:g})"
        if self.name == "mse" and (self.target_scale, self.target_weight) != (1.0, 1.0):
            return f"mse(M={self.target_scale:g}, k={self.target_weight:g})"
        if self.name == "focal":
            return f"focal(γ={self.gamma:g})"
        return self.name


def make_loss(
    name: str,
    *,
    smoothing: float = 0.0,
    gamma: float = 0.0,
    target_scale: float = 1.0,
    target_weight: float = 1.0,
) -> Loss:
    """Build a :class:`Loss` by name, validating its parameters (numbers, not strings)."""
    given = {
        "smoothing": smoothing,
        "gamma": gamma,
        "target_scale": target_scale,
        "target_weight": target_weight,
    }
    for key, value in given.items():
        if isinstance(value, bool) or not isinstance(value, (int, float)):
            raise ValueError(f"{key}: expected a number, got {type(value).__name__} {value!r}")
    return Loss(
        name=name,
        smoothing=float(smoothing),
        gamma=float(gamma),
        target_scale=float(target_scale),
        target_weight=float(target_weight),
    )
