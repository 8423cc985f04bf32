"""Fitting the M-D model (ours, :mod:`nclab.models.md`) to a trained network, and predicting.

In the model the constraint D_k >= λ M_k binds wherever memorizing costs something, so a network's
measured ratio of dilation to memorization at the end of training estimates the inverse
expressivity: λ̂ = D / M overall (``dilation_mean / memorization`` of
:func:`nclab.metrics.measure_noise`) and λ̂_k = D_k / M_k per class. The fitted model then
predicts, at other noise rates, the scale-free memorization and dilation (÷ the mean distance
between clean class means: a network's feature scale is arbitrary, the model's is set by its
regularization) and the predicted test error of CE and of LS(α), whose difference is the
predicted CE-vs-LS test-accuracy gap.

Sources: a run directory written by ``nclab train`` (its ``metrics.csv``: the last evaluated
epoch's ``train`` row of the tracked ``layer``, with ``noise_rate``, ``num_classes``,
``memorization``, ``dilation_mean``), or features with their observed and true labels.
"""

from __future__ import annotations

import csv
import math
import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from nclab.losses import make_loss
from nclab.metrics import measure_noise
from nclab.models.md import MDModel

__all__ = ["MDFit", "fit", "prediction_error"]


@dataclass(frozen=True)
class MDFit:
    """A fitted inverse expressivity and what it was fitted on.

    expressivity : λ̂ = D / M overall. per_class : D_k / M_k (NaN where a class has no noisy
    sample, or no row per class in a run directory's table). noise : the measured fraction of
    noisy samples. num_classes : K. memorization_scaled, dilation_scaled : the measured values.
    per_class_n, lambda_w, lambda_h, smoothing : the model the predictions use (K classes,
    ``per_class_n`` samples each, d = K, symmetric noise, standard convention).
    """

    expressivity: float
    per_class: list[float]
    noise: float
    num_classes: int
    memorization_scaled: float
    dilation_scaled: float
    per_class_n: int = 100
    lambda_w: float = 5e-3
    lambda_h: float = 5e-3
    smoothing: float = 0.1
    source: str = ""
    extra: dict[str, Any] = field(default_factory=dict)

    def model(self, noise: float, loss: str = "ce") -> MDModel:
        """The fitted model at noise rate ``noise`` (rounded to a multiple of 1/n: the model
        has whole samples) with ``loss`` ``"ce"`` or ``"ls"`` (α = ``smoothing``)."""
        n = self.per_class_n
        eta = round(noise * n) / n
        return MDModel(
            make_loss(loss, smoothing=self.smoothing if loss == "ls" else 0.0),
            self.num_classes,
            n,
            self.num_classes,
            eta,
            self.expressivity,
            self.lambda_w,
            self.lambda_h,
        )

    def predict(self, noise_rates: list[float]) -> list[dict[str, float]]:
        """Per noise rate: the model's ``memorization_scaled``, ``dilation_scaled`` and
        ``test_error`` under CE (``ce_*``) and LS (``ls_*``), and ``accuracy_gap`` = CE's test
        error - LS's (the predicted test-accuracy advantage of label smoothing)."""
        out = []
        for eta in noise_rates:
            row: dict[str, float] = {"noise": eta}
            for loss in ("ce", "ls"):
                sol = self.model(eta, loss).theory()
                row[f"{loss}_memorization_scaled"] = sol.memorization_scaled
                row[f"{loss}_dilation_scaled"] = sol.dilation_scaled
                row[f"{loss}_test_error"] = sol.test_error
            row["accuracy_gap"] = row["ce_test_error"] - row["ls_test_error"]
            out.append(row)
        return out


