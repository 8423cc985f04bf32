"""``nclab demo``: the MD setting, cross-entropy against label smoothing under label noise.

An MLP 784-512-512-512 with non-negative (post-ReLU) penultimate features is trained on the
shipped Fashion-MNIST subset (4,000 training images, 10 classes) with 20 % symmetric label
noise (MD's convention: 20 % of the labels redrawn over the 10 classes), once with
cross-entropy and once with label smoothing α = 0.1 (target (1 − α) e_y + α/K · 1), SGD as in
the papers (lr 0.05, momentum 0.9, weight decay 5e-4, lr ÷ 10 after 40 epochs). NC and MD's
memorization and dilation of the penultimate features are measured every epoch
(``docs/conventions.md``): memorization = mean over noisy samples of ‖h_i − μ^clean_{y_i}‖,
dilation = class average of mean_{clean i ∈ c} ‖h_i − μ^clean_c‖, both divided by the mean
distance between clean class means (scale-free).

The matching theory model is the non-negative UFM (Nguyen et al., ICLR 2023, Section 3) under
CE and under LS with the same K: its global optimum puts the class means on an orthogonal frame
with NC1 = 0 (``UFM.theory()``), solved here by L-BFGS beside the closed form.

MD's claim read off the figure: under label noise, LS ends with smaller memorization and
smaller dilation than CE (its point lies below and left of CE's in dilation vs memorization)
and a higher test accuracy on the clean test labels.

Everything goes to ``runs/demo/``: ``ce/`` and ``ls/`` (the training runs), ``ufm.csv``,
``summary.csv``, ``figures/`` and ``report.html``. Running it again continues the runs in
place (a finished run is read back, not retrained).
"""

from __future__ import annotations

import csv
import io
import json
import time
from pathlib import Path
from typing import Any

from nclab.errors import InputError
from nclab.io import atomic_write_text

__all__ = ["DEMO_EPOCHS", "print_summary", "run_md_demo"]

DEMO_EPOCHS = 60
_LOSSES: dict[str, tuple[str, dict[str, Any]]] = {
    "ce": ("cross-entropy", {"loss.name": "ce"}),
    "ls": ("label smoothing α = 0.1", {"loss.name": "ls", "loss.smoothing": 0.1}),
}
_FINAL = (
    "test_acc",
    "acc_true",
    "acc_observed",
    "nc1",
    "clean_nc1",
    "memorization_scaled",
    "dilation_mean_scaled",
    "nc2_etf_means",
)


def _config(loss: str, seed: int, epochs: int) -> Any:
    from nclab.train.config import apply_overrides
    from nclab.train.presets import preset

    overrides = {
        **_LOSSES[loss][1],
        "optim.epochs": epochs,
        "run.seed": seed,
        "track.layers": "[penultimate]",
    }
    return apply_overrides(preset("cpu-mlp"), [f"{k}={v}" for k, v in overrides.items()])


def _ufm_rows(num_classes: int) -> list[dict[str, Any]]:
    from nclab.losses import make_loss
    from nclab.models import UFM

    rows = []
    for loss, (label, _) in _LOSSES.items():
        fn = make_loss("ce") if loss == "ce" else make_loss("ls", smoothing=0.1)
        # d = 2K and three restarts: with d = K a single start can stop at a local minimum
        # (the non-negativity constraint makes the problem non-convex).
        model = UFM(fn, num_classes, 5, 2 * num_classes, 5e-3, 5e-3, nonneg=True)
        theory = model.theory()
        sol = model.solve(restarts=3)
        report = sol.metrics()
        rows.append(
            {
                "loss": label,
                "theory_geometry": theory.geometry,
                "theory_objective": theory.objective,
                "objective": sol.objective,
                "converged": sol.converged,
                "nc1": report["nc1"],
                "nc2_of_means": report["nc2_of_means"],
            }
        )
    return rows


def _csv_text(rows: list[dict[str, Any]]) -> str:
    buf = io.StringIO()
    writer = csv.DictWriter(buf, fieldnames=list(rows[0]), lineterminator="\n")
    writer.writeheader()
    writer.writerows(rows)
    return buf.getvalue()


def _check_out(root: Path) -> None:
    marker = root / "experiment.json"
    if not root.exists() or (root.is_dir() and not any(root.iterdir())):
        return
    if not root.is_dir():
        raise InputError(f"--out: {root} exists and is not a directory")
    try:
        held = json.loads(marker.read_text()) if marker.is_file() else None
    except (OSError, json.JSONDecodeError):
        held = None
    if not isinstance(held, dict) or held.get("name") != "demo":
        raise InputError(
            f"--out: {root} holds files that are not nclab demo's; choose another directory "
            "(nothing was written)"
        )


