"""``nclab sweep SPEC.yaml [--out DIR] [--executor local|ray] [--address ADDR] [--max-parallel P]
[--retry-failed] [--extend] [--dry-run]`` and ``nclab sweep-plot DIR --x KEY --y COLUMN
[--hue KEY] [--log] [--where KEY=VALUE ...]``."""

from __future__ import annotations

import argparse
import json
from pathlib import Path
from typing import Any

import yaml

__all__ = ["add_sweep_parsers"]


def add_sweep_parsers(sub: Any) -> None:
    """Register ``nclab sweep`` and ``nclab sweep-plot`` on the top-level subparsers."""
    p = sub.add_parser(
        "sweep",
        help="run a grid of training runs or model solves (local pool or Ray), resumably",
        description="Run the trials of a sweep spec (docs/sweeps.md); re-running the command "
        "skips done trials and resumes interrupted ones.",
    )
    p.add_argument("spec", help="sweep spec (YAML: base, grid, zip, seeds, set, resources, select)")
    p.add_argument("--out", default=None, help="sweep directory (default sweeps/<spec name>)")
    p.add_argument(
        "--executor",
        choices=["local", "ray"],
        default="local",
        help="local: a process pool on this machine (default); ray: one Ray task per trial",
    )
    p.add_argument(
        "--address",
        default=None,
        help="Ray cluster to join (auto or HOST:PORT; default: start a local Ray instance)",
    )
    p.add_argument(
        "--max-parallel",
        type=int,
        default=None,
        help="trials run at once (local default: cores // resources.cpus, 1 for GPU trials; "
        "ray default: as many as the cluster's resources allow)",
    )
    p.add_argument(
        "--retry-failed", action="store_true", help="rerun the trials that failed before"
    )
    p.add_argument(
        "--extend",
        action="store_true",
        help="accept a spec that only adds grid values or seeds to the sweep in --out",
    )
    p.add_argument(
        "--dry-run",
        action="store_true",
        help="list the trials (state, run directory, key) without running or writing anything",
    )
    p.set_defaults(func=_cmd_sweep)

    plot = sub.add_parser(
        "sweep-plot",
        help="figure of a sweep: a column against a grid key, mean ± std over seeds",
    )
    plot.add_argument("dir", help="sweep directory written by `nclab sweep`")
    plot.add_argument("--x", required=True, help="grid key on the x axis")
    plot.add_argument("--y", required=True, help="column of the trials' final rows to draw")
    plot.add_argument("--hue", default=None, help="grid key drawn as one line per value")
    plot.add_argument("--log", action="store_true", help="logarithmic y axis")
    plot.add_argument("--logx", action="store_true", help="logarithmic x axis")
    plot.add_argument(
        "--layer", default=None, help="tracked layer of training rows (default penultimate)"
    )
    plot.add_argument(
        "--split", default="train", help="split of training rows: train (default) or test"
    )
    plot.add_argument(
        "--where",
        nargs="+",
        default=[],
        metavar="KEY=VALUE",
        help="fix the other grid keys, e.g. --where loss.name=ce (value parsed as YAML)",
    )
    plot.add_argument("--out", default=None, help="PNG file to write (default DIR/Y_vs_X.png)")
    plot.set_defaults(func=_cmd_sweep_plot)


def _cmd_sweep(args: argparse.Namespace) -> int:
    from nclab.sweep.runner import plan, run_sweep
    from nclab.sweep.spec import load_spec

    if args.max_parallel is not None and args.max_parallel < 1:
        raise ValueError(f"--max-parallel: expected at least 1, got {args.max_parallel}")
    spec = load_spec(args.spec)
    out = Path(args.out) if args.out else Path("sweeps") / Path(args.spec).stem
    if args.dry_run:
        trials = plan(spec, out)
        for trial, state, run_dir in trials:
            print(f"{state:<8} {run_dir}  {json.dumps(trial.key)}")
        print(f"{len(trials)} trials ({spec.kind}) in {out}")
        return 0
    result = run_sweep(
        spec,
        out,
        executor=args.executor,
        address=args.address,
        max_parallel=args.max_parallel,
        retry_failed=args.retry_failed,
        extend=args.extend,
        echo=print,
    )
    tables = result.tables
    assert tables is not None  # run_sweep gathers before it returns
    print(
        f"{tables.done}/{tables.trials} trials done ({len(result.ran)} run now, "
        f"{len(result.skipped)} done before); wrote {tables.results} ({tables.rows} rows), "
        f"{tables.final.name}, {tables.summary.name}"
    )
    for name, message in result.stopped_early:
        print(f"stopped early: {name}: {message}")
    for name, error in result.failed:
        print(f"failed: {name}: {error} (traceback in {out / 'trials' / name / 'status.json'})")
    if result.failed:
        print(f"{len(result.failed)} trial(s) failed; rerun them with --retry-failed")
        return 1
    return 0


def _cmd_sweep_plot(args: argparse.Namespace) -> int:
    from nclab.sweep.figure import plot_sweep

    where = {}
    for item in args.where:
        if "=" not in item:
            raise ValueError(f"--where: expected KEY=VALUE, got {item!r}")
        key, raw = item.split("=", 1)
        where[key] = yaml.safe_load(raw)
    path = plot_sweep(
        args.dir,
        args.x,
        args.y,
        out=args.out,
        hue=args.hue,
        log=args.log,
        logx=args.logx,
        layer=args.layer,
        split=args.split,
        where=where,
    )
    print(f"wrote {path}")
    return 0
