"""Sweep specs: grid expansion against hand-written trial lists, trial naming, bad input, the
sweep directory's refusal of a changed spec, and the gathered tables of hand-written statuses.
Nothing here runs a trial."""

from __future__ import annotations

import csv
import json
import math
import sys
from pathlib import Path
from typing import Any

import pytest

from nclab.cli import main
from nclab.sweep.gather import gather
from nclab.sweep.spec import load_spec, parse_spec, trial_name
from nclab.sweep.store import SweepDir


def _cfg(trial: Any, key: str) -> Any:
    section, name = key.split(".")
    return trial.payload["config"][section][name]


def test_grid_zip_seeds_set_expand_to_the_product_in_order() -> None:
    spec = parse_spec(
        {
            "base": "smoke",
            "grid": {"noise.rate": [0.0, 0.2], "optim.momentum": [0.0, 0.9]},
            "zip": [{"loss.smoothing": [0.0, 0.1], "optim.lr": [0.05, 0.1]}],
            "seeds": [3, 4],
            "set": {"optim.epochs": 2, "loss.name": "ls"},
        }
    )
    expected = [
        {"noise.rate": r, "optim.momentum": m, "loss.smoothing": s, "optim.lr": lr, "seed": seed}
        for r in (0.0, 0.2)
        for m in (0.0, 0.9)
        for s, lr in ((0.0, 0.05), (0.1, 0.1))
        for seed in (3, 4)
    ]
    assert [t.key for t in spec.trials] == expected
    assert spec.key_columns == [
        "noise.rate",
        "optim.momentum",
        "loss.smoothing",
        "optim.lr",
        "seed",
    ]
    for trial, key in zip(spec.trials, expected, strict=True):
        assert trial.kind == "train"
        assert _cfg(trial, "noise.rate") == key["noise.rate"]
        assert _cfg(trial, "optim.momentum") == key["optim.momentum"]
        assert _cfg(trial, "loss.name") == "ls"
        assert _cfg(trial, "loss.smoothing") == key["loss.smoothing"]
        assert _cfg(trial, "optim.lr") == key["optim.lr"]
        assert _cfg(trial, "run.seed") == key["seed"]
        assert _cfg(trial, "optim.epochs") == 2
        assert _cfg(trial, "model.widths") == [64, 32]  # the smoke preset underneath
        assert _cfg(trial, "run.progress") is False
    assert len({t.name for t in spec.trials}) == len({t.fingerprint for t in spec.trials}) == 16


def test_solve_spec_builds_the_solve_argv() -> None:
    spec = parse_spec(
        {
            "base": "solve:ufm",
            "grid": {"lambda_h": [0.01, 0.1]},
            "seeds": [0],
            "set": {"loss": "mse", "classes": 4, "per-class": 5, "dim": 8, "lambda_w": 0.01},
        }
    )
    assert spec.kind == "solve"
    common = ["--loss", "mse", "--classes", "4", "--per-class", "5", "--dim", "8"]
    assert [t.payload["argv"] for t in spec.trials] == [
        ["ufm", *common, "--lambda-w", "0.01", "--lambda-h", "0.01", "--seed", "0"],
        ["ufm", *common, "--lambda-w", "0.01", "--lambda-h", "0.1", "--seed", "0"],
    ]
    with_bias = parse_spec({**_SOLVE, "set": {**_SOLVE["set"], "bias": True, "nonneg": False}})
    assert "--bias" in with_bias.trials[0].payload["argv"]
    assert "--nonneg" not in with_bias.trials[0].payload["argv"]


def test_trial_names_are_stable_readable_and_collision_free() -> None:
    # The hash part is fixed by the key's JSON: a name never changes between runs or machines.
    assert trial_name({"noise.rate": 0.2, "seed": 1}) == "noise.rate=0.2,seed=1-" + _digest(
        {"noise.rate": 0.2, "seed": 1}
    )
    assert trial_name({"noise.rate": 0.2, "seed": 1}) == "noise.rate=0.2,seed=1-4bb3f1b7"
    a, b = trial_name({"data.name": "a/b"}), trial_name({"data.name": "a_b"})
    assert a.startswith("data.name=a_b-") and b.startswith("data.name=a_b-") and a != b
    long = trial_name({"k": "x" * 500})
    assert len(long) == 80 + 9 and "/" not in long


