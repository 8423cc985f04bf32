"""The command line: `nclab metrics FILE [--json]` and `nclab demo --synthetic`."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import torch
from conftest import gaussian_classes

from nclab.cli import main
from nclab.metrics import measure
from nclab.metrics.report import report_keys


@pytest.fixture
def arrays(rng: np.random.Generator) -> dict[str, np.ndarray]:
    feats, labels = gaussian_classes(rng, 3, 20, 5)
    return {"features": feats, "labels": labels, "weight": rng.standard_normal((3, 5))}


def test_metrics_json_from_npz_and_pt_agree_with_measure(
    arrays: dict[str, np.ndarray], tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    npz = tmp_path / "f.npz"
    np.savez(npz, **arrays)
    assert main(["metrics", str(npz), "--json"]) == 0
    got = json.loads(capsys.readouterr().out)
    assert set(report_keys(with_weight=True)) <= set(got)
    want = measure(arrays["features"], arrays["labels"], arrays["weight"]).as_dict()
    for key, value in want.items():
        assert got[key] == pytest.approx(value, rel=1e-15), key
    pt = tmp_path / "f.pt"
    torch.save({k: torch.from_numpy(v) for k, v in arrays.items()}, pt)
    assert main(["metrics", str(pt), "--json", "--global-mean", "class"]) == 0
    assert json.loads(capsys.readouterr().out)["nc1"] == pytest.approx(want["nc1"], rel=1e-12)


def test_metrics_table_says_what_each_number_is(
    arrays: dict[str, np.ndarray], tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    npz = tmp_path / "f.npz"
    np.savez(npz, features=arrays["features"], labels=arrays["labels"])
    assert main(["metrics", str(npz)]) == 0
    out = capsys.readouterr().out
    assert "NC1 = (1/K) tr(Σ_W Σ_B^†)" in out and "options: global_mean=sample" in out
    assert "nc3_duality" not in out


def test_metrics_cli_errors_exit_2_with_a_message(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    bad = tmp_path / "bad.npz"
    np.savez(bad, feats=np.ones((3, 2)))
    assert main(["metrics", str(bad)]) == 2
    assert "FILE: no array named ['features', 'labels']" in capsys.readouterr().err
    assert main(["metrics", str(tmp_path / "nope.npz")]) == 2
    assert "does not exist" in capsys.readouterr().err
    odd = tmp_path / "odd.npz"
    np.savez(odd, features=np.ones((3, 2)), labels=np.array([0.0, 1.0, 1.0]))
    assert main(["metrics", str(odd)]) == 2
    assert "labels: expected integer class indices" in capsys.readouterr().err


def test_metrics_cli_refuses_unreadable_files_in_one_line(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    import pickle

    import torch

    good = tmp_path / "good.npz"
    np.savez(good, features=np.ones((4, 2)), labels=np.array([0, 0, 1, 1]))
    files = {
        "empty.npz": b"",
        "truncated.npz": good.read_bytes()[:100],
        "random.pt": bytes(range(256)) * 2,
        "pickled.pt": pickle.dumps({"features": object()}),
    }
    for name, data in files.items():
        (tmp_path / name).write_bytes(data)
    np.save(tmp_path / "single.npy", np.ones(3))
    (tmp_path / "single.npy").rename(tmp_path / "single.npz")
    np.savez(tmp_path / "objects.npz", features=np.array([None] * 3), labels=np.zeros(3, int))
    torch.save([1, 2], tmp_path / "list.pt")
    expected = {
        "empty.npz": "is not a readable .npz archive of numeric arrays (EOFError",
        "truncated.npz": "is not a readable .npz archive of numeric arrays (BadZipFile",
        "random.pt": "is not a torch file of tensors",
        "pickled.pt": "holds pickled objects, which are never loaded",
        "single.npz": "is a single .npy array, not an .npz archive",
        "objects.npz": "Object arrays cannot be loaded when allow_pickle=False",
        "list.pt": "must hold a dict of tensors, got list",
    }
    for name, message in expected.items():
        assert main(["metrics", str(tmp_path / name)]) == 2, name
        err = capsys.readouterr().err
        assert err.count("\n") == 1 and f"FILE: {tmp_path / name}" in err and message in err, err


def test_metrics_cli_keys_options_and_flags_in_messages(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    g = np.random.default_rng(0)
    y = np.repeat(np.arange(3), 20)
    centres = np.array([[-1.0, 0, 0], [0.0, 1e-6, 0], [1.0, 0, 0]])
    h = centres[y] + 0.05 * g.normal(size=(60, 3))
    path = tmp_path / "other.npz"
    np.savez(path, feats=h, y=y)
    args = ["metrics", str(path), "--features-key", "feats", "--labels-key", "y", "--json"]
    assert main(args) == 0
    default = json.loads(capsys.readouterr().out)
    assert main([*args, "--rank-rtol", "0.5"]) == 0
    truncated = json.loads(capsys.readouterr().out)
    assert default["between_rank"] == 2 and truncated["between_rank"] == 1
    assert main([*args, "--rank-rtol", "2"]) == 2
    assert "--rank-rtol: expected None or a number in [0, 1)" in capsys.readouterr().err
    assert main([*args, "--num-classes", str(10**12)]) == 2
    assert "--num-classes: 1000000000000 classes of dimension 3 need" in capsys.readouterr().err
    assert main([*args, "--num-classes", "5"]) == 2
    assert "pass --drop-empty-classes to measure" in capsys.readouterr().err
    with pytest.raises(SystemExit) as info:
        main(["--version"])
    assert info.value.code == 0 and capsys.readouterr().out.startswith("nclab ")


def test_internal_failures_are_not_reported_as_bad_input(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    """Exit code 2 means bad input; an internal failure keeps its type and traceback."""
    import nclab.metrics

    path = tmp_path / "f.npz"
    np.savez(path, features=np.ones((4, 2)), labels=np.array([0, 0, 1, 1]))

    def broken(*args: object, **kwargs: object) -> None:
        raise RuntimeError("an internal failure")

    monkeypatch.setattr(nclab.metrics, "measure", broken)
    with pytest.raises(RuntimeError, match="an internal failure"):
        main(["metrics", str(path)])


def test_demo_writes_results_that_match_theory(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    assert main(["demo", "--synthetic", "--out", str(tmp_path)]) == 0
    results = json.loads((tmp_path / "results.json").read_text())
    assert (tmp_path / "collapse.png").stat().st_size > 10_000
    # At the smallest noise the sampling error of NC1 is about 2% (5,000 samples, K-1 = 9
    # directions); 10% leaves room for seeds while still catching a wrong formula.
    last = results["rows"][-1]
    assert last["metrics"]["nc1"] == pytest.approx(last["theory_nc1"], rel=0.1)
    out = capsys.readouterr().out
    assert "NC1 theory" in out and "solver vs theorem" in out
    # The UFM section: every solver run converged to its theorem's value (L-BFGS to 1e-8).
    assert len(results["ufm"]) == 4
    for row in results["ufm"]:
        assert row["converged"] and row["objective"] == pytest.approx(
            row["theory_objective"], rel=1e-9
        )
        assert row["nc1"] < 1e-10
