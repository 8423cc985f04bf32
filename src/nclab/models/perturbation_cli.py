"""``nclab solve perturbation``: the perturbation model of Tirer, Huang & Niles-Weed (ICML 2023)
solved from a given H0, with its response spectra and central path on request.

JSON contract (``--json``; non-finite numbers are null and listed under ``non_finite``):
``objective``, ``gradient_norm``, ``converged``, ``iterations``, ``method``, ``metrics`` (NC
report of the optimized H with W*(H)), ``metrics_h0`` (of H0 with W*(H0)), ``model`` fields and
``warnings``; with ``--spectrum``: ``spectrum`` (F of eq. 5) and ``spectrum_exact`` (J) with
``intra_max``, ``intra_min`` (class 1's block), ``inter_max`` (block (2, 1): class 1's input to
class 2's output) and ``intra_values`` (the dn singular values of F_11 / J_11, sorted descending;
null beyond dn = 6400 or with ``--extremes-only``), ``theory`` (Theorem 4.2's three values)
and ``theory_values`` (the complete closed-form list for F_kk, multiplicities expanded, sorted
descending), both at a collapsed H0; with ``--central-path T``: ``path`` = {``t``, and each recorded quantity}. Exit
code 3 when the solver did not converge, 2 for bad input (one line naming the flag).
"""

from __future__ import annotations

import argparse
import json
import math
import sys
import warnings
import zipfile
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np
import torch

from nclab.errors import renamed
from nclab.models.perturbation import PerturbationModel, check_features, collapsed_features
from nclab.models.ufm import class_labels

__all__ = ["add_perturbation_parser", "perturbation_to_dict"]

EXIT_NOT_CONVERGED = 3

_FLAGS = {
    "num_classes": "--classes",
    "per_class": "--per-class",
    "dim": "--dim",
    "lambda_w": "--lambda-w",
    "lambda_h": "--lambda-h",
    "beta": "--beta",
    "h0": "--h0",
    "seed": "--seed",
    "tol": "--tol",
    "max_iter": "--max-iter",
    "restarts": "--restarts",
    "t_end": "--central-path",
}


def add_perturbation_parser(models: Any) -> None:
    """Register ``perturbation`` on ``nclab solve``'s model subparsers."""
    p = models.add_parser(
        "perturbation",
        help="features held near H0: (1/2Kn)‖WH-Y‖² + λ_W/2K‖W‖² + λ_H/2Kn‖H‖² + β/2Kn‖H-H0‖²",
    )
    p.add_argument("--classes", type=int, required=True, help="K, number of classes")
    p.add_argument("--per-class", type=int, required=True, help="n, samples per class")
    p.add_argument("--dim", type=int, required=True, help="d, feature dimension")
    p.add_argument("--lambda-w", type=float, required=True, help="λ_W (paper normalization)")
    p.add_argument("--lambda-h", type=float, required=True, help="λ_H (paper normalization)")
    p.add_argument("--beta", type=float, required=True, help="β > 0, weight of ‖H - H0‖²")
    p.add_argument(
        "--h0",
        default="collapsed",
        help="H0: 'collapsed' (minimizer of the plain UFM with the same λ's, from a random "
        "orthonormal frame; default), 'random' (standard Gaussian entries) or FILE.npz holding "
        "an array 'h0' of shape (d, K n), features as columns in class-major order",
    )
    p.add_argument(
        "--noise", type=float, default=0.0, help="add NOISE x a seeded Gaussian matrix to H0 (0)"
    )
    p.add_argument("--seed", type=int, default=0, help="seed of the frame, H0 and noise (0)")
    p.add_argument(
        "--spectrum",
        action="store_true",
        help="singular values of the blocks of F (eq. 5) and J (exact) at the minimizer, "
        "with Theorem 4.2 and the complete closed-form spectrum",
    )
    p.add_argument(
        "--extremes-only",
        action="store_true",
        help="with --spectrum, only the extreme singular values (Lanczos; intra_values null): "
        "seconds at dn = 6400, where the complete dense block spectra take about a minute",
    )
    p.add_argument(
        "--central-path",
        type=float,
        default=None,
        metavar="T",
        help="also integrate the central path dH/dt = -Kn∇L(H) from H0 up to time T",
    )
    p.add_argument("--tol", type=float, default=1e-10, help="gradient-norm tolerance (1e-10)")
    p.add_argument("--max-iter", type=int, default=20_000, help="iteration limit (20,000)")
    p.add_argument("--restarts", type=int, default=1, help="starts: H0, then perturbed H0's (1)")
    p.add_argument("--json", action="store_true", help="print one JSON object")
    p.set_defaults(func=_cmd_perturbation, to_dict=_build)