def _digest(key: dict[str, Any]) -> str:
    import hashlib

    return hashlib.sha256(json.dumps(key, sort_keys=True).encode()).hexdigest()[:8]


_SOLVE: dict[str, Any] = {
    "base": "solve:ufm",
    "grid": {"lambda_h": [0.01, 0.1]},
    "set": {"loss": "mse", "classes": 4, "per_class": 5, "dim": 8, "lambda_w": 0.01},
}


@pytest.mark.parametrize(
    ("spec", "message"),
    [
        ([1, 2], "spec: expected a mapping"),
        ({"base": "smoke", "grid": {"x": [1]}, "extra": 1}, "spec: unknown keys ['extra']"),
        ({"base": "smoke", "grid": {}}, "grid: empty"),
        ({"base": "smoke", "grid": {"noise.rate": []}}, "grid.noise.rate: expected a non-empty"),
        ({"base": "smoke"}, "the spec defines no trials"),
        (
            {"base": "smoke", "grid": {"noise.ratio": [0.1]}},
            "grid: noise.ratio: unknown config key; valid keys of noise: [",
        ),
        (
            {"base": "smoke", "grid": {"optim.epochs": ["many"]}},
            "grid: optim.epochs: expected an integer",
        ),
        (
            {"base": "smoke", "grid": {"noise.rate": [1.5]}},
            "noise.rate: expected a value in [0, 1)",
        ),
        ({"base": "smoke", "seeds": [0, "1"]}, "seeds: expected a non-empty list of integers"),
        ({"base": "smoke", "grid": {"noise.rate": [0.1, 0.1]}}, "duplicate trials"),
        ({"base": "smoke", "seeds": [0, 0]}, "duplicate trials"),
        (
            {"base": "smoke", "grid": {"optim.lr": [0.1]}, "set": {"optim.lr": 0.2}},
            "a key is given more than once (grid.optim.lr and set.optim.lr)",
        ),
        (
            {"base": "smoke", "grid": {"run.seed": [1]}, "seeds": [0]},
            "grid.run.seed and seeds",
        ),
        (
            {"base": "smoke", "zip": [{"optim.lr": [0.1, 0.2], "noise.rate": [0.1]}]},
            "zip[0]: lists stepped together need equal lengths",
        ),
        ({"base": "nope", "seeds": [0]}, "base: expected a preset"),
        ({"base": "solve:mlp", "seeds": [0]}, "base: expected solve:<model>"),
        (
            {**_SOLVE, "grid": {"lambda_x": [1.0]}},
            "grid.lambda_x: unknown key of solve:ufm; valid keys:",
        ),
        ({**_SOLVE, "grid": {"lambda_h": ["big"]}}, "grid.lambda_h: expected float, got 'big'"),
        (
            {**_SOLVE, "grid": {"loss": ["l1"]}, "set": {**_SOLVE["set"], "loss": None}},
            "a key is given more than once (grid.loss and set.loss)",
        ),
        (
            {"base": "solve:ufm", "grid": {"loss": ["l1"]}, "set": {"classes": 4}},
            "grid.loss: expected one of",
        ),
        ({**_SOLVE, "set": {"loss": "mse"}}, "the following arguments are required"),
        (
            {"base": "smoke", "seeds": [0], "resources": {"cpus": 0}},
            "resources.cpus: expected a positive",
        ),
        ({"base": "smoke", "seeds": [0], "select": {"mode": "max"}}, "select.column: expected"),
    ],
)
def test_bad_specs_fail_naming_the_key(spec: Any, message: str) -> None:
    with pytest.raises(ValueError) as err:
        parse_spec(spec)
    assert message in str(err.value)


def _write(path: Path, spec: dict[str, Any]) -> Path:
    import yaml

    path.write_text(yaml.safe_dump(spec))
    return path


