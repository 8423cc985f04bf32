"""Train a network into the terminal phase and measure neural collapse as it goes.

``train(config, out_dir)`` is the whole run; the loop in :func:`train` reads top to bottom:
data and label noise, network, optimizer and schedule, then per epoch one pass of SGD over the
shuffled training set (every sample, every epoch), and every ``track.eval_every`` epochs an
evaluation that writes one row per tracked layer to ``metrics.csv``. Checkpoints are written
atomically and carry everything a resumed run needs (weights, optimizer, schedule, the shuffling
generator, the metrics rows), so a run killed at any moment and resumed ends with the same
metrics table and weights as an uninterrupted one (on CPU, where torch is deterministic).
"""

from __future__ import annotations

import contextlib
import gc
import itertools
import math
import os
import sys
import time
from collections.abc import Callable, Iterable, Iterator, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
import torch.nn.functional as F
import yaml
from torch import nn

from nclab.io import atomic_write, atomic_write_text
from nclab.losses import Loss, make_loss
from nclab.metrics import (
    ClassMeans,
    CollapseAccumulator,
    MetricOptions,
    NoiseAccumulator,
    NoisyClassMeans,
)
from nclab.metrics.hooks import Captured, capture
from nclab.train.config import TrainConfig
from nclab.train.data import load_dataset, subset
from nclab.train.nets import build_network
from nclab.train.noise import corrupt_labels
from nclab.train.table import MetricsFile

__all__ = ["RunDirectoryError", "TrainResult", "train"]


class RunDirectoryError(RuntimeError):
    """The output directory holds another run (or a run of another configuration)."""


@dataclass
class Split:
    """Images as float tensors on the device, observed and true labels."""

    x: torch.Tensor
    observed: torch.Tensor
    true: torch.Tensor


@dataclass
class TrainResult:
    out_dir: Path
    rows: list[dict[str, Any]]
    model: nn.Module
    stopped_early: str | None = None


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


def _distributed(device: torch.device) -> tuple[int, int]:
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


def _barrier(world: int) -> None:
    if world > 1:
        import torch.distributed as dist

        dist.barrier()


def _all_reduce(t: torch.Tensor, world: int) -> torch.Tensor:
    if world > 1:
        import torch.distributed as dist

        dist.all_reduce(t)
    return t


def prepare_data(
    cfg: TrainConfig, device: torch.device, download: bool = False
) -> tuple[Split, Split, int, tuple[int, int, int]]:
    d = cfg.data
    train_set = subset(
        load_dataset(d.name, train=True, data_dir=d.data_dir, download=download),
        num_classes=d.num_classes,
        per_class=d.per_class,
        seed=cfg.run.seed,
    )
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
    noisy = corrupt_labels(train_set.labels, k, cfg.noise.rate, cfg.noise.kind, seed=cfg.run.seed)
    train = Split(x.to(device), noisy.observed.to(device), noisy.true.to(device))
    test = Split(xt.to(device), test_set.labels.to(device), test_set.labels.to(device))
    return train, test, k, tuple(train_set.images.shape[1:])  # type: ignore[return-value]


def random_crop_flip(
    x: torch.Tensor, gen: torch.Generator, pad: int = 4, keep: slice = slice(None)
) -> torch.Tensor:
    """Per-sample random crop (zero padding ``pad``) and horizontal flip, on tensors.

    The random draws are made for the whole batch ``x`` and applied to the rows ``keep`` only,
    so that every process of a distributed run draws the same numbers."""
    offsets = torch.randint(0, 2 * pad + 1, (2, x.shape[0]), generator=gen)[:, keep].to(x.device)
    flips = (torch.rand(x.shape[0], generator=gen) < 0.5)[keep].to(x.device)
    x = x[keep]
    b, _, h, w = x.shape
    padded = F.pad(x, (pad, pad, pad, pad))
    rows = (offsets[0, :, None] + torch.arange(h, device=x.device))[:, None, :, None]
    cols = (offsets[1, :, None] + torch.arange(w, device=x.device))[:, None, None, :]
    batch = torch.arange(b, device=x.device)[:, None, None, None]
    chan = torch.arange(x.shape[1], device=x.device)[None, :, None, None]
    out = padded[batch, chan, rows, cols]
    return torch.where(flips[:, None, None, None], out.flip(3), out)


