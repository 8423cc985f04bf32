"""How many CPU threads torch uses: one policy for ``nclab train``, ``nclab solve`` and the sweep
workers.

The default does not depend on the machine's load: the thread count changes float sums in
their last bits, and a run's numbers should not depend on what else the machine was doing. It is
``$OMP_NUM_THREADS`` when set (``torchrun`` with several processes, sweep workers and users limit
threads with it), else the cores this process may run on divided among the processes ``torchrun``
started on this machine, at most :data:`MAX_DEFAULT_THREADS`. On a busy machine threads that wait
for each other on shared cores run several times slower than one (README, "Performance":
measured 4.3x for the cpu-mlp preset with 2 threads on 2 busy cores), so the entry points print a
one-line hint to pass ``--threads 1`` there.
"""

from __future__ import annotations

import os
import sys

import torch

__all__ = ["MAX_DEFAULT_THREADS", "available_cores", "default_threads", "set_threads"]

# More intra-op threads than this buys little for the networks and models here and
# oversubscribes shared machines.
MAX_DEFAULT_THREADS = 4


def available_cores() -> int:
    """The cores this process may run on."""
    if hasattr(os, "sched_getaffinity"):
        return max(1, len(os.sched_getaffinity(0)))
    return max(1, os.cpu_count() or 1)


def default_threads() -> int:
    """The default thread count (see the module docstring)."""
    omp = os.environ.get("OMP_NUM_THREADS", "")
    if omp.isdigit() and int(omp) >= 1:
        return int(omp)
    local = int(os.environ.get("LOCAL_WORLD_SIZE", "1"))
    return max(1, min(MAX_DEFAULT_THREADS, available_cores() // max(local, 1)))


def set_threads(threads: int | None, command: str, flag: str = "--threads 1") -> int:
    """Set torch's intra-op threads to ``threads`` (None: :func:`default_threads`, with the
    busy-machine hint on stderr naming ``command`` and ``flag``); returns the count."""
    if threads is None:
        threads = default_threads()
        cores = available_cores()
        load = os.getloadavg()[0] if hasattr(os, "getloadavg") else 0.0
        if threads > 1 and load > cores - threads + 0.5:
            print(
                f"{command}: the machine is busy (load {load:.1f} on {cores} cores): {threads} "
                f"threads may run several times slower than one; pass {flag}",
                file=sys.stderr,
            )
    torch.set_num_threads(threads)
    return threads