def test_cli_bad_input_is_one_line_exit_2_and_writes_nothing(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    spec = _write(tmp_path / "s.yaml", _SOLVE)
    out = tmp_path / "out"
    cases = [
        (
            [str(spec), "--max-parallel", "0"],
            "nclab sweep: error: --max-parallel: expected at least 1, got 0",
        ),
        ([str(tmp_path / "missing.yaml")], "nclab sweep: error: SPEC: "),
    ]
    _write(tmp_path / "bad.yaml", {"base": "smoke", "grid": {"noise.ratio": [0.1]}})
    cases.append(([str(tmp_path / "bad.yaml")], "nclab sweep: error: grid: noise.ratio: unknown"))
    (tmp_path / "list.yaml").write_text("- 1\n- 2\n")
    cases.append(([str(tmp_path / "list.yaml")], "nclab sweep: error: spec: expected a mapping"))
    # Ray missing: an import that fails like an uninstalled package.
    monkeypatch.setitem(sys.modules, "ray", None)
    cases.append(
        (
            [str(spec), "--executor", "ray"],
            "nclab sweep: error: --executor ray: Ray is not installed; install it with: "
            "pip install 'nclab[ray]'",
        )
    )
    for argv, message in cases:
        assert main(["sweep", *argv, "--out", str(out)]) == 2
        err = capsys.readouterr().err
        assert err.strip() == err.strip().splitlines()[0]  # one line
        assert err.startswith(message), err
        assert not out.exists()


def test_dry_run_lists_trials_and_writes_nothing(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    spec = _write(tmp_path / "s.yaml", {**_SOLVE, "seeds": [0, 1]})
    out = tmp_path / "out"
    assert main(["sweep", str(spec), "--out", str(out), "--dry-run"]) == 0
    lines = capsys.readouterr().out.splitlines()
    names = [trial_name({"lambda_h": h, "seed": s}) for h in (0.01, 0.1) for s in (0, 1)]
    assert lines[:-1] == [
        f"pending  {out / 'trials' / n}  {json.dumps({'lambda_h': h, 'seed': s})}"
        for n, (h, s) in zip(names, [(h, s) for h in (0.01, 0.1) for s in (0, 1)], strict=True)
    ]
    assert lines[-1] == f"4 trials (solve) in {out}"
    assert not out.exists()


def test_changed_spec_is_refused_with_a_diff_extend_accepts_added_values(tmp_path: Path) -> None:
    sd = SweepDir(tmp_path / "sw")
    first = parse_spec(_SOLVE)
    sd.check(first, extend=False)
    sd.record(first)
    before = {p: p.read_bytes() for p in sd.root.rglob("*") if p.is_file()}
    assert sorted(p.name for p in before) == [
        "spec.yaml",
        "status.json",
        "status.json",
        "trials.json",
    ]
    sd.check(parse_spec(_SOLVE), extend=False)  # the same spec: fine

    more = {**_SOLVE, "grid": {"lambda_h": [0.01, 0.1, 1.0]}}
    with pytest.raises(ValueError) as err:
        sd.check(parse_spec(more), extend=False)
    assert "grid.lambda_h: [0.01, 0.1] -> [0.01, 0.1, 1.0]" in str(err.value)
    assert "pass --extend" in str(err.value)
    sd.check(parse_spec(more), extend=True)

    changed = {**_SOLVE, "set": {**_SOLVE["set"], "lambda_w": 0.02}}
    for extend in (False, True):
        with pytest.raises(
            ValueError,
            match=r"set.lambda_w: 0.01 -> 0.02\); 0 recorded trial\(s\) would be dropped, 2 changed",
        ):
            sd.check(parse_spec(changed), extend=extend)
    fewer = {**_SOLVE, "grid": {"lambda_h": [0.01]}}
    with pytest.raises(ValueError, match=r"1 recorded trial\(s\) would be dropped"):
        sd.check(parse_spec(fewer), extend=True)
    assert {p: p.read_bytes() for p in sd.root.rglob("*") if p.is_file()} == before


def test_gathered_tables_of_hand_written_statuses(tmp_path: Path) -> None:
    spec = parse_spec({**_SOLVE, "seeds": [0, 1, 2], "select": {"column": "acc", "mode": "max"}})
    sd = SweepDir(tmp_path)
    sd.record(spec)
    # Per trial two training-like rows (epochs 1 and 2, one layer); trial (0.1, seed 2) failed.
    values = {}
    for i, trial in enumerate(spec.trials):
        if trial.key == {"lambda_h": 0.1, "seed": 2}:
            sd.write_status(trial, state="failed", error="boom")
            continue
        rows = [
            {"epoch": e, "split": "train", "layer": "penultimate", "acc": 0.1 * i + e, "note": "x"}
            for e in (2, 1)  # the best row (max acc) is epoch 2, the last one epoch 1
        ]
        values[trial.name] = 0.1 * i + 2
        sd.write_status(trial, state="done", rows=rows)
    tables = gather(sd.root)
    assert (tables.done, tables.trials, tables.rows) == (5, 6, 10)
    with tables.results.open() as f:
        results = list(csv.DictReader(f))
    assert list(results[0])[:3] == ["trial", "lambda_h", "seed"]
    assert [r["epoch"] for r in results] == ["2", "1"] * 5
    with tables.final.open() as f:
        final = list(csv.DictReader(f))
    assert [(r["trial"], r["epoch"], float(r["acc"])) for r in final] == [
        (n, "2", v) for n, v in values.items()
    ]
    with tables.summary.open() as f:
        summary = list(csv.DictReader(f))
    assert list(summary[0])[:4] == ["lambda_h", "split", "layer", "trials"]
    low = [values[n] for n in values if "lambda_h=0.01," in n]
    assert [r["trials"] for r in summary] == ["3", "2"]
    mean = sum(low) / 3
    assert float(summary[0]["acc_mean"]) == pytest.approx(mean, rel=1e-15)
    std = math.sqrt(sum((v - mean) ** 2 for v in low) / 2)
    assert float(summary[0]["acc_std"]) == pytest.approx(std, rel=1e-12)
    assert std == pytest.approx(0.1, rel=1e-12)  # seeds 0, 1, 2 differ by 0.1
    assert summary[0]["note"] == "x"


def test_a_config_file_base_is_read_relative_to_the_spec(tmp_path: Path) -> None:
    (tmp_path / "cfg.yaml").write_text("model: {name: mlp, widths: [16]}\noptim: {epochs: 3}\n")
    spec = _write(tmp_path / "s.yaml", {"base": "cfg.yaml", "grid": {"optim.lr": [0.1, 0.2]}})
    trials = load_spec(spec).trials
    assert [_cfg(t, "model.widths") for t in trials] == [[16], [16]]
    assert [(_cfg(t, "optim.epochs"), _cfg(t, "optim.lr")) for t in trials] == [(3, 0.1), (3, 0.2)]
    (tmp_path / "cfg.yaml").write_text("optim: {epochs: zero}\n")
    with pytest.raises(
        ValueError, match=r"^base: .*cfg.yaml:1:9: optim.epochs: expected an integer"
    ):
        load_spec(spec)


def test_a_spec_file_with_a_key_given_twice_is_refused_with_its_line(tmp_path: Path) -> None:
    spec = tmp_path / "s.yaml"
    spec.write_text("base: smoke\ngrid:\n  optim.lr: [0.1]\n  optim.lr: [0.2]\n")
    with pytest.raises(
        ValueError, match=r"s.yaml:4:3: grid.optim.lr: duplicate key \(first given at line 3\)"
    ):
        load_spec(spec)
    spec.write_bytes(b"base: smoke\ngrid: {optim.lr: [0.1]}\n# \xff\n")
    with pytest.raises(
        ValueError, match=r"s.yaml:3:3: not UTF-8 text \(byte 0xff\); save the SPEC"
    ):
        load_spec(spec)


def test_every_nclab_solve_model_can_be_a_sweep_base() -> None:
    from nclab.models.cli import solve_models, solve_to_dict

    assert set(solve_models()) >= {"ufm", "extended-ufm", "perturbation", "md"}
    for model in solve_models():  # recognized: the model's own parser asks for its flags
        with pytest.raises(ValueError, match=f"^set: solve:{model}: .*arguments are required"):
            parse_spec({"base": f"solve:{model}", "grid": {"seed": [0, 1]}})
    with pytest.raises(ValueError, match=r"^base: expected solve:<model> with a model in"):
        parse_spec({"base": "solve:nope", "grid": {"seed": [0, 1]}})
    out = solve_to_dict(["md", "--classes", "2", "--per-class", "5", "--noise", "0.2",
                         "--expressivity", "0.5", "--loss", "ce", "--lambda-w", "0.01",
                         "--lambda-h", "0.01"])  # fmt: skip
    assert out["model"] == "md" and out["converged"] and out["non_finite"] == []
