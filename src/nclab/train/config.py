"""The typed, validated training configuration (YAML file, preset, ``key=value`` overrides).

Sections and their keys are the dataclasses below. Every key is checked before anything runs:
an unknown key, a value of the wrong type, a number that is not finite or outside its range, an
unknown name or a rule between keys that is broken is a ``ValueError`` that names the key as a
config file writes it (``optim.gamma``) and what was expected. A YAML file is read with plain
values only; a key given twice, malformed YAML, a control character or bytes that are not UTF-8
are errors that start with ``FILE:LINE:COLUMN:``. ``TrainConfig.to_dict()`` is what a run
directory's ``config.yaml`` holds, and a checkpoint from a different configuration refuses to
resume.
"""

from __future__ import annotations

import copy
import dataclasses
import hashlib
import json
import math
import os
import types
import typing
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

import yaml

from nclab.errors import InputError
from nclab.yamlfile import YAMLProblem, parse_yaml, read_utf8

if TYPE_CHECKING:
    from nclab.metrics.options import MetricOptions

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
_CADENCE = ("progress", "checkpoint_every", "checkpoint_seconds", "threads")

# Keys added after runs had been written: at its default, each describes what those runs did, so
# it is left out of the fingerprint there and a run written before it existed still resumes.
_ADDED_KEYS = {
    "model": ("bias",),
    "noise": ("convention",),
    "track": ("global_mean", "within_class", "center_weights", "rank_rtol", "drop_empty_classes"),
}


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
    """Label noise of the training set (``nclab.train.noise.corrupt_labels``).

    rate: η in [0, 1); kind: ``symmetric`` | ``symmetric_flip`` | ``pair``; convention: what η
    counts. ``redraw`` (default; the MD paper's convention, Nguyen et al., ICLR 2023): each label
    is redrawn with probability η, with ``symmetric`` uniformly over all K classes, itself
    included, so only η(K-1)/K of the labels are expected to change (η = 0.2, K = 10: 18 %).
    ``flip``: exactly ⌊ηN + ½⌋ of the N labels change (symmetric: to one of the K-1 other
    classes; pair: class c to (c + 1) mod K)."""

    rate: float = 0.0
    kind: str = "symmetric"
    convention: str = "redraw"


@dataclass
class ModelConfig:
    """name: ``mlp`` | ``cnn`` | ``resnet18`` | ``vgg11``; widths: MLP hidden widths (the last is
    the penultimate width) or CNN channel widths; width: ResNet / VGG width multiplier; bias:
    the classifier's bias (false: Wh without b, as in Tirer & Bruna's MSE experiments)."""

    name: str = "mlp"
    widths: list[int] = field(default_factory=lambda: [512, 512, 512])
    batchnorm: bool = True
    width: float = 1.0
    bias: bool = True


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
    accuracies and loss are then those of the training passes too).
    global_mean, within_class, center_weights, rank_rtol, drop_empty_classes: the options of
    every measurement, with the names, defaults and meaning of
    :class:`nclab.metrics.options.MetricOptions` (its docstring has the formulas)."""

    layers: list[str] = field(default_factory=lambda: ["penultimate"])
    eval_every: int = 1
    test_metrics: bool = False
    cache_features: bool = True
    source: str = "eval"
    global_mean: str = "sample"
    within_class: str = "pooled"
    center_weights: bool = False
    rank_rtol: float | None = None
    drop_empty_classes: bool = False

    def metric_options(self) -> MetricOptions:
        """The :class:`~nclab.metrics.options.MetricOptions` these keys describe."""
        from nclab.metrics.options import MetricOptions

        names = [f.name for f in dataclasses.fields(MetricOptions)]
        return MetricOptions(**{name: getattr(self, name) for name in names})


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
    run loses at most that much work, and resumes to the same result whatever the cadence.
    threads: CPU threads of torch's operations (null: ``$OMP_NUM_THREADS`` when set, else the
    cores available shared among a ``torchrun`` machine's processes, at most 4); a speed
    setting, outside the fingerprint."""

    seed: int = 0
    device: str = "auto"
    bf16: bool = False
    channels_last: bool = False
    compile: bool = False
    progress: bool = True
    checkpoint_every: int = 1
    checkpoint_seconds: float = 60.0
    threads: int | None = None


