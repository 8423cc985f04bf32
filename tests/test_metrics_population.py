"""Gaussian classes around a simplex ETF: the estimates approach their population values.

h = μ_y + σ z, μ_c on a simplex ETF of radius ρ, z ~ N(0, I_d), balanced classes:
NC1 → σ²(K-1)²/(K ρ²), tr Σ_W / tr Σ_B → d σ²/ρ², cdnv → d σ²(K-1)/(2K ρ²).
"""

from __future__ import annotations

import numpy as np
import pytest
import torch

from nclab.experiments.demo import population_nc1, population_trace_ratio
from nclab.geometry import simplex_etf
from nclab.metrics import measure

K, D, SIGMA, RHO = 4, 8, 1.0, 3.0


def sample(per_class: int, seed: int) -> tuple[torch.Tensor, torch.Tensor]:
    gen = torch.Generator().manual_seed(seed)
    means = simplex_etf(K, D, scale=RHO, generator=gen)
    labels = torch.arange(K).repeat_interleave(per_class)
    noise = torch.randn(labels.numel(), D, generator=gen, dtype=torch.float64)
    return means[labels] + SIGMA * noise, labels


def relative_errors(per_class: int, seed: int) -> dict[str, float]:
    r = measure(*sample(per_class, seed)).as_dict()
    pop = {
        "nc1": population_nc1(SIGMA, RHO, K),
        "nc1_trace_ratio": population_trace_ratio(SIGMA, RHO, D),
        "cdnv": D * SIGMA**2 * (K - 1) / (2 * K * RHO**2),
    }
    return {key: abs(r[key] - value) / value for key, value in pop.items()}


def test_estimates_converge_to_population_values() -> None:
    # With N = 80,000 samples the relative standard error of these ratios is about 1% (sampling
    # error of the K-1 projected variances and of the class means); 4% is four standard errors.
    large = relative_errors(20_000, seed=0)
    for key, err in large.items():
        assert err < 0.04, (key, err)
    # And the error shrinks with N: averaged over seeds, 100x the samples gives a smaller error.
    small = [relative_errors(200, seed=s) for s in range(8)]
    big = [relative_errors(20_000, seed=s) for s in range(8)]
    for key in large:
        assert np.mean([e[key] for e in big]) < np.mean([e[key] for e in small]), key


def test_population_constants_match_their_definitions() -> None:
    assert population_nc1(2.0, 1.0, 3) == pytest.approx(4.0 * 4 / 3)
    assert population_trace_ratio(0.5, 2.0, 10) == pytest.approx(10 * 0.25 / 4)
