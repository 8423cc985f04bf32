"""Streaming accumulators for the neural-collapse suite: two exact passes, mergeable, all-reducible.

Pass 1, :class:`ClassMeans`: per-class counts and sums in float64 (O(K d) memory). Its
``compute`` fixes the class means, the global mean and the thin SVD M̃ = U S Vᵀ of the centred means.

Pass 2, :class:`CollapseAccumulator`: given those statistics (and optionally a classifier W, b),
per-class sums of ‖h_i - μ_c‖², of ‖(h_i - μ_c) V_r S_r^{-1}‖², and the nearest-class-centre and
classifier decisions. Its ``compute`` returns the :class:`~nclab.metrics.report.CollapseReport`.

Two passes are needed because Σ_W must be measured around the *final* class means, projected on
the *final* between-class subspace; one pass could do that exactly only with a d x d scatter.
All state is sums, so ``merge`` (shards in one process) and ``all_reduce`` (one collective over
``torch.distributed``) give the same numbers as one process seeing all the data, up to the
floating-point order of the additions.

Value checks cost no host synchronization per batch: a label outside 0..K-1 is routed to an extra
"invalid" row and a NaN/Inf feature propagates into the sums; both raise at ``compute``.
"""

from __future__ import annotations

import math
import threading
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any, TypeVar

import torch

from nclab.devices import check_device
from nclab.errors import InputTypeError
from nclab.metrics import nc1 as _nc1
from nclab.metrics import nc2 as _nc2
from nclab.metrics import nc3 as _nc3
from nclab.metrics._inputs import (
    as_classifier,
    as_features,
    as_labels,
    as_mask,
    check_num_classes,
    check_state_size,
)
from nclab.metrics.options import MetricOptions
from nclab.metrics.report import CollapseReport

__all__ = ["ClassMeans", "ClassStatistics", "CollapseAccumulator", "class_statistics"]

_F64 = torch.float64


