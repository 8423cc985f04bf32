"""Streaming == in-memory for any batch split; merged shards and all-reduced ranks == whole."""

from __future__ import annotations

import itertools
import json
import os
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import numpy as np
import pytest
import torch
import torch.multiprocessing as mp
from conftest import free_port, gaussian_classes
from hypothesis import given, settings
from hypothesis import strategies as st

from nclab.metrics import (
    ClassMeans,
    CollapseAccumulator,
    MetricOptions,
    NoiseAccumulator,
    measure,
    measure_batches,
    measure_noise,
)
from nclab.metrics.accumulators import stage_rows

# The batch split changes only the order of float64 additions: relative differences stay near
# 1e-14 on these problems; the contract is 1e-10.
RTOL = 1e-10


def assert_reports_equal(a: dict[str, float], b: dict[str, float]) -> None:
    assert set(a) == set(b)
    for key in a:
        assert np.isclose(a[key], b[key], rtol=RTOL, atol=1e-14), (key, a[key], b[key])


def random_split(rng: np.random.Generator, n: int, pieces: int) -> list[slice]:
    cuts = np.sort(rng.integers(0, n + 1, size=pieces - 1))
    bounds = [0, *cuts.tolist(), n]
    return [slice(lo, hi) for lo, hi in itertools.pairwise(bounds)]


@settings(max_examples=20, deadline=None)
@given(st.integers(0, 2**31 - 1), st.integers(1, 12))
def test_any_batch_split_equals_in_memory(seed: int, pieces: int) -> None:
    rng = np.random.default_rng(seed)
    feats, labels = gaussian_classes(rng, 5, [7, 20, 3, 12, 30], 9, sigma=0.9)
    w, b = rng.standard_normal((5, 9)), rng.standard_normal(5)
    whole = measure(feats, labels, w, b, within_class="class_balanced").as_dict()
    batches = [(feats[s], labels[s]) for s in random_split(rng, len(labels), pieces)]
    streamed = measure_batches(batches, 5, w, b, within_class="class_balanced").as_dict()
    assert_reports_equal(whole, streamed)


def test_merged_shards_equal_whole(rng: np.random.Generator) -> None:
    feats, labels = gaussian_classes(rng, 6, 40, 11)
    w = rng.standard_normal((6, 11))
    shards = [slice(0, 50), slice(50, 51), slice(51, 51), slice(51, 240)]
    opts = MetricOptions(global_mean="class")
    means = [ClassMeans(6) for _ in shards]
    for acc, s in zip(means, shards, strict=True):
        acc.update(feats[s], labels[s])
    total = means[0]
    for acc in means[1:]:
        total.merge(acc)
    stats = total.compute(opts)
    centred = [CollapseAccumulator(stats, w) for _ in shards]
    for acc, s in zip(centred, shards, strict=True):
        acc.update(feats[s], labels[s])
    for acc in centred[1:]:
        centred[0].merge(acc)
    assert_reports_equal(
        measure(feats, labels, w, global_mean="class").as_dict(), centred[0].compute().as_dict()
    )


