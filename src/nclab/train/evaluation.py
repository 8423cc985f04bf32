"""Measuring a run: loss, accuracies and, per tracked layer, the NC report (and memorization /
dilation under label noise) of the training set after an epoch, and of the test set.

:func:`measure_batches` makes the two passes the accumulators need over batches of tracked
features and logits; :func:`evaluate` feeds it a split through the network in eval mode;
:func:`evaluate_epoch` turns one evaluation into the rows of ``metrics.csv``.
"""

from __future__ import annotations

import contextlib
import itertools
from collections.abc import Callable, Iterable, Iterator, Mapping
from typing import Any, Literal

import torch
from torch import nn

from nclab.errors import InputError
from nclab.losses import Loss
from nclab.metrics import (
    ClassMeans,
    CollapseAccumulator,
    MetricOptions,
    NoiseAccumulator,
    NoisyClassMeans,
)
from nclab.metrics.hooks import Captured, capture
from nclab.progress import progress_bar
from nclab.train.config import TrainConfig
from nclab.train.setup import RunSetup, Split, all_reduce

__all__ = [
    "Batch",
    "EpochStore",
    "batch_starts",
    "eval_batch_size",
    "evaluate",
    "evaluate_epoch",
    "measure_batches",
    "no_hooks",
]

# One evaluated batch: tracked features by layer, logits, observed and true labels.
Batch = tuple[dict[str, torch.Tensor], torch.Tensor, torch.Tensor, torch.Tensor]


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


def measure_batches(
    batches: Callable[[], Iterable[Batch]],
    model: nn.Module,
    loss: Loss,
    k: int,
    noise: bool,
    layers: list[str],
    world: int = 1,
    stage: bool = True,
    *,
    classifier: nn.Linear | Literal["fc"] | None = "fc",
    classifier_layer: str | None = "penultimate",
    options: MetricOptions | None = None,
    progress: bool = False,
) -> tuple[dict[str, float], dict[str, dict[str, float]]]:
    """Loss and accuracies (observed and true labels), and per layer the NC report (and
    memorization / dilation when ``noise``), from two passes over ``batches()``; the sums are
    all-reduced over ``world`` processes, so every process gets the numbers of one process.
    ``stage=False`` when ``batches()`` is one batch of the whole split (nothing to gather).
    The layer ``classifier_layer`` gets the classifier metrics of ``classifier`` (its W, b;
    ``"fc"``: the model's module of that name); ``options``: the metric options (default
    ``MetricOptions()``; a run passes its ``track.*`` keys). ``progress``: a progress bar over
    the batches (see :func:`nclab.progress.progress_bar`)."""
    opts = options if options is not None else MetricOptions()
    if classifier == "fc":
        fc = model.get_submodule("fc")
        classifier = fc if isinstance(fc, nn.Linear) else None
    means = {
        name: NoisyClassMeans(k, stage=stage) if noise else ClassMeans(k, stage=stage)
        for name in layers
    }
    device = next(model.parameters()).device
    loss_sum = torch.zeros((), dtype=torch.float64, device=device)
    counts = torch.zeros(3, dtype=torch.int64, device=device)  # samples, hits observed, true
    for feats, logits, y_obs, y_true in progress_bar(batches(), progress, "pass 1 of 2"):
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
    centred, noisy = {}, {}
    for name in layers:
        acc = means[name]
        if world > 1:
            acc.all_reduce()
        with_weights = name == classifier_layer and classifier is not None
        weight = (classifier.weight, classifier.bias) if with_weights else (None, None)  # type: ignore[union-attr]
        with _as_config_keys(name):
            if isinstance(acc, NoisyClassMeans):
                stats, clean_stats = acc.compute(opts)
                noisy[name] = NoiseAccumulator(clean_stats, stage=stage)
            else:
                stats = acc.compute(opts)
        centred[name] = CollapseAccumulator(stats, *weight, stage=stage)
    if layers:
        for feats, _, y_obs, y_true in progress_bar(batches(), progress, "pass 2 of 2"):
            for name in layers:
                centred[name].update(feats[name], y_obs)
                if noise:
                    noisy[name].update(feats[name], y_obs, y_true)
    for name in layers:
        if world > 1:
            centred[name].all_reduce()
            if noise:
                noisy[name].all_reduce()
    all_reduce(loss_sum, world)
    all_reduce(counts, world)
    n = float(counts[0])
    summary = {
        "eval_loss": float(loss_sum) / n,
        "acc_observed": float(counts[1]) / n,
        "acc_true": float(counts[2]) / n,
    }
    reports = {}
    for name in layers:
        with _as_config_keys(name):
            values = centred[name].compute().as_dict()
            if noise:
                values.update(noisy[name].compute().as_dict())
        reports[name] = values
    return summary, reports


