"""The training configuration refuses bad input with the key as written, and the file, line and
column where a YAML file says; `nclab train` takes overrides after its options."""

from __future__ import annotations

import dataclasses
import math
from pathlib import Path
from typing import Any

import pytest

import nclab.train.trainer
from nclab.cli import main
from nclab.errors import InputError
from nclab.metrics.options import MetricOptions
from nclab.train.config import OptimConfig, TrackConfig, TrainConfig, apply_overrides
from nclab.train.presets import PRESETS, preset


def refused(overrides: list[str]) -> str:
    with pytest.raises(InputError) as info:  # bad input: the CLI's exit code 2
        apply_overrides(TrainConfig(), overrides)
    return str(info.value)


# --- wrong results: every numeric and named value is checked, the error names the key -------

# (override(s), the message's start): one row per rule of TrainConfig.validate and _coerce.
BAD_VALUES: list[tuple[list[str], str]] = [
    (["optim.gamma=-1"], "optim.gamma: expected a factor in (0, 1]"),
    (["optim.gamma=0"], "optim.gamma: expected a factor in (0, 1]"),
    (["optim.gamma=1.5"], "optim.gamma: expected a factor in (0, 1]"),
    (["optim.weight_decay=.inf"], "optim.weight_decay: expected a finite number, got inf"),
    (["optim.weight_decay=-1e-4"], "optim.weight_decay: expected a non-negative number"),
    (["optim.lr=.nan"], "optim.lr: expected a finite number, got nan"),
    (["optim.lr=nan"], "optim.lr: expected a finite number, got 'nan'"),
    (["optim.lr=0"], "optim.lr: expected a learning rate > 0"),
    (["optim.lr=1e400"], "optim.lr: expected a finite number, got '1e400'"),
    ([f"optim.lr={10**400}"], "optim.lr: expected a finite number, got 1000000"),
    (["optim.momentum=1"], "optim.momentum: expected a value in [0, 1)"),
    (["optim.momentum=-.inf"], "optim.momentum: expected a finite number"),
    (["optim.epochs=0"], "optim.epochs: expected an integer in [1, 2**63)"),
    (["optim.epochs=2.0"], "optim.epochs: expected an integer, got 2.0"),
    (["optim.step_size=0"], "optim.step_size: expected an integer in [1, 2**63)"),
    (["optim.schedule=linear"], "optim.schedule: expected one of"),
    (["optim.classifier_weight_decay=-1"], "optim.classifier_weight_decay: expected a non-neg"),
    (["optim.feature_penalty=-0.5"], "optim.feature_penalty: expected a non-negative number"),
    (
        ["optim.schedule=multistep", "optim.milestones=[5, 5]"],
        "optim.milestones: expected strictly increasing epochs in [1, optim.epochs) = [1, 20)",
    ),
    (
        ["optim.schedule=multistep", "optim.milestones=[0, 5]"],
        "optim.milestones: expected strictly increasing epochs",
    ),
    (
        ["optim.schedule=multistep", "optim.milestones=[5, 20]"],
        "optim.milestones: expected strictly increasing epochs in [1, optim.epochs) = [1, 20)",
    ),
    (["optim.schedule=multistep"], "optim.milestones: expected at least one epoch with optim.sc"),
    (["optim.milestones=[5]"], "optim.milestones: expected at least one epoch with optim.sche"),
    (["data.name=imagenet"], "data.name: expected one of ('fashion-mnist-small',"),
    (["data.data_dir=''"], "data.data_dir: expected a directory, or null"),
    (["data.num_classes=1"], "data.num_classes: expected an integer in [2, 2**63)"),
    (["data.per_class=0"], "data.per_class: expected an integer in [1, 2**63)"),
    (["data.test_per_class=0"], "data.test_per_class: expected an integer in [1, 2**63)"),
    (["data.batch_size=0"], "data.batch_size: expected an integer in [1, 2**63)"),
    (["data.eval_batch_size=-3"], "data.eval_batch_size: expected an integer in [1, 2**63)"),
    (["data.augment=1"], "data.augment: expected true or false, got 1"),
    (["noise.rate=1"], "noise.rate: expected a value in [0, 1)"),
    (["noise.rate=-0.1"], "noise.rate: expected a value in [0, 1)"),
    (["noise.kind=asym"], "noise.kind: expected one of ('symmetric', 'symmetric_flip', 'pair')"),
    (["noise.convention=exact"], "noise.convention: expected one of ('redraw', 'flip')"),
    (["model.name=resnet50"], "model.name: expected one of ('mlp', 'cnn', 'resnet18', 'vgg11')"),
    (["model.widths=[0]"], "model.widths: expected widths that are integers in [1, 2**63)"),
    (["model.widths=[]"], "model.widths: expected at least one width for model.name=mlp"),
    (["model.widths=[64, 2.5]"], "model.widths: expected an integer, got 2.5"),
    (["model.width=0"], "model.width: expected a width multiplier > 0"),
    (["loss.name=hinge"], "loss.name: expected one of ('ce', 'mse', 'ls', 'focal', 'relaxation')"),
    (["loss.name=ls", "loss.smoothing=1"], "loss.smoothing: expected α in [0, 1)"),
    (["loss.smoothing=0.1"], "loss.smoothing: only the 'ls' and 'relaxation' losses take α"),
    (["loss.name=focal", "loss.gamma=-1"], "loss.gamma: expected γ >= 0"),
    (["loss.gamma=2"], "loss.gamma: only the 'focal' loss takes γ"),
    (["loss.name=mse", "loss.target_scale=0"], "loss.target_scale: expected M > 0"),
    (["loss.name=mse", "loss.target_weight=-1"], "loss.target_weight: expected k > 0"),
    (["loss.name=mse", "loss.target_scale=.inf"], "loss.target_scale: expected a finite number"),
    (["loss.target_scale=3"], "loss.target_scale: only the 'mse' loss is rescaled"),
    (["track.layers=[]"], "track.layers: expected at least one module name"),
    (["track.layers=['']"], "track.layers: expected module names, not empty strings"),
    (["track.layers=[fc, fc]"], "track.layers: expected each module named once"),
    (["track.eval_every=0"], "track.eval_every: expected an integer in [1, 2**63)"),
    (["track.source=both"], "track.source: expected eval or train"),
    (["run.seed=-1"], "run.seed: expected an integer in [0, 2**63), got -1"),
    (["run.seed=9223372036854775808"], "run.seed: expected an integer in [0, 2**63)"),
    ([f"run.seed={2**70}"], "run.seed: expected an integer in [0, 2**63)"),
    (["run.device=tpu"], "run.device: expected auto, cpu or cuda"),
    (["run.checkpoint_every=0"], "run.checkpoint_every: expected an integer in [1, 2**63)"),
    (["run.checkpoint_seconds=-1"], "run.checkpoint_seconds: expected at least 0"),
    (["run.checkpoint_seconds=.inf"], "run.checkpoint_seconds: expected a finite number"),
    (["optim.lrr=1"], "optim.lrr: unknown config key; valid keys of optim"),
    (["optim=1"], "optim: expected section.key, e.g. optim.lr"),
    (["colour.x=1"], "colour.x: unknown config section 'colour'"),
    (["optim.lr"], "optim.lr: expected section.key=value"),
    (["optim.lr=[0.1"], "optim.lr: the value '[0.1' does not parse: invalid YAML"),
    (["optim.lr=!!python/name:os.system"], "optim.lr: the value '!!python/name:os.system' does"),
]


