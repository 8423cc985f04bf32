"""``nclab demo``, ``nclab reproduce`` and ``nclab report``."""

from __future__ import annotations

import argparse
from pathlib import Path
from typing import Any

__all__ = ["add_experiment_parsers"]


def _cmd_reproduce(args: argparse.Namespace) -> int:
    from nclab.errors import InputError
    from nclab.experiments.registry import RunOptions, reproductions

    if args.list:
        _print_list(reproductions())
        return 0
    if args.name is None:
        raise InputError("NAME: give a reproduction's name, or --list to see them")
    from nclab.experiments.reproduce import run_reproduction

    if args.max_parallel is not None and args.max_parallel < 1:
        raise InputError(f"--max-parallel: expected a positive integer, got {args.max_parallel}")
    options = RunOptions(
        executor=args.executor,
        address=args.address,
        max_parallel=args.max_parallel,
        resume=args.resume,
        data_dir=args.data_dir,
        download=args.download,
    )
    report = run_reproduction(args.name, args.preset, args.out, options)
    print(f"report: {report}")
    return 0


def _print_list(found: dict[str, Any]) -> None:
    if not found:
        print("no reproductions registered")
        return
    for name, rep in found.items():
        print(f"{name}")
        print(f"  paper:      {rep.paper}")
        print(f"  reproduces: {rep.reproduces}")
        print(f"  prediction: {rep.prediction}")
        for preset in rep.presets:
            print(f"  {preset + ':':<11} {rep.runtime.get(preset, 'run time not recorded')}")
        print()


def _cmd_report(args: argparse.Namespace) -> int:
    from nclab.report import render_report

    print(f"wrote {render_report(args.dir)}")
    return 0


def _cmd_demo(args: argparse.Namespace) -> int:
    if args.synthetic:
        from nclab.experiments.demo import print_synthetic, run_demo

        out = args.out or "nclab-demo"
        print_synthetic(run_demo(out, seed=args.seed), Path(out))
        return 0
    from nclab.experiments.md_demo import print_summary, run_md_demo

    result = run_md_demo(args.out or "runs/demo", seed=args.seed, epochs=args.epochs)
    print_summary(result)
    return 0


def add_experiment_parsers(sub: Any) -> None:
    """Register ``demo``, ``reproduce`` and ``report`` on the ``nclab`` sub-parsers."""
    demo = sub.add_parser(
        "demo",
        help="the MD setting, CE vs label smoothing under 20%% label noise, with its report "
        "(--synthetic: the seconds-long check of the metrics and UFM solvers)",
    )
    demo.add_argument(
        "--synthetic",
        action="store_true",
        help="run the synthetic check instead: Gaussian classes around a simplex ETF and four "
        "UFM solves against their closed forms (seconds)",
    )
    demo.add_argument(
        "--out",
        default=None,
        help="output directory (default: runs/demo; nclab-demo with --synthetic); an existing "
        "demo directory is replaced only by a demo",
    )
    demo.add_argument("--seed", type=int, default=0, help="random seed (default: 0)")
    demo.add_argument(
        "--epochs",
        type=int,
        default=None,
        help="training epochs of each network (default: the demo's 60)",
    )
    demo.set_defaults(func=_cmd_demo)

    rep = sub.add_parser(
        "reproduce",
        help="run a seed paper's experiment (grid, figures, report); --list shows them",
    )
    rep.add_argument("name", nargs="?", default=None, help="the reproduction (see --list)")
    rep.add_argument(
        "--list",
        action="store_true",
        help="list the reproductions: paper, figure, prediction, run time per preset",
    )
    rep.add_argument(
        "--preset",
        default="cpu",
        choices=["smoke", "cpu", "gpu"],
        help="smoke (seconds), cpu (minutes on 2 cores; default) or gpu (the paper's scale)",
    )
    rep.add_argument("--out", default=None, help="output directory (default: runs/NAME-PRESET)")
    rep.add_argument(
        "--executor",
        default="local",
        choices=["local", "ray"],
        help="sweep executor: local process pool (default) or Ray tasks",
    )
    rep.add_argument(
        "--address", default=None, help="Ray cluster address (auto or HOST:PORT; ray only)"
    )
    rep.add_argument(
        "--max-parallel", type=int, default=None, help="most trials at once (default: all cores)"
    )
    rep.add_argument(
        "--resume",
        action="store_true",
        help="continue the same reproduction in --out (done trials are kept)",
    )
    rep.add_argument(
        "--data-dir",
        default=None,
        help="folder holding the datasets of the gpu preset (default: $NCLAB_DATA, the cache)",
    )
    rep.add_argument(
        "--download",
        action="store_true",
        help="download a missing dataset (checksums verified; needs internet)",
    )
    rep.set_defaults(func=_cmd_reproduce)

    report = sub.add_parser(
        "report",
        help="(re)build DIR/report.html for a training run, a sweep or a reproduction",
    )
    report.add_argument(
        "dir", help="a run (metrics.csv), sweep (trials.json) or reproduction directory"
    )
    report.set_defaults(func=_cmd_report)