@dataclass
class TrainConfig:
    """A training run's configuration: seven sections of keys (``section.key`` in overrides)."""

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
        defaults = TrainConfig().to_dict()
        for section, keys in _ADDED_KEYS.items():
            for key in keys:
                if d[section][key] == defaults[section][key]:
                    del d[section][key]
        return hashlib.sha256(json.dumps(d, sort_keys=True).encode()).hexdigest()[:16]

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> TrainConfig:
        """Build from a mapping of sections to mappings of keys (an empty section may be None)."""
        cfg = cls()
        if not isinstance(data, dict):
            raise InputError(f"config: expected a mapping of sections, got {type(data).__name__}")
        for section, values in data.items():
            _set_section(cfg, section, values)
        cfg.validate()
        return cfg

    @classmethod
    def from_yaml(cls, text: str, source: str = "config") -> TrainConfig:
        """Parse YAML ``text``; errors start with ``source:line:column:`` where the YAML says.

        Plain values only (PyYAML's safe loader: a ``!!python`` tag is an error), and a key
        given twice in one mapping is an error (YAML parsers otherwise keep the last silently).
        """
        try:
            data, marks = parse_yaml(text)
        except YAMLProblem as err:
            raise InputError(f"{source}:{err.line}:{err.column}: {err.message}") from None
        if data is None:
            data = {}
        if not isinstance(data, dict):
            raise InputError(
                f"{source}:{_where(marks, '')}: expected a mapping of sections "
                f"({', '.join(_section_names(cls()))}) at the top level, got "
                f"{_describe(data)}"
            )
        try:
            return cls.from_dict(data)
        except ValueError as err:
            key = str(err).split(":", 1)[0]
            where = f"{source}:{_where(marks, key)}" if key in marks else source
            raise InputError(f"{where}: {err}") from None

    @classmethod
    def from_file(cls, path: str | os.PathLike[str]) -> TrainConfig:
        """Read a YAML config file (UTF-8); every error names the file, and the line and column
        where there is one."""
        p = Path(path)
        return cls.from_yaml(read_utf8(p, "config"), source=str(p))

    def validate(self) -> None:
        """Check every key's type and value, and the rules between keys; the error names the key
        as written in a config file (``section.key``) and what was expected."""
        # Imported here, not at the top: they load torch, which `nclab --help` does not need.
        from nclab.losses import LOSSES
        from nclab.metrics.options import GlobalMean, WithinClass
        from nclab.train.data import DATASETS
        from nclab.train.nets import NETWORKS
        from nclab.train.noise import NOISE_CONVENTIONS, NOISE_KINDS

        for section in _section_names(self):
            obj = getattr(self, section)
            for key, hint in typing.get_type_hints(type(obj)).items():
                _coerce(f"{section}.{key}", getattr(obj, key), hint)
        d, n, m, lo, o, t, r = (
            self.data,
            self.noise,
            self.model,
            self.loss,
            self.optim,
            self.track,
            self.run,
        )
        schedules = ("constant", "step", "multistep", "cosine")
        global_means, within = typing.get_args(GlobalMean), typing.get_args(WithinClass)
        checks = [
            (d.name in DATASETS, "data.name", f"one of {DATASETS}"),
            (d.data_dir != "", "data.data_dir", "a directory, or null for the default places"),
            (
                _in_range(d.num_classes, 2),
                "data.num_classes",
                "an integer in [2, 2**63), or null for all the dataset's classes",
            ),
            (
                _in_range(d.per_class, 1),
                "data.per_class",
                "an integer in [1, 2**63), or null for every training sample",
            ),
            (
                _in_range(d.test_per_class, 1),
                "data.test_per_class",
                "an integer in [1, 2**63), or null for every test sample",
            ),
            (_in_range(d.batch_size, 1), "data.batch_size", "an integer in [1, 2**63)"),
            (
                _in_range(d.eval_batch_size, 1),
                "data.eval_batch_size",
                "an integer in [1, 2**63), or null for the device's default",
            ),
            (0 <= n.rate < 1, "noise.rate", "a value in [0, 1)"),
            (n.kind in NOISE_KINDS, "noise.kind", f"one of {NOISE_KINDS}"),
            (n.convention in NOISE_CONVENTIONS, "noise.convention", f"one of {NOISE_CONVENTIONS}"),
            (m.name in NETWORKS, "model.name", f"one of {NETWORKS}"),
            (
                all(_in_range(w, 1) for w in m.widths),
                "model.widths",
                "widths that are integers in [1, 2**63)",
            ),
            (
                bool(m.widths) or m.name not in ("mlp", "cnn"),
                "model.widths",
                f"at least one width for model.name={m.name}",
            ),
            (m.width > 0, "model.width", "a width multiplier > 0"),
            (lo.name in LOSSES, "loss.name", f"one of {LOSSES}"),
            (0 <= lo.smoothing < 1, "loss.smoothing", "α in [0, 1)"),
            (lo.gamma >= 0, "loss.gamma", "γ >= 0"),
            (lo.target_scale > 0, "loss.target_scale", "M > 0"),
            (lo.target_weight > 0, "loss.target_weight", "k > 0"),
            (_in_range(o.epochs, 1), "optim.epochs", "an integer in [1, 2**63)"),
            (o.lr > 0, "optim.lr", "a learning rate > 0"),
            (0 <= o.momentum < 1, "optim.momentum", "a value in [0, 1)"),
            (o.weight_decay >= 0, "optim.weight_decay", "a non-negative number"),
            (
                o.classifier_weight_decay is None or o.classifier_weight_decay >= 0,
                "optim.classifier_weight_decay",
                "a non-negative number, or null for optim.weight_decay",
            ),
            (o.feature_penalty >= 0, "optim.feature_penalty", "a non-negative number"),
            (o.schedule in schedules, "optim.schedule", f"one of {schedules}"),
            (_in_range(o.step_size, 1), "optim.step_size", "an integer in [1, 2**63)"),
            (
                0 < o.gamma <= 1,
                "optim.gamma",
                "a factor in (0, 1] (each drop multiplies the learning rate by it)",
            ),
            (
                all(a < b for a, b in zip([0, *o.milestones], o.milestones, strict=False))
                and all(e < o.epochs for e in o.milestones),
                "optim.milestones",
                f"strictly increasing epochs in [1, optim.epochs) = [1, {o.epochs})",
            ),
            (
                bool(o.milestones) == (o.schedule == "multistep"),
                "optim.milestones",
                "at least one epoch with optim.schedule=multistep, and none with another "
                f"schedule (optim.schedule is {o.schedule!r})",
            ),
            (bool(t.layers), "track.layers", "at least one module name"),
            (all(t.layers), "track.layers", "module names, not empty strings"),
            (len(set(t.layers)) == len(t.layers), "track.layers", "each module named once"),
            (_in_range(t.eval_every, 1), "track.eval_every", "an integer in [1, 2**63)"),
            (t.source in ("eval", "train"), "track.source", "eval or train"),
            (t.global_mean in global_means, "track.global_mean", f"one of {global_means}"),
            (t.within_class in within, "track.within_class", f"one of {within}"),
            (
                t.rank_rtol is None or 0 <= t.rank_rtol < 1,
                "track.rank_rtol",
                "a number in [0, 1), or null for the default rule",
            ),
            (_in_range(r.seed, 0), "run.seed", "an integer in [0, 2**63)"),
            (r.device in ("auto", "cpu", "cuda"), "run.device", "auto, cpu or cuda"),
            (_in_range(r.checkpoint_every, 1), "run.checkpoint_every", "an integer in [1, 2**63)"),
            (r.checkpoint_seconds >= 0, "run.checkpoint_seconds", "at least 0"),
            (
                _in_range(r.threads, 1),
                "run.threads",
                "an integer in [1, 2**63), or null for the default",
            ),
        ]
        for ok, key, expected in checks:
            if not ok:
                raise InputError(f"{key}: expected {expected}, got {_show(_get(self, key))}")
        try:
            self.track.metric_options()
        except (TypeError, ValueError) as err:
            raise InputError(_rekey("track", err, self.track)) from None
        from nclab.losses import Loss

        try:
            Loss(
                name=lo.name,
                smoothing=lo.smoothing,
                gamma=lo.gamma,
                target_scale=lo.target_scale,
                target_weight=lo.target_weight,
            )
        except ValueError as err:
            raise InputError(_rekey("loss", err, lo, alias={"loss": "name"})) from None


