"""Train a network into the terminal phase and measure neural collapse as it goes.

``train(config, out_dir)`` is the whole run, and :func:`train` reads top to bottom: set-up
(:mod:`nclab.train.setup`: data and label noise, the network, the tracked layers checked
against it; nothing written yet), the run directory taken (:mod:`nclab.train.rundir`: its lock,
what it may be resumed or extended with), then per epoch one pass of SGD over the shuffled
training set (every sample, every epoch) and every ``track.eval_every`` epochs an evaluation
(:mod:`nclab.train.evaluation`) that writes one row per tracked layer to ``metrics.csv``.
Checkpoints are written atomically and carry everything a resumed run needs (weights, optimizer,
schedule, the shuffling generator, the metrics rows, the config), so a run killed at any moment
and resumed ends with the same metrics table and weights as an uninterrupted one (on CPU, where
torch is deterministic).
"""

from __future__ import annotations

import gc
import itertools
import math
import os
import sys
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn

from nclab.io import atomic_write_text
from nclab.metrics.hooks import capture
from nclab.progress import in_notebook
from nclab.threads import default_threads, set_threads
from nclab.train import evaluation
from nclab.train.config import TrainConfig
from nclab.train.evaluation import EpochStore, batch_starts, eval_batch_size, measure_batches
from nclab.train.rundir import (
    RunDirectoryError,
    RunLock,
    check_run_dir,
    checkpoint_due,
    clean_temporaries,
    save_checkpoint,
    save_model,
    write_config,
)
from nclab.train.setup import (
    RunSetup,
    Split,
    all_reduce,
    barrier,
    lr_factor,
    make_optimizer,
    prepare_data,
    resolve_device,
    set_up,
)
from nclab.train.table import MetricsFile

__all__ = [
    "RunDirectoryError",
    "Split",
    "TrainResult",
    "batch_starts",
    "checkpoint_due",
    "eval_batch_size",
    "lr_factor",
    "measure_batches",
    "prepare_data",
    "random_crop_flip",
    "resolve_device",
    "train",
]


@dataclass
class TrainResult:
    """``rows``: the ``metrics.csv`` rows; ``stopped_early``: why the run stopped before its
    last epoch (a non-finite loss), else None; ``checkpoint_epoch``: the epoch of the checkpoint
    on disk (None: none was written)."""

    out_dir: Path
    rows: list[dict[str, Any]]
    model: nn.Module
    stopped_early: str | None = None
    checkpoint_epoch: int | None = None


def train(
    cfg: TrainConfig,
    out_dir: str | os.PathLike[str],
    *,
    resume: bool = False,
    download: bool = False,
    model: nn.Module | None = None,
) -> TrainResult:
    """Run the training described by ``cfg`` into ``out_dir`` (see the module docstring).

    ``resume``: continue the run in ``out_dir`` from its checkpoint (or extend it to a larger
    ``optim.epochs``); ``download``: allow a verified download of a dataset that is not on this
    machine; ``model``: train this ``nn.Module`` instead of the one ``cfg.model`` describes (it
    must return K logits; ``track.layers`` name its modules; its last ``nn.Linear``, or one
    named ``fc``, is the classifier whose W, b the metrics use)."""
    cfg.validate()
    threads = cfg.run.threads
    if threads is None and (_rank() or resolve_device(cfg.run.device).type != "cpu"):
        threads = default_threads()  # the busy-machine hint is for rank 0 on the CPU only
    set_threads(threads, "nclab train", "--threads 1 (run.threads=1)")
    s = set_up(cfg, download=download, model=model)
    out, rank, world = Path(out_dir), s.rank, s.world
    lock = RunLock(out)
    if rank == 0:  # the directory is created, locked and cleaned only once set-up succeeded
        if out.exists() and not out.is_dir():
            raise RunDirectoryError(f"--out: {out} is a file; expected a run directory")
        out.mkdir(parents=True, exist_ok=True)
        lock.acquire()
        clean_temporaries(out)
    try:
        barrier(world)
        state, notes = check_run_dir(out, cfg, resume)
        barrier(world)  # every process has read the directory before rank 0 writes to it
        if rank == 0:
            _start_files(out, s, state, notes)
        return _run(s, out, state)
    finally:
        lock.release()


