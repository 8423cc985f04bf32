"""Closed forms of the UFM family checked without a solver: value and stationarity of the
predicted minimizer, regime boundaries, conventions, limits."""

from __future__ import annotations

import math

import pytest
import torch

from nclab.geometry import orthogonal_frame, simplex_etf
from nclab.losses import make_loss
from nclab.models import UFM
from nclab.models.extended import ExtendedUFM, extended_root
from nclab.models.theory import limit_margin_label_smoothing
from nclab.models.ufm import class_labels

F64 = torch.float64


def gradient_norm(fn, params: list[torch.Tensor], bounded: tuple[bool, ...] = ()) -> float:
    """Norm of the gradient; for tensors constrained >= 0, of the projected gradient (the KKT
    residual: a positive partial derivative at a zero entry is allowed)."""
    ps = [p.clone().requires_grad_(True) for p in params]
    grads = list(torch.autograd.grad(fn(*ps), ps))
    for i, b in enumerate(bounded):
        if b:
            grads[i] = torch.where((ps[i] <= 0) & (grads[i] > 0), 0.0, grads[i])
    return float(torch.sqrt(sum(g.square().sum() for g in grads)))


def predicted_point(model: UFM) -> list[torch.Tensor]:
    """(W, H[, b]) built from the prediction's geometry and norms."""
    pred = model.theory()
    k, n, d = model.num_classes, model.per_class, model.dim
    labels = class_labels(k, n)
    if model.nonneg:
        a = math.sqrt(pred.weight_norm_sq * k / (k - 1))
        w = torch.zeros(k, d, dtype=F64)
        w[:, :k] = a * (torch.eye(k, dtype=F64) - 1.0 / k)
        means = math.sqrt(pred.feature_norm_sq) * torch.eye(k, d, dtype=F64)
    elif pred.geometry == "orthogonal_frame":
        frame = orthogonal_frame(k, d)
        w = math.sqrt(pred.weight_norm_sq) * frame
        means = math.sqrt(pred.feature_norm_sq) * frame
    else:
        etf = simplex_etf(k, d)
        w = math.sqrt(pred.weight_norm_sq) * etf
        means = math.sqrt(pred.feature_norm_sq) * etf
    params = [w, means[labels].T.contiguous()]
    if model.bias:
        params.append(torch.full((k,), pred.bias or 0.0, dtype=F64))
    return params


CASES = [
    ("mse", False, False, 0.0),
    ("mse", True, False, 0.0),
    ("ce", False, False, 0.0),
    ("ce", True, False, 0.0),
    ("ce", True, False, 1e-3),
    ("ls", False, False, 0.0),
    ("focal", False, False, 0.0),
    ("focal", True, False, 0.0),
    ("ce", False, True, 0.0),
    ("ls", False, True, 0.0),
]


@pytest.mark.parametrize("name,bias,nonneg,lambda_b", CASES)
@pytest.mark.parametrize("k,n,d,lam", [(4, 5, 6, 1e-2), (10, 20, 12, 5e-4)])
def test_predicted_point_has_the_predicted_value_and_is_stationary(
    name: str, bias: bool, nonneg: bool, lambda_b: float, k: int, n: int, d: int, lam: float
) -> None:
    loss = make_loss(
        name, **({"smoothing": 0.1} if name == "ls" else {"gamma": 2.0} if name == "focal" else {})
    )
    model = UFM(loss, k, n, d, lam, 2 * lam, bias=bias, lambda_b=lambda_b, nonneg=nonneg)
    params = predicted_point(model)
    pred = model.theory()
    assert pred.geometry != "zero"
    # Evaluating F at the predicted point reproduces the predicted value to rounding, and the
    # gradient vanishes there (to ~1e-10: the focal margin is a numerical 1-D minimum).
    assert float(model.objective(*params)) == pytest.approx(pred.objective, rel=1e-12)
    assert gradient_norm(model.objective, params, (False, nonneg)) < 1e-9


def test_mse_regimes_meet_continuously_at_c_equal_one() -> None:
    k, n = 5, 4
    lam_at_one = 1.0 / (k * math.sqrt(n))  # c = K √(n λ_W λ_H) = K √n λ = 1 with λ_W = λ_H = λ
    below = UFM(make_loss("mse"), k, n, k, lam_at_one * 0.999, lam_at_one * 0.999).theory()
    above = UFM(make_loss("mse"), k, n, k, lam_at_one * 1.001, lam_at_one * 1.001).theory()
    assert below.geometry == "orthogonal_frame" and above.geometry == "zero"
    assert below.objective == pytest.approx(0.5, abs=1e-5) and above.objective == 0.5
    with_bias = UFM(make_loss("mse"), k, n, k, lam_at_one * 2, lam_at_one * 2, bias=True).theory()
    assert with_bias.objective == pytest.approx((k - 1) / (2 * k)) and with_bias.bias == 1 / k


def test_ce_zero_solution_beyond_c_equal_one() -> None:
    k, n = 4, 3
    lam = 1.0 / (k * math.sqrt(n))  # c = K √(n) λ = 1 at λ_W = λ_H = λ
    assert UFM(make_loss("ce"), k, n, k, lam * 1.01, lam).theory().geometry == "zero"
    assert UFM(make_loss("ce"), k, n, k, lam * 0.99, lam).theory().margin > 0


