"""Full-batch solvers for the UFM family, in torch (CPU or CUDA, float64 by default).

* ``lbfgs``: quasi-Newton (torch's L-BFGS with a strong-Wolfe line search) stopped when the
  Euclidean norm of the full gradient is at most ``tol``. With bounds (non-negative features) it
  is scipy's L-BFGS-B on the host, stopped on the norm of the *projected* gradient (the gradient
  with the components that push a variable at its bound further out set to 0).
* ``gd``: gradient descent with a fixed step and optional heavy-ball momentum (projected onto the
  bounds), for studying dynamics; stopped on the same gradient norm or after ``max_iter`` steps.

A run that stops without meeting the tolerance says so (``converged=False``); nothing downstream
presents it as the optimum. A run that took no step is never called converged, even where its start
already meets the tolerance (a start at a stationary point such as W = H = 0 proves nothing about the
minimum): only a candidate evaluated on purpose (:class:`Candidate`, e.g. the zero point of a model
where it is a local minimum by a theorem) is judged by its gradient norm alone. Among several runs the
one with the lowest objective is returned, converged or not, and reports its own status.
"""

from __future__ import annotations

import math
import time
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import torch

__all__ = [
    "METHODS",
    "Candidate",
    "SolverResult",
    "check_solver_options",
    "evaluate",
    "minimize",
    "multistart",
]

METHODS: tuple[str, ...] = ("lbfgs", "gd")

Objective = Callable[[Sequence[torch.Tensor]], torch.Tensor]
Recorder = Callable[[int, Sequence[torch.Tensor]], dict[str, float]]


@dataclass
class SolverResult:
    """Where a solver stopped: parameters, value, gradient norm, iterations, and the path."""

    params: list[torch.Tensor]
    objective: float
    gradient_norm: float
    iterations: int
    converged: bool
    method: str
    path: list[dict[str, float]] = field(default_factory=list)


@dataclass(frozen=True)
class Candidate:
    """A point evaluated as it is (no step taken), with the reason it may stand as a solution.

    ``reason`` is recorded as the result's method, e.g. ``"zero (local minimum, Thm ...)"``.
    """

    params: list[torch.Tensor]
    reason: str


def _result(
    params: Sequence[torch.Tensor],
    value: torch.Tensor,
    norm: float,
    iterations: int,
    tol: float,
    method: str,
) -> SolverResult:
    finite = math.isfinite(float(value)) and math.isfinite(norm)
    return SolverResult(
        params=[p.detach() for p in params],
        objective=float(value),
        gradient_norm=norm,
        iterations=iterations,
        converged=finite and iterations > 0 and norm <= tol,
        method=method,
    )


def _is_number(value: object) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool)


def check_solver_options(
    *,
    method: str,
    tol: float,
    max_iter: int,
    lr: float | None,
    momentum: float | None,
    record_every: int = 0,
) -> tuple[float, float]:
    """Validate the solver's options; returns (lr, momentum) with gd's defaults (0.1, 0).

    ``lr`` and ``momentum`` belong to ``gd``: given (not None) with ``lbfgs`` they would be
    ignored, so they are refused.
    """
    if method not in METHODS:
        raise ValueError(f"method: expected one of {METHODS}, got {method!r}")
    if not _is_number(tol) or not (0 < tol < math.inf):
        raise ValueError(f"tol: expected a finite gradient-norm tolerance > 0, got {tol!r}")
    if isinstance(max_iter, bool) or not isinstance(max_iter, int) or max_iter < 1:
        raise ValueError(f"max_iter: expected an integer >= 1, got {max_iter!r}")
    if isinstance(record_every, bool) or not isinstance(record_every, int) or record_every < 0:
        raise ValueError(f"record_every: expected an integer >= 0, got {record_every!r}")
    if method != "gd":
        for name, value in (("lr", lr), ("momentum", momentum)):
            if value is not None:
                raise ValueError(
                    f"{name}: only method='gd' takes a {name} (L-BFGS chooses its steps by a line "
                    f"search), got {name}={value!r} with method={method!r}"
                )
        return 0.1, 0.0
    lr = 0.1 if lr is None else lr
    momentum = 0.0 if momentum is None else momentum
    if not _is_number(lr) or not (0 < lr < math.inf):
        raise ValueError(f"lr: expected a finite step > 0, got {lr!r}")
    if not _is_number(momentum) or not (0.0 <= momentum < 1.0):
        raise ValueError(f"momentum: expected a value in [0, 1), got {momentum!r}")
    return float(lr), float(momentum)


def _value_and_grad(
    fn: Objective, params: Sequence[torch.Tensor]
) -> tuple[torch.Tensor, list[torch.Tensor]]:
    for p in params:
        p.grad = None
    value = fn(params)
    grads = list(torch.autograd.grad(value, list(params)))
    return value.detach(), grads


def _projected_norm(
    params: Sequence[torch.Tensor], grads: Sequence[torch.Tensor], bounded: Sequence[bool]
) -> float:
    total = torch.zeros((), dtype=torch.float64, device=params[0].device)
    for p, g, b in zip(params, grads, bounded, strict=True):
        if b:
            g = torch.where((p <= 0) & (g > 0), torch.zeros_like(g), g)
        total = total + g.to(torch.float64).square().sum()
    return float(total.sqrt())