@pytest.mark.parametrize("overrides,message", BAD_VALUES, ids=[" ".join(o) for o, _ in BAD_VALUES])
def test_bad_values_are_refused_naming_the_key(overrides: list[str], message: str) -> None:
    assert refused(overrides).startswith(message)


def test_the_edges_of_each_range_are_accepted() -> None:
    cfg = apply_overrides(
        TrainConfig(),
        [
            "optim.gamma=1",
            "optim.momentum=0",
            "optim.weight_decay=0",
            "optim.schedule=multistep",
            "optim.milestones=[1, 19]",
            "noise.rate=0.999",
            "run.seed=9223372036854775807",
            "run.checkpoint_seconds=0",
            "data.num_classes=2",
            "model.widths=[1]",
            "optim.lr=1e-4",  # YAML 1.1 reads this as a string; it is the number 1e-4
        ],
    )
    assert (cfg.optim.gamma, cfg.optim.milestones, cfg.run.seed) == (1.0, [1, 19], 2**63 - 1)
    assert cfg.optim.lr == 1e-4


def test_validate_checks_a_config_built_in_python() -> None:
    # TrainConfig(...) bypasses the YAML path; validate() applies the same rules and types.
    with pytest.raises(
        ValueError, match=r"^optim\.weight_decay: expected a finite number, got inf"
    ):
        TrainConfig(optim=OptimConfig(weight_decay=math.inf)).validate()
    with pytest.raises(ValueError, match=r"^optim\.lr: expected a number, got '0\.1x'"):
        TrainConfig(optim=OptimConfig(lr="0.1x")).validate()  # type: ignore[arg-type]
    with pytest.raises(ValueError, match=r"^optim\.gamma: expected a factor in \(0, 1\]"):
        TrainConfig(optim=OptimConfig(gamma=-1.0)).validate()


