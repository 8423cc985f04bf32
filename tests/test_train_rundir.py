"""The run directory: one writer (the lock), the checkpoint's fingerprint, stale temporaries,
validation before any write, starting over, extending a run, a diverged run's messages."""

from __future__ import annotations

import os
import re
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch
import yaml

from nclab.cli import main
from nclab.train.config import TrainConfig, apply_overrides
from nclab.train.presets import preset
from nclab.train.rundir import LOCK_NAME, RunDirectoryError, RunLock
from nclab.train.trainer import train


def smoke(*overrides: str) -> TrainConfig:
    return apply_overrides(preset("smoke"), ["run.progress=false", *overrides])


def _same_weights(a: torch.nn.Module, b: torch.nn.Module) -> bool:
    sa, sb = a.state_dict(), b.state_dict()
    return sa.keys() == sb.keys() and all(torch.equal(sa[k], sb[k]) for k in sa)


def test_a_second_process_fails_at_once_naming_the_first(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    run = tmp_path / "run"
    # A run long enough to be alive while the second one starts (it is killed below).
    cmd = [sys.executable, "-m", "nclab.cli", "train", "--preset", "smoke", "--out", str(run)]
    first = subprocess.Popen(
        [*cmd, "optim.epochs=100000", "optim.step_size=1000000", "run.progress=false"],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    try:
        deadline = time.time() + 120
        while not (run / "config.yaml").exists() and first.poll() is None:
            assert time.time() < deadline, "the first run did not start"
            time.sleep(0.02)
        assert first.poll() is None
        code = main(["train", "--preset", "smoke", "--out", str(run), "run.seed=1"])
        err = capsys.readouterr().err
        assert code == 2
        assert f"in use by another run (PID {first.pid}" in err and "choose another --out" in err
        # The second process wrote nothing: the config is still the first one's (seed 0).
        assert yaml.safe_load((run / "config.yaml").read_text())["run"]["seed"] == 0
    finally:
        first.send_signal(signal.SIGKILL)
        first.wait()
    # The kernel released the lock with the killed process: the directory can be taken again.
    with RunLock(run):
        assert (run / LOCK_NAME).read_text() == f"{os.getpid()}\n"


def test_the_lock_is_taken_before_anything_is_written(tmp_path: Path) -> None:
    run = tmp_path / "run"
    run.mkdir()
    with RunLock(run), pytest.raises(RunDirectoryError, match=f"PID {os.getpid()}"):
        train(smoke("optim.epochs=1"), run)
    assert sorted(p.name for p in run.iterdir()) == [LOCK_NAME]


def test_a_checkpoint_of_another_config_refuses_to_resume_with_the_diff(tmp_path: Path) -> None:
    train(smoke("optim.epochs=1"), tmp_path / "seed0")
    train(smoke("optim.epochs=1", "run.seed=1"), tmp_path / "seed1")
    shutil.copy(tmp_path / "seed1" / "checkpoint.pt", tmp_path / "seed0" / "checkpoint.pt")
    # config.yaml says seed 0, as asked: only the checkpoint's stored fingerprint tells.
    with pytest.raises(
        RunDirectoryError, match=r"different config \(differs at run\.seed: 1 in the run, 0 now\)"
    ):
        train(smoke("optim.epochs=1"), tmp_path / "seed0", resume=True)


def test_stale_temporaries_of_the_run_are_removed(tmp_path: Path) -> None:
    run = tmp_path / "run"
    reference = train(smoke("optim.epochs=1"), run)
    stale = [".checkpoint.pt.k1ll3d.tmp", ".metrics.csv.abc123.tmp", ".model.pt.x.tmp"]
    for name in [*stale, ".mine.tmp", "notes.txt"]:
        (run / name).write_bytes(b"half a file")
    resumed = train(smoke("optim.epochs=1"), run, resume=True)
    left = sorted(p.name for p in run.iterdir())
    kept = [".mine.tmp", "checkpoint.pt", "config.yaml", "metrics.csv", "model.pt", "notes.txt"]
    assert left == sorted([LOCK_NAME, *kept])
    assert resumed.rows == reference.rows and _same_weights(resumed.model, reference.model)


@pytest.mark.parametrize(
    ("bad", "message"),
    [
        ("track.layers=[foo]", r"layers: \['foo'\] not found in the model; valid module names"),
        ("noise.kind=asym", "asym"),
        ("data.name=cifar10", "cifar10: not found"),
    ],
)
@pytest.mark.parametrize("resume", [False, True])
def test_bad_configurations_write_nothing_and_the_corrected_command_works(
    tmp_path: Path,
    capsys: pytest.CaptureFixture[str],
    monkeypatch: pytest.MonkeyPatch,
    bad: str,
    message: str,
    resume: bool,
) -> None:
    monkeypatch.delenv("NCLAB_DATA", raising=False)
    run = tmp_path / "run"
    flags = ["--out", str(run), "--data-dir", str(tmp_path), *(["--resume"] if resume else [])]
    base = ["train", "--preset", "smoke", *flags, "optim.epochs=1", "run.progress=false"]
    assert main([*base, bad]) == 2
    err = capsys.readouterr().err
    assert err.startswith("nclab train: error: ") and len(err.strip().splitlines()) == 1
    assert re.search(message, err)
    assert not run.exists()
    assert main(base) == 0
    assert (run / "model.pt").exists()


def test_a_directory_without_checkpoint_starts_over_and_says_so(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    run = tmp_path / "run"
    # An earlier attempt stopped before its first checkpoint: its config and a table are left.
    run.mkdir()
    (run / "config.yaml").write_text(yaml.safe_dump(smoke("optim.lr=0.5").to_dict()))
    (run / "metrics.csv").write_text("epoch,split,layer\n1,train,penultimate\n")
    reference = train(smoke("optim.epochs=2"), tmp_path / "ref")
    capsys.readouterr()
    restarted = train(smoke("optim.epochs=2"), run)
    assert "holds no checkpoint (its run stopped before writing one): starting over" in (
        capsys.readouterr().err
    )
    assert (run / "metrics.csv").read_text() == (tmp_path / "ref" / "metrics.csv").read_text()
    assert restarted.rows == reference.rows
