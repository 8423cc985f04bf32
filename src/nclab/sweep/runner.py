"""The driver: validate, record, run the trials that are not done, record each result, gather.

Re-running the same command continues a sweep: done trials are skipped, pending and running
ones (the driver was killed) run again (a training run resumes from its checkpoint), failed
ones are reported and rerun only with ``retry_failed``. Every status is written atomically the
moment it changes, so a SIGKILL at any point loses at most the trials in flight, which resume.
"""

from __future__ import annotations

import datetime
import os
import sys
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from nclab.sweep.executors import Executor, Job, make_executor
from nclab.sweep.gather import Tables, gather
from nclab.sweep.spec import SweepSpec, Trial
from nclab.sweep.store import SweepDir

__all__ = ["SweepResult", "plan", "run_sweep"]


@dataclass
class SweepResult:
    """What a driver run did: ``ran`` trials run now, ``skipped`` (done before), ``failed``
    (name and error: failed now, or before and not retried) and the gathered tables."""

    root: Path
    ran: list[str] = field(default_factory=list)
    skipped: list[str] = field(default_factory=list)
    failed: list[tuple[str, str]] = field(default_factory=list)
    stopped_early: list[tuple[str, str]] = field(default_factory=list)
    tables: Tables | None = None


def plan(spec: SweepSpec, out: str | Path) -> list[tuple[Trial, str, Path]]:
    """Each trial with its recorded state and run directory (nothing is written)."""
    sd = SweepDir(out)
    return [(t, str(sd.status(t).get("state", "pending")), sd.run_dir(t)) for t in spec.trials]


def _gpu_trials(spec: SweepSpec) -> bool:
    if spec.gpus > 0:
        return True
    if spec.kind != "train":
        return False
    devices = {t.payload["config"]["run"]["device"] for t in spec.trials}
    if "cuda" in devices:
        return True
    if "auto" in devices:
        import torch

        return bool(torch.cuda.is_available())
    return False


def _now() -> str:
    return datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds")


def run_sweep(
    spec: SweepSpec,
    out: str | Path,
    *,
    executor: str | Executor = "local",
    address: str | None = None,
    max_parallel: int | None = None,
    retry_failed: bool = False,
    extend: bool = False,
    echo: Callable[[str], None] | None = None,
    progress: bool | None = None,
) -> SweepResult:
    """Run the sweep ``spec`` in the directory ``out`` and gather its tables.

    ``executor``: ``local`` (process pool), ``ray``, or an executor object. ``echo`` receives
    one line per finished trial when there is no progress bar (``progress``: default, a bar
    when stderr is a terminal outside CI). Bad arguments, a missing Ray, or a directory holding
    a different sweep raise ValueError before anything is written.
    """
    sd = SweepDir(out)
    runner = (
        make_executor(
            executor,
            address=address,
            max_parallel=max_parallel,
            cpus=spec.cpus,
            gpus=spec.gpus,
            gpu_trials=_gpu_trials(spec),
        )
        if isinstance(executor, str)
        else executor
    )
    sd.check(spec, extend)
    result = SweepResult(root=sd.root)
    try:
        with sd.lock():
            sd.check(spec, extend)
            sd.record(spec)
            jobs = []
            for trial in spec.trials:
                status = sd.status(trial)
                state = status.get("state")
                if state == "done":
                    result.skipped.append(trial.name)
                elif state == "failed" and not retry_failed:
                    result.failed.append((trial.name, str(status.get("error"))))
                else:
                    jobs.append(Job(trial.name, trial.kind, trial.payload, str(sd.run_dir(trial))))
            if jobs:
                _execute(sd, runner, jobs, result, echo, progress)
            result.tables = gather(sd.root)
    finally:
        if isinstance(executor, str):
            runner.close()
    return result


class _Progress:
    """One bar over trials (done / running / failed, ETA) on a terminal; otherwise one line
    per finished trial through ``echo``."""

    def __init__(
        self, total: int, skipped: int, echo: Callable[[str], None] | None, bar: bool | None
    ) -> None:
        self.total, self.count = total, skipped
        self.running = self.failed = 0
        self.echo = echo
        if bar is None:
            bar = sys.stderr.isatty() and not os.environ.get("CI")
        self.bar: Any = None
        if bar:
            from tqdm import tqdm

            self.bar = tqdm(total=total, initial=skipped, unit="trial", desc="nclab sweep")

    def started(self) -> None:
        self.running += 1
        self._postfix()

    def finished(self, name: str, result: dict[str, Any]) -> None:
        self.running -= 1
        self.count += 1
        failed = "error" in result
        self.failed += failed
        if self.bar is not None:
            self.bar.update(1)
            self._postfix()
        elif self.echo is not None:
            seconds = result.get("seconds", 0.0)
            what = f"failed: {result['error']}" if failed else "done"
            self.echo(f"[{self.count}/{self.total}] {name} {what} ({seconds:.1f} s)")

    def _postfix(self) -> None:
        if self.bar is not None:
            self.bar.set_postfix(running=self.running, failed=self.failed)

    def close(self) -> None:
        if self.bar is not None:
            self.bar.close()


def _execute(
    sd: SweepDir,
    runner: Executor,
    jobs: list[Job],
    result: SweepResult,
    echo: Callable[[str], None] | None,
    progress: bool | None,
) -> None:
    # Failed trials that are not retried are reported at the end, not counted by the bar.
    bar = _Progress(len(jobs) + len(result.skipped), len(result.skipped), echo, progress)
    attempts: dict[str, int] = {}

    def started(job: Job) -> None:
        attempts[job.name] = int(sd.status(job.name).get("attempts", 0)) + 1
        sd.write_status(job.name, state="running", attempts=attempts[job.name], started=_now())
        bar.started()

    def finished(job: Job, outcome: dict[str, Any]) -> None:
        common = {
            "attempts": attempts[job.name],
            "finished": _now(),
            "seconds": outcome.get("seconds"),
        }
        if "error" in outcome:
            sd.write_status(
                job.name,
                state="failed",
                error=outcome["error"],
                traceback=outcome.get("traceback", ""),
                **common,
            )
            result.failed.append((job.name, outcome["error"]))
        else:
            sd.write_status(
                job.name,
                state="done",
                stopped_early=outcome.get("stopped_early"),
                rows=outcome["rows"],
                **common,
            )
            if outcome.get("stopped_early"):
                result.stopped_early.append((job.name, outcome["stopped_early"]))
        result.ran.append(job.name)
        bar.finished(job.name, outcome)

    try:
        runner.run(jobs, started, finished)
    finally:
        bar.close()