def test_every_preset_is_valid() -> None:
    for name in PRESETS:
        assert preset(name).to_dict() == TrainConfig.from_dict(preset(name).to_dict()).to_dict()


# --- YAML files: duplicate keys, malformed text, the file, line and column -----------------


@pytest.mark.parametrize(
    "text,message",
    [
        ("optim:\n  lr: 0.1\n  lr: 0.2\n", "cfg.yaml:3:3: optim.lr: duplicate key (first given at line 2)"),
        ("optim: {lr: 0.1, epochs: 3, lr: 2}\n", "cfg.yaml:1:29: optim.lr: duplicate key (first given at line 1)"),
        ("optim:\n  lr: 0.1\nrun: {}\noptim:\n  epochs: 3\n", "cfg.yaml:4:1: optim: duplicate key (first given at line 1)"),
        ("optim:\n  lr: [0.1\n", "cfg.yaml:3:1: invalid YAML: expected ',' or ']'"),
        ("optim:\n\tlr: 0.1\n", "cfg.yaml:2:1: invalid YAML: found character '\\t'"),
        ("optim:\n  lr: 0.1\x00\n", "cfg.yaml:2:10: invalid YAML: a NUL byte is not allowed"),
        ("run:\n  seed: \x07\n", "cfg.yaml:2:9: invalid YAML: the control character U+0007"),
        (
            "run:\n  seed: !!python/object/apply:os.system ['true']\n",
            "cfg.yaml:2:9: the tag '!!python/object/apply:os.system' is not allowed: a config",
        ),
        ("optim:\n  ? [a]\n  : 1\n", "cfg.yaml:2:5: invalid YAML: found unhashable key"),
        ("- data\n- optim\n", "cfg.yaml:1:1: expected a mapping of sections (data, noise, model"),
        ("42\n", "cfg.yaml:1:1: expected a mapping of sections"),
        ("optim: 0.1\n", "cfg.yaml:1:1: optim: expected a mapping of keys, got 0.1"),
        ("\n\noptim:\n  gamma: -1\n", "cfg.yaml:4:3: optim.gamma: expected a factor in (0, 1]"),
        ("run:\n  seed: 1180591620717411303424\n", "cfg.yaml:2:3: run.seed: expected an integer in [0, 2**63)"),
        ("track: {layers: &a [*a]}\n", "cfg.yaml:1:9: track.layers: expected a string, got [[...]]"),
        ("[" * 3000 + "]" * 3000, "cfg.yaml:1:1: invalid config: nested too deeply"),
        ("optim:\n  schedule: multistep\n", "cfg.yaml: optim.milestones: expected at least one"),
    ],
)  # fmt: skip
def test_malformed_yaml_gives_file_line_and_column(text: str, message: str) -> None:
    with pytest.raises(InputError) as info:
        TrainConfig.from_yaml(text, source="cfg.yaml")
    assert str(info.value).startswith(message)
    assert "\n" not in str(info.value)


def test_what_yaml_allows_is_still_read() -> None:
    # A merge key is not a duplicate; an empty file or section is the defaults.
    text = "optim: &o\n  lr: 0.2\n  epochs: 3\nrun:\nnoise: {rate: 0.1, convention: flip}\n"
    cfg = TrainConfig.from_yaml(text)
    assert (cfg.optim.lr, cfg.optim.epochs, cfg.run.seed) == (0.2, 3, 0)
    assert (cfg.noise.rate, cfg.noise.convention) == (0.1, "flip")
    merged = TrainConfig.from_yaml("optim: {<<: {lr: 0.3, epochs: 2}, lr: 0.4}\n")
    assert (merged.optim.lr, merged.optim.epochs) == (0.4, 2)
    assert TrainConfig.from_yaml("").to_dict() == TrainConfig().to_dict()