def _rank() -> int:
    """This process's rank under torchrun (0 alone): only rank 0 prints the busy hint."""
    return int(os.environ.get("RANK", "0"))


def _run(s: RunSetup, out: Path, state: dict[str, Any] | None) -> TrainResult:
    cfg, model, rank, world = s.cfg, s.model, s.rank, s.world
    opt = make_optimizer(model, cfg, s.classifier)
    sched = torch.optim.lr_scheduler.LambdaLR(opt, lambda e: lr_factor(cfg, e))
    gen = torch.Generator().manual_seed(cfg.run.seed)
    rows, start = _restore(state, model, opt, sched, gen)
    table = MetricsFile(out / "metrics.csv", rows) if rank == 0 else None
    if table is not None and state is not None:
        table.add([])  # drop the rows evaluated after the checkpoint
    step_model = _step_model(s)
    progress = _Progress(s, start)
    stopped: str | None = None
    stores = (EpochStore(), EpochStore())
    saved_at = start if state is not None else None
    last_checkpoint = (start, time.monotonic())

    for epoch in range(start, cfg.optim.epochs):
        measure_now = (epoch + 1) % cfg.track.eval_every == 0 or epoch + 1 == cfg.optim.epochs
        from_training = measure_now and cfg.track.source == "train"
        lr = opt.param_groups[0]["lr"]
        train_loss = _sgd_epoch(s, step_model, opt, gen, stores[0] if from_training else None)
        sched.step()
        if not math.isfinite(train_loss):
            stopped = _stop_message(epoch + 1, train_loss, saved_at, rows)
            print(f"nclab train: {stopped}", file=sys.stderr)
            break
        new_rows = []
        if measure_now:
            new_rows = evaluation.evaluate_epoch(
                s, epoch + 1, lr, train_loss, stores, from_training
            )
            rows += new_rows
            if table is not None:
                table.add(new_rows)
        if rank == 0 and checkpoint_due(cfg, epoch + 1, last_checkpoint):
            saved_at, last_checkpoint = epoch + 1, (epoch + 1, time.monotonic())
            save_checkpoint(out, _checkpoint(s, opt, sched, gen, epoch + 1, rows))
        progress.epoch(epoch + 1, train_loss, new_rows)
    progress.close()

    if stopped is None and rank == 0:
        save_model(out, model)
    if world > 1:
        # Free the DDP wrapper (its reducer holds the process group) now, not at some later
        # garbage collection that could run after the caller destroyed the group.
        del step_model
        gc.collect()
    barrier(world)
    return TrainResult(out, rows, model, stopped, saved_at)


def _sgd_epoch(
    s: RunSetup,
    step_model: Any,
    opt: torch.optim.Optimizer,
    gen: torch.Generator,
    store: EpochStore | None,
) -> float:
    """One pass of SGD over the shuffled training set; the mean training loss over all
    processes. With ``store`` the tracked features of the passes are kept for measuring."""
    cfg, data, world, device = s.cfg, s.train, s.world, s.device
    s.model.train()
    n = len(data.observed)
    perm = torch.randperm(n, generator=gen).to(device)
    loss_sum = torch.zeros((), dtype=torch.float64, device=device)
    penalty = cfg.optim.feature_penalty
    channels_last = cfg.run.channels_last and data.x.ndim == 4
    autocast = torch.autocast(device.type, dtype=torch.bfloat16, enabled=cfg.run.bf16)
    if store is not None:
        store.reset()
    hooks = capture(s.model, cfg.track.layers) if store is not None else evaluation.no_hooks()
    live: dict[str, torch.Tensor] = {}
    # The feature penalty needs the classifier's input on the autograd graph.
    handle = (
        s.classifier.register_forward_pre_hook(lambda _m, inp: live.update(h=inp[0]))
        if penalty and s.classifier is not None
        else None
    )
    try:
        with hooks as captured:
            for lo, hi in itertools.pairwise(batch_starts(n, cfg.data.batch_size)):
                # Each process takes every world-th sample of the global batch; the loss is
                # scaled so that DDP's gradient average is the gradient of the global batch mean.
                mine = slice(s.rank, None, world)
                idx = perm[lo:hi]
                if cfg.data.augment:
                    xb = random_crop_flip(data.x[idx], gen, keep=mine)
                else:
                    xb = data.x[idx[mine]]
                yb = data.observed[idx[mine]]
                if channels_last:
                    xb = xb.contiguous(memory_format=torch.channels_last)
                captured.new_pass()
                with autocast:
                    logits = step_model(xb)
                per_sample = s.loss.per_sample(logits.float(), yb)
                if penalty:
                    per_sample = per_sample + 0.5 * penalty * live["h"].flatten(
                        1
                    ).float().square().sum(1)
                batch_loss = per_sample.sum() * (world / (hi - lo))
                opt.zero_grad(set_to_none=True)
                batch_loss.backward()  # type: ignore[no-untyped-call]
                opt.step()
                loss_sum += per_sample.detach().double().sum()
                if store is not None:
                    store.add(captured, logits, yb, data.true[idx[mine]])
    finally:
        if handle is not None:
            handle.remove()
    return float(all_reduce(loss_sum, world)) / n