def _in_range(value: int | None, low: int) -> bool:
    """``value`` is None (the key's default rule) or an integer in [low, 2**63): torch, numpy and
    the random generators take 64-bit integers."""
    return value is None or low <= value < 2**63


def _rekey(section: str, err: Exception, obj: Any, alias: dict[str, str] | None = None) -> str:
    """``err``'s message with its leading argument name turned into the config key."""
    name, sep, rest = str(err).partition(":")
    name = (alias or {}).get(name, name)
    if sep and name in {f.name for f in dataclasses.fields(obj)}:
        return f"{section}.{name}:{rest}"
    return f"{section}: {err}"


def _show(value: Any) -> str:
    """``repr(value)``, shortened to 80 characters (a 400-digit integer stays readable)."""
    text = repr(value)
    return text if len(text) <= 80 else f"{text[:60]}... ({len(text)} characters)"


def _get(cfg: TrainConfig, key: str) -> Any:
    section, name = key.split(".")
    return getattr(getattr(cfg, section), name)


def _section_names(cfg: TrainConfig) -> list[str]:
    return [f.name for f in dataclasses.fields(cfg)]


def _set_section(cfg: TrainConfig, section: str, values: Any) -> None:
    if section not in _section_names(cfg):
        raise InputError(
            f"{section}: unknown config section; valid sections: {_section_names(cfg)}"
        )
    if values is None:  # a section whose keys are all commented out
        return
    if not isinstance(values, dict):
        raise InputError(f"{section}: expected a mapping of keys, got {_show(values)}")
    for key, value in values.items():
        _set_key(cfg, f"{section}.{key}", value)