def run_md_demo(
    out_dir: str | Path = "runs/demo", *, seed: int = 0, epochs: int | None = None
) -> dict[str, Any]:
    """Run the demo (module docstring) into ``out_dir``; returns the final numbers of CE and
    LS, the UFM rows and the report's path."""
    from nclab.report import environment, render_report, write_manifest
    from nclab.train.trainer import train

    epochs = DEMO_EPOCHS if epochs is None else epochs
    if epochs < 1:
        raise InputError(f"--epochs: expected a positive integer, got {epochs}")
    root = Path(out_dir)
    _check_out(root)
    configs = {loss: _config(loss, seed, epochs) for loss in _LOSSES}
    root.mkdir(parents=True, exist_ok=True)
    atomic_write_text(root / "experiment.json", json.dumps({"name": "demo"}) + "\n")
    start = time.perf_counter()
    runs: dict[str, list[dict[str, Any]]] = {}
    for loss, cfg in configs.items():
        print(f"training with {_LOSSES[loss][0]} ({epochs} epochs) -> {root / loss}", flush=True)
        runs[loss] = train(cfg, root / loss, resume=(root / loss / "metrics.csv").exists()).rows
    print("solving the non-negative UFM under CE and LS (K = 10)", flush=True)
    ufm = _ufm_rows(10)
    final = {}
    for loss, rows in runs.items():
        last = [r for r in rows if r["split"] == "train" and r["layer"] == "penultimate"][-1]
        final[loss] = {"loss": _LOSSES[loss][0], "epoch": last["epoch"]}
        final[loss].update({k: last.get(k) for k in _FINAL})
    figures = root / "figures"
    png = _figure(runs, figures)
    atomic_write_text(root / "summary.csv", _csv_text(list(final.values())))
    atomic_write_text(root / "ufm.csv", _csv_text(ufm))
    wall = time.perf_counter() - start
    ce, ls = final["ce"], final["ls"]
    notes = [_verdict(ce, ls)]
    notes.append(
        "Non-negative UFM (K = 10, n = 5, d = 20, λ_W = λ_H = 5e-3), L-BFGS (3 restarts) vs closed form: "
        + "; ".join(
            f"{r['loss']}: objective {r['objective']:.6g} (theorem {r['theory_objective']:.6g}), "
            f"geometry {r['theory_geometry']}, NC1 {r['nc1']:.1e}, distance to the orthogonal "
            f"frame {r['nc2_of_means']:.1e}"
            for r in ufm
        )
        + ". The model has no label noise: it predicts the collapsed geometry both losses "
        "approach on clean data, from which memorization of noisy labels moves the network."
    )
    write_manifest(
        root,
        {
            "name": "demo",
            "title": "nclab demo: cross-entropy vs label smoothing under 20 % label noise",
            "paper": "MD: Nguyen, Levie, Lienen, Kutyniok & Hüllermeier, Memorization-Dilation: "
            "Modeling Neural Collapse Under Label Noise, ICLR 2023",
            "reproduces": "the CE vs LS comparison of its experiments, one seed, CPU scale",
            "prediction": "Label smoothing memorizes the noisy labels less and dilates the clean "
            "classes less than cross-entropy, and generalizes better under label noise.",
            "spec": {loss: cfg.to_dict() for loss, cfg in configs.items()},
            "figures": [[str(png.relative_to(root)), _CAPTION]],
            "tables": ["summary.csv", "ufm.csv", "ce/metrics.csv", "ls/metrics.csv"],
            "summary": "summary.csv",
            "summary_columns": ["loss", "epoch", *_FINAL],
            "notes": notes,
            "wall_seconds": wall,
            "environment": environment(),
        },
    )
    report = render_report(root)
    return {"final": final, "ufm": ufm, "report": report, "figure": png, "seconds": wall}


_CAPTION = (
    "CE (blue) against label smoothing α = 0.1 (orange), MLP with non-negative penultimate "
    "features, shipped Fashion-MNIST subset, 20 % symmetric label noise, one seed, measured "
    "every epoch on the training set. (a) accuracy: on the clean test labels (solid) and on the "
    "training set's observed labels (dashed; 1.0 means every noisy label is memorized). "
    "(b) NC1 = (1/K) tr(Σ_W Σ_B^†) of all samples (solid) and of the clean samples (dotted), "
    "log scale. (c) memorization (solid) and dilation (dashed), scale-free. (d) dilation "
    "against memorization along training (the last epoch marked by a star): MD predicts LS's "
    "path to end below and left of CE's."
)