def test_config_files_that_are_not_utf8_or_not_files(tmp_path: Path) -> None:
    latin1 = tmp_path / "latin1.yaml"
    latin1.write_bytes("optim:\n  lr: 0.1  # café\n".encode("latin-1"))
    with pytest.raises(ValueError, match=rf"^{latin1}:2:17: not UTF-8 text \(byte 0xe9\)"):
        TrainConfig.from_file(latin1)
    with pytest.raises(ValueError, match=rf"^config: {tmp_path} is not a file$"):
        TrainConfig.from_file(tmp_path)
    with pytest.raises(ValueError, match=r"does not exist$"):
        TrainConfig.from_file(tmp_path / "nope.yaml")
    bom = tmp_path / "bom.yaml"
    bom.write_bytes(b"\xef\xbb\xbfoptim:\n  lr: 0.3\n")
    assert TrainConfig.from_file(bom).optim.lr == 0.3


# --- the command line ---------------------------------------------------------------------


class Captured(Exception):
    """Raised by the stand-in trainer: the CLI reached training with this config."""

    def __init__(self, cfg: TrainConfig, out: Path) -> None:
        super().__init__("captured")
        self.cfg, self.out = cfg, out


@pytest.fixture
def captured_train(monkeypatch: pytest.MonkeyPatch) -> None:
    def fake(cfg: TrainConfig, out: Path, **_: Any) -> None:
        raise Captured(cfg, out)

    monkeypatch.setattr(nclab.train.trainer, "train", fake)


@pytest.mark.usefixtures("captured_train")
def test_overrides_may_follow_options(tmp_path: Path) -> None:
    cfg_file = tmp_path / "cfg.yaml"
    cfg_file.write_text("optim:\n  epochs: 3\n")
    out = tmp_path / "D"
    argv = ["train", str(cfg_file), "--out", str(out), "optim.lr=0.01", "--device", "cpu", "noise.rate=0.3"]  # fmt: skip
    with pytest.raises(Captured) as info:
        main(argv)
    cfg = info.value.cfg
    assert (cfg.optim.epochs, cfg.optim.lr, cfg.noise.rate, cfg.run.device) == (3, 0.01, 0.3, "cpu")
    assert info.value.out == out
    with pytest.raises(Captured) as info:
        main(["train", "--preset", "smoke", "--out", str(out), "optim.epochs=2", "optim.lr=0.2"])
    assert (info.value.cfg.optim.epochs, info.value.cfg.optim.lr) == (2, 0.2)
    with pytest.raises(Captured) as info:
        main(["train", "--data-dir", "123", "--out", str(out)])  # a name YAML reads as a number
    assert info.value.cfg.data.data_dir == "123"


