"""Memorization, dilation and corruption bias under label noise (Nguyen et al., ICLR 2023, MD).

Observed labels ỹ_i (what the network is trained on), true labels y_i, noisy samples ỹ_i ≠ y_i.
μ^clean_c is the mean feature of the *clean* samples of class c (ỹ_i = y_i = c); every class needs
at least one clean sample. With D = mean over class pairs c < c' of ‖μ^clean_c − μ^clean_c'‖ (the
scale of the clean geometry):

* **memorization** = mean over noisy samples of ‖h_i − μ^clean_{y_i}‖, the distance of a noisy
  sample from the clean centre of its *true* class (large when the network has moved it away to
  fit its wrong label); also per true class (NaN for a class without noisy samples);
* **dilation** of class c: the mean and the standard deviation (over the clean samples of c,
  population std) of ‖h_i − μ^clean_c‖; reported per class and averaged over classes; and
  ``clean_nc1``, NC1 (:mod:`nclab.metrics.nc1`) of the clean samples alone;
* **corruption bias** = mean over noisy samples of ⟨h_i − μ^clean_{ỹ_i}, u_i⟩ with
  u_i = (μ^clean_{y_i} − μ^clean_{ỹ_i}) / ‖μ^clean_{y_i} − μ^clean_{ỹ_i}‖: how far the noisy-labelled
  samples sit from their label's centroid towards the centroid of their true class (the
  projection on the unit direction between centroids); ``corruption_bias_fraction`` divides each
  projection by ‖μ^clean_{y_i} − μ^clean_{ỹ_i}‖ (0: at the label's centroid, fully memorized;
  1: at the true class's centroid).

The ``*_scaled`` keys divide memorization, dilation and corruption bias by D (scale-free). The
published code handles two classes; these definitions hold for any K. Streaming follows the
two-pass scheme of :mod:`nclab.metrics.accumulators` (clean class means, then distances); the
standard deviations come from float64 sums of d and d² (relative error ~1e-16 · mean²/variance).
"""

from __future__ import annotations

import dataclasses
import math
from dataclasses import dataclass
from typing import Any

import torch

from nclab.errors import InputTypeError
from nclab.metrics._inputs import as_features, as_labels, check_num_classes, infer_num_classes
from nclab.metrics.accumulators import (
    ClassMeans,
    ClassStatistics,
    _PassTwo,
    _route,
    between_basis,
    centred_products,
    check_statistics,
    choose_scale_exp,
    class_statistics,
    ldexp,
    ldexp_float,
    nc1_from_sums,
    workspace,
)
from nclab.metrics.nc1 import pair_distances_sq
from nclab.metrics.options import MetricOptions

__all__ = [
    "NOISE_METRICS",
    "NoiseAccumulator",
    "NoiseReport",
    "NoisyClassMeans",
    "measure_noise",
]

NOISE_METRICS: dict[str, str] = {
    "noise_rate": "fraction of samples whose observed label is not the true one",
    "memorization": "mean over noisy samples of ‖h_i - μ^clean_{y_i}‖ (true class)",
    "memorization_scaled": "memorization / D (D: mean distance between clean class means)",
    "dilation_mean": "class average of mean_{clean i in c} ‖h_i - μ^clean_c‖",
    "dilation_std": "class average of std_{clean i in c} ‖h_i - μ^clean_c‖",
    "dilation_mean_scaled": "dilation_mean / D",
    "dilation_std_scaled": "dilation_std / D",
    "clean_nc1": "NC1 of the clean samples alone",
    "corruption_bias": "mean projection of h_i - μ^clean_{ỹ_i} on the unit direction to μ^clean_{y_i}",
    "corruption_bias_scaled": "corruption_bias / D",
    "corruption_bias_fraction": "the projection as a fraction of ‖μ^clean_{y_i} - μ^clean_{ỹ_i}‖",
    "clean_mean_distance": "D, mean distance between clean class means",
}

_F64 = torch.float64
# Rows of the per-class table (class = true label for noisy samples, label for clean ones);
# _CLEAN_D2 is also the within-class sum of the clean NC1, _CLEAN_NC1 its projected term.
_CLEAN_N, _CLEAN_D, _CLEAN_D2, _NOISY_N, _MEM, _PROJ, _FRAC, _CLEAN_NC1 = range(8)


