"""The trainer: metrics table, collapse during training, resume after SIGKILL, faults."""

from __future__ import annotations

import csv
import errno
import math
import os
import pickle
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest
import torch

from nclab.cli import main
from nclab.losses import make_loss
from nclab.train.config import TrainConfig, apply_overrides
from nclab.train.nets import build_network
from nclab.train.presets import preset
from nclab.train.table import COLUMNS, read_metrics
from nclab.train.trainer import (
    RunDirectoryError,
    batch_starts,
    checkpoint_due,
    measure_batches,
    random_crop_flip,
    train,
)


def smoke(*overrides: str) -> TrainConfig:
    return apply_overrides(preset("smoke"), list(overrides))


def test_smoke_run_writes_a_sane_metrics_table(tmp_path: Path) -> None:
    result = train(smoke(), tmp_path / "run")
    with (tmp_path / "run" / "metrics.csv").open() as handle:
        assert next(csv.reader(handle)) == COLUMNS
    rows = read_metrics(tmp_path / "run")
    assert [r["epoch"] for r in rows] == [1, 2, 3, 4]
    for r in rows:
        assert 0.0 <= r["acc_observed"] <= 1.0 and 0.0 <= r["test_acc"] <= 1.0
        assert r["nc1"] >= 0 and math.isfinite(r["nc1"])
        assert r["nc3_duality"] >= 0  # the classifier metrics of the penultimate layer
        # 20% symmetric noise over 4 classes: the realized flip rate is near 0.2 · 3/4.
        assert abs(r["noise_rate"] - 0.15) < 0.08
        assert r["memorization"] > 0 and r["clean_nc1"] >= 0
    # The table holds the run's numbers (to the 17 significant digits of repr).
    for got, want in zip(rows, result.rows, strict=True):
        assert (got["split"], got["layer"], got["epoch"]) == (
            want["split"],
            want["layer"],
            want["epoch"],
        )
        for key in COLUMNS[3:]:
            expected = want.get(key)
            assert got[key] == expected or (expected is None and math.isnan(got[key])), key
    assert (tmp_path / "run" / "model.pt").exists() and result.stopped_early is None
    saved = TrainConfig.from_yaml((tmp_path / "run" / "config.yaml").read_text())
    assert saved.fingerprint() == smoke().fingerprint()


def test_nc1_falls_as_a_small_mlp_reaches_zero_training_error(tmp_path: Path) -> None:
    cfg = smoke(
        "noise.rate=0.0",
        "data.num_classes=3",
        "data.per_class=20",
        "optim.epochs=60",
        "optim.step_size=30",
        "model.widths=[64, 64]",
    )
    rows = train(cfg, tmp_path / "run").rows
    first, last = rows[0], rows[-1]
    # Zero training error within ten epochs, then the within-class variability keeps shrinking:
    # on this seed NC1 goes from 0.27 (epoch 1) to about 0.04; a factor 4 leaves a margin.
    assert all(r["acc_observed"] == 1.0 for r in rows[10:])
    assert last["nc1"] < first["nc1"] / 4


def _spawn_train(out: Path, epochs: int) -> subprocess.Popen[bytes]:
    cmd = [
        sys.executable,
        "-m",
        "nclab.cli",
        "train",
        "--preset",
        "smoke",
        "--out",
        str(out),
        f"optim.epochs={epochs}",
        "optim.step_size=100",
        "run.checkpoint_seconds=0",
    ]
    return subprocess.Popen(cmd, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)


def test_resume_after_sigkill_equals_an_uninterrupted_run(tmp_path: Path) -> None:
    epochs = 12
    reference = train(smoke(f"optim.epochs={epochs}", "optim.step_size=100"), tmp_path / "ref")
    proc = _spawn_train(tmp_path / "killed", epochs)
    ckpt = tmp_path / "killed" / "checkpoint.pt"
    deadline = time.time() + 120
    while not ckpt.exists() and proc.poll() is None and time.time() < deadline:
        time.sleep(0.01)
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    killed_at = torch.load(ckpt, weights_only=True)["epoch"]
    assert 1 <= killed_at < epochs  # the kill landed mid-run, after the first checkpoint
    resumed = train(
        smoke(f"optim.epochs={epochs}", "optim.step_size=100"), tmp_path / "killed", resume=True
    )
    assert (tmp_path / "killed" / "metrics.csv").read_text() == (
        tmp_path / "ref" / "metrics.csv"
    ).read_text()
    ref_state, state = reference.model.state_dict(), resumed.model.state_dict()
    assert all(torch.equal(ref_state[k], state[k]) for k in ref_state)


