"""Training real networks into the terminal phase, measuring collapse as they go.

``train(config, out_dir)`` runs one training into a run directory (:mod:`nclab.train.trainer`);
``load_run(out_dir)`` reads it back (:mod:`nclab.train.load`); ``read_metrics`` reads its
table (:mod:`nclab.train.table`). The names are imported on first use: importing the package
(as ``nclab --help`` does, for the config) does not load torch.
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from nclab.train.config import TrainConfig, apply_overrides
    from nclab.train.load import LoadedRun, load_run
    from nclab.train.presets import preset
    from nclab.train.table import read_metrics
    from nclab.train.trainer import TrainResult, train

__all__ = [
    "LoadedRun",
    "TrainConfig",
    "TrainResult",
    "apply_overrides",
    "load_run",
    "preset",
    "read_metrics",
    "train",
]

_HOME = {
    "LoadedRun": "load",
    "TrainConfig": "config",
    "TrainResult": "trainer",
    "apply_overrides": "config",
    "load_run": "load",
    "preset": "presets",
    "read_metrics": "table",
    "train": "trainer",
}


def __getattr__(name: str) -> Any:
    if name not in _HOME:
        raise AttributeError(f"module 'nclab.train' has no attribute {name!r}")
    return getattr(importlib.import_module(f"nclab.train.{_HOME[name]}"), name)
