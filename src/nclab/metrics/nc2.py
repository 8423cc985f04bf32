"""NC2, convergence of class means and classifier rows to a simplex ETF (or orthogonal frame).

For a K x d matrix A (the centred means M̃ with rows μ_c - μ_G, or the classifier W):

* equinorm  = std_c ‖a_c‖ / mean_c ‖a_c‖, std with the n-1 estimator as in Papyan et al.'s code;
* equiangularity = (1/(K(K-1))) Σ_{c≠c'} |cos(a_c, a_c') + 1/(K-1)|  (Papyan, Han & Donoho 2020);
* cosine spread = std of cos(a_c, a_c') over the K(K-1)/2 pairs c < c' (n-1 estimator; 0 for K=2);
* distance to the simplex ETF ‖G/‖G‖_F - (I - 11ᵀ/K)/√(K-1)‖_F with G = A Aᵀ
  (Zhu et al. 2021; Zhou et al. 2022 centre the rows of W first, option ``center_weights``);
* distance to an orthogonal frame ‖G/‖G‖_F - I/√K‖_F, with G the Gram of the *uncentred* means
  (rows μ_c) or of W (Tirer & Bruna 2022: the MSE UFM without bias).

Both distances lie in [0, 2]; an exact orthogonal frame measured against the ETF target (or the
reverse) gives √(2 - 2√((K-1)/K)). A zero matrix has no direction: its distances are NaN.
"""

from __future__ import annotations

import math

import torch

from nclab.geometry import etf_gram_target, orthogonal_gram_target

__all__ = [
    "cosine_spread",
    "equiangularity",
    "equinorm",
    "etf_distance",
    "orthogonal_distance",
    "unit_scaled",
]


def unit_scaled(t: torch.Tensor) -> torch.Tensor:
    """``t`` times the power of two that brings its largest magnitude into [1/2, 1) (exact).

    Every quantity here is scale-invariant, but Gram matrices square the entries and their
    Frobenius norms square them again: without this, inputs beyond ~1e±77 overflow or vanish.
    """
    if t.numel() == 0:
        return t
    largest = float(t.abs().max())
    if largest == 0.0 or not math.isfinite(largest):
        return t
    exp = -math.frexp(largest)[1]
    half = exp // 2
    return t * (2.0**half) * (2.0 ** (exp - half))


def equinorm(rows: torch.Tensor) -> float:
    """std/mean of the row norms (coefficient of variation, n-1 estimator)."""
    norms = torch.linalg.vector_norm(unit_scaled(rows), dim=1)
    return float(norms.std(correction=1) / norms.mean())


def _cosines(rows: torch.Tensor) -> torch.Tensor:
    rows = unit_scaled(rows)
    unit = rows / torch.linalg.vector_norm(rows, dim=1, keepdim=True)
    cos: torch.Tensor = unit @ unit.T
    return cos


def equiangularity(rows: torch.Tensor) -> float:
    """Mean over c ≠ c' of |cos(a_c, a_c') + 1/(K-1)|; 0 exactly for a simplex ETF."""
    k = rows.shape[0]
    cos = _cosines(rows)
    off = ~torch.eye(k, dtype=torch.bool, device=rows.device)
    return float((cos[off] + 1.0 / (k - 1)).abs().mean())


def cosine_spread(rows: torch.Tensor) -> float:
    """Standard deviation of the pairwise cosines over c < c' (0 when K = 2)."""
    k = rows.shape[0]
    iu = torch.triu_indices(k, k, offset=1, device=rows.device)
    cos = _cosines(rows)[iu[0], iu[1]]
    return float(cos.std(correction=1)) if cos.numel() > 1 else 0.0


def _gram_distance(rows: torch.Tensor, target: torch.Tensor) -> float:
    rows = unit_scaled(rows)
    g = rows @ rows.T
    return float(torch.linalg.matrix_norm(g / torch.linalg.matrix_norm(g) - target))


def etf_distance(rows: torch.Tensor) -> float:
    """‖G/‖G‖_F - (I - 11ᵀ/K)/√(K-1)‖_F for G = rows rowsᵀ."""
    target = etf_gram_target(rows.shape[0], rows.dtype).to(rows.device)
    return _gram_distance(rows, target)


def orthogonal_distance(rows: torch.Tensor) -> float:
    """‖G/‖G‖_F - I/√K‖_F for G = rows rowsᵀ."""
    target = orthogonal_gram_target(rows.shape[0], rows.dtype).to(rows.device)
    return _gram_distance(rows, target)
