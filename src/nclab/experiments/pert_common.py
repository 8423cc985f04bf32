"""What the perturbation-model reproductions (``pert_*``) share: the paper, CSV tables of rows,
a panel grid, legends below a panel (the preset check and the figure writer are common.py's)."""

from __future__ import annotations

import csv
import io
from collections.abc import Iterable, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

from nclab.experiments.common import check_preset, new_grid, save_figure
from nclab.io import atomic_write_text

if TYPE_CHECKING:
    from matplotlib.axes import Axes
    from matplotlib.figure import Figure

__all__ = ["PAPER", "check_preset", "figure", "save_figure", "write_csv"]

# One preset check and one figure writer for every reproduction (common.py); re-exported here
# for the pert_* modules.

PAPER = "PERT: Tirer, Huang & Niles-Weed, ICML 2023"


def write_csv(path: Path, header: Sequence[str], rows: Iterable[Sequence[Any]]) -> Path:
    """A CSV table (floats with 17 significant digits: the values round-trip)."""
    buf = io.StringIO()
    writer = csv.writer(buf, lineterminator="\n")
    writer.writerow(header)
    for row in rows:
        writer.writerow([f"{v:.17g}" if isinstance(v, float) else v for v in row])
    path.parent.mkdir(parents=True, exist_ok=True)
    return atomic_write_text(path, buf.getvalue())


def figure(
    nrows: int, ncols: int, *, width: float = 4.4, height: float = 3.6
) -> tuple[Figure, Any]:
    """A grid of panels (a Figure not registered with pyplot); the axes as a 2-d array."""
    import numpy as np

    fig, grid = new_grid(nrows, ncols, width=width, height=height)
    return fig, np.array(grid, dtype=object)


def legend_below(ax: Axes, ncol: int = 2) -> None:
    """The legend under the panel, clear of the data."""
    ax.legend(loc="upper center", bbox_to_anchor=(0.5, -0.2), ncol=ncol, fontsize=7, frameon=False)
