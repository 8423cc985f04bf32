"""nclab demo: the MD CE-vs-LS job (one epoch here; the full one is `make demo`)."""

from __future__ import annotations

import csv
from pathlib import Path

import pytest

import nclab.experiments.md_demo as md_demo
from nclab.cli import main


@pytest.fixture
def small_ufm(monkeypatch: pytest.MonkeyPatch) -> None:
    # The demo solves the K = 10 non-negative UFM (tens of seconds); K = 3 checks the same code.
    real = md_demo._ufm_rows
    monkeypatch.setattr(md_demo, "_ufm_rows", lambda k: real(3))


def test_demo_writes_runs_tables_figure_report_and_prints_ce_vs_ls(
    tmp_path: Path, small_ufm: None, capsys: pytest.CaptureFixture[str]
) -> None:
    out = tmp_path / "demo"
    assert main(["demo", "--out", str(out), "--epochs", "1"]) == 0
    printed = capsys.readouterr().out
    for label in (
        "test accuracy (clean)",
        "NC1 (final)",
        "memorization (scaled)",
        "dilation (scaled)",
    ):
        assert label in printed
    assert f"report: {out / 'report.html'}" in printed
    for loss in ("ce", "ls"):
        with (out / loss / "metrics.csv").open(newline="") as handle:
            rows = list(csv.DictReader(handle))
        assert [r["epoch"] for r in rows] == ["1"]
    with (out / "summary.csv").open(newline="") as handle:
        summary = list(csv.DictReader(handle))
    assert [r["loss"] for r in summary] == ["cross-entropy", "label smoothing α = 0.1"]
    for row in summary:
        # 20 % of the labels redrawn: the noisy samples exist, so memorization is measured.
        assert float(row["memorization_scaled"]) > 0 and 0 < float(row["test_acc"]) <= 1
    with (out / "ufm.csv").open(newline="") as handle:
        ufm = list(csv.DictReader(handle))
    for row in ufm:
        assert row["theory_geometry"] == "orthogonal_frame"
        assert float(row["objective"]) == pytest.approx(float(row["theory_objective"]), rel=1e-8)
    html = (out / "report.html").read_text()
    assert html.count("data:image/png;base64,") == 1 and "ce/metrics.csv" in html
    assert (out / "figures" / "ce_vs_ls.pdf").is_file()
    # Again: the finished runs are read back, not retrained (their tables are unchanged).
    before = (out / "ce" / "metrics.csv").read_text()
    assert main(["demo", "--out", str(out), "--epochs", "1"]) == 0
    assert (out / "ce" / "metrics.csv").read_text() == before


def test_demo_refuses_a_directory_that_is_not_a_demo(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    (tmp_path / "mine.txt").write_text("keep")
    assert main(["demo", "--out", str(tmp_path), "--epochs", "1"]) == 2
    err = capsys.readouterr().err
    assert err.strip() == (
        f"nclab demo: error: --out: {tmp_path} holds files that are not nclab demo's; choose "
        "another directory (nothing was written)"
    )
    assert [p.name for p in tmp_path.iterdir()] == ["mine.txt"]
    assert main(["demo", "--out", str(tmp_path / "d"), "--epochs", "0"]) == 2
    assert "--epochs: expected a positive integer, got 0" in capsys.readouterr().err
