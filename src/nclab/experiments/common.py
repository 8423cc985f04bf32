"""What the reproductions share: running a grid through the sweep engine, grouping its rows
over seeds, and drawing mean ± std bands with theory as dashed lines (PNG + PDF).

Mean and band over seeds: for values v_1..v_n of one grid point, mean = (1/n) Σ v_s and
std = sqrt(Σ (v_s − mean)² / (n − 1)) (the sample standard deviation, as the sweep's
summary.csv; no band for n = 1).
"""

from __future__ import annotations

import math
from collections.abc import Callable, Iterable
from pathlib import Path
from typing import TYPE_CHECKING, Any

from nclab.errors import InputError
from nclab.experiments.registry import RunOptions
from nclab.io import atomic_write, atomic_write_text

if TYPE_CHECKING:
    from matplotlib.axes import Axes
    from matplotlib.figure import Figure

__all__ = [
    "band",
    "grid_rows",
    "group_mean_std",
    "mean_std",
    "new_figure",
    "new_grid",
    "run_grid",
    "save_figure",
    "write_csv",
]


def run_grid(
    spec: dict[str, Any], out: Path, options: RunOptions, *, echo: Callable[[str], None] = print
) -> list[dict[str, Any]]:
    """Run the sweep ``spec`` (a :func:`nclab.sweep.parse_spec` mapping) in ``out`` and return
    every row of its done trials (results.csv's rows, with the key columns).

    A trial that fails is an error naming the sweep directory, whose ``status.json`` files hold
    the tracebacks: a reproduction never draws a figure from a partial grid.
    """
    from nclab.sweep import parse_spec, run_sweep
    from nclab.sweep.gather import load

    parsed = parse_spec(spec, out)
    result = run_sweep(
        parsed,
        out,
        executor=options.executor,
        address=options.address,
        max_parallel=options.max_parallel,
        echo=echo,
    )
    if result.failed:
        names = ", ".join(name for name, _ in result.failed[:3])
        raise RuntimeError(
            f"{len(result.failed)} trial(s) of the sweep in {out} failed ({names}); their "
            "status.json files hold the tracebacks; fix and rerun with --resume"
        )
    return load(out).rows


def grid_rows(rows: Iterable[dict[str, Any]], **where: Any) -> list[dict[str, Any]]:
    """The rows whose columns equal ``where`` (a key written with ``__`` for ``.``)."""
    wanted = {k.replace("__", "."): v for k, v in where.items()}
    return [r for r in rows if all(r.get(k) == v for k, v in wanted.items())]


def mean_std(values: Iterable[float | None]) -> tuple[float, float]:
    """Mean and sample standard deviation (0 for one value) of the finite ``values``."""
    nums = [float(v) for v in values if v is not None and math.isfinite(float(v))]
    if not nums:
        return math.nan, math.nan
    mean = sum(nums) / len(nums)
    if len(nums) == 1:
        return mean, 0.0
    return mean, math.sqrt(sum((v - mean) ** 2 for v in nums) / (len(nums) - 1))


def group_mean_std(
    rows: Iterable[dict[str, Any]], x: str, y: str
) -> tuple[list[float], list[float], list[float]]:
    """x values (sorted) with the mean and std over rows (seeds) of ``y`` at each."""
    groups: dict[float, list[float]] = {}
    for row in rows:
        value = row.get(y)
        if value is None or row.get(x) is None:
            continue
        groups.setdefault(float(row[x]), []).append(float(value))
    xs = sorted(groups)
    stats = [mean_std(groups[v]) for v in xs]
    return xs, [m for m, _ in stats], [s for _, s in stats]


def new_figure(ncols: int, *, width: float = 4.6, height: float = 3.8) -> tuple[Figure, list[Axes]]:
    """A figure of ``ncols`` panels side by side."""
    fig, grid = new_grid(1, ncols, width=width, height=height)
    return fig, grid[0]


def new_grid(
    nrows: int, ncols: int, *, width: float = 4.6, height: float = 3.6
) -> tuple[Figure, list[list[Axes]]]:
    """A figure of ``nrows`` × ``ncols`` panels, ``grid[row][col]``: a matplotlib ``Figure``
    not registered with pyplot (no backend switch and no global figure registry for a notebook
    caller; nothing to close)."""
    from matplotlib.figure import Figure

    fig = Figure(figsize=(width * ncols, height * nrows))
    axes = fig.subplots(nrows, ncols, squeeze=False)
    return fig, [list(row) for row in axes]


def write_csv(path: Path, rows: list[dict[str, Any]]) -> Path:
    """Write ``rows`` (the union of their keys as columns, in first-seen order) atomically."""
    import csv
    import io

    columns: list[str] = []
    for row in rows:
        columns += [k for k in row if k not in columns]
    buf = io.StringIO()
    writer = csv.DictWriter(buf, fieldnames=columns, lineterminator="\n")
    writer.writeheader()
    writer.writerows(rows)
    return atomic_write_text(path, buf.getvalue())


def band(
    ax: Axes,
    xs: list[float],
    mean: list[float],
    std: list[float],
    *,
    label: str,
    color: str | None = None,
    marker: str = "o",
    linestyle: str = "-",
) -> None:
    """A line of the means with a shaded mean ± std band."""
    import numpy as np

    m, s = np.asarray(mean, dtype=float), np.asarray(std, dtype=float)
    (line,) = ax.plot(xs, m, marker=marker, ms=3.5, linestyle=linestyle, label=label, color=color)
    if np.any(s > 0):
        lower = m - s
        if ax.get_yscale() == "log":  # a band below zero cannot be drawn on a log axis
            lower = np.maximum(lower, m * 0.05)
        ax.fill_between(xs, lower, m + s, color=line.get_color(), alpha=0.2, linewidth=0)


def save_figure(fig: Figure, figures_dir: Path, stem: str) -> Path:
    """Write ``stem.png`` and ``stem.pdf`` atomically under ``figures_dir``; returns the PNG."""
    figures_dir.mkdir(parents=True, exist_ok=True)
    fig.tight_layout()
    png = figures_dir / f"{stem}.png"
    atomic_write(png, lambda handle: fig.savefig(handle, format="png", dpi=110))
    atomic_write(figures_dir / f"{stem}.pdf", lambda handle: fig.savefig(handle, format="pdf"))
    return png


def check_preset(name: str, preset: str, presets: Iterable[str]) -> None:
    """InputError naming --preset when ``preset`` is not one of ``presets``."""
    valid = list(presets)
    if preset not in valid:
        raise InputError(f"--preset: {name} has presets {valid}, not {preset!r}")
