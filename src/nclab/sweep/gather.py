"""Gathering a sweep's finished trials into tables.

- ``results.csv``: one row per trial × row of the trial (a training run: one per evaluated epoch,
  split and tracked layer, the columns of ``nclab.train.table``; a solve: one row, the
  ``nclab solve --json`` object flattened into dotted columns such as ``theory.objective`` and
  ``metrics.nc1``), with ``trial`` and the trial's key columns (grid and zip keys, ``seed``)
  first. A trial column named like a key column is left out (the key's value is the one set).
- ``final.csv``: per trial (and split and layer), its last row, or its best row by the spec's
  ``select`` column (max or min; NaN never best).
- ``summary.csv``: the final rows grouped over seeds: per grid point (and split and layer) the
  number of trials and, for each numeric column c, ``c_mean`` = (1/n) Σ c_s and ``c_std`` =
  sqrt(Σ (c_s − mean)² / (n − 1)) (the sample standard deviation; empty for n = 1), over the
  trials where c is present; a text column keeps its value when the seeds agree, otherwise the
  distinct values joined by ``|``.

Only done trials are gathered; empty cells mean a missing value (NaN or None).
"""

from __future__ import annotations

import csv
import io
import json
import math
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from nclab.io import atomic_write_text
from nclab.sweep.store import SweepDir

__all__ = ["Gathered", "final_rows", "gather", "load", "summarize"]

_IDENTITY = ("split", "layer")


@dataclass
class Gathered:
    """The rows of a sweep's done trials: ``rows`` (results.csv) and the key columns."""

    key_columns: list[str]
    rows: list[dict[str, Any]]
    select_column: str | None
    select_mode: str
    trials: int
    done: int


def load(root: str | os.PathLike[str]) -> Gathered:
    """The gathered rows of the sweep directory ``root`` (results.csv's rows, in trial order)."""
    sd = SweepDir(root)
    recorded = sd.recorded_trials()
    if recorded is None:
        raise FileNotFoundError(f"DIR: {sd.root} holds no sweep (no trials.json)")
    spec = sd.recorded_spec() or {}
    select = spec.get("select")
    if not isinstance(select, dict):  # "last"
        select = {}
    keys: list[str] = []
    for trial in recorded:
        keys += [k for k in trial["key"] if k not in keys]
    rows = []
    done = 0
    for trial in recorded:
        status = sd.status(trial["name"])
        if status.get("state") != "done":
            continue
        done += 1
        for row in status.get("rows", []):
            extra = {k: v for k, v in row.items() if k not in trial["key"] and k != "trial"}
            rows.append({"trial": trial["name"], **trial["key"], **extra})
    return Gathered(
        key_columns=keys,
        rows=rows,
        select_column=select.get("column"),
        select_mode=select.get("mode", "max"),
        trials=len(recorded),
        done=done,
    )


def _present(value: Any) -> bool:
    return value is not None and not (isinstance(value, float) and math.isnan(value))


def final_rows(g: Gathered) -> list[dict[str, Any]]:
    """Per trial and (split, layer): its last row, or its best by ``g.select_column``."""
    groups: dict[tuple[Any, ...], list[dict[str, Any]]] = {}
    for row in g.rows:
        ident = (row["trial"], *(row.get(c) for c in _IDENTITY))
        groups.setdefault(ident, []).append(row)
    out = []
    column, sign = g.select_column, (1.0 if g.select_mode == "max" else -1.0)
    for rows in groups.values():
        chosen = rows[-1]
        if column is not None:
            if column not in rows[0]:
                raise ValueError(
                    f"select.column: {column!r} is not a column of the trials' rows; "
                    f"columns: {sorted(rows[0])}"
                )
            scored = [r for r in rows if _present(r.get(column))]
            if scored:
                chosen = max(scored, key=lambda r: sign * float(r[column]))
        out.append(chosen)
    return out


def summarize(g: Gathered, final: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """Mean and sample standard deviation over seeds of the final rows (module docstring)."""
    point_keys = [k for k in g.key_columns if k != "seed"]
    ident = [c for c in _IDENTITY if any(c in r for r in final)]
    groups: dict[str, list[dict[str, Any]]] = {}
    for row in final:
        group = json.dumps([row.get(k) for k in [*point_keys, *ident]])
        groups.setdefault(group, []).append(row)
    skip = {"trial", *g.key_columns, *ident}
    out = []
    for rows in groups.values():
        summary: dict[str, Any] = {k: rows[0].get(k) for k in [*point_keys, *ident]}
        summary["trials"] = len(rows)
        columns = [c for c in _columns(rows) if c not in skip]
        for column in columns:
            values: list[Any] = [r[column] for r in rows if _present(r.get(column))]
            if values and all(isinstance(v, (int, float)) for v in values):
                nums = [float(v) for v in values]
                mean = sum(nums) / len(nums)
                std = (
                    math.sqrt(sum((v - mean) ** 2 for v in nums) / (len(nums) - 1))
                    if len(nums) > 1
                    else None
                )
                summary[f"{column}_mean"], summary[f"{column}_std"] = mean, std
            else:
                distinct = sorted({_cell(v) for v in values})
                summary[column] = "|".join(distinct)
        out.append(summary)
    return out


def _columns(rows: list[dict[str, Any]]) -> list[str]:
    seen: dict[str, None] = {}
    for row in rows:
        seen.update(dict.fromkeys(row))
    return list(seen)


def _cell(value: Any) -> str:
    if not _present(value):
        return ""
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, (list, dict)):
        return json.dumps(value)
    return str(value)


def _csv(rows: list[dict[str, Any]], first: list[str]) -> str:
    columns = [*first, *(c for c in _columns(rows) if c not in first)]
    buf = io.StringIO()
    writer = csv.writer(buf, lineterminator="\n")
    writer.writerow(columns)
    for row in rows:
        writer.writerow([_cell(row.get(c)) for c in columns])
    return buf.getvalue()


@dataclass
class Tables:
    """The written tables and their sizes."""

    results: Path
    final: Path
    summary: Path
    rows: int
    done: int
    trials: int


def gather(root: str | os.PathLike[str]) -> Tables:
    """Write ``results.csv``, ``final.csv`` and ``summary.csv`` of the sweep in ``root``
    (atomically; the done trials so far)."""
    g = load(root)
    base = Path(root)
    first = ["trial", *g.key_columns]
    atomic_write_text(base / "results.csv", _csv(g.rows, first))
    final = final_rows(g)
    summary = summarize(g, final)
    ident = [c for c in _IDENTITY if any(c in r for r in final)]
    point = [k for k in g.key_columns if k != "seed"]
    atomic_write_text(base / "final.csv", _csv(final, [*first, *ident]))
    atomic_write_text(base / "summary.csv", _csv(summary, [*point, *ident, "trials"]))
    return Tables(
        base / "results.csv",
        base / "final.csv",
        base / "summary.csv",
        len(g.rows),
        g.done,
        g.trials,
    )
