"""The perturbation model (Tirer, Huang & Niles-Weed 2023): objective, W*(H), the reduced
objective and its gradient, the solver, the proximal map, and the central path (Theorem 3.1,
Corollary 3.2)."""

from __future__ import annotations

import math
import warnings

import numpy as np
import pytest
import torch

from nclab.losses import make_loss
from nclab.models import UFM
from nclab.models.perturbation import (
    PerturbationModel,
    collapsed_features,
    optimal_weight,
    reduced_gradient,
    reduced_objective,
)
from nclab.models.perturbation_flow import central_path
from nclab.models.theory import mse_prediction


def random_h0(k: int, n: int, d: int, seed: int, spread: float = 1.0) -> torch.Tensor:
    """Gaussian class means plus Gaussian within-class deviations (scaled by ``spread``)."""
    gen = torch.Generator().manual_seed(seed)
    means = torch.randn(d, k, generator=gen, dtype=torch.float64).repeat_interleave(n, 1)
    return means + spread * torch.randn(d, k * n, generator=gen, dtype=torch.float64)


def test_h0_zero_is_the_plain_ufm_with_lambda_h_plus_beta() -> None:
    k, n, d, lw, lh, beta = 3, 4, 5, 0.5, 0.1, 0.5
    model = PerturbationModel(k, n, d, lw, lh, beta)
    plain = UFM(make_loss("mse"), k, n, d, lw, lh + beta, convention="tirer")
    gen = torch.Generator().manual_seed(0)
    w = torch.randn(k, d, generator=gen, dtype=torch.float64)
    h = torch.randn(d, k * n, generator=gen, dtype=torch.float64)
    # The same function pointwise (to rounding) ...
    assert float(model.objective(w, h)) == pytest.approx(float(plain.objective(w, h)), rel=1e-13)
    # ... and the same minimum: Theorem 2.1 with λ_H + β (c = √(0.6·0.5) < 1). H0 = 0 is a
    # stationary point (W*(0) = 0), so the restarts are what finds the minimum.
    sol = model.solve(restarts=3, tol=1e-12)
    pred = mse_prediction(k, n, lw / k, (lh + beta) / (k * n), bias=False)
    assert sol.converged
    assert sol.objective == pytest.approx(pred.objective, abs=1e-12)


def test_reduced_gradient_matches_autograd() -> None:
    k, n, d, lw, lh = 3, 4, 6, 0.8, 0.2
    h = random_h0(k, n, d, seed=1).requires_grad_(True)
    value = reduced_objective(h, n, lw, lh)  # differentiates through W*(H)
    (auto,) = torch.autograd.grad(value, h)
    closed = reduced_gradient(h.detach(), n, lw, lh)
    assert float((auto - closed).norm() / closed.norm()) < 1e-12
    # W*(H) minimizes f over W: the W-gradient of f vanishes there.
    model = PerturbationModel(k, n, d, lw, lh, 1.0, h.detach())
    w = optimal_weight(h.detach(), n, lw).requires_grad_(True)
    (gw,) = torch.autograd.grad(model.objective(w, h.detach()), w)
    assert float(gw.norm()) < 1e-14


@pytest.mark.parametrize("beta", [0.01, 0.1, 1.0, 100.0])
def test_collapsed_h0_is_its_own_minimizer_for_every_beta(beta: float) -> None:
    """Corollary 2.2: H0 = a minimizer of eq. 1 (same λ's) minimizes f(·; H0) for every β."""
    k, n, d, lw, lh = 3, 3, 5, 1.2, 0.3
    h0 = collapsed_features(k, n, d, lw, lh, seed=2)
    model = PerturbationModel(k, n, d, lw, lh, beta, h0)
    assert float(model.gradient(h0).norm()) < 1e-15
    # From perturbed starts the solver comes back to H0 and no lower value is found.
    sol = model.solve(restarts=3, seed=3, tol=1e-11, init_scale=0.2)
    assert sol.converged
    value_h0 = float(model.objective(model.optimal_weight(h0), h0))
    assert min(sol.restart_objectives) >= value_h0 - 1e-14
    assert float((sol.features - h0).norm()) < 1e-6


def test_standard_convention_maps_exactly() -> None:
    k, n, d = 3, 2, 4
    h0 = random_h0(k, n, d, seed=4)
    paper = PerturbationModel(k, n, d, 0.6, 0.3, 2.0, h0)
    std = PerturbationModel(k, n, d, 0.6 / k, 0.3 / (k * n), 2.0 / (k * n), h0, "standard")
    gen = torch.Generator().manual_seed(5)
    w = torch.randn(k, d, generator=gen, dtype=torch.float64)
    h = torch.randn(d, k * n, generator=gen, dtype=torch.float64)
    assert float(std.objective(w, h)) == pytest.approx(float(paper.objective(w, h)), rel=1e-14)


