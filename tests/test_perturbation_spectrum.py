"""Response operators of the perturbation model: F (eq. 5) and J (exact), their block spectra
against a dense computation (autograd Hessian), Theorem 4.2, the complete closed-form spectrum,
the O(β⁻²) gap, and J against a finite-difference Jacobian of the solver.

Tolerances: the closed forms against dense eigen/singular values 1e-12 absolute (the values are
O(1) and the dense problems have at most 150 unknowns: float64 rounding gives ~1e-15); Lanczos
(ARPACK relative residual 1e-10) against dense 1e-9."""

from __future__ import annotations

import warnings

import numpy as np
import pytest
import torch

from nclab.models.perturbation import PerturbationModel, collapsed_features, reduced_objective
from nclab.models.perturbation_spectrum import collapsed_spectrum, response_operators


def dense_hessian(h: torch.Tensor, n: int, lw: float, lh: float) -> np.ndarray:
    """Kn ∇²L(H) in vec (column-stacked) coordinates, by autograd through W*(H)."""
    d, big_n = h.shape

    def fn(x: torch.Tensor) -> torch.Tensor:
        return reduced_objective(x.reshape(big_n, d).T, n, lw, lh)

    hess = torch.autograd.functional.hessian(fn, h.T.reshape(-1).clone())
    return big_n * hess.numpy()


def blocks(mat: np.ndarray, size: int, k: int, j: int) -> np.ndarray:
    return mat[k * size : (k + 1) * size, j * size : (j + 1) * size]


def noisy_minimizer(k: int, n: int, d: int, lw: float, lh: float, beta: float) -> torch.Tensor:
    h0 = collapsed_features(k, n, d, lw, lh, seed=1)
    gen = torch.Generator().manual_seed(2)
    h0 = h0 + 0.3 * torch.randn(h0.shape, generator=gen, dtype=torch.float64)
    sol = PerturbationModel(k, n, d, lw, lh, beta, h0).solve(tol=1e-13)
    assert sol.converged
    return sol.features


@pytest.mark.parametrize("collapsed", [True, False])
def test_structured_blocks_equal_the_dense_operators(collapsed: bool) -> None:
    k, n, d, lw, lh, beta = 3, 3, 5, 0.7, 0.3, 4.0
    if collapsed:
        h = collapsed_features(k, n, d, lw, lh, seed=1)
    else:
        h = noisy_minimizer(k, n, d, lw, lh, beta)
    m = dense_hessian(h, n, lw, lh)
    dn, size = d * n, d * k * n
    f = np.eye(size) - m / beta
    j = beta * np.linalg.inv(m + beta * np.eye(size))
    ops = response_operators(h, n, lw, lh, beta)
    for kk, ll in [(0, 0), (1, 1), (1, 0), (0, 2)]:
        assert np.abs(ops.dense_block("F", kk, ll) - blocks(f, dn, kk, ll)).max() < 1e-12
        assert np.abs(ops.dense_block("J", kk, ll) - blocks(j, dn, kk, ll)).max() < 1e-12


def test_eq5_as_printed_is_i_minus_the_hessian_over_beta() -> None:
    """Their eq. 5 built literally (Z*, E*) equals I - Kn∇²L/β at a non-collapsed minimizer."""
    k, n, d, lw, lh, beta = 2, 3, 4, 0.9, 0.2, 3.0
    h = noisy_minimizer(k, n, d, lw, lh, beta).numpy()
    y = np.repeat(np.eye(k), n, axis=1)
    w = y @ h.T @ np.linalg.inv(h @ h.T + n * lw * np.eye(d))
    res = w @ h - y
    cols = []
    for i in range(d):  # E*'s columns: e_{d,i} e_{K,k}ᵀ (WH - Y), k fastest
        for c in range(k):
            e = np.zeros((d, k))
            e[i, c] = 1.0
            cols.append((e @ res).T.reshape(-1))
    e_star = np.stack(cols, 1)
    u = e_star.T + np.kron(h, w)
    z = u.T @ np.linalg.solve(np.kron(h @ h.T, np.eye(k)) + n * lw * np.eye(d * k), u)
    size = d * k * n
    eq5 = (1 - lh / beta) * np.eye(size) - np.kron(np.eye(n * k), w.T @ w) / beta + z / beta
    m = dense_hessian(torch.from_numpy(h), n, lw, lh)
    assert np.abs(eq5 - (np.eye(size) - m / beta)).max() < 1e-12


