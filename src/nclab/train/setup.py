"""Everything a run needs before its first step, shared by :func:`~nclab.train.trainer.train`
and :func:`~nclab.train.load.load_run`: the device and process group, the data split with its
label noise, the network (built from the config, or the user's own), the tracked layers checked
against it, the loss, the optimizer and the learning-rate schedule.

:func:`set_up` reads and builds but writes nothing, so a bad configuration (an unknown layer, a
missing dataset, a network whose output is not K logits) fails before the run directory is
touched.
"""

from __future__ import annotations

import contextlib
import math
import os
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

import torch
from torch import nn

from nclab.errors import InputError
from nclab.losses import Loss, make_loss
from nclab.metrics.hooks import capture, find_classifier, resolve_layers
from nclab.train.config import TrainConfig
from nclab.train.data import load_dataset, subset
from nclab.train.nets import build_network
from nclab.train.noise import corrupt_labels

__all__ = [
    "RunSetup",
    "Split",
    "all_reduce",
    "barrier",
    "init_distributed",
    "lr_factor",
    "make_optimizer",
    "prepare_data",
    "resolve_device",
    "set_up",
]


@dataclass
class Split:
    """Images as float tensors on the device, observed and true labels."""

    x: torch.Tensor
    observed: torch.Tensor
    true: torch.Tensor


@dataclass
class RunSetup:
    """What :func:`set_up` builds. ``classifier`` is the network's final ``nn.Linear`` (W, b;
    None when it has none) and ``classifier_layer`` the tracked layer whose output is that
    classifier's input (it gets the classifier metrics; None when no tracked layer is)."""

    cfg: TrainConfig
    device: torch.device
    rank: int
    world: int
    train: Split
    test: Split
    num_classes: int
    input_shape: tuple[int, int, int]
    model: nn.Module
    loss: Loss
    classifier: nn.Linear | None
    classifier_layer: str | None
    user_model: bool


def resolve_device(name: str) -> torch.device:
    """The device of ``run.device``: ``auto`` is CUDA when available, else the CPU; under
    ``torchrun`` each process's CUDA device is its ``LOCAL_RANK``."""
    if name == "auto":
        name = "cuda" if torch.cuda.is_available() else "cpu"
    if name == "cuda" and not torch.cuda.is_available():
        raise ValueError("run.device: cuda requested but no CUDA device is available")
    if name == "cuda" and int(os.environ.get("WORLD_SIZE", "1")) > 1:
        return torch.device("cuda", int(os.environ.get("LOCAL_RANK", "0")))
    return torch.device(name)


def init_distributed(device: torch.device) -> tuple[int, int]:
    """(rank, world size); joins the process group that ``torchrun`` describes in the
    environment (gloo on CPU, nccl on CUDA) when WORLD_SIZE > 1."""
    import torch.distributed as dist

    if not dist.is_initialized() and int(os.environ.get("WORLD_SIZE", "1")) > 1:
        if device.type == "cuda":
            torch.cuda.set_device(device)  # NCCL binds each process to its own GPU
        dist.init_process_group("nccl" if device.type == "cuda" else "gloo")
    if dist.is_initialized():
        return dist.get_rank(), dist.get_world_size()
    return 0, 1


def barrier(world: int) -> None:
    if world > 1:
        import torch.distributed as dist

        dist.barrier()


def all_reduce(t: torch.Tensor, world: int) -> torch.Tensor:
    """Sum ``t`` in place over the ``world`` processes (nothing to do for one)."""
    if world > 1:
        import torch.distributed as dist

        dist.all_reduce(t)
    return t


@contextlib.contextmanager
def _data_keys(per_class_key: str) -> Iterator[None]:
    """The data readers' errors under the config keys a user wrote (``data.num_classes``,
    ``data.per_class`` / ``data.test_per_class``, ``data.name``)."""
    try:
        yield
    except ValueError as err:
        head, sep, rest = str(err).partition(":")
        keys = {"num_classes": "data.num_classes", "per_class": f"data.{per_class_key}"}
        keys["dataset"] = "data.name"
        if sep and head in keys:
            raise InputError(f"{keys[head]}:{rest}") from None
        raise


