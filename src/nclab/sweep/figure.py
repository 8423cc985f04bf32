"""The figure of a sweep (``nclab sweep-plot``): a column of the trials' final rows against a
grid key, mean ± one sample standard deviation over seeds (error bars), one line per value of
a second key (the hue).

The final row of a trial is its last (or ``select``-best) row, as in ``final.csv``; training
rows are taken for one split and one tracked layer. Every other grid key must be fixed with
``where`` so that a line never mixes grid points.
"""

from __future__ import annotations

import json
import math
import os
from pathlib import Path
from typing import Any

from matplotlib.figure import Figure

from nclab.io import atomic_write
from nclab.sweep.gather import final_rows, load

__all__ = ["plot_sweep", "sweep_figure"]


def _same(a: Any, b: Any) -> bool:
    return json.dumps(a) == json.dumps(b) or (
        isinstance(a, (int, float)) and isinstance(b, (int, float)) and float(a) == float(b)
    )


def _number(value: Any) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool)


def sweep_figure(
    root: str | os.PathLike[str],
    x: str,
    y: str,
    *,
    hue: str | None = None,
    log: bool = False,
    logx: bool = False,
    layer: str | None = None,
    split: str = "train",
    where: dict[str, Any] | None = None,
) -> Figure:
    """The figure of ``y`` against the grid key ``x`` for the sweep in ``root`` (see the
    module docstring). ``layer``: default ``penultimate`` when tracked, or the only layer.
    Errors name the argument and list the valid choices."""
    g = load(root)
    rows = final_rows(g)
    if not rows:
        raise ValueError(f"DIR: {root} has no finished trial to draw")
    for name, value in (where or {}).items():
        if name not in g.key_columns:
            raise ValueError(f"--where: {name!r} is not a grid key; keys: {g.key_columns}")
        rows = [r for r in rows if _same(r.get(name), value)]
        if not rows:
            raise ValueError(f"--where: no finished trial has {name}={value!r}")
    for arg, key in (("--x", x), ("--hue", hue)):
        if key is not None and key not in g.key_columns:
            raise ValueError(f"{arg}: {key!r} is not a grid key; keys: {g.key_columns}")
    if any("layer" in r for r in rows):
        layers = list(dict.fromkeys(str(r["layer"]) for r in rows))
        if layer is None:
            if "penultimate" not in layers and len(layers) > 1:
                raise ValueError(
                    f"--layer: the trials track several layers; choose one of {layers}"
                )
            layer = "penultimate" if "penultimate" in layers else layers[0]
        if layer not in layers:
            raise ValueError(f"--layer: expected one of {layers}, got {layer!r}")
        rows = [r for r in rows if r["layer"] == layer and r.get("split") == split]
        if not rows:
            raise ValueError(f"--split: no row of split {split!r}")
    numeric = sorted({k for r in rows for k, v in r.items() if _number(v)} - set(g.key_columns))
    if y not in numeric:
        raise ValueError(f"--y: {y!r} is not a numeric column of the trials; columns: {numeric}")
    fixed = {x, hue, "seed", *(where or {})}
    varying = {
        k: sorted({json.dumps(r.get(k)) for r in rows})
        for k in g.key_columns
        if k not in fixed and len({json.dumps(r.get(k)) for r in rows}) > 1
    }
    if varying:
        raise ValueError(
            f"--where: grid keys {sorted(varying)} vary ({varying}); fix each with "
            "--where KEY=VALUE (or draw it as --hue)"
        )

    groups: dict[str, dict[str, list[float]]] = {}
    xs: dict[str, Any] = {}
    for r in rows:
        h = json.dumps(r.get(hue)) if hue is not None else ""
        xv = json.dumps(r.get(x))
        xs[xv] = r.get(x)
        y_value: Any = r.get(y)
        if _number(y_value) and not math.isnan(float(y_value)):
            groups.setdefault(h, {}).setdefault(xv, []).append(float(y_value))
    numeric_x = all(_number(v) for v in xs.values())
    order = sorted(xs, key=lambda k: float(xs[k])) if numeric_x else list(xs)

    fig = Figure(figsize=(6.0, 4.2), layout="constrained")
    ax = fig.add_subplot()
    seeds = 0
    for h, points in groups.items():
        keys = [k for k in order if k in points]
        means = [sum(points[k]) / len(points[k]) for k in keys]
        stds = [_std(points[k]) for k in keys]
        seeds = max(seeds, *(len(points[k]) for k in keys))
        positions = [float(xs[k]) if numeric_x else order.index(k) for k in keys]
        label = f"{hue} = {json.loads(h)}" if hue is not None else None
        ax.errorbar(positions, means, yerr=stds, marker="o", capsize=3, label=label)
    if not numeric_x:
        ax.set_xticks(range(len(order)), [str(xs[k]) for k in order])
    if log:
        ax.set_yscale("log")
    if logx and numeric_x:
        ax.set_xscale("log")
    ax.set_xlabel(x)
    ax.set_ylabel(y + (f" ({layer}, {split})" if layer is not None else ""))
    ax.set_title(f"{Path(root).name}: mean ± std over seeds (up to {seeds} per point)")
    ax.grid(alpha=0.3)
    if hue is not None:
        ax.legend()
    return fig


def _std(values: list[float]) -> float:
    """Sample standard deviation (n − 1); 0 for one value (no error bar)."""
    if len(values) < 2:
        return 0.0
    mean = sum(values) / len(values)
    return math.sqrt(sum((v - mean) ** 2 for v in values) / (len(values) - 1))


def plot_sweep(
    root: str | os.PathLike[str],
    x: str,
    y: str,
    *,
    out: str | os.PathLike[str] | None = None,
    **options: Any,
) -> Path:
    """Draw :func:`sweep_figure` into the PNG ``out`` (default ``ROOT/Y_vs_X.png``); returns
    the path."""
    fig = sweep_figure(root, x, y, **options)
    safe = "".join(c if c.isalnum() or c in "._-" else "_" for c in f"{y}_vs_{x}")
    path = Path(out) if out is not None else Path(root) / f"{safe}.png"
    atomic_write(path, lambda handle: fig.savefig(handle, format="png", dpi=120))
    return path