def _verdict(ce: dict[str, Any], ls: dict[str, Any]) -> str:
    mem = ls["memorization_scaled"] < ce["memorization_scaled"]
    dil = ls["dilation_mean_scaled"] < ce["dilation_mean_scaled"]
    acc = ls["test_acc"] > ce["test_acc"]
    parts = [
        f"memorization {ls['memorization_scaled']:.3f} (LS) vs {ce['memorization_scaled']:.3f} (CE)",
        f"dilation {ls['dilation_mean_scaled']:.3f} vs {ce['dilation_mean_scaled']:.3f}",
        f"clean test accuracy {ls['test_acc']:.3f} vs {ce['test_acc']:.3f}",
    ]
    agree = [
        name for name, ok in (("memorization", mem), ("dilation", dil), ("accuracy", acc)) if ok
    ]
    if len(agree) == 3:
        verdict = "As MD predicts, LS ends with less memorization, less dilation and a higher clean test accuracy"
    else:
        missing = sorted({"memorization", "dilation", "accuracy"} - set(agree))
        verdict = (
            f"MD's prediction shows only partly at this scale (one seed, {ce['epoch']} epochs): "
            f"LS does not improve {', '.join(missing)}; more seeds and epochs "
            "(nclab reproduce md-label-noise) are needed to tell"
        )
    return f"{verdict}: {'; '.join(parts)}."


def _figure(runs: dict[str, list[dict[str, Any]]], figures: Path) -> Path:
    from nclab.experiments.common import new_figure, save_figure

    fig, (acc, nc1, md, path) = new_figure(4, width=4.2, height=3.8)
    colors = {"ce": "tab:blue", "ls": "tab:orange"}
    for loss, rows in runs.items():
        rows = [r for r in rows if r["split"] == "train" and r["layer"] == "penultimate"]
        ep = [r["epoch"] for r in rows]
        c, name = colors[loss], loss.upper()
        acc.plot(ep, [r["test_acc"] for r in rows], color=c, label=f"{name} test (clean labels)")
        acc.plot(
            ep,
            [r["acc_observed"] for r in rows],
            "--",
            color=c,
            label=f"{name} train (observed labels)",
        )
        nc1.semilogy(ep, [r["nc1"] for r in rows], color=c, label=f"{name} NC1")
        nc1.semilogy(
            ep, [r["clean_nc1"] for r in rows], ":", color=c, label=f"{name} NC1 (clean samples)"
        )
        mem = [r["memorization_scaled"] for r in rows]
        dil = [r["dilation_mean_scaled"] for r in rows]
        md.plot(ep, mem, color=c, label=f"{name} memorization")
        md.plot(ep, dil, "--", color=c, label=f"{name} dilation")
        path.plot(mem, dil, "-", color=c, alpha=0.6, label=name)
        path.plot(mem[-1:], dil[-1:], "*", color=c, ms=14)
    acc.set(xlabel="epoch", ylabel="accuracy", title="(a) accuracy")
    nc1.set(xlabel="epoch", ylabel="NC1 (dimensionless)", title="(b) within-class variability")
    md.set(
        xlabel="epoch",
        ylabel="distance / mean distance between clean means",
        title="(c) memorization, dilation",
    )
    path.set(
        xlabel="memorization (scale-free)",
        ylabel="dilation (scale-free)",
        title="(d) dilation vs memorization",
    )
    for ax in (acc, nc1, md, path):
        ax.grid(True, which="both", alpha=0.3)
        ax.legend(fontsize=7)
    return save_figure(fig, figures, "ce_vs_ls")


def print_summary(result: dict[str, Any]) -> None:
    """Print CE vs LS: clean test accuracy, final NC1, memorization, dilation; the UFM; the
    report's path."""
    final = result["final"]
    print(f"\n{'':<28}{'CE':>10}{'LS (α=0.1)':>12}")
    for key, label in (
        ("test_acc", "test accuracy (clean)"),
        ("acc_observed", "train acc (noisy labels)"),
        ("nc1", "NC1 (final)"),
        ("clean_nc1", "NC1 of clean samples"),
        ("memorization_scaled", "memorization (scaled)"),
        ("dilation_mean_scaled", "dilation (scaled)"),
    ):
        print(f"{label:<28}{final['ce'][key]:>10.4g}{final['ls'][key]:>12.4g}")
    print("\nnon-negative UFM (K=10): solver vs theorem")
    for row in result["ufm"]:
        print(
            f"  {row['loss']:<26} objective {row['objective']:.8f} (theorem "
            f"{row['theory_objective']:.8f}), {row['theory_geometry']}, NC1 {row['nc1']:.1e}"
        )
    print(f"\nreport: {result['report']}  ({result['seconds']:.0f} s)")