def prepare_data(
    cfg: TrainConfig, device: torch.device, download: bool = False
) -> tuple[Split, Split, int, tuple[int, int, int]]:
    """The training split (with label noise) and the test split on ``device``, K and the
    image shape (C, H, W); the same config gives the same samples, labels and noise."""
    d = cfg.data
    with _data_keys("per_class"):
        train_set = subset(
            load_dataset(d.name, train=True, data_dir=d.data_dir, download=download),
            num_classes=d.num_classes,
            per_class=d.per_class,
            seed=cfg.run.seed,
        )
    with _data_keys("test_per_class"):
        test_set = subset(
            load_dataset(d.name, train=False, data_dir=d.data_dir, download=download),
            num_classes=d.num_classes,
            per_class=d.test_per_class,
            seed=cfg.run.seed,
        )
    k = train_set.num_classes
    x = train_set.images.to(torch.float32) / 255.0
    xt = test_set.images.to(torch.float32) / 255.0
    if d.normalize:
        mean = x.mean(dim=(0, 2, 3), keepdim=True)
        std = x.std(dim=(0, 2, 3), keepdim=True).clamp_min(1e-6)
        x, xt = (x - mean) / std, (xt - mean) / std
    noisy = corrupt_labels(
        train_set.labels,
        k,
        cfg.noise.rate,
        cfg.noise.kind,
        seed=cfg.run.seed,
        convention=cfg.noise.convention,
    )
    train = Split(x.to(device), noisy.observed.to(device), noisy.true.to(device))
    test = Split(xt.to(device), test_set.labels.to(device), test_set.labels.to(device))
    return train, test, k, tuple(train_set.images.shape[1:])  # type: ignore[return-value]


def _classifier_of(model: nn.Module) -> nn.Linear | None:
    """The module named ``fc`` when it is an ``nn.Linear`` (every built-in network's), else the
    last ``nn.Linear`` registered (see :func:`nclab.metrics.hooks.find_classifier`)."""
    fc = dict(model.named_modules()).get("fc")
    if isinstance(fc, nn.Linear):
        return fc
    found = find_classifier(model)
    return found[1] if found else None


def _check_network(
    model: nn.Module, x: torch.Tensor, k: int, layers: list[str], classifier: nn.Linear | None
) -> str | None:
    """One forward pass of two training images in eval mode: the network returns (2, K) logits,
    every tracked layer runs once and returns a tensor; returns the tracked layer whose output
    is the classifier's input (the one that gets the classifier metrics), if any."""
    seen: dict[str, torch.Tensor] = {}

    def classifier_input(_m: nn.Module, inputs: tuple[Any, ...]) -> None:
        seen["input"] = inputs[0].detach().flatten(1)

    handle = classifier.register_forward_pre_hook(classifier_input) if classifier else None
    was_training = model.training
    try:
        model.eval()
        with torch.no_grad(), capture(model, layers) as captured:
            captured.new_pass()
            out = model(x[:2])
            feats = {name: captured[name] for name in layers}
    except (RuntimeError, TypeError) as err:
        # Bad input either way: a tracked layer that cannot be measured ("layers: ..."), or a
        # network that does not take the dataset's images.
        if str(err).startswith("layers:"):
            raise ValueError(f"track.{err}") from None
        raise ValueError(
            f"model: a forward pass of two training images of shape {tuple(x.shape[1:])} "
            f"failed ({type(err).__name__}: {err})"
        ) from None
    finally:
        model.train(was_training)
        if handle is not None:
            handle.remove()
    if not isinstance(out, torch.Tensor) or out.shape != (len(x[:2]), k):
        shape = tuple(out.shape) if isinstance(out, torch.Tensor) else type(out).__name__
        raise ValueError(
            f"model: expected the network to return logits of shape (batch, {k}) for the "
            f"dataset's {k} classes, got {shape}"
        )
    inp = seen.get("input")
    if inp is None:
        return None
    matches = [n for n, f in feats.items() if f.shape == inp.shape and torch.equal(f, inp)]
    if "penultimate" in matches:
        return "penultimate"
    return matches[-1] if matches else None


