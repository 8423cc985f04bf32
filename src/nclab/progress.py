"""Progress bars that suit where the output goes: tqdm's notebook widget in Jupyter, its text
bar in a terminal (both through ``tqdm.auto``)."""

from __future__ import annotations

import sys
from collections.abc import Iterable, Iterator, Sized
from typing import Any, TypeVar

__all__ = ["in_notebook", "progress_bar"]

T = TypeVar("T")


def in_notebook() -> bool:
    """Whether this process is a Jupyter kernel (where stderr is no terminal, yet a widget
    shows progress)."""
    return "ipykernel" in sys.modules


def progress_bar(
    iterable: Iterable[T], enabled: bool, desc: str, total: int | None = None
) -> Iterator[T]:
    """``iterable`` itself, or wrapped in a tqdm bar (``tqdm.auto``: a widget in notebooks)
    when ``enabled``; ``total`` defaults to ``len(iterable)`` when it has one."""
    if not enabled:
        yield from iterable
        return
    from tqdm.auto import tqdm

    if total is None and isinstance(iterable, Sized):
        total = len(iterable)
    bar: Any = tqdm(iterable, total=total, desc=desc, leave=False)
    try:
        yield from bar
    finally:
        bar.close()