@pytest.mark.parametrize(("fail_at", "epochs_in_table"), [(6, 2), (7, 3)])
def test_a_full_disk_keeps_the_last_checkpoint_and_table_and_the_run_resumes(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, fail_at: int, epochs_in_table: int
) -> None:
    # Every file is written atomically, flushed with fsync: call 1 is config.yaml, then per
    # epoch metrics.csv and checkpoint.pt. The disk fills at call 6 (the table of epoch 3) or 7
    # (the checkpoint of epoch 3): the files of epoch 2 stay whole, and --resume ends with the
    # uninterrupted run's table and weights.
    overrides = ("optim.epochs=5", "optim.step_size=100", "run.checkpoint_seconds=0")
    reference = train(smoke(*overrides), tmp_path / "ref")
    calls = 0
    fsync = os.fsync

    def filling_disk(fd: int) -> None:
        nonlocal calls
        calls += 1
        if calls >= fail_at:
            raise OSError(errno.ENOSPC, "No space left on device")
        fsync(fd)

    run = tmp_path / "full"
    monkeypatch.setattr(os, "fsync", filling_disk)
    with pytest.raises(OSError, match="No space left"):
        train(smoke(*overrides), run)
    monkeypatch.setattr(os, "fsync", fsync)
    # The lock file stays (emptying it would race with a next run taking it); nothing else.
    files = sorted(p.name for p in run.iterdir())
    assert files == [".lock", "checkpoint.pt", "config.yaml", "metrics.csv"]
    assert torch.load(run / "checkpoint.pt", weights_only=True)["epoch"] == 2
    ref_lines = (tmp_path / "ref" / "metrics.csv").read_text().splitlines(keepends=True)
    rows_per_epoch = (len(ref_lines) - 1) // 5
    table = (run / "metrics.csv").read_text()
    assert table == "".join(ref_lines[: 1 + rows_per_epoch * epochs_in_table])
    resumed = train(smoke(*overrides), run, resume=True)
    assert (run / "metrics.csv").read_text() == "".join(ref_lines)
    ref_state, state = reference.model.state_dict(), resumed.model.state_dict()
    assert all(torch.equal(ref_state[k], state[k]) for k in ref_state)


def test_speed_options_run_on_cpu_and_keep_the_numbers(tmp_path: Path) -> None:
    base = ("model.name=cnn", "model.widths=[8,16]", "optim.epochs=2", "optim.step_size=100")
    plain = train(smoke(*base), tmp_path / "plain").rows
    nhwc = train(smoke(*base, "run.channels_last=true"), tmp_path / "nhwc").rows
    bf16 = train(smoke(*base, "run.bf16=true"), tmp_path / "bf16").rows
    for a, b, c in zip(plain, nhwc, bf16, strict=True):
        # NHWC changes only the order of the convolutions' float32 sums: two epochs of SGD
        # stay within 1e-4 in the loss. NC1 (~19 here: class means barely apart after two
        # epochs, Σ_B small) amplifies those differences: 2.2e-3 apart with one thread,
        # under 1e-3 with two; 1e-2 leaves a margin. bfloat16 keeps 8 bits of mantissa
        # (0.4 %): the loss within 5 %.
        assert b["train_loss"] == pytest.approx(a["train_loss"], rel=1e-4)
        assert b["nc1"] == pytest.approx(a["nc1"], rel=1e-2)
        assert c["train_loss"] == pytest.approx(a["train_loss"], rel=5e-2)
        assert math.isfinite(c["nc1"]) and c["nc1"] > 0


def test_compiled_model_gives_the_same_numbers(tmp_path: Path) -> None:
    # torch.compile (inductor, C++ on the CPU: ~20 s here) fuses and reorders float32 operations:
    # two epochs agree with eager mode to ~1e-7; 1e-5 leaves a margin.
    eager = train(smoke("optim.epochs=2"), tmp_path / "eager").rows
    compiled = train(smoke("optim.epochs=2", "run.compile=true"), tmp_path / "compiled").rows
    for a, b in zip(eager, compiled, strict=True):
        assert b["train_loss"] == pytest.approx(a["train_loss"], rel=1e-5)
        assert b["nc1"] == pytest.approx(a["nc1"], rel=1e-5)


