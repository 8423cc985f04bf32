"""Reading a run back: ``load_run(RUN_DIR)`` rebuilds what the run trained on and what it ended
with, through the same set-up code as :func:`~nclab.train.trainer.train`.

>>> run = load_run("runs/smoke")                                    # doctest: +SKIP
>>> run.model(run.test.x).argmax(1).eq(run.test.true).float().mean() # doctest: +SKIP
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
from torch import nn

from nclab.train.config import TrainConfig
from nclab.train.setup import Split, set_up
from nclab.train.table import read_metrics

__all__ = ["LoadedRun", "load_run"]


@dataclass
class LoadedRun:
    """A run directory read back.

    config: the run's configuration (``config.yaml``); rows: the ``metrics.csv`` rows
    (:func:`~nclab.train.table.read_metrics`; empty before the first evaluation); model: the
    network with the weights of ``model.pt`` (the run's end) or, for a run that has not ended,
    of its checkpoint, in eval mode; epoch: the epochs those weights were trained for; final:
    whether they are the run's end; train, test: the data split exactly as trained (the same
    samples, normalization and noisy labels, ``observed`` and ``true``); num_classes: K.
    """

    out_dir: Path
    config: TrainConfig
    rows: list[dict[str, Any]]
    model: nn.Module
    epoch: int
    final: bool
    train: Split
    test: Split
    num_classes: int


def load_run(
    run_dir: str | os.PathLike[str],
    *,
    model: nn.Module | None = None,
    device: str = "cpu",
) -> LoadedRun:
    """Read the run in ``run_dir`` (see :class:`LoadedRun`); ``device``: where the model and the
    data go (``cpu``, ``cuda`` or ``auto``, whatever the run trained on). A run of a network of
    the user's own (``train(cfg, out, model=...)``; the directory holds ``model.txt``) needs a
    fresh instance of that network as ``model``. The global random state is left as it was."""
    out = Path(run_dir)
    config_file = out / "config.yaml"
    if not config_file.is_file():
        raise FileNotFoundError(
            f"run_dir: {out} holds no config.yaml; expected a directory written by nclab train"
        )
    if model is None and (out / "model.txt").is_file():
        raise ValueError(
            f"model: {out} was trained with a network of the user's own (described in "
            f"{out / 'model.txt'}); pass a fresh instance as load_run(..., model=...)"
        )
    cfg = TrainConfig.from_yaml(config_file.read_text(), source=str(config_file))
    cfg.run.device = device
    weights, epoch, final = _weights(out, cfg)
    with torch.random.fork_rng(devices=[]):  # building the network draws from the global RNG
        s = set_up(cfg, model=model, distributed=False)
    try:
        s.model.load_state_dict(weights)
    except RuntimeError as err:
        raise ValueError(f"model: the run's weights do not fit the network ({err})") from None
    s.model.eval()
    rows = read_metrics(out) if (out / "metrics.csv").is_file() else []
    return LoadedRun(out, cfg, rows, s.model, epoch, final, s.train, s.test, s.num_classes)


def _weights(out: Path, cfg: TrainConfig) -> tuple[dict[str, torch.Tensor], int, bool]:
    """The final weights (``model.pt``) or the checkpoint's, the epochs they were trained for
    and whether they are the run's end."""
    ckpt_file, model_file = out / "checkpoint.pt", out / "model.pt"
    if model_file.is_file():
        return torch.load(model_file, map_location="cpu", weights_only=True), cfg.optim.epochs, True
    if ckpt_file.is_file():
        state = torch.load(ckpt_file, map_location="cpu", weights_only=True)
        return state["model"], int(state["epoch"]), False
    raise FileNotFoundError(
        f"run_dir: {out} holds neither model.pt nor checkpoint.pt (the run stopped before its "
        "first checkpoint)"
    )
