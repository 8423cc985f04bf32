"""Benchmark of the trainer against a bare PyTorch loop on the same model and data.

Run: ``python benchmarks/train.py`` (about two minutes on 2 cores).

The cpu-mlp setting (MLP 784-512-512-512, the 4,000-image Fashion-MNIST subset, batch 128, SGD
with momentum): seconds per epoch and training images per second of

* ``bare``: a plain loop (shuffle, forward, cross-entropy, backward, step) with nothing else;
* ``bare+eval``: the same plus one evaluation forward pass over the training set per epoch
  (what any run that reports training accuracy pays);
* ``nclab``: :func:`nclab.train.train` with NC measured only at the end (per-epoch cost from the
  difference of two run lengths, so start-up cancels; it includes the per-epoch checkpoint);
* ``nclab+NC``: the trainer measuring the full NC report on 2 layers (and memorization /
  dilation under 20% label noise) every epoch, on an evaluation pass (``track.source=eval``);
* ``nclab+NC/train``: the same on the features of the training passes (``track.source=train``).

Each loop is measured ``--rounds`` times, the loops interleaved, and the median kept; the
ratios against ``bare`` and ``bare+eval`` come from one run. Absolute times are noisy on
shared machines.
"""

from __future__ import annotations

import argparse
import itertools
import statistics
import tempfile
import time
from pathlib import Path

import torch
import torch.nn.functional as F

from nclab.train.config import apply_overrides
from nclab.train.nets import build_network
from nclab.train.presets import preset
from nclab.train.trainer import batch_starts, prepare_data, train


def bare_loop(epochs: int, evaluate: bool) -> float:
    cfg = preset("cpu-mlp")
    data, _, k, shape = prepare_data(cfg, torch.device("cpu"))
    torch.manual_seed(0)
    model = build_network("mlp", input_shape=shape, num_classes=k, widths=[512, 512, 512])
    opt = torch.optim.SGD(model.parameters(), lr=0.05, momentum=0.9, weight_decay=5e-4)
    n = len(data.observed)
    bounds = batch_starts(n, 128)
    start = time.perf_counter()
    for _ in range(epochs):
        model.train()
        perm = torch.randperm(n)
        for lo, hi in itertools.pairwise(bounds):
            idx = perm[lo:hi]
            loss = F.cross_entropy(model(data.x[idx]), data.observed[idx])
            opt.zero_grad(set_to_none=True)
            loss.backward()
            opt.step()
        if evaluate:
            model.eval()
            with torch.no_grad():
                correct = sum(
                    int((model(data.x[lo:hi]).argmax(1) == data.observed[lo:hi]).sum())
                    for lo, hi in itertools.pairwise(bounds)
                )
            assert 0 <= correct <= n
    return (time.perf_counter() - start) / epochs


def trainer(epochs: int, every_epoch: bool, source: str = "eval") -> float:
    """Seconds per epoch of ``nclab.train.train``: the slope between a run of ``epochs`` and one
    of ``3 * epochs`` epochs, so that start-up and data preparation cancel out."""

    def run(n_epochs: int) -> float:
        overrides = [f"optim.epochs={n_epochs}", "run.progress=false", f"track.source={source}"]
        overrides.append("track.eval_every=1" if every_epoch else f"track.eval_every={n_epochs}")
        cfg = apply_overrides(preset("cpu-mlp"), overrides)
        with tempfile.TemporaryDirectory() as tmp:
            start = time.perf_counter()
            train(cfg, Path(tmp) / "run")
            return time.perf_counter() - start

    return (run(3 * epochs) - run(epochs)) / (2 * epochs)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--epochs", type=int, default=8, help="epochs per measurement")
    parser.add_argument("--rounds", type=int, default=3, help="measurements per loop (median)")
    args = parser.parse_args()
    n = 4000
    print(f"torch {torch.__version__}, {torch.get_num_threads()} threads; cpu-mlp, {n} images")
    loops = {
        "bare": lambda: bare_loop(args.epochs, evaluate=False),
        "bare+eval": lambda: bare_loop(args.epochs, evaluate=True),
        "nclab": lambda: trainer(args.epochs, every_epoch=False),
        "nclab+NC": lambda: trainer(args.epochs, every_epoch=True),
        "nclab+NC/train": lambda: trainer(args.epochs, every_epoch=True, source="train"),
    }
    samples: dict[str, list[float]] = {name: [] for name in loops}
    for _ in range(args.rounds):
        for name, run in loops.items():
            samples[name].append(run())
    times = {name: statistics.median(values) for name, values in samples.items()}
    print(f"{'loop':<15} {'s/epoch':>8} {'img/s':>8} {'x bare':>7} {'x bare+eval':>12}")
    for name, t in times.items():
        print(
            f"{name:<10} {t:>8.3f} {n / t:>8.0f} {t / times['bare']:>7.2f} "
            f"{t / times['bare+eval']:>12.2f}"
        )
    print(
        "(nclab rows: per-epoch slope between runs of E and 3E epochs, start-up excluded; "
        "they include the per-epoch checkpoint)"
    )


if __name__ == "__main__":
    main()