class _Workspace:
    """Float64 buffers reused across batches, chunks and accumulators.

    The data are converted to float64 and centred in chunks of at most ``inner(d)`` rows (about
    2^19 values, 4 MiB, cache sized; 2^24 on CUDA), written into these buffers: fresh
    allocations cost more than the arithmetic (on the CPU a fresh 4 MiB buffer is a fresh mapping
    whose every page faults on first touch, ~0.5 ms, ten times the conversion itself). Per-sample
    values are gathered over runs of ``outer(d, width)`` rows before the small reductions, to keep
    the count of small tensor operations per sample low; a run holds at most ~2^20 per-sample
    values (2^25 on CUDA), so that with many classes (``width`` ~ 3K values per sample) it
    shortens instead of growing with K. Buffers grow to the largest request and are handed out
    as views valid until the next request of the same name; the memory stays a bounded constant,
    whatever N is.
    """

    def __init__(self, device: torch.device) -> None:
        self.device = device
        self.values = 1 << (24 if device.type == "cuda" else 19)
        self._buffers: dict[str, torch.Tensor] = {}

    def inner(self, dim: int) -> int:
        """Rows per conversion chunk for features of dimension ``dim``."""
        return max(1, self.values // dim)

    def outer(self, dim: int, width: int) -> int:
        """Rows per run of per-sample reductions that keep ``width`` values per sample: 2^14
        rows (or one conversion chunk, when larger), fewer when the run would hold more than
        2 ``values``; a multiple of ``inner(dim)`` when it is not shorter than one."""
        inner = self.inner(dim)
        rows = min(max(1 << 14, inner), 2 * self.values // max(1, width))
        return rows - rows % inner if rows >= inner else max(1, rows)

    def buffer(self, name: str, *shape: int) -> torch.Tensor:
        """A contiguous float64 view of ``shape`` on buffer ``name`` (contents undefined)."""
        size = math.prod(shape)
        buf = self._buffers.get(name)
        if buf is None or buf.numel() < size:
            grown = size if buf is None else max(size, 2 * buf.numel())
            buf = self._buffers[name] = torch.empty(grown, dtype=_F64, device=self.device)
        return buf[:size].view(shape)

    def load(self, rows: torch.Tensor) -> torch.Tensor:
        """``rows`` converted to float64 in buffer ``h``."""
        h = self.buffer("h", *rows.shape)
        h.copy_(rows)
        return h


_local = threading.local()


def workspace(device: torch.device) -> _Workspace:
    """The workspace for ``device``: on the CPU one per thread, shared by every accumulator (the
    calls of one thread never interleave); elsewhere a new one (the CUDA caching allocator
    already recycles freed blocks, and a shared one would hold GPU memory for good)."""
    if device.type != "cpu":
        return _Workspace(device)
    work: _Workspace | None = getattr(_local, "work", None)
    if work is None:
        work = _local.work = _Workspace(device)
    return work


def chunk_rows(
    h: torch.Tensor, y: torch.Tensor, rows: int
) -> Iterator[tuple[torch.Tensor, torch.Tensor]]:
    """Consecutive slices of ``rows`` rows of (features, labels)."""
    for start in range(0, h.shape[0], rows):
        yield h[start : start + rows], y[start : start + rows]


def centred_products(
    work: _Workspace,
    h: torch.Tensor,
    rows: torch.Tensor,
    centres: torch.Tensor,
    rhs: torch.Tensor,
    width: int,
) -> Iterator[tuple[slice, torch.Tensor, torch.Tensor]]:
    """For each run of at most ``work.outer(d, ...)`` samples: its slice of the batch, the
    products ``rhs @ (h_i - c_i)`` (columns, ``rhs.shape[0]`` x m) and the norms ‖h_i - c_i‖ (m,),
    with c_i = ``centres[rows[i]]``; ``width``: the values per sample the caller computes from
    them (the run is shortened so that everything stays a bounded size).

    Each chunk is converted to float64 and centred before the product, so that features close to
    their centre lose no digits to cancellation. The results live in ``work`` and are overwritten
    by the next run.
    """
    dim = h.shape[1]
    outer = work.outer(dim, rhs.shape[0] + width)
    inner = min(work.inner(dim), outer)
    for first in range(0, h.shape[0], outer):
        h_out, y_out = h[first : first + outer], rows[first : first + outer]
        m = h_out.shape[0]
        z, norms = work.buffer("z", rhs.shape[0], m), work.buffer("norms", m)
        for start in range(0, m, inner):
            part = slice(start, start + inner)
            rows_in = h_out[part]
            gathered = work.buffer("g", *rows_in.shape)
            torch.index_select(centres, 0, y_out[part], out=gathered)
            if rows_in.dtype == _F64:  # no conversion: centre straight from the input
                centred = torch.sub(rows_in, gathered, out=gathered)
            else:
                centred = work.load(rows_in).sub_(gathered)
            torch.mm(rhs, centred.T, out=z[:, part])
            torch.linalg.vector_norm(centred, dim=1, out=norms[part])
        yield slice(first, first + m), z, norms


def nc1_from_sums(
    within: torch.Tensor, proj: torch.Tensor, counts: torch.Tensor, rank: int, within_class: str
) -> tuple[float, float]:
    """tr(Σ_W) and NC1 = tr(Σ_W Σ_B^†)/K from per-class sums of ‖h_i - μ_c‖² (``within``) and
    of ‖(h_i - μ_c) V_r S_r^{-1}‖² (``proj``) over ``counts`` samples: pooled (divide the totals
    by N) or class-balanced (mean over classes of the per-class averages); NC1 is inf (nan when
    tr(Σ_W) = 0 too) when the class means coincide (rank 0)."""
    if within_class == "pooled":
        n_total = float(counts.sum())
        tr_w, nc1 = float(within.sum()) / n_total, float(proj.sum()) / n_total
    else:
        tr_w, nc1 = float((within / counts).mean()), float((proj / counts).mean())
    if rank == 0:
        nc1 = float("inf") if tr_w > 0 else float("nan")
    return tr_w, nc1


def between_basis(svd: _nc1.BetweenClassSVD, num_classes: int) -> tuple[torch.Tensor, torch.Tensor]:
    """The rows that pass 2 multiplies the centred features with, and the map to class scores.

    Returns ``rhs`` (p x d) = [V_r S_r^{-1} | V_{r..p}]ᵀ, p = min(K - 1, q) columns of V, and
    ``to_means`` (p x K) with (h - μ)·μ̃_j = Σ_k [rhs (h - μ)]_k to_means_kj. The first r
    coordinates give the NC1 term ‖(h - μ) V_r S_r^{-1}‖² as their sum of squares. Centred means
    have rank <= K - 1 (Σ_c n_c μ̃_c = 0 for the sample mean, Σ_c μ̃_c = 0 for the class mean),
    so the K-th singular value is rounding and its column is left out.
    """
    p = min(num_classes - 1, svd.v.shape[1])
    scale = torch.ones(p, dtype=_F64, device=svd.v.device)
    scale[: svd.rank] = 1.0 / svd.s[: svd.rank]
    rhs = (svd.v[:, :p] * scale).T.contiguous()
    to_means = (svd.s[:p] / scale).unsqueeze(1) * svd.u[:, :p].T
    return rhs, to_means


def _route(y: torch.Tensor, num_classes: int, mask: torch.Tensor | None) -> torch.Tensor:
    """Row of each sample without a host sync: its class; K for a label outside 0..K-1 (counted,
    reported at compute); K + 1 for a sample excluded by ``mask`` (ignored)."""
    valid = (y >= 0) & (y < num_classes)
    rows = torch.where(valid, y, torch.full_like(y, num_classes))
    if mask is not None:
        rows = torch.where(mask, rows, torch.full_like(y, num_classes + 1))
    return rows


# float64 features whose largest magnitude lies outside [2^-SAFE, 2^SAFE] are multiplied by a
# power of two (exact) before any sum: squares of such values overflow or lose their digits as
# subnormals, and the Gram matrices of their means (fourth powers) fail much sooner.
SAFE_EXPONENT = 200


def choose_scale_exp(features: torch.Tensor) -> int:
    """The exponent e such that ``features * 2**e`` has its largest magnitude in [1/2, 1), or 0
    when no scaling is needed (float32 and narrower inputs never need it: their squares are far
    inside float64's range). One min/max reduction of float64 input."""
    if features.dtype != _F64 or features.numel() == 0:
        return 0
    low, high = torch.aminmax(features)
    largest = max(-float(low), float(high))
    if not math.isfinite(largest) or largest == 0.0:
        return 0  # non-finite input is reported by name at compute
    exponent = math.frexp(largest)[1]
    return -exponent if abs(exponent) > SAFE_EXPONENT else 0


def ldexp(t: torch.Tensor, exp: int) -> torch.Tensor:
    """t · 2**exp, exact while the result is a normal float64 (two factors, each within range)."""
    if exp == 0:
        return t
    half = exp // 2
    return t * (2.0**half) * (2.0 ** (exp - half))


def ldexp_float(x: float, exp: int) -> float:
    """x · 2**exp as a Python float; ±inf where the true value exceeds float64's range."""
    try:
        return math.ldexp(x, exp)
    except OverflowError:
        return math.copysign(math.inf, x)


def _check_scale_exp(scale_exp: Any) -> int:
    if isinstance(scale_exp, bool) or not isinstance(scale_exp, int) or abs(scale_exp) > 1100:
        raise ValueError(f"scale_exp: expected an integer in [-1100, 1100], got {scale_exp!r}")
    return scale_exp


def _distributed() -> bool:
    import torch.distributed as dist

    return bool(dist.is_available() and dist.is_initialized())


def _all_reduce_sum(tensors: list[torch.Tensor], group: Any = None) -> list[torch.Tensor]:
    """Sum tensors across the processes of ``group`` with one collective (float64 buffer)."""
    import torch.distributed as dist

    if not _distributed():
        return tensors  # a single process: its sums are already the total
    flat = torch.cat([t.reshape(-1).to(_F64) for t in tensors])
    dist.all_reduce(flat, op=dist.ReduceOp.SUM, group=group)
    out, start = [], 0
    for t in tensors:
        out.append(flat[start : start + t.numel()].reshape(t.shape).to(t.dtype))
        start += t.numel()
    return out


@dataclass(frozen=True)
class ClassStatistics:
    """What pass 1 fixes: class means, global mean, centred means and the between-class basis.

    Attributes
    ----------
    classes : original class indices kept (all of 0..K-1 unless empty classes were dropped).
    counts : n_c per kept class (int64).
    means : μ_c, K x d float64.
    global_mean : μ_G, float64 (sample mean or mean of class means, per ``options``).
    centred_means : M̃ with rows μ_c - μ_G.
    svd : thin SVD of M̃ and its numerical rank r (<= K - 1), see :class:`BetweenClassSVD`.
    label_map : routed row (0..K_total - 1 a class, K_total invalid, K_total + 1 masked out) ->
        kept index; -1 for an invalid label or a dropped class, -2 for a masked-out sample.
    scale_exp : the features were multiplied by 2**scale_exp before any sum (0 for features in
        a safe range; see :func:`choose_scale_exp`): the means and the SVD are in those units.
    """

    num_total_classes: int
    classes: torch.Tensor
    counts: torch.Tensor
    means: torch.Tensor
    global_mean: torch.Tensor
    centred_means: torch.Tensor
    svd: _nc1.BetweenClassSVD
    label_map: torch.Tensor
    options: MetricOptions
    scale_exp: int = 0

    @property
    def num_classes(self) -> int:
        return int(self.classes.numel())

    @property
    def rank(self) -> int:
        return self.svd.rank

    @property
    def num_samples(self) -> int:
        return int(self.counts.sum())

    @property
    def dim(self) -> int:
        return int(self.means.shape[1])


def check_statistics(stats: Any, name: str) -> None:
    """Refuse anything but the :class:`ClassStatistics` of a pass 1, naming the argument."""
    if not isinstance(stats, ClassStatistics):
        raise InputTypeError(
            f"{name}: expected the ClassStatistics of pass 1 (ClassMeans(...).compute()), "
            f"got {type(stats).__name__}"
        )


def stage_rows(dim: int, device: torch.device) -> int:
    """Rows of an accumulator's stage for features of dimension ``dim``: about 2^20 values on
    the CPU, 2^22 elsewhere (see :meth:`_Accumulator._add`)."""
    return max(1, (1 << (22 if device.type == "cuda" else 20)) // dim)


class _Accumulator:
    """Shared bookkeeping: dimension and device fixed by the first batch (or the constructor),
    and the stage that gathers small batches.

    Every batch costs a fixed ~50-100 µs of small tensor operations on the CPU (kernel launches
    on a GPU) whatever its size, as much as the arithmetic of ~100 rows of width 512: streaming
    batches of 128 took 3x the time of one batch. So a batch of fewer than half a stage
    (:func:`stage_rows`) is copied into a per-accumulator buffer, in its own dtype, and the
    buffer is processed as one batch when full, and before ``compute``, ``merge`` and
    ``all_reduce``; larger batches are processed at once. The buffer grows with what it holds,
    up to a stage. The sums are the same up to the order of the floating-point additions.
    ``stage=False`` processes every batch at once (for data given whole, as :func:`measure`
    does: staging one batch would only copy it).
    """

    def __init__(
        self,
        num_classes: int,
        dim: int | None,
        device: torch.device | str | None,
        stage: bool = True,
        scale_exp: int = 0,
    ):
        self.num_classes = check_num_classes(num_classes)
        self.scale_exp = _check_scale_exp(scale_exp)
        if dim is not None and (not isinstance(dim, int) or dim < 1):
            raise ValueError(f"dim: expected a positive integer, got {dim!r}")
        self.dim = dim
        self.device = check_device(device) if device is not None else None
        self._staging = stage
        self._stage: torch.Tensor | None = None
        self._stage_labels: torch.Tensor | None = None
        self._staged = 0

    def _process(self, h: torch.Tensor, *rows: torch.Tensor) -> None:
        """Add a batch of features ``h`` (on the accumulator's device) with its routed label
        rows (one or more int64 vectors, see ``_route``)."""
        raise NotImplementedError

    def _add(self, h: torch.Tensor, *rows: torch.Tensor) -> None:
        """:meth:`_process` the batch now, or stage it when it is small (see the class doc)."""
        m, capacity = h.shape[0], stage_rows(h.shape[1], h.device)
        if not self._staging or 2 * m >= capacity:
            self._flush()
            self._process(h, *rows)
            return
        stage, labels = self._stage, self._stage_labels
        if self._staged and (
            self._staged + m > capacity or stage is None or stage.dtype != h.dtype
        ):
            self._flush()
        lo, hi = self._staged, self._staged + m
        if stage is None or labels is None or stage.dtype != h.dtype or stage.shape[0] < hi:
            size = min(capacity, 2 * hi)
            grown, grown_labels = h.new_empty(size, h.shape[1]), rows[0].new_empty(len(rows), size)
            if lo:  # same dtype: a change of dtype flushed the stage above
                assert stage is not None and labels is not None
                grown[:lo] = stage[:lo]
                grown_labels[:, :lo] = labels[:, :lo]
            stage, labels = self._stage, self._stage_labels = grown, grown_labels
        stage[lo:hi] = h
        for j, r in enumerate(rows):
            labels[j, lo:hi] = r
        self._staged = hi

    def _flush(self) -> None:
        """Process the staged batches, if any."""
        if self._staged and self._stage is not None and self._stage_labels is not None:
            n, self._staged = self._staged, 0
            self._process(self._stage[:n], *self._stage_labels[:, :n])

    def _prepare(
        self, features: Any, labels: Any, mask: Any = None
    ) -> tuple[torch.Tensor, torch.Tensor]:
        h = as_features(features)
        if self.dim is None:
            self.dim = int(h.shape[1])
        elif h.shape[1] != self.dim:
            raise ValueError(
                f"features: expected {self.dim} columns (as in earlier batches), got {h.shape[1]}"
            )
        if self.device is None:
            self.device = h.device
        h = h.to(self.device)
        if self.scale_exp:
            h = ldexp(h.to(_F64), self.scale_exp)
        y = as_labels(labels, h.shape[0], self.device)
        return h, _route(y, self.num_classes, as_mask(mask, h.shape[0], self.device))

    def _check_compatible(self, other: _Accumulator) -> None:
        if type(other) is not type(self):
            raise InputTypeError(
                f"other: expected a {type(self).__name__}, got {type(other).__name__}"
            )
        if (
            other.num_classes != self.num_classes
            or (other.dim is not None and self.dim is not None and other.dim != self.dim)
            or other.scale_exp != self.scale_exp
        ):
            raise ValueError(
                f"other: accumulators disagree (num_classes {self.num_classes} vs "
                f"{other.num_classes}, dim {self.dim} vs {other.dim}, scale_exp "
                f"{self.scale_exp} vs {other.scale_exp})"
            )


class ClassMeans(_Accumulator):
    """Pass 1: per-class counts and float64 sums of the features.

    Parameters
    ----------
    num_classes : K, the number of classes (labels are 0..K-1).
    dim : feature dimension d; inferred from the first batch when omitted (needed up front only
        by a process that may see no batch before ``all_reduce``).
    device : where the state lives; default the device of the first batch.
    stage : gather small batches before processing them (see :class:`_Accumulator`); False for
        data given whole.
    scale_exp : multiply every feature by 2**scale_exp (exact) before summing; 0 (default)
        unless the float64 features lie far outside unit scale (beyond 2^±200), where squares
        overflow or turn subnormal: :func:`measure` picks it with :func:`choose_scale_exp`;
        streaming callers with such data pass the same value to every shard. The reports undo
        it (scale laws), so the numbers do not depend on it.
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
        super().__init__(num_classes, dim, device, stage, scale_exp)
        self._counts: torch.Tensor | None = None
        self._sums: torch.Tensor | None = None
        if dim is not None:
            self._allocate()

    def _allocate(self) -> None:
        assert self.dim is not None
        check_state_size(self.num_classes, self.dim)
        k1 = self.num_classes + 2
        self._counts = torch.zeros(k1, dtype=torch.int64, device=self.device)
        self._sums = torch.zeros(k1, self.dim, dtype=_F64, device=self.device)

    def update(self, features: Any, labels: Any, mask: Any = None) -> None:
        """Add a batch: ``features`` (N, d) numpy or torch (any float dtype), ``labels`` (N,);
        ``mask`` (N,) bool, optional: only the samples where it is True count."""
        h, y = self._prepare(features, labels, mask)
        if self._sums is None:
            self._allocate()
        self._add(h, y)

    def _process(self, h: torch.Tensor, *rows: torch.Tensor) -> None:
        (y,) = rows
        assert self._counts is not None and self._sums is not None
        self._counts += torch.bincount(y, minlength=self.num_classes + 2)
        work = workspace(self._sums.device)
        for hs, ys in chunk_rows(h, y, work.inner(h.shape[1])):
            self._sums.index_add_(0, ys, hs if hs.dtype == _F64 else work.load(hs))

    def merge(self, other: ClassMeans) -> ClassMeans:
        """Add the state of ``other`` (e.g. another shard) into this one; returns self."""
        self._check_compatible(other)
        self._flush()
        other._flush()
        if other._sums is None:
            return self
        if self._sums is None:
            self.dim, self.device = other.dim, other.device
            self._allocate()
        assert self._counts is not None and self._sums is not None
        self._counts += other._counts.to(self._counts.device)  # type: ignore[union-attr]
        self._sums += other._sums.to(self._sums.device)
        return self

    def all_reduce(self, group: Any = None) -> None:
        """Sum the state over all processes of ``group`` (torch.distributed), in place; a no-op
        when torch.distributed is not initialized (one process holds the whole sum)."""
        self._flush()
        if not _distributed():
            return
        if self._sums is None:
            raise RuntimeError(
                "all_reduce: this process saw no batch, so its dimension is unknown; "
                "pass dim= to ClassMeans"
            )
        assert self._counts is not None
        self._counts, self._sums = _all_reduce_sum([self._counts, self._sums], group)

    def state(self) -> tuple[torch.Tensor, torch.Tensor]:
        """Counts (K + 2,) int64 on the CPU and float64 sums (K + 2, d) after the staged
        batches: rows 0..K-1 the classes, K labels outside 0..K-1, K + 1 masked-out samples."""
        self._flush()
        if self._sums is None or self._counts is None:
            raise ValueError("features: no batch was given to the accumulator")
        return self._counts.cpu(), self._sums

    def compute(self, options: MetricOptions | None = None) -> ClassStatistics:
        """Fix the class means, the global mean and the between-class basis."""
        return class_statistics(*self.state(), options or MetricOptions(), scale_exp=self.scale_exp)


def class_statistics(
    counts_all: torch.Tensor,
    sums: torch.Tensor,
    opts: MetricOptions,
    labels_name: str = "labels",
    *,
    scale_exp: int = 0,
) -> ClassStatistics:
    """The :class:`ClassStatistics` of per-class counts (K + 2,) and float64 sums (K + 2, d), laid
    out as :meth:`ClassMeans.state` returns them; errors name the labels ``labels_name``."""
    k = counts_all.shape[0] - 2
    invalid = int(counts_all[k])
    if invalid:
        raise ValueError(f"{labels_name}: {invalid} value(s) outside the class range [0, {k})")
    if not bool(torch.isfinite(sums[: k + 1]).all()):
        raise ValueError("features: contain NaN or Inf values")
    counts = counts_all[:k]
    empty = torch.nonzero(counts == 0).flatten().tolist()
    if empty and not opts.drop_empty_classes:
        raise ValueError(
            f"{labels_name}: class(es) {empty} of 0..{k - 1} have no samples; pass "
            "drop_empty_classes=True to measure the remaining classes, or set num_classes"
        )
    kept = torch.nonzero(counts > 0).flatten()
    if kept.numel() < 2:
        raise ValueError(
            f"{labels_name}: at least 2 classes need samples, got {kept.numel()} "
            f"(classes {kept.tolist()})"
        )
    label_map = torch.full((k + 2,), -1, dtype=torch.int64)
    label_map[kept] = torch.arange(kept.numel())
    label_map[k + 1] = -2
    kept_dev = kept.to(sums.device)
    n = counts[kept].to(device=sums.device, dtype=_F64)
    means = sums[kept_dev] / n.unsqueeze(1)
    if opts.global_mean == "sample":
        global_mean = sums[:k].sum(0) / n.sum()
    else:
        global_mean = means.mean(0)
    centred = means - global_mean
    svd = _nc1.between_class_svd(centred, opts.rank_rtol)
    return ClassStatistics(
        num_total_classes=k,
        classes=kept,
        counts=counts[kept],
        means=means,
        global_mean=global_mean,
        centred_means=centred,
        svd=svd,
        label_map=label_map.to(sums.device),
        options=opts,
        scale_exp=scale_exp,
    )


_P = TypeVar("_P", bound="_PassTwo")


class _PassTwo(_Accumulator):
    """Shared by the pass-2 accumulators: float64 per-class sums in ``_table`` around the
    statistics ``_pass1`` that pass 1 fixed (``_pass1_name`` names them in errors)."""

    _pass1: ClassStatistics
    _pass1_name = "pass-1"
    _table: torch.Tensor

    def merge(self: _P, other: _P) -> _P:
        """Add the state of ``other`` (built from the same pass-1 statistics); returns self."""
        self._check_compatible(other)
        self._flush()
        other._flush()
        if other._pass1 is not self._pass1 and not torch.equal(
            other._pass1.means.cpu(), self._pass1.means.cpu()
        ):
            raise ValueError(
                f"other: built from different {self._pass1_name} statistics (class means differ)"
            )
        self._table += other._table.to(self._table.device)
        return self

    def all_reduce(self, group: Any = None) -> None:
        """Sum the state over all processes of ``group`` (torch.distributed), in place; a no-op
        when torch.distributed is not initialized."""
        self._flush()
        (self._table,) = _all_reduce_sum([self._table], group)

    def _final_table(self) -> torch.Tensor:
        """The per-class table on the CPU, after the staged batches."""
        self._flush()
        return self._table.cpu()


# Rows of the pass-2 per-class table (one column per class, plus invalid and masked-out).
_WITHIN, _PROJ, _NCC_OK, _CLS_OK, _MISMATCH, _COUNT = range(6)


class CollapseAccumulator(_PassTwo):
    """Pass 2: centred statistics around the means fixed by pass 1, and the NCC decisions.

    Parameters
    ----------
    stats : the :class:`ClassStatistics` from pass 1 (identical on every process).
    weight : classifier W, (K, d), optional; enables the NC2-weights, NC3 and NC4 metrics.
    bias : classifier bias b, (K,), optional (zero when omitted).
    stage : gather small batches before processing them (see :class:`_Accumulator`); False for
        data given whole.
    """

    def __init__(
        self, stats: ClassStatistics, weight: Any = None, bias: Any = None, *, stage: bool = True
    ) -> None:
        check_statistics(stats, "stats")
        super().__init__(
            stats.num_total_classes, stats.dim, stats.means.device, stage, stats.scale_exp
        )
        if bias is not None and weight is None:
            raise ValueError("bias: given without weight; pass the classifier weight too")
        self.stats = self._pass1 = stats
        k, k_total = stats.num_classes, stats.num_total_classes
        means = stats.means
        # Features are centred first (h - μ_y, exact in float64), then one GEMM against the rows
        # of [V_p S^{-1} | W̃_{1..K-1}ᵀ]ᵀ (see :func:`between_basis`):
        # * NC1 term ‖(h - μ_y) V_r S_r^{-1}‖²: the sum of squares of the first r coordinates.
        # * NCC: argmin_j ‖h - μ_j‖² = argmin_j ‖h̃ - μ̃_j‖² (h̃ = h - μ_G, μ̃_j = μ_j - μ_G)
        #   = argmax_j 2 (h - μ_y)·μ̃_j + (2 μ̃_y·μ̃_j - ‖μ̃_j‖²), as h̃ = (h - μ_y) + μ̃_y; centred
        #   means keep the offsets free of cancellation against a large common mean.
        # * classifier: argmax_j h·w_j + b_j = argmax_j (h - μ_y)·w̃_j + (μ_y·w̃_j + b_j), with
        #   w̃_j = w_j - w̄ (the common h·w̄ drops out); Σ_j w̃_j = 0 gives w̃_K from the others,
        #   so K - 1 columns suffice.
        basis, to_means = between_basis(stats.svd, k)
        self._p, self._r = basis.shape[0], stats.rank
        self._ncc_mat = 2.0 * to_means
        gram = stats.centred_means @ stats.centred_means.T
        # Two extra rows (zeros): invalid labels and masked-out samples.
        self._ncc_off = torch.cat([2.0 * gram - torch.diagonal(gram), means.new_zeros(2, k)])
        blocks = [basis]
        self.weight: torch.Tensor | None = None
        self.bias: torch.Tensor | None = None
        if weight is not None:
            w, b = as_classifier(weight, bias, k_total, stats.dim, means.device)
            kept = stats.classes.to(means.device)
            w, b = w[kept], (b[kept] if b is not None else None)
            # The decisions argmax(W h + b) are those of c(W h + b) for any c > 0: with the
            # features in units of 2^-e_f, W and 2^e_f b are scaled by one power of two that
            # brings the larger of them into [1/2, 1), so that extreme classifiers neither
            # overflow nor vanish. The scale-invariant metrics of W use W scaled on its own
            # (``self.weight``), which a tiny W next to a large b cannot flush to zero.
            self._weight_exp = _classifier_exp(w, None, 0)
            self.weight, self.bias = ldexp(w, self._weight_exp), b
            exp = _classifier_exp(w, b, self.scale_exp)
            w_dec = ldexp(w, exp)
            b_dec = ldexp(b, exp + self.scale_exp) if b is not None else torch.zeros_like(w[:, 0])
            self._bias_relation = ldexp_float(
                float(torch.linalg.vector_norm(w_dec @ stats.global_mean + b_dec)),
                -(exp + self.scale_exp),
            )
            w_tilde = w_dec - w_dec.mean(0, keepdim=True)
            blocks.append(w_tilde[: k - 1])
            w_off = means @ w_tilde.T + b_dec
            self._w_off = torch.cat([w_off, means.new_zeros(2, k)])
        self._rhs = torch.cat(blocks).contiguous()
        self._means_ext = torch.cat([means, means.new_zeros(2, means.shape[1])])
        # Routed row (see ``_route``) -> column of the table: kept class, k invalid, k + 1 masked.
        label_map = stats.label_map
        self._columns = torch.where(
            label_map == -1, k, torch.where(label_map == -2, k + 1, label_map)
        )
        self._table = torch.zeros(6, k + 2, dtype=_F64, device=means.device)

    def update(self, features: Any, labels: Any, mask: Any = None) -> None:
        """Add a batch (the same batches, and masks, as in pass 1, in any order and split)."""
        h, y = self._prepare(features, labels, mask)
        self._add(h, self._columns[y])

    def _process(self, h: torch.Tensor, *rows: torch.Tensor) -> None:
        (y,) = rows
        p, r, work = self._p, self._r, workspace(h.device)
        k = self._ncc_mat.shape[1]
        for part, z, norms in centred_products(work, h, y, self._means_ext, self._rhs, 3 * k + 6):
            y_out = y[part]
            stats = work.buffer("stats", 6, y_out.shape[0])
            torch.square(norms, out=stats[_WITHIN])
            coords = z[:p]
            torch.sum(coords[:r].square(), dim=0, out=stats[_PROJ])
            ncc = torch.addmm(self._ncc_off.index_select(0, y_out), coords.T, self._ncc_mat)
            ncc_pred = ncc.argmax(1)
            stats[_NCC_OK].copy_(ncc_pred == y_out)
            if self.weight is not None:
                logits = self._w_off.index_select(0, y_out)
                scores = z[p:].T  # (h - μ_y)·w̃_j for j < K - 1; w̃_K = -Σ_j w̃_j
                logits[:, : k - 1] += scores
                logits[:, k - 1] -= scores.sum(1)
                pred = logits.argmax(1)
                stats[_CLS_OK].copy_(pred == y_out)
                stats[_MISMATCH].copy_(pred != ncc_pred)
            else:
                stats[_CLS_OK : _MISMATCH + 1].zero_()
            stats[_COUNT].fill_(1.0)
            self._table.index_add_(1, y_out, stats)

    def compute(self) -> CollapseReport:
        """The full NC report (see :mod:`nclab.metrics.report` for every key and its formula)."""
        st, opts = self.stats, self.stats.options
        k = st.num_classes
        table = self._final_table()
        if table[_COUNT, k] > 0:
            raise ValueError(
                f"labels: {int(table[_COUNT, k])} value(s) outside the classes measured in pass 1"
            )
        if not bool(torch.isfinite(table[:, : k + 1]).all()):
            raise ValueError("features: contain NaN or Inf values")
        counts = table[_COUNT, :k]
        if not torch.equal(counts, st.counts.to(_F64)):
            raise ValueError(
                "features: pass 2 saw different data than pass 1 (class counts "
                f"{counts.long().tolist()} vs {st.counts.tolist()}); feed the same batches twice"
            )
        n_total = float(counts.sum())
        centred = st.centred_means.cpu()
        within, proj = table[_WITHIN, :k], table[_PROJ, :k]
        tr_w, nc1 = nc1_from_sums(within, proj, counts, st.rank, opts.within_class)
        tr_b = float((centred * centred).sum()) / k
        values: dict[str, float] = {
            "nc1": nc1,
            "nc1_colab": k * nc1,
            "nc1_trace_ratio": _safe_ratio(tr_w, tr_b),
            "cdnv": _nc1.cdnv(within / counts, centred),
            # back from the units of 2^-scale_exp (inf where the true trace exceeds float64)
            "within_class_trace": ldexp_float(tr_w, -2 * self.scale_exp),
            "between_class_trace": ldexp_float(tr_b, -2 * self.scale_exp),
            "nc2_equinorm_means": _nc2.equinorm(centred),
            "nc2_equiangular_means": _nc2.equiangularity(centred),
            "nc2_cos_std_means": _nc2.cosine_spread(centred),
            "nc2_etf_means": _nc2.etf_distance(centred),
            "nc2_of_means": _nc2.orthogonal_distance(st.means.cpu()),
            "ncc_accuracy": float(table[_NCC_OK, :k].sum()) / n_total,
        }
        if self.weight is not None:
            w = self.weight.cpu()
            w_etf = w - w.mean(0, keepdim=True) if opts.center_weights else w
            values.update(
                {
                    "nc2_equinorm_weights": _nc2.equinorm(w),
                    "nc2_equiangular_weights": _nc2.equiangularity(w),
                    "nc2_cos_std_weights": _nc2.cosine_spread(w),
                    "nc2_etf_weights": _nc2.etf_distance(w_etf),
                    "nc2_of_weights": _nc2.orthogonal_distance(w),
                    "nc3_duality": _nc3.duality(w, centred),
                    "nc3_wh_etf": _nc3.wh_etf_distance(w, centred),
                    "nc4_ncc_mismatch": float(table[_MISMATCH, :k].sum()) / n_total,
                    "classifier_accuracy": float(table[_CLS_OK, :k].sum()) / n_total,
                    "bias_relation": self._bias_relation,
                }
            )
        counts_np = counts.numpy()
        variances = within / counts
        per_class = {
            "count": counts_np.copy(),
            "mean_norm": ldexp(torch.linalg.vector_norm(centred, dim=1), -self.scale_exp).numpy(),
            "within_variance": ldexp(variances, -2 * self.scale_exp).numpy(),
            "cdnv": _nanmean_rows(_nc1.cdnv_matrix(variances, centred)),
            "ncc_accuracy": (table[_NCC_OK, :k] / counts).numpy(),
        }
        if self.weight is not None:
            per_class.update(
                {
                    "weight_norm": ldexp(
                        torch.linalg.vector_norm(self.weight.cpu(), dim=1), -self._weight_exp
                    ).numpy(),
                    "classifier_accuracy": (table[_CLS_OK, :k] / counts).numpy(),
                    "nc4_ncc_mismatch": (table[_MISMATCH, :k] / counts).numpy(),
                }
            )
        return CollapseReport(
            per_class=per_class,
            values=values,
            num_samples=int(n_total),
            num_classes=k,
            dim=st.dim,
            between_rank=st.rank,
            classes=tuple(st.classes.tolist()),
            class_counts=tuple(st.counts.tolist()),
            options=opts,
        )


def _classifier_exp(weight: torch.Tensor, bias: torch.Tensor | None, scale_exp: int) -> int:
    """The exponent g with max(|2^g W|, |2^(g + scale_exp) b|) in [1/2, 1) (0 for W = b = 0)."""
    exps = []
    for t, shift in ((weight, 0), (bias, scale_exp)):
        if t is not None and t.numel():
            largest = float(t.abs().max())
            if largest > 0:
                exps.append(math.frexp(largest)[1] + shift)
    return -max(exps) if exps else 0


def _nanmean_rows(matrix: torch.Tensor) -> Any:
    """Mean of each row over its off-diagonal entries (the diagonal is NaN)."""
    k = matrix.shape[0]
    off = ~torch.eye(k, dtype=torch.bool)
    return matrix[off].reshape(k, k - 1).mean(1).numpy()


def _safe_ratio(num: float, den: float) -> float:
    if den > 0:
        return num / den
    return float("inf") if num > 0 else float("nan")
