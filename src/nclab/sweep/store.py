"""The sweep directory: the spec, the trial list, one run directory and one status file per
trial, all written atomically, so that the directory is the single source of truth for
resuming, skipping and retrying.

Layout::

    DIR/spec.yaml                  the spec (base, grid, zip, seeds, set, resources, select)
    DIR/trials.json                the trials: name, key, kind, fingerprint
    DIR/trials/NAME/               the trial's run directory (nclab train's files, or result.json)
    DIR/trials/NAME/status.json    state (pending | running | done | failed), times, attempts,
                                   the error and traceback of a failure, the rows of a done trial
    DIR/results.csv summary.csv final.csv   the gathered tables (nclab.sweep.gather)
    DIR/.lock                      held (flock) while a driver runs the sweep
"""

from __future__ import annotations

import json
import os
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import yaml

from nclab.io import atomic_write_text
from nclab.sweep.spec import SweepSpec, Trial

__all__ = ["STATES", "SweepDir"]

STATES = ("pending", "running", "done", "failed")


class SweepDir:
    """The directory ``root`` of a sweep (see the module docstring)."""

    def __init__(self, root: str | os.PathLike[str]) -> None:
        self.root = Path(root)

    def run_dir(self, trial: Trial | str) -> Path:
        name = trial if isinstance(trial, str) else trial.name
        return self.root / "trials" / name

    def status_path(self, trial: Trial | str) -> Path:
        return self.run_dir(trial) / "status.json"

    def status(self, trial: Trial | str) -> dict[str, Any]:
        """The trial's status (``{"state": "pending"}`` when none was written)."""
        path = self.status_path(trial)
        if not path.is_file():
            return {"state": "pending"}
        data: dict[str, Any] = json.loads(path.read_text())
        return data

    def write_status(self, trial: Trial | str, **fields: Any) -> dict[str, Any]:
        """Replace the trial's status with ``fields`` (atomic; ``state`` must be in STATES)."""
        if fields.get("state") not in STATES:
            raise ValueError(f"state: expected one of {STATES}, got {fields.get('state')!r}")
        name = trial if isinstance(trial, str) else trial.name
        data = {"trial": name, **fields}
        atomic_write_text(self.status_path(name), json.dumps(data, allow_nan=True) + "\n")
        return data

    def recorded_trials(self) -> list[dict[str, Any]] | None:
        path = self.root / "trials.json"
        if not path.is_file():
            return None
        data: list[dict[str, Any]] = json.loads(path.read_text())
        return data

    def recorded_spec(self) -> dict[str, Any] | None:
        path = self.root / "spec.yaml"
        if not path.is_file():
            return None
        data: dict[str, Any] = yaml.safe_load(path.read_text())
        return data

    def check(self, spec: SweepSpec, extend: bool) -> None:
        """Refuse (ValueError with a one-line diff) when the directory holds a sweep whose trials
        differ from ``spec``'s; with ``extend``, accept a spec that keeps every recorded trial
        unchanged and adds new ones (new grid values or seeds)."""
        old = self.recorded_trials()
        if old is None:
            if (self.root / "trials").exists():
                raise ValueError(f"--out: {self.root} holds trials but no trials.json; not a sweep")
            return
        old_spec = self.recorded_spec() or {}
        old_fp = {t["name"]: t["fingerprint"] for t in old}
        new_fp = {t.name: t.fingerprint for t in spec.trials}
        if old_fp == new_fp:
            return
        diff = _spec_diff(old_spec, spec.canonical())
        changed = [n for n in old_fp if n in new_fp and new_fp[n] != old_fp[n]]
        removed = [n for n in old_fp if n not in new_fp]
        if extend and not changed and not removed:
            return
        detail = diff or f"trials differ ({len(changed)} changed, e.g. a base config file edited)"
        hint = (
            "--extend keeps every recorded trial, so it applies only when values were added"
            if extend
            else "choose another --out, or pass --extend if grid values or seeds were only added"
        )
        raise ValueError(
            f"--out: {self.root} holds a sweep of a different spec ({detail}); "
            f"{len(removed)} recorded trial(s) would be dropped, {len(changed)} changed; {hint}"
        )

    def record(self, spec: SweepSpec) -> None:
        """Write the spec, the trial list and a pending status for every new trial."""
        self.root.mkdir(parents=True, exist_ok=True)
        atomic_write_text(
            self.root / "spec.yaml", yaml.safe_dump(spec.canonical(), sort_keys=False)
        )
        trials = [
            {"name": t.name, "key": t.key, "kind": t.kind, "fingerprint": t.fingerprint}
            for t in spec.trials
        ]
        atomic_write_text(self.root / "trials.json", json.dumps(trials, indent=1) + "\n")
        for trial in spec.trials:
            if not self.status_path(trial).is_file():
                self.write_status(trial, state="pending", attempts=0)

    @contextmanager
    def lock(self) -> Iterator[None]:
        """Hold the sweep's lock file: a second driver on the same directory is refused (the
        lock dies with its process, so a killed driver leaves none behind)."""
        self.root.mkdir(parents=True, exist_ok=True)
        try:
            import fcntl
        except ImportError:  # no flock (Windows): one driver per directory is the user's care
            yield
            return
        with open(self.root / ".lock", "w") as handle:
            try:
                fcntl.flock(handle, fcntl.LOCK_EX | fcntl.LOCK_NB)
            except OSError:
                raise ValueError(f"--out: another nclab sweep is running in {self.root}") from None
            handle.write(f"{os.getpid()} {time.time()}\n")
            handle.flush()
            yield


def _spec_diff(old: dict[str, Any], new: dict[str, Any]) -> str:
    """``key: old -> new`` for every spec entry that differs, e.g.
    ``grid.noise.rate: [0.0, 0.1] -> [0.0, 0.1, 0.2]``."""
    a, b = _entries(old), _entries(new)
    parts = []
    for key in [*a, *(k for k in b if k not in a)]:
        if a.get(key, _MISSING) != b.get(key, _MISSING):
            parts.append(f"{key}: {_show(a.get(key, _MISSING))} -> {_show(b.get(key, _MISSING))}")
    return "; ".join(parts)


_MISSING = object()


def _show(value: Any) -> str:
    return "(absent)" if value is _MISSING else json.dumps(value)


def _entries(spec: dict[str, Any]) -> dict[str, Any]:
    out: dict[str, Any] = {}
    for section, value in spec.items():
        if isinstance(value, dict):
            for k, v in value.items():
                out[f"{section}.{k}"] = v
        elif isinstance(value, list) and section == "zip":
            for i, group in enumerate(value):
                for k, v in group.items():
                    out[f"zip[{i}].{k}"] = v
        else:
            out[section] = value
    return out