def eval_batch_size(cfg: TrainConfig, device: torch.device) -> int:
    """``data.eval_batch_size``, or its default for ``device`` (see ``DataConfig``)."""
    if cfg.data.eval_batch_size is not None:
        return cfg.data.eval_batch_size
    return 1024 if device.type == "cuda" else 256


def batch_starts(n: int, batch_size: int) -> list[int]:
    """Batch boundaries covering every sample; a last batch of one is merged into the previous
    one (BatchNorm cannot train on a single sample)."""
    starts = list(range(0, n, batch_size))
    if len(starts) > 1 and n - starts[-1] == 1:
        starts.pop()
    return [*starts, n]


def make_optimizer(model: nn.Module, cfg: TrainConfig) -> torch.optim.SGD:
    o = cfg.optim
    fc = [p for n, p in model.named_parameters() if n.startswith("fc.")]
    rest = [p for n, p in model.named_parameters() if not n.startswith("fc.")]
    wd_fc = o.weight_decay if o.classifier_weight_decay is None else o.classifier_weight_decay
    groups = [
        {"params": rest, "weight_decay": o.weight_decay},
        {"params": fc, "weight_decay": wd_fc},
    ]
    return torch.optim.SGD(groups, lr=o.lr, momentum=o.momentum)


def lr_factor(cfg: TrainConfig, epoch: int) -> float:
    """Multiplier of the base learning rate during ``epoch`` e (0-based): ``step`` γ^⌊e/s⌋,
    ``multistep`` γ^(number of milestones <= e), ``cosine`` ½(1 + cos(π e / E)), ``constant`` 1."""
    o = cfg.optim
    if o.schedule == "step":
        return o.gamma ** (epoch // o.step_size)
    if o.schedule == "multistep":
        return o.gamma ** sum(epoch >= m for m in o.milestones)
    if o.schedule == "cosine":
        return 0.5 * (1.0 + math.cos(math.pi * epoch / o.epochs))
    return 1.0


# One evaluated batch: tracked features by layer, logits, observed and true labels.
Batch = tuple[dict[str, torch.Tensor], torch.Tensor, torch.Tensor, torch.Tensor]


def measure_batches(
    batches: Callable[[], Iterable[Batch]],
    model: nn.Module,
    loss: Loss,
    k: int,
    noise: bool,
    layers: list[str],
    world: int = 1,
    stage: bool = True,
) -> tuple[dict[str, float], dict[str, dict[str, float]]]:
    """Loss and accuracies (observed and true labels), and per layer the NC report (and
    memorization / dilation when ``noise``), from two passes over ``batches()``; the sums are
    all-reduced over ``world`` processes, so every process gets the numbers of one process.
    ``stage=False`` when ``batches()`` is one batch of the whole split (nothing to gather)."""
    opts = MetricOptions()
    means = {
        name: NoisyClassMeans(k, stage=stage) if noise else ClassMeans(k, stage=stage)
        for name in layers
    }
    device = next(model.parameters()).device
    loss_sum = torch.zeros((), dtype=torch.float64, device=device)
    counts = torch.zeros(3, dtype=torch.int64, device=device)  # samples, hits observed, true
    for feats, logits, y_obs, y_true in batches():
        loss_sum += loss.per_sample(logits, y_obs).sum(dtype=torch.float64)
        pred = logits.argmax(1)
        counts += torch.stack(
            [counts.new_tensor(len(y_obs)), (pred == y_obs).sum(), (pred == y_true).sum()]
        )
        for name in layers:
            acc = means[name]
            if isinstance(acc, NoisyClassMeans):
                acc.update(feats[name], y_obs, y_true)
            else:
                acc.update(feats[name], y_obs)
    fc = model.get_submodule("fc")
    centred, noisy = {}, {}
    for name in layers:
        acc = means[name]
        if world > 1:
            acc.all_reduce()
        weight = (fc.weight, fc.bias) if name == "penultimate" else (None, None)
        if isinstance(acc, NoisyClassMeans):
            stats, clean_stats = acc.compute(opts)
            noisy[name] = NoiseAccumulator(clean_stats, stage=stage)
        else:
            stats = acc.compute(opts)
        centred[name] = CollapseAccumulator(stats, *weight, stage=stage)
    if layers:
        for feats, _, y_obs, y_true in batches():
            for name in layers:
                centred[name].update(feats[name], y_obs)
                if noise:
                    noisy[name].update(feats[name], y_obs, y_true)
    for name in layers:
        if world > 1:
            centred[name].all_reduce()
            if noise:
                noisy[name].all_reduce()
    _all_reduce(loss_sum, world)
    _all_reduce(counts, world)
    n = float(counts[0])
    summary = {
        "eval_loss": float(loss_sum) / n,
        "acc_observed": float(counts[1]) / n,
        "acc_true": float(counts[2]) / n,
    }
    reports = {}
    for name in layers:
        values = centred[name].compute().as_dict()
        if noise:
            values.update(noisy[name].compute().as_dict())
        reports[name] = values
    return summary, reports


def evaluate(
    model: nn.Module,
    data: Split,
    cfg: TrainConfig,
    loss: Loss,
    k: int,
    noise: bool,
    layers: list[str],
    rank: int = 0,
    world: int = 1,
    store: _EpochStore | None = None,
) -> tuple[dict[str, float], dict[str, dict[str, float]]]:
    """:func:`measure_batches` over ``data`` with the model in eval mode, without gradients:
    one forward pass whose tracked features, logits and labels are copied into ``store`` (reused
    across calls; a new one when omitted) and measured as one batch (``track.cache_features``),
    or two forward passes without keeping them. With ``world`` > 1 each process takes its
    contiguous shard of the data."""
    n_all = len(data.observed)
    lo_shard, hi_shard = n_all * rank // world, n_all * (rank + 1) // world
    x = data.x[lo_shard:hi_shard]
    y_obs, y_true = data.observed[lo_shard:hi_shard], data.true[lo_shard:hi_shard]
    bounds = batch_starts(len(y_obs), eval_batch_size(cfg, x.device))

    def forward() -> Iterator[Batch]:
        with torch.no_grad(), capture(model, layers) if layers else _no_hooks() as captured:
            for lo, hi in itertools.pairwise(bounds):
                captured.new_pass()
                logits = model(x[lo:hi]).float()
                yield dict(captured), logits, y_obs[lo:hi], y_true[lo:hi]

    model.eval()
    if not cfg.track.cache_features:
        return measure_batches(forward, model, loss, k, noise, layers, world)
    # One batch instead of many: the accumulators' fixed cost per batch is paid once.
    store = store if store is not None else _EpochStore()
    store.reset()
    for batch in forward():
        store.add(*batch)
    whole = store.batch()
    return measure_batches(lambda: [whole], model, loss, k, noise, layers, world, stage=False)


class _EpochStore:
    """The tracked features, logits and labels of one pass over a split (the epoch's training
    passes, or an evaluation pass), copied into buffers allocated once and reused every epoch
    (holding the activations themselves would keep autograd's memory alive and make every step
    allocate afresh)."""

    def __init__(self) -> None:
        self.buffers: dict[str, torch.Tensor] = {}
        self.filled = 0

    def reset(self) -> None:
        self.filled = 0

    def add(
        self,
        feats: Mapping[str, torch.Tensor],
        logits: torch.Tensor,
        observed: torch.Tensor,
        true: torch.Tensor,
    ) -> None:
        parts = {
            **{f"f:{n}": t for n, t in feats.items()},
            "logits": logits.detach(),
            "observed": observed,
            "true": true,
        }
        lo, hi = self.filled, self.filled + len(observed)
        for key, value in parts.items():
            buf = self.buffers.get(key)
            if buf is None or buf.shape[0] < hi:
                grown = value.new_empty(
                    (max(hi, 2 * (0 if buf is None else buf.shape[0])), *value.shape[1:])
                )
                if buf is not None:
                    grown[:lo] = buf[:lo]
                self.buffers[key] = buf = grown
            buf[lo:hi] = value
        self.filled = hi

    def batch(self) -> Batch:
        n = self.filled
        feats = {key[2:]: buf[:n] for key, buf in self.buffers.items() if key.startswith("f:")}
        b = self.buffers
        return feats, b["logits"][:n].float(), b["observed"][:n], b["true"][:n]


@contextlib.contextmanager
def _no_hooks() -> Iterator[Captured]:
    yield Captured()


def _save(path: Path, state: dict[str, Any]) -> None:
    atomic_write(path, lambda handle: torch.save(state, handle))


def checkpoint_due(cfg: TrainConfig, epochs_done: int, last: tuple[int, float]) -> bool:
    """Whether to write a checkpoint after ``epochs_done`` epochs, the last one having been
    written after ``last[0]`` epochs at ``time.monotonic()`` = ``last[1]`` (see ``RunConfig``)."""
    if epochs_done == cfg.optim.epochs:
        return True
    return (
        epochs_done - last[0] >= cfg.run.checkpoint_every
        and time.monotonic() - last[1] >= cfg.run.checkpoint_seconds
    )


def _check_run_dir(out: Path, cfg: TrainConfig, resume: bool) -> dict[str, Any] | None:
    """The checkpoint to resume from, or None for a new run; refuses to clobber another run."""
    config_file, ckpt_file = out / "config.yaml", out / "checkpoint.pt"
    if not config_file.exists():
        if resume and ckpt_file.exists():
            raise RunDirectoryError(f"{out}: a checkpoint without config.yaml; not resuming")
        return None
    saved = yaml.safe_load(config_file.read_text())
    if not resume:
        raise RunDirectoryError(
            f"{out}: already holds a run; pass --resume to continue it, or choose another --out"
        )
    if TrainConfig.from_dict(saved).fingerprint() != cfg.fingerprint():
        diff = _diff(saved, cfg.to_dict())
        raise RunDirectoryError(f"{out}: the checkpoint is from a different config ({diff})")
    if not ckpt_file.exists():
        return None
    state: dict[str, Any] = torch.load(ckpt_file, map_location="cpu", weights_only=True)
    return state


def _diff(a: dict[str, Any], b: dict[str, Any]) -> str:
    keys = [f"{s}.{k}" for s in b for k in b[s] if a.get(s, {}).get(k) != b[s][k]]
    return "differs at " + ", ".join(keys) if keys else "differs"


def train(
    cfg: TrainConfig,
    out_dir: str | os.PathLike[str],
    *,
    resume: bool = False,
    download: bool = False,
) -> TrainResult:
    """Run the training described by ``cfg`` into ``out_dir`` (see the module docstring);
    ``download`` allows a verified download of a dataset that is not on this machine."""
    out = Path(out_dir)
    device = resolve_device(cfg.run.device)
    rank, world = _distributed(device)
    state = _check_run_dir(out, cfg, resume)
    _barrier(world)  # every process has read the directory before rank 0 writes to it
    if rank == 0:
        out.mkdir(parents=True, exist_ok=True)
        atomic_write_text(out / "config.yaml", yaml.safe_dump(cfg.to_dict(), sort_keys=False))

    train_data, test_data, k, shape = prepare_data(cfg, device, download)
    torch.manual_seed(cfg.run.seed)
    model = build_network(
        cfg.model.name,
        input_shape=shape,
        num_classes=k,
        widths=cfg.model.widths,
        batchnorm=cfg.model.batchnorm,
        width=cfg.model.width,
    ).to(device)
    lc = cfg.loss
    loss = make_loss(
        lc.name,
        smoothing=lc.smoothing,
        gamma=lc.gamma,
        target_scale=lc.target_scale,
        target_weight=lc.target_weight,
    )
    opt = make_optimizer(model, cfg)
    sched = torch.optim.lr_scheduler.LambdaLR(opt, lambda e: lr_factor(cfg, e))
    gen = torch.Generator().manual_seed(cfg.run.seed)
    rows: list[dict[str, Any]] = []
    start = 0
    if state is not None:
        model.load_state_dict(state["model"])
        opt.load_state_dict(state["optimizer"])
        sched.load_state_dict(state["scheduler"])
        gen.set_state(state["generator"])
        rows, start = list(state["rows"]), int(state["epoch"])
    table = MetricsFile(out / "metrics.csv", rows) if rank == 0 else None
    if table is not None and state is not None:
        table.add([])  # drop the rows evaluated after the checkpoint
    channels_last = cfg.run.channels_last and train_data.x.ndim == 4
    if channels_last:
        model = model.to(memory_format=torch.channels_last)  # type: ignore[call-overload]
    step_model: Any = model
    if world > 1:
        if device.type == "cuda":
            step_model = nn.SyncBatchNorm.convert_sync_batchnorm(step_model)  # type: ignore[no-untyped-call]
        step_model = nn.parallel.DistributedDataParallel(step_model)
    if cfg.run.compile:
        step_model = torch.compile(step_model)
    autocast = torch.autocast(device.type, dtype=torch.bfloat16, enabled=cfg.run.bf16)
    noise = cfg.noise.rate > 0
    penalty = cfg.optim.feature_penalty
    n = len(train_data.observed)
    bounds = batch_starts(n, cfg.data.batch_size)
    bar = _progress(cfg, start) if rank == 0 else None
    stopped: str | None = None
    store, test_store = _EpochStore(), _EpochStore()
    last_checkpoint = (start, time.monotonic())
    live: dict[str, torch.Tensor] = {}
    if penalty:
        # The feature penalty needs the penultimate output on the autograd graph.
        model.get_submodule("penultimate").register_forward_hook(
            lambda _m, _i, out: live.update(penultimate=out)
        )

    for epoch in range(start, cfg.optim.epochs):
        model.train()
        perm = torch.randperm(n, generator=gen).to(device)
        loss_sum = torch.zeros((), dtype=torch.float64, device=device)
        measure_now = (epoch + 1) % cfg.track.eval_every == 0 or epoch + 1 == cfg.optim.epochs
        from_training = measure_now and cfg.track.source == "train"
        store.reset()
        hooks = capture(model, cfg.track.layers) if from_training else _no_hooks()
        with hooks as captured:
            for lo, hi in itertools.pairwise(bounds):
                # Each process takes every world-th sample of the global batch; the loss is
                # scaled so that DDP's gradient average is the gradient of the global batch mean.
                mine = slice(rank, None, world)
                idx = perm[lo:hi]
                if cfg.data.augment:
                    xb = random_crop_flip(train_data.x[idx], gen, keep=mine)
                else:
                    xb = train_data.x[idx[mine]]
                yb = train_data.observed[idx[mine]]
                if channels_last:
                    xb = xb.contiguous(memory_format=torch.channels_last)
                captured.new_pass()
                with autocast:
                    logits = step_model(xb)
                per_sample = loss.per_sample(logits.float(), yb)
                if penalty:
                    feats = live["penultimate"].flatten(1).float()
                    per_sample = per_sample + 0.5 * penalty * feats.square().sum(1)
                batch_loss = per_sample.sum() * (world / (hi - lo))
                opt.zero_grad(set_to_none=True)
                batch_loss.backward()  # type: ignore[no-untyped-call]
                opt.step()
                loss_sum += per_sample.detach().double().sum()
                if from_training:
                    store.add(captured, logits, yb, train_data.true[idx[mine]])
        lr = opt.param_groups[0]["lr"]
        sched.step()
        train_loss = float(_all_reduce(loss_sum, world)) / n
        if not math.isfinite(train_loss):
            stopped = (
                f"epoch {epoch + 1}: the training loss is {train_loss}; stopped, the "
                "last good checkpoint is kept"
            )
            print(f"nclab train: {stopped}", file=sys.stderr)
            break
        if measure_now:
            new_rows = _evaluate_epoch(
                model,
                train_data,
                test_data,
                cfg,
                loss,
                k,
                noise,
                epoch + 1,
                lr,
                train_loss,
                rank,
                world,
                (store, test_store),
                from_training,
            )
            rows += new_rows
            if table is not None:
                table.add(new_rows)
        if rank == 0 and checkpoint_due(cfg, epoch + 1, last_checkpoint):
            last_checkpoint = (epoch + 1, time.monotonic())
            _save(
                out / "checkpoint.pt",
                {
                    "model": model.state_dict(),
                    "optimizer": opt.state_dict(),
                    "scheduler": sched.state_dict(),
                    "generator": gen.get_state(),
                    "epoch": epoch + 1,
                    "rows": rows,
                    "fingerprint": cfg.fingerprint(),
                },
            )
        if bar is not None:
            last = rows[-1] if rows else {}
            bar.set_postfix(
                loss=f"{train_loss:.4f}", acc=last.get("acc_observed"), nc1=last.get("nc1")
            )
            bar.update(1)
    if bar is not None:
        bar.close()
    if stopped is None and rank == 0:
        _save(out / "model.pt", model.state_dict())
    if world > 1:
        # Free the DDP wrapper (its reducer holds the process group) now, not at some later
        # garbage collection that could run after the caller destroyed the group.
        del step_model
        gc.collect()
    _barrier(world)
    return TrainResult(out_dir=out, rows=rows, model=model, stopped_early=stopped)


def _evaluate_epoch(
    model: nn.Module,
    train_data: Split,
    test_data: Split,
    cfg: TrainConfig,
    loss: Loss,
    k: int,
    noise: bool,
    epoch: int,
    lr: float,
    train_loss: float,
    rank: int,
    world: int,
    stores: tuple[_EpochStore, _EpochStore],
    from_training: bool,
) -> list[dict[str, Any]]:
    layers = cfg.track.layers
    train_store, test_store = stores
    if from_training:  # track.source == "train": the features of this epoch's training passes
        seen = train_store.batch()
        summary, reports = measure_batches(
            lambda: [seen], model, loss, k, noise, layers, world, stage=False
        )
    else:
        summary, reports = evaluate(
            model, train_data, cfg, loss, k, noise, layers, rank, world, train_store
        )
    test_layers = layers if cfg.track.test_metrics else []
    test_summary, test_reports = evaluate(
        model, test_data, cfg, loss, k, False, test_layers, rank, world, test_store
    )
    common = {
        "epoch": epoch,
        "lr": lr,
        "train_loss": train_loss,
        **summary,
        "test_loss": test_summary["eval_loss"],
        "test_acc": test_summary["acc_true"],
    }
    rows = [
        {**common, "split": "train", "layer": name, **values} for name, values in reports.items()
    ]
    if cfg.track.test_metrics:
        rows += [
            {**common, "split": "test", "layer": name, **values}
            for name, values in test_reports.items()
        ]
    return rows


def _progress(cfg: TrainConfig, start: int) -> Any:
    if not cfg.run.progress or not sys.stderr.isatty() or os.environ.get("CI"):
        return None
    from tqdm import tqdm

    return tqdm(total=cfg.optim.epochs, initial=start, unit="epoch", desc="nclab train")