def test_large_input_is_chunked_with_the_same_result(rng: np.random.Generator) -> None:
    # 2^22 values per chunk: 70,000 x 64 features span two chunks in memory.
    feats, labels = gaussian_classes(rng, 3, 70_000 // 3, 64)
    whole = measure(feats, labels).as_dict()
    halves = measure_batches(
        [
            (feats[: len(labels) // 2], labels[: len(labels) // 2]),
            (feats[len(labels) // 2 :], labels[len(labels) // 2 :]),
        ],
        3,
    ).as_dict()
    assert_reports_equal(whole, halves)


def test_one_shot_iterator_is_rejected(rng: np.random.Generator) -> None:
    feats, labels = gaussian_classes(rng, 2, 5, 3)
    with pytest.raises(TypeError, match="batches: an iterator can be read only once"):
        measure_batches(iter([(feats, labels)]), 2)
    report = measure_batches(lambda: iter([(feats, labels)]), 2)
    assert report["num_samples"] == 10


def _ddp_worker(rank: int, world: int, port: int, data: str, out: str) -> None:
    import torch.distributed as dist

    os.environ.update(MASTER_ADDR="127.0.0.1", MASTER_PORT=str(port))
    dist.init_process_group("gloo", rank=rank, world_size=world)
    try:
        arrays = np.load(data)
        feats, labels, w = arrays["features"], arrays["labels"], arrays["weight"]
        mine = slice(rank, None, world)  # interleaved shards, unequal sizes
        means = ClassMeans(4, dim=feats.shape[1])
        means.update(feats[mine], labels[mine])
        means.all_reduce()
        acc = CollapseAccumulator(means.compute(), w)
        acc.update(feats[mine], labels[mine])
        acc.all_reduce()
        Path(out, f"rank{rank}.json").write_text(acc.compute().to_json())
    finally:
        dist.barrier()
        dist.destroy_process_group()


def test_all_reduce_over_two_gloo_processes_equals_one_process(
    rng: np.random.Generator, tmp_path: Path
) -> None:
    feats, labels = gaussian_classes(rng, 4, 25, 7)
    w = rng.standard_normal((4, 7))
    data = tmp_path / "data.npz"
    np.savez(data, features=feats, labels=labels, weight=w)
    mp.spawn(_ddp_worker, args=(2, free_port(), str(data), str(tmp_path)), nprocs=2, join=True)
    whole = measure(feats, labels, w).as_dict()
    for rank in range(2):
        got = json.loads((tmp_path / f"rank{rank}.json").read_text())
        assert_reports_equal(whole, got)


def test_torch_cuda_or_cpu_tensors_keep_their_device(rng: np.random.Generator) -> None:
    feats, labels = gaussian_classes(rng, 3, 10, 4)
    device = "cuda" if torch.cuda.is_available() else "cpu"
    h = torch.from_numpy(feats).to(device, torch.float32)
    acc = ClassMeans(3)
    acc.update(h, torch.from_numpy(labels).to(device))
    assert acc.compute().means.device.type == device


def test_mask_equals_measuring_the_subset(rng: np.random.Generator) -> None:
    feats, labels = gaussian_classes(rng, 4, 30, 6)
    w = rng.standard_normal((4, 6))
    keep = rng.random(len(labels)) < 0.6
    feats_nan = feats.copy()
    feats_nan[~keep] = np.nan  # masked-out samples are not read into any statistic
    means = ClassMeans(4)
    means.update(feats_nan, labels, mask=keep)
    acc = CollapseAccumulator(means.compute(), w)
    acc.update(feats_nan, labels, mask=keep)
    assert_reports_equal(measure(feats[keep], labels[keep], w).as_dict(), acc.compute().as_dict())


def test_accumulators_in_concurrent_threads_equal_sequential(rng: np.random.Generator) -> None:
    # The CPU workspace is shared by the accumulators of one thread and private to each thread:
    # threads measuring at the same time (torch releases the GIL in its kernels) must not see
    # each other's buffers. Large enough inputs for several chunks and runs.
    problems = [gaussian_classes(rng, 5, 3000, 64 + 32 * i, sigma=0.5) for i in range(4)]
    sequential = [measure(f, y).as_dict() for f, y in problems]
    with ThreadPoolExecutor(max_workers=4) as pool:
        for _ in range(3):
            concurrent = list(pool.map(lambda p: measure(*p).as_dict(), problems))
            assert concurrent == sequential


def test_small_and_large_batches_of_mixed_dtypes_equal_in_memory(
    rng: np.random.Generator,
) -> None:
    # d = 2,048: a stage holds 512 rows, so batches below 256 rows are staged, larger ones go
    # straight through, and staged ones are flushed when the stage fills, when the dtype
    # changes and at compute. Values are float16-exact, so every dtype carries the same data.
    k, d = 5, 2048
    assert stage_rows(d, torch.device("cpu")) == 512
    feats, labels = gaussian_classes(rng, k, 600, d)
    feats = feats.astype(np.float16).astype(np.float64)
    true = labels.copy()
    flip = rng.random(labels.size) < 0.2
    observed = np.where(flip, rng.integers(0, k, labels.size), labels)
    w, b = rng.standard_normal((k, d)), rng.standard_normal(k)
    sizes = rng.choice([1, 7, 100, 255, 256, 700], p=[0.2, 0.2, 0.2, 0.15, 0.15, 0.1], size=60)
    bounds = np.minimum(np.concatenate([[0], np.cumsum(sizes)]), labels.size)
    dtypes = [torch.float16, torch.float32, torch.float64]
    batches = [
        (torch.from_numpy(feats[lo:hi]).to(dtypes[i % 3], copy=True), slice(lo, hi))
        for i, (lo, hi) in enumerate(itertools.pairwise(bounds.tolist()))
        if hi > lo
    ]
    assert bounds[-1] == labels.size and len(batches) > 10

    means, clean = ClassMeans(k), ClassMeans(k)
    for h, s in batches:
        means.update(h, observed[s])
        clean.update(h, observed[s], mask=observed[s] == true[s])
    acc = CollapseAccumulator(means.compute(), w, b)
    noise = NoiseAccumulator(clean.compute(MetricOptions(drop_empty_classes=True)))
    for h, s in batches:
        acc.update(h, observed[s])
        noise.update(h, observed[s], true[s])
        h.fill_(-1000.0)  # a staged batch was copied: changing the input afterwards changes nothing
    assert_reports_equal(measure(feats, observed, w, b).as_dict(), acc.compute().as_dict())
    assert_reports_equal(measure_noise(feats, observed, true).as_dict(), noise.compute().as_dict())


def test_measure_batches_with_a_progress_bar_gives_the_same_numbers(
    capsys: pytest.CaptureFixture[str],
) -> None:
    g = np.random.default_rng(0)
    y = np.repeat(np.arange(3), 20)
    h = g.normal(size=(60, 4)) + 3 * np.eye(3, 4)[y]
    batches = [(h[i : i + 16], y[i : i + 16]) for i in range(0, 60, 16)]
    quiet = measure_batches(batches, 3).as_dict()
    shown = measure_batches(batches, 3, progress=True).as_dict()
    assert shown == quiet
    err = capsys.readouterr().err
    assert "measure_batches: pass 1 of 2" in err and "pass 2 of 2" in err and "0/4" in err
