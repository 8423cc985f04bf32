"""nclab reproduce: the registry, the directory rules, bad input, and each reproduction's smoke
preset (numbers checked against theory where theory gives them)."""

from __future__ import annotations

import csv
import json
from pathlib import Path
from typing import Any

import pytest
from test_experiments_helpers import inline_sweeps

import nclab.experiments.registry as registry
from nclab.cli import main
from nclab.experiments.registry import Reproduction, ReproductionResult, RunOptions


def _fake(calls: list[str], datasets: dict[str, tuple[str, ...]] | None = None) -> Reproduction:
    def run(out: Path, preset: str, options: RunOptions) -> ReproductionResult:
        calls.append(f"{preset} resume={options.resume}")
        (out / "table.csv").write_text("x,y\n1,2\n")
        return ReproductionResult(tables=[out / "table.csv"], notes=["a note"])

    return Reproduction(
        name="fake",
        paper="P",
        reproduces="Figure 9",
        prediction="nothing",
        presets=("smoke", "cpu"),
        runtime={"smoke": "measured: 1 s", "cpu": "measured: 2 s"},
        run=run,
        datasets=datasets or {},
    )


@pytest.fixture
def fake(monkeypatch: pytest.MonkeyPatch) -> list[str]:
    calls: list[str] = []
    rep = _fake(calls, {"cpu": ("cifar10",)})
    monkeypatch.setattr(registry, "reproductions", lambda: {"fake": rep})
    return calls


def _err(capsys: pytest.CaptureFixture[str]) -> str:
    return capsys.readouterr().err.strip()


def test_list_shows_every_reproduction_with_its_presets(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["reproduce", "--list"]) == 0
    out = capsys.readouterr().out
    for name in ("eufm-mse-geometry", "md-label-noise", "pert-weight-decay"):
        rep = registry.get(name)
        assert f"{name}\n  paper:      {rep.paper}" in out
        for preset in rep.presets:
            assert f"{preset + ':':<11} {rep.runtime[preset]}" in out
        assert "estimated" in rep.runtime["gpu"] and "measured" in rep.runtime["cpu"]


def test_unknown_name_and_missing_preset_are_one_line_errors(
    fake: list[str], tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    assert main(["reproduce", "nope", "--out", str(tmp_path / "a")]) == 2
    assert _err(capsys) == "nclab reproduce: error: NAME: no reproduction 'nope'; valid: fake"
    assert main(["reproduce", "fake", "--preset", "gpu", "--out", str(tmp_path / "a")]) == 2
    assert _err(capsys) == (
        "nclab reproduce: error: --preset: fake has presets ['smoke', 'cpu'], not 'gpu'"
    )
    assert main(["reproduce"]) == 2
    assert "NAME: give a reproduction's name, or --list" in _err(capsys)
    assert not (tmp_path / "a").exists() and fake == []


def test_directory_rules_refuse_other_experiments_and_resume_the_same(
    fake: list[str], tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    out = tmp_path / "r"
    assert main(["reproduce", "fake", "--preset", "smoke", "--out", str(out)]) == 0
    assert fake == ["smoke resume=False"]
    manifest = json.loads((out / "reproduction.json").read_text())
    assert manifest["name"] == "fake" and manifest["tables"] == ["table.csv"]
    assert (out / "report.html").is_file()
    before = (out / "reproduction.json").read_text()
    # The same again without --resume, another preset, a foreign directory: refused, untouched.
    assert main(["reproduce", "fake", "--preset", "smoke", "--out", str(out)]) == 2
    assert "already holds 'fake' (preset 'smoke'); pass --resume" in _err(capsys)
    assert main(["reproduce", "fake", "--preset", "cpu", "--out", str(out), "--resume"]) == 2
    assert "holds the reproduction 'fake' (preset 'smoke'), not 'fake' (preset 'cpu')" in _err(
        capsys
    )
    other = tmp_path / "other"
    other.mkdir()
    (other / "notes.txt").write_text("mine")
    assert main(["reproduce", "fake", "--preset", "smoke", "--out", str(other)]) == 2
    assert "holds files that are not a reproduction" in _err(capsys)
    assert (other / "notes.txt").read_text() == "mine" and len(list(other.iterdir())) == 1
    assert (out / "reproduction.json").read_text() == before and len(fake) == 1
    assert main(["reproduce", "fake", "--preset", "smoke", "--out", str(out), "--resume"]) == 0
    assert fake == ["smoke resume=False", "smoke resume=True"]


def test_missing_dataset_names_the_folder_and_how_to_get_it(
    fake: list[str],
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
) -> None:
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "cache"))
    monkeypatch.delenv("NCLAB_DATA", raising=False)
    out = tmp_path / "r"
    data = tmp_path / "data"
    assert (
        main(["reproduce", "fake", "--preset", "cpu", "--out", str(out), "--data-dir", str(data)])
        == 2
    )
    err = _err(capsys)
    assert err.startswith("nclab reproduce: error: cifar10: not found (looked in ")
    assert str(data) in err and "cifar-10-batches-py" in err and "--download" in err
    assert not out.exists() and fake == []