def test_bad_input_names_the_argument() -> None:
    with pytest.raises(ValueError, match=r"^beta: "):
        PerturbationModel(2, 2, 3, 1.0, 0.1, 0.0)
    with pytest.raises(ValueError, match=r"^h0: expected shape \(d, K n\) = \(3, 4\)"):
        PerturbationModel(2, 2, 3, 1.0, 0.1, 1.0, torch.zeros(3, 5))
    bad = torch.zeros(3, 4, dtype=torch.float64)
    bad[0, 0] = math.nan
    with pytest.raises(ValueError, match=r"^h0: 1 entries are not finite"):
        PerturbationModel(2, 2, 3, 1.0, 0.1, 1.0, bad)
    with pytest.raises(ValueError, match=r"^dim: a collapsed H0 .* needs d >= K = 3"):
        collapsed_features(3, 2, 2, 1.0, 0.1)
    with pytest.raises(ValueError, match=r"^dim: Theorems 2.1 and 4.2 need d >= K"):
        PerturbationModel(3, 2, 2, 1.0, 0.1, 1.0).theory()


@pytest.mark.parametrize("seed", [0, 1, 2])
@pytest.mark.parametrize(("lw", "lh"), [(0.5, 0.0), (1.0, 0.05), (2.0, 0.3)])
def test_theorem_3_1_monotone_quantities(seed: int, lw: float, lh: float) -> None:
    k, n, d = 3, 4, 5
    path = central_path(random_h0(k, n, d, seed), n, lw, lh, 10.0, num_points=40, metrics=False)
    ratio = np.array(path.values["trace_ratio"])
    grow_b = np.array(path.values["exp_trace_b"])
    grow_w = np.array(path.values["exp_trace_w"])
    # Strict: every step of the recorded grid moves by more than the integration error
    # (relative tolerance 1e-10, a few hundred steps: relative error < 1e-7).
    assert np.all(np.diff(ratio) < -1e-7 * ratio[:-1])
    assert np.all(np.diff(grow_b) > 0)
    # Non-strict: never up by more than the integration error.
    assert np.all(np.diff(grow_w) <= 1e-7 * grow_w[:-1])


def test_theorem_3_1_exactly_constant_when_deviations_are_orthogonal_to_the_means() -> None:
    k, n, lw, lh = 3, 4, 1.0, 0.2
    gen = torch.Generator().manual_seed(7)
    means = torch.randn(3, k, generator=gen, dtype=torch.float64)
    dev = torch.randn(3, k, n, generator=gen, dtype=torch.float64)
    dev = dev - dev.mean(2, keepdim=True)
    # Means in coordinates 0..2, deviations in 3..5: orthogonal subspaces.
    h0 = torch.cat([means.repeat_interleave(n, 1), dev.reshape(3, k * n)], 0)
    path = central_path(h0, n, lw, lh, 10.0, num_points=30, metrics=False)
    grow_w = np.array(path.values["exp_trace_w"])
    assert np.max(np.abs(grow_w / grow_w[0] - 1)) < 1e-9
    assert np.all(np.diff(path.values["trace_ratio"]) < 0)


def test_central_path_warns_outside_the_theorem() -> None:
    x = torch.randn(4, 3, 1, dtype=torch.float64)
    h0 = torch.cat([x, -x], 2).reshape(4, 6)  # columns x, -x in every class: all means 0
    with pytest.warns(UserWarning, match="all class means coincide"):
        path = central_path(h0, 2, 1.0, 0.1, 1.0, num_points=3, metrics=False)
    assert path.values["trace_ratio"][0] == math.inf
    with pytest.raises(ValueError, match=r"^t_end: "):
        central_path(h0, 2, 1.0, 0.1, -1.0)


def test_corollary_3_2_and_the_rate_of_the_backward_euler_step() -> None:
    """H_{1/β} has a smaller trace ratio than H0 for β large, and ‖H_{1/β} - H_flow(1/β)‖ =
    O(β⁻²): the local error of one backward-Euler step."""
    k, n, d, lw, lh = 3, 4, 5, 0.7, 0.3
    h0 = random_h0(k, n, d, seed=11)
    ratio0 = central_path(h0, n, lw, lh, 1.0, times=[0.0], metrics=False).values["trace_ratio"][0]
    errors = []
    betas = [50.0, 100.0, 200.0, 400.0]
    for beta in betas:
        model = PerturbationModel(k, n, d, lw, lh, beta, h0)
        h = model.proximal_map(tol=1e-13)
        flow = central_path(h0, n, lw, lh, 1 / beta, times=[0.0, 1 / beta], metrics=False)
        ratio = central_path(h, n, lw, lh, 1.0, times=[0.0], metrics=False).values["trace_ratio"][0]
        assert ratio < ratio0
        errors.append(float(np.linalg.norm(h.numpy() - flow.final)))
    slopes = np.diff(np.log(errors)) / np.diff(np.log(betas))
    # Second order: the slope tends to -2 (the next term is O(β⁻³)); measured -1.98 to -2.00.
    assert np.all(np.abs(slopes + 2) < 0.05), slopes


def test_proximal_map_warns_when_not_converged() -> None:
    model = PerturbationModel(3, 4, 5, 0.7, 0.3, 1.0, random_h0(3, 4, 5, seed=1))
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        model.proximal_map(max_iter=1, tol=1e-14)
    assert any("proximal_map: the solver stopped" in str(w.message) for w in caught)
