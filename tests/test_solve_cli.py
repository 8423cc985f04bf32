"""`nclab solve ufm|extended-ufm`: the JSON contract, exit codes, errors."""

from __future__ import annotations

import json

import pytest

from nclab.cli import main

UFM_ARGS = [
    "solve",
    "ufm",
    "--classes",
    "3",
    "--per-class",
    "4",
    "--dim",
    "5",
    "--lambda-w",
    "3e-3",
    "--lambda-h",
    "5e-3",
]


def run_json(args: list[str], capsys: pytest.CaptureFixture[str]) -> tuple[int, dict]:
    code = main([*args, "--json"])
    return code, json.loads(capsys.readouterr().out)


def test_ufm_json_contract(capsys: pytest.CaptureFixture[str]) -> None:
    code, out = run_json([*UFM_ARGS, "--loss", "ls", "--smoothing", "0.1", "--bias"], capsys)
    assert code == 0 and out["converged"]
    assert out["objective"] == pytest.approx(out["theory"]["objective"], rel=1e-10)
    assert out["gradient_norm"] <= 1e-8 and out["theory"]["geometry"] == "simplex_etf"
    for key in ("feature_norm_sq", "weight_norm_sq", "margin"):
        assert out["solution"][key] == pytest.approx(out["theory"][key], rel=1e-5)
    assert out["metrics"]["nc1"] < 1e-8 and "nc3_duality" in out["metrics"]


def test_ufm_without_a_theorem_reports_null_theory(capsys: pytest.CaptureFixture[str]) -> None:
    args = [
        "solve",
        "ufm",
        "--loss",
        "mse",
        "--classes",
        "4",
        "--per-class",
        "3",
        "--dim",
        "2",
        "--lambda-w",
        "1e-3",
        "--lambda-h",
        "1e-3",
    ]
    code, out = run_json(args, capsys)
    assert code == 0 and out["theory"] is None
    assert "dim: the MSE UFM theorem needs d >= 4" in out["theory_note"]


def test_unconverged_solve_exits_non_zero(capsys: pytest.CaptureFixture[str]) -> None:
    code, out = run_json([*UFM_ARGS, "--loss", "ce", "--method", "gd", "--max-iter", "3"], capsys)
    assert code == 3 and out["converged"] is False


def test_extended_json_contract(capsys: pytest.CaptureFixture[str]) -> None:
    args = [
        "solve",
        "extended-ufm",
        "--activation",
        "linear",
        "--classes",
        "3",
        "--per-class",
        "2",
        "--dim",
        "4",
        "--lambda-w2",
        "0.2",
        "--lambda-w1",
        "0.2",
        "--lambda-h1",
        "0.2",
        "--convention",
        "tirer",
    ]
    code, out = run_json(args, capsys)
    assert code == 0
    assert out["theory"]["delta"] == pytest.approx(0.2) and 0.5 < out["theory"]["p"] < 1
    assert out["objective"] == pytest.approx(out["theory"]["objective"], rel=1e-9)
    assert set(out["solution"]) == {"h1_norm_sq", "h2_norm_sq", "w1_fro_sq", "w2_norm_sq"}
    assert set(out["metrics"]) == {"H1", "H2"}
    for key in out["solution"]:
        assert out["solution"][key] == pytest.approx(out["theory"][key], rel=1e-4), key


def test_solve_errors_name_the_argument(capsys: pytest.CaptureFixture[str]) -> None:
    assert main([*UFM_ARGS[:-4], "--lambda-w", "-1", "--lambda-h", "1e-3", "--loss", "ce"]) == 2
    assert "--lambda-w: expected a non-negative number" in capsys.readouterr().err
    assert main([*UFM_ARGS, "--loss", "ls", "--smoothing", "1.5"]) == 2
    assert "smoothing: expected α in [0, 1)" in capsys.readouterr().err
    with pytest.raises(SystemExit):
        main([*UFM_ARGS, "--loss", "hinge"])