def set_up(
    cfg: TrainConfig,
    *,
    download: bool = False,
    model: nn.Module | None = None,
    distributed: bool = True,
) -> RunSetup:
    """Validate ``cfg``, load the data, build the network (or take ``model``, moved to the
    device) and check the tracked layers and the logits against it; writes nothing.

    ``distributed=False`` stays a single process even under ``torchrun`` (reading a run back)."""
    cfg.validate()
    device = resolve_device(cfg.run.device)
    rank, world = init_distributed(device) if distributed else (0, 1)
    train, test, k, shape = prepare_data(cfg, device, download)
    torch.manual_seed(cfg.run.seed)
    user_model = model is not None
    if model is None:
        model = build_network(
            cfg.model.name,
            input_shape=shape,
            num_classes=k,
            widths=cfg.model.widths,
            batchnorm=cfg.model.batchnorm,
            width=cfg.model.width,
            bias=cfg.model.bias,
        )
    elif not isinstance(model, nn.Module):
        raise TypeError(f"model: expected a torch.nn.Module, got {type(model).__name__}")
    model = model.to(device)
    try:
        resolve_layers(model, cfg.track.layers)
    except ValueError as err:  # named as the config key the user wrote
        raise ValueError(f"track.{err}") from None
    classifier = _classifier_of(model)
    classifier_layer = _check_network(model, train.x, k, cfg.track.layers, classifier)
    if cfg.optim.classifier_weight_decay is not None and classifier is None:
        raise ValueError(
            "optim.classifier_weight_decay: the network has no nn.Linear classifier to apply it to"
        )
    if cfg.optim.feature_penalty and classifier is None:
        raise ValueError(
            "optim.feature_penalty: penalizes the classifier's input features, and the network "
            "has no nn.Linear classifier"
        )
    lc = cfg.loss
    loss = make_loss(
        lc.name,
        smoothing=lc.smoothing,
        gamma=lc.gamma,
        target_scale=lc.target_scale,
        target_weight=lc.target_weight,
    )
    return RunSetup(
        cfg, device, rank, world, train, test, k, shape, model, loss, classifier,
        classifier_layer, user_model,
    )  # fmt: skip


def make_optimizer(
    model: nn.Module, cfg: TrainConfig, classifier: nn.Module | None = None
) -> torch.optim.SGD:
    """SGD with momentum; the ``classifier``'s parameters (default: the module ``fc``) take
    ``optim.classifier_weight_decay``, the others ``optim.weight_decay``."""
    o = cfg.optim
    if classifier is None:
        classifier = dict(model.named_modules()).get("fc")
    head = {id(p) for p in classifier.parameters()} if classifier is not None else set()
    fc = [p for p in model.parameters() if id(p) in head]
    rest = [p for p in model.parameters() if id(p) not in head]
    wd_fc = o.weight_decay if o.classifier_weight_decay is None else o.classifier_weight_decay
    groups = [
        {"params": rest, "weight_decay": o.weight_decay},
        {"params": fc, "weight_decay": wd_fc},
    ]
    return torch.optim.SGD(groups, lr=o.lr, momentum=o.momentum)


def lr_factor(cfg: TrainConfig, epoch: int) -> float:
    """Multiplier of the base learning rate during ``epoch`` e (0-based): ``step`` γ^⌊e/s⌋,
    ``multistep`` γ^(number of milestones <= e), ``cosine`` ½(1 + cos(π e / E)), ``constant`` 1.

    Only ``cosine`` depends on the number of epochs E, which is why a cosine run cannot be
    extended (see :mod:`nclab.train.rundir`)."""
    o = cfg.optim
    if o.schedule == "step":
        return o.gamma ** (epoch // o.step_size)
    if o.schedule == "multistep":
        return o.gamma ** sum(epoch >= m for m in o.milestones)
    if o.schedule == "cosine":
        return 0.5 * (1.0 + math.cos(math.pi * epoch / o.epochs))
    return 1.0
