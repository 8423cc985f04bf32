"""Two gloo processes (as torchrun would start them) give the numbers of one process."""

from __future__ import annotations

import csv
import os
from pathlib import Path

import numpy as np
import torch.multiprocessing as mp
from conftest import free_port

from nclab.train.config import apply_overrides
from nclab.train.presets import preset
from nclab.train.trainer import train

# CPU has no SyncBatchNorm, so per-process BatchNorm statistics would differ from the single
# process's: the comparison uses the MLP without BatchNorm (on CUDA, DDP converts BN to SyncBN).
OVERRIDES = ["model.batchnorm=false", "optim.epochs=3", "track.layers=[body.1, penultimate]"]


def _worker(rank: int, port: int, out: str) -> None:
    os.environ.update(
        MASTER_ADDR="127.0.0.1",
        MASTER_PORT=str(port),
        RANK=str(rank),
        WORLD_SIZE="2",
        LOCAL_RANK=str(rank),
    )
    import torch.distributed as dist

    try:
        train(apply_overrides(preset("smoke"), list(OVERRIDES)), out)
    finally:
        if dist.is_initialized():
            dist.barrier()
            dist.destroy_process_group()


def _rows(path: Path) -> list[dict[str, str]]:
    with path.open() as handle:
        return list(csv.DictReader(handle))


def test_two_processes_equal_one(tmp_path: Path) -> None:
    train(apply_overrides(preset("smoke"), list(OVERRIDES)), tmp_path / "single")
    mp.spawn(_worker, args=(free_port(), str(tmp_path / "ddp")), nprocs=2, join=True)
    single, ddp = (
        _rows(tmp_path / "single" / "metrics.csv"),
        _rows(tmp_path / "ddp" / "metrics.csv"),
    )
    assert len(single) == len(ddp) == 6
    # The global batch, the loss scaling and the all-reduced accumulators are exact; what differs
    # is the order of float32 additions in the gradient all-reduce, which after 3 epochs moves
    # the numbers by ~1e-6 relative: 1e-4 is a wide margin that a wrong reduction would break.
    for a, b in zip(single, ddp, strict=True):
        assert (a["epoch"], a["layer"]) == (b["epoch"], b["layer"])
        for key, value in a.items():
            if value and key not in ("split", "layer"):
                assert np.isclose(float(value), float(b[key]), rtol=1e-4, atol=1e-7), key
