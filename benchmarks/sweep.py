"""Benchmark of the sweep engine: parallel speed-up, the driver's own overhead, Ray against the
local pool; all ratios from one run.

Run: ``python benchmarks/sweep.py`` (8 cpu-mlp trials of ``--epochs 8``, about three minutes on
2 cores; ``--no-ray`` without Ray). ``--preset smoke --epochs 1 --trials 2`` is a toy size.

* ``serial``: the trials one after another (local executor, ``--max-parallel 1``), with one
  thread (the same numbers as the parallel sweeps) and with every core's threads
  (``resources.cpus`` = cores: the fastest one-at-a-time baseline, other rounding);
* ``local``: the local executor with P = cores workers, one thread each;
* ``ray``: the Ray executor on a local instance (``num_cpus`` = cores, 1 CPU per trial), timed
  without and with the instance's start-up (``ray.init``) and shutdown;
* ``driver``: the driver's own work per trial (recording the spec, writing two statuses,
  gathering results/final/summary) with an executor that returns at once the rows a real trial
  returned, timed over ``--driver-trials`` trials: the scheduling and gathering cost, nothing of
  the trial, relative to a 10-second trial;
* ``end to end``: the serial sweep's wall time minus the seconds its workers spent in the trials
  (each worker's own timer), per trial: the driver plus the worker pool's start-up and the
  hand-over of each trial.

Every sweep runs in a fresh temporary directory; the gathered tables of the four sweeps are
checked equal (the trials are seeded and deterministic on the CPU).
"""

from __future__ import annotations

import argparse
import json
import tempfile
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

from nclab.sweep.executors import Job
from nclab.sweep.runner import run_sweep
from nclab.sweep.spec import SweepSpec, parse_spec
from nclab.sweep.store import SweepDir
from nclab.threads import available_cores


def _spec(preset: str, epochs: int, trials: int, cpus: int = 1) -> SweepSpec:
    return parse_spec(
        {
            "base": preset,
            "seeds": list(range(trials)),
            "set": {"optim.epochs": epochs},
            "resources": {"cpus": cpus},
        }
    )


def _sweep(spec: SweepSpec, out: Path, **options: Any) -> tuple[float, str, float]:
    """Wall seconds, results.csv, and the seconds the workers spent in the trials."""
    start = time.perf_counter()
    result = run_sweep(spec, out, progress=False, **options)
    wall = time.perf_counter() - start
    assert not result.failed, result.failed
    sd = SweepDir(out)
    inside = sum(float(sd.status(t)["seconds"]) for t in spec.trials)
    return wall, (out / "results.csv").read_text(), inside


class _Instant:
    """An executor that returns the given rows at once: what is left is the driver's work."""

    parallel = 1

    def __init__(self, rows: list[dict[str, Any]]) -> None:
        self.rows = rows

    def run(
        self,
        jobs: list[Job],
        started: Callable[[Job], None],
        finished: Callable[[Job, dict[str, Any]], None],
    ) -> None:
        for job in jobs:
            started(job)
            finished(job, {"rows": self.rows, "stopped_early": None, "seconds": 0.0})

    def close(self) -> None:
        pass


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--preset", default="cpu-mlp", help="training preset of the trials")
    parser.add_argument("--epochs", type=int, default=8, help="epochs per trial (default 8)")
    parser.add_argument("--trials", type=int, default=8, help="trials (seeds) in the grid")
    parser.add_argument(
        "--driver-trials", type=int, default=200, help="trials of the driver-overhead sweep"
    )
    parser.add_argument("--no-ray", action="store_true", help="skip the Ray rows")
    args = parser.parse_args()
    spec = _spec(args.preset, args.epochs, args.trials)
    cores = available_cores()
    out: dict[str, Any] = {"cores": cores, "trials": args.trials, "preset": args.preset}
    with tempfile.TemporaryDirectory() as tmp:
        root = Path(tmp)
        serial, table, inside = _sweep(spec, root / "serial", max_parallel=1)
        wide = _spec(args.preset, args.epochs, args.trials, cpus=cores)
        serial_wide, _, wide_inside = _sweep(wide, root / "serial-wide", max_parallel=1)
        local, local_table, local_inside = _sweep(spec, root / "local", max_parallel=cores)
        assert local_table == table
        out["serial_1thread_s"], out[f"serial_{cores}threads_s"] = serial, serial_wide
        out["local_s"] = local
        out["trial_s_serial_1thread"] = inside / args.trials
        out[f"trial_s_serial_{cores}threads"] = wide_inside / args.trials
        out["trial_s_local"] = local_inside / args.trials
        out["speedup_local_vs_serial_1thread"] = serial / local
        out[f"speedup_local_vs_serial_{cores}threads"] = serial_wide / local
        out["end_to_end_overhead_per_trial_s"] = (serial - inside) / args.trials

        rows = SweepDir(root / "serial").status(spec.trials[0])["rows"]
        many = _spec("smoke", 1, args.driver_trials)
        start = time.perf_counter()
        run_sweep(many, root / "driver", executor=_Instant(rows), progress=False)
        per_trial = (time.perf_counter() - start) / args.driver_trials
        out["driver_rows_per_trial"] = len(rows)
        out["driver_s_per_trial"] = per_trial
        out["driver_fraction_of_10s_trial"] = per_trial / 10.0

        if not args.no_ray:
            import ray

            from nclab.sweep.executors import RayExecutor

            start = time.perf_counter()
            ray.init(num_cpus=cores, include_dashboard=False, log_to_driver=False)
            init = time.perf_counter() - start
            ray_wall, ray_table, _ = _sweep(spec, root / "ray", executor=RayExecutor())
            start = time.perf_counter()
            ray.shutdown()
            shutdown = time.perf_counter() - start
            assert ray_table == table
            out["ray_init_s"], out["ray_shutdown_s"], out["ray_s"] = init, shutdown, ray_wall
            out["ray_vs_local_without_startup"] = ray_wall / local
            out["ray_vs_local_with_startup"] = (init + ray_wall + shutdown) / local
    print(json.dumps(out, indent=1))


if __name__ == "__main__":
    main()