def minimize(
    params: Sequence[torch.Tensor],
    fn: Objective,
    *,
    method: str = "lbfgs",
    tol: float = 1e-8,
    max_iter: int = 20_000,
    lr: float | None = None,
    momentum: float | None = None,
    bounded: Sequence[bool] | None = None,
    record_every: int = 0,
    recorder: Recorder | None = None,
    progress: Callable[[str], None] | None = None,
    progress_every: float = 5.0,
) -> SolverResult:
    """Minimize ``fn(params)`` from the given starting point (the tensors are updated in place).

    Parameters
    ----------
    params : leaf tensors (requires_grad is set here).
    fn : the objective, a scalar tensor function of ``params``.
    method : ``"lbfgs"`` or ``"gd"``.
    tol : stop when the (projected) gradient norm is at most ``tol``.
    max_iter : most iterations (L-BFGS iterations, or gradient steps), >= 1.
    lr, momentum : step and heavy-ball momentum of ``gd`` (default 0.1 and 0; refused with
        ``lbfgs``, which would ignore them).
    bounded : per tensor, whether it is constrained to be >= 0.
    record_every : call ``recorder(iteration, params)`` every this many iterations (0: never).
    progress : called with a line (iteration, objective, elapsed seconds) at most every
        ``progress_every`` seconds of a long solve (the first after ``progress_every``).
    """
    lr, momentum = check_solver_options(
        method=method,
        tol=tol,
        max_iter=max_iter,
        lr=lr,
        momentum=momentum,
        record_every=record_every,
    )
    bounds = list(bounded) if bounded is not None else [False] * len(params)
    ps = [p.detach().clone().requires_grad_(True) for p in params]
    for p, b in zip(ps, bounds, strict=True):
        if b:
            with torch.no_grad():
                p.clamp_(min=0.0)
    path: list[dict[str, float]] = []

    started = last = time.monotonic()

    def record(iteration: int) -> None:
        nonlocal last
        if recorder is not None and record_every and iteration % record_every == 0:
            path.append(recorder(iteration, [p.detach() for p in ps]))
        if progress is not None:
            now = time.monotonic()
            if now - last >= progress_every:
                last = now
                with torch.no_grad():
                    value = float(fn([p.detach() for p in ps]))
                progress(f"iteration {iteration}: objective {value:.12g} ({now - started:.0f} s)")

    if method == "gd":
        result = _gradient_descent(ps, fn, tol, max_iter, lr, momentum, bounds, record)
    elif any(bounds):
        result = _lbfgs_b(ps, fn, tol, max_iter, bounds, record)
    else:
        result = _lbfgs(ps, fn, tol, max_iter, record)
    result.path = path
    return result


def evaluate(
    candidate: Candidate, fn: Objective, *, tol: float, bounded: Sequence[bool] | None = None
) -> SolverResult:
    """The objective and (projected) gradient norm at ``candidate`` as it is: converged when the
    norm is at most ``tol`` (the candidate's reason says why it may stand as a solution)."""
    ps = [p.detach().clone().requires_grad_(True) for p in candidate.params]
    value, grads = _value_and_grad(fn, ps)
    norm = _projected_norm(ps, grads, list(bounded) if bounded else [False] * len(ps))
    finite = math.isfinite(float(value)) and math.isfinite(norm)
    return SolverResult(
        params=[p.detach() for p in ps],
        objective=float(value),
        gradient_norm=norm,
        iterations=0,
        converged=finite and norm <= tol,
        method=candidate.reason,
    )


def multistart(
    starts: Iterable[list[torch.Tensor]],
    fn: Objective,
    *,
    warm_up: Callable[[list[torch.Tensor]], list[torch.Tensor]] | None = None,
    candidates: Sequence[Candidate] = (),
    **options: Any,
) -> tuple[SolverResult, list[SolverResult]]:
    """:func:`minimize` from each start (after ``warm_up``, if given), and each of ``candidates``
    evaluated as it is; returns the result with the lowest finite objective (whatever its
    ``converged``, which it reports for itself) and all of them."""
    progress = options.pop("progress", None)
    results = []
    for i, start in enumerate(starts, start=1):

        def tagged(line: str, i: int = i) -> None:
            assert progress is not None
            progress(f"start {i}: {line}")

        each = dict(options, progress=tagged if progress is not None else None)
        results.append(minimize(warm_up(start) if warm_up else start, fn, **each))
    results += [
        evaluate(c, fn, tol=options.get("tol", 1e-8), bounded=options.get("bounded"))
        for c in candidates
    ]
    best = min(results, key=lambda r: r.objective if math.isfinite(r.objective) else math.inf)
    return best, results


