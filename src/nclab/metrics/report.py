"""The result of a measurement: every NC number with what it is.

``METRICS`` is the single registry of report keys and their meaning; the README's metric
reference, the CLI table and the docstrings all describe these keys.
"""

from __future__ import annotations

import html
import json
import math
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from nclab.metrics.options import MetricOptions

__all__ = ["METRICS", "PER_CLASS", "CollapseReport"]

METRICS: dict[str, str] = {
    "nc1": "NC1 = (1/K) tr(Σ_W Σ_B^†) (Papyan et al. 2020); 0 at collapse",
    "nc1_colab": "NC1 without 1/K, tr(Σ_W Σ_B^†) (Papyan et al.'s notebook)",
    "nc1_trace_ratio": "tr Σ_W / tr Σ_B (Tirer et al. 2023, eq. 3)",
    "cdnv": "mean over class pairs of (σ²_c + σ²_c')/(2‖μ_c - μ_c'‖²) (Galanti et al. 2022)",
    "within_class_trace": "tr Σ_W, within-class scatter",
    "between_class_trace": "tr Σ_B = ‖M̃‖²_F / K, between-class scatter",
    "nc2_equinorm_means": "std/mean of ‖μ_c - μ_G‖ (n-1 std); 0 when equinorm",
    "nc2_equiangular_means": "mean_{c≠c'} |cos(μ̃_c, μ̃_c') + 1/(K-1)|; 0 for a simplex ETF",
    "nc2_cos_std_means": "std of cos(μ̃_c, μ̃_c') over class pairs",
    "nc2_etf_means": "‖G/‖G‖_F - (I - 11ᵀ/K)/√(K-1)‖_F, G = M̃M̃ᵀ; 0 for a simplex ETF",
    "nc2_of_means": "‖G/‖G‖_F - I/√K‖_F, G = MMᵀ (uncentred means); 0 for an orthogonal frame",
    "nc2_equinorm_weights": "std/mean of ‖w_c‖ (n-1 std)",
    "nc2_equiangular_weights": "mean_{c≠c'} |cos(w_c, w_c') + 1/(K-1)|",
    "nc2_cos_std_weights": "std of cos(w_c, w_c') over class pairs",
    "nc2_etf_weights": "‖G/‖G‖_F - (I - 11ᵀ/K)/√(K-1)‖_F, G = WWᵀ (rows centred if center_weights)",
    "nc2_of_weights": "‖G/‖G‖_F - I/√K‖_F, G = WWᵀ",
    "nc3_duality": "‖W/‖W‖_F - M̃/‖M̃‖_F‖²_F (self-duality)",
    "nc3_wh_etf": "‖WM̃ᵀ/‖WM̃ᵀ‖_F - (I - 11ᵀ/K)/√(K-1)‖_F",
    "nc4_ncc_mismatch": "fraction where nearest class centre ≠ argmax(Wh + b)",
    "classifier_accuracy": "fraction where argmax(Wh + b) = label",
    "ncc_accuracy": "fraction where nearest class centre = label",
    "bias_relation": "‖Wμ_G + b‖",
    "num_samples": "N, samples measured",
    "num_classes": "K, classes measured",
    "dim": "d, feature dimension",
    "between_rank": "r, numerical rank of M̃ used for Σ_B^†",
}


PER_CLASS: dict[str, str] = {
    "count": "n_c, samples of class c",
    "mean_norm": "‖μ_c - μ_G‖, distance of the class mean from the global mean",
    "within_variance": "σ²_c = mean over i in c of ‖h_i - μ_c‖²",
    "cdnv": "mean over c' ≠ c of (σ²_c + σ²_c')/(2‖μ_c - μ_c'‖²): class c's row of the CDNV",
    "ncc_accuracy": "fraction of class c whose nearest class centre is μ_c",
    "weight_norm": "‖w_c‖, norm of the classifier row",
    "classifier_accuracy": "fraction of class c with argmax(Wh + b) = c",
    "nc4_ncc_mismatch": "fraction of class c where nearest class centre ≠ argmax(Wh + b)",
}


