"""Progress where no terminal is: one line per evaluated epoch; collect's progress bar and its
refusal of one-shot iterators."""

from __future__ import annotations

import os
from collections.abc import Iterator
from pathlib import Path

import pytest
import torch
from torch import nn

from nclab.metrics.hooks import collect
from nclab.train.config import apply_overrides
from nclab.train.presets import preset
from nclab.train.trainer import train

# What the smoke preset's run prints first: the label noise it drew (seed 0).
NOISE_LINE = "nclab train: label noise: 30 of 160 training labels changed (measured flip rate 0.1875; noise.rate=0.2 with noise.convention=redraw expects 0.1500)"


def test_without_a_terminal_each_evaluated_epoch_prints_one_line(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    cfg = apply_overrides(
        preset("smoke"),
        # One thread: the default count would add a hint on a busy machine (tested below).
        [
            "optim.epochs=4",
            "track.eval_every=2",
            "track.layers=[body.1,penultimate]",
            "run.threads=1",
        ],
    )
    rows = train(cfg, tmp_path / "run").rows
    noise, *lines = capsys.readouterr().err.splitlines()  # stderr is no terminal here
    assert noise == (NOISE_LINE)  # the smoke preset's 20 % label noise, as drawn
    assert len(lines) == 2
    for line, epoch in zip(lines, (2, 4), strict=True):
        body, pen = (r for r in rows if r["epoch"] == epoch)
        assert line == (
            f"nclab train: epoch {epoch}/4  train loss {body['train_loss']:.4g}  "
            f"acc {body['acc_observed']:.4g} (true labels {body['acc_true']:.4g})  "
            f"test acc {body['test_acc']:.4g}  "
            f"NC1: body.1 {body['nc1']:.4g}, penultimate {pen['nc1']:.4g}"
        )
    quiet = apply_overrides(cfg, ["run.progress=false"])
    train(quiet, tmp_path / "quiet")
    assert capsys.readouterr().err == ""


def _model_and_batches() -> tuple[nn.Module, list[tuple[torch.Tensor, torch.Tensor]]]:
    torch.manual_seed(0)
    model = nn.Sequential(nn.Linear(6, 5), nn.ReLU(), nn.Linear(5, 3))
    x = torch.randn(60, 6)
    y = torch.arange(60) % 3
    return model, [(x[i : i + 20], y[i : i + 20]) for i in range(0, 60, 20)]


def test_collect_refuses_a_generator_before_reading_it() -> None:
    model, batches = _model_and_batches()
    read = []

    def generator() -> Iterator[tuple[torch.Tensor, torch.Tensor]]:
        for batch in batches:
            read.append(1)
            yield batch

    with pytest.raises(TypeError, match=r"loader: an iterator .* can be read only once"):
        collect(model, generator(), ["1"])
    assert read == []  # refused at once, not after a pass


def test_collect_with_a_progress_bar_gives_the_same_numbers(
    capsys: pytest.CaptureFixture[str],
) -> None:
    model, batches = _model_and_batches()
    plain = collect(model, batches, ["1"])["1"].as_dict()
    shown = collect(model, batches, ["1"], progress=True)["1"].as_dict()
    assert shown == plain
    err = capsys.readouterr().err
    assert (
        "collect: pass 1 of 2" in err and "collect: pass 2 of 2" in err and "0/3" in err
    )  # total known


def test_threads_default_and_flag(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    from nclab.cli import main
    from nclab.threads import default_threads

    monkeypatch.delenv("LOCAL_WORLD_SIZE", raising=False)
    monkeypatch.setenv("OMP_NUM_THREADS", "3")
    assert default_threads() == 3  # the launcher's (or the sweep worker's) limit is kept
    monkeypatch.delenv("OMP_NUM_THREADS")
    monkeypatch.setattr(os, "sched_getaffinity", lambda _pid: set(range(16)))
    assert default_threads() == 4  # capped: more buys little and oversubscribes
    monkeypatch.setenv("LOCAL_WORLD_SIZE", "8")
    assert default_threads() == 2  # 16 cores shared by 8 torchrun processes
    monkeypatch.setattr(os, "sched_getaffinity", lambda _pid: {0})
    assert default_threads() == 1
    before = torch.get_num_threads()
    try:
        run = tmp_path / "run"
        base = ["train", "--preset", "smoke", "--out", str(run), "optim.epochs=1"]
        assert main([*base, "--threads", "1"]) == 0
        assert torch.get_num_threads() == 1
        # A speed setting: the run resumes with another thread count.
        assert main([*base, "--resume", "--threads", "2"]) == 0
        assert torch.get_num_threads() == 2
        assert main([*base, "--resume", "--threads", "0"]) == 2
        assert "run.threads" in capsys.readouterr().err
    finally:
        torch.set_num_threads(before)


def test_an_epoch_without_evaluation_prints_its_loss_after_a_quiet_spell(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    import nclab.train.trainer as trainer

    monkeypatch.setattr(trainer, "_QUIET_SECONDS", 0.0)  # every quiet spell is long enough
    cfg = apply_overrides(
        preset("smoke"), ["optim.epochs=3", "track.eval_every=2", "run.threads=1"]
    )
    rows = train(cfg, tmp_path / "run").rows
    noise, *lines = capsys.readouterr().err.splitlines()
    assert noise == NOISE_LINE
    assert [line.split("  ")[0] for line in lines] == [
        "nclab train: epoch 1/3",
        "nclab train: epoch 2/3",
        "nclab train: epoch 3/3",
    ]
    assert "NC1" not in lines[0] and "NC1: penultimate" in lines[1]
    assert [r["epoch"] for r in rows] == [2, 3]


def test_the_default_thread_count_on_a_busy_machine_comes_with_a_hint(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.delenv("OMP_NUM_THREADS", raising=False)
    monkeypatch.delenv("LOCAL_WORLD_SIZE", raising=False)
    monkeypatch.setattr(os, "sched_getaffinity", lambda _pid: {0, 1})
    monkeypatch.setattr(os, "getloadavg", lambda: (7.0, 7.0, 7.0))
    before = torch.get_num_threads()
    try:
        cfg = apply_overrides(preset("smoke"), ["optim.epochs=1", "run.progress=false"])
        train(cfg, tmp_path / "busy")
        assert capsys.readouterr().err == (
            "nclab train: the machine is busy (load 7.0 on 2 cores): 2 threads may run several "
            "times slower than one; pass --threads 1 (run.threads=1)\n"
        )
        train(apply_overrides(cfg, ["run.threads=2"]), tmp_path / "pinned")  # asked for: no hint
        monkeypatch.setattr(os, "getloadavg", lambda: (0.4, 0.4, 0.4))
        train(cfg, tmp_path / "idle")
        assert capsys.readouterr().err == ""
    finally:
        torch.set_num_threads(before)


def test_an_empty_class_in_a_run_is_advised_in_config_keys() -> None:
    from nclab.errors import InputError
    from nclab.train.evaluation import _as_config_keys

    with pytest.raises(
        InputError,
        match=r"^layer 'penultimate': labels: class\(es\) \[2\] .* set track.drop_empty_classes=true",
    ):
        with _as_config_keys("penultimate"):
            raise ValueError(
                "labels: class(es) [2] of 0..2 have no samples; pass drop_empty_classes=True to measure the remaining classes, or set num_classes"
            )
    with pytest.raises(ValueError, match=r"^features: contain NaN"):  # other errors unchanged
        with _as_config_keys("penultimate"):
            raise ValueError("features: contain NaN or Inf values")


def test_a_noisy_run_says_how_many_labels_it_changed(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    cfg = apply_overrides(
        preset("smoke"),
        ["optim.epochs=1", "noise.rate=0.2", "noise.convention=flip", "run.threads=1"],
    )
    train(cfg, tmp_path / "run")
    first = capsys.readouterr().err.splitlines()[0]
    assert first == (
        "nclab train: label noise: 32 of 160 training labels changed (measured flip rate 0.2000; "
        "noise.rate=0.2 with noise.convention=flip expects 0.2000)"
    )