def test_cli_bad_config_is_one_line_and_exit_2(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    cfg_file = tmp_path / "cfg.yaml"
    out = tmp_path / "run"
    cases = {
        b"optim:\n  lr: 0.1\n  lr: 0.2\n": f"{cfg_file}:3:3: optim.lr: duplicate key",
        b"optim:\n  lr: \x00\n": f"{cfg_file}:2:7: invalid YAML: a NUL byte is not allowed",
        b"optim: !!python/object:os.system {}\n": f"{cfg_file}:1:8: the tag '!!python/object:os.",
        b"optim:\n  lr: 0.1 # \xff\n": f"{cfg_file}:2:13: not UTF-8 text (byte 0xff)",
        b"optim:\n  gamma: -1\n": f"{cfg_file}:2:3: optim.gamma: expected a factor in (0, 1]",
    }
    for content, message in cases.items():
        cfg_file.write_bytes(content)
        assert main(["train", str(cfg_file), "--out", str(out), "run.device=cpu"]) == 2
        err = capsys.readouterr().err
        assert err.startswith(f"nclab train: error: {message}") and err.count("\n") == 1
        assert not out.exists()
    assert main(["train", "--preset", "smoke", "--out", str(out), "optim.weight_decay=inf"]) == 2
    assert capsys.readouterr().err.startswith(
        "nclab train: error: optim.weight_decay: expected a finite number, got 'inf'"
    )
    assert not out.exists()


def test_train_help_states_the_noise_convention(capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit) as info:
        main(["train", "--help"])
    assert info.value.code == 0
    text = " ".join(capsys.readouterr().out.split())
    assert "redrawn uniformly over all K classes, so only η(K-1)/K of them actually change" in text
    assert "noise.convention=flip changes exactly η of them" in text


# --- metric options as track.* keys -------------------------------------------------------


def test_every_metric_option_is_a_track_key_with_its_default() -> None:
    track = {f.name: f for f in dataclasses.fields(TrackConfig)}
    for option in dataclasses.fields(MetricOptions):
        assert option.name in track, option.name
        assert track[option.name].default == option.default, option.name
    assert TrackConfig().metric_options() == MetricOptions()


def test_track_keys_reach_the_metric_options() -> None:
    cfg = apply_overrides(
        TrainConfig(),
        [
            "track.global_mean=class",
            "track.within_class=class_balanced",
            "track.center_weights=true",
            "track.rank_rtol=1e-6",
            "track.drop_empty_classes=true",
        ],
    )
    assert cfg.track.metric_options() == MetricOptions(
        global_mean="class",
        within_class="class_balanced",
        center_weights=True,
        rank_rtol=1e-6,
        drop_empty_classes=True,
    )


@pytest.mark.parametrize(
    "override,message",
    [
        ("track.global_mean=mean", "track.global_mean: expected one of ('sample', 'class'), got"),
        ("track.within_class=pool", "track.within_class: expected one of ('pooled', 'class_bal"),
        ("track.center_weights=2", "track.center_weights: expected true or false, got 2"),
        ("track.rank_rtol=1", "track.rank_rtol: expected a number in [0, 1), or null for"),
        ("track.rank_rtol=-1e-3", "track.rank_rtol: expected a number in [0, 1), or null"),
        ("track.rank_rtol=.nan", "track.rank_rtol: expected a finite number, got nan"),
        ("track.rank_rtol='0.1x'", "track.rank_rtol: expected a number, got '0.1x'"),
        ("track.drop_empty_classes=[]", "track.drop_empty_classes: expected true or false"),
    ],
)
def test_track_metric_keys_are_validated(override: str, message: str) -> None:
    assert refused([override]).startswith(message)


def test_fingerprints_of_runs_written_before_the_new_keys_are_unchanged() -> None:
    # The hashes the configuration gave before noise.convention and the track.* metric options
    # existed (commit 802d2a4): a run written then still resumes; a non-default value changes it.
    before = {
        "smoke": "1ac6c061e665a7ea",
        "cpu-mlp": "c210c9df723f92ed",
        "cpu-cnn": "ae1048fce64afee3",
        "gpu-resnet18-cifar10": "f96c64ce472ed80e",
    }
    assert TrainConfig().fingerprint() == "f29fd7604e1667f0"
    for name, fingerprint in before.items():
        assert preset(name).fingerprint() == fingerprint, name
    for override in ["noise.convention=flip", "track.rank_rtol=1e-6", "track.global_mean=class"]:
        assert apply_overrides(preset("smoke"), [override]).fingerprint() != before["smoke"]


# --- a run honours the keys (setup passes noise.convention to corrupt_labels, evaluation
# measures with cfg.track.metric_options()) -------------------------------------------------


def last_rows(tmp_path: Path, name: str, *overrides: str) -> dict[str, Any]:
    from nclab.train.table import read_metrics

    out = tmp_path / name
    args = ["train", "--preset", "smoke", "--out", str(out), "optim.epochs=1", *overrides]
    assert main(args) == 0
    row: dict[str, Any] = read_metrics(out / "metrics.csv")[-1]
    return row


def test_a_run_flips_exactly_eta_under_the_flip_convention(tmp_path: Path) -> None:
    # smoke: 4 classes x 40 training samples, eta = 0.2 -> exactly 32 of 160 flipped; the
    # redraw convention flips 30 of them with seed 0 (0.1875).
    assert last_rows(tmp_path, "redraw")["noise_rate"] == 30 / 160
    assert last_rows(tmp_path, "flip", "noise.convention=flip")["noise_rate"] == 32 / 160


def test_a_run_measures_with_the_track_metric_options(tmp_path: Path) -> None:
    # rank_rtol = 0.5 drops the small singular values of the class means from Σ_B^†: a different
    # NC1 from the default rule's on the same features (same seed, same weights).
    default = last_rows(tmp_path, "default")
    truncated = last_rows(tmp_path, "rtol", "track.rank_rtol=0.5")
    assert truncated["between_rank"] < default["between_rank"]
    assert truncated["nc1"] != default["nc1"]


def test_a_refused_override_leaves_the_config_as_it_was() -> None:
    cfg = preset("smoke")
    before = cfg.to_dict()
    with pytest.raises(ValueError, match=r"^optim\.gamma: expected a factor"):
        apply_overrides(cfg, ["optim.lr=0.5", "noise.rate=0.3", "optim.gamma=-1"])
    assert cfg.to_dict() == before
    assert apply_overrides(cfg, ["optim.lr=0.5"]) is cfg and cfg.optim.lr == 0.5


def test_an_unknown_preset_is_named() -> None:
    with pytest.raises(InputError, match=r"^--preset: expected one of \['cpu-cnn', 'cpu-mlp'"):
        preset("cpu-resnet")
