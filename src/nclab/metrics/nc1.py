"""NC1, within-class variability collapse, computed without any d x d matrix.

Definitions (features h_i in R^d, labels y_i in 0..K-1, class means μ_c, global mean μ_G,
M̃ the K x d matrix with rows μ_c - μ_G):

* Σ_B = (1/K) M̃ᵀ M̃;  Σ_W = (1/N) Σ_i (h_i - μ_{y_i})(h_i - μ_{y_i})ᵀ (or class-balanced).
* ``nc1`` = (1/K) tr(Σ_W Σ_B^†) (Papyan, Han & Donoho, PNAS 2020, Fig. 6), the pseudo-inverse
  truncated to the numerical rank r <= K-1 of M̃ decided in float64.
* ``nc1_colab`` = tr(Σ_W Σ_B^†) (no 1/K; the widely copied notebook of Papyan et al.).
* ``nc1_trace_ratio`` = tr Σ_W / tr Σ_B (Tirer, Huang & Niles-Weed, ICML 2023, eq. 3).
* ``cdnv`` = mean over c < c' of (σ²_c + σ²_c') / (2 ‖μ_c - μ_c'‖²), σ²_c = mean_{i in c} ‖h_i - μ_c‖²
  (class-distance normalized variance, Galanti, György & Hutter, ICLR 2022).

The identity that avoids d x d matrices: with the thin SVD M̃ = U S Vᵀ truncated to rank r,
Σ_B^† = K V_r S_r^{-2} V_rᵀ, hence

    nc1 = (1/N) Σ_i ‖S_r^{-1} V_rᵀ (h_i - μ_{y_i})‖² = (1/N) ‖H̃ V_r S_r^{-1}‖²_F,

which costs O(N d r) time and O(d K) memory. When M̃ = 0 (all class means equal, r = 0) the
between-class scatter vanishes and NC1 is +inf, or NaN when the within-class scatter is 0 too.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch

__all__ = ["BetweenClassSVD", "between_class_svd", "cdnv", "pair_distances_sq"]


@dataclass(frozen=True)
class BetweenClassSVD:
    """Thin SVD M̃ = U diag(s) Vᵀ (float64) and the numerical rank r used for Σ_B^†.

    ``u`` is K x q, ``s`` has q entries in decreasing order, ``v`` is d x q, q = min(K, d).
    """

    u: torch.Tensor
    s: torch.Tensor
    v: torch.Tensor
    rank: int

    @property
    def basis(self) -> torch.Tensor:
        """P = V_r S_r^{-1} (d x r): NC1 = (1/N) ‖H̃ P‖²_F."""
        return self.v[:, : self.rank] / self.s[: self.rank]


def between_class_svd(
    centred_means: torch.Tensor, rank_rtol: float | None = None
) -> BetweenClassSVD:
    """Thin SVD of M̃ (K x d) in float64, with its rank for the pseudo-inverse of Σ_B.

    The rank is the number of singular values above ``rank_rtol * s_max`` (default
    ``max(K, d) * eps(float64)``, numpy's ``matrix_rank`` rule), capped at K - 1, the rank of
    centred means in exact arithmetic; 0 when M̃ = 0.
    """
    m = centred_means.to(torch.float64)
    k, d = m.shape
    u, s, vh = torch.linalg.svd(m, full_matrices=False)
    rtol = max(k, d) * torch.finfo(torch.float64).eps if rank_rtol is None else rank_rtol
    s_max = float(s[0])
    rank = 0
    if s_max > 0.0 and math.isfinite(s_max):
        rank = min(int((s > rtol * s_max).sum()), k - 1)
    return BetweenClassSVD(u=u, s=s, v=vh.T, rank=rank)


def pair_distances_sq(centred_means: torch.Tensor) -> torch.Tensor:
    """K x K matrix of ‖μ_c - μ_c'‖², from the Gram matrix of the centred means (O(K² d))."""
    g = centred_means @ centred_means.T
    sq = torch.diagonal(g)
    return (sq.unsqueeze(0) + sq.unsqueeze(1) - 2.0 * g).clamp_min(0.0)


def cdnv_matrix(class_variances: torch.Tensor, centred_means: torch.Tensor) -> torch.Tensor:
    """K x K matrix of (σ²_c + σ²_c') / (2 ‖μ_c - μ_c'‖²) (diagonal NaN: a class with itself)."""
    dist = pair_distances_sq(centred_means)
    out = (class_variances.unsqueeze(0) + class_variances.unsqueeze(1)) / (2.0 * dist)
    out.fill_diagonal_(float("nan"))
    return out


def cdnv(class_variances: torch.Tensor, centred_means: torch.Tensor) -> float:
    """Class-distance normalized variance averaged over the K(K-1)/2 pairs of classes.

    cdnv = mean_{c<c'} (σ²_c + σ²_c') / (2 ‖μ_c - μ_c'‖²) (Galanti et al., ICLR 2022); +inf for a
    pair of distinct classes with equal means and positive variance.
    """
    k = class_variances.shape[0]
    dist = pair_distances_sq(centred_means)
    iu = torch.triu_indices(k, k, offset=1, device=dist.device)
    num = class_variances[iu[0]] + class_variances[iu[1]]
    den = 2.0 * dist[iu[0], iu[1]]
    return float((num / den).mean())
