"""Named training configurations (``nclab train --preset NAME``); each is a plain mapping of
overrides of :class:`~nclab.train.config.TrainConfig`'s defaults."""

from __future__ import annotations

import copy
from typing import Any

from nclab.errors import InputError
from nclab.train.config import TrainConfig

__all__ = ["PRESETS", "preset"]

# The papers' recipe: SGD, lr 0.05 divided by 10 every 40 epochs, momentum 0.9, wd 5e-4.
_RECIPE = {"lr": 0.05, "momentum": 0.9, "weight_decay": 5e-4, "schedule": "step", "step_size": 40}

PRESETS: dict[str, dict[str, Any]] = {
    # Seconds: for tests and a first look.
    "smoke": {
        "data": {
            "name": "fashion-mnist-small",
            "num_classes": 4,
            "per_class": 40,
            "test_per_class": 20,
            "batch_size": 32,
        },
        "noise": {"rate": 0.2},
        "model": {"name": "mlp", "widths": [64, 32]},
        "optim": {**_RECIPE, "epochs": 4, "step_size": 3},
        "run": {"device": "cpu"},
    },
    # About 40 s on 2 cores: the MD setting, an MLP with non-negative penultimate features on the
    # shipped 4,000-image Fashion-MNIST subset with 20% symmetric label noise (MD's convention:
    # 20% of the labels redrawn over the 10 classes, about 18% changed).
    "cpu-mlp": {
        "data": {"name": "fashion-mnist-small", "batch_size": 128},
        "noise": {"rate": 0.2},
        "model": {"name": "mlp", "widths": [512, 512, 512]},
        "optim": {**_RECIPE, "epochs": 100},
        "track": {"layers": ["body.3", "penultimate"]},
        "run": {"device": "cpu"},
    },
    # About 3 s an epoch with NC measured every epoch (3 minutes) on 2 cores.
    "cpu-cnn": {
        "data": {"name": "fashion-mnist-small", "batch_size": 128},
        "noise": {"rate": 0.2},
        "model": {"name": "cnn", "widths": [32, 64, 128]},
        "optim": {**_RECIPE, "epochs": 60},
        "run": {"device": "cpu"},
    },
    # Paper scale, for a GPU.
    "gpu-resnet18-cifar10": {
        "data": {"name": "cifar10", "augment": True, "batch_size": 128},
        "model": {"name": "resnet18"},
        "optim": {**_RECIPE, "epochs": 200},
        "track": {"layers": ["layer4", "penultimate"], "test_metrics": True},
        "run": {"device": "cuda", "bf16": True, "channels_last": True},
    },
}


def preset(name: str) -> TrainConfig:
    """The :class:`TrainConfig` of preset ``name``."""
    if name not in PRESETS:
        raise InputError(f"--preset: expected one of {sorted(PRESETS)}, got {name!r}")
    return TrainConfig.from_dict(copy.deepcopy(PRESETS[name]))
