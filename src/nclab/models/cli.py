"""``nclab solve ufm`` and ``nclab solve extended-ufm``: solve a model, compare with its theorem."""

from __future__ import annotations

import argparse
import contextlib
import io
import json
import math
import sys
from collections.abc import Sequence
from typing import Any

from nclab.errors import InputError, renamed
from nclab.losses import LOSSES, Loss, make_loss
from nclab.metrics import CollapseReport
from nclab.models.conventions import CONVENTIONS
from nclab.models.extended import ACTIVATIONS, ExtendedSolution, ExtendedUFM
from nclab.models.solvers import METHODS
from nclab.models.theory import Prediction
from nclab.models.ufm import UFM, UFMSolution
from nclab.threads import set_threads

__all__ = ["add_solve_parser", "solve_models", "solve_to_dict"]

EXIT_NOT_CONVERGED = 3
# A solution more than this (relative) above the theorem's optimum is reported as such.
GAP_RTOL = 1e-8


def _finite(value: Any, where: str = "", found: list[str] | None = None) -> Any:
    """``value`` with every non-finite float replaced by None (JSON has no NaN); the dotted
    paths of the replaced fields are appended to ``found``."""
    if isinstance(value, float) and not math.isfinite(value):
        if found is not None:
            found.append(where)
        return None
    if isinstance(value, dict):
        return {k: _finite(v, f"{where}.{k}" if where else k, found) for k, v in value.items()}
    if isinstance(value, list):
        return [_finite(v, f"{where}[{i}]", found) for i, v in enumerate(value)]
    return value


def _json_object(result: dict[str, Any]) -> dict[str, Any]:
    """The JSON object of a solve: non-finite numbers as null, listed under ``non_finite``."""
    found: list[str] = []
    out: dict[str, Any] = _finite(result, "", found)
    out["non_finite"] = found
    return out


def _theory(model: UFM | ExtendedUFM) -> tuple[Prediction | None, str | None]:
    try:
        return model.theory(), None
    except ValueError as err:
        return None, str(err)


