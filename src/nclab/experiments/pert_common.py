"""What the perturbation-model reproductions (``pert_*``) share: the preset check, CSV tables and
figures written atomically (PNG + PDF)."""

from __future__ import annotations

import csv
import io
from collections.abc import Iterable, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

from nclab.errors import InputError
from nclab.io import atomic_write, atomic_write_text

if TYPE_CHECKING:
    from matplotlib.axes import Axes
    from matplotlib.figure import Figure

__all__ = ["PAPER", "check_preset", "figure", "save_figure", "write_csv"]

PAPER = "PERT: Tirer, Huang & Niles-Weed, ICML 2023"


def check_preset(name: str, preset: str, presets: Iterable[str]) -> None:
    """InputError naming --preset when ``preset`` is not one of ``presets``."""
    valid = list(presets)
    if preset not in valid:
        raise InputError(f"--preset: {name} has presets {valid}, not {preset!r}")


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
    """A grid of panels (Agg backend: no display needed); the axes as a 2-d array."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(nrows, ncols, figsize=(width * ncols, height * nrows), squeeze=False)
    return fig, axes


def save_figure(fig: Figure, directory: Path, stem: str) -> Path:
    """Write ``stem.png`` and ``stem.pdf`` atomically under ``directory``; returns the PNG."""
    import matplotlib.pyplot as plt

    directory.mkdir(parents=True, exist_ok=True)
    fig.tight_layout()
    png = directory / f"{stem}.png"
    atomic_write(png, lambda handle: fig.savefig(handle, format="png", dpi=110))
    atomic_write(directory / f"{stem}.pdf", lambda handle: fig.savefig(handle, format="pdf"))
    plt.close(fig)
    return png


def legend_below(ax: Axes, ncol: int = 2) -> None:
    """The legend under the panel, clear of the data."""
    ax.legend(loc="upper center", bbox_to_anchor=(0.5, -0.2), ncol=ncol, fontsize=7, frameon=False)
