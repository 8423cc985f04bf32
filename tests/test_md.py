"""The memorization–dilation model (ours): exact limits, the two routes, the test-error model."""

from __future__ import annotations

import math

import pytest
import torch
from scipy import integrate
from scipy.special import ndtr

from nclab.losses import make_loss
from nclab.metrics import measure_noise
from nclab.models import UFM
from nclab.models.md import MDModel, noise_counts, observed_labels
from nclab.models.md_error import chi_mean, predict_test_error
from nclab.models.theory import limit_margin_label_smoothing

CE = make_loss("ce")
LS = make_loss("ls", smoothing=0.1)


def model(loss=CE, k=3, n=10, d=None, eta=0.2, lam=1.0, reg=1e-2, **kw) -> MDModel:
    return MDModel(loss, k, n, k if d is None else d, eta, lam, reg, reg, **kw)


@pytest.mark.parametrize("loss", [CE, LS], ids=["ce", "ls"])
def test_noiseless_model_is_the_nonneg_ufm_optimum(loss) -> None:
    # η = 0: no noisy sample, the constraint is void, and the reduced problem is the positive
    # UFM, whose closed form (orthogonal frame, margin from min ℓ(m) + κ₊m) it must reach.
    sol = MDModel(loss, 3, 4, 3, 0.0, 1.0, 1e-2, 2e-2).theory()
    pred = UFM(loss, 3, 4, 3, 1e-2, 2e-2, nonneg=True).theory()
    assert sol.converged
    assert sol.objective == pytest.approx(pred.objective, rel=1e-8)
    assert sol.margin == pytest.approx(pred.margin, rel=1e-8)
    assert sol.memorization == 0.0 and sol.dilation == pytest.approx(0.0, abs=1e-12)


@pytest.mark.parametrize("loss", [CE, LS], ids=["ce", "ls"])
def test_free_memorization_puts_noisy_samples_on_their_observed_class(loss) -> None:
    # λ = 0: each sample's feature minimizes a strictly convex function of its observed label
    # only, so a noisy sample sits at its observed class's point: memorization = the distance
    # between clean means, dilation 0, and the objective is the noiseless one.
    m = MDModel(loss, 3, 4, 3, 0.25, 0.0, 1e-2, 2e-2)
    sol = m.theory()
    assert sol.dilation == pytest.approx(0.0, abs=1e-12)
    assert sol.memorization == pytest.approx(sol.noise_report["clean_mean_distance"], rel=1e-8)
    noiseless = UFM(loss, 3, 4, 3, 1e-2, 2e-2, nonneg=True).theory().objective
    assert sol.objective == pytest.approx(noiseless, rel=1e-8)
    h = sol.features[:3]
    obs = m.observed()
    clean = obs == m.true_labels()
    for i in torch.nonzero(~clean).flatten().tolist():
        target = h[:, clean & (obs == obs[i])].mean(1)
        assert torch.allclose(h[:, i], target, atol=1e-7)


def test_vanishing_regularization_ce_memorizes_without_bound_ls_does_not() -> None:
    # CE: each decade of √(λ_Wλ_H) adds about ln 10 to the clean margin (as in the noiseless
    # closed form, log(1/κ₊); within 3e-3 per two decades here) and a constant to M², so M
    # grows like √log(1/λ) without bound. LS: the margin tends to the
    # noiseless limit log(1 + K(1-α)/α) and M to a finite value.
    regs = (1e-4, 1e-6, 1e-8)
    ce = [model(CE, reg=r).theory() for r in regs]
    ls = [model(LS, reg=r).theory() for r in regs]
    assert all(s.converged for s in ce + ls)
    assert ce[1].margin - ce[0].margin == pytest.approx(2 * math.log(10), abs=3e-3)
    assert ce[2].margin - ce[1].margin == pytest.approx(2 * math.log(10), abs=3e-3)
    m2 = [s.memorization**2 for s in ce]
    assert m2[1] - m2[0] > 1.0 and (m2[2] - m2[1]) == pytest.approx(m2[1] - m2[0], rel=0.01)
    assert ls[2].margin == pytest.approx(limit_margin_label_smoothing(0.1, 3), abs=1e-5)
    assert abs(ls[2].memorization - ls[1].memorization) < 1e-4
    assert ls[2].memorization < 0.5 * ce[2].memorization