@dataclass(frozen=True)
class NoiseReport:
    """Memorization / dilation numbers; ``as_dict()`` is flat, ``per_class`` holds the arrays."""

    values: dict[str, float]
    per_class: dict[str, list[float]]

    def __getitem__(self, key: str) -> float:
        return self.values[key]

    def as_dict(self) -> dict[str, float]:
        return dict(self.values)


class NoisyClassMeans:
    """Pass 1 under label noise: the class means of all samples by observed label, and the clean
    class means, from one pass over the features.

    Two :class:`~nclab.metrics.accumulators.ClassMeans` (all samples; clean samples by mask)
    would convert every feature to float64 twice; here one accumulator of 2K classes keeps the
    clean samples of class c in row c and the noisy samples observed as c in row K + c, and
    ``compute`` adds the two rows for the observed-label statistics.

    Parameters
    ----------
    num_classes : K (labels are 0..K-1).
    dim, device, stage, scale_exp : as for :class:`~nclab.metrics.accumulators.ClassMeans`.
    """

    def __init__(
        self,
        num_classes: int,
        dim: int | None = None,
        device: torch.device | str | None = None,
        *,
        stage: bool = True,
        scale_exp: int = 0,
    ) -> None:
        self.num_classes = check_num_classes(num_classes)
        self._split = ClassMeans(
            2 * self.num_classes, dim, device, stage=stage, scale_exp=scale_exp
        )

    def update(self, features: Any, observed: Any, true: Any) -> None:
        """Add a batch: features (N, d), observed labels ỹ and true labels y (N,)."""
        h = as_features(features)
        obs = as_labels(observed, h.shape[0], h.device, name="observed")
        tru = as_labels(true, h.shape[0], h.device, name="true")
        k = self.num_classes
        valid = (obs >= 0) & (obs < k) & (tru >= 0) & (tru < k)
        rows = torch.where(obs == tru, obs, obs + k)
        self._split.update(h, torch.where(valid, rows, torch.full_like(rows, -1)))

    def merge(self, other: NoisyClassMeans) -> NoisyClassMeans:
        """Add the state of ``other`` (another shard); returns self."""
        if not isinstance(other, NoisyClassMeans):
            raise InputTypeError(f"other: expected a NoisyClassMeans, got {type(other).__name__}")
        self._split.merge(other._split)
        return self

    def all_reduce(self, group: Any = None) -> None:
        """Sum the state over all processes of ``group`` (torch.distributed), in place."""
        self._split.all_reduce(group)

    def compute(
        self, options: MetricOptions | None = None
    ) -> tuple[ClassStatistics, ClassStatistics]:
        """The statistics of all samples by observed label (with ``options``), and those of the
        clean samples (empty classes dropped; :class:`NoiseAccumulator` names them)."""
        opts = options or MetricOptions()
        counts, sums = self._split.state()
        k = self.num_classes
        clean_n, noisy_n, invalid_n = counts[:k], counts[k : 2 * k], counts[2 * k : 2 * k + 1]
        clean_s, noisy_s, invalid_s = sums[:k], sums[k : 2 * k], sums[2 * k : 2 * k + 1]
        name = "observed/true"
        observed = class_statistics(
            torch.cat([clean_n + noisy_n, invalid_n, torch.zeros_like(invalid_n)]),
            torch.cat([clean_s + noisy_s, invalid_s, torch.zeros_like(invalid_s)]),
            opts,
            name,
            scale_exp=self._split.scale_exp,
        )
        clean = class_statistics(
            torch.cat([clean_n, invalid_n, noisy_n.sum().reshape(1)]),
            torch.cat([clean_s, invalid_s, noisy_s.sum(0, keepdim=True)]),
            dataclasses.replace(opts, drop_empty_classes=True),
            name,
            scale_exp=self._split.scale_exp,
        )
        return observed, clean


