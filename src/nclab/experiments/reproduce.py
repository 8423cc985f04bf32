"""Running a registered reproduction into its directory (``nclab reproduce NAME``).

The directory's rules: ``DIR/experiment.json`` names the reproduction and preset it holds and is
written before anything else. A directory holding a different experiment, or anything that is
not a reproduction, is refused; a directory holding the same one is continued only with
``resume`` (the sweeps inside skip their done trials and resume interrupted ones), so nothing is
ever overwritten by accident. The datasets a preset reads are checked before the marker is
written: a missing one is an error naming the file and how to get it.
"""

from __future__ import annotations

import json
import os
import time
from pathlib import Path
from typing import Any

from nclab.errors import InputError
from nclab.experiments.common import check_preset
from nclab.experiments.registry import Reproduction, RunOptions, get
from nclab.io import atomic_write_text
from nclab.train.rundir import LOCK_NAME, RunLock

__all__ = ["MARKER", "check_directory", "run_reproduction"]

MARKER = "experiment.json"


def _marker(root: Path) -> dict[str, Any] | None:
    path = root / MARKER
    if not path.is_file():
        return None
    try:
        data = json.loads(path.read_text())
    except (OSError, json.JSONDecodeError) as err:
        raise InputError(
            f"--out: {path} is not readable JSON ({err}); refusing to use {root}"
        ) from None
    return data if isinstance(data, dict) else {}


def check_directory(root: Path, name: str, preset: str, resume: bool) -> None:
    """Refuse ``root`` unless it is absent, empty, or holds ``name`` / ``preset`` and
    ``resume`` is set (module docstring)."""
    if not root.exists():
        return
    if not root.is_dir():
        raise InputError(f"--out: {root} exists and is not a directory")
    held = _marker(root)
    if held is None:
        if any(p.name != LOCK_NAME for p in root.iterdir()):  # the lock of a run here
            raise InputError(
                f"--out: {root} holds files that are not a reproduction; choose another "
                "directory (nothing was written)"
            )
        return
    if (held.get("name"), held.get("preset")) != (name, preset):
        raise InputError(
            f"--out: {root} holds the reproduction {held.get('name')!r} (preset "
            f"{held.get('preset')!r}), not {name!r} (preset {preset!r}); choose another "
            "directory (nothing was overwritten)"
        )
    if not resume:
        raise InputError(
            f"--out: {root} already holds {name!r} (preset {preset!r}); pass --resume to "
            "continue it (done trials are kept) or choose another directory"
        )


def _check_datasets(rep: Reproduction, preset: str, options: RunOptions) -> None:
    from nclab.train.data import load_dataset

    for dataset in rep.datasets.get(preset, ()):
        # Loading is the only check that the files are complete and readable; the error
        # (DatasetNotFound) names the folder, the files expected and --download / data_dir.
        load_dataset(dataset, train=False, data_dir=options.data_dir, download=options.download)


def run_reproduction(
    name: str,
    preset: str = "cpu",
    out: str | Path | None = None,
    options: RunOptions | None = None,
) -> Path:
    """Run reproduction ``name`` with ``preset`` into ``out`` (default ``runs/NAME-PRESET``);
    returns the path of its ``report.html``."""
    from nclab.report import environment, render_report, write_manifest

    options = options or RunOptions()
    try:
        rep = get(name)
    except ValueError as err:
        raise InputError(str(err)) from None
    check_preset(name, preset, rep.presets)
    root = Path(out) if out is not None else Path("runs") / f"{name}-{preset}"
    check_directory(root, name, preset, options.resume)
    _check_datasets(rep, preset, options)
    root.mkdir(parents=True, exist_ok=True)
    lock = RunLock(root)  # one writer: a second reproduce into this directory fails at once
    lock.acquire()
    try:
        check_directory(root, name, preset, options.resume)  # again, now that it is ours
        atomic_write_text(root / MARKER, json.dumps({"name": name, "preset": preset}) + "\n")
        start = time.perf_counter()
        result = rep.run(root, preset, options)
        wall = time.perf_counter() - start
    finally:
        lock.release()

    def rel(path: Path) -> str:
        return os.path.relpath(path.resolve(), root.resolve())

    write_manifest(
        root,
        {
            "name": rep.name,
            "preset": preset,
            "paper": rep.paper,
            "reproduces": rep.reproduces,
            "prediction": rep.prediction,
            "spec": result.spec,
            "figures": [[rel(Path(p)), caption] for p, caption in result.figures],
            "tables": [rel(Path(t)) for t in result.tables],
            "summary": rel(Path(result.summary)) if result.summary is not None else None,
            "summary_columns": result.summary_columns,
            "notes": result.notes,
            "wall_seconds": wall,
            "environment": environment(),
        },
    )
    return render_report(root)