CASES = [
    # (K, n, d, λ_W, λ_H, β): generic; c = 1/2 (values merge); c = 3/4; d = K; n = 1;
    # β below √(λ_H/λ_W) (sign changes); c > 1 (the collapsed minimizer is 0).
    (3, 3, 5, 0.7, 0.3, 5.0),
    (3, 3, 5, 1.0, 0.25, 5.0),
    (2, 4, 4, 1.0, 0.5625, 3.0),
    (3, 3, 3, 0.7, 0.3, 5.0),
    (3, 1, 5, 0.7, 0.3, 5.0),
    (3, 3, 5, 0.2, 0.8, 0.5),
    (2, 3, 4, 2.0, 1.0, 5.0),
]


@pytest.mark.parametrize(("k", "n", "d", "lw", "lh", "beta"), CASES)
def test_complete_spectrum_closed_forms_against_dense(
    k: int, n: int, d: int, lw: float, lh: float, beta: float
) -> None:
    h = collapsed_features(k, n, d, lw, lh, seed=3)
    m = dense_hessian(h, n, lw, lh)
    dn, size = d * n, d * k * n
    f = np.eye(size) - m / beta
    j = beta * np.linalg.inv(m + beta * np.eye(size))
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # the cases outside Theorem 4.2 warn (tested below)
        th = collapsed_spectrum(k, n, d, lw, lh, beta)
    for which, op in (("F", f), ("J", j)):
        dense = np.sort(np.linalg.svd(blocks(op, dn, 0, 0), compute_uv=False))[::-1]
        assert len(th.values(which)) == dn
        assert np.abs(dense - np.array(th.values(which))).max() < 1e-12
    inter_f = np.linalg.svd(blocks(f, dn, 1, 0), compute_uv=False)
    inter_j = np.linalg.svd(blocks(j, dn, 1, 0), compute_uv=False)
    assert inter_f[0] == pytest.approx(th.inter_max, abs=1e-12)
    assert inter_j[0] == pytest.approx(th.inter_max_exact, abs=1e-12)
    # Rank one (Theorem 4.2): the second singular value is rounding.
    assert inter_f[1] < 1e-13 and inter_j[1] < 1e-13
    whole = np.sort(np.linalg.eigvalsh(f))[::-1]
    expected = np.array([v for v, mult in th.whole for _ in range(mult)])
    assert np.abs(whole - expected).max() < 1e-12


def test_theorem_4_2_and_where_values_merge() -> None:
    k, n, d, lw, lh, beta = 4, 10, 10, float(np.sqrt(2)), 0.1, 100.0
    th = collapsed_spectrum(k, n, d, lw, lh, beta)
    assert th.assumptions == []
    assert th.intra_max == th.theorem["intra_max"] == 1.0
    assert th.intra_min == pytest.approx(1 - np.sqrt(lh / lw) / beta, abs=1e-15)
    assert th.theorem["intra_min"] == pytest.approx(th.intra_min, abs=1e-15)
    assert th.inter_max == pytest.approx(2 * lh * (1 - np.sqrt(lh * lw)) / beta, abs=1e-15)
    # Five distinct values generically, with the stated multiplicities.
    assert [row[1] for row in th.directions] == [d - k, (d - k) * (n - 1), k - 1, 1, k * (n - 1)]
    assert len(set(th.values("F"))) == 5
    # c = 1/2 merges λ_H with 2ac and 4ac with √(λ_H/λ_W): three distinct values.
    merged = collapsed_spectrum(3, 3, 5, 1.0, 0.25, 5.0)
    assert len({round(v, 12) for v in merged.values("F")}) == 3


