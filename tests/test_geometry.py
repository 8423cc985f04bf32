import math

import pytest
import torch

from nclab.geometry import etf_gram_target, orthogonal_frame, orthogonal_gram_target, simplex_etf


@pytest.mark.parametrize("k,d", [(2, 2), (3, 7), (10, 10), (10, 64)])
def test_simplex_etf_gram_is_scaled_centring_matrix(k: int, d: int) -> None:
    m = simplex_etf(k, d, scale=2.5, generator=torch.Generator().manual_seed(k))
    expected = 2.5**2 * k / (k - 1) * (torch.eye(k, dtype=torch.float64) - 1.0 / k)
    torch.testing.assert_close(m @ m.T, expected, rtol=0, atol=1e-12)
    torch.testing.assert_close(m.sum(0), torch.zeros(d, dtype=torch.float64), rtol=0, atol=1e-12)


def test_orthogonal_frame_and_targets_have_unit_norm() -> None:
    m = orthogonal_frame(5, 9, scale=3.0, generator=torch.Generator().manual_seed(0))
    torch.testing.assert_close(m @ m.T, 9.0 * torch.eye(5, dtype=torch.float64), rtol=0, atol=1e-12)
    for k in (2, 5, 100):
        assert math.isclose(float(torch.linalg.matrix_norm(etf_gram_target(k))), 1.0, rel_tol=1e-12)
        assert math.isclose(
            float(torch.linalg.matrix_norm(orthogonal_gram_target(k))), 1.0, rel_tol=1e-12
        )


def test_geometry_rejects_too_few_dimensions() -> None:
    with pytest.raises(ValueError, match="dim"):
        simplex_etf(10, 5)
    with pytest.raises(ValueError, match="num_classes"):
        orthogonal_frame(1)
