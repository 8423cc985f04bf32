"""The run directory: one writer at a time, what it may be resumed or extended with, and its
checkpoints.

A run holds an exclusive ``fcntl.flock`` on ``RUN_DIR/.lock`` from before its first write to its
end (the kernel releases it when the process dies, even by SIGKILL); the holder's PID is written
into the file, so that a second process fails at once naming it. With the lock held, the
temporaries that a killed atomic write leaves behind (``.checkpoint.pt.*.tmp``, ...) are removed.

What a directory may become:

* no ``config.yaml``: a new run (a lone ``checkpoint.pt`` is refused);
* ``config.yaml`` without ``checkpoint.pt``: the earlier run stopped before its first checkpoint,
  so nothing can be continued: the run starts over (and says so), with or without ``--resume``;
* a checkpoint: refused without ``--resume``; with it, the checkpoint's stored fingerprint must
  equal the config's, except that ``optim.epochs`` may change (extending a finished run, or
  shortening one not yet past the new end) when the learning-rate schedule does not depend on
  it: ``step``, ``multistep`` and ``constant`` are fixed in epochs and continue as they would
  have; ``cosine`` is defined by the number of epochs and is refused. Any other difference is
  refused with the keys that differ.
"""

from __future__ import annotations

import fcntl
import os
import pickle
import time
from pathlib import Path
from typing import Any

import torch
import yaml

from nclab.io import atomic_write, atomic_write_text
from nclab.train.config import _CADENCE, TrainConfig

__all__ = [
    "LOCK_NAME",
    "RunDirectoryError",
    "RunLock",
    "check_run_dir",
    "checkpoint_due",
    "clean_temporaries",
    "save_checkpoint",
    "save_model",
]

LOCK_NAME = ".lock"

# The files written with nclab.io.atomic_write, whose temporaries are ".NAME.XXXXXXXX.tmp".
_WRITTEN = ("config.yaml", "checkpoint.pt", "metrics.csv", "model.pt", "model.txt")


class RunDirectoryError(RuntimeError, ValueError):
    """The output directory holds another run, a run of another configuration, or is in use.
    A ValueError too: it is bad input (the ``--out`` chosen), not a failure of the program."""


class RunLock:
    """An exclusive, non-blocking ``flock`` on ``out/.lock``, holding this process's PID."""

    def __init__(self, out: Path) -> None:
        self.path = out / LOCK_NAME
        self.fd: int | None = None

    def acquire(self) -> None:
        fd = os.open(self.path, os.O_RDWR | os.O_CREAT, 0o666)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            holder = self._holder(fd)
            os.close(fd)
            raise RunDirectoryError(
                f"{self.path.parent}: in use by another run (PID {holder}, which holds "
                f"{self.path}); wait for it to end, or choose another --out"
            ) from None
        os.ftruncate(fd, 0)
        os.write(fd, f"{os.getpid()}\n".encode())
        self.fd = fd

    @staticmethod
    def _holder(fd: int) -> str:
        # The holder writes its PID right after taking the lock: wait a moment for it.
        for _ in range(50):
            text = os.pread(fd, 64, 0).decode(errors="replace").strip()
            if text:
                return text
            time.sleep(0.01)
        return "unknown"

    def release(self) -> None:
        if self.fd is not None:
            fcntl.flock(self.fd, fcntl.LOCK_UN)
            os.close(self.fd)
            self.fd = None

    def __enter__(self) -> RunLock:
        self.acquire()
        return self

    def __exit__(self, *exc: object) -> None:
        self.release()


def clean_temporaries(out: Path) -> list[Path]:
    """Remove the temporaries of this run's atomic writes (call with the lock held: no other
    writer can be mid-write); returns what was removed."""
    removed = []
    for name in _WRITTEN:
        for tmp in out.glob(f".{name}.*.tmp"):
            tmp.unlink(missing_ok=True)
            removed.append(tmp)
    return removed


def _key_diff(a: dict[str, Any], b: dict[str, Any]) -> dict[str, tuple[Any, Any]]:
    """``section.key -> (a's value, b's value)`` where they differ; the cadence keys (which
    change neither the numbers nor the files) are left out."""
    out = {}
    for section in b:
        for key, value in b[section].items():
            if section == "run" and key in _CADENCE:
                continue
            old = a.get(section, {}).get(key)
            if old != value:
                out[f"{section}.{key}"] = (old, value)
    return out


