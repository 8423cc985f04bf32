"""``nclab solve md``: the memorization–dilation model (ours; :mod:`nclab.models.md`).

JSON contract (``--json``; non-finite numbers are null and listed under ``non_finite``): the
model's fields (``model`` = "md", ``loss``, ``route``, ``convention``, ``noise``,
``noise_kind``, ``expressivity``), ``objective``, ``memorization``, ``dilation`` and their
``*_scaled`` forms (divided by the mean distance between clean class means), ``margin``,
``test_error`` with ``test_error_stderr`` (0 when exact, K = 2), ``violation``,
``gradient_norm``, ``converged``, ``per_class`` (memorization and dilation of each class),
``theory`` (the reduced optimum's numbers, with ``--route features``; null with the default
``--route reduced``, which is that optimum) and ``metrics`` (NC report of the clean features).
Exit code 3 when not converged, 2 for bad input (one line naming the flag).
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from collections.abc import Callable
from typing import Any

from nclab.errors import renamed
from nclab.losses import make_loss
from nclab.models.conventions import CONVENTIONS
from nclab.models.md import NOISE_KINDS, MDModel, MDSolution

__all__ = ["ROUTES", "add_md_parser", "md_result"]

ROUTES: tuple[str, ...] = ("reduced", "features")
EXIT_NOT_CONVERGED = 3

# Python keyword -> the flag a CLI user typed, so that errors name what the user can change.
_FLAGS = {
    "num_classes": "--classes",
    "per_class": "--per-class",
    "dim": "--dim",
    "noise": "--noise",
    "noise_kind": "--noise-kind",
    "expressivity": "--expressivity",
    "loss": "--loss",
    "smoothing": "--smoothing",
    "lambda_w": "--lambda-w",
    "lambda_h": "--lambda-h",
    "lambda_b": "--lambda-b",
    "convention": "--convention",
    "restarts": "--restarts",
    "seed": "--seed",
    "tol": "--tol",
    "constraint_tol": "--constraint-tol",
    "max_iter": "--max-iter",
}


def add_md_parser(models: Any) -> None:
    """Register ``md`` on ``nclab solve``'s model subparsers."""
    p = models.add_parser(
        "md",
        help="memorization-dilation model (ours): positive UFM under label noise with "
        "D_k >= λ M_k (limited expressivity)",
    )
    p.add_argument("--classes", type=int, required=True, help="K, number of classes")
    p.add_argument("--per-class", type=int, required=True, help="n, samples per class")
    p.add_argument("--dim", type=int, default=None, help="d >= K, feature dimension (default K)")
    p.add_argument(
        "--noise",
        type=float,
        required=True,
        help="η in [0, 1): fraction of each class with a wrong label; η n must be a whole number",
    )
    p.add_argument(
        "--noise-kind",
        choices=NOISE_KINDS,
        default="symmetric",
        help="symmetric (wrong labels spread over the other classes in turn, default) or pair "
        "(class k observed as k + 1)",
    )
    p.add_argument(
        "--expressivity",
        type=float,
        required=True,
        help="λ >= 0, inverse expressivity: each class's dilation must be at least λ times its "
        "memorization (0: memorizing is free)",
    )
    p.add_argument("--loss", choices=("ce", "ls"), required=True, help="loss ℓ on observed labels")
    p.add_argument("--smoothing", type=float, default=0.0, help="α in [0, 1) of --loss ls")
    p.add_argument("--lambda-w", type=float, required=True, help="weight penalty λ_W")
    p.add_argument("--lambda-h", type=float, required=True, help="feature penalty λ_H")
    p.add_argument("--bias", action="store_true", help="include a classifier bias b")
    p.add_argument("--lambda-b", type=float, default=0.0, help="bias penalty (0: unregularized)")
    p.add_argument(
        "--convention",
        choices=CONVENTIONS,
        default="standard",
        help="normalization of the λ's: standard (Zhu et al. 2021, default) or tirer",
    )
    p.add_argument(
        "--route",
        choices=ROUTES,
        default="reduced",
        help="reduced: the exact reduction solved to machine precision (default); features: "
        "all of H, W, b by an augmented Lagrangian, reported beside the reduced optimum",
    )
    p.add_argument(
        "--restarts", type=int, default=4, help="random starts of --route features (default 4)"
    )
    p.add_argument("--seed", type=int, default=0, help="random seed (default 0)")
    p.add_argument(
        "--tol",
        type=float,
        default=1e-8,
        help="gradient-norm tolerance of --route features' inner solves (1e-8)",
    )
    p.add_argument(
        "--constraint-tol",
        type=float,
        default=1e-9,
        help="largest constraint violation λ M_k - D_k accepted by --route features (1e-9)",
    )
    p.add_argument(
        "--max-iter",
        type=int,
        default=20_000,
        help="iteration limit of each inner solve of --route features (20,000)",
    )
    p.add_argument("--json", action="store_true", help="print one JSON object")
    p.set_defaults(func=_cmd_md, to_dict=_md_dict)


