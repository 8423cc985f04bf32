"""Rendering ``DIR/report.html`` for a reproduction, a sweep or a training run directory.

The kind is read off the directory: ``reproduction.json`` (written by ``nclab reproduce`` and
``nclab demo``: what was run, the figures with their captions, the tables, the notes, the
environment and wall time), ``trials.json`` (a sweep: its spec, ``summary.csv`` and any PNG
figure in the directory), or ``metrics.csv`` (a training run: its per-epoch figure, drawn by
:func:`nclab.train.figures.plot_run`, and its table). Every value is escaped by the template
(Jinja2 autoescape), so a config value such as ``<script>`` shows as text. Figures are embedded
as ``data:`` URIs: the page opens from disk with no server or network.
"""

from __future__ import annotations

import base64
import csv
import datetime
import json
import math
import os
import platform
import subprocess
import sys
from pathlib import Path
from typing import Any

from nclab.errors import InputError
from nclab.io import atomic_write_text

__all__ = ["MANIFEST", "environment", "render_report", "write_manifest"]

MANIFEST = "reproduction.json"
_MAX_ROWS = 400
_RUN_COLUMNS = (
    "epoch",
    "split",
    "layer",
    "train_loss",
    "acc_observed",
    "acc_true",
    "test_acc",
    "nc1",
    "clean_nc1",
    "memorization_scaled",
    "dilation_mean_scaled",
    "nc2_etf_means",
    "nc2_of_means",
    "nc3_duality",
)


def environment() -> dict[str, str]:
    """Package versions, Python, platform, the torch device and the git commit of the source
    tree when it is a git checkout."""
    from importlib.metadata import PackageNotFoundError, version

    env: dict[str, str] = {}
    for package in ("nclab", "torch", "numpy", "scipy", "matplotlib", "jinja2"):
        try:
            env[package] = version(package)
        except PackageNotFoundError:
            env[package] = "not installed"
    env["python"] = sys.version.split()[0]
    env["platform"] = platform.platform()
    env["cpus"] = str(os.cpu_count())
    try:
        import torch

        env["device"] = (
            f"cuda: {torch.cuda.get_device_name(0)}" if torch.cuda.is_available() else "cpu"
        )
    except ImportError:
        env["device"] = "cpu"
    env["git commit"] = _git_commit() or "none (not a git checkout)"
    env["recorded"] = datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds")
    return env


def _git_commit() -> str | None:
    source = Path(__file__).resolve().parent
    try:
        done = subprocess.run(
            ["git", "-C", str(source), "rev-parse", "HEAD"],
            capture_output=True,
            text=True,
            timeout=10,
            check=False,
        )
    except (OSError, subprocess.SubprocessError):
        return None
    return done.stdout.strip() or None if done.returncode == 0 else None


def write_manifest(directory: str | os.PathLike[str], manifest: dict[str, Any]) -> Path:
    """Write ``DIR/reproduction.json`` atomically (paths relative to DIR)."""
    return atomic_write_text(Path(directory) / MANIFEST, json.dumps(manifest, indent=2) + "\n")


def render_report(directory: str | os.PathLike[str]) -> Path:
    """(Re)build ``DIR/report.html`` for the run, sweep or reproduction in ``directory``."""
    root = Path(directory)
    if not root.is_dir():
        raise FileNotFoundError(f"DIR: {root} is not a directory")
    if (root / MANIFEST).is_file():
        context = _reproduction_context(root)
    elif (root / "trials.json").is_file():
        context = _sweep_context(root)
    elif (root / "metrics.csv").is_file():
        context = _run_context(root)
    else:
        raise InputError(
            f"DIR: {root} holds no reproduction ({MANIFEST}), sweep (trials.json) or training "
            "run (metrics.csv)"
        )
    html = _template().render(**context)
    return atomic_write_text(root / "report.html", html)


def _template() -> Any:
    from jinja2 import Environment, PackageLoader, StrictUndefined

    env = Environment(
        loader=PackageLoader("nclab.report", "templates"),
        autoescape=True,
        undefined=StrictUndefined,
        keep_trailing_newline=True,
    )
    return env.get_template("report.html.j2")


def _figure(root: Path, path: Path, caption: str) -> dict[str, str]:
    full = path if path.is_absolute() else root / path
    if not full.is_file():
        raise FileNotFoundError(f"DIR: the figure {full} listed for the report does not exist")
    data = base64.b64encode(full.read_bytes()).decode("ascii")
    return {"name": full.stem, "caption": caption, "data": data}


def _cell(value: Any) -> dict[str, Any]:
    if isinstance(value, bool) or value is None:
        return {"value": "" if value is None else str(value), "text": True}
    if isinstance(value, (int, float)):
        if isinstance(value, float) and math.isnan(value):
            return {"value": "", "text": False}
        return {"value": f"{value:.4g}", "text": False}
    try:
        return {"value": f"{float(value):.4g}", "text": False}
    except (TypeError, ValueError):
        return {"value": str(value), "text": True}