def _describe(diff: dict[str, tuple[Any, Any]]) -> str:
    if not diff:
        return "differs"
    parts = [f"{key}: {old!r} in the run, {new!r} now" for key, (old, new) in diff.items()]
    return "differs at " + "; ".join(parts)


def check_run_dir(
    out: Path, cfg: TrainConfig, resume: bool
) -> tuple[dict[str, Any] | None, list[str]]:
    """The checkpoint to continue from (None: a new run) and notes for the user (starting over,
    extending); refuses what the module docstring lists."""
    config_file, ckpt_file = out / "config.yaml", out / "checkpoint.pt"
    if not config_file.exists():
        if ckpt_file.exists():
            raise RunDirectoryError(
                f"{out}: holds checkpoint.pt without config.yaml; not resuming (move it away, "
                "or choose another --out)"
            )
        return None, []
    if not ckpt_file.exists():
        return None, [
            f"{out} holds no checkpoint (its run stopped before writing one): starting over"
        ]
    if not resume:
        raise RunDirectoryError(
            f"{out}: already holds a run; pass --resume to continue it, or choose another --out"
        )
    try:
        saved = yaml.safe_load(config_file.read_text())
        state: dict[str, Any] = torch.load(ckpt_file, map_location="cpu", weights_only=True)
    except (OSError, yaml.YAMLError, RuntimeError, EOFError, pickle.UnpicklingError) as err:
        raise RunDirectoryError(f"{out}: cannot read the run's files ({err})") from None
    # The checkpoint's own config (written since checkpoints carry it), else config.yaml's when
    # the fingerprints agree; the fingerprint decides, whatever config.yaml says.
    ran = state.get("config") if isinstance(state.get("config"), dict) else None
    if ran is None and TrainConfig.from_dict(saved).fingerprint() == state.get("fingerprint"):
        ran = saved
    extended = TrainConfig.from_dict(cfg.to_dict())
    done = int(state["epoch"])
    ran_epochs = int(ran["optim"]["epochs"]) if ran is not None else cfg.optim.epochs
    extended.optim.epochs = ran_epochs
    if extended.fingerprint() != state.get("fingerprint"):
        diff = _describe(_key_diff(ran, cfg.to_dict())) if ran is not None else "differs"
        raise RunDirectoryError(f"{out}: the checkpoint is from a different config ({diff})")
    if cfg.optim.epochs == ran_epochs:
        return state, []
    if cfg.optim.schedule == "cosine":
        raise RunDirectoryError(
            f"optim.epochs: the run's cosine schedule is defined by its number of epochs "
            f"({ran_epochs}); with {cfg.optim.epochs} its learning rate would jump at epoch "
            f"{done + 1}. Only step, multistep and constant schedules (fixed in epochs) can "
            "be extended; start a new run for a longer cosine schedule"
        )
    if cfg.optim.epochs < done:
        raise RunDirectoryError(
            f"optim.epochs: the checkpoint is at epoch {done}, past the {cfg.optim.epochs} asked"
        )
    return state, [
        f"{out}: continuing from epoch {done} to optim.epochs={cfg.optim.epochs} (the run was "
        f"set for {ran_epochs}; the {cfg.optim.schedule} schedule continues in epochs)"
    ]


def save_checkpoint(out: Path, state: dict[str, Any]) -> None:
    atomic_write(out / "checkpoint.pt", lambda handle: torch.save(state, handle))


def save_model(out: Path, model: torch.nn.Module) -> None:
    atomic_write(out / "model.pt", lambda handle: torch.save(model.state_dict(), handle))


def write_config(out: Path, cfg: TrainConfig) -> None:
    atomic_write_text(out / "config.yaml", yaml.safe_dump(cfg.to_dict(), sort_keys=False))


def checkpoint_due(cfg: TrainConfig, epochs_done: int, last: tuple[int, float]) -> bool:
    """Whether to write a checkpoint after ``epochs_done`` epochs, the last one having been
    written after ``last[0]`` epochs at ``time.monotonic()`` = ``last[1]`` (see ``RunConfig``)."""
    if epochs_done == cfg.optim.epochs:
        return True
    return (
        epochs_done - last[0] >= cfg.run.checkpoint_every
        and time.monotonic() - last[1] >= cfg.run.checkpoint_seconds
    )