def _finite(value: Any, where: str, found: list[str]) -> Any:
    if isinstance(value, float) and not math.isfinite(value):
        found.append(where)
        return None
    if isinstance(value, dict):
        return {k: _finite(v, f"{where}.{k}" if where else k, found) for k, v in value.items()}
    if isinstance(value, list):
        return [_finite(v, f"{where}[{i}]", found) for i, v in enumerate(value)]
    return value


def _load_h0(path: str) -> torch.Tensor:
    file = Path(path)
    if file.suffix.lower() != ".npz":
        raise ValueError(f"--h0: expected 'collapsed', 'random' or a .npz file, got {path!r}")
    if not file.is_file():
        raise ValueError(f"--h0: {path} does not exist")
    try:
        with np.load(file, allow_pickle=False) as data:
            names = list(data.files)
            if "h0" not in names:
                raise ValueError(
                    f"--h0: {path} holds no array named 'h0' (it holds {names}); expected "
                    "numpy.savez(FILE, h0=H0) with H0 of shape (d, K n)"
                )
            array = data["h0"]
    except (OSError, EOFError, zipfile.BadZipFile) as err:
        raise ValueError(f"--h0: {path} is not a readable .npz archive ({err})") from None
    if array.dtype.kind not in "fiu":
        raise ValueError(f"--h0: the array 'h0' in {path} is not numeric (dtype {array.dtype})")
    return torch.from_numpy(np.asarray(array, dtype=np.float64))


def _h0(args: argparse.Namespace) -> torch.Tensor:
    k, n, d = args.classes, args.per_class, args.dim
    if args.h0 == "collapsed":
        h0 = collapsed_features(k, n, d, args.lambda_w, args.lambda_h, seed=args.seed)
    elif args.h0 == "random":
        gen = torch.Generator().manual_seed(args.seed)
        h0 = torch.randn(d, k * n, generator=gen, dtype=torch.float64)
    else:
        h0 = check_features(_load_h0(args.h0), d, k, n, "h0")
    if not (math.isfinite(args.noise) and args.noise >= 0):
        raise ValueError(f"--noise: expected a finite number >= 0, got {args.noise!r}")
    if args.noise:
        rng = np.random.default_rng([args.seed, 1])
        h0 = h0 + args.noise * torch.from_numpy(rng.standard_normal(tuple(h0.shape)))
    return h0


def _report(h: torch.Tensor, model: PerturbationModel) -> dict[str, Any] | None:
    from nclab.metrics import measure

    labels = class_labels(model.num_classes, model.per_class)
    try:
        return measure(h.T, labels, model.optimal_weight(h)).as_dict()
    except ValueError:
        return None


def _result(args: argparse.Namespace) -> dict[str, Any]:
    if args.central_path is not None and not (0 < args.central_path < math.inf):
        raise ValueError(f"--central-path: expected a finite time T > 0, got {args.central_path}")
    h0 = _h0(args)
    model = PerturbationModel(
        args.classes, args.per_class, args.dim, args.lambda_w, args.lambda_h, args.beta, h0
    )
    sol = model.solve(
        restarts=args.restarts,
        seed=args.seed,
        tol=args.tol,
        max_iter=args.max_iter,
        progress=lambda line: print(f"nclab solve: {line}", file=sys.stderr, flush=True),
    )
    out: dict[str, Any] = {
        "model": "perturbation",
        "convention": "tirer",
        "classes": args.classes,
        "per_class": args.per_class,
        "dim": args.dim,
        "lambda_w": args.lambda_w,
        "lambda_h": args.lambda_h,
        "beta": args.beta,
        "h0": args.h0,
        "noise": args.noise,
        "objective": sol.objective,
        "gradient_norm": sol.gradient_norm,
        "converged": sol.converged,
        "iterations": sol.iterations,
        "method": sol.method,
        "distance_to_h0": float((sol.features - h0).norm()),
        "metrics": _report(sol.features, model),
        "metrics_h0": _report(h0, model),
    }
    if args.spectrum:
        out.update(_spectrum(model, sol.features, values=not args.extremes_only))
    if args.central_path is not None:
        from nclab.models.perturbation_flow import central_path

        path = central_path(h0, args.per_class, args.lambda_w, args.lambda_h, args.central_path)
        out["path"] = path.as_dict()
    return out


