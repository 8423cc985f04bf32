"""Property-based tests of the models and of the command-line entry points `nclab solve` and
`nclab metrics`: generated values of every argument (types, signs, NaN/Inf, 1e±300, huge integers)
and generated files.

Each case ends in a result (finite objective and a finite or null-with-a-note JSON), or in a
ValueError / exit code 2 whose one-line message names the argument (the CLI: the flag or FILE);
`nclab solve` exits 0 (converged) or 3 (not converged) with valid JSON otherwise.

Deterministic (``derandomize=True``, no example database) and bounded: 120 + 60 + 60 = 240 cases
per run; the solves are tiny (K <= 4, n <= 3, d <= 4, at most 25 iterations).
"""

from __future__ import annotations

import json
import math
import tempfile
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from nclab.cli import main
from nclab.losses import make_loss
from nclab.models import UFM
from nclab.models.extended import ExtendedUFM

FUZZ = settings(derandomize=True, database=None, deadline=None)

NUMBERS = st.sampled_from(
    [0.01, 0.3, 1.0, 0.0, -1.0, math.nan, math.inf, 1e-300, 1e300, "0.1", True, None]
)
SIZES = st.sampled_from([1, 2, 3, 4, 0, -1, 2.5, "3", True, 10**12])
ARGUMENTS = (
    "loss", "num_classes", "per_class", "dim", "lambda_w", "lambda_h", "lambda_b", "bias", "nonneg",
    "convention", "smoothing", "gamma", "target_scale", "target_weight", "target_scale/target_weight",
    "method", "restarts", "seed", "tol", "max_iter", "lr", "momentum", "init_scale", "device",
    "record_every", "lambda_hidden", "activation", "continuation", "num_classes",
)  # fmt: skip


def check_error(err: Exception) -> None:
    assert isinstance(err, ValueError), f"{type(err).__name__}: {err}"
    assert str(err).startswith(ARGUMENTS), str(err)


@settings(FUZZ, max_examples=120)
@given(st.data())
def test_models_never_crash_and_never_lie(data: Any) -> None:
    kind = data.draw(st.sampled_from(["ufm", "ufm", "extended"]))
    loss_name = data.draw(st.sampled_from(["ce", "mse", "ls", "focal", "relaxation"]))
    try:
        loss = make_loss(
            loss_name,
            smoothing=0.1 if loss_name == "ls" else 0.0,
            target_scale=data.draw(st.sampled_from([1.0, 3.0])) if loss_name == "mse" else 1.0,
        )
        sizes = [data.draw(SIZES) if data.draw(st.booleans()) else s for s in (3, 2, 4)]
        lams = [data.draw(NUMBERS) if data.draw(st.floats(0, 1)) < 0.3 else 0.05 for _ in range(3)]
        if kind == "ufm":
            model: Any = UFM(loss, *sizes, lams[0], lams[1], bias=data.draw(st.sampled_from([False, True, "no"])),
                             nonneg=data.draw(st.sampled_from([False, True])))  # fmt: skip
        else:
            model = ExtendedUFM(*sizes, lams[0], (lams[1],), lams[2], loss=loss,
                                activation=data.draw(st.sampled_from(["linear", "relu", "tanh"])))  # fmt: skip
        options = {"max_iter": 25}
        for key, values in {
            "method": st.sampled_from(["lbfgs", "gd", "adam"]),
            "tol": st.sampled_from([1e-8, 0.0, math.inf, math.nan, "1e-8"]),
            "seed": st.sampled_from([0, -1, 2**64, 1.5]),
            "init_scale": st.sampled_from([0.1, 0.0, -1.0, math.inf]),
            "lr": st.sampled_from([None, 0.1, math.nan, -1.0]),
            "momentum": st.sampled_from([None, 0.5, math.inf, 1.0]),
            "max_iter": st.sampled_from([25, 0, -1, "10"]),
            "device": st.sampled_from(["cpu", "meta", "cuda:7"]),
        }.items():
            if data.draw(st.floats(0, 1)) < 0.15:
                options[key] = data.draw(values)
        try:
            pred = model.theory()
        except ValueError as err:
            check_error(err)
        else:
            assert math.isfinite(pred.objective) and pred.objective >= 0
        sol = model.solve(**options)
    except Exception as err:
        check_error(err)
        return
    assert sol.converged == ((sol.gradient_norm <= options.get("tol", 1e-8) and sol.iterations > 0)
                             or sol.method.startswith("zero point"))  # fmt: skip
    assert sol.objective == min(sol.restart_objectives)
    if sol.zero_solution:
        with pytest.raises(ValueError, match="zero point"):
            sol.metrics()