def _set_key(cfg: TrainConfig, dotted: str, value: Any) -> None:
    if dotted.count(".") != 1:
        raise InputError(f"{dotted}: expected section.key, e.g. optim.lr")
    section, key = dotted.split(".")
    if section not in _section_names(cfg):
        raise InputError(
            f"{dotted}: unknown config section {section!r}; valid: {_section_names(cfg)}"
        )
    obj = getattr(cfg, section)
    hints = typing.get_type_hints(type(obj))
    if key not in hints:
        raise InputError(f"{dotted}: unknown config key; valid keys of {section}: {sorted(hints)}")
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
            raise InputError(f"{dotted}: expected a list, got {_show(value)}")
        return [_coerce(dotted, v, args[0]) for v in value]
    if hint is bool:
        if not isinstance(value, bool):
            raise InputError(f"{dotted}: expected true or false, got {_show(value)}")
        return value
    if hint is int:
        if isinstance(value, bool) or not isinstance(value, int):
            raise InputError(f"{dotted}: expected an integer, got {_show(value)}")
        return value
    if hint is float:
        number = value
        if isinstance(value, str):  # YAML 1.1 reads 1e-4 (no dot) as a string
            try:
                number = float(value)
            except ValueError:
                pass
        if isinstance(number, bool) or not isinstance(number, (int, float)):
            raise InputError(f"{dotted}: expected a number, got {_show(value)}")
        try:
            number = float(number)
        except OverflowError:  # an integer beyond the float range
            number = math.inf
        if not math.isfinite(number):
            raise InputError(f"{dotted}: expected a finite number, got {_show(value)}")
        return number
    if hint is str:
        if not isinstance(value, str):
            raise InputError(f"{dotted}: expected a string, got {_show(value)}")
        return value
    raise TypeError(f"{dotted}: unsupported config type {hint!r}")


def apply_overrides(cfg: TrainConfig, overrides: list[str]) -> TrainConfig:
    """Apply ``section.key=value`` overrides (values parsed as YAML: 0.1, true, [1, 2], null) to
    ``cfg`` in place and return it; checked all together, and when one is refused ``cfg`` is
    left as it was."""
    new = copy.deepcopy(cfg)
    for item in overrides:
        if "=" not in item:
            raise InputError(f"{item}: expected section.key=value")
        key, raw = item.split("=", 1)
        try:
            value, _ = parse_yaml(raw)
        except YAMLProblem as err:
            raise InputError(
                f"{key.strip()}: the value {raw!r} does not parse: {err.message}"
            ) from None
        _set_key(new, key.strip(), value)
    new.validate()
    for section in _section_names(cfg):
        for f in dataclasses.fields(getattr(cfg, section)):
            setattr(getattr(cfg, section), f.name, getattr(getattr(new, section), f.name))
    return cfg


def _where(marks: dict[str, yaml.Mark], key: str) -> str:
    mark = marks.get(key)
    return "1:1" if mark is None else f"{mark.line + 1}:{mark.column + 1}"


def _describe(value: Any) -> str:
    if isinstance(value, list):
        return "a list"
    return f"the {type(value).__name__} {value!r}"
