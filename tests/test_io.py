"""Atomic writes: a failure mid-write (a full disk) leaves the previous file intact."""

from __future__ import annotations

import errno
import os
from pathlib import Path
from typing import IO

import pytest

from nclab.io import atomic_write, atomic_write_text


def test_failed_write_keeps_the_previous_file_and_leaves_no_temporary(tmp_path: Path) -> None:
    target = tmp_path / "checkpoint.pt"
    atomic_write_text(target, "previous, complete")

    def disk_full(handle: IO[bytes]) -> None:
        handle.write(b"half of the new")
        raise OSError(errno.ENOSPC, "No space left on device")

    with pytest.raises(OSError, match="No space left"):
        atomic_write(target, disk_full)
    assert target.read_text() == "previous, complete"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["checkpoint.pt"]


def test_written_files_get_the_usual_permissions(tmp_path: Path) -> None:
    path = atomic_write_text(tmp_path / "sub" / "metrics.csv", "a,b\n")
    assert path.read_text() == "a,b\n"
    umask = os.umask(0)
    os.umask(umask)
    # Like open(): 0666 less the umask, not mkstemp's private 0600.
    assert path.stat().st_mode & 0o777 == 0o666 & ~umask
