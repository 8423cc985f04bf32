"""The shared loss module against torch's own definitions and its equiangular reduction."""

from __future__ import annotations

import math

import pytest
import torch
import torch.nn.functional as F

from nclab.losses import make_loss

LOGITS = torch.randn(7, 5, generator=torch.Generator().manual_seed(0), dtype=torch.float64)
LABELS = torch.tensor([0, 1, 2, 3, 4, 0, 2])


def test_losses_match_torch_definitions() -> None:
    assert torch.allclose(make_loss("ce")(LOGITS, LABELS), F.cross_entropy(LOGITS, LABELS))
    ls = make_loss("ls", smoothing=0.2)(LOGITS, LABELS)
    assert torch.allclose(ls, F.cross_entropy(LOGITS, LABELS, label_smoothing=0.2))
    target = F.one_hot(LABELS, 5).double()
    mse = make_loss("mse")(LOGITS, LABELS)
    assert torch.allclose(mse, 0.5 * (LOGITS - target).square().sum() / 7)
    assert torch.allclose(
        make_loss("focal", gamma=0.0)(LOGITS, LABELS), F.cross_entropy(LOGITS, LABELS)
    )
    p = torch.softmax(LOGITS, 1).gather(1, LABELS[:, None]).squeeze(1)
    focal = (-((1 - p) ** 2) * p.log()).mean()
    assert torch.allclose(make_loss("focal", gamma=2.0)(LOGITS, LABELS), focal)


@pytest.mark.parametrize(
    "loss", [make_loss("ce"), make_loss("ls", smoothing=0.3), make_loss("focal", gamma=1.5)]
)
@pytest.mark.parametrize("margin", [0.0, 0.7, 5.0])
def test_equiangular_reduction_equals_the_loss_at_equiangular_logits(loss, margin: float) -> None:
    k = 6
    logits = torch.zeros(k, k, dtype=torch.float64) + margin * torch.eye(k, dtype=torch.float64)
    value = float(loss(logits, torch.arange(k)))
    assert loss.equiangular(margin, k) == pytest.approx(value, rel=1e-14)


def test_loss_parameters_are_validated() -> None:
    with pytest.raises(ValueError, match="loss: expected one of"):
        make_loss("hinge")
    with pytest.raises(ValueError, match=r"smoothing: expected α in \[0, 1\)"):
        make_loss("ls", smoothing=1.0)
    with pytest.raises(ValueError, match="smoothing: only the 'ls' and 'relaxation' losses"):
        make_loss("ce", smoothing=0.1)
    with pytest.raises(ValueError, match="gamma: expected γ >= 0"):
        make_loss("focal", gamma=-1.0)
    with pytest.raises(ValueError, match="equiangular"):
        make_loss("mse").equiangular(1.0, 3)
    assert math.isclose(make_loss("ce").equiangular(0.0, 10), math.log(10))


def test_rescaled_mse_and_label_relaxation() -> None:
    m, k = 3.0, 2.0
    target = F.one_hot(LABELS, 5).double()
    by_hand = 0.5 * ((1 + (k - 1) * target) * (LOGITS - m * target).square()).sum(1).mean()
    rescaled = make_loss("mse", target_scale=m, target_weight=k)(LOGITS, LABELS)
    assert torch.allclose(rescaled, by_hand)
    # Label relaxation with α = 0 is cross-entropy; with α > 0 it vanishes once p_y >= 1 - α.
    assert torch.allclose(make_loss("relaxation")(LOGITS, LABELS), F.cross_entropy(LOGITS, LABELS))
    relax = make_loss("relaxation", smoothing=0.3)
    confident = 10.0 * F.one_hot(LABELS, 5).double()
    assert float(relax(confident, LABELS)) == 0.0
    p = torch.softmax(LOGITS, 1)
    p_y = p.gather(1, LABELS[:, None]).squeeze(1)
    proj = 0.3 * p / (1 - p_y[:, None])
    proj[torch.arange(7), LABELS] = 0.7
    kl = (proj * (proj.log() - p.log())).sum(1)
    expected = torch.where(p_y < 0.7, kl, torch.zeros_like(kl)).mean()
    assert torch.allclose(relax(LOGITS, LABELS), expected)
