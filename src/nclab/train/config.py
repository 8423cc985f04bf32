"""The typed, validated training configuration (YAML file, preset, ``key=value`` overrides).

Sections and their keys are the dataclasses below; an unknown key or a value of the wrong type
is an error that names the key. ``TrainConfig.to_dict()`` is what a run directory's
``config.yaml`` holds, and a checkpoint from a different configuration refuses to resume.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import types
import typing
from dataclasses import dataclass, field
from typing import Any

import yaml

__all__ = [
    "DataConfig",
    "LossConfig",
    "ModelConfig",
    "NoiseConfig",
    "OptimConfig",
    "RunConfig",
    "TrackConfig",
    "TrainConfig",
    "apply_overrides",
]

# Run settings that change neither the numbers nor the files' contents: not part of the
# fingerprint, so a run may be resumed with another cadence.
_CADENCE = ("progress", "checkpoint_every", "checkpoint_seconds")


@dataclass
class DataConfig:
    """name: dataset (``nclab.train.data.DATASETS``); num_classes: keep the first K classes;
    per_class / test_per_class: balanced subsample sizes; augment: random crop (padding 4) and
    horizontal flip; normalize: standardize each channel with training-set statistics;
    batch_size: training batch; eval_batch_size: batch of the evaluation passes (default 1024 on
    CUDA, 256 on the CPU, where larger batches fall out of the caches and run slower)."""

    name: str = "fashion-mnist-small"
    data_dir: str | None = None
    num_classes: int | None = None
    per_class: int | None = None
    test_per_class: int | None = None
    augment: bool = False
    normalize: bool = True
    batch_size: int = 128
    eval_batch_size: int | None = None


@dataclass
class NoiseConfig:
    """rate: η in [0, 1); kind: ``symmetric`` | ``symmetric_flip`` | ``pair`` (nclab.train.noise)."""

    rate: float = 0.0
    kind: str = "symmetric"


@dataclass
class ModelConfig:
    """name: ``mlp`` | ``cnn`` | ``resnet18`` | ``vgg11``; widths: MLP hidden widths (the last is
    the penultimate width) or CNN channel widths; width: ResNet / VGG width multiplier."""

    name: str = "mlp"
    widths: list[int] = field(default_factory=lambda: [512, 512, 512])
    batchnorm: bool = True
    width: float = 1.0


@dataclass
class LossConfig:
    """name: ``ce`` | ``mse`` | ``ls`` | ``focal`` | ``relaxation`` (nclab.losses); smoothing: α
    of label smoothing and label relaxation; gamma: γ of focal; target_scale, target_weight:
    M and k of the rescaled MSE."""

    name: str = "ce"
    smoothing: float = 0.0
    gamma: float = 0.0
    target_scale: float = 1.0
    target_weight: float = 1.0


@dataclass
class OptimConfig:
    """SGD with momentum. weight_decay: feature layers; classifier_weight_decay: the ``fc``
    layer (default: weight_decay); feature_penalty: λ_H, adds (λ_H/2)·mean_i ‖h_i‖² of the
    penultimate features to the loss (the UFM's feature regularization). schedule: ``constant``,
    ``step`` (×gamma every step_size epochs), ``multistep`` (×gamma at milestones) or ``cosine``."""

    epochs: int = 20
    lr: float = 0.05
    momentum: float = 0.9
    weight_decay: float = 5e-4
    classifier_weight_decay: float | None = None
    feature_penalty: float = 0.0
    schedule: str = "step"
    step_size: int = 40
    milestones: list[int] = field(default_factory=list)
    gamma: float = 0.1


@dataclass
class TrackConfig:
    """layers: module names whose outputs are measured (``penultimate`` is the classifier's
    input and gets the classifier metrics); eval_every: epochs between measurements;
    test_metrics: also measure NC on the test set; cache_features: keep the tracked features of
    the evaluation pass in memory (N·d per layer) instead of a second forward pass.
    source: ``eval`` (default; the features of an evaluation pass after the epoch, model in eval
    mode, as in Papyan et al.) or ``train`` (the features the training forward passes computed
    during the epoch, in train mode while the weights moved, of the augmented images when
    ``data.augment`` is on, and in bfloat16 under ``run.bf16``: no extra forward pass; the train
    accuracies and loss are then those of the training passes too)."""

    layers: list[str] = field(default_factory=lambda: ["penultimate"])
    eval_every: int = 1
    test_metrics: bool = False
    cache_features: bool = True
    source: str = "eval"


@dataclass
class RunConfig:
    """device: ``auto`` | ``cpu`` | ``cuda``; bf16: bfloat16 autocast of the training forward
    pass (evaluation and metrics stay float32 / float64); channels_last: NHWC memory format for
    image models; compile: ``torch.compile`` of the training model (these three are speed options
    for CUDA, and run on the CPU too); progress: a progress bar (off when not a terminal or in
    CI).
    checkpoint_every, checkpoint_seconds: a checkpoint is written after an epoch when at least
    ``checkpoint_every`` epochs and ``checkpoint_seconds`` of wall time have passed since the
    last one (0 s: every ``checkpoint_every`` epochs), and always after the last epoch; a killed
    run loses at most that much work, and resumes to the same result whatever the cadence."""

    seed: int = 0
    device: str = "auto"
    bf16: bool = False
    channels_last: bool = False
    compile: bool = False
    progress: bool = True
    checkpoint_every: int = 1
    checkpoint_seconds: float = 60.0


@dataclass
class TrainConfig:
    data: DataConfig = field(default_factory=DataConfig)
    noise: NoiseConfig = field(default_factory=NoiseConfig)
    model: ModelConfig = field(default_factory=ModelConfig)
    loss: LossConfig = field(default_factory=LossConfig)
    optim: OptimConfig = field(default_factory=OptimConfig)
    track: TrackConfig = field(default_factory=TrackConfig)
    run: RunConfig = field(default_factory=RunConfig)

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)

    def fingerprint(self) -> str:
        """A hash of everything that changes the numbers (``run.progress`` and the checkpoint
        cadence excluded)."""
        d = self.to_dict()
        d["run"] = {k: v for k, v in d["run"].items() if k not in _CADENCE}
        return hashlib.sha256(json.dumps(d, sort_keys=True).encode()).hexdigest()[:16]

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> TrainConfig:
        cfg = cls()
        if not isinstance(data, dict):
            raise ValueError(f"config: expected a mapping of sections, got {type(data).__name__}")
        for section, values in data.items():
            _set_section(cfg, section, values)
        cfg.validate()
        return cfg

    @classmethod
    def from_yaml(cls, text: str) -> TrainConfig:
        return cls.from_dict(yaml.safe_load(text) or {})

    def validate(self) -> None:
        checks = [
            (self.noise.rate >= 0 and self.noise.rate < 1, "noise.rate", "a value in [0, 1)"),
            (self.optim.epochs >= 1, "optim.epochs", "at least 1"),
            (self.optim.lr > 0, "optim.lr", "a positive step"),
            (0 <= self.optim.momentum < 1, "optim.momentum", "a value in [0, 1)"),
            (self.optim.weight_decay >= 0, "optim.weight_decay", "a non-negative number"),
            (self.optim.feature_penalty >= 0, "optim.feature_penalty", "a non-negative number"),
            (self.data.batch_size >= 1, "data.batch_size", "at least 1"),
            (
                self.data.eval_batch_size is None or self.data.eval_batch_size >= 1,
                "data.eval_batch_size",
                "at least 1, or null for the device's default",
            ),
            (self.track.eval_every >= 1, "track.eval_every", "at least 1"),
            (self.run.checkpoint_every >= 1, "run.checkpoint_every", "at least 1"),
            (self.run.checkpoint_seconds >= 0, "run.checkpoint_seconds", "at least 0"),
            (self.run.device in ("auto", "cpu", "cuda"), "run.device", "auto, cpu or cuda"),
            (bool(self.track.layers), "track.layers", "at least one module name"),
            (self.track.source in ("eval", "train"), "track.source", "eval or train"),
        ]
        schedules = ("constant", "step", "multistep", "cosine")
        checks.append((self.optim.schedule in schedules, "optim.schedule", f"one of {schedules}"))
        for ok, key, expected in checks:
            if not ok:
                raise ValueError(f"{key}: expected {expected}, got {_get(self, key)!r}")


def _get(cfg: TrainConfig, key: str) -> Any:
    section, name = key.split(".")
    return getattr(getattr(cfg, section), name)


def _section_names(cfg: TrainConfig) -> list[str]:
    return [f.name for f in dataclasses.fields(cfg)]


def _set_section(cfg: TrainConfig, section: str, values: Any) -> None:
    if section not in _section_names(cfg):
        raise ValueError(
            f"{section}: unknown config section; valid sections: {_section_names(cfg)}"
        )
    if not isinstance(values, dict):
        raise ValueError(f"{section}: expected a mapping of keys, got {values!r}")
    for key, value in values.items():
        _set_key(cfg, f"{section}.{key}", value)


def _set_key(cfg: TrainConfig, dotted: str, value: Any) -> None:
    if dotted.count(".") != 1:
        raise ValueError(f"{dotted}: expected section.key, e.g. optim.lr")
    section, key = dotted.split(".")
    if section not in _section_names(cfg):
        raise ValueError(
            f"{dotted}: unknown config section {section!r}; valid: {_section_names(cfg)}"
        )
    obj = getattr(cfg, section)
    hints = typing.get_type_hints(type(obj))
    if key not in hints:
        raise ValueError(f"{dotted}: unknown config key; valid keys of {section}: {sorted(hints)}")
    setattr(obj, key, _coerce(dotted, value, hints[key]))


def _coerce(dotted: str, value: Any, hint: Any) -> Any:
    origin = typing.get_origin(hint)
    args = typing.get_args(hint)
    if origin in (typing.Union, types.UnionType):
        if value is None and type(None) in args:
            return None
        inner = [a for a in args if a is not type(None)]
        return _coerce(dotted, value, inner[0])
    if origin is list:
        if not isinstance(value, list):
            raise ValueError(f"{dotted}: expected a list, got {value!r}")
        return [_coerce(dotted, v, args[0]) for v in value]
    if hint is bool:
        if not isinstance(value, bool):
            raise ValueError(f"{dotted}: expected true or false, got {value!r}")
        return value
    if hint is int:
        if isinstance(value, bool) or not isinstance(value, int):
            raise ValueError(f"{dotted}: expected an integer, got {value!r}")
        return value
    if hint is float:
        if isinstance(value, str):  # YAML 1.1 reads 1e-4 (no dot) as a string
            try:
                value = float(value)
            except ValueError:
                pass
        if isinstance(value, bool) or not isinstance(value, (int, float)):
            raise ValueError(f"{dotted}: expected a number, got {value!r}")
        return float(value)
    if hint is str:
        if not isinstance(value, str):
            raise ValueError(f"{dotted}: expected a string, got {value!r}")
        return value
    raise TypeError(f"{dotted}: unsupported config type {hint!r}")


def apply_overrides(cfg: TrainConfig, overrides: list[str]) -> TrainConfig:
    """Apply ``section.key=value`` overrides (values parsed as YAML: 0.1, true, [1, 2], null)."""
    for item in overrides:
        if "=" not in item:
            raise ValueError(f"{item}: expected section.key=value")
        key, raw = item.split("=", 1)
        _set_key(cfg, key.strip(), yaml.safe_load(raw))
    cfg.validate()
    return cfg
