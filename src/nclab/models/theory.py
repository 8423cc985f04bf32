"""Closed-form global minimizers of the unconstrained-features model (UFM), standard convention.

Problem (balanced, N = K n samples, W: K x d, H: d x N, optional bias b):

    min (1/N) Σ_i ℓ(W h_i + b, y_i) + (λ_W/2)‖W‖² + (λ_H/2)‖H‖² (+ (λ_b/2)‖b‖²).

Two facts carry every derivation below.

1. *Balance.* Rescaling W -> aW, H -> H/a leaves WH unchanged, so at a minimizer
   λ_W‖W‖² = λ_H‖H‖², and min over factorizations of (λ_W/2)‖W‖² + (λ_H/2)‖H‖² with WH = Z is
   √(λ_W λ_H) ‖Z‖_* (nuclear norm).
2. *Collapse.* For all the losses here, every minimizer has h_i = h̄_{y_i} (Zhu et al. 2021 for
   CE; Zhou et al. 2022 for MSE, label smoothing and focal; Tirer & Bruna 2022 for MSE), so the
   problem reduces to the K class means.

Results (c = K √(n λ_W λ_H) throughout):

* **MSE, no bias** (Tirer & Bruna 2022, Thm 3.1; d >= K). The problem is
  min_Z (1/(2N))‖Z - Y‖² + √(λ_Wλ_H)‖Z‖_*; the K singular values of Y are √n, so singular-value
  soft-thresholding gives WH = (1 - c)_+ Y. For c < 1: class means form an orthogonal frame with
  ‖h̄_k‖² = (1-c)√(λ_W/(nλ_H)), ‖w_k‖² = (1-c)√(nλ_H/λ_W), W ∝ H̄ᵀ, and the value is c - c²/2.
  For c >= 1 the minimizer is W = H = 0, value 1/2.
* **MSE, unregularized bias** (λ_b = 0; d >= K-1). Minimizing over b gives b = 1/K·1 - W μ_G, and
  the H penalty then forces μ_G = 0, so b = 1/K·1. The centred targets Y - 11ᵀ/K have K-1
  singular values √n: WH̃ = (1-c)_+ (Y - 11ᵀ/K), the class means form a simplex ETF with
  ‖h̄_k‖² = (1-c)(K-1)/K·√(λ_W/(nλ_H)), ‖w_k‖² = (1-c)(K-1)/K·√(nλ_H/λ_W), value
  (K-1)/K·(c - c²/2); for c >= 1, W = H = 0 and value (K-1)/(2K).
* **Rescaled MSE** (Hui & Belkin 2021; ``target_scale`` M, ``target_weight`` k): the same two
  cases with the thresholds and values of :func:`mse_prediction` (M = k = 1 gives the above).
* **CE, label smoothing, focal** (d >= K-1; bias optional). The minimizer is a simplex ETF with
  h̄_k = s w_k, s = √(λ_W/(nλ_H)), and logits with a common gap (margin) m between the target and
  every other class. With a = ‖w_k‖, m = s a² K/(K-1) and the penalty is λ_W K a², so

      min_{m >= 0} ℓ(m) + κ m,   κ = (K-1)√(nλ_Wλ_H) = (K-1)c/K,

  ℓ(m) the loss at the equiangular logits (:meth:`nclab.losses.Loss.equiangular`). With
  P = (K-1)e^{-m}, ℓ'(m) = -P/(1+P) for CE, so m = log((K-1)(1-κ)/κ) when κ < (K-1)/K (c < 1)
  and m = 0 (the zero solution) otherwise; for label smoothing ℓ'(m) = -P/(1+P) + α(K-1)/K and
  m = log((K-1)(1-g)/g), g = κ + α(K-1)/K, when g < (K-1)/K; for focal loss the one-dimensional
  problem is solved numerically to machine precision. ‖w_k‖² = m(K-1)/(sK), ‖h̄_k‖² = s²‖w_k‖².
  A regularized bias is 0; an unregularized one is any constant vector (it shifts every logit).
* **Non-negative features, CE and label smoothing** (the positive layer-peeled model of
  Nguyen et al. 2023, MD; d >= K). Non-negative, pairwise-orthogonal class means h̄_k = r e_k
  (disjoint supports) and the centred simplex-ETF classifier W = a(I - 11ᵀ/K) give the gap m = ra.
  Minimizing λ_W(K-1)a²/2 + λ_H N r²/2 at fixed ra = m (equality in AM-GM) leaves

      min_{m >= 0} ℓ(m) + κ₊ m,   κ₊ = √(K(K-1) n λ_W λ_H),

  solved by the same closed forms with κ₊ in place of κ. As the regularization vanishes the CE
  margin grows like log(1/κ₊), without bound, while the label-smoothing margin tends to
  log(1 + K(1-α)/α): this finite margin is the mechanism behind MD's result on label noise.
  ‖h̄_k‖² = r² = m√(λ_W(K-1)/(λ_H N)), ‖w_k‖² = a²(K-1)/K with a² = m√(λ_H N/(λ_W(K-1))).
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Any

from scipy import optimize

from nclab.losses import Loss

__all__ = [
    "Prediction",
    "equiangular_margin",
    "limit_margin_label_smoothing",
    "mse_prediction",
    "nonneg_prediction",
    "softmax_prediction",
]


@dataclass(frozen=True)
class Prediction:
    """What a theorem predicts for a global minimizer.

    Attributes
    ----------
    objective : the optimal value (identical in every convention).
    geometry : ``"simplex_etf"``, ``"orthogonal_frame"`` (of the class means) or ``"zero"``.
    feature_norm_sq : mean over classes of ‖h̄_k‖² (class means of the features).
    weight_norm_sq : mean over classes of ‖w_k‖².
    margin : the common logit gap z_y - z_j (j ≠ y) at the optimum, where defined.
    bias : the value of every bias entry, when the theorem fixes it.
    extra : further predicted quantities (e.g. ``c``, ``kappa``, ``p``).
    """

    objective: float
    geometry: str
    feature_norm_sq: float
    weight_norm_sq: float
    margin: float | None = None
    bias: float | None = None
    extra: dict[str, float] = field(default_factory=dict)

    def as_dict(self) -> dict[str, Any]:
        return {
            "objective": self.objective,
            "geometry": self.geometry,
            "feature_norm_sq": self.feature_norm_sq,
            "weight_norm_sq": self.weight_norm_sq,
            "margin": self.margin,
            "bias": self.bias,
            **self.extra,
        }


def _c(num_classes: int, per_class: int, lambda_w: float, lambda_h: float) -> float:
    return num_classes * math.sqrt(per_class * lambda_w * lambda_h)


def mse_prediction(
    num_classes: int,
    per_class: int,
    lambda_w: float,
    lambda_h: float,
    bias: bool,
    target_scale: float = 1.0,
    target_weight: float = 1.0,
) -> Prediction:
    """MSE UFM without bias (orthogonal frame) or with an unregularized bias (simplex ETF), for
    the rescaled MSE ℓ = ½[k (z_y - M)² + Σ_{j≠y} z_j²] (M = ``target_scale``, k =
    ``target_weight``; M = k = 1 is the plain MSE of the module docstring).

    Derivation (c = K√(nλ_Wλ_H); collapse holds for any convex loss, since each h_i minimizes a
    strictly convex function given W). Over the class-mean logits Z̄ = W H̄ (K x K, any matrix
    when d >= K) the problem is convex: (1/(2K))[k Σ_c (Z̄_cc - M)² + Σ_{j≠c} Z̄_jc²] +
    (c/K)‖Z̄‖_*, and invariant under relabelling the classes, so it has a minimizer of the form
    αI + β11ᵀ, checked by the subgradient conditions:

    * no bias: Z̄ = t I with t = M - c/k when c < kM (value cM - c²/(2k)); else Z̄ = 0 (value
      kM²/2). Class means form an orthogonal frame with ‖h̄_k‖² = t√(λ_W/(nλ_H)),
      ‖w_k‖² = t√(nλ_H/λ_W).
    * unregularized bias: Z̄ = a(I - 11ᵀ/K), b = (c + a)/K·1, with a = M - γ,
      γ = c(k + K - 1)/(kK), when γ < M: value κ(γM - γ²/2), κ = k(K - 1)/(k + K - 1); else
      Z̄ = 0, b = kM/(k + K - 1)·1, value κM²/2. Simplex ETF means with
      ‖h̄_k‖² = (K-1)/K·a√(λ_W/(nλ_H)), ‖w_k‖² = (K-1)/K·a√(nλ_H/λ_W).

    For M = k = 1 these are the formulas of the module docstring (γ = c, κ = (K-1)/K, b = 1/K).
    """
    k, n = num_classes, per_class
    big_m, kw = target_scale, target_weight
    c = _c(k, n, lambda_w, lambda_h)
    if bias:
        kappa = kw * (k - 1) / (kw + k - 1)
        gamma = c * (kw + k - 1) / (kw * k)
        logit_gap = max(0.0, big_m - gamma)
        value = (
            kappa * (gamma * big_m - gamma * gamma / 2.0)
            if gamma < big_m
            else kappa * big_m**2 / 2.0
        )
        bias_value = (c + logit_gap) / k if logit_gap > 0 else kw * big_m / (kw + k - 1)
        scale = (k - 1) / k
    else:
        logit_gap = max(0.0, big_m - c / kw)
        value = c * big_m - c * c / (2.0 * kw) if logit_gap > 0 else kw * big_m**2 / 2.0
        scale = 1.0
    geometry = "zero" if logit_gap == 0.0 else ("simplex_etf" if bias else "orthogonal_frame")
    return Prediction(
        objective=value,
        geometry=geometry,
        feature_norm_sq=scale * logit_gap * math.sqrt(lambda_w / (n * lambda_h))
        if logit_gap
        else 0.0,
        weight_norm_sq=scale * logit_gap * math.sqrt(n * lambda_h / lambda_w) if logit_gap else 0.0,
        bias=bias_value if bias else None,
        extra={"c": c},
    )


def _closed_form_margin(kappa: float, slope: float, num_classes: int) -> float:
    """argmin_{m>=0} log(1 + (K-1)e^{-m}) + (slope + κ) m, slope = α(K-1)/K (0 for CE)."""
    k = num_classes
    g = kappa + slope
    if g >= (k - 1) / k:
        return 0.0
    return math.log((k - 1) * (1.0 - g) / g)


def equiangular_margin(loss: Loss, kappa: float, num_classes: int) -> float:
    """The minimizer m >= 0 of ℓ(m) + κ m for the equiangular loss ℓ of ``loss``.

    Closed form for CE and label smoothing; for focal loss a bracketed scalar minimization (the
    objective exceeds its value at 0 beyond m = ℓ(0)/κ) refined to machine precision.
    """
    k = num_classes
    if loss.name == "ce":
        return _closed_form_margin(kappa, 0.0, k)
    if loss.name == "ls":
        return _closed_form_margin(kappa, loss.smoothing * (k - 1) / k, k)
    if loss.name != "focal":
        raise ValueError(f"loss: no equiangular reduction for {loss.name!r}")

    def f(m: float) -> float:
        return loss.equiangular(m, k) + kappa * m

    upper = loss.equiangular(0.0, k) / kappa
    grid = [upper * i / 4000 for i in range(4001)]
    values = [f(m) for m in grid]
    best = min(range(len(grid)), key=values.__getitem__)
    lo, hi = grid[max(best - 1, 0)], grid[min(best + 1, len(grid) - 1)]
    if best == 0:
        return 0.0 if f(0.0) <= f(grid[1]) else grid[1]
    res = optimize.minimize_scalar(f, bounds=(lo, hi), method="bounded", options={"xatol": 1e-13})
    return float(res.x) if res.fun <= values[best] else grid[best]


def softmax_prediction(
    loss: Loss,
    num_classes: int,
    per_class: int,
    lambda_w: float,
    lambda_h: float,
    bias: bool,
    lambda_b: float,
) -> Prediction:
    """CE / label smoothing / focal UFM: simplex ETF with the margin of the reduced problem."""
    k, n = num_classes, per_class
    kappa = (k - 1) * math.sqrt(n * lambda_w * lambda_h)
    m = equiangular_margin(loss, kappa, k)
    s = math.sqrt(lambda_w / (n * lambda_h))
    # at the zero solution (m = 0) the norms are 0 even where s underflows or overflows
    a_sq = m * (k - 1) / (s * k) if m > 0 else 0.0
    return Prediction(
        objective=loss.equiangular(m, k) + kappa * m,
        geometry="simplex_etf" if m > 0 else "zero",
        feature_norm_sq=s * s * a_sq if m > 0 else 0.0,
        weight_norm_sq=a_sq,
        margin=m,
        bias=0.0 if bias and lambda_b > 0 else None,
        extra={"c": _c(k, n, lambda_w, lambda_h), "kappa": kappa},
    )


def nonneg_prediction(
    loss: Loss, num_classes: int, per_class: int, lambda_w: float, lambda_h: float
) -> Prediction:
    """Non-negative features (MD's positive UFM), CE or label smoothing: orthogonal class means."""
    k, n = num_classes, per_class
    big_n = k * n
    kappa = math.sqrt(k * (k - 1) * n * lambda_w * lambda_h)
    m = equiangular_margin(loss, kappa, k)
    r_sq = m * math.sqrt(lambda_w * (k - 1) / (lambda_h * big_n)) if m > 0 else 0.0
    a_sq = m * math.sqrt(lambda_h * big_n / (lambda_w * (k - 1))) if m > 0 else 0.0
    return Prediction(
        objective=loss.equiangular(m, k) + kappa * m,
        geometry="orthogonal_frame" if m > 0 else "zero",
        feature_norm_sq=r_sq,
        weight_norm_sq=a_sq * (k - 1) / k,
        margin=m,
        extra={"kappa": kappa},
    )


def limit_margin_label_smoothing(smoothing: float, num_classes: int) -> float:
    """log(1 + K(1-α)/α): the label-smoothing margin as the regularization vanishes (finite)."""
    return math.log1p(num_classes * (1.0 - smoothing) / smoothing)