SOLVE_FLAGS = {
    "--classes": st.sampled_from(["3", "1", "0", "x", "1e3"]),
    "--per-class": st.sampled_from(["2", "0", "-2"]),
    "--dim": st.sampled_from(["3", "0"]),
    "--lambda-w": st.sampled_from(["0.01", "0", "-1", "nan", "inf", "1e308"]),
    "--lambda-h": st.sampled_from(["0.01", "1e308", "1e-308"]),
    "--tol": st.sampled_from(["1e-8", "inf", "0", "nan"]),
    "--max-iter": st.sampled_from(["20", "0", "-1"]),
    "--lr": st.sampled_from(["0.1", "nan"]),
    "--momentum": st.sampled_from(["0.5", "inf"]),
    "--method": st.sampled_from(["lbfgs", "gd"]),
    "--restarts": st.sampled_from(["1", "0"]),
    "--seed": st.sampled_from(["0", "-1", str(2**64)]),
    "--smoothing": st.sampled_from(["0.1", "1.5", "nan"]),
    "--target-scale": st.sampled_from(["1", "0", "inf"]),
    "--device": st.sampled_from(["cpu", "cuda", "meta"]),
}


@settings(FUZZ, max_examples=60)
@given(st.data())
def test_nclab_solve_exits_0_2_or_3_with_valid_json(data: Any) -> None:
    loss = data.draw(st.sampled_from(["ce", "mse", "ls"]))
    argv = ["solve", "ufm", "--loss", loss, "--json"]
    values = {"--classes": "3", "--per-class": "2", "--dim": "3", "--lambda-w": "0.01",
              "--lambda-h": "0.01", "--max-iter": "20"}  # fmt: skip
    for flag in data.draw(st.lists(st.sampled_from(sorted(SOLVE_FLAGS)), max_size=3, unique=True)):
        values[flag] = data.draw(SOLVE_FLAGS[flag])
    for flag, value in values.items():
        argv += [flag, value]
    from contextlib import redirect_stderr, redirect_stdout
    from io import StringIO

    out, err = StringIO(), StringIO()
    try:
        with redirect_stdout(out), redirect_stderr(err):
            code = main(argv)
    except SystemExit as exit_:  # argparse: a value of the wrong type for its flag
        assert exit_.code == 2 and "error: argument" in err.getvalue()
        return
    if code == 2:
        message = err.getvalue().strip().splitlines()
        assert len(message) == 1 and message[0].startswith("nclab solve: error: --"), message
        return
    assert code in (0, 3), (code, err.getvalue())

    def refuse(constant: str) -> None:
        raise AssertionError(f"NaN/Infinity in the JSON: {constant}")

    result = json.loads(out.getvalue(), parse_constant=refuse)
    assert result["converged"] == (code == 0)
    assert (result["metrics"] is None) == (result["metrics_note"] is not None)


@st.composite
def files(draw: Any) -> tuple[str, bytes]:
    g = np.random.default_rng(draw(st.integers(0, 2**32 - 1)))
    kind = draw(st.sampled_from(["good", "mutated", "random", "keys", "shapes"]))
    suffix = draw(st.sampled_from([".npz", ".pt", ".txt"]))
    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / "f.npz"
        features = g.normal(size=(6, 3)) * draw(st.sampled_from([1.0, 1e300, 1e-300]))
        labels = np.array([0, 0, 1, 1, 2, 2])
        if kind == "keys":
            np.savez(path, feats=features, labels=labels)
        elif kind == "shapes":
            np.savez(path, features=features[:, :, None], labels=labels[:5])
        else:
            np.savez(path, features=features, labels=labels)
        raw = path.read_bytes()
    if kind == "mutated":
        raw = bytearray(raw)
        for _ in range(draw(st.integers(1, 20))):
            raw[draw(st.integers(0, len(raw) - 1))] = draw(st.integers(0, 255))
        raw = bytes(raw[: draw(st.integers(0, len(raw)))])
    if kind == "random":
        raw = g.bytes(draw(st.integers(0, 400)))
    return suffix, raw


@settings(FUZZ, max_examples=60)
@given(files())
def test_nclab_metrics_on_any_file_exits_0_or_2_in_one_line(case: tuple[str, bytes]) -> None:
    from contextlib import redirect_stderr, redirect_stdout
    from io import StringIO

    suffix, raw = case
    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / f"data{suffix}"
        path.write_bytes(raw)
        out, err = StringIO(), StringIO()
        with redirect_stdout(out), redirect_stderr(err):
            code = main(["metrics", str(path), "--json"])
    if code == 0:
        json.loads(out.getvalue())
        return
    lines = err.getvalue().strip().splitlines()
    assert code == 2 and len(lines) == 1 and lines[0].startswith("nclab metrics: error: "), lines
