"""Conversion and validation of user input (numpy arrays or torch tensors) for the metrics.

Every check here is on metadata (shapes, dtypes) and costs no host-device synchronization;
value checks (NaN/Inf, label range) are deferred to the accumulators, which count them on the
device and raise at ``compute`` time.
"""

from __future__ import annotations

import os
from typing import Any, TypeAlias

import numpy as np
import torch

from nclab.errors import InputTypeError

ArrayLike: TypeAlias = "np.ndarray[Any, Any] | torch.Tensor"

_FLOAT64 = torch.float64


def to_tensor(x: Any, name: str, device: torch.device | str | None = None) -> torch.Tensor:
    """Return ``x`` as a torch tensor without copying when possible (numpy shares memory)."""
    if isinstance(x, torch.Tensor):
        t = x.detach()
    elif isinstance(x, np.ndarray):
        if x.dtype == object or not (np.issubdtype(x.dtype, np.number) or x.dtype == np.bool_):
            raise InputTypeError(f"{name}: expected a numeric array, got dtype {x.dtype}")
        t = torch.from_numpy(np.ascontiguousarray(x)) if x.flags.writeable else torch.tensor(x)
    else:
        try:
            t = torch.as_tensor(np.asarray(x))
        except (TypeError, ValueError) as err:
            raise InputTypeError(
                f"{name}: expected a numpy array or torch tensor, got {type(x).__name__}"
            ) from err
    if t.is_complex():
        raise InputTypeError(f"{name}: expected real values, got complex dtype {t.dtype}")
    if t.device.type == "meta":
        raise ValueError(f"{name}: a tensor on the 'meta' device holds no data to measure")
    if device is not None:
        t = t.to(device)
    return t


def as_features(x: Any, name: str = "features") -> torch.Tensor:
    """Features as a 2-D real tensor (N, d), dtype kept (converted to float64 chunk by chunk)."""
    t = to_tensor(x, name)
    if t.dtype == torch.bool:
        raise InputTypeError(f"{name}: expected real-valued features, got dtype bool")
    if t.ndim != 2:
        hint = " (one feature vector per row; use features.reshape(N, -1))" if t.ndim > 2 else ""
        raise ValueError(
            f"{name}: expected a 2-D array of shape (N, d), got shape {tuple(t.shape)}{hint}"
        )
    if t.shape[1] == 0:
        raise ValueError(
            f"{name}: expected at least one feature dimension, got shape {tuple(t.shape)}"
        )
    return t


def as_labels(y: Any, num_rows: int, device: torch.device, name: str = "labels") -> torch.Tensor:
    """Labels as an int64 tensor of shape (N,) on ``device``."""
    t = to_tensor(y, name)
    if t.is_floating_point() or t.dtype == torch.bool:
        raise InputTypeError(f"{name}: expected integer class indices, got dtype {t.dtype}")
    if t.ndim != 1:
        raise ValueError(
            f"{name}: expected a 1-D array of class indices, got shape {tuple(t.shape)}"
        )
    if t.shape[0] != num_rows:
        raise ValueError(
            f"{name}: expected one label per feature row ({num_rows}), got {t.shape[0]} labels"
        )
    return t.to(device=device, dtype=torch.int64)


def as_mask(
    mask: Any, num_rows: int, device: torch.device, name: str = "mask"
) -> torch.Tensor | None:
    """An optional boolean sample mask of shape (N,) on ``device``."""
    if mask is None:
        return None
    t = to_tensor(mask, name)
    if t.dtype != torch.bool:
        raise InputTypeError(f"{name}: expected a boolean array, got dtype {t.dtype}")
    if t.shape != (num_rows,):
        raise ValueError(f"{name}: expected shape ({num_rows},), got {tuple(t.shape)}")
    return t.to(device)


def as_classifier(
    weight: Any, bias: Any, num_classes: int, dim: int, device: torch.device
) -> tuple[torch.Tensor, torch.Tensor | None]:
    """Classifier weight (K, d) and optional bias (K,) as float64 tensors on ``device``."""
    w = to_tensor(weight, "weight", device)
    if w.dtype == torch.bool:
        raise InputTypeError("weight: expected real values, got dtype bool")
    w = w.to(_FLOAT64)
    if w.ndim != 2 or w.shape[0] != num_classes or w.shape[1] != dim:
        raise ValueError(
            f"weight: expected shape (num_classes, dim) = ({num_classes}, {dim}), "
            f"got {tuple(w.shape)}"
        )
    if not bool(torch.isfinite(w).all()):
        raise ValueError("weight: contains NaN or Inf values")
    if bias is None:
        return w, None
    b = to_tensor(bias, "bias", device)
    if b.dtype == torch.bool:
        raise InputTypeError("bias: expected real values, got dtype bool")
    b = b.to(_FLOAT64)
    if b.ndim != 1 or b.shape[0] != num_classes:
        raise ValueError(f"bias: expected shape ({num_classes},), got {tuple(b.shape)}")
    if not bool(torch.isfinite(b).all()):
        raise ValueError("bias: contains NaN or Inf values")
    return w, b


def _memory_bytes() -> int:
    """This machine's physical memory (a bound no allocation of ours may exceed)."""
    try:
        return int(os.sysconf("SC_PHYS_PAGES")) * int(os.sysconf("SC_PAGE_SIZE"))
    except (ValueError, OSError, AttributeError):
        return 2**40


def check_state_size(num_classes: int, dim: int, name: str = "num_classes") -> None:
    """Refuse a class count whose float64 state ((K + 2) x d sums) cannot fit in memory, naming
    the count before any allocation fails deep inside torch."""
    need = (num_classes + 2) * dim * 8
    have = _memory_bytes()
    if need > have:
        raise ValueError(
            f"{name}: {num_classes} classes of dimension {dim} need {need / 2**30:.3g} GiB of "
            f"float64 class sums, more than this machine's {have / 2**30:.3g} GiB"
        )


def infer_num_classes(y: torch.Tensor, num_rows: int, name: str = "labels") -> int:
    """K = max(labels) + 1 for labels given without ``num_classes``, refusing labels that are
    class indices at all (a single class, or so large that most classes would be empty)."""
    if y.numel() == 0:
        raise ValueError(f"{name}: empty; at least 2 classes with samples are needed")
    low, high = int(y.min()), int(y.max())
    if low < 0:  # counted and reported at compute as values outside [0, K)
        return max(high + 1, 2)
    if high == 0:
        raise ValueError(
            f"{name}: only one class present (all labels are 0); at least 2 are needed"
        )
    if high + 1 > max(2 * num_rows, 1024):
        raise ValueError(
            f"{name}: the largest label is {high}, which would need K = {high + 1} classes for "
            f"{num_rows} samples; labels must be class indices 0..K-1 (relabel them, or pass "
            "num_classes= / --num-classes with drop_empty_classes / --drop-empty-classes)"
        )
    return high + 1


def check_num_classes(num_classes: Any) -> int:
    if isinstance(num_classes, bool) or not isinstance(num_classes, (int, np.integer)):
        raise InputTypeError(f"num_classes: expected an integer, got {num_classes!r}")
    if num_classes < 2:
        raise ValueError(
            f"num_classes: neural collapse needs at least 2 classes, got {num_classes}"
        )
    return int(num_classes)
