"""Test helper: a sweep executor that runs the trials in the test's own process (no worker
start-up: each spawned worker imports torch, seconds per pool on these 2 cores)."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import pytest


class InlineExecutor:
    def run(
        self,
        jobs: list[Any],
        started: Callable[[Any], None],
        finished: Callable[[Any, dict[str, Any]], None],
    ) -> None:
        from nclab.sweep.trial import run_trial

        for job in jobs:
            started(job)
            finished(job, run_trial(job.kind, job.payload, job.run_dir, 1))

    def close(self) -> None:
        pass


def inline_sweeps(monkeypatch: pytest.MonkeyPatch) -> None:
    """Make every string executor of run_sweep the inline one."""
    import nclab.sweep.runner

    monkeypatch.setattr(nclab.sweep.runner, "make_executor", lambda *a, **k: InlineExecutor())