@dataclass(frozen=True)
class CollapseReport:
    """Neural-collapse numbers of one feature set (one layer), with their context.

    ``values`` holds the metrics (keys of :data:`METRICS`); the weight-based keys are absent
    (not NaN) when no classifier was given. ``as_dict()`` adds the sizes as floats.
    ``per_class`` holds the per-class breakdowns (keys of :data:`PER_CLASS`; the classifier's
    only with a classifier), each a float64 numpy array over the measured ``classes``.
    """

    values: dict[str, float]
    num_samples: int
    num_classes: int
    dim: int
    between_rank: int
    classes: tuple[int, ...]
    class_counts: tuple[int, ...]
    options: MetricOptions = field(default_factory=MetricOptions)
    per_class: dict[str, np.ndarray[Any, Any]] = field(default_factory=dict)

    def __getitem__(self, key: str) -> float:
        return self.as_dict()[key]

    def __contains__(self, key: object) -> bool:
        return key in self.as_dict()

    def as_dict(self) -> dict[str, float]:
        """A flat dict of floats: every metric, then num_samples, num_classes, dim, between_rank."""
        sizes = {
            "num_samples": float(self.num_samples),
            "num_classes": float(self.num_classes),
            "dim": float(self.dim),
            "between_rank": float(self.between_rank),
        }
        return {**self.values, **sizes}

    def to_json(self) -> str:
        """One JSON object of ``as_dict()``; non-finite values are written as null."""
        clean = {k: (v if math.isfinite(v) else None) for k, v in self.as_dict().items()}
        return json.dumps(clean, sort_keys=False)

    def to_table(self) -> str:
        """A readable table: key, value, and what the value is."""
        rows = [(k, _fmt(v), METRICS.get(k, "")) for k, v in self.as_dict().items()]
        width = max(len(k) for k, _, _ in rows)
        vwidth = max(len(v) for _, v, _ in rows)
        opts = ", ".join(f"{k}={v}" for k, v in self.options.as_dict().items())
        lines = [f"{k:<{width}}  {v:>{vwidth}}  {d}" for k, v, d in rows]
        return "\n".join([*lines, f"options: {opts}"])

    def __str__(self) -> str:
        return self.to_table()

    def __repr__(self) -> str:
        shown = ", ".join(
            f"{k}={_fmt(self.values[k])}"
            for k in ("nc1", "nc2_etf_means", "nc3_duality")
            if k in self.values
        )
        return (
            f"CollapseReport(K={self.num_classes}, N={self.num_samples}, d={self.dim}, "
            f"{shown}; {len(self.values)} metrics, per_class: {sorted(self.per_class)})"
        )

    def _repr_html_(self) -> str:
        """The table for Jupyter: key, value, what the value is; the options below."""
        rows = "".join(
            f"<tr><td><code>{html.escape(k)}</code></td><td style='text-align:right'>"
            f"{html.escape(_fmt(v))}</td><td>{html.escape(METRICS.get(k, ''))}</td></tr>"
            for k, v in self.as_dict().items()
        )
        opts = ", ".join(f"{k}={v}" for k, v in self.options.as_dict().items())
        return (
            f"<table><caption>Neural collapse: K = {self.num_classes}, N = {self.num_samples}, "
            f"d = {self.dim}</caption><thead><tr><th>key</th><th>value</th><th>definition</th>"
            f"</tr></thead><tbody>{rows}</tbody></table><p>options: {html.escape(opts)}; "
            f"per-class breakdowns in <code>.per_class</code>: "
            f"{html.escape(', '.join(sorted(self.per_class)))}</p>"
        )


def _fmt(value: float) -> str:
    if math.isfinite(value) and value.is_integer() and abs(value) < 1e15:
        return str(int(value))
    return f"{value:.6g}"


def report_keys(with_weight: bool) -> list[str]:
    """The metric keys a report has, with or without a classifier (for docs and tests)."""
    weight_only = {k for k in METRICS if "weights" in k} | {
        "nc3_duality",
        "nc3_wh_etf",
        "nc4_ncc_mismatch",
        "classifier_accuracy",
        "bias_relation",
    }
    return [k for k in METRICS if with_weight or k not in weight_only]
