"""Reference geometries of neural collapse: the simplex ETF and the orthogonal frame.

Conventions (used by every metric and model in nclab):

* A *simplex equiangular tight frame* (ETF) of K vectors in R^d (d >= K-1) is a K x d matrix
  M whose Gram matrix is proportional to the centring matrix, M Mᵀ ∝ I - 11ᵀ/K. Its rows have
  equal norms and pairwise cosines -1/(K-1) (Papyan, Han & Donoho, PNAS 2020).
* An *orthogonal frame* (OF) of K vectors (d >= K) has M Mᵀ ∝ I (the MSE-UFM geometry without
  bias, Tirer & Bruna, ICML 2022).

The *normalized targets* below have unit Frobenius norm, so that the distance
‖G/‖G‖_F - T‖_F of a Gram matrix G to a target T lies in [0, 2].
"""

from __future__ import annotations

import math

import torch

__all__ = [
    "etf_gram_target",
    "orthogonal_frame",
    "orthogonal_gram_target",
    "simplex_etf",
]


def _check_dims(num_classes: int, dim: int, min_dim: int, what: str) -> None:
    if not isinstance(num_classes, int) or num_classes < 2:
        raise ValueError(f"num_classes: expected an integer >= 2, got {num_classes!r}")
    if not isinstance(dim, int) or dim < min_dim:
        raise ValueError(
            f"dim: a {what} of {num_classes} vectors needs dim >= {min_dim}, got {dim!r}"
        )


def _random_orthonormal_columns(
    dim: int, k: int, generator: torch.Generator | None, dtype: torch.dtype
) -> torch.Tensor:
    """A dim x k matrix with orthonormal columns (Haar-distributed when a generator is given)."""
    if generator is None:
        return torch.eye(dim, k, dtype=dtype)
    gauss = torch.randn(dim, k, generator=generator, dtype=torch.float64)
    q, r = torch.linalg.qr(gauss)
    q = q * torch.sign(torch.diagonal(r)).unsqueeze(0)
    result: torch.Tensor = q.to(dtype)
    return result


def simplex_etf(
    num_classes: int,
    dim: int | None = None,
    *,
    scale: float = 1.0,
    generator: torch.Generator | None = None,
    dtype: torch.dtype = torch.float64,
) -> torch.Tensor:
    """Rows of a simplex ETF: a K x d matrix M with M Mᵀ = scale² · K/(K-1) · (I - 11ᵀ/K).

    Every row has norm ``scale`` and every pair of rows has cosine -1/(K-1); the rows sum to 0.
    Built as sqrt(K/(K-1)) · (I - 11ᵀ/K) Uᵀ with U (d x K) orthonormal columns, so it needs
    d >= K; with ``generator`` U is a random rotation, otherwise the first K coordinates.

    Parameters
    ----------
    num_classes : K >= 2.
    dim : ambient dimension d >= K (default K).
    scale : row norm.
    generator : torch random generator for a random orientation.
    dtype : floating dtype of the result.

    Returns
    -------
    torch.Tensor of shape (K, d).
    """
    d = num_classes if dim is None else dim
    _check_dims(num_classes, d, num_classes, "simplex ETF built from an orthogonal frame")
    k = num_classes
    centring = torch.eye(k, dtype=torch.float64) - torch.full((k, k), 1.0 / k, dtype=torch.float64)
    u = _random_orthonormal_columns(d, k, generator, torch.float64)
    m = math.sqrt(k / (k - 1)) * scale * centring @ u.T
    return m.to(dtype)


def orthogonal_frame(
    num_classes: int,
    dim: int | None = None,
    *,
    scale: float = 1.0,
    generator: torch.Generator | None = None,
    dtype: torch.dtype = torch.float64,
) -> torch.Tensor:
    """Rows of an orthogonal frame: a K x d matrix M with M Mᵀ = scale² · I (needs d >= K)."""
    d = num_classes if dim is None else dim
    _check_dims(num_classes, d, num_classes, "orthogonal frame")
    u = _random_orthonormal_columns(d, num_classes, generator, torch.float64)
    return (scale * u.T).to(dtype)


def etf_gram_target(num_classes: int, dtype: torch.dtype = torch.float64) -> torch.Tensor:
    """The unit-norm simplex-ETF Gram target (I - 11ᵀ/K)/sqrt(K-1)."""
    k = num_classes
    centring = torch.eye(k, dtype=dtype) - torch.full((k, k), 1.0 / k, dtype=dtype)
    return centring / math.sqrt(k - 1)


def orthogonal_gram_target(num_classes: int, dtype: torch.dtype = torch.float64) -> torch.Tensor:
    """The unit-norm orthogonal-frame Gram target I/sqrt(K)."""
    return torch.eye(num_classes, dtype=dtype) / math.sqrt(num_classes)
