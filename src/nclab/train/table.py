"""``metrics.csv``, the table a training run writes: its columns and what each holds, the
writer (atomic, one row per evaluated epoch and tracked layer) and the reader.

Every column is described in :data:`DESCRIPTIONS`: the training columns here, the NC columns
in :data:`nclab.metrics.report.METRICS` and the label-noise columns in
:data:`nclab.metrics.noise.NOISE_METRICS`. ``docs/training.md`` lists them all.
"""

from __future__ import annotations

import csv
import io
import math
import os
from pathlib import Path
from typing import Any

from nclab.io import atomic_write_text
from nclab.metrics.noise import NOISE_METRICS
from nclab.metrics.report import METRICS

__all__ = ["COLUMNS", "DESCRIPTIONS", "TRAIN_COLUMNS", "MetricsFile", "read_metrics"]

TRAIN_COLUMNS: dict[str, str] = {
    "epoch": "epochs completed when the row was measured",
    "split": "set the NC columns describe: train or test (track.test_metrics)",
    "layer": "tracked module whose output the NC columns describe",
    "lr": "learning rate of the epoch's SGD steps",
    "train_loss": "mean loss of the epoch's SGD steps (observed labels, weights moving)",
    "eval_loss": "mean loss on the training set's observed labels (the measured pass)",
    "acc_observed": "training accuracy on the observed (possibly noisy) labels",
    "acc_true": "training accuracy on the true labels",
    "test_loss": "mean loss on the test set",
    "test_acc": "test accuracy",
}

COLUMNS: list[str] = [*TRAIN_COLUMNS, *METRICS, *NOISE_METRICS]
DESCRIPTIONS: dict[str, str] = {**TRAIN_COLUMNS, **METRICS, **NOISE_METRICS}

_TEXT = ("split", "layer")


class MetricsFile:
    """``metrics.csv`` of a run, rewritten atomically after every evaluation with all rows so
    far (a reader never sees half a table); each row is formatted once (formatting the whole
    table every epoch cost ~5 ms at 200 rows). Columns :data:`COLUMNS`; a missing value (a key
    the row does not have, e.g. the noise columns of a run without noise) is an empty field."""

    def __init__(self, path: Path, rows: list[dict[str, Any]]) -> None:
        self.path = path
        self.lines = [self._format([], header=True), self._format(rows)]

    @staticmethod
    def _format(rows: list[dict[str, Any]], header: bool = False) -> str:
        buf = io.StringIO()
        writer = csv.DictWriter(buf, fieldnames=COLUMNS, extrasaction="ignore")
        if header:
            writer.writeheader()
        for row in rows:
            writer.writerow({k: ("" if v is None else v) for k, v in row.items()})
        return buf.getvalue()

    def add(self, rows: list[dict[str, Any]]) -> None:
        """Append ``rows`` and write the file."""
        self.lines.append(self._format(rows))
        atomic_write_text(self.path, "".join(self.lines))


def read_metrics(path: str | os.PathLike[str]) -> list[dict[str, Any]]:
    """The rows of a run's ``metrics.csv`` (``path``: the file or its run directory).

    Returns one dict per row: ``split`` and ``layer`` as strings, ``epoch`` as int, every other
    column as float (NaN where the field is empty).
    """
    p = Path(path)
    if p.is_dir():
        p = p / "metrics.csv"
    if not p.is_file():
        raise FileNotFoundError(
            f"path: {p} does not exist (a run directory written by `nclab train` holds "
            "metrics.csv after its first evaluation)"
        )
    with p.open(newline="") as handle:
        reader = csv.DictReader(handle)
        missing = [c for c in ("epoch", "split", "layer") if c not in (reader.fieldnames or [])]
        if missing:
            raise ValueError(f"path: {p} is not a metrics table of nclab train (no {missing})")
        rows = []
        for line, raw in enumerate(reader, start=2):
            row: dict[str, Any] = {}
            for key, value in raw.items():
                if key in _TEXT:
                    row[key] = value
                    continue
                try:
                    if key == "epoch":
                        row[key] = int(value)
                    else:
                        row[key] = float(value) if value not in ("", None) else math.nan
                except (TypeError, ValueError):
                    raise ValueError(
                        f"path: {p}, line {line}: column {key!r} holds {value!r}, not a number"
                    ) from None
            rows.append(row)
    return rows