def test_assumptions_that_do_not_hold_are_named() -> None:
    with pytest.warns(UserWarning, match=r"β = 0.5 <= √\(λ_H/λ_W\) = 2"):
        th = collapsed_spectrum(3, 3, 5, 0.2, 0.8, 0.5)
    assert th.intra_min != th.theorem["intra_min"]
    with pytest.warns(UserWarning, match=r"λ_Hλ_W = 2 >= 1: the collapsed minimizer is H = 0"):
        collapsed_spectrum(2, 3, 4, 2.0, 1.0, 5.0)
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        collapsed_spectrum(3, 3, 5, 0.7, 0.3, 0.3)  # β = λ_H, and below √(λ_H/λ_W)
    messages = [str(w.message) for w in caught]
    assert any("β = 0.3 is an eigenvalue of M_kk: F_kk is singular" in m for m in messages)
    assert any("β = 0.3 <= √(λ_H/λ_W)" in m for m in messages)
    with pytest.warns(UserWarning, match="d = K = 3: Theorem 4.2 assumes d > K"):
        collapsed_spectrum(3, 3, 3, 0.7, 0.3, 5.0)


def test_j_minus_f_is_of_order_beta_squared() -> None:
    k, n, d, lw, lh = 3, 3, 5, 0.7, 0.3
    h = collapsed_features(k, n, d, lw, lh, seed=3)
    betas = np.array([10.0, 20.0, 40.0, 80.0])
    gaps = []
    for beta in betas:
        ops = response_operators(h, n, lw, lh, float(beta))
        diff = ops.dense_block("J", 0, 0) - ops.dense_block("F", 0, 0)
        gaps.append(np.linalg.norm(diff, 2))
    slopes = np.diff(np.log(gaps)) / np.diff(np.log(betas))
    # μ²/(β(β + μ)) for the largest μ = √(λ_H/λ_W) ≈ 0.65: slope -2 + O(μ/β), measured > -2.05.
    assert np.all(np.abs(slopes + 2) < 0.05), slopes


def test_lanczos_extremes_equal_the_dense_values() -> None:
    k, n, d, lw, lh, beta = 3, 4, 5, 0.7, 0.3, 4.0
    h = noisy_minimizer(k, n, d, lw, lh, beta)
    ops = response_operators(h, n, lw, lh, beta)
    for which in ("F", "J"):
        values = ops.intra_values(which)
        top, bottom = ops.intra_extremes(which)
        assert top == pytest.approx(values[0], abs=1e-9)
        assert bottom == pytest.approx(values[-1], abs=1e-9)
        inter = np.linalg.norm(ops.dense_block(which, 1, 0), 2)
        assert ops.inter_max(which) == pytest.approx(inter, abs=1e-9)
    # β below the largest Hessian eigenvalue: F_kk indefinite, σ_min from the squared block.
    small = response_operators(h, n, lw, lh, 0.3)
    values = small.intra_values("F")
    top, bottom = small.intra_extremes("F")
    assert (top, bottom) == pytest.approx((values[0], values[-1]), abs=1e-8)


def test_j_is_the_jacobian_of_the_solver() -> None:
    """Central finite differences of the solved minimizer in H0 (ε = 1e-5; error ε² plus the
    solve's error / ε, about 1e-8) against J."""
    k, n, d, lw, lh, beta = 2, 2, 3, 0.9, 0.2, 2.0
    gen = torch.Generator().manual_seed(5)
    h0 = torch.randn(d, k * n, generator=gen, dtype=torch.float64)
    model = PerturbationModel(k, n, d, lw, lh, beta, h0)
    base = model.solve(tol=1e-14)
    assert base.gradient_norm < 1e-13
    ops = response_operators(base.features, n, lw, lh, beta)
    dn = d * n
    jac = np.block([[ops.dense_block("J", a, b) for b in range(k)] for a in range(k)])
    eps = 1e-5
    fd = np.empty_like(jac)
    for col in range(d * k * n):
        step = torch.zeros(d * k * n, dtype=torch.float64)
        step[col] = eps
        step_m = step.reshape(k * n, d).T
        plus = model.with_h0(h0 + step_m).solve(tol=1e-14).features
        minus = model.with_h0(h0 - step_m).solve(tol=1e-14).features
        fd[:, col] = ((plus - minus) / (2 * eps)).T.reshape(-1).numpy()
    assert dn * k == jac.shape[0]
    assert np.abs(fd - jac).max() < 1e-6
