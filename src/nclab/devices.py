"""Which torch device a computation may run on: one check, used by every entry point that takes a
``device`` argument, so that a missing GPU is reported by name instead of failing inside torch."""

from __future__ import annotations

from typing import Any

import torch

__all__ = ["check_device"]


def check_device(device: Any, name: str = "device") -> torch.device:
    """``device`` (a string such as ``"cpu"``, ``"cuda"``, ``"cuda:1"``, or a torch.device) as a
    torch.device, or a ValueError naming ``name``: CUDA requested on a machine without it (or an
    index beyond its GPUs), the ``meta`` device (tensors without data: nothing to measure), or
    any other device type this torch build cannot use."""
    try:
        dev = torch.device(device)
    except (RuntimeError, TypeError) as err:
        raise ValueError(
            f"{name}: expected a torch device such as 'cpu' or 'cuda', got {device!r}"
        ) from err
    if dev.type == "meta":
        raise ValueError(f"{name}: the 'meta' device holds no data and is not supported")
    if dev.type == "cuda":
        if not torch.cuda.is_available():
            raise ValueError(
                f"{name}: {device!r} requested but CUDA is not available on this machine "
                f"(torch {torch.__version__}, {'no GPU found' if torch.version.cuda else 'a CPU-only build'})"
            )
        if dev.index is not None and dev.index >= torch.cuda.device_count():
            raise ValueError(
                f"{name}: {device!r} requested but this machine has "
                f"{torch.cuda.device_count()} CUDA device(s)"
            )
    elif dev.type not in ("cpu", "cuda"):
        try:
            torch.empty(0, device=dev)
        except (RuntimeError, AssertionError) as err:
            raise ValueError(
                f"{name}: device {device!r} has no kernels in this torch build "
                f"(torch {torch.__version__}); use 'cpu' or 'cuda'"
            ) from err
    return dev
