"""Normalization conventions of the UFM objectives, mapped exactly onto one internal form.

``standard`` (Zhu et al., NeurIPS 2021; the form nclab solves):

    (1/N) Σ_i ℓ(W h_i + b, y_i) + (λ_W/2)‖W‖² + (λ_H/2)‖H‖² + (λ_b/2)‖b‖²,   N = K n.

``tirer`` (Tirer & Bruna, ICML 2022, as restated by Tirer, Huang & Niles-Weed, ICML 2023):

    (1/(Kn)) Σ_i ℓ(W h_i + b, y_i) + (λ_W/(2K))‖W‖² + (λ_H/(2Kn))‖H‖² + (λ_b/(2K))‖b‖²,

which for MSE is (1/(2Kn))‖WH - Y‖² + .... In the extended model every weight penalty is
λ/(2K) and the feature penalty λ/(2Kn). Both are the same function of (W, H, b) once

    λ_W(standard) = λ_W(tirer)/K,   λ_H(standard) = λ_H(tirer)/(K n),   λ_b(standard) = λ_b(tirer)/K,

so a paper's λ's passed with its convention name give that paper's objective values unchanged.
"""

from __future__ import annotations

import math
from typing import Literal

__all__ = [
    "CONVENTIONS",
    "Convention",
    "check_penalty",
    "to_standard_feature",
    "to_standard_weight",
]

Convention = Literal["standard", "tirer"]
CONVENTIONS: tuple[str, ...] = ("standard", "tirer")


def _check_convention(convention: str) -> None:
    if convention not in CONVENTIONS:
        raise ValueError(f"convention: expected one of {CONVENTIONS}, got {convention!r}")


def check_penalty(name: str, value: float, *, positive: bool) -> float:
    """Validate a regularization strength (positive, or non-negative for a bias)."""
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        raise ValueError(f"{name}: expected a number, got {type(value).__name__} {value!r}")
    value = float(value)
    if not math.isfinite(value) or value < 0.0:
        raise ValueError(f"{name}: expected a non-negative number, got {value!r}")
    if positive and value == 0.0:
        raise ValueError(
            f"{name}: must be > 0 (with no penalty the infimum is approached as the other factor "
            "grows without bound, and no minimizer exists)"
        )
    return value


def to_standard_weight(value: float, convention: str, num_classes: int) -> float:
    """A weight (or bias) penalty λ of ``convention`` expressed in the standard convention."""
    _check_convention(convention)
    return value if convention == "standard" else value / num_classes


def to_standard_feature(value: float, convention: str, num_classes: int, per_class: int) -> float:
    """A feature penalty λ of ``convention`` expressed in the standard convention."""
    _check_convention(convention)
    return value if convention == "standard" else value / (num_classes * per_class)
