"""The registry of paper reproductions: every module of :mod:`nclab.experiments` that defines
``REPRODUCTION`` (a :class:`Reproduction`) is one, found by listing the package's modules (no
names written in a CLI).

A reproduction runs a named preset into an output directory and returns what it wrote
(:class:`ReproductionResult`): the figures with their captions (what was measured, what theory
predicts), the tables, and notes that say plainly where a claim does not show at this scale. The
report (``report.html``) is rendered from that result; the CLI (``nclab reproduce``) only looks
reproductions up here.
"""

from __future__ import annotations

import importlib
import pkgutil
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

__all__ = [
    "PRESETS",
    "Reproduction",
    "ReproductionResult",
    "RunOptions",
    "get",
    "reproductions",
]

PRESETS: tuple[str, ...] = ("smoke", "cpu", "gpu")


@dataclass(frozen=True)
class RunOptions:
    """How to run a reproduction's grid: the sweep executor (``local`` or ``ray``), Ray's
    ``address``, the most trials at once, whether to continue an existing directory, and where
    the datasets of a ``gpu`` preset are (``data_dir``; ``download`` fetches a missing one)."""

    executor: str = "local"
    address: str | None = None
    max_parallel: int | None = None
    resume: bool = False
    data_dir: str | None = None
    download: bool = False


@dataclass(frozen=True)
class ReproductionResult:
    """What a run wrote, for the report.

    figures : (path of a PNG under the output directory, caption) pairs; a PDF of the same
        stem may sit beside each PNG. The caption says what was measured and what theory
        predicts there.
    tables : CSV files under the output directory (the gathered sweep tables, summaries).
    notes : sentences for the reader: e.g. where the paper's claim does not show at this
        preset's scale, and what would be needed.
    summary : the CSV the report shows as its summary table (default: none);
        summary_columns : its columns to show (default: all).
    spec : what was run (the sweep specs by name), shown in the report.
    """

    figures: list[tuple[Path, str]] = field(default_factory=list)
    tables: list[Path] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)
    summary: Path | None = None
    summary_columns: list[str] = field(default_factory=list)
    spec: dict[str, Any] = field(default_factory=dict)


@dataclass(frozen=True)
class Reproduction:
    """One paper's experiment as a command.

    name : the command's name, e.g. ``"pert-spectrum"`` (lower case, words joined by ``-``).
    paper : short reference, e.g. ``"PERT: Tirer, Huang & Niles-Weed, ICML 2023"``.
    reproduces : the figure or table reproduced, e.g. ``"Figure 1"``.
    prediction : what theory predicts there, in one or two sentences.
    presets : the presets it has (a subset of :data:`PRESETS`; ``smoke`` runs in seconds in CI).
    runtime : preset -> expected run time as a reader should read it, measured on this 2-core
        machine for CPU presets ("measured: 40 s on 2 cores") and estimated for ``gpu``
        ("estimated: 25 min on one H100").
    run : ``run(out_dir, preset, options) -> ReproductionResult``.
    datasets : preset -> the datasets (names of :func:`nclab.train.data.load_dataset`) it reads,
        checked before anything runs (default: none beyond the shipped subset).
    """

    name: str
    paper: str
    reproduces: str
    prediction: str
    presets: tuple[str, ...]
    runtime: dict[str, str]
    run: Callable[[Path, str, RunOptions], ReproductionResult]
    datasets: dict[str, tuple[str, ...]] = field(default_factory=dict)


def reproductions() -> dict[str, Reproduction]:
    """Every registered reproduction by name (modules of nclab.experiments defining
    ``REPRODUCTION``), sorted by name."""
    import nclab.experiments as package

    found: dict[str, Reproduction] = {}
    for info in pkgutil.iter_modules(package.__path__):
        module = importlib.import_module(f"{package.__name__}.{info.name}")
        item = getattr(module, "REPRODUCTION", None)
        if isinstance(item, Reproduction):
            if item.name in found:
                raise RuntimeError(f"two reproductions are named {item.name!r}")
            found[item.name] = item
    return dict(sorted(found.items()))


def get(name: str) -> Reproduction:
    """The reproduction ``name``; ValueError listing the valid names otherwise."""
    known = reproductions()
    if name not in known:
        raise ValueError(f"NAME: no reproduction {name!r}; valid: {', '.join(known) or 'none'}")
    return known[name]
