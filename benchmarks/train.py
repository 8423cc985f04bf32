"""Benchmark of the trainer against a bare PyTorch loop on the same model and data.

Run: ``python benchmarks/train.py`` (cpu-mlp, about three minutes on 2 cores) or
``python benchmarks/train.py --preset cpu-cnn --epochs 2`` (about 15 minutes).

For a preset's model and data (cpu-mlp: MLP 784-512-512-512; cpu-cnn: the small CNN; both on the
4,000-image Fashion-MNIST subset, batch 128, SGD with momentum, 20 % label noise), seconds per
epoch and training images per second of

* ``bare``: a plain loop (shuffle, forward, cross-entropy, backward, step) with nothing else;
* ``bare+test``: the same plus one evaluation pass over the test set per epoch (what any loop
  that reports test accuracy pays);
* ``bare+train+test``: plus one more evaluation pass over the training set (train accuracy);
* ``nclab``: :func:`nclab.train.train` with NC measured only at the end (per-epoch cost from the
  difference of two run lengths, so start-up cancels; the default checkpoint cadence);
* ``nclab+NC/eval``: the trainer measuring, every epoch, the full NC report on 2 layers,
  memorization / dilation, train and test accuracy, on an evaluation pass after the epoch
  (``track.source=eval``);
* ``nclab+NC/train``: the same on the features of the training passes (``track.source=train``).

Each loop is measured ``--rounds`` times, the loops interleaved, and the median kept; the ratios
come from one run. Absolute times are noisy on shared machines, and drift between runs by more
than the overhead measured here; so the script also times, inside one trainer run with NC every
epoch, each epoch and the part of it spent measuring (the evaluations, the copies of the tracked
features and the metrics file; the test pass separately): epoch / (epoch - measurement) is the
trainer's epoch over its own training passes, taken from the same epochs (the trainer's training
passes cost what the bare loop's do: the ``nclab`` row).
"""

from __future__ import annotations

import argparse
import contextlib
import itertools
import statistics
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import torch
import torch.nn.functional as F

import nclab.train.trainer as trainer_module
from nclab.train.config import TrainConfig, apply_overrides
from nclab.train.nets import build_network
from nclab.train.presets import preset
from nclab.train.trainer import (
    Split,
    batch_starts,
    eval_batch_size,
    evaluate,
    prepare_data,
    train,
)

LAYERS = {"cpu-mlp": "[body.3,penultimate]", "cpu-cnn": "[body.11,penultimate]"}


def accuracy(model: torch.nn.Module, data: Split, batch: int) -> float:
    model.eval()
    bounds = batch_starts(len(data.observed), batch)
    with torch.no_grad():
        hits = sum(
            int((model(data.x[lo:hi]).argmax(1) == data.observed[lo:hi]).sum())
            for lo, hi in itertools.pairwise(bounds)
        )
    return hits / len(data.observed)


def bare_loop(cfg: TrainConfig, epochs: int, passes: tuple[str, ...]) -> float:
    """Seconds per epoch of the plain loop, plus accuracy passes over the ``passes`` splits
    (after one untimed warm-up epoch, as the trainer's slopes exclude start-up)."""
    train_data, test_data, k, shape = prepare_data(cfg, torch.device("cpu"))
    torch.manual_seed(0)
    m = cfg.model
    model = build_network(
        m.name, input_shape=shape, num_classes=k, widths=m.widths, batchnorm=m.batchnorm
    )
    o = cfg.optim
    opt = torch.optim.SGD(
        model.parameters(), lr=o.lr, momentum=o.momentum, weight_decay=o.weight_decay
    )
    n = len(train_data.observed)
    bounds = batch_starts(n, cfg.data.batch_size)
    splits = {"train": train_data, "test": test_data}
    start = 0.0
    for epoch in range(epochs + 1):
        if epoch == 1:  # the first epoch warms up (oneDNN primitives, allocator) and is not timed
            start = time.perf_counter()
        model.train()
        perm = torch.randperm(n)
        for lo, hi in itertools.pairwise(bounds):
            idx = perm[lo:hi]
            loss = F.cross_entropy(model(train_data.x[idx]), train_data.observed[idx])
            opt.zero_grad(set_to_none=True)
            loss.backward()
            opt.step()
        for name in passes:
            assert (
                0.0
                <= accuracy(model, splits[name], eval_batch_size(cfg, torch.device("cpu")))
                <= 1.0
            )
    return (time.perf_counter() - start) / epochs


def trainer(name: str, epochs: int, every_epoch: bool, source: str = "eval") -> tuple[float, float]:
    """Seconds of ``nclab.train.train`` runs of ``epochs`` and of ``3 * epochs`` epochs (their
    slope is the time per epoch: start-up and data preparation cancel out)."""

    def run(n_epochs: int) -> float:
        overrides = [
            f"optim.epochs={n_epochs}",
            "run.progress=false",
            f"track.source={source}",
            f"track.layers={LAYERS[name]}",
            "track.eval_every=1" if every_epoch else f"track.eval_every={n_epochs}",
        ]
        cfg = apply_overrides(preset(name), overrides)
        with tempfile.TemporaryDirectory() as tmp:
            start = time.perf_counter()
            train(cfg, Path(tmp) / "run")
            return time.perf_counter() - start

    return run(epochs), run(3 * epochs)


@contextlib.contextmanager
def _timing(obj: Any, attr: str, log: list[tuple[str, float, float]], label: str) -> Iterator[None]:
    """Within the block, every call of ``obj.attr`` appends (label, start, end) to ``log``."""
    original = getattr(obj, attr)

    def timed(*args: Any, **kwargs: Any) -> Any:
        start = time.perf_counter()
        try:
            return original(*args, **kwargs)
        finally:
            log.append((label, start, time.perf_counter()))

    setattr(obj, attr, timed)
    try:
        yield
    finally:
        setattr(obj, attr, original)