def _with_flag(err: ValueError) -> ValueError:
    return renamed(err, _FLAGS)


def _fields(sol: MDSolution) -> dict[str, Any]:
    return {
        "objective": sol.objective,
        "memorization": sol.memorization,
        "dilation": sol.dilation,
        "memorization_scaled": sol.memorization_scaled,
        "dilation_scaled": sol.dilation_scaled,
        "margin": sol.margin,
        "test_error": sol.test_error,
        "test_error_stderr": sol.test_error_stderr,
        "violation": sol.violation,
        "gradient_norm": sol.gradient_norm,
        "converged": sol.converged,
    }


def _throttled(every: float = 5.0) -> Callable[[str], None]:
    """A progress sink for stderr that prints at most one line per ``every`` seconds, so that
    a long features-level solve shows it is alive without a line per Lagrangian round."""
    last = [time.monotonic()]

    def emit(line: str) -> None:
        now = time.monotonic()
        if now - last[0] >= every:
            last[0] = now
            print(f"nclab solve: {line}", file=sys.stderr, flush=True)

    return emit


def md_result(args: argparse.Namespace) -> dict[str, Any]:
    """The object ``nclab solve md ... --json`` prints, before non-finite numbers become null
    (ValueError naming the flag for bad input)."""
    try:
        model = MDModel(
            make_loss(args.loss, smoothing=args.smoothing),
            args.classes,
            args.per_class,
            args.classes if args.dim is None else args.dim,
            args.noise,
            args.expressivity,
            args.lambda_w,
            args.lambda_h,
            noise_kind=args.noise_kind,
            bias=args.bias,
            lambda_b=args.lambda_b,
            convention=args.convention,
        )
        theory = model.theory(seed=args.seed)
        sol = theory
        if args.route == "features":
            sol = model.solve(
                restarts=args.restarts,
                seed=args.seed,
                tol=args.tol,
                constraint_tol=args.constraint_tol,
                max_iter=args.max_iter,
                progress=_throttled(),
            )
    except ValueError as err:
        raise _with_flag(err) from None
    return {
        "model": "md",
        "loss": model.loss.describe(),
        "route": args.route,
        "convention": model.convention,
        "noise": model.noise,
        "noise_kind": model.noise_kind,
        "expressivity": model.expressivity,
        **_fields(sol),
        "restart_objectives": sol.restart_objectives,
        "per_class": {
            "memorization": sol.noise_report.per_class["memorization"],
            "dilation": sol.noise_report.per_class["dilation_mean"],
        },
        "theory": _fields(theory) if args.route == "features" else None,
        "metrics": sol.metrics().as_dict(),
    }


def _md_dict(args: argparse.Namespace) -> dict[str, Any]:
    from nclab.models.cli import _json_object

    return _json_object(md_result(args))


def _cmd_md(args: argparse.Namespace) -> int:
    from nclab.models.cli import _json_object

    result = md_result(args)
    if args.json:
        print(json.dumps(_json_object(result), allow_nan=False))
    else:
        status = "converged" if result["converged"] else "NOT converged"
        print(f"{status} ({args.route} route): objective {result['objective']:.12g}")
        theory = result["theory"] or {}
        for key in ("memorization", "dilation", "dilation_scaled", "margin", "test_error"):
            extra = f"   reduced {theory[key]:.8g}" if key in theory else ""
            print(f"  {key:<16} {result[key]:.8g}{extra}")
    return 0 if result["converged"] else EXIT_NOT_CONVERGED