def test_resume_before_the_first_checkpoint_starts_over(tmp_path: Path) -> None:
    # What a run killed before its first checkpoint leaves: its config and the metrics rows of
    # the epochs it finished (here: a truncated copy of a finished run's table).
    cfg = smoke("optim.epochs=3")
    reference = train(cfg, tmp_path / "ref")
    table = (tmp_path / "ref" / "metrics.csv").read_text()
    killed = tmp_path / "killed"
    killed.mkdir()
    (killed / "config.yaml").write_text((tmp_path / "ref" / "config.yaml").read_text())
    (killed / "metrics.csv").write_text("".join(table.splitlines(keepends=True)[:2]))
    resumed = train(cfg, killed, resume=True)
    assert (killed / "metrics.csv").read_text() == table
    assert resumed.rows == reference.rows


def test_checkpoint_cadence_in_epochs_and_seconds(tmp_path: Path) -> None:
    cfg = smoke("optim.epochs=10", "run.checkpoint_every=3", "run.checkpoint_seconds=0")
    now = time.monotonic()
    assert [e for e in range(1, 11) if checkpoint_due(cfg, e, (0, now))] == [
        3,
        4,
        5,
        6,
        7,
        8,
        9,
        10,
    ]
    assert not checkpoint_due(cfg, 5, (3, now)) and checkpoint_due(cfg, 6, (3, now))
    slow = smoke("optim.epochs=10", "run.checkpoint_seconds=3600")
    assert not checkpoint_due(slow, 5, (0, now))  # an hour has not passed
    assert checkpoint_due(slow, 5, (0, now - 3600))
    assert checkpoint_due(slow, 10, (9, now))  # the last epoch always
    run = train(smoke("optim.epochs=3", "run.checkpoint_seconds=3600"), tmp_path / "run")
    assert torch.load(run.out_dir / "checkpoint.pt", weights_only=True)["epoch"] == 3


def test_run_directories_are_not_clobbered(tmp_path: Path) -> None:
    train(smoke("optim.epochs=1"), tmp_path / "run")
    with pytest.raises(RunDirectoryError, match="already holds a run; pass --resume"):
        train(smoke("optim.epochs=1"), tmp_path / "run")
    with pytest.raises(RunDirectoryError, match=r"different config \(differs at optim.lr"):
        train(smoke("optim.epochs=1", "optim.lr=0.1"), tmp_path / "run", resume=True)


def test_config_errors_name_the_key() -> None:
    with pytest.raises(ValueError, match=r"optim.lrr: unknown config key; valid keys of optim"):
        smoke("optim.lrr=0.1")
    with pytest.raises(ValueError, match=r"noise.rate: expected a value in \[0, 1\)"):
        smoke("noise.rate=1.5")
    with pytest.raises(ValueError, match=r"optim\.epochs: expected an integer"):
        smoke("optim.epochs=1.5")
    with pytest.raises(ValueError, match="colour: unknown config section"):
        TrainConfig.from_dict({"colour": {}})