def _spectrum(model: PerturbationModel, h: torch.Tensor, values: bool) -> dict[str, Any]:
    from nclab.models.perturbation_spectrum import response_operators

    lw, lh, beta = model.paper_penalties()
    ops = response_operators(h, model.per_class, lw, lh, beta)
    out: dict[str, Any] = {
        "spectrum": ops.spectrum("F", values=None if values else False).as_dict(),
        "spectrum_exact": ops.spectrum("J", values=None if values else False).as_dict(),
        "theory": None,
        "theory_values": None,
        "theory_note": "the closed forms hold at a collapsed H0 (--h0 collapsed, --noise 0)",
    }
    try:
        pred = model.theory()
    except ValueError as err:
        out["theory_note"] = str(err)
        return out
    out["theory"] = dict(pred.theorem)
    out["theory_values"] = pred.values("F")
    out["theory_complete"] = pred.as_dict()
    return out


def _with_flags(err: ValueError) -> ValueError:
    return renamed(err, _FLAGS)


def _build(args: argparse.Namespace) -> dict[str, Any]:
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        try:
            result = _result(args)
        except ValueError as err:
            raise _with_flags(err) from None
    notes = list(dict.fromkeys(str(w.message) for w in caught))
    for note in notes:
        print(f"nclab solve: warning: {note}", file=sys.stderr)
    result["warnings"] = notes
    found: list[str] = []
    clean: dict[str, Any] = _finite(result, "", found)
    clean["non_finite"] = found
    return clean


def _cmd_perturbation(args: argparse.Namespace) -> int:
    result = _build(args)
    if args.json:
        print(json.dumps(result, allow_nan=False))
    else:
        status = "converged" if result["converged"] else "NOT converged"
        print(
            f"{status}: objective {result['objective']:.12g}, gradient norm "
            f"{result['gradient_norm']:.2e}, {result['iterations']} iterations ({result['method']}), "
            f"‖H - H0‖ = {result['distance_to_h0']:.3g}"
        )
        for name in ("metrics_h0", "metrics"):
            r = result[name] or {}
            print(
                f"  {'H0' if name == 'metrics_h0' else 'H '}: nc1 {r.get('nc1')}, trace ratio "
                f"{r.get('nc1_trace_ratio')}, nc2_etf_means {r.get('nc2_etf_means')}"
            )
        if "spectrum" in result:
            for key in ("spectrum", "spectrum_exact", "theory"):
                s = result[key]
                if s is not None:
                    print(
                        f"  {key}: intra_max {s['intra_max']:.10g}, intra_min "
                        f"{s['intra_min']:.10g}, inter_max {s['inter_max']:.10g}"
                    )
        if "path" in result:
            path = result["path"]
            print(
                f"  central path to t = {path['t'][-1]:.4g}: trace ratio "
                f"{path['trace_ratio'][0]} -> {path['trace_ratio'][-1]}"
            )
    return 0 if result["converged"] else EXIT_NOT_CONVERGED


def perturbation_to_dict(argv: Sequence[str]) -> dict[str, Any]:
    """The object ``nclab solve perturbation ARGV... --json`` prints (``argv`` without the
    model's name); bad arguments raise ValueError naming the flag."""
    from nclab.models.cli import solve_to_dict

    return solve_to_dict(["perturbation", *argv])
