"""Benchmark of the trainer against a bare PyTorch loop on the same model and data.

Run: ``python benchmarks/train.py`` (cpu-mlp, about three minutes on 2 cores),
``python benchmarks/train.py --preset cpu-cnn --epochs 2`` (about 15 minutes), or on a GPU
machine ``python benchmarks/train.py --preset gpu-resnet18-cifar10 --epochs 2 --synthetic``
(ResNet-18 on 50,000 CIFAR-shaped images with data on the GPU, bf16 autocast, channels_last and
augmentation, as the preset; ``--synthetic`` writes random images in CIFAR-10's own file format
when the real files are not on the machine: throughput does not depend on the pixels).
``--set key=value`` applies config overrides to every run (``--set run.device=cpu
model.width=0.0625 data.per_class=50`` runs the GPU preset shrunk on a CPU).

For a preset's model and data (cpu-mlp: MLP 784-512-512-512; cpu-cnn: the small CNN; both on the
4,000-image Fashion-MNIST subset, batch 128, SGD with momentum, 20 % label noise), seconds per
epoch and training images per second of

* ``bare``: a plain loop (shuffle, forward, cross-entropy, backward, step) with nothing else
  (on the preset's device, with its augmentation, bf16 autocast and memory format);
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
import pickle
import statistics
import tempfile
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import torch
import torch.nn.functional as F

import nclab.train.evaluation as evaluation_module
import nclab.train.table as table_module
import nclab.train.trainer as trainer_module
from nclab.train.config import TrainConfig, apply_overrides
from nclab.train.nets import build_network
from nclab.train.presets import preset
from nclab.train.trainer import (
    Split,
    batch_starts,
    eval_batch_size,
    prepare_data,
    random_crop_flip,
    resolve_device,
    train,
)

LAYERS = {
    "cpu-mlp": "[body.3,penultimate]",
    "cpu-cnn": "[body.11,penultimate]",
    "gpu-resnet18-cifar10": "[layer4,penultimate]",
}


def synthetic_cifar10(root: Path, per_class: int) -> None:
    """Random uint8 images with balanced labels in CIFAR-10's python format under ``root``:
    ``per_class`` images of each class in each of the five training files and in the test file
    (50,000 + 10,000 images at ``per_class=1000``, as CIFAR-10)."""
    folder = root / "cifar10" / "cifar-10-batches-py"
    folder.mkdir(parents=True)
    gen = torch.Generator().manual_seed(0)
    for name in [f"data_batch_{i}" for i in range(1, 6)] + ["test_batch"]:
        labels = torch.arange(10).repeat(per_class)
        images = torch.randint(0, 256, (len(labels), 3072), generator=gen, dtype=torch.uint8)
        batch = {b"data": images.numpy(), b"labels": labels.tolist()}
        (folder / name).write_bytes(pickle.dumps(batch, protocol=2))


def _sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


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
    device = resolve_device(cfg.run.device)
    train_data, test_data, k, shape = prepare_data(cfg, device)
    torch.manual_seed(0)
    m = cfg.model
    model = build_network(
        m.name,
        input_shape=shape,
        num_classes=k,
        widths=m.widths,
        batchnorm=m.batchnorm,
        width=m.width,
    ).to(device)
    channels_last = cfg.run.channels_last and train_data.x.ndim == 4
    if channels_last:
        model = model.to(memory_format=torch.channels_last)  # type: ignore[call-overload]
    o = cfg.optim
    opt = torch.optim.SGD(
        model.parameters(), lr=o.lr, momentum=o.momentum, weight_decay=o.weight_decay
    )
    autocast = torch.autocast(device.type, dtype=torch.bfloat16, enabled=cfg.run.bf16)
    gen = torch.Generator().manual_seed(0)
    n = len(train_data.observed)
    bounds = batch_starts(n, cfg.data.batch_size)
    splits = {"train": train_data, "test": test_data}
    start = 0.0
    for epoch in range(epochs + 1):
        if epoch == 1:  # the first epoch warms up (oneDNN primitives, allocator) and is not timed
            _sync(device)
            start = time.perf_counter()
        model.train()
        perm = torch.randperm(n, generator=gen).to(device)
        for lo, hi in itertools.pairwise(bounds):
            idx = perm[lo:hi]
            x = train_data.x[idx]
            if cfg.data.augment:
                x = random_crop_flip(x, gen)
            if channels_last:
                x = x.contiguous(memory_format=torch.channels_last)
            with autocast:
                logits = model(x)
            loss = F.cross_entropy(logits.float(), train_data.observed[idx])
            opt.zero_grad(set_to_none=True)
            loss.backward()
            opt.step()
        for name in passes:
            assert 0.0 <= accuracy(model, splits[name], eval_batch_size(cfg, device)) <= 1.0
    _sync(device)
    return (time.perf_counter() - start) / epochs


def trainer(
    name: str, base: list[str], epochs: int, every_epoch: bool, source: str = "eval"
) -> tuple[float, float]:
    """Seconds of ``nclab.train.train`` runs of ``epochs`` and of ``3 * epochs`` epochs (their
    slope is the time per epoch: start-up and data preparation cancel out); preset ``name``
    with the overrides ``base``."""

    def run(n_epochs: int) -> float:
        overrides = [
            f"optim.epochs={n_epochs}",
            "run.progress=false",
            f"track.source={source}",
            f"track.layers={LAYERS[name]}",
            "track.eval_every=1" if every_epoch else f"track.eval_every={n_epochs}",
        ]
        cfg = apply_overrides(preset(name), base + overrides)
        with tempfile.TemporaryDirectory() as tmp:
            start = time.perf_counter()
            train(cfg, Path(tmp) / "run")
            return time.perf_counter() - start

    return run(epochs), run(3 * epochs)


@contextlib.contextmanager
def _timing(
    obj: Any,
    attr: str,
    log: list[tuple[str, float, float]],
    label: str,
    when: Callable[..., bool] = lambda *args: True,
) -> Iterator[None]:
    """Within the block, every call of ``obj.attr`` whose arguments satisfy ``when`` appends
    (label, start, end) to ``log``."""
    original = getattr(obj, attr)

    def timed(*args: Any, **kwargs: Any) -> Any:
        start = time.perf_counter()
        try:
            return original(*args, **kwargs)
        finally:
            if when(*args):
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


def phases(name: str, base: list[str], epochs: int, source: str, n_test: int) -> dict[str, float]:
    """Median over the epochs of one trainer run (NC every epoch) of the milliseconds spent in
    the epoch, in the measurement (every evaluation, the copies of the tracked features and the
    metrics file) and in the test pass (the evaluation of the split of ``n_test`` images), and
    of the ratio epoch / (epoch - measurement): the trainer's epoch over its own training
    passes, free of the drift between runs."""
    log: list[tuple[str, float, float]] = []
    cfg = apply_overrides(
        preset(name),
        [
            *base,
            f"optim.epochs={epochs + 1}",
            "run.progress=false",
            f"track.source={source}",
            f"track.layers={LAYERS[name]}",
            "track.eval_every=1",
        ],
    )

    def on_test(_model: Any, data: Split, *args: Any) -> bool:
        return len(data.observed) == n_test

    with contextlib.ExitStack() as stack:
        stack.enter_context(_timing(trainer_module, "checkpoint_due", log, "end"))
        stack.enter_context(_timing(evaluation_module, "evaluate_epoch", log, "measure"))
        stack.enter_context(_timing(evaluation_module.EpochStore, "add", log, "measure"))
        stack.enter_context(_timing(table_module.MetricsFile, "add", log, "measure"))
        stack.enter_context(_timing(evaluation_module, "evaluate", log, "test", on_test))
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
    parser.add_argument(
        "--set", nargs="*", default=[], metavar="KEY=VALUE", help="config overrides for every run"
    )
    parser.add_argument(
        "--synthetic",
        type=int,
        nargs="?",
        const=1000,
        default=None,
        metavar="PER_CLASS",
        help="CIFAR-10 presets: random images in CIFAR-10's format, PER_CLASS of each class per "
        "file (default 1,000: 50,000 training images)",
    )
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as data_dir:
        base = list(args.set)
        if args.synthetic is not None:
            synthetic_cifar10(Path(data_dir), args.synthetic)
            base.append(f"data.data_dir={data_dir}")
        run_benchmark(args, base)


def run_benchmark(args: argparse.Namespace, base: list[str]) -> None:
    cfg = apply_overrides(preset(args.preset), list(base))
    e = args.epochs
    device = resolve_device(cfg.run.device)
    train_split, test_split, _, _ = prepare_data(cfg, torch.device("cpu"))
    n, n_test = len(train_split.observed), len(test_split.observed)
    r = cfg.run
    print(
        f"torch {torch.__version__}, {torch.get_num_threads()} threads, {device}; {args.preset}, "
        f"{n} images; bf16 {r.bf16}, channels_last {r.channels_last}, augment {cfg.data.augment}"
    )
    loops = {
        "bare": lambda: bare_loop(cfg, e, ()),
        "bare+test": lambda: bare_loop(cfg, e, ("test",)),
        "bare+train+test": lambda: bare_loop(cfg, e, ("train", "test")),
        "nclab": lambda: trainer(args.preset, base, e, every_epoch=False),
        "nclab+NC/eval": lambda: trainer(args.preset, base, e, every_epoch=True),
        "nclab+NC/train": lambda: trainer(args.preset, base, e, every_epoch=True, source="train"),
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
    bases = ("bare", "bare+test", "bare+train+test")
    print(f"{'loop':<16} {'s/epoch':>8} {'img/s':>7} " + " ".join(f"{'x ' + b:>17}" for b in bases))
    for name, t in times.items():
        ratios = " ".join(f"{t / times[b]:>17.2f}" for b in bases)
        print(f"{name:<16} {t:>8.3f} {n / t:>7.0f} {ratios}")
    noise = (
        f"label noise {cfg.noise.rate:g} (memorization / dilation)"
        if cfg.noise.rate
        else "no label noise"
    )
    test_nc = ", NC of the test set too" if cfg.track.test_metrics else ""
    print(
        "(medians of the rounds; nclab rows: per-epoch slope between runs of E and 3E epochs, "
        f"start-up excluded; NC rows: NC of {LAYERS[args.preset]} every epoch{test_nc}, "
        f"{noise}, train and test accuracy)"
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
        p = phases(args.preset, base, inside, source, n_test)
        print(
            f"{source:<8} {p['epoch_ms']:>9.1f} {p['measure_ms']:>11.1f} {p['test_ms']:>13.1f} "
            f"{p['ratio']:>17.3f} {p['ratio_without_test']:>19.3f}"
        )


if __name__ == "__main__":
    main()
