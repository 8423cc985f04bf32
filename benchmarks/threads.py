"""Seconds of a training run by CPU thread count (``run.threads``), on an idle machine and on
one loaded with busy processes.

Each configuration runs ``nclab train`` in a fresh process (the thread pool is fixed at start);
rounds interleave the thread counts so that drift in the machine's load hits each alike; the
median per count is printed, with its ratio to one thread.

    python benchmarks/threads.py --preset cpu-mlp --epochs 10 --rounds 3 --load 0 2
"""

from __future__ import annotations

import argparse
import multiprocessing as mp
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path


def _spin(stop: mp.synchronize.Event) -> None:
    while not stop.is_set():
        pass


def run_once(preset: str, epochs: int, threads: str) -> float:
    with tempfile.TemporaryDirectory() as tmp:
        cmd = [sys.executable, "-m", "nclab.cli", "train", "--preset", preset]
        cmd += ["--out", str(Path(tmp) / "run"), f"optim.epochs={epochs}", "run.progress=false"]
        cmd += [f"run.threads={threads}"]
        start = time.perf_counter()
        subprocess.run(cmd, check=True, capture_output=True)
        return time.perf_counter() - start


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--preset", default="cpu-mlp", help="training preset (default cpu-mlp)")
    parser.add_argument("--epochs", type=int, default=10, help="epochs per run (default 10)")
    parser.add_argument("--rounds", type=int, default=3, help="runs per setting (median)")
    parser.add_argument(
        "--threads",
        nargs="+",
        default=["1", "2", "null"],
        help="run.threads values (null: default)",
    )
    parser.add_argument(
        "--load", type=int, nargs="+", default=[0, 2], help="busy processes beside the run"
    )
    args = parser.parse_args()
    print(f"{args.preset}, {args.epochs} epochs, median of {args.rounds} runs (seconds)")
    for load in args.load:
        stop = mp.Event()
        spinners = [mp.Process(target=_spin, args=(stop,), daemon=True) for _ in range(load)]
        for p in spinners:
            p.start()
        try:
            times: dict[str, list[float]] = {t: [] for t in args.threads}
            for _ in range(args.rounds):
                for t in args.threads:
                    times[t].append(run_once(args.preset, args.epochs, t))
        finally:
            stop.set()
            for p in spinners:
                p.join()
        one = statistics.median(times[args.threads[0]])
        for t in args.threads:
            med = statistics.median(times[t])
            print(
                f"load {load}  threads {t:>4}  {med:7.2f} s  ratio to threads={args.threads[0]}: {med / one:.2f}"
            )


if __name__ == "__main__":
    main()