def test_tirer_convention_is_the_same_function_and_maps_c() -> None:
    k, n, d = 3, 4, 5
    lw, lh = 0.02, 0.3
    tirer = UFM(make_loss("mse"), k, n, d, lw, lh, convention="tirer")
    gen = torch.Generator().manual_seed(0)
    w = torch.randn(k, d, generator=gen, dtype=F64)
    h = torch.randn(d, k * n, generator=gen, dtype=F64)
    y = torch.eye(k, dtype=F64)[class_labels(k, n)].T
    by_hand = (
        (w @ h - y).square().sum() / (2 * k * n)
        + lw / (2 * k) * w.square().sum()
        + lh / (2 * k * n) * h.square().sum()
    )
    assert float(tirer.objective(w, h)) == pytest.approx(float(by_hand), rel=1e-14)
    assert tirer.theory().extra["c"] == pytest.approx(math.sqrt(lw * lh), rel=1e-14)
    std = UFM(make_loss("mse"), k, n, d, lw / k, lh / (k * n))
    assert float(std.objective(w, h)) == pytest.approx(float(by_hand), rel=1e-14)


def test_label_smoothing_margin_stays_finite_while_ce_margin_grows() -> None:
    k, n, alpha = 10, 50, 0.1
    ls_margins, ce_margins = [], []
    for lam in (1e-3, 1e-5, 1e-7, 1e-9):
        ls_margins.append(
            UFM(make_loss("ls", smoothing=alpha), k, n, k, lam, lam, nonneg=True).theory().margin
        )
        ce_margins.append(UFM(make_loss("ce"), k, n, k, lam, lam, nonneg=True).theory().margin)
    limit = limit_margin_label_smoothing(alpha, k)
    assert ls_margins[-1] == pytest.approx(limit, rel=1e-6)
    assert all(m < limit for m in ls_margins)
    # The CE margin is log((K-1)(1-κ)/κ) ~ log(1/λ): each 100x smaller λ adds about log(100).
    assert ce_margins[-1] - ce_margins[-2] == pytest.approx(math.log(100), rel=1e-3)


def extended_point(model: ExtendedUFM) -> list[torch.Tensor]:
    pred = model.theory()
    k, n, d, depth = model.num_classes, model.per_class, model.dim, model.depth
    lw, lhid, lh = model.standard_penalties()
    lams = [lw, *lhid, lh]
    big_lambda = math.exp(sum(math.log(x) for x in lams) / len(lams))
    sigma_pow = (pred.extra["p"] * math.sqrt(n)) ** (2 / len(lams)) * big_lambda
    a = [math.sqrt(sigma_pow / lam) for lam in lams]
    block = torch.eye(k, d, dtype=F64)
    classifier = a[0] * block
    hidden = [a[1 + i] * block.T @ block for i in range(depth)]
    h1 = (a[-1] / math.sqrt(n)) * block.T[:, class_labels(k, n)]
    return [classifier, *hidden, h1]


@pytest.mark.parametrize(
    "activation,depth", [("linear", 1), ("relu", 1), ("linear", 2), ("linear", 3)]
)
def test_extended_prediction_value_and_stationarity(activation: str, depth: int) -> None:
    model = ExtendedUFM(4, 5, 6, 2e-3, (3e-3,) * depth, 1e-3, activation=activation)
    params = extended_point(model)

    def fn(*ps: torch.Tensor) -> torch.Tensor:
        return model.objective(ps[0], list(ps[1:-1]), ps[-1])

    pred = model.theory()
    assert pred.extra["p"] > 0
    assert float(fn(*params)) == pytest.approx(pred.objective, rel=1e-12)
    assert gradient_norm(fn, params) < 1e-10
    feats = model.forward(params[1:-1], params[-1])
    assert float(feats[-1].reshape(6, 4, 5).mean(2).square().sum(0).mean()) == pytest.approx(
        pred.feature_norm_sq, rel=1e-12
    )


def test_extended_threshold_at_delta_two_to_minus_four_thirds() -> None:
    # In the tirer convention δ = (λ_W2 λ_W1 λ_H1)^{1/3}; the threshold is δ* = 2^{-4/3}, p* = 1/2.
    star = 2 ** (-4 / 3)
    assert extended_root(star, 3) == pytest.approx(0.5, abs=1e-12)
    below = ExtendedUFM(
        3, 2, 3, star * 0.99, (star * 0.99,), star * 0.99, convention="tirer"
    ).theory()
    above = ExtendedUFM(
        3, 2, 3, star * 1.01, (star * 1.01,), star * 1.01, convention="tirer"
    ).theory()
    assert below.extra["delta"] == pytest.approx(star * 0.99, rel=1e-12)
    assert below.extra["p"] > 0.5 and below.objective < 0.5
    assert above.extra["p"] == 0.0 and above.objective == 0.5 and above.geometry == "zero"
    # The depth-0 analogue (m = 2) is the plain UFM: p = 1 - c.
    assert extended_root(0.3, 2) == pytest.approx(0.7, abs=1e-12)


def test_theorems_refuse_what_they_do_not_cover() -> None:
    with pytest.raises(ValueError, match="dim: the MSE UFM theorem needs d >= 5"):
        UFM(make_loss("mse"), 5, 2, 4, 1e-3, 1e-3).theory()
    with pytest.raises(ValueError, match="loss: no theorem for non-negative features"):
        UFM(make_loss("mse"), 3, 2, 4, 1e-3, 1e-3, nonneg=True).theory()
    with pytest.raises(ValueError, match="lambda_w: expected a non-negative"):
        UFM(make_loss("ce"), 3, 2, 4, -1.0, 1e-3)
    with pytest.raises(ValueError, match="lambda_h: must be > 0"):
        UFM(make_loss("ce"), 3, 2, 4, 1e-3, 0.0)
    with pytest.raises(ValueError, match="convention: expected one of"):
        UFM(make_loss("ce"), 3, 2, 4, 1e-3, 1e-3, convention="papyan")
    with pytest.raises(ValueError, match="activation: the ReLU closed form"):
        ExtendedUFM(3, 2, 4, 1e-3, (1e-3, 1e-3), 1e-3, activation="relu").theory()