@contextlib.contextmanager
def _as_config_keys(layer: str) -> Iterator[None]:
    """The metrics' advice on an empty class, in the run's config key (the metrics speak of
    Python keywords), with the tracked layer named."""
    try:
        yield
    except ValueError as err:
        if "drop_empty_classes=True" not in str(err):
            raise
        message = str(err).replace(
            "pass drop_empty_classes=True", "set track.drop_empty_classes=true"
        )
        raise InputError(f"layer {layer!r}: {message}") from None


class EpochStore:
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
def no_hooks() -> Iterator[Captured]:
    """An empty :class:`Captured` in place of :func:`capture` when no layer is measured."""
    yield Captured()


def evaluate(
    s: RunSetup,
    data: Split,
    noise: bool,
    layers: list[str],
    store: EpochStore | None = None,
) -> tuple[dict[str, float], dict[str, dict[str, float]]]:
    """:func:`measure_batches` over ``data`` with the model in eval mode, without gradients:
    one forward pass whose tracked features, logits and labels are copied into ``store`` (reused
    across calls; a new one when omitted) and measured as one batch (``track.cache_features``),
    or two forward passes without keeping them. With ``world`` > 1 each process takes its
    contiguous shard of the data."""
    model, cfg, rank, world = s.model, s.cfg, s.rank, s.world
    n_all = len(data.observed)
    lo_shard, hi_shard = n_all * rank // world, n_all * (rank + 1) // world
    x = data.x[lo_shard:hi_shard]
    y_obs, y_true = data.observed[lo_shard:hi_shard], data.true[lo_shard:hi_shard]
    bounds = batch_starts(len(y_obs), eval_batch_size(cfg, x.device))

    def forward() -> Iterator[Batch]:
        with torch.no_grad(), capture(model, layers) if layers else no_hooks() as captured:
            for lo, hi in itertools.pairwise(bounds):
                captured.new_pass()
                logits = model(x[lo:hi]).float()
                yield dict(captured), logits, y_obs[lo:hi], y_true[lo:hi]

    head: dict[str, Any] = {
        "classifier": s.classifier,
        "classifier_layer": s.classifier_layer,
        "options": cfg.track.metric_options(),
    }
    model.eval()
    if not cfg.track.cache_features:
        return measure_batches(forward, model, s.loss, s.num_classes, noise, layers, world, **head)
    # One batch instead of many: the accumulators' fixed cost per batch is paid once.
    store = store if store is not None else EpochStore()
    store.reset()
    for batch in forward():
        store.add(*batch)
    whole = store.batch()
    return measure_batches(
        lambda: [whole], model, s.loss, s.num_classes, noise, layers, world, stage=False, **head
    )


def evaluate_epoch(
    s: RunSetup,
    epoch: int,
    lr: float,
    train_loss: float,
    stores: tuple[EpochStore, EpochStore],
    from_training: bool,
) -> list[dict[str, Any]]:
    """The ``metrics.csv`` rows of ``epoch``: the training split measured from the epoch's own
    training passes (``from_training``, ``track.source=train``) or by :func:`evaluate`, then the
    test split (its NC rows with ``track.test_metrics``)."""
    cfg = s.cfg
    layers = cfg.track.layers
    noise = cfg.noise.rate > 0
    train_store, test_store = stores
    if from_training:
        seen = train_store.batch()
        summary, reports = measure_batches(
            lambda: [seen], s.model, s.loss, s.num_classes, noise, layers, s.world,
            stage=False, classifier=s.classifier, classifier_layer=s.classifier_layer,
            options=cfg.track.metric_options(),
        )  # fmt: skip
    else:
        summary, reports = evaluate(s, s.train, noise, layers, train_store)
    test_layers = layers if cfg.track.test_metrics else []
    test_summary, test_reports = evaluate(s, s.test, False, test_layers, test_store)
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
