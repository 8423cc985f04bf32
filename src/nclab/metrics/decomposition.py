"""Han, Papyan & Donoho's decomposition of the regularized MSE loss (ICLR 2022).

For a classifier (W, b) on features h with one-hot targets e_y and ridge parameter λ, the loss

    L(W, b) = ½ · mean_i ‖W h_i + b - e_{y_i}‖² + (λ/2)(‖W‖²_F + ‖b‖²)

splits, for balanced classes, exactly into L = LNC1 + LNC2/3 + L⊥ (Han et al., "Neural collapse
under MSE loss: proximity to and dynamics on the central path", ICLR 2022, Sec. 3; formulas as in
Papyan and Han's public notebook). With M the d x K uncentred class means, μ_G the mean of the
class means, Σ_W the pooled within-class covariance, Σ_B = (1/K) Σ_c (μ_c - μ_G)(μ_c - μ_G)ᵀ and
S_T = Σ_W + Σ_B:

* w_LS = (1/K)(Mᵀ - 1μ_Gᵀ/(1+λ)) (S_T + (λ/(1+λ)) μ_G μ_Gᵀ + λI)^{-1}, the ridge solution;
  b_LS = ((1/K)1 - w_LS μ_G)/(1+λ);
* LNC1 = ½ [tr(w_LS (Σ_W + λI) w_LSᵀ) + λ‖b_LS‖²]  (the within-class part);
* LNC2/3 = (1/2K) ‖w_LS M + b_LS 1ᵀ - I‖²_F  (the class means' distance to exact targets);
* L⊥ = ½ tr((w̄ - w̄_LS) A (w̄ - w̄_LS)ᵀ), w̄ = [W | b],
  A = [[S_T + μ_G μ_Gᵀ + λI, μ_G], [μ_Gᵀ, 1 + λ]]  (the classifier's distance to w_LS).

The notebook sets λ = weight_decay / 2; pass ``weight_decay`` to follow it, or ``lam`` directly.
This is the one metric that forms a d x d matrix (Σ_W); it is accumulated chunk by chunk in
float64.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any

import torch

from nclab.errors import InputTypeError
from nclab.metrics._inputs import (
    as_classifier,
    as_features,
    as_labels,
    check_num_classes,
    infer_num_classes,
)
from nclab.metrics.accumulators import ClassMeans, chunk_rows
from nclab.metrics.options import MetricOptions

__all__ = ["MSEDecomposition", "mse_decomposition"]

_F64 = torch.float64


@dataclass(frozen=True)
class MSEDecomposition:
    """LNC1, LNC2/3 and L⊥ of Han et al. (2022), the ridge parameter used, and the measured loss.

    ``loss`` is L(W, b) evaluated sample by sample; it equals ``lnc1 + lnc23 + lperp`` for
    balanced classes (the decomposition's hypothesis).
    """

    lnc1: float
    lnc23: float
    lperp: float
    loss: float
    lam: float

    def as_dict(self) -> dict[str, float]:
        return {
            "lnc1": self.lnc1,
            "lnc23": self.lnc23,
            "lperp": self.lperp,
            "loss": self.loss,
            "lam": self.lam,
        }


def mse_decomposition(
    features: Any,
    labels: Any,
    weight: Any,
    bias: Any = None,
    *,
    weight_decay: float | None = None,
    lam: float | None = None,
    num_classes: int | None = None,
) -> MSEDecomposition:
    """Decompose the regularized MSE loss of (W, b) on (features, labels) into LNC1 + LNC2/3 + L⊥.

    Parameters
    ----------
    features : (N, d) array or tensor; labels : (N,) integers in 0..K-1.
    weight : W, (K, d); bias : b, (K,), zero when omitted.
    weight_decay : the training weight decay; λ = weight_decay / 2 (Han/Papyan notebook).
    lam : λ directly (give exactly one of ``weight_decay`` and ``lam``); λ >= 0.
    num_classes : K; default max(labels) + 1.

    Returns
    -------
    MSEDecomposition with lnc1, lnc23, lperp, loss and lam.
    """
    if (weight_decay is None) == (lam is None):
        raise ValueError("weight_decay/lam: give exactly one of them")
    name, given = ("weight_decay", weight_decay) if weight_decay is not None else ("lam", lam)
    if isinstance(given, bool) or not isinstance(given, (int, float)):
        raise InputTypeError(f"{name}: expected a number, got {type(given).__name__} {given!r}")
    if not 0.0 <= given < math.inf:
        raise ValueError(f"{name}: expected a finite number >= 0, got {given!r}")
    ridge = float(given) / 2.0 if name == "weight_decay" else float(given)
    h = as_features(features)
    y = as_labels(labels, h.shape[0], h.device)
    k = check_num_classes(infer_num_classes(y, h.shape[0]) if num_classes is None else num_classes)
    means_acc = ClassMeans(k, stage=False)
    means_acc.update(h, y)
    empty = torch.nonzero(means_acc.state()[0][:k] == 0).flatten().tolist()
    if empty:
        raise ValueError(
            f"labels: class(es) {empty} of 0..{k - 1} have no samples; the decomposition needs "
            "every class of the classifier (relabel, or pass the classifier rows of the present "
            "classes with num_classes)"
        )
    stats = means_acc.compute(MetricOptions(global_mean="class"))
    dev, d = stats.means.device, stats.dim
    w, b = as_classifier(weight, bias, k, d, dev)
    b = b if b is not None else torch.zeros(k, dtype=_F64, device=dev)
    means = stats.means
    targets = torch.eye(k, dtype=_F64, device=dev)

    sigma_w = torch.zeros(d, d, dtype=_F64, device=dev)
    sq_err = torch.zeros((), dtype=_F64, device=dev)
    rows = max(1, (1 << 22) // d)
    for hs, ys in chunk_rows(h, y, rows):
        h64 = hs.to(_F64)
        hc = h64 - means.index_select(0, ys)
        sigma_w += hc.T @ hc
        sq_err += (h64 @ w.T + b - targets.index_select(0, ys)).square().sum()
    n = float(stats.num_samples)
    sigma_w /= n
    mu_g = stats.global_mean
    centred = stats.centred_means
    sigma_t = sigma_w + centred.T @ centred / k
    eye = torch.eye(d, dtype=_F64, device=dev)

    lhs = sigma_t + (ridge / (1 + ridge)) * torch.outer(mu_g, mu_g) + ridge * eye
    rhs = (means - mu_g.unsqueeze(0) / (1 + ridge)) / k
    try:
        w_ls = torch.linalg.solve(lhs, rhs.T).T  # lhs is symmetric
    except RuntimeError as err:
        if ridge == 0.0:
            reason = "λ = 0 and the feature covariance is rank deficient; use a positive value"
        else:
            reason = f"λ = {ridge:.3g} is too small next to the feature scale to regularize it"
        raise ValueError(f"{name}: the ridge system is singular ({reason})") from err
    b_ls = (torch.full((k,), 1.0 / k, dtype=_F64, device=dev) - w_ls @ mu_g) / (1 + ridge)

    lnc1 = 0.5 * (torch.trace(w_ls @ (sigma_w + ridge * eye) @ w_ls.T) + ridge * b_ls @ b_ls)
    lnc23 = (w_ls @ means.T + b_ls.unsqueeze(1) - targets).square().sum() / (2 * k)
    a = torch.zeros(d + 1, d + 1, dtype=_F64, device=dev)
    a[:d, :d] = sigma_t + torch.outer(mu_g, mu_g) + ridge * eye
    a[:d, d] = mu_g
    a[d, :d] = mu_g
    a[d, d] = 1 + ridge
    delta = torch.cat([w - w_ls, (b - b_ls).unsqueeze(1)], dim=1)
    lperp = 0.5 * torch.trace(delta @ a @ delta.T)
    loss = 0.5 * sq_err / n + 0.5 * ridge * (w.square().sum() + b.square().sum())
    return MSEDecomposition(
        lnc1=float(lnc1), lnc23=float(lnc23), lperp=float(lperp), loss=float(loss), lam=ridge
    )