def _csv(path: Path) -> list[dict[str, Any]]:
    with path.open(newline="") as handle:
        return list(csv.DictReader(handle))


def _check_outputs(out: Path, stem: str) -> None:
    assert (out / "figures" / f"{stem}.png").stat().st_size > 10_000
    assert (out / "figures" / f"{stem}.pdf").stat().st_size > 1_000
    html = (out / "report.html").read_text()
    assert html.count("data:image/png;base64,") == 1
    assert (out / "experiment.json").is_file()


def test_eufm_mse_geometry_smoke_matches_the_closed_forms(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    inline_sweeps(monkeypatch)
    out = tmp_path / "e"
    assert main(["reproduce", "eufm-mse-geometry", "--preset", "smoke", "--out", str(out)]) == 0
    _check_outputs(out, "eufm_mse_geometry")
    rows = _csv(out / "summary.csv")
    assert len(rows) == 9  # 3 models x 3 λ
    for row in rows:
        # L-BFGS to a gradient norm of 1e-6 on a smooth problem: the objective within 1e-6.
        assert float(row["objective"]) == pytest.approx(
            float(row["theory_objective"]), rel=1e-6, abs=1e-9
        )
        lam = float(row["lambda"])
        if lam >= 1.0:
            assert row["theory_geometry"] == "zero"
        elif row["model"] == "mse, bias":
            assert row["theory_geometry"] == "simplex_etf"
            assert float(row["nc2_etf_means"]) < 1e-3 < 0.3 < float(row["nc2_of_means"])
        else:
            assert row["theory_geometry"] == "orthogonal_frame"
            assert float(row["nc2_of_means"]) < 1e-3
    no_bias = {float(r["lambda"]): r for r in rows if r["model"] == "mse, no bias"}
    # The closed form of the mean squared feature norm without bias: 1 - λ.
    assert float(no_bias[0.3]["feature_norm_sq"]) == pytest.approx(0.7, rel=1e-4)


def test_md_label_noise_and_pert_weight_decay_smoke(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    import nclab.experiments.md_label_noise as md_label_noise

    inline_sweeps(monkeypatch)
    figures: list[Any] = []
    save = md_label_noise.save_figure

    def keep(fig: Any, *args: Any, **kwargs: Any) -> Path:
        figures.append(fig)
        return save(fig, *args, **kwargs)

    monkeypatch.setattr(md_label_noise, "save_figure", keep)
    md = tmp_path / "md"
    assert main(["reproduce", "md-label-noise", "--preset", "smoke", "--out", str(md)]) == 0
    _check_outputs(md, "md_label_noise")
    rows = _csv(md / "summary.csv")
    assert {(r["loss"], float(r["noise_rate"])) for r in rows} == {
        (loss, eta) for loss in ("ce", "ls 0.1") for eta in (0.0, 0.2, 0.4)
    }
    # The M-D model: λ̂ = D / M of the η = 0.2 run's final row (one seed), its curve drawn on the
    # dilation-vs-memorization panel with that λ̂ in its label, and η = 0.4 predicted.
    final = {
        (r["loss.name"], float(r["noise.rate"])): r
        for r in _csv(md / "sweep" / "results.csv")
        if r["split"] == "train" and int(r["epoch"]) == 3
    }
    labels = [line.get_label() for line in figures[0].axes[0].get_lines()]
    for loss, name, key in (("ce", "ce", "ce"), ("ls 0.1", "ls", "ls α=0.1")):
        at = {float(r["noise_rate"]): r for r in rows if r["loss"] == loss}
        fit = final[(name, 0.2)]
        lam = float(fit["dilation_mean_scaled"]) / float(fit["memorization_scaled"])
        assert float(at[0.2]["model_lambda"]) == pytest.approx(lam, rel=1e-9)
        assert at[0.2]["model_fitted"] == "True" and at[0.4]["model_fitted"] == "False"
        assert f"M-D model, {key} (λ̂ = {lam:.2f})" in labels
        predicted = float(at[0.4]["model_memorization_scaled"])
        assert float(at[0.4]["model_memorization_error"]) == pytest.approx(
            abs(predicted - float(at[0.4]["memorization_scaled_mean"])), rel=1e-9
        )
    notes = json.loads((md / "reproduction.json").read_text())["notes"]
    assert any(n.startswith("K = 4, the M-D model fitted at η = 0.2: CE: λ̂ = ") for n in notes)
    for r in rows:
        assert 0.0 <= float(r["test_acc_mean"]) <= 1.0 and float(r["clean_nc1_mean"]) > 0
        if float(r["noise_rate"]) > 0:
            assert float(r["memorization_scaled_mean"]) > 0
        else:
            assert r["memorization_scaled_mean"] in ("", "nan")
    pert = tmp_path / "pert"
    assert main(["reproduce", "pert-weight-decay", "--preset", "smoke", "--out", str(pert)]) == 0
    _check_outputs(pert, "pert_weight_decay")
    rows = _csv(pert / "summary.csv")
    assert len(rows) == 10
    wd = {
        (r["loss"], r["variant"]): (float(r["weight_decay"]), float(r["classifier_weight_decay"]))
        for r in rows
    }
    assert wd[("mse", "features ×0")] == (0.0, 5e-4)
    assert wd[("ce", "classifier ×2")] == (5e-4, 1e-3)
    assert wd[("ce", "baseline")] == (5e-4, 5e-4)
    # the paper's recipes: MSE without a classifier bias, CE with one
    results = _csv(pert / "sweep" / "results.csv")
    assert {(r["loss.name"], r["model.bias"]) for r in results} == {
        ("mse", "false"),
        ("ce", "true"),
    }


def test_eufm_practical_smoke_runs_the_no_bias_arm_and_measures_both_layers_per_epoch(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    import torch
    import yaml

    inline_sweeps(monkeypatch)
    out = tmp_path / "ep"
    assert main(["reproduce", "eufm-practical", "--preset", "smoke", "--out", str(out)]) == 0
    _check_outputs(out, "eufm_practical")
    rows = _csv(out / "summary.csv")
    assert {(r["arm"], r["layer"]) for r in rows} == {
        (arm, layer)
        for arm in ("mse, no bias", "mse, bias", "ce, bias")
        for layer in ("body.6", "penultimate")
    }
    results = _csv(out / "sweep" / "results.csv")
    assert {(r["loss.name"], r["model.bias"], float(r["lr"])) for r in results} == {
        ("mse", "false", 0.01),
        ("mse", "true", 0.01),
        ("ce", "true", 0.05),
    }
    assert {int(r["epoch"]) for r in results} == {1, 2}  # every epoch measured
    # The trainer's runs themselves: the config each trial ran and the classifier it saved.
    seen = set()
    for trial in (out / "sweep" / "trials").iterdir():
        config = yaml.safe_load((trial / "config.yaml").read_text())
        keys = set(torch.load(trial / "model.pt", map_location="cpu", weights_only=True))
        bias = config["model"]["bias"]
        assert ("fc.bias" in keys) is bias and "fc.weight" in keys
        seen.add((config["loss"]["name"], bias))
    assert seen == {("mse", False), ("mse", True), ("ce", True)}
    manifest = json.loads((out / "reproduction.json").read_text())
    assert manifest["notes"][0].startswith("H2, first → last epoch: MSE, NO BIAS:")
    # Two epochs on 40 images cannot reach the terminal phase: the note says the prediction
    # does not show rather than claiming it.
    assert "does not show at this preset's scale (smoke)" in manifest["notes"][1]


def test_eufm_practical_every_preset_runs_the_no_bias_mse_arm(tmp_path: Path) -> None:
    from nclab.experiments.eufm_practical import REPRODUCTION, sweep_spec
    from nclab.sweep import parse_spec

    assert REPRODUCTION.presets == ("smoke", "cpu", "gpu")
    for preset in REPRODUCTION.presets:
        options = RunOptions(data_dir="/data") if preset == "gpu" else RunOptions()
        trials = parse_spec(sweep_spec(preset, options), tmp_path / preset).trials
        configs = [t.payload["config"] for t in trials]
        arms = {(c["loss"]["name"], c["model"]["bias"], c["optim"]["lr"]) for c in configs}
        assert arms == {("mse", False, 0.01), ("mse", True, 0.01), ("ce", True, 0.05)}
        assert len(configs) == 3 * {"smoke": 1, "cpu": 2, "gpu": 3}[preset]
        assert all(c["track"]["layers"] == ["body.6", "penultimate"] for c in configs)
    assert {(c["data"]["name"], c["data"]["data_dir"], c["run"]["device"]) for c in configs} == {
        ("fashion-mnist", "/data", "cuda")
    }
    assert REPRODUCTION.datasets == {"gpu": ("fashion-mnist",)}


def test_a_reproduction_directory_has_one_writer(tmp_path: Path) -> None:
    """A second `nclab reproduce` into a directory in use fails at once naming the holder."""
    import os

    from nclab.train.rundir import RunLock

    out = tmp_path / "r"
    out.mkdir()
    holder = RunLock(out)
    holder.acquire()  # as a running reproduction holds it
    try:
        with pytest.raises(ValueError, match=rf"in use by another run \(PID {os.getpid()}"):
            from nclab.experiments.reproduce import run_reproduction

            run_reproduction("pert-spectrum", "smoke", out)
        assert sorted(p.name for p in out.iterdir()) == [".lock"]  # nothing else written
    finally:
        holder.release()