def noise_line(s: RunSetup) -> str:
    """The label noise actually drawn: the measured flip rate against what noise.rate asks for
    under its convention (``redraw``: η of the labels redrawn over all K classes, so η(K-1)/K
    are changed in expectation; ``flip``: exactly η changed)."""
    n = s.cfg.noise
    changed = int((s.train.observed != s.train.true).sum())
    total = int(s.train.true.numel())
    k = s.num_classes
    expected = n.rate * (k - 1) / k if n.convention == "redraw" else n.rate
    return (
        f"label noise: {changed} of {total} training labels changed (measured flip rate "
        f"{changed / total:.4f}; noise.rate={n.rate:g} with noise.convention={n.convention} "
        f"expects {expected:.4f})"
    )


def _start_files(out: Path, s: RunSetup, state: dict[str, Any] | None, notes: list[str]) -> None:
    """Rank 0, lock held: say what happens to the directory, drop what an earlier attempt
    left that this run rewrites, and write its config (and a user network's description)."""
    described = out / "model.txt"
    if state is not None and described.is_file():
        if not s.user_model:
            raise RunDirectoryError(
                f"model: the run trained a network of the user's own ({described}); resume it "
                "with train(..., model=...) from Python"
            )
        if described.read_text() != repr(s.model):
            raise RunDirectoryError(
                f"model: the network differs from the one the run trained ({described})"
            )
    stale = ["model.pt"] if state is not None else ["model.pt", "metrics.csv", "model.txt"]
    for name in stale:  # the final weights (and a new run's table) are written afresh
        (out / name).unlink(missing_ok=True)
    for note in notes:
        print(f"nclab train: {note}", file=sys.stderr)
    if s.cfg.noise.rate > 0 and s.cfg.run.progress:
        print(f"nclab train: {noise_line(s)}", file=sys.stderr)
    if s.user_model:
        atomic_write_text(out / "model.txt", repr(s.model))
    write_config(out, s.cfg)


def _restore(
    state: dict[str, Any] | None,
    model: nn.Module,
    opt: torch.optim.Optimizer,
    sched: Any,
    gen: torch.Generator,
) -> tuple[list[dict[str, Any]], int]:
    """The rows and epochs done of the checkpoint ``state`` (nothing: a new run), loaded into
    the model, optimizer, schedule and shuffling generator."""
    if state is None:
        return [], 0
    try:
        model.load_state_dict(state["model"])
    except RuntimeError as err:
        raise RunDirectoryError(
            f"model: the checkpoint's weights do not fit the network ({err})"
        ) from None
    opt.load_state_dict(state["optimizer"])
    sched.load_state_dict(state["scheduler"])
    gen.set_state(state["generator"])
    return list(state["rows"]), int(state["epoch"])