def _common(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--classes", type=int, required=True, help="K, number of classes")
    parser.add_argument("--per-class", type=int, required=True, help="n, samples per class")
    parser.add_argument("--dim", type=int, required=True, help="d, feature dimension")
    parser.add_argument(
        "--convention",
        choices=CONVENTIONS,
        default="standard",
        help="normalization of the λ's: standard (Zhu et al. 2021, default) or tirer "
        "(Tirer & Bruna 2022 / Tirer et al. 2023)",
    )
    parser.add_argument("--method", choices=METHODS, default="lbfgs", help="solver (default lbfgs)")
    parser.add_argument(
        "--restarts",
        type=int,
        default=None,
        help="random starts, the lowest objective kept (default 1; 4 with --nonneg, whose "
        "problem has local minima)",
    )
    parser.add_argument("--seed", type=int, default=0, help="random seed (default 0)")
    parser.add_argument("--device", default="cpu", help="torch device (default cpu)")
    parser.add_argument("--tol", type=float, default=1e-8, help="gradient-norm tolerance (1e-8)")
    parser.add_argument("--max-iter", type=int, default=20_000, help="iteration limit (20,000)")
    parser.add_argument(
        "--lr", type=float, default=None, help="step of --method gd (default 0.1; gd only)"
    )
    parser.add_argument(
        "--momentum",
        type=float,
        default=None,
        help="heavy-ball momentum of --method gd, in [0, 1) (default 0; gd only)",
    )
    parser.add_argument(
        "--target-scale",
        type=float,
        default=1.0,
        help="M of the rescaled MSE ½[k(z_y - M)² + Σ_{j≠y} z_j²] (default 1)",
    )
    parser.add_argument(
        "--target-weight",
        type=float,
        default=1.0,
        help="k of the rescaled MSE (default 1; the extended model's theorem needs k = 1)",
    )
    parser.add_argument(
        "--threads",
        type=int,
        default=None,
        help="CPU threads for torch (default: $OMP_NUM_THREADS, else the cores available, at "
        "most 4; on a busy machine pass --threads 1)",
    )
    parser.add_argument("--json", action="store_true", help="print one JSON object")


# Python keyword -> the flag a CLI user typed, so that errors name what the user can change.
_FLAGS = {
    "num_classes": "--classes",
    "per_class": "--per-class",
    "dim": "--dim",
    "lambda_w": "--lambda-w",
    "lambda_h": "--lambda-h",
    "lambda_b": "--lambda-b",
    "smoothing": "--smoothing",
    "gamma": "--gamma",
    "target_scale/target_weight": "--target-scale/--target-weight",
    "target_scale": "--target-scale",
    "method": "--method",
    "restarts": "--restarts",
    "seed": "--seed",
    "tol": "--tol",
    "max_iter": "--max-iter",
    "lr": "--lr",
    "momentum": "--momentum",
    "convention": "--convention",
    "activation": "--activation",
    "device": "--device",
}


def _with_flag(err: ValueError, flags: dict[str, str]) -> ValueError:
    """The same error with its leading Python keyword replaced by the CLI flag."""
    return InputError(str(renamed(err, flags)).replace("method='gd'", "--method gd"))


def add_solve_parser(sub: Any) -> None:
    """Register ``nclab solve`` and its two models on the top-level subparsers."""
    solve = sub.add_parser("solve", help="solve an unconstrained-features model numerically")
    models = solve.add_subparsers(dest="model", required=True)

    ufm = models.add_parser("ufm", help="the UFM: min (1/N)Σℓ(Wh+b) + λ_W/2‖W‖² + λ_H/2‖H‖²")
    ufm.add_argument("--loss", choices=LOSSES, required=True, help="loss ℓ")
    ufm.add_argument("--bias", action="store_true", help="include a bias b")
    ufm.add_argument("--lambda-b", type=float, default=0.0, help="bias penalty (0: unregularized)")
    ufm.add_argument("--nonneg", action="store_true", help="constrain the features H >= 0")
    ufm.add_argument("--smoothing", type=float, default=0.0, help="α of --loss ls")
    ufm.add_argument("--gamma", type=float, default=0.0, help="γ of --loss focal")
    ufm.add_argument("--lambda-w", type=float, required=True, help="weight penalty λ_W")
    ufm.add_argument("--lambda-h", type=float, required=True, help="feature penalty λ_H")
    _common(ufm)
    ufm.set_defaults(func=_cmd_solve, to_dict=_to_dict)

    ext = models.add_parser(
        "extended-ufm", help="the extended UFM W2 σ(W1 H1) of Tirer & Bruna (MSE)"
    )
    ext.add_argument("--activation", choices=ACTIVATIONS, required=True, help="σ")
    ext.add_argument("--depth", type=int, default=1, help="hidden layers L (default 1)")
    ext.add_argument("--lambda-w2", type=float, required=True, help="classifier penalty λ_W2")
    ext.add_argument(
        "--lambda-w1", type=float, required=True, help="hidden-weight penalty λ_W1 (every layer)"
    )
    ext.add_argument("--lambda-h1", type=float, required=True, help="feature penalty λ_H1")
    _common(ext)
    ext.set_defaults(func=_cmd_solve, to_dict=_to_dict)
    from nclab.models.perturbation_cli import add_perturbation_parser

    add_perturbation_parser(models)
    from nclab.models.md_cli import add_md_parser

    add_md_parser(models)


def _loss(args: argparse.Namespace, name: str) -> Loss:
    return make_loss(
        name,
        smoothing=getattr(args, "smoothing", 0.0),
        gamma=getattr(args, "gamma", 0.0),
        target_scale=args.target_scale,
        target_weight=args.target_weight,
    )


def _progress(line: str) -> None:
    print(f"nclab solve: {line}", file=sys.stderr, flush=True)


def _solver_kwargs(args: argparse.Namespace) -> dict[str, Any]:
    return {
        "progress": _progress,
        "method": args.method,
        "restarts": args.restarts,
        "seed": args.seed,
        "device": args.device,
        "tol": args.tol,
        "max_iter": args.max_iter,
        "lr": args.lr,
        "momentum": args.momentum,
    }


def _emit(
    args: argparse.Namespace,
    result: dict[str, Any],
    pred: Prediction | None,
    note: str | None,
    reports: dict[str, CollapseReport],
) -> int:
    if args.json:
        print(json.dumps(_json_object(result), allow_nan=False))
    else:
        status = "converged" if result["converged"] else "NOT converged"
        if result["zero_solution"]:
            status += " to the zero solution W = H = 0"
        print(
            f"{status}: objective {result['objective']:.12g}, gradient norm {result['gradient_norm']:.2e}, "
            f"{result['iterations']} iterations ({result['method']})"
        )
        if pred is None:
            print(f"theory: none ({note})")
        else:
            print(f"theory: objective {pred.objective:.12g}, geometry {pred.geometry}")
            if result["objective_gap"] > GAP_RTOL * max(1.0, abs(pred.objective)):
                print(
                    f"  the solution lies {result['objective_gap']:.3g} above the theorem's "
                    "optimum: a local minimum (try more --restarts) or not converged"
                )
        theory = result["theory"] or {}
        for key, value in result["solution"].items():
            predicted = theory.get(key)
            extra = f"   theory {predicted:.8g}" if isinstance(predicted, float) else ""
            print(f"  {key:<16} {value:.8g}{extra}")
        if result["metrics_note"]:
            print(f"  metrics: none ({result['metrics_note']})")
        for name, report in reports.items():
            r = report.as_dict()
            print(
                f"  {name}: nc1 {r['nc1']:.3g}, nc2_etf_means {r['nc2_etf_means']:.3g}, "
                f"nc2_of_means {r['nc2_of_means']:.3g}"
            )
    return 0 if result["converged"] else EXIT_NOT_CONVERGED


def _metric_fields(sol: UFMSolution | ExtendedSolution, metrics: Any) -> dict[str, Any]:
    """``metrics`` (None for the zero solution) and the note saying why it is None."""
    note = None
    if sol.zero_solution:
        note = (
            "the solution is W = H = 0 (largest |logit| "
            f"{sol.largest_logit:.1e}): its class means coincide, so NC metrics are undefined"
        )
    return {"metrics": metrics, "metrics_note": note}


def _gap(sol: UFMSolution | ExtendedSolution, pred: Prediction | None) -> dict[str, Any]:
    """``objective_gap``: the solution's objective minus the theorem's optimum (None without a
    theorem); above GAP_RTOL (relative) the solver stopped at a local minimum or short of it."""
    return {"objective_gap": None if pred is None else sol.objective - pred.objective}


def _run_fields(sol: UFMSolution | ExtendedSolution) -> dict[str, Any]:
    """Where the solver stopped: the fields both models' JSON share."""
    return {
        "converged": sol.converged,
        "zero_solution": sol.zero_solution,
        "objective": sol.objective,
        "gradient_norm": sol.gradient_norm,
        "iterations": sol.iterations,
        "method": sol.method,
        "restart_objectives": sol.restart_objectives,
    }


def _ufm_result(
    args: argparse.Namespace,
) -> tuple[dict[str, Any], Prediction | None, str | None, dict[str, CollapseReport]]:
    model = UFM(
        _loss(args, args.loss),
        args.classes,
        args.per_class,
        args.dim,
        args.lambda_w,
        args.lambda_h,
        bias=args.bias,
        lambda_b=args.lambda_b,
        nonneg=args.nonneg,
        convention=args.convention,
    )
    pred, note = _theory(model)
    sol = model.solve(**_solver_kwargs(args))
    reports = {} if sol.zero_solution else {"H": sol.metrics()}
    theory = None
    if pred is not None:
        theory = {
            "objective": pred.objective,
            "geometry": pred.geometry,
            "feature_norm_sq": pred.feature_norm_sq,
            "weight_norm_sq": pred.weight_norm_sq,
            "margin": pred.margin,
            "bias": pred.bias,
            **pred.extra,
        }
    result = {
        "model": "ufm",
        "loss": model.loss.describe(),
        "convention": model.convention,
        **_run_fields(sol),
        **_gap(sol, pred),
        "theory": theory,
        "theory_note": note,
        "solution": sol.summary(),
        **_metric_fields(sol, {k: r.as_dict() for k, r in reports.items()}.get("H")),
    }
    return result, pred, note, reports


def _extended_result(
    args: argparse.Namespace,
) -> tuple[dict[str, Any], Prediction | None, str | None, dict[str, CollapseReport]]:
    if args.depth < 1:
        raise ValueError(f"--depth: expected at least 1 hidden layer, got {args.depth}")
    model = ExtendedUFM(
        args.classes,
        args.per_class,
        args.dim,
        args.lambda_w2,
        (args.lambda_w1,) * args.depth,
        args.lambda_h1,
        activation=args.activation,
        loss=_loss(args, "mse"),
        convention=args.convention,
    )
    pred, note = _theory(model)
    sol = model.solve(**_solver_kwargs(args))
    reports = {} if sol.zero_solution else sol.metrics()
    theory = None
    if pred is not None:
        theory = {"objective": pred.objective, "geometry": pred.geometry, **pred.extra}
    result = {
        "model": "extended-ufm",
        "activation": model.activation,
        "depth": model.depth,
        "convention": model.convention,
        **_run_fields(sol),
        **_gap(sol, pred),
        "theory": theory,
        "theory_note": note,
        "solution": sol.summary(),
        **_metric_fields(sol, {name: r.as_dict() for name, r in reports.items()} or None),
    }
    return result, pred, note, reports


_BUILDERS = {"ufm": _ufm_result, "extended-ufm": _extended_result}


def _build(
    args: argparse.Namespace,
) -> tuple[dict[str, Any], Prediction | None, str | None, dict[str, CollapseReport]]:
    flags = {**_FLAGS, "lambda_w": "--lambda-w2", "lambda_h": "--lambda-h1"}
    if args.model == "ufm":
        flags = _FLAGS
    else:
        flags.update({f"lambda_hidden[{i}]": "--lambda-w1" for i in range(1, args.depth + 1)})
    try:
        return _BUILDERS[args.model](args)
    except ValueError as err:
        raise _with_flag(err, flags) from None


def _cmd_solve(args: argparse.Namespace) -> int:
    if args.threads is not None and args.threads < 1:
        raise ValueError(f"--threads: expected an integer >= 1, got {args.threads}")
    set_threads(args.threads, "nclab solve")
    return _emit(args, *_build(args))


def _to_dict(args: argparse.Namespace) -> dict[str, Any]:
    return _json_object(_build(args)[0])


def solve_models() -> tuple[str, ...]:
    """The models ``nclab solve`` knows (each sub-command sets ``to_dict``, its JSON object)."""
    sub = argparse.ArgumentParser(prog="nclab").add_subparsers(dest="command")
    add_solve_parser(sub)
    solve = sub.choices["solve"]
    models = next(a for a in solve._actions if isinstance(a, argparse._SubParsersAction))
    return tuple(models.choices)


def solve_to_dict(argv: Sequence[str]) -> dict[str, Any]:
    """Solve the model that ``nclab solve ARGV...`` describes and return the object that
    ``nclab solve ARGV... --json`` prints (non-finite floats as None, their paths listed under
    ``non_finite``).

    ``argv`` starts with the model's name, e.g. ``["ufm", "--loss", "mse", "--classes", "4",
    ...]``; bad arguments raise ValueError naming the flag.
    """
    parser = argparse.ArgumentParser(prog="nclab")
    add_solve_parser(parser.add_subparsers(dest="command"))
    message = io.StringIO()
    try:
        with contextlib.redirect_stderr(message):
            args = parser.parse_args(["solve", *argv])
    except SystemExit:
        lines = message.getvalue().strip().splitlines()
        raise ValueError(
            f"solve arguments {list(argv)}: {lines[-1] if lines else 'invalid'}"
        ) from None
    result: dict[str, Any] = args.to_dict(args)
    return result
