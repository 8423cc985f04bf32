"""``nclab solve perturbation``: the JSON contract, exit codes and one-line errors."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

from nclab.cli import main
from nclab.models.perturbation_cli import perturbation_to_dict

BASE = [
    "--classes",
    "3",
    "--per-class",
    "3",
    "--dim",
    "5",
    "--lambda-w",
    "0.7",
    "--lambda-h",
    "0.3",
]


def test_spectrum_of_a_collapsed_h0_matches_the_closed_forms() -> None:
    out = perturbation_to_dict([*BASE, "--beta", "5", "--spectrum"])
    assert out["converged"] and out["gradient_norm"] < 1e-15
    assert out["distance_to_h0"] == 0.0  # Corollary 2.2: H0 is the minimizer
    assert out["metrics"]["nc1"] < 1e-20 and out["metrics_h0"]["nc1"] < 1e-20
    spec, exact, theory = out["spectrum"], out["spectrum_exact"], out["theory"]
    assert set(spec) == set(exact) == {"intra_max", "intra_min", "inter_max", "intra_values"}
    assert len(spec["intra_values"]) == 15 == len(out["theory_values"])
    assert np.abs(np.array(spec["intra_values"]) - out["theory_values"]).max() < 1e-12
    assert spec["intra_values"] == sorted(spec["intra_values"], reverse=True)
    for key in ("intra_max", "intra_min", "inter_max"):
        assert spec[key] == pytest.approx(theory[key], abs=1e-9)
    assert exact["inter_max"] == pytest.approx(out["theory_complete"]["inter_max_exact"], abs=1e-9)
    assert out["warnings"] == [] and out["non_finite"] == []
    quick = perturbation_to_dict([*BASE, "--beta", "5", "--spectrum", "--extremes-only"])
    assert quick["spectrum"]["intra_values"] is None
    assert quick["spectrum"]["intra_min"] == pytest.approx(theory["intra_min"], abs=1e-9)


def test_noise_and_central_path() -> None:
    out = perturbation_to_dict(
        [*BASE, "--beta", "20", "--noise", "0.1", "--seed", "4", "--central-path", "3"]
    )
    assert out["converged"] and out["gradient_norm"] <= 1e-10
    # The minimizer is closer to collapse than H0 (Corollary 3.2's quantity).
    assert out["metrics"]["nc1_trace_ratio"] < out["metrics_h0"]["nc1_trace_ratio"]
    path = out["path"]
    assert set(path) >= {"t", "trace_ratio", "exp_trace_w", "exp_trace_b", "nc1", "nc2_etf_means"}
    assert len(path["t"]) == len(path["trace_ratio"]) == 51 and path["t"][-1] == 3.0
    assert np.all(np.diff(path["trace_ratio"]) < 0)


def run(capsys: pytest.CaptureFixture[str], *args: str) -> tuple[int, str, str]:
    code = main(["solve", "perturbation", *args])
    captured = capsys.readouterr()
    return code, captured.out, captured.err


def test_exit_codes_and_one_line_errors(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    code, _, err = run(capsys, *BASE, "--beta", "0")
    assert code == 2 and err.startswith("nclab solve: error: --beta: must be > 0")
    assert len(err.strip().splitlines()) == 1
    code, _, err = run(capsys, *BASE[:4], "--dim", "2", *BASE[6:], "--beta", "5")
    assert code == 2 and "error: --dim: a collapsed H0" in err
    missing = tmp_path / "h.npz"
    np.savez(missing, features=np.zeros((5, 9)))
    code, _, err = run(capsys, *BASE, "--beta", "5", "--h0", str(missing))
    assert code == 2 and "error: --h0: " in err and "holds no array named 'h0'" in err
    shaped = tmp_path / "s.npz"
    np.savez(shaped, h0=np.zeros((9, 5)))
    code, _, err = run(capsys, *BASE, "--beta", "5", "--h0", str(shaped))
    assert code == 2 and "error: --h0: expected shape (d, K n) = (5, 9)" in err
    nan = tmp_path / "n.npz"
    np.savez(nan, h0=np.full((5, 9), np.nan))
    code, _, err = run(capsys, *BASE, "--beta", "5", "--h0", str(nan))
    assert code == 2 and "error: --h0: 45 entries are not finite" in err
    code, _, err = run(capsys, *BASE, "--beta", "5", "--h0", "nothing.txt")
    assert code == 2 and "error: --h0: expected 'collapsed', 'random' or a .npz file" in err
    code, _, err = run(capsys, *BASE, "--beta", "5", "--central-path", "-1")
    assert code == 2 and "error: --central-path: expected a finite time T > 0" in err
    # Not converged: exit 3 with the JSON object still printed.
    code, out, _ = run(capsys, *BASE, "--beta", "1", "--h0", "random", "--max-iter", "1", "--json")
    assert code == 3 and json.loads(out)["converged"] is False


def test_assumptions_that_fail_are_warned_and_the_computation_runs(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    code, out, err = run(capsys, *BASE, "--beta", "0.5", "--spectrum", "--json")
    assert code == 0
    result = json.loads(out)
    assert any("β = 0.5 <= √(λ_H/λ_W)" in w for w in result["warnings"])
    assert "nclab solve: warning: β = 0.5" in err
    # d < K with a random H0: F and J exist, the closed forms do not.
    args = ["--classes", "3", "--per-class", "2", "--dim", "2", "--lambda-w", "0.7"]
    code, out, _ = run(
        capsys, *args, "--lambda-h", "0.3", "--beta", "5", "--h0", "random", "--spectrum", "--json"
    )
    result = json.loads(out)
    assert code == 0 and result["theory"] is None
    assert result["theory_note"].startswith("dim: Theorems 2.1 and 4.2 need d >= K")
    assert len(result["spectrum"]["intra_values"]) == 4
    # All class means equal: the trace ratio of the path is infinite, printed as null.
    x = np.random.default_rng(0).standard_normal((5, 3, 1))
    same = tmp_path / "same.npz"
    np.savez(same, h0=np.concatenate([x, -x, 0 * x], 2).reshape(5, 9))
    code, out, _ = run(
        capsys, *BASE, "--beta", "5", "--h0", str(same), "--central-path", "1", "--json"
    )
    result = json.loads(out)
    assert result["path"]["trace_ratio"][0] is None
    assert "path.trace_ratio[0]" in result["non_finite"]
    assert any("all class means coincide" in w for w in result["warnings"])