def _checkpoint(
    s: RunSetup,
    opt: torch.optim.Optimizer,
    sched: Any,
    gen: torch.Generator,
    epoch: int,
    rows: list[dict[str, Any]],
) -> dict[str, Any]:
    return {
        "model": s.model.state_dict(),
        "optimizer": opt.state_dict(),
        "scheduler": sched.state_dict(),
        "generator": gen.get_state(),
        "epoch": epoch,
        "rows": rows,
        "fingerprint": s.cfg.fingerprint(),
        "config": s.cfg.to_dict(),
    }


def _step_model(s: RunSetup) -> Any:
    """The model the SGD steps call: channels-last, DDP-wrapped, compiled as configured."""
    model: Any = s.model
    if s.cfg.run.channels_last and s.train.x.ndim == 4:
        model = model.to(memory_format=torch.channels_last)
    if s.world > 1:
        if s.device.type == "cuda":
            model = nn.SyncBatchNorm.convert_sync_batchnorm(model)  # type: ignore[no-untyped-call]
        model = nn.parallel.DistributedDataParallel(model)
    if s.cfg.run.compile:
        model = torch.compile(model)
    return model


def _stop_message(epoch: int, loss: float, saved_at: int | None, rows: list[dict[str, Any]]) -> str:
    """Why the run stopped, and what it leaves on disk (only what is there)."""
    kept = (
        f"the checkpoint of epoch {saved_at} is kept"
        if saved_at is not None
        else "no checkpoint was written"
    )
    table = (
        f"metrics.csv holds epochs up to {rows[-1]['epoch']}"
        if rows
        else "no epoch was evaluated, so there is no metrics.csv"
    )
    return f"epoch {epoch}: the training loss is {loss}; stopped ({kept}; {table})"


# Without a terminal, an epoch that is not evaluated prints its loss when no line was printed
# for this long, so that a log shows a slow run alive between evaluations.
_QUIET_SECONDS = 60.0


class _Progress:
    """Where a person can see it (``run.progress``): a tqdm bar in a terminal or a notebook;
    elsewhere (nohup, cluster logs, CI) one line on stderr per evaluated epoch with the loss,
    the accuracies and NC1 of each tracked layer by name (and the loss of an epoch that ends a
    minute without a line). Rank 0 only."""

    def __init__(self, s: RunSetup, start: int) -> None:
        self.epochs, self.lines, self.last_line = s.cfg.optim.epochs, False, time.monotonic()
        self.bar: Any = None
        if s.rank != 0 or not s.cfg.run.progress:
            return
        if in_notebook() or (sys.stderr.isatty() and not os.environ.get("CI")):
            from tqdm.auto import tqdm

            self.bar = tqdm(total=self.epochs, initial=start, unit="epoch", desc="nclab train")
        else:
            self.lines = True

    def epoch(self, epoch: int, train_loss: float, rows: list[dict[str, Any]]) -> None:
        train_rows = [r for r in rows if r["split"] == "train"]
        if self.bar is not None:
            last = train_rows[-1] if train_rows else {}
            self.bar.set_postfix(
                loss=f"{train_loss:.4f}", acc=last.get("acc_observed"), nc1=last.get("nc1")
            )
            self.bar.update(1)
        elif self.lines and not train_rows and time.monotonic() - self.last_line >= _QUIET_SECONDS:
            print(
                f"nclab train: epoch {epoch}/{self.epochs}  train loss {train_loss:.4g}",
                file=sys.stderr,
                flush=True,
            )
            self.last_line = time.monotonic()
        elif self.lines and train_rows:
            self.last_line = time.monotonic()
            r = train_rows[0]
            nc1 = ", ".join(f"{row['layer']} {row['nc1']:.4g}" for row in train_rows)
            print(
                f"nclab train: epoch {epoch}/{self.epochs}  train loss {train_loss:.4g}  "
                f"acc {r['acc_observed']:.4g} (true labels {r['acc_true']:.4g})  "
                f"test acc {r['test_acc']:.4g}  NC1: {nc1}",
                file=sys.stderr,
                flush=True,
            )

    def close(self) -> None:
        if self.bar is not None:
            self.bar.close()


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