def _table(
    title: str, rows: list[dict[str, Any]], columns: list[str] | None
) -> dict[str, Any] | None:
    if not rows:
        return None
    if not columns:
        columns = list(rows[0])
    columns = [c for c in columns if any(c in r for r in rows)]
    shown = rows[:_MAX_ROWS]
    truncated = (
        f"First {_MAX_ROWS} of {len(rows)} rows; the whole table is in the raw tables below."
        if len(rows) > _MAX_ROWS
        else ""
    )
    return {
        "title": title,
        "columns": columns,
        "rows": [[_cell(r.get(c)) for c in columns] for r in shown],
        "truncated": truncated,
    }


def _read_csv(path: Path) -> list[dict[str, Any]]:
    with path.open(newline="") as handle:
        return list(csv.DictReader(handle))


def _env_items(env: dict[str, Any]) -> list[tuple[str, str]]:
    return [(str(k), str(v)) for k, v in env.items()]


def _wall(seconds: Any) -> str:
    if not isinstance(seconds, (int, float)):
        return ""
    return f"{seconds:.0f} s" if seconds < 120 else f"{seconds / 60:.1f} min"


def _reproduction_context(root: Path) -> dict[str, Any]:
    try:
        m = json.loads((root / MANIFEST).read_text())
    except (OSError, json.JSONDecodeError) as err:
        raise InputError(f"DIR: {root / MANIFEST} is not readable JSON ({err})") from None
    summary = None
    if m.get("summary"):
        path = root / m["summary"]
        if path.is_file():
            summary = _table("Summary", _read_csv(path), m.get("summary_columns"))
    preset = m.get("preset")
    title = m.get("title") or f"{m.get('name', root.name)}" + (
        f" ({preset} preset)" if preset else ""
    )
    return {
        "title": title,
        "paper": m.get("paper", ""),
        "reproduces": m.get("reproduces", ""),
        "prediction": m.get("prediction", ""),
        "notes": m.get("notes", []),
        "figures": [_figure(root, Path(p), c) for p, c in m.get("figures", [])],
        "summary": summary,
        "tables": [str(root / t) for t in m.get("tables", [])],
        "spec": json.dumps(m.get("spec", {}), indent=2),
        "wall_time": _wall(m.get("wall_seconds")),
        "environment": _env_items(m.get("environment", {})),
    }


def _sweep_context(root: Path) -> dict[str, Any]:
    from nclab.sweep.gather import gather

    tables = gather(root)
    spec_path = root / "spec.yaml"
    summary_rows = _read_csv(root / "summary.csv") if (root / "summary.csv").is_file() else []
    columns = None
    if summary_rows:
        first = list(summary_rows[0])
        keep = [c for c in first if not c.endswith(("_mean", "_std"))]
        means = [c for c in first if c.endswith("_mean")]
        columns = keep + means[:16]
    env = environment()
    env["recorded"] += " (when the report was rendered)"
    return {
        "title": f"Sweep {root.name}",
        "paper": "",
        "reproduces": "",
        "prediction": "",
        "notes": [],
        "figures": [_figure(root, p, _sweep_caption(p)) for p in sorted(root.glob("*.png"))],
        "summary": _table("Summary (mean over seeds)", summary_rows, columns),
        "tables": [str(tables.results), str(tables.final), str(tables.summary)],
        "spec": spec_path.read_text() if spec_path.is_file() else "",
        "wall_time": "",
        "environment": _env_items(env),
    }


def _sweep_caption(path: Path) -> str:
    y, _, x = path.stem.partition("_vs_")
    if x:
        return (
            f"{y} against {x}: mean ± one sample standard deviation over seeds (nclab sweep-plot)."
        )
    return "Figure of the sweep."


def _run_context(root: Path) -> dict[str, Any]:
    from nclab.train.figures import plot_run
    from nclab.train.table import read_metrics

    rows = read_metrics(root)
    figure = plot_run(root, root / "metrics.png")
    caption = (
        "The run's metrics.csv against the epoch: accuracies, NC1 per tracked layer (dotted: "
        "NC1 of the clean samples), the geometry of the classifier's input (distance to the "
        "simplex ETF and self-duality) and, under label noise, memorization and dilation; "
        "theory's targets are drawn in each panel (docs/training.md)."
    )
    config = root / "config.yaml"
    env = environment()
    env["recorded"] += " (when the report was rendered)"
    return {
        "title": f"Training run {root.name}",
        "paper": "",
        "reproduces": "",
        "prediction": "",
        "notes": [],
        "figures": [_figure(root, Path(figure), caption)],
        "summary": _table("metrics.csv", rows, list(_RUN_COLUMNS)),
        "tables": [str(root / "metrics.csv")],
        "spec": config.read_text() if config.is_file() else "",
        "wall_time": "",
        "environment": _env_items(env),
    }
