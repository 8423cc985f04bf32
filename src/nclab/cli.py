"""The ``nclab`` command line: ``nclab demo``, ``nclab metrics FILE``, ``nclab solve MODEL``,
``nclab train``, ``nclab plot RUN``, ``nclab reproduce NAME``, ``nclab report DIR``."""

from __future__ import annotations

import argparse
import os
import sys
import warnings
import zipfile
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np

__all__ = ["main"]


class UsageError(Exception):
    """A user error the CLI reports in one line (exit code 2)."""


def _load_arrays(path: Path) -> dict[str, Any]:
    """The arrays of a .npz file (no pickles) or a torch .pt dict (weights_only: no code runs);
    any file that is not one of these is a UsageError naming it and what was expected."""
    if not path.is_file():
        raise UsageError(f"FILE: {path} does not exist")
    suffix = path.suffix.lower()
    if suffix == ".npz":
        try:
            loaded = np.load(path, allow_pickle=False)
            if not isinstance(loaded, np.lib.npyio.NpzFile):
                raise UsageError(f"FILE: {path} is a single .npy array, not an .npz archive")
            with loaded as data:
                return {key: data[key] for key in data.files}
        except UsageError:
            raise
        except (OSError, ValueError, EOFError, zipfile.BadZipFile, KeyError) as err:
            raise UsageError(
                f"FILE: {path} is not a readable .npz archive of numeric arrays "
                f"({_reason(err)}); expected numpy.savez(path, features=..., labels=...)"
            ) from None
    if suffix in (".pt", ".pth"):
        import pickle

        import torch

        try:
            with warnings.catch_warnings():
                warnings.simplefilter("ignore")  # torch's notes on the pickle protocol
                obj = torch.load(path, map_location="cpu", weights_only=True)
        except pickle.UnpicklingError:
            raise UsageError(
                f"FILE: {path} is not a torch file of tensors (it is not a torch archive, or it "
                "holds pickled objects, which are never loaded); expected "
                "torch.save({'features': ..., 'labels': ...}, path)"
            ) from None
        except (OSError, RuntimeError, EOFError, ValueError) as err:
            raise UsageError(
                f"FILE: {path} is not a readable torch file ({_reason(err)}); expected "
                "torch.save({'features': ..., 'labels': ...}, path)"
            ) from None
        if not isinstance(obj, dict):
            raise UsageError(f"FILE: {path} must hold a dict of tensors, got {type(obj).__name__}")
        return dict(obj)
    raise UsageError(f"FILE: expected a .npz or .pt file, got {path.name!r}")


def _version() -> str:
    from importlib.metadata import PackageNotFoundError, version

    try:
        return version("nclab")
    except PackageNotFoundError:
        return "unknown (not installed)"


def _reason(err: BaseException) -> str:
    text = str(err).strip().splitlines()
    return f"{type(err).__name__}: {text[0][:160]}" if text else type(err).__name__


def _cmd_metrics(args: argparse.Namespace) -> int:
    from nclab.metrics import measure

    data = _load_arrays(Path(args.file))
    keys = {"features": args.features_key, "labels": args.labels_key}
    keys.update(weight=args.weight_key, bias=args.bias_key)
    missing = [
        key for role, key in keys.items() if role in ("features", "labels") and key not in data
    ]
    if missing:
        flags = ", ".join(f"--{role}-key" for role, key in keys.items() if key in missing)
        raise UsageError(
            f"FILE: no array named {missing} in {args.file}; it holds {sorted(data)} "
            f"(choose others with {flags})"
        )
    try:
        report = measure(
            data[keys["features"]],
            data[keys["labels"]],
            data.get(keys["weight"]),
            data.get(keys["bias"]),
            num_classes=args.num_classes,
            global_mean=args.global_mean,
            within_class=args.within_class,
            center_weights=args.center_weights,
            rank_rtol=args.rank_rtol,
            drop_empty_classes=args.drop_empty_classes,
        )
    except ValueError as err:
        raise UsageError(_as_flags(str(err))) from None
    print(report.to_json() if args.json else report.to_table())
    return 0


