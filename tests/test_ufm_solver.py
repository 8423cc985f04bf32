"""Theory against numerics: the solvers reach the global minimizers the closed forms predict.

Tolerances: the solvers stop at a gradient norm of 1e-9; near a minimizer the objective error is
second order in the distance (about 1e-15 here) and the norms first order, with the Hessian's
smallest non-zero curvature (~λ) in between: objectives are compared to 1e-10 relative, norms
and margins to 1e-5, and collapse metrics (exactly 0 at the minimizer) to 1e-8.
"""

from __future__ import annotations

import math

import pytest

from nclab.losses import make_loss
from nclab.models import UFM
from nclab.models.extended import ExtendedUFM

TOL = 1e-9


def check_against_theory(model: UFM, restarts: int = 1) -> None:
    sol = model.solve(tol=TOL, restarts=restarts)
    pred = model.theory()
    assert sol.converged and sol.gradient_norm <= TOL
    assert sol.objective == pytest.approx(pred.objective, rel=1e-10)
    summary = sol.summary()
    for key in ("feature_norm_sq", "weight_norm_sq"):
        assert summary[key] == pytest.approx(getattr(pred, key), rel=1e-5, abs=1e-8), key
    if pred.margin is not None and pred.margin > 0:
        assert summary["margin"] == pytest.approx(pred.margin, rel=1e-5)
    if pred.geometry == "zero":
        return
    report = sol.metrics()
    assert report["nc1"] < 1e-8
    if pred.geometry == "simplex_etf":
        assert report["nc2_etf_means"] < 1e-5 and report["nc3_duality"] < 1e-8
    else:
        assert report["nc2_of_means"] < 1e-5


@pytest.mark.parametrize(
    "name,bias,kwargs",
    [
        ("mse", False, {}),
        ("mse", True, {}),
        ("ce", False, {}),
        ("ce", True, {}),
        ("ls", False, {"smoothing": 0.2}),
        ("focal", False, {"gamma": 2.0}),
    ],
)
@pytest.mark.parametrize("k,n,d", [(3, 4, 5), (5, 3, 8)])
def test_lbfgs_reaches_the_predicted_minimizer(
    name: str, bias: bool, kwargs: dict, k: int, n: int, d: int
) -> None:
    check_against_theory(UFM(make_loss(name, **kwargs), k, n, d, 3e-3, 5e-3, bias=bias))


@pytest.mark.parametrize("factor", [0.9, 1.1])
def test_mse_near_the_regime_boundary(factor: float) -> None:
    k, n = 3, 4
    lam = factor / (k * math.sqrt(n))  # c = factor
    check_against_theory(UFM(make_loss("mse"), k, n, k + 1, lam, lam))


@pytest.mark.parametrize("name,kwargs", [("ce", {}), ("ls", {"smoothing": 0.3})])
def test_nonnegative_features_reach_orthogonal_means(name: str, kwargs: dict) -> None:
    model = UFM(make_loss(name, **kwargs), 4, 3, 6, 2e-3, 2e-3, nonneg=True)
    check_against_theory(model, restarts=3)
    sol = model.solve(tol=TOL, restarts=3)
    assert float(sol.features.min()) >= 0.0


def test_tirer_convention_solution_matches_its_own_theory() -> None:
    check_against_theory(UFM(make_loss("mse"), 4, 5, 6, 0.05, 0.1, convention="tirer"))


@pytest.mark.parametrize("activation", ["linear", "relu"])
@pytest.mark.parametrize("scale", [0.8, 0.97])
def test_extended_model_reaches_the_predicted_optimum(activation: str, scale: float) -> None:
    # δ = scale · 2^{-4/3} in the tirer convention: 0.97 sits just inside the non-zero regime.
    lam = scale * 2 ** (-4 / 3)
    model = ExtendedUFM(3, 4, 4, lam, (lam,), lam, activation=activation, convention="tirer")
    sol = model.solve(tol=TOL, restarts=3, seed=1, max_iter=2000)
    pred = model.theory()
    assert sol.converged
    assert sol.objective == pytest.approx(pred.objective, rel=1e-8)
    summary = sol.summary()
    assert summary["h2_norm_sq"] == pytest.approx(pred.extra["h2_norm_sq"], rel=1e-4)
    assert summary["w2_norm_sq"] == pytest.approx(pred.extra["w2_norm_sq"], rel=1e-4)
    reports = sol.metrics()
    assert reports["H2"]["nc1"] < 1e-8 and reports["H2"]["nc2_of_means"] < 1e-4


def test_extended_zero_regime() -> None:
    lam = 1.05 * 2 ** (-4 / 3)
    model = ExtendedUFM(3, 2, 3, lam, (lam,), lam, convention="tirer")
    sol = model.solve(tol=TOL)
    assert sol.converged and sol.objective == pytest.approx(0.5, rel=1e-10)


def test_momentum_gradient_descent_reaches_the_same_minimizer() -> None:
    model = UFM(make_loss("mse"), 3, 2, 4, 5e-2, 5e-2)
    sol = model.solve(method="gd", lr=0.5, momentum=0.9, tol=1e-9, max_iter=20_000)
    assert sol.converged and sol.objective == pytest.approx(model.theory().objective, rel=1e-10)


def test_unconverged_runs_say_so_and_paths_are_recorded() -> None:
    model = UFM(make_loss("ce"), 3, 2, 4, 1e-3, 1e-3)
    sol = model.solve(method="gd", lr=0.01, max_iter=50, record_every=10)
    assert not sol.converged and sol.iterations == 50
    assert [row["iteration"] for row in sol.path] == [0, 10, 20, 30, 40, 50]
    objectives = [row["objective"] for row in sol.path]
    assert objectives == sorted(objectives, reverse=True)