def test_memorization_and_dilation_grow_with_noise() -> None:
    for loss in (CE, LS):
        sols = [model(loss, eta=eta).theory() for eta in (0.1, 0.2, 0.3, 0.4)]
        mem = [s.memorization for s in sols]
        dil = [s.dilation for s in sols]
        assert mem == sorted(mem) and len(set(mem)) == 4, mem
        assert dil == sorted(dil) and len(set(dil)) == 4, dil
        # the constraint binds: D = λ M (λ = 1 here)
        assert all(s.dilation == pytest.approx(s.memorization, rel=1e-10) for s in sols)


@pytest.mark.parametrize(("eta", "lam"), [(0.1, 2.0), (0.2, 0.5), (0.4, 1.0)])
def test_label_smoothing_memorizes_and_dilates_less(eta: float, lam: float) -> None:
    ce, ls = model(CE, eta=eta, lam=lam).theory(), model(LS, eta=eta, lam=lam).theory()
    assert ls.memorization < ce.memorization and ls.dilation < ce.dilation


def test_label_smoothing_test_error_is_lower_where_docs_say_and_not_elsewhere() -> None:
    # docs/models.md's table (K = 4, n = 30, λ_W = λ_H = 5e-3): LS wins at λ = 2, η = 0.1
    # (0.0592 vs 0.0986 for α = 0.1) but loses at λ = 0.5, η = 0.2 (0.0493 vs 0.0464); the
    # Monte-Carlo standard error is ~0.0004, the tolerance 0.002 (5 of them).
    def err(loss, eta: float, lam: float) -> float:
        return MDModel(loss, 4, 30, 4, eta, lam, 5e-3, 5e-3).theory().test_error

    assert err(LS, 0.1, 2.0) == pytest.approx(0.0592, abs=0.002)
    assert err(CE, 0.1, 2.0) == pytest.approx(0.0986, abs=0.002)
    assert err(LS, 0.2, 0.5) > err(CE, 0.2, 0.5) + 0.001


CASES = [
    # (loss, K, n, d, η, λ, noise kind, bias)
    (CE, 2, 4, 2, 0.25, 0.5, "symmetric", True),
    (LS, 3, 6, 4, 1 / 3, 0.5, "symmetric", False),
    (CE, 4, 8, 4, 0.25, 1.0, "pair", False),
]


@pytest.mark.parametrize("case", CASES, ids=["k2-ce-bias", "k3-ls-d4", "k4-ce-pair"])
def test_features_level_optimum_has_the_reduced_form(case) -> None:
    loss, k, n, d, eta, lam, kind, bias = case
    m = MDModel(loss, k, n, d, eta, lam, 1e-2, 1e-2, noise_kind=kind, bias=bias)
    reduced = m.theory()
    full = m.solve(restarts=2, seed=1)
    assert reduced.converged and full.converged and full.violation <= 1e-9
    # the two routes: objective to 1e-6 relative, memorization and dilation to 1e-4
    assert full.objective == pytest.approx(reduced.objective, rel=1e-6)
    assert full.memorization == pytest.approx(reduced.memorization, abs=1e-4)
    assert full.dilation == pytest.approx(reduced.dilation, abs=1e-4)
    assert full.margin == pytest.approx(reduced.margin, abs=1e-4)
    # the reduced form, in the invariants that identify it (for d > K the optimum is unique
    # only up to splitting a class's coordinate, and moving dilation into the classifier's
    # null space where positivity allows, at the same value): the clean samples of a class
    # share their logits, the noisy samples of one (true, observed) pair share their feature,
    # and every clean sample sits at the same distance D_k from its clean mean
    h = full.features[:d]
    logits = full.weight @ h
    q = m.noisy
    obs = m.observed().reshape(k, n)
    for c in range(k):
        cols = slice(c * n, (c + 1) * n)
        z = logits[:, cols][:, q:]
        assert (z - z.mean(1, keepdim=True)).abs().max() < 1e-4
        for o in obs[c, :q].unique():
            same = full.features[:, cols][:, :q][:, obs[c, :q] == o]
            assert (same - same.mean(1, keepdim=True)).abs().max() < 1e-4
        clean = full.features[:, cols][:, q:]
        radii = torch.linalg.vector_norm(clean - clean.mean(1, keepdim=True), dim=0)
        assert radii.max() - radii.min() < 1e-4


def test_differentiable_definitions_are_measure_noise() -> None:
    m = model(CE, k=3, n=5, d=4, eta=0.4)
    gen = torch.Generator().manual_seed(0)
    h = torch.rand(4, 15, generator=gen, dtype=torch.float64)
    e = torch.randn(2, 15, generator=gen, dtype=torch.float64)
    mem, dil = m.memorization_dilation(h, e)
    rep = measure_noise(torch.cat([h, e]).T, m.observed(), m.true_labels())
    assert mem.tolist() == pytest.approx(rep.per_class["memorization"], rel=1e-12)
    assert dil.tolist() == pytest.approx(rep.per_class["dilation_mean"], rel=1e-12)


