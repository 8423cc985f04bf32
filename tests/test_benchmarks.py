"""The benchmark scripts run, at toy sizes, on the CPU (their figures are not asserted here:
timings belong in the README, not in tests), and their baselines agree with the suite."""

from __future__ import annotations

import re
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def run(*args: str) -> str:
    done = subprocess.run(
        [sys.executable, *args], cwd=ROOT, capture_output=True, text=True, timeout=600, check=False
    )
    assert done.returncode == 0, done.stderr[-3000:]
    return done.stdout


def test_metrics_benchmark_baselines_agree_with_the_suite() -> None:
    out = run(
        "benchmarks/metrics.py",
        *("--dims", "64", "--n", "3000", "--loop-samples", "3000", "--repeats", "1"),
    )
    rows = set(re.findall(r"^(read|suite|stream|gemm|loop)\s+\d", out, re.M))
    assert rows == {"read", "suite", "stream", "gemm", "loop"}
    diffs = dict(re.findall(r"NC1 (\w+) vs suite: relative difference (\S+)", out))
    # The loop ran on every sample here (not extrapolated), so all three NC1 values are compared.
    assert set(diffs) == {"stream", "gemm", "loop"}
    assert float(diffs["stream"]) <= 1e-12
    assert float(diffs["gemm"]) <= 1e-10 and float(diffs["loop"]) <= 1e-10


def test_train_benchmark_runs_the_gpu_preset_shrunk_on_the_cpu() -> None:
    out = run(
        "benchmarks/train.py",
        *("--preset", "gpu-resnet18-cifar10", "--epochs", "1", "--rounds", "1"),
        *("--synthetic", "2", "--set", "run.device=cpu", "model.width=0.0625"),
    )
    assert "gpu-resnet18-cifar10, 100 images; bf16 True, channels_last True, augment True" in out
    loops = re.findall(r"^(bare|bare\+test|bare\+train\+test|nclab\S*)\s+(\S+)\s+(\S+)", out, re.M)
    assert [name for name, *_ in loops] == [
        "bare",
        "bare+test",
        "bare+train+test",
        "nclab",
        "nclab+NC/eval",
        "nclab+NC/train",
    ]
    inside = dict(re.findall(r"^(train|eval)\s+((?:\S+\s+){4}\S+)$", out, re.M))
    for source in ("train", "eval"):
        epoch, measure, test, ratio, no_test = map(float, inside[source].split())
        # Medians over epochs of per-epoch values with test <= measurement < epoch.
        assert 0 < test <= measure < epoch
        assert 1.0 <= no_test <= ratio
