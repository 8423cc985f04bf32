"""`nclab solve md`: the JSON contract, exit codes and one-line errors naming the flag."""

from __future__ import annotations

import json

import pytest

from nclab.cli import main

ARGS = [
    "solve",
    "md",
    "--classes",
    "2",
    "--per-class",
    "4",
    "--noise",
    "0.25",
    "--expressivity",
    "0.5",
    "--loss",
    "ce",
    "--lambda-w",
    "1e-2",
    "--lambda-h",
    "1e-2",
]


def run_json(args: list[str], capsys: pytest.CaptureFixture[str]) -> tuple[int, dict]:
    code = main([*args, "--json"])
    return code, json.loads(capsys.readouterr().out)


def test_reduced_route_json(capsys: pytest.CaptureFixture[str]) -> None:
    code, out = run_json(ARGS, capsys)
    assert code == 0 and out["converged"] and out["route"] == "reduced"
    assert out["theory"] is None and out["non_finite"] == []
    # the constraint binds: D = λ M; the scaled forms divide by the same clean-mean distance
    assert out["dilation"] == pytest.approx(0.5 * out["memorization"], rel=1e-10)
    assert out["dilation_scaled"] / out["dilation"] == pytest.approx(
        out["memorization_scaled"] / out["memorization"], rel=1e-12
    )
    assert out["per_class"]["memorization"] == pytest.approx([out["memorization"]] * 2, rel=1e-8)
    # K = 2: the test error is the exact normal tail
    assert 0 < out["test_error"] < 0.5 and out["test_error_stderr"] == 0.0
    # the dilation lies in the nuisance plane, orthogonal to the class means' span: NC1 (which
    # projects onto that span) is 0, while tr Σ_W of the clean features is D² (equal radii)
    assert out["metrics"]["nc1"] == pytest.approx(0.0, abs=1e-12) and out["loss"] == "ce"
    assert out["metrics"]["within_class_trace"] == pytest.approx(out["dilation"] ** 2, rel=1e-8)


def test_features_route_reports_the_reduced_optimum(capsys: pytest.CaptureFixture[str]) -> None:
    code, out = run_json([*ARGS, "--route", "features", "--restarts", "1"], capsys)
    assert code == 0 and out["converged"]
    assert out["objective"] == pytest.approx(out["theory"]["objective"], rel=1e-6)
    assert out["memorization"] == pytest.approx(out["theory"]["memorization"], abs=1e-4)


def test_not_converged_exits_3_with_valid_json(capsys: pytest.CaptureFixture[str]) -> None:
    code, out = run_json(
        [*ARGS, "--route", "features", "--restarts", "1", "--max-iter", "1"], capsys
    )
    assert code == 3 and out["converged"] is False


@pytest.mark.parametrize(
    ("change", "flag"),
    [
        (["--noise", "0.3"], "--noise: η·n = 0.3·4"),
        (["--expressivity", "-1"], "--expressivity: expected λ >= 0"),
        (["--loss", "ls", "--smoothing", "1.5"], "--smoothing: expected α in [0, 1)"),
        (["--dim", "1"], "--dim: the M-D model needs d >= K = 2"),
        (["--lambda-w", "0"], "--lambda-w: must be > 0"),
        (["--restarts", "0", "--route", "features"], "--restarts: expected an integer >= 1"),
    ],
)
def test_bad_input_is_one_line_naming_the_flag(
    change: list[str], flag: str, capsys: pytest.CaptureFixture[str]
) -> None:
    args = list(ARGS)
    for name, value in zip(change[::2], change[1::2], strict=True):
        if name in args:
            args[args.index(name) + 1] = value
        else:
            args += [name, value]
    assert main(args) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and err[0].startswith(f"nclab solve: error: {flag}"), err
