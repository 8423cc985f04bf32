"""On a CUDA machine: the metrics, the hooks and the trainer on the GPU give the CPU's numbers.

Skipped where no GPU is present (CI has none); a session with a GPU runs them with the rest
(``make test``). The arithmetic is float64 on both devices and differs only in the order of the
additions, so the metrics agree to 1e-10 relative like the streaming tests.
"""

from __future__ import annotations

import math
from pathlib import Path

import numpy as np
import pytest
import torch
from conftest import gaussian_classes
from torch import nn

from nclab.metrics import collect, measure, measure_batches, measure_noise
from nclab.train.config import apply_overrides
from nclab.train.presets import preset
from nclab.train.trainer import train

pytestmark = pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device")
RTOL = 1e-10


def assert_close(a: dict[str, float], b: dict[str, float]) -> None:
    assert set(a) == set(b)
    for key in a:
        assert np.isclose(a[key], b[key], rtol=RTOL, atol=1e-13), (key, a[key], b[key])


def test_metrics_on_the_gpu_equal_the_cpu(rng: np.random.Generator) -> None:
    feats, labels = gaussian_classes(rng, 6, 400, 96)
    w, b = rng.standard_normal((6, 96)), rng.standard_normal(6)
    cpu = measure(feats, labels, w, b).as_dict()
    for dtype in (torch.float64, torch.float32):
        h = torch.from_numpy(feats).to("cuda", dtype)
        y = torch.from_numpy(labels).cuda()
        want = measure(h.cpu(), labels, w, b).as_dict() if dtype != torch.float64 else cpu
        assert_close(want, measure(h, y, w, b).as_dict())
        batches = [(h[i : i + 100], y[i : i + 100]) for i in range(0, len(labels), 100)]
        assert_close(want, measure_batches(batches, 6, w, b).as_dict())
    true = labels.copy()
    observed = np.where(rng.random(labels.size) < 0.2, rng.integers(0, 6, labels.size), labels)
    on_gpu = measure_noise(torch.from_numpy(feats).cuda(), observed, true).as_dict()
    assert_close(measure_noise(feats, observed, true).as_dict(), on_gpu)


def test_collect_on_the_gpu_equals_the_cpu() -> None:
    torch.manual_seed(0)
    model = nn.Sequential(nn.Linear(5, 16), nn.ReLU(), nn.Linear(16, 4)).double()
    x, y = torch.randn(300, 5, dtype=torch.float64), torch.arange(300) % 4
    loader = list(zip(x.split(64), y.split(64), strict=True))
    cpu = collect(model, loader, ["1"])["1"].as_dict()
    gpu = collect(model.cuda(), loader, ["1"])["1"].as_dict()
    assert_close(cpu, gpu)


def test_the_trainer_runs_on_the_gpu_with_its_speed_options(tmp_path: Path) -> None:
    cfg = apply_overrides(
        preset("smoke"),
        [
            "run.device=cuda",
            "model.name=cnn",
            "model.widths=[8,16]",
            "optim.epochs=2",
            "run.bf16=true",
            "run.channels_last=true",
            "track.source=train",
        ],
    )
    rows = train(cfg, tmp_path / "run").rows
    assert [r["epoch"] for r in rows] == [1, 2]
    assert all(math.isfinite(r["nc1"]) and 0.0 <= r["test_acc"] <= 1.0 for r in rows)