def _union(intervals: list[tuple[float, float]]) -> float:
    """Total length of the union of (start, end) intervals (nested calls count once)."""
    total, reach = 0.0, float("-inf")
    for a, b in sorted(intervals):
        if b > reach:
            total += b - max(a, reach)
            reach = b
    return total


def phases(name: str, epochs: int, source: str) -> dict[str, float]:
    """Median over the epochs of one trainer run (NC every epoch) of the milliseconds spent in
    the epoch, in the measurement (every evaluation, the copies of the tracked features and the
    metrics file) and in the test pass, and of the ratio epoch / (epoch - measurement): the
    trainer's epoch over its own training passes, free of the drift between runs."""
    n_test = len(prepare_data(preset(name), torch.device("cpu"))[1].observed)
    log: list[tuple[str, float, float]] = []
    cfg = apply_overrides(
        preset(name),
        [
            f"optim.epochs={epochs + 1}",
            "run.progress=false",
            f"track.source={source}",
            f"track.layers={LAYERS[name]}",
            "track.eval_every=1",
        ],
    )

    def test_only(*args: Any, **kwargs: Any) -> Any:
        start = time.perf_counter()
        result = evaluate(*args, **kwargs)
        if len(args[1].observed) == n_test:
            log.append(("test", start, time.perf_counter()))
        return result

    with contextlib.ExitStack() as stack:
        stack.enter_context(_timing(trainer_module, "checkpoint_due", log, "end"))
        stack.enter_context(_timing(trainer_module, "_evaluate_epoch", log, "measure"))
        stack.enter_context(_timing(trainer_module._EpochStore, "add", log, "measure"))
        stack.enter_context(_timing(trainer_module._MetricsFile, "add", log, "measure"))
        trainer_module.evaluate = test_only  # type: ignore[assignment]
        stack.callback(setattr, trainer_module, "evaluate", evaluate)
        with tempfile.TemporaryDirectory() as tmp:
            train(cfg, Path(tmp) / "run")
    ends = [end for label, _, end in log if label == "end"]
    rows: list[dict[str, float]] = []
    for lo, hi in itertools.pairwise(ends):  # the first epoch warms up and is left out
        inside = [(label, a, b) for label, a, b in log if lo < a and b <= hi]
        measure = _union([(a, b) for label, a, b in inside if label == "measure"])
        test = sum(b - a for label, a, b in inside if label == "test")
        rows.append(
            {
                "epoch_ms": 1e3 * (hi - lo),
                "measure_ms": 1e3 * measure,
                "test_ms": 1e3 * test,
                "ratio": (hi - lo) / (hi - lo - measure),
                "ratio_without_test": (hi - lo - test) / (hi - lo - measure),
            }
        )
    return {key: statistics.median(r[key] for r in rows) for key in rows[0]}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--preset", choices=sorted(LAYERS), default="cpu-mlp")
    parser.add_argument("--epochs", type=int, default=8, help="epochs per measurement")
    parser.add_argument("--rounds", type=int, default=3, help="measurements per loop (median)")
    args = parser.parse_args()
    cfg = preset(args.preset)
    e = args.epochs
    n = len(prepare_data(cfg, torch.device("cpu"))[0].observed)
    print(
        f"torch {torch.__version__}, {torch.get_num_threads()} threads; {args.preset}, {n} images"
    )
    loops = {
        "bare": lambda: bare_loop(cfg, e, ()),
        "bare+test": lambda: bare_loop(cfg, e, ("test",)),
        "bare+train+test": lambda: bare_loop(cfg, e, ("train", "test")),
        "nclab": lambda: trainer(args.preset, e, every_epoch=False),
        "nclab+NC/eval": lambda: trainer(args.preset, e, every_epoch=True),
        "nclab+NC/train": lambda: trainer(args.preset, e, every_epoch=True, source="train"),
    }
    samples: dict[str, list[Any]] = {name: [] for name in loops}
    for _ in range(args.rounds):
        for name, run in loops.items():
            samples[name].append(run())
    times = {}
    for name, values in samples.items():
        if isinstance(values[0], tuple):
            times[name] = statistics.median((long - short) / (2 * e) for short, long in values)
        else:
            times[name] = statistics.median(values)
    base = ("bare", "bare+test", "bare+train+test")
    print(f"{'loop':<16} {'s/epoch':>8} {'img/s':>7} " + " ".join(f"{'x ' + b:>17}" for b in base))
    for name, t in times.items():
        ratios = " ".join(f"{t / times[b]:>17.2f}" for b in base)
        print(f"{name:<16} {t:>8.3f} {n / t:>7.0f} {ratios}")
    print(
        "(medians of the rounds; nclab rows: per-epoch slope between runs of E and 3E epochs, "
        "start-up excluded; "
        "NC rows: 2 layers, label noise metrics, train and test accuracy every epoch)"
    )
    inside = max(e, 8)
    print(
        f"\nInside one trainer run of {inside} epochs with NC every epoch (medians over the epochs; "
        "measurement = evaluations, copies of the tracked features, metrics.csv):"
    )
    print(
        f"{'source':<8} {'epoch ms':>9} {'measure ms':>11} {'test pass ms':>13} "
        f"{'epoch / training':>17} {'same, no test pass':>19}"
    )
    for source in ("train", "eval"):
        p = phases(args.preset, inside, source)
        print(
            f"{source:<8} {p['epoch_ms']:>9.1f} {p['measure_ms']:>11.1f} {p['test_ms']:>13.1f} "
            f"{p['ratio']:>17.3f} {p['ratio_without_test']:>19.3f}"
        )


if __name__ == "__main__":
    main()