class NoiseAccumulator(_PassTwo):
    """Pass 2: distances to the clean class means, and NC of the clean samples.

    Parameters
    ----------
    clean : the :class:`ClassStatistics` of the clean samples (pass 1: the second result of
        :meth:`NoisyClassMeans.compute`, or ``ClassMeans.update(h, observed, mask=observed ==
        true)`` then ``compute(MetricOptions(drop_empty_classes=True))``, so that a class
        without clean samples is reported here by name).
    stage : gather small batches before processing them (see
        :class:`~nclab.metrics.accumulators._Accumulator`); False for data given whole.
    """

    _pass1_name = "clean"

    def __init__(self, clean: ClassStatistics, *, stage: bool = True) -> None:
        check_statistics(clean, "clean")
        super().__init__(
            clean.num_total_classes, clean.dim, clean.means.device, stage, clean.scale_exp
        )
        if clean.num_classes != clean.num_total_classes:
            missing = sorted(set(range(clean.num_total_classes)) - set(clean.classes.tolist()))
            raise ValueError(f"labels: class(es) {missing} have no clean sample")
        self.clean = self._pass1 = clean
        k, means = self.num_classes, clean.means
        # Every sample is centred at the clean mean of its true class, c_i = h_i - μ_{y_i}, and
        # multiplied by the between-class basis of the clean means (one GEMM): ‖c_i‖ is the
        # dilation (clean) or memorization (noisy) distance, the first r coordinates give the
        # clean NC1 term, and the coordinates map to c_i·μ̃_j, so that the corruption-bias
        # projection ⟨h_i - μ_o, μ_t - μ_o⟩ = c_i·(μ̃_t - μ̃_o) + ‖μ_t - μ_o‖² needs no
        # uncentred dot products (o = ỹ_i, t = y_i).
        self._rhs, to_means = between_basis(clean.svd, k)
        self._r = clean.rank
        # An extra zero row for an invalid label (reported at compute).
        self._to_means_t = torch.cat([to_means.T, to_means.new_zeros(1, to_means.shape[0])])
        self._means_ext = torch.cat([means, means.new_zeros(1, clean.dim)])
        # Distances from the centred means (no cancellation against a large global mean).
        centred = torch.cat([clean.centred_means, means.new_zeros(1, clean.dim)])
        self._gap = pair_distances_sq(centred).sqrt()
        self._table = torch.zeros(8, k + 1, dtype=_F64, device=means.device)

    def update(self, features: Any, observed: Any, true: Any) -> None:
        """Add a batch: features (N, d), observed labels ỹ and true labels y (N,)."""
        h = as_features(features)
        obs = as_labels(observed, h.shape[0], h.device, name="observed")
        tru = as_labels(true, h.shape[0], h.device, name="true")
        h, obs_rows = self._prepare(h, obs)
        self._add(h, obs_rows, _route(tru.to(h.device), self.num_classes, None))

    def _process(self, h: torch.Tensor, *rows: torch.Tensor) -> None:
        obs_rows, tru_rows = rows
        k, work = self.num_classes, workspace(h.device)
        width = 2 * self._rhs.shape[0] + 16
        for part, z, dist in centred_products(work, h, tru_rows, self._means_ext, self._rhs, width):
            o, t = obs_rows[part], tru_rows[part]
            stats = work.buffer("stats", 8, o.shape[0])
            clean = o == t
            gap = self._gap[o, t]
            # c_i·(μ̃_t - μ̃_o) from the coordinates: O(p) per sample, not O(p K).
            towards = self._to_means_t.index_select(0, t) - self._to_means_t.index_select(0, o)
            proj = (z.T * towards).sum(1)
            proj = (proj + gap.square()) / gap
            stats[_CLEAN_N].copy_(clean)
            stats[_CLEAN_D].copy_(torch.where(clean, dist, 0.0))
            stats[_CLEAN_D2].copy_(torch.where(clean, dist.square(), 0.0))
            stats[_NOISY_N].copy_(~clean)
            stats[_MEM].copy_(torch.where(clean, 0.0, dist))
            stats[_PROJ].copy_(torch.where(clean, 0.0, proj))
            stats[_FRAC].copy_(torch.where(clean, 0.0, proj / gap))
            stats[_CLEAN_NC1].copy_(torch.where(clean, z[: self._r].square().sum(0), 0.0))
            # Columns are true classes (a clean sample's label is its true class); an invalid
            # label, observed or true, lands in column K and is reported at compute.
            self._table.index_add_(1, torch.where(o < k, t, k), stats)

    def compute(self) -> NoiseReport:
        """The memorization / dilation report (see the module docstring for every key)."""
        k = self.num_classes
        table = self._final_table()
        if table[_CLEAN_N, k] + table[_NOISY_N, k] > 0:
            raise ValueError("observed/true: labels outside the class range [0, K)")
        if not bool(torch.isfinite(table[[_CLEAN_D2, _MEM]]).all()):
            raise ValueError("features: contain NaN or Inf values")
        t = table[:, :k].T
        clean_n, noisy_n = t[:, _CLEAN_N], t[:, _NOISY_N]
        if not torch.equal(clean_n, self.clean.counts.to(_F64)):
            raise ValueError(
                "features: pass 2 saw different data than pass 1 (clean counts "
                f"{clean_n.long().tolist()} vs {self.clean.counts.tolist()}); feed the same "
                "batches twice"
            )
        _, clean_nc1 = nc1_from_sums(
            t[:, _CLEAN_D2],
            t[:, _CLEAN_NC1],
            clean_n,
            self.clean.rank,
            self.clean.options.within_class,
        )
        centred = self.clean.centred_means.cpu()
        iu = torch.triu_indices(k, k, offset=1)
        scale = float(pair_distances_sq(centred)[iu[0], iu[1]].sqrt().mean())
        dil_mean = t[:, _CLEAN_D] / clean_n
        dil_std = (t[:, _CLEAN_D2] / clean_n - dil_mean.square()).clamp_min(0.0).sqrt()
        mem_per_class = t[:, _MEM] / noisy_n  # NaN where a class has no noisy sample
        total_noisy = float(noisy_n.sum())
        nan = float("nan")
        mem = float(t[:, _MEM].sum()) / total_noisy if total_noisy else nan
        proj = float(t[:, _PROJ].sum()) / total_noisy if total_noisy else nan
        frac = float(t[:, _FRAC].sum()) / total_noisy if total_noisy else nan
        # Coinciding clean class means (D = 0) leave the scale-free values undefined: NaN, as
        # docs/conventions.md states.
        inv = 1.0 / scale if scale > 0 else nan
        back = -self.scale_exp  # distances back from the units of 2^-scale_exp
        values = {
            "noise_rate": total_noisy / float(clean_n.sum() + noisy_n.sum()),
            "memorization": ldexp_float(mem, back),
            "memorization_scaled": mem * inv,
            "dilation_mean": ldexp_float(float(dil_mean.mean()), back),
            "dilation_std": ldexp_float(float(dil_std.mean()), back),
            "dilation_mean_scaled": float(dil_mean.mean()) * inv,
            "dilation_std_scaled": float(dil_std.mean()) * inv,
            "clean_nc1": clean_nc1,
            "corruption_bias": ldexp_float(proj, back),
            "corruption_bias_scaled": proj * inv,
            "corruption_bias_fraction": frac,
            "clean_mean_distance": ldexp_float(scale, back),
        }
        per_class = {
            "memorization": ldexp(mem_per_class, back).tolist(),
            "dilation_mean": ldexp(dil_mean, back).tolist(),
            "dilation_std": ldexp(dil_std, back).tolist(),
            "noisy_count": noisy_n.tolist(),
            "clean_count": clean_n.tolist(),
        }
        if math.isnan(mem):
            values["memorization_scaled"] = nan
        return NoiseReport(values=values, per_class=per_class)


def measure_noise(
    features: Any, observed: Any, true: Any, *, num_classes: int | None = None
) -> NoiseReport:
    """Memorization, dilation and corruption bias of features held in memory (see the module
    docstring for every definition).

    Parameters
    ----------
    features : (N, d) array or tensor.
    observed : (N,) labels the network was trained on (ỹ).
    true : (N,) true labels (y).
    num_classes : K; default max(observed, true) + 1.
    """
    h = as_features(features)
    obs = as_labels(observed, h.shape[0], h.device, name="observed")
    tru = as_labels(true, h.shape[0], h.device, name="true")
    if num_classes is None:
        num_classes = infer_num_classes(torch.cat([obs, tru]), h.shape[0], name="observed/true")
    k = check_num_classes(num_classes)
    means = NoisyClassMeans(k, stage=False, scale_exp=choose_scale_exp(h))
    means.update(h, obs, tru)
    acc = NoiseAccumulator(means.compute()[1], stage=False)
    acc.update(h, obs, tru)
    return acc.compute()
