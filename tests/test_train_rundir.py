"""The run directory: one writer (the lock), the checkpoint's fingerprint, stale temporaries,
validation before any write, starting over, extending a run, a diverged run's messages."""

from __future__ import annotations

import math
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
        ("track.layers=[foo]", r"track\.layers: \['foo'\] not found in the model; valid module"),
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


def test_extending_a_finished_run_equals_the_longer_run(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    # The smoke preset's step schedule divides the rate by 10 after epoch 3: the extension
    # crosses the drop, exactly where the 4-epoch run has it.
    longer = train(smoke("optim.epochs=4"), tmp_path / "four")
    run = tmp_path / "two"
    train(smoke("optim.epochs=2"), run)
    capsys.readouterr()
    extended = train(smoke("optim.epochs=4"), run, resume=True)
    assert "continuing from epoch 2 to optim.epochs=4 (the run was set for 2" in (
        capsys.readouterr().err
    )
    assert (run / "metrics.csv").read_text() == (tmp_path / "four" / "metrics.csv").read_text()
    assert extended.rows == longer.rows and _same_weights(extended.model, longer.model)
    saved = torch.load(run / "model.pt", weights_only=True)
    assert all(torch.equal(saved[k], v) for k, v in longer.model.state_dict().items())
    assert yaml.safe_load((run / "config.yaml").read_text())["optim"]["epochs"] == 4


def test_extending_refuses_cosine_other_changes_and_epochs_already_passed(tmp_path: Path) -> None:
    cosine = tmp_path / "cosine"
    train(smoke("optim.epochs=2", "optim.schedule=cosine"), cosine)
    with pytest.raises(RunDirectoryError, match=r"optim.epochs: the run's cosine schedule is"):
        train(smoke("optim.epochs=4", "optim.schedule=cosine"), cosine, resume=True)
    run = tmp_path / "step"
    train(smoke("optim.epochs=2"), run)
    with pytest.raises(RunDirectoryError, match=r"differs at optim.epochs: 2 in the run, 4 now; "):
        train(smoke("optim.epochs=4", "optim.lr=0.1"), run, resume=True)
    with pytest.raises(RunDirectoryError, match="the checkpoint is at epoch 2, past the 1 asked"):
        train(smoke("optim.epochs=1"), run, resume=True)


def test_a_run_diverging_in_its_first_epoch_claims_no_files(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    run = tmp_path / "run"
    # One thread: the default count would add a hint on a busy machine (tested elsewhere).
    base = ["train", "--preset", "smoke", "--out", str(run), "optim.momentum=0.0", "--threads", "1"]
    assert main([*base, "optim.lr=1e12"]) == 1
    captured = capsys.readouterr()
    assert captured.out == ""
    assert captured.err == (
        "nclab train: label noise: 30 of 160 training labels changed (measured flip rate 0.1875; noise.rate=0.2 with noise.convention=redraw expects 0.1500)\n"
        "nclab train: epoch 1: the training loss is nan; stopped (no checkpoint was written; "
        "no epoch was evaluated, so there is no metrics.csv)\n"
    )
    assert sorted(p.name for p in run.iterdir()) == [LOCK_NAME, "config.yaml"]
    # The corrected command starts the directory over (it holds no checkpoint).
    assert main([*base, "optim.epochs=1", "run.progress=false"]) == 0
    captured = capsys.readouterr()
    assert "starting over" in captured.err and "wrote" in captured.out


def test_a_run_diverging_later_names_the_checkpoint_and_table_it_keeps(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    import nclab.train.trainer as trainer

    sgd_epoch, calls = trainer._sgd_epoch, []

    def diverging_in_epoch_3(*args: object, **kwargs: object) -> float:
        calls.append(1)
        return math.nan if len(calls) == 3 else sgd_epoch(*args, **kwargs)  # type: ignore[arg-type]

    monkeypatch.setattr(trainer, "_sgd_epoch", diverging_in_epoch_3)
    run = tmp_path / "run"
    code = main(["train", "--preset", "smoke", "--out", str(run), "run.checkpoint_seconds=0"])
    captured = capsys.readouterr()
    assert code == 1
    assert (
        "nclab train: epoch 3: the training loss is nan; stopped (the checkpoint of epoch 2 is "
        "kept; metrics.csv holds epochs up to 2)" in captured.err
    )
    assert captured.out.startswith(f"wrote {run / 'metrics.csv'} (2 rows); last epoch 2:")
    assert torch.load(run / "checkpoint.pt", weights_only=True)["epoch"] == 2
    assert not (run / "model.pt").exists()


def test_out_naming_a_file_is_bad_input(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    target = tmp_path / "notes.txt"
    target.write_text("mine")
    assert main(["train", "--preset", "smoke", "--out", str(target), "optim.epochs=1"]) == 2
    assert capsys.readouterr().err == (
        f"nclab train: error: --out: {target} is a file; expected a run directory\n"
    )
    assert target.read_text() == "mine"


@pytest.mark.parametrize("garbage", [b"", b"not a checkpoint", b"PK\x03\x04 truncated"])
def test_an_unreadable_checkpoint_is_named(tmp_path: Path, garbage: bytes) -> None:
    run = tmp_path / "run"
    train(smoke("optim.epochs=1"), run)
    (run / "checkpoint.pt").write_bytes(garbage)
    with pytest.raises(RunDirectoryError, match=r"run: cannot read the run's files \("):
        train(smoke("optim.epochs=1"), run, resume=True)


def test_data_errors_name_the_config_keys(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    from nclab.cli import main

    base = ["train", "--preset", "smoke", "--out", str(tmp_path / "run")]
    assert main([*base, "data.per_class=100000"]) == 2
    err = capsys.readouterr().err
    assert "nclab train: error: data.per_class: class 0 has only" in err
    assert main([*base, "data.test_per_class=100000"]) == 2
    assert "nclab train: error: data.test_per_class: class 0 has only" in capsys.readouterr().err
    assert main([*base, "data.num_classes=11"]) == 2
    assert "nclab train: error: data.num_classes: expected 2..10, got 11" in capsys.readouterr().err
    assert not (tmp_path / "run").exists()