def test_missing_dataset_and_layer_errors(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.delenv("NCLAB_DATA", raising=False)
    code = main(
        [
            "train",
            "--preset",
            "smoke",
            "--out",
            str(tmp_path / "a"),
            "data.name=cifar10",
            "--data-dir",
            str(tmp_path),
        ]
    )
    err = capsys.readouterr().err
    assert code == 2 and "cifar10: not found" in err and str(tmp_path) in err
    if not torch.cuda.is_available():
        code = main(
            ["train", "--preset", "smoke", "--out", str(tmp_path / "c"), "--device", "cuda"]
        )
        assert code == 2 and "run.device" in capsys.readouterr().err
    with pytest.raises(ValueError, match=r"layers: \['nope'\] not found.*valid module names"):
        train(smoke("track.layers=[nope]"), tmp_path / "b")


def test_diverging_loss_stops_with_a_message(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    result = train(smoke("optim.lr=1e12", "optim.momentum=0.0"), tmp_path / "run")
    assert result.stopped_early is not None and "training loss is" in result.stopped_early
    assert not (tmp_path / "run" / "model.pt").exists()


def test_batches_cover_every_sample_and_augmentation_keeps_shapes() -> None:
    assert batch_starts(10, 4) == [0, 4, 8, 10]
    assert batch_starts(9, 4) == [0, 4, 9]  # a last batch of one is merged
    x = torch.arange(2 * 3 * 5 * 5, dtype=torch.float32).reshape(2, 3, 5, 5)
    out = random_crop_flip(x, torch.Generator().manual_seed(0), pad=0)
    for i in range(2):
        assert torch.equal(out[i], x[i]) or torch.equal(out[i], x[i].flip(2))
    assert random_crop_flip(x, torch.Generator().manual_seed(0)).shape == x.shape


def test_cached_and_recomputed_features_give_the_same_metrics(tmp_path: Path) -> None:
    cached = train(smoke("optim.epochs=2", "track.test_metrics=true"), tmp_path / "a").rows
    recomputed = train(
        smoke("optim.epochs=2", "track.test_metrics=true", "track.cache_features=false"),
        tmp_path / "b",
    ).rows
    assert [r["split"] for r in cached] == ["train", "test"] * 2
    for a, b in zip(cached, recomputed, strict=True):
        for key, value in a.items():
            if isinstance(value, float) and not math.isnan(value):
                assert value == pytest.approx(b[key], rel=1e-12), key


@pytest.mark.parametrize(
    "overrides",
    [
        ["model.name=cnn", "model.widths=[8, 16]", "data.augment=true"],
        [
            "model.name=resnet18",
            "model.width=0.0625",
            "data.per_class=8",
            "data.test_per_class=4",
            "track.layers=[layer4, penultimate]",
        ],
        ["model.name=vgg11", "model.width=0.0625", "data.per_class=8", "data.test_per_class=4"],
        ["optim.feature_penalty=0.01", "loss.name=mse", "optim.schedule=cosine"],
        ["loss.name=relaxation", "loss.smoothing=0.1", "noise.kind=pair"],
    ],
)
def test_networks_losses_and_options_train(tmp_path: Path, overrides: list[str]) -> None:
    result = train(smoke("optim.epochs=2", *overrides), tmp_path / "run")
    assert result.stopped_early is None and len(result.rows) >= 2
    assert all(math.isfinite(r["nc1"]) for r in result.rows)


def test_the_gpu_preset_runs_on_cpu_on_cifar_shaped_files(tmp_path: Path) -> None:
    # The paper-scale preset exactly as configured (ResNet-18, augmentation, bf16, channels_last,
    # NC of layer4 and penultimate on train and test), shrunk in data, width and epochs, on
    # synthetic files in CIFAR-10's own format.
    folder = tmp_path / "data" / "cifar10" / "cifar-10-batches-py"
    folder.mkdir(parents=True)
    rng = np.random.default_rng(0)
    for name in [f"data_batch_{i}" for i in range(1, 6)] + ["test_batch"]:
        images = rng.integers(0, 256, size=(10, 3072)).astype(np.uint8)
        batch = {b"data": images, b"labels": list(range(10))}
        (folder / name).write_bytes(pickle.dumps(batch, protocol=2))
    cfg = apply_overrides(
        preset("gpu-resnet18-cifar10"),
        [
            "run.device=cpu",
            f"data.data_dir={tmp_path / 'data'}",
            "data.per_class=4",
            "data.test_per_class=1",
            "model.width=0.0625",
            "optim.epochs=1",
            "run.progress=false",
        ],
    )
    assert cfg.run.bf16 and cfg.run.channels_last and cfg.data.augment
    rows = train(cfg, tmp_path / "run").rows
    assert [(r["split"], r["layer"]) for r in rows] == [
        ("train", "layer4"),
        ("train", "penultimate"),
        ("test", "layer4"),
        ("test", "penultimate"),
    ]
    assert all(math.isfinite(r["nc1"]) and 0.0 <= r["test_acc"] <= 1.0 for r in rows)


def test_evaluation_sums_do_not_depend_on_the_batch_split() -> None:
    # Loss and accuracy sums are float64 (per-sample losses of float32 logits summed in float32
    # would differ by ~1e-7 between splits); the NC report by the order of float64 additions.
    torch.manual_seed(0)
    model = build_network("mlp", input_shape=(1, 4, 4), num_classes=5, widths=[8])
    n = 3000
    feats = {"penultimate": torch.randn(n, 8).relu()}
    logits = 30.0 * torch.randn(n, 5)
    y_obs = torch.arange(n) % 5
    y_true = y_obs.clone()
    whole = [(feats, logits, y_obs, y_true)]
    parts = [
        (
            {"penultimate": feats["penultimate"][i : i + 7]},
            logits[i : i + 7],
            y_obs[i : i + 7],
            y_obs[i : i + 7],
        )
        for i in range(0, n, 7)
    ]
    loss = make_loss("ce")
    a = measure_batches(lambda: whole, model, loss, 5, False, ["penultimate"])
    b = measure_batches(lambda: parts, model, loss, 5, False, ["penultimate"])
    assert b[0]["eval_loss"] == pytest.approx(a[0]["eval_loss"], rel=1e-13)
    assert b[0]["acc_observed"] == a[0]["acc_observed"]
    assert b[1]["penultimate"]["nc1"] == pytest.approx(a[1]["penultimate"]["nc1"], rel=1e-12)


def test_feature_penalty_is_part_of_the_training_loss(tmp_path: Path) -> None:
    plain = train(smoke("optim.epochs=1"), tmp_path / "a").rows[0]["train_loss"]
    penalized = train(smoke("optim.epochs=1", "optim.feature_penalty=1.0"), tmp_path / "b")
    assert penalized.rows[0]["train_loss"] > plain


def test_training_pass_features_equal_eval_features_when_nothing_moves(tmp_path: Path) -> None:
    # Without BatchNorm and with a negligible step, the features the training passes computed
    # during the epoch are those of the evaluation pass: both sources give the same numbers
    # (to the 1e-12 steps' effect, far below 1e-6).
    common = [
        "optim.epochs=1",
        "optim.lr=1e-12",
        "model.batchnorm=false",
        "track.layers=[body.1, penultimate]",
    ]
    by_eval = train(smoke(*common), tmp_path / "eval").rows
    by_train = train(smoke(*common, "track.source=train"), tmp_path / "train").rows
    for a, b in zip(by_eval, by_train, strict=True):
        for key in ("nc1", "nc2_etf_means", "memorization", "dilation_mean", "acc_observed"):
            assert a[key] == pytest.approx(b[key], rel=1e-6), key
    with pytest.raises(ValueError, match=r"track\.source: expected eval or train"):
        smoke("track.source=both")


def test_learning_rate_schedules() -> None:
    from nclab.train.trainer import lr_factor

    cfg = smoke("optim.schedule=step", "optim.step_size=2", "optim.gamma=0.5")
    assert [lr_factor(cfg, e) for e in range(5)] == [1, 1, 0.5, 0.5, 0.25]
    cfg = smoke("optim.schedule=multistep", "optim.milestones=[1, 3]", "optim.gamma=0.1")
    assert [lr_factor(cfg, e) for e in range(4)] == pytest.approx([1, 0.1, 0.1, 0.01])
    cfg = smoke("optim.schedule=cosine", "optim.epochs=4")
    expected = [0.5 * (1 + math.cos(math.pi * e / 4)) for e in range(5)]  # 1, .85, .5, .15, 0
    assert [lr_factor(cfg, e) for e in range(5)] == pytest.approx(expected, abs=1e-15)


def test_a_classifier_without_bias(tmp_path: Path) -> None:
    """model.bias=false: W h without b (Tirer & Bruna's MSE setting); the weights start as with
    a bias, the metrics see no bias (‖Wμ_G‖ is the bias relation), and the key at its default
    leaves existing runs' fingerprints alone."""
    base = ("optim.epochs=1", "loss.name=mse")
    with_bias = train(smoke(*base), tmp_path / "b")
    without = train(smoke(*base, "model.bias=false"), tmp_path / "nb")
    assert without.model.fc.bias is None and with_bias.model.fc.bias is not None
    assert smoke(*base, "model.bias=true").fingerprint() == smoke(*base).fingerprint()
    assert smoke(*base, "model.bias=false").fingerprint() != smoke(*base).fingerprint()
    row = without.rows[-1]
    assert row["bias_relation"] > 0 and row["nc1"] > 0