def _gradient_descent(
    ps: list[torch.Tensor],
    fn: Objective,
    tol: float,
    max_iter: int,
    lr: float,
    momentum: float,
    bounds: list[bool],
    record: Callable[[int], None],
) -> SolverResult:
    velocity = [torch.zeros_like(p) for p in ps]
    iteration = 0
    value, grads = _value_and_grad(fn, ps)
    record(0)
    norm = _projected_norm(ps, grads, bounds)
    while norm > tol and iteration < max_iter:
        with torch.no_grad():
            for p, g, v, b in zip(ps, grads, velocity, bounds, strict=True):
                v.mul_(momentum).add_(g)
                p.sub_(lr * v)
                if b:
                    p.clamp_(min=0.0)
        iteration += 1
        value, grads = _value_and_grad(fn, ps)
        norm = _projected_norm(ps, grads, bounds)
        record(iteration)
        if not torch.isfinite(value):
            break
    return _result(ps, value, norm, iteration, tol, "gd")


def _lbfgs(
    ps: list[torch.Tensor], fn: Objective, tol: float, max_iter: int, record: Callable[[int], None]
) -> SolverResult:
    opt = torch.optim.LBFGS(
        ps,
        lr=1.0,
        max_iter=1,
        max_eval=25,  # the line search's budget within one iteration
        history_size=50,
        tolerance_grad=0.0,
        tolerance_change=0.0,
        line_search_fn="strong_wolfe",
    )

    def closure() -> torch.Tensor:
        value = fn(ps)
        for p, g in zip(ps, torch.autograd.grad(value, ps), strict=True):
            p.grad = g
        return value.detach()

    record(0)
    free = [False] * len(ps)
    iteration, stalled = 0, 0
    value, grads = _value_and_grad(fn, ps)
    norm = _projected_norm(ps, grads, free)
    best_value, polishing = float(value), False
    best_norm, best_point = norm, [p.detach().clone() for p in ps]
    while norm > tol and iteration < max_iter:
        opt.step(closure)  # type: ignore[no-untyped-call]
        iteration += 1
        value, grads = _value_and_grad(fn, ps)
        norm = _projected_norm(ps, grads, free)
        record(iteration)
        if not torch.isfinite(value):
            break
        if norm < best_norm:
            best_norm, best_point, stalled = norm, [p.detach().clone() for p in ps], 0
        elif polishing:
            stalled += 1
        if not polishing:
            # Near the minimizer the objective changes by less than its rounding error, so the
            # line search stops making progress: switch to unit quasi-Newton steps, judged by the
            # gradient norm instead of the objective.
            stalled = stalled + 1 if float(value) >= best_value else 0
            best_value = min(best_value, float(value))
            if stalled >= 5:
                polishing, stalled = True, 0
                opt.param_groups[0]["line_search_fn"] = None
        if polishing and stalled >= 20:
            break
    with torch.no_grad():
        for p, b in zip(ps, best_point, strict=True):
            p.copy_(b)
    value, grads = _value_and_grad(fn, ps)
    norm = _projected_norm(ps, grads, free)
    return _result(ps, value, norm, iteration, tol, "lbfgs")


def _lbfgs_b(
    ps: list[torch.Tensor],
    fn: Objective,
    tol: float,
    max_iter: int,
    bounds: list[bool],
    record: Callable[[int], None],
) -> SolverResult:
    from scipy.optimize import minimize as scipy_minimize

    shapes = [p.shape for p in ps]
    sizes = [p.numel() for p in ps]
    device, dtype = ps[0].device, ps[0].dtype

    def unpack(x: np.ndarray) -> list[torch.Tensor]:
        flat = torch.from_numpy(x).to(device=device, dtype=dtype)
        return [
            t.reshape(s).requires_grad_(True)
            for t, s in zip(torch.split(flat, sizes), shapes, strict=True)
        ]

    def fun(x: np.ndarray) -> tuple[float, np.ndarray]:
        tensors = unpack(x)
        value, grads = _value_and_grad(fn, tensors)
        flat_grad = torch.cat([g.reshape(-1) for g in grads]).to(torch.float64).cpu().numpy()
        return float(value), flat_grad

    counter = {"iteration": 0}

    def callback(xk: Any) -> None:
        counter["iteration"] += 1
        current = unpack(np.asarray(xk))
        for p, c in zip(ps, current, strict=True):
            with torch.no_grad():
                p.copy_(c)
        record(counter["iteration"])

    x0 = torch.cat([p.detach().reshape(-1) for p in ps]).to(torch.float64).cpu().numpy()
    box: list[tuple[float | None, float | None]] = []
    for size, b in zip(sizes, bounds, strict=True):
        box.extend([(0.0, None)] * size if b else [(None, None)] * size)
    record(0)
    res = scipy_minimize(
        fun,
        x0,
        jac=True,
        method="L-BFGS-B",
        bounds=box,
        callback=callback,
        options={"maxiter": max_iter, "maxcor": 50, "gtol": tol / 10, "ftol": 0.0, "maxls": 50},
    )
    final = unpack(np.asarray(res.x))
    value, grads = _value_and_grad(fn, final)
    norm = _projected_norm(final, grads, bounds)
    return _result(final, value, norm, int(res.nit), tol, "lbfgs-b")
