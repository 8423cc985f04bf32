"""Han et al.'s MSE decomposition: L = LNC1 + LNC2/3 + L⊥ exactly, and L⊥ = 0 at the ridge solution."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from conftest import gaussian_classes

from nclab.geometry import simplex_etf
from nclab.metrics import mse_decomposition


@pytest.mark.parametrize("k,d,lam", [(3, 5, 0.0), (4, 10, 0.01), (10, 20, 0.5)])
def test_decomposition_sums_to_the_loss_for_balanced_classes(k: int, d: int, lam: float) -> None:
    rng = np.random.default_rng(k)
    feats, labels = gaussian_classes(rng, k, 40, d)
    w, b = rng.standard_normal((k, d)), rng.standard_normal(k)
    dec = mse_decomposition(feats, labels, w, b, lam=lam)
    # An exact algebraic identity for balanced classes: equal up to float64 rounding.
    assert dec.lnc1 + dec.lnc23 + dec.lperp == pytest.approx(dec.loss, rel=1e-10)
    assert min(dec.lnc1, dec.lnc23, dec.lperp) >= 0.0


def test_lperp_vanishes_at_the_ridge_solution_and_weight_decay_halves() -> None:
    rng = np.random.default_rng(0)
    k, d, lam = 4, 6, 0.05
    feats, labels = gaussian_classes(rng, k, 30, d)
    x = np.hstack([feats, np.ones((len(labels), 1))])
    y = np.eye(k)[labels]
    # Ridge regression of one-hot targets on [h, 1]: minimizer of the loss in the docstring.
    wbar = np.linalg.solve(x.T @ x / len(labels) + lam * np.eye(d + 1), x.T @ y / len(labels)).T
    dec = mse_decomposition(feats, labels, wbar[:, :d], wbar[:, d], weight_decay=2 * lam)
    assert dec.lam == lam
    assert dec.lperp == pytest.approx(0.0, abs=1e-13)
    assert dec.lnc1 + dec.lnc23 == pytest.approx(dec.loss, rel=1e-10)


def test_exact_collapse_leaves_only_the_ridge_part_of_lnc1() -> None:
    # With Σ_W = 0, LNC1 = (λ/2)(‖w_LS‖² + ‖b_LS‖²) and w_LS tends to the minimum-norm solution
    # as λ -> 0, so LNC1 is linear in λ near 0: a 100x smaller λ gives a 100x smaller LNC1
    # (to O(λ) relative, here 1e-6).
    k = 5
    etf = simplex_etf(k, 8)
    labels = torch.arange(k).repeat(4)
    small = mse_decomposition(etf[labels], labels, etf, lam=1e-8)
    larger = mse_decomposition(etf[labels], labels, etf, lam=1e-6)
    assert larger.lnc1 / small.lnc1 == pytest.approx(100.0, rel=1e-4)
    assert small.lnc1 + small.lnc23 + small.lperp == pytest.approx(small.loss, rel=1e-10)


def test_decomposition_arguments_are_checked() -> None:
    feats, labels = np.eye(4), np.array([0, 1, 0, 1])
    with pytest.raises(ValueError, match="weight_decay/lam: give exactly one"):
        mse_decomposition(feats, labels, np.ones((2, 4)))
    with pytest.raises(ValueError, match=r"lam: expected a finite number >= 0, got -1\.0"):
        mse_decomposition(feats, labels, np.ones((2, 4)), lam=-1.0)
