"""One-call entry points: features in memory, or batches read twice."""

from __future__ import annotations

from collections.abc import Callable, Iterable
from typing import Any

import torch

from nclab.errors import InputTypeError
from nclab.metrics._inputs import as_features, as_labels, check_num_classes, infer_num_classes
from nclab.metrics.accumulators import ClassMeans, CollapseAccumulator, choose_scale_exp
from nclab.metrics.options import MetricOptions
from nclab.metrics.report import CollapseReport
from nclab.progress import progress_bar

__all__ = ["measure", "measure_batches"]

Batches = Iterable[Any] | Callable[[], Iterable[Any]]


def measure(
    features: Any,
    labels: Any,
    weight: Any = None,
    bias: Any = None,
    *,
    num_classes: int | None = None,
    **options: Any,
) -> CollapseReport:
    """Measure neural collapse of features held in memory.

    Parameters
    ----------
    features : (N, d) numpy array or torch tensor (CPU or CUDA; float16/32/64); computation stays
        on its device and accumulates in float64, chunk by chunk (memory O(K d) + 32 MiB).
    labels : (N,) integer class indices in 0..K-1.
    weight : classifier W, (K, d), optional; adds the weight, NC3 and NC4 metrics.
    bias : classifier bias b, (K,), optional.
    num_classes : K; default max(labels) + 1.
    **options : see :class:`~nclab.metrics.options.MetricOptions` (``global_mean``,
        ``within_class``, ``center_weights``, ``rank_rtol``, ``drop_empty_classes``).

    Returns
    -------
    CollapseReport; ``report.as_dict()`` is a flat dict of floats (keys in
    :data:`nclab.metrics.report.METRICS`).
    """
    opts = MetricOptions.from_kwargs(**options)
    h = as_features(features)
    y = as_labels(labels, h.shape[0], h.device)
    if num_classes is None:
        num_classes = infer_num_classes(y, h.shape[0])
    k = check_num_classes(num_classes)
    means = ClassMeans(k, stage=False, scale_exp=choose_scale_exp(h))
    means.update(h, y)
    acc = CollapseAccumulator(means.compute(opts), weight, bias, stage=False)
    acc.update(h, y)
    return acc.compute()


def _fresh(batches: Batches) -> Iterable[Any]:
    if callable(batches):
        return batches()
    if iter(batches) is batches:
        raise InputTypeError(
            "batches: an iterator can be read only once, and the metrics read the data twice; "
            "pass a list, a DataLoader, or a function returning a fresh iterable"
        )
    return batches


def _split(batch: Any) -> tuple[Any, Any]:
    if not isinstance(batch, (tuple, list)) or len(batch) < 2:
        raise InputTypeError("batches: each batch must be a (features, labels, ...) tuple")
    return batch[0], batch[1]


def measure_batches(
    batches: Batches,
    num_classes: int,
    weight: Any = None,
    bias: Any = None,
    *,
    dim: int | None = None,
    device: torch.device | str | None = None,
    progress: bool = False,
    **options: Any,
) -> CollapseReport:
    """Measure neural collapse of data that arrives in batches, reading it twice.

    Pass 1 accumulates class counts and sums (:class:`ClassMeans`); pass 2 the centred statistics
    (:class:`CollapseAccumulator`). The result equals :func:`measure` on the concatenated data up
    to floating-point summation order (1e-10 relative in the tests).

    Parameters
    ----------
    batches : a re-iterable of ``(features, labels, ...)`` tuples (a list, a DataLoader) or a
        function returning a fresh iterable; the same data must come in both passes.
    num_classes : K.
    weight, bias, **options : as in :func:`measure`.
    dim, device : passed to :class:`ClassMeans`.
    progress : a progress bar over the batches of each pass (tqdm; a widget in notebooks).
    """
    opts = MetricOptions.from_kwargs(**options)
    means = ClassMeans(num_classes, dim=dim, device=device)
    for batch in progress_bar(_fresh(batches), progress, "measure_batches: pass 1 of 2"):
        means.update(*_split(batch))
    acc = CollapseAccumulator(means.compute(opts), weight, bias)
    for batch in progress_bar(_fresh(batches), progress, "measure_batches: pass 2 of 2"):
        acc.update(*_split(batch))
    return acc.compute()
