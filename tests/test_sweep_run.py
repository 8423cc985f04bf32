"""Sweeps that run: a 4-trial smoke grid with the local executor (2 workers) and with Ray on a
local instance give the same table; SIGKILL of the driver mid-sweep then a re-run gives the
uninterrupted table; a model-solve grid's objectives equal the closed form, with a failing trial
recorded while the others finish; the sweep figure draws the summary's means."""

from __future__ import annotations

import csv
import json
import math
import os
import re
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import yaml

from nclab.cli import main
from nclab.sweep import load_spec, run_sweep
from nclab.sweep.executors import Job, LocalExecutor
from nclab.sweep.figure import sweep_figure
from nclab.sweep.store import SweepDir
from nclab.train.table import read_metrics

SMOKE = {
    "base": "smoke",
    "grid": {"noise.rate": [0.0, 0.2]},
    "seeds": [0, 1],
    # Two epochs with a checkpoint after each: a killed trial has something to resume from.
    "set": {"optim.epochs": 2, "run.checkpoint_seconds": 0},
}


def _spec_file(path: Path, spec: dict[str, Any]) -> Path:
    path.write_text(yaml.safe_dump(spec))
    return path


@pytest.fixture(scope="module")
def smoke_file(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return _spec_file(tmp_path_factory.mktemp("spec") / "smoke.yaml", SMOKE)


@pytest.fixture(scope="module")
def local_sweep(smoke_file: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The uninterrupted sweep, local executor with 2 workers."""
    out = tmp_path_factory.mktemp("local") / "sweep"
    result = run_sweep(load_spec(smoke_file), out, max_parallel=2, progress=False)
    assert len(result.ran) == 4 and not result.failed
    return out


def _rows(path: Path) -> list[dict[str, str]]:
    with path.open() as f:
        return list(csv.DictReader(f))


def test_local_sweep_gathers_every_trials_metrics(local_sweep: Path, smoke_file: Path) -> None:
    spec = load_spec(smoke_file)
    results = _rows(local_sweep / "results.csv")
    assert len(results) == 4 * 2  # 4 trials x 2 evaluated epochs x 1 tracked layer
    sd = SweepDir(local_sweep)
    for trial in spec.trials:
        assert sd.status(trial)["state"] == "done"
        mine = [r for r in results if r["trial"] == trial.name]
        run = read_metrics(sd.run_dir(trial))
        assert [int(r["epoch"]) for r in mine] == [r["epoch"] for r in run] == [1, 2]
        for got, want in zip(mine, run, strict=True):
            assert float(got["noise.rate"]) == trial.key["noise.rate"]
            assert int(got["seed"]) == trial.key["seed"]
            for column in ("train_loss", "acc_true", "nc1", "test_acc"):
                assert float(got[column]) == want[column]  # the same digits, not just close
    summary = _rows(local_sweep / "summary.csv")
    assert [(r["noise.rate"], r["trials"]) for r in summary] == [("0.0", "2"), ("0.2", "2")]
    finals = [float(r["nc1"]) for r in results if r["epoch"] == "2" and r["noise.rate"] == "0.2"]
    assert float(summary[1]["nc1_mean"]) == pytest.approx(sum(finals) / 2, rel=1e-15)
    # Seeds differ, so the runs differ: the table is not the same run four times.
    assert len({r["train_loss"] for r in results}) == 8


@pytest.fixture(scope="module")
def ray_instance() -> Iterator[Any]:
    ray = pytest.importorskip("ray")
    ray.init(num_cpus=2, include_dashboard=False, log_to_driver=False)
    yield ray
    ray.shutdown()


def test_ray_executor_gives_the_local_table(
    ray_instance: Any, smoke_file: Path, local_sweep: Path, tmp_path: Path
) -> None:
    result = run_sweep(load_spec(smoke_file), tmp_path / "sweep", executor="ray", progress=False)
    assert len(result.ran) == 4 and not result.failed
    assert (tmp_path / "sweep" / "results.csv").read_text() == (
        local_sweep / "results.csv"
    ).read_text()
    assert ray_instance.is_initialized()  # a running instance is used, not stopped


def test_sigkill_of_the_driver_then_rerun_gives_the_uninterrupted_table(
    smoke_file: Path, local_sweep: Path, tmp_path: Path
) -> None:
    out = tmp_path / "sweep"
    argv = ["sweep", str(smoke_file), "--out", str(out), "--max-parallel", "2"]
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    driver = subprocess.Popen(
        [sys.executable, "-m", "nclab", *argv], env=env, stdout=subprocess.DEVNULL
    )
    sd = SweepDir(out)
    statuses = lambda: [  # noqa: E731
        json.loads(p.read_text())["state"] for p in out.glob("trials/*/status.json")
    ]
    try:
        deadline = time.monotonic() + 120  # a hang guard, not a timing assertion
        while "done" not in statuses() and driver.poll() is None:
            assert time.monotonic() < deadline, "no trial finished"
            time.sleep(0.05)
        workers = _descendants(driver.pid)
        driver.send_signal(signal.SIGKILL)
    finally:
        driver.wait()
    # The killed driver's fork server and workers exit (none keeps writing into a trial).
    deadline = time.monotonic() + 30  # a hang guard, not a timing assertion
    while any(Path(f"/proc/{pid}").exists() for pid in workers):
        assert time.monotonic() < deadline, f"orphans of the killed driver: {workers}"
        time.sleep(0.05)
    states = statuses()
    assert driver.returncode == -signal.SIGKILL
    assert states.count("done") < 4 and "running" in states  # killed mid-sweep
    assert not (out / "results.csv").exists()
    assert main(argv) == 0
    assert (out / "results.csv").read_text() == (local_sweep / "results.csv").read_text()
    rerun = [json.loads(p.read_text()) for p in out.glob("trials/*/status.json")]
    assert {s["state"] for s in rerun} == {"done"}
    assert max(s["attempts"] for s in rerun) == 2  # the trials in flight ran again
    assert sd.recorded_trials() is not None


def _descendants(pid: int) -> list[int]:
    """The processes below ``pid`` (Linux /proc; empty elsewhere)."""
    parents: dict[int, int] = {}
    for stat in Path("/proc").glob("[0-9]*/stat"):
        try:
            fields = stat.read_text().rsplit(")", 1)[1].split()
        except OSError:
            continue
        parents[int(stat.parent.name)] = int(fields[1])
    found, frontier = [], [pid]
    while frontier:
        children = [p for p, parent in parents.items() if parent in frontier]
        found += children
        frontier = children
    return found


SOLVE = {
    "base": "solve:ufm",
    "grid": {"lambda_h": [0.01, 0.1, -1.0]},  # a negative penalty: the solve raises
    "set": {"loss": "mse", "classes": 4, "per_class": 5, "dim": 8, "lambda_w": 0.02},
}


def test_solve_grid_matches_the_closed_form_and_a_failing_trial_is_recorded(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    spec = _spec_file(tmp_path / "ufm.yaml", SOLVE)
    out = tmp_path / "sweep"
    argv = ["sweep", str(spec), "--out", str(out), "--max-parallel", "2"]
    assert main(argv) == 1
    printed = capsys.readouterr().out
    # Without a terminal, one line per finished trial: [count/total] name outcome (seconds).
    finished = re.findall(
        r"^\[(\d)/3\] (lambda_h=\S+) (done|failed: .*) \(\d+\.\d s\)$", printed, re.M
    )
    assert sorted(c for c, _, _ in finished) == ["1", "2", "3"]
    assert sorted(o.split(":")[0] for _, _, o in finished) == ["done", "done", "failed"]
    assert "1 trial(s) failed; rerun them with --retry-failed" in printed
    assert "InputError: --lambda-h: expected a non-negative number, got -1.0" in printed
    rows = _rows(out / "results.csv")
    assert [float(r["lambda_h"]) for r in rows] == [0.01, 0.1]
    k, n, lambda_w = 4, 5, 0.02
    for row in rows:
        # MSE UFM without bias (standard convention): min over σ of (1 − σ)²/2 + c σ with
        # c = K √(n λ_W λ_H) (nuclear-norm form of the two penalties), so f* = c − c²/2 for c < 1.
        c = k * math.sqrt(n * lambda_w * float(row["lambda_h"]))
        assert c < 1
        # The solver stops at gradient norm 1e-8: the objective is then within ~1e-16 of f*.
        assert float(row["objective"]) == pytest.approx(c - c * c / 2, rel=1e-10, abs=0)
        assert float(row["theory.objective"]) == pytest.approx(c - c * c / 2, rel=1e-12, abs=0)
        assert row["converged"] == "true"
    sd = SweepDir(out)
    failed = next(t for t in load_spec(spec).trials if t.key["lambda_h"] == -1.0)
    status = sd.status(failed)
    assert status["state"] == "failed" and status["attempts"] == 1
    assert "Traceback (most recent call last)" in status["traceback"]
    result_json = json.loads((sd.run_dir(load_spec(spec).trials[0]) / "result.json").read_text())
    assert result_json["objective"] == float(rows[0]["objective"])

    assert main(argv) == 1  # reported again, not rerun
    assert sd.status(failed)["attempts"] == 1
    assert "0 run now, 2 done before" in capsys.readouterr().out
    assert main([*argv, "--retry-failed"]) == 1
    assert sd.status(failed)["attempts"] == 2
    assert "1 run now, 2 done before" in capsys.readouterr().out

    # The sweep figure: one point per λ_H, the objective itself (one trial per point, no seeds).
    assert main(["sweep-plot", str(out), "--x", "lambda_h", "--y", "objective", "--logx"]) == 0
    png = out / "objective_vs_lambda_h.png"
    assert png.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    line = sweep_figure(out, "lambda_h", "objective").axes[0].containers[0][0]
    assert list(line.get_xdata()) == [0.01, 0.1]
    assert list(line.get_ydata()) == [float(r["objective"]) for r in rows]


def test_sweep_plot_draws_means_over_seeds(
    local_sweep: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    fig = sweep_figure(local_sweep, "noise.rate", "acc_true")
    summary = _rows(local_sweep / "summary.csv")
    line = fig.axes[0].containers[0][0]  # the error bars' data line
    assert list(line.get_xdata()) == [0.0, 0.2]
    assert list(line.get_ydata()) == [float(r["acc_true_mean"]) for r in summary]
    out = tmp_path / "f.png"
    assert (
        main(["sweep-plot", str(local_sweep), "--x", "noise.rate", "--y", "nc1", "--out", str(out)])
        == 0
    )
    assert out.read_bytes()[:4] == b"\x89PNG"
    for argv, message in [
        (["--x", "lr", "--y", "nc1"], "--x: 'lr' is not a grid key; keys: ['noise.rate', 'seed']"),
        (["--x", "noise.rate", "--y", "nc9"], "--y: 'nc9' is not a numeric column"),
        (["--x", "noise.rate", "--y", "nc1", "--layer", "body.0"], "--layer: expected one of"),
    ]:
        assert main(["sweep-plot", str(local_sweep), *argv]) == 2
        assert capsys.readouterr().err.startswith(f"nclab sweep-plot: error: {message}")


def test_a_dead_worker_fails_its_trial_and_the_pool_is_rebuilt_for_the_rest(
    tmp_path: Path,
) -> None:
    spec = load_spec(
        _spec_file(tmp_path / "ufm.yaml", {**SOLVE, "grid": {"lambda_h": [0.01, 0.1]}})
    )
    executor = LocalExecutor(max_parallel=1)
    jobs = [Job(t.name, t.kind, t.payload, str(tmp_path / t.name)) for t in spec.trials]
    outcomes: dict[str, dict[str, Any]] = {}

    def started(job: Job) -> None:
        if job is jobs[0]:  # kill the worker that takes the first job (once it exists)
            threading.Thread(target=_kill_workers, args=(executor,), daemon=True).start()

    try:
        executor.run(jobs, started, lambda job, out: outcomes.__setitem__(job.name, out))
    finally:
        executor.close()
    assert outcomes[jobs[0].name]["error"].startswith("a worker process died")
    assert outcomes[jobs[1].name]["rows"][0]["converged"] is True


def _kill_workers(executor: LocalExecutor) -> None:
    deadline = time.monotonic() + 60  # a hang guard, not a timing assertion
    while time.monotonic() < deadline:
        pool = executor._pool
        processes = dict(getattr(pool, "_processes", None) or {})
        if processes:
            for pid in processes:
                os.kill(pid, signal.SIGKILL)
            return
        time.sleep(0.01)