def _from_run(run_dir: Path, layer: str | None) -> dict[str, Any]:
    table = run_dir / "metrics.csv"
    if not table.is_file():
        raise FileNotFoundError(f"source: {run_dir} holds no metrics.csv (a run of nclab train)")
    with table.open(newline="") as handle:
        rows = [
            r
            for r in csv.DictReader(handle)
            if r.get("split") == "train" and r.get("memorization") not in (None, "")
        ]
    layers = sorted({r["layer"] for r in rows})
    if layer is not None:
        rows = [r for r in rows if r["layer"] == layer]
    if not rows:
        raise ValueError(
            f"source: {table} has no train row with memorization"
            + (f" for layer {layer!r} (layers: {layers})" if layer is not None else "")
            + "; was the run trained with label noise?"
        )
    if layer is None and len(layers) > 1:
        raise ValueError(f"layer: {table} tracks several layers {layers}; name one")
    last = max(rows, key=lambda r: float(r["epoch"]))
    return {
        "noise": float(last["noise_rate"]),
        "num_classes": round(float(last["num_classes"])),
        "memorization": float(last["memorization"]),
        "dilation": float(last["dilation_mean"]),
        "memorization_scaled": float(last["memorization_scaled"]),
        "dilation_scaled": float(last["dilation_mean_scaled"]),
        "per_class": [],
        "source": f"{table}, epoch {last['epoch']}, layer {last['layer']}",
    }


def _from_features(features: Any, observed: Any, true: Any) -> dict[str, Any]:
    rep = measure_noise(features, observed, true)
    mem, dil = rep.per_class["memorization"], rep.per_class["dilation_mean"]
    return {
        "noise": rep["noise_rate"],
        "num_classes": len(dil),
        "memorization": rep["memorization"],
        "dilation": rep["dilation_mean"],
        "memorization_scaled": rep["memorization_scaled"],
        "dilation_scaled": rep["dilation_mean_scaled"],
        "per_class": [d / m if m > 0 else math.nan for d, m in zip(dil, mem, strict=True)],
        "source": "features",
    }


def fit(
    source: str | os.PathLike[str] | tuple[Any, Any, Any],
    *,
    layer: str | None = None,
    per_class: int = 100,
    lambda_w: float = 5e-3,
    lambda_h: float = 5e-3,
    smoothing: float = 0.1,
) -> MDFit:
    """Fit λ̂ = D / M (see the module docstring) on ``source``: a run directory (``layer``: the
    tracked layer, needed when it tracks several) or a tuple (features (N, d), observed labels,
    true labels). ``per_class``, ``lambda_w``, ``lambda_h`` and ``smoothing`` set the model
    that :meth:`MDFit.predict` solves. ValueError when the source has no memorization (no
    noisy sample, or a memorization of 0)."""
    if isinstance(source, tuple):
        if len(source) != 3:
            raise ValueError(
                f"source: expected (features, observed, true), got a tuple of {len(source)}"
            )
        got = _from_features(*source)
    else:
        got = _from_run(Path(source), layer)
    mem = got["memorization"]
    if not (isinstance(mem, float) and math.isfinite(mem) and mem > 0):
        raise ValueError(
            f"source: memorization is {mem!r}, so D / M is undefined (no noisy sample, or the "
            "noisy samples sit on their true class's clean mean)"
        )
    return MDFit(
        expressivity=got["dilation"] / mem,
        per_class=got["per_class"],
        noise=got["noise"],
        num_classes=got["num_classes"],
        memorization_scaled=got["memorization_scaled"],
        dilation_scaled=got["dilation_scaled"],
        per_class_n=per_class,
        lambda_w=lambda_w,
        lambda_h=lambda_h,
        smoothing=smoothing,
        source=got["source"],
    )


def prediction_error(
    fitted: MDFit, measured: dict[float, tuple[float, float]], loss: str = "ce"
) -> dict[str, float]:
    """Mean absolute error of the fitted model's scale-free memorization and dilation under
    ``loss`` against ``measured`` (noise rate -> (memorization_scaled, dilation_scaled)), and
    the largest one, over the given noise rates."""
    if not measured:
        raise ValueError("measured: expected at least one noise rate")
    pred = fitted.predict(sorted(measured))
    mem = [abs(p[f"{loss}_memorization_scaled"] - measured[p["noise"]][0]) for p in pred]
    dil = [abs(p[f"{loss}_dilation_scaled"] - measured[p["noise"]][1]) for p in pred]
    return {
        "memorization_mae": sum(mem) / len(mem),
        "dilation_mae": sum(dil) / len(dil),
        "max_error": max(mem + dil),
    }
