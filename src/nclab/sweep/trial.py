"""Running one trial in a worker process (a local pool's worker or a Ray task).

:func:`run_trial` never raises for a trial's own failure: it returns the error and traceback,
which the driver records, so one failing trial does not stop the others. torch is imported
here, inside the worker, after the thread limits are set.
"""

from __future__ import annotations

import json
import os
import threading
import time
import traceback
from pathlib import Path
from typing import Any

from nclab.io import atomic_write_text

__all__ = ["flatten", "limit_threads", "run_trial", "watch_driver"]

_THREAD_VARS = ("OMP_NUM_THREADS", "MKL_NUM_THREADS", "OPENBLAS_NUM_THREADS")


def limit_threads(threads: int) -> None:
    """Limit this process to ``threads`` compute threads (torch intra-op, OpenMP, BLAS), so
    that P parallel trials use at most P × threads cores."""
    for var in _THREAD_VARS:
        os.environ[var] = str(threads)
    import torch

    torch.set_num_threads(threads)


def watch_driver(driver: int, interval: float = 0.2) -> None:
    """Exit this worker as soon as the sweep's driver (process ``driver``) is gone: a SIGKILLed
    driver must not leave trials running that the re-run driver would start a second time.
    The driver is watched by its id, not as the parent: a fork server's workers are its
    children, and the fork server lives as long as they do."""

    def watch() -> None:
        while _alive(driver):
            time.sleep(interval)
        os._exit(1)

    threading.Thread(target=watch, daemon=True, name="nclab-sweep-driver-watch").start()


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:  # exists, owned by another user (a reused id)
        return True
    try:  # a dead driver not yet reaped by its parent is a zombie: gone for us
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return True
    return stat.rsplit(")", 1)[1].split()[0] != "Z"


def flatten(obj: Any, prefix: str = "") -> dict[str, Any]:
    """A nested mapping as one level of dotted keys (``{"theory": {"objective": 1.0}}`` ->
    ``{"theory.objective": 1.0}``); lists become JSON text, an empty mapping or None one empty
    cell."""
    if isinstance(obj, dict) and obj:
        out: dict[str, Any] = {}
        for key, value in obj.items():
            out.update(flatten(value, f"{prefix}{key}."))
        return out
    name = prefix[:-1]
    if isinstance(obj, dict):
        return {name: None}
    if isinstance(obj, list):
        return {name: json.dumps(obj)}
    return {name: obj}


def _plain(value: Any) -> Any:
    """A row value as a JSON-able Python scalar (numpy and torch scalars become float/int)."""
    if value is None or isinstance(value, (bool, int, str)):
        return value
    if isinstance(value, float):
        return value
    if hasattr(value, "item"):
        return value.item()
    return float(value)


def run_trial(kind: str, payload: dict[str, Any], run_dir: str, threads: int) -> dict[str, Any]:
    """Run one trial into ``run_dir`` with ``threads`` compute threads.

    Returns ``{"rows": [...], "stopped_early": str | None, "seconds": float}`` or, when the
    trial raised, ``{"error": str, "traceback": str, "seconds": float}``. A training trial calls
    :func:`nclab.train.trainer.train` with ``resume=True``: an interrupted run continues from
    its checkpoint and a finished one returns its rows at once. A solve trial writes the
    ``nclab solve --json`` object to ``run_dir/result.json`` and returns it flattened as one row.
    """
    start = time.perf_counter()
    try:
        limit_threads(threads)
        rows, stopped = _run(kind, payload, Path(run_dir), threads)
    except Exception as err:  # any failure of the trial is its result, recorded by the driver
        return {
            "error": f"{type(err).__name__}: {err}",
            "traceback": traceback.format_exc(),
            "seconds": time.perf_counter() - start,
        }
    return {"rows": rows, "stopped_early": stopped, "seconds": time.perf_counter() - start}


def _run(
    kind: str, payload: dict[str, Any], out: Path, threads: int
) -> tuple[list[dict[str, Any]], str | None]:
    if kind == "train":
        from nclab.train.config import TrainConfig
        from nclab.train.trainer import train

        cfg = TrainConfig.from_dict(payload["config"])
        if cfg.run.threads is None:  # the trainer would take every core (up to 4) otherwise
            cfg.run.threads = threads
        result = train(cfg, out, resume=True)
        rows = [{k: _plain(v) for k, v in row.items()} for row in result.rows]
        return rows, result.stopped_early
    if kind == "solve":
        from nclab.models.cli import solve_to_dict

        solved = solve_to_dict(payload["argv"])
        atomic_write_text(out / "result.json", json.dumps(solved, indent=1) + "\n")
        row = {k: _plain(v) for k, v in flatten(solved).items()}
        return [row], None
    raise ValueError(f"kind: expected train or solve, got {kind!r}")
