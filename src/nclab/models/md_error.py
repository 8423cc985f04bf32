"""Predicted test error of an M-D solution (our model of how dilation reaches the test set).

Assumption (ours, stated in docs/models.md): a test sample of class k has the feature
t = μ_k + σ_k Q z, with μ_k the clean training mean of class k in the classifier's coordinates,
Q (d x r) an orthonormal basis of the span of the clean class means, z ~ N(0, I_r), and σ_k set
so that the mean radius E‖σ_k Q z‖ = σ_k c_r equals the class's dilation D_k, with

    c_r = E‖z‖ = √2 Γ((r + 1)/2) / Γ(r/2)   (the mean of a chi distribution with r degrees).

The test error is the class average of P(argmax_c (W t + b)_c ≠ k):

* K = 2, exactly: the logit gap (w_k - w_j)ᵀt + b_k - b_j is normal with mean m_k (the clean
  mean's gap) and standard deviation σ_k ‖Qᵀ(w_k - w_j)‖, so the error is Φ(-m_k / that);
* K > 2, by a seeded Monte-Carlo estimate with ``samples`` draws per class; its standard error
  √(p(1 - p)/(K·samples)) is returned with it.

With D_k = 0 the test features sit at the class mean: the error is 0 where the clean margin is
positive (1 where it is negative).
"""

from __future__ import annotations

import math

import torch
from scipy.special import gammaln, ndtr

__all__ = ["chi_mean", "predict_test_error"]

_F64 = torch.float64


def chi_mean(r: int) -> float:
    """E‖z‖ for z ~ N(0, I_r): √2 Γ((r+1)/2)/Γ(r/2)."""
    return math.sqrt(2.0) * math.exp(gammaln((r + 1) / 2) - gammaln(r / 2))


def predict_test_error(
    weight: torch.Tensor,
    bias: torch.Tensor | None,
    means: torch.Tensor,
    dilation: torch.Tensor,
    *,
    samples: int = 100_000,
    seed: int = 0,
) -> tuple[float, float]:
    """(predicted test error, its standard error; 0 when exact) for classifier ``weight``
    (K x d), ``bias`` (K or None), clean class means ``means`` (K x d) and per-class dilations
    ``dilation`` (K), under the Gaussian assumption of the module docstring."""
    w = weight.to(_F64)
    mu = means.to(_F64)
    k = w.shape[0]
    b = torch.zeros(k, dtype=_F64) if bias is None else bias.to(_F64)
    u, s, _ = torch.linalg.svd(mu.T, full_matrices=False)
    rank = int((s > s.max() * 1e-10).sum()) if s.numel() and float(s.max()) > 0 else 0
    basis = u[:, :rank]
    sigma = dilation.to(_F64) / chi_mean(rank) if rank else torch.zeros(k, dtype=_F64)
    logits = mu @ w.T + b
    if k == 2:
        errors = []
        for c in range(2):
            gap = float(logits[c, c] - logits[c, 1 - c])
            spread = float(sigma[c]) * float(torch.linalg.vector_norm(basis.T @ (w[c] - w[1 - c])))
            if spread == 0.0:
                errors.append(0.0 if gap > 0 else 1.0)
            else:
                errors.append(float(ndtr(-gap / spread)))
        return sum(errors) / 2, 0.0
    gen = torch.Generator().manual_seed(seed)
    wrong = 0
    for c in range(k):
        z = torch.randn(samples, max(rank, 1), generator=gen, dtype=_F64)[:, :rank]
        t = mu[c] + float(sigma[c]) * (z @ basis.T)
        wrong += int(((t @ w.T + b).argmax(1) != c).sum())
    p = wrong / (k * samples)
    return p, math.sqrt(p * (1.0 - p) / (k * samples))