def test_noise_assignment() -> None:
    assert observed_labels(3, 4, 2, "symmetric").tolist() == [1, 2, 0, 0, 2, 0, 1, 1, 0, 1, 2, 2]
    assert observed_labels(3, 3, 1, "pair").tolist() == [1, 0, 0, 2, 1, 1, 0, 2, 2]
    assert noise_counts(4, 4, "symmetric") == {1: 2, 2: 1, 3: 1}
    # every observed class has n samples under symmetric noise
    assert torch.bincount(observed_labels(4, 10, 4, "symmetric")).tolist() == [10] * 4


def test_tirer_convention_is_the_same_problem() -> None:
    k, n = 3, 10
    std = model(CE, k=k, n=n, reg=1e-2).theory()
    tirer = MDModel(CE, k, n, k, 0.2, 1.0, 1e-2 * k, 1e-2 * k * n, convention="tirer").theory()
    assert tirer.objective == pytest.approx(std.objective, rel=1e-12)
    assert tirer.memorization == pytest.approx(std.memorization, rel=1e-9)


def test_two_class_test_error_is_the_normal_tail() -> None:
    # means r e_k, W = a(I - 11ᵀ/2): the gap is a r with spread σ a √2 (span = the plane),
    # σ = D / E‖z‖ with E‖z‖ = √(π/2) for r = 2.
    r, a, dil = 1.5, 2.0, 0.7
    w = a * (torch.eye(2, dtype=torch.float64) - 0.5)
    err, stderr = predict_test_error(
        w, None, r * torch.eye(2, dtype=torch.float64), torch.tensor([dil] * 2, dtype=torch.float64)
    )
    sigma = dil / math.sqrt(math.pi / 2)
    assert chi_mean(2) == pytest.approx(math.sqrt(math.pi / 2), rel=1e-14)
    assert stderr == 0.0 and err == pytest.approx(
        float(ndtr(-r / (sigma * math.sqrt(2)))), rel=1e-12
    )


def test_many_class_test_error_matches_quadrature() -> None:
    # orthogonal means r e_k, centred W: P(correct) = ∫ φ(x) Φ(r/σ + x)^{K-1} dx; the seeded
    # Monte-Carlo estimate must lie within 4 of its standard errors.
    k, r, dil = 4, 1.0, 0.8
    w = torch.eye(k, dtype=torch.float64) - 1.0 / k
    err, stderr = predict_test_error(
        w, None, r * torch.eye(k, dtype=torch.float64), torch.tensor([dil] * k, dtype=torch.float64)
    )
    sigma = dil / chi_mean(k)

    def integrand(x: float) -> float:
        return math.exp(-x * x / 2) / math.sqrt(2 * math.pi) * float(ndtr(r / sigma + x)) ** (k - 1)

    exact = 1.0 - integrate.quad(integrand, -12, 12, epsabs=1e-13)[0]
    assert 0 < stderr < 1e-3 and abs(err - exact) < 4 * stderr


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"eta": 1.0}, "noise: expected η in [0, 1)"),
        ({"eta": -0.1}, "noise: expected η in [0, 1)"),
        ({"lam": -1.0}, "expressivity: expected λ >= 0"),
        ({"eta": 0.25}, "noise: η·n = 0.25·10"),
        ({"d": 2}, "dim: the M-D model needs d >= K = 3"),
        ({"n": 2, "eta": 0.5}, "noise: η = 0.5 leaves one clean sample"),
        ({"loss": make_loss("mse")}, "loss: expected make_loss('ce')"),
        ({"noise_kind": "uniform"}, "noise_kind: expected one of"),
    ],
)
def test_bad_input_names_the_argument(kwargs, message: str) -> None:
    with pytest.raises(ValueError) as err:
        model(**kwargs)
    assert str(err.value).startswith(message)


def test_no_clean_sample_and_bad_smoothing_are_refused() -> None:
    # η < 1, but η n rounds to n within the whole-number tolerance: no clean sample is left
    with pytest.raises(ValueError, match=r"^noise: η = 0.99999999999 leaves class no clean"):
        MDModel(CE, 2, 10, 2, 0.99999999999, 0.0, 1e-2, 1e-2)
    with pytest.raises(ValueError, match=r"^smoothing: expected α in \[0, 1\)"):
        make_loss("ls", smoothing=1.0)