# Python keywords in the metrics' messages -> the flags of `nclab metrics`.
_METRIC_FLAGS = {
    "drop_empty_classes=True": "--drop-empty-classes",
    "num_classes=": "--num-classes",
    "num_classes:": "--num-classes:",
    "rank_rtol:": "--rank-rtol:",
}


def _as_flags(message: str) -> str:
    for keyword, flag in _METRIC_FLAGS.items():
        message = message.replace(keyword, flag)
    return message


def _cmd_plot(args: argparse.Namespace) -> int:
    from nclab.train.figures import figure_format, plot_run

    if args.out is not None:
        figure_format(args.out, "--out")  # the error names the flag, before the run is read
    path = plot_run(args.run, args.out, layers=args.layers)
    print(f"wrote {path}")
    return 0


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="nclab", description="Neural collapse toolkit.")
    parser.add_argument("--version", action="version", version=f"nclab {_version()}")
    sub = parser.add_subparsers(dest="command", required=True)

    from nclab.experiments.cli import add_experiment_parsers

    add_experiment_parsers(sub)

    met = sub.add_parser("metrics", help="neural-collapse metrics of saved features")
    met.add_argument(
        "file",
        help=".npz or .pt dict with 'features' (N, d), 'labels' (N,), optional "
        "'weight' (K, d) and 'bias' (K,)",
    )
    met.add_argument("--json", action="store_true", help="print one JSON object instead of a table")
    met.add_argument("--num-classes", type=int, default=None, help="K (default: max label + 1)")
    met.add_argument(
        "--global-mean",
        choices=["sample", "class"],
        default="sample",
        help="global mean: sample mean (default) or mean of class means",
    )
    met.add_argument(
        "--within-class",
        choices=["pooled", "class_balanced"],
        default="pooled",
        help="within-class covariance: pooled over samples (default) or averaged over classes",
    )
    met.add_argument(
        "--center-weights",
        action="store_true",
        help="centre the classifier rows before comparing W Wᵀ with the simplex ETF",
    )
    met.add_argument(
        "--drop-empty-classes",
        action="store_true",
        help="measure only the classes with samples instead of failing on an empty class",
    )
    met.add_argument(
        "--rank-rtol",
        type=float,
        default=None,
        help="singular values of the centred class means below RANK_RTOL x the largest count "
        "as zero in Σ_B^† (default max(K, d)·eps(float64))",
    )
    for role, default in (("features", "features"), ("labels", "labels")):
        met.add_argument(
            f"--{role}-key", default=default, help=f"name of the {role} array in FILE ({default})"
        )
    for role in ("weight", "bias"):
        met.add_argument(
            f"--{role}-key",
            default=role,
            help=f"name of the classifier {role} array in FILE, used when present ({role})",
        )
    met.set_defaults(func=_cmd_metrics)

    from nclab.models.cli import add_solve_parser
    from nclab.sweep.cli import add_sweep_parsers
    from nclab.train.cli import add_train_parser

    add_solve_parser(sub)
    add_train_parser(sub)
    add_sweep_parsers(sub)

    plot = sub.add_parser(
        "plot",
        help="figure of a training run: accuracy, NC1-NC4, memorization and dilation by epoch",
    )
    plot.add_argument("run", help="run directory written by `nclab train` (holds metrics.csv)")
    plot.add_argument(
        "--out",
        default=None,
        metavar="FILE",
        help="file to write, its format from the extension: .png, .pdf or .svg "
        "(default RUN/metrics.png)",
    )
    plot.add_argument(
        "--layers",
        nargs="+",
        default=None,
        metavar="NAME",
        help="tracked layers to draw (default: all); each keeps its colour of the full figure",
    )
    plot.set_defaults(func=_cmd_plot)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    """Run ``nclab``; exit code 2 for bad input (a ValueError, which every error nclab raises
    about its input is, or a missing file), printed as one line. Anything else is an internal
    failure and surfaces with its traceback."""
    parser = build_parser()
    args = parser.parse_args(argv)
    try:
        code: int = args.func(args)
    except (UsageError, ValueError, FileNotFoundError) as err:
        print(f"nclab {args.command}: error: {err}", file=sys.stderr)
        return 2
    except BrokenPipeError:  # the reader (e.g. `| head`) stopped reading: not an error of ours
        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
        return 0
    return code


if __name__ == "__main__":
    sys.exit(main())
