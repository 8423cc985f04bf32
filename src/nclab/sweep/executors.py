"""The two executors: a local process pool and Ray core tasks.

Both run :func:`nclab.sweep.trial.run_trial` for each job, keep at most ``max_parallel`` jobs in
flight, and report to the driver through two callbacks: ``started(job)`` when a job is handed
to a worker and ``finished(job, result)`` with the worker's result (or the error of a worker
that died). The driver alone writes statuses and tables, so the sweep directory is the only
state either executor relies on.
"""

from __future__ import annotations

import logging
import math
import multiprocessing
import os
from collections.abc import Callable
from concurrent.futures import FIRST_COMPLETED, Future, ProcessPoolExecutor, wait
from concurrent.futures.process import BrokenProcessPool
from dataclasses import dataclass
from typing import Any, Protocol

from nclab.sweep.trial import limit_threads, run_trial, watch_driver
from nclab.threads import available_cores

__all__ = [
    "RAY_INSTALL",
    "Executor",
    "Job",
    "LocalExecutor",
    "RayExecutor",
    "make_executor",
]

RAY_INSTALL = "pip install 'nclab[ray]'"

Started = Callable[["Job"], None]
Finished = Callable[["Job", dict[str, Any]], None]


@dataclass(frozen=True)
class Job:
    """A trial to run: its name, kind, payload and run directory."""

    name: str
    kind: str
    payload: dict[str, Any]
    run_dir: str


class Executor(Protocol):
    parallel: int

    def run(self, jobs: list[Job], started: Started, finished: Finished) -> None: ...

    def close(self) -> None: ...


def _context() -> multiprocessing.context.BaseContext:
    """Workers forked from a fork server that imported torch, the trainer and the models once
    (a worker then starts in milliseconds instead of seconds, and a rebuilt pool or a second
    sweep in the same process pays nothing); spawned where there is no fork server (Windows).
    Neither inherits the driver's state. Workers exit when the driver is gone
    (:func:`~nclab.sweep.trial.watch_driver`), and the fork server follows them."""
    if "forkserver" not in multiprocessing.get_all_start_methods():
        return multiprocessing.get_context("spawn")
    context = multiprocessing.get_context("forkserver")
    # torch._dynamo: torch.optim imports it on the first optimizer built, 2-5 s per process.
    context.set_forkserver_preload(
        ["torch", "torch._dynamo", "nclab.sweep.trial", "nclab.train.trainer", "nclab.models.cli"]
    )
    return context


def _init_worker(threads: int, driver: int) -> None:
    watch_driver(driver)
    limit_threads(threads)


class LocalExecutor:
    """A pool of ``parallel`` worker processes (see :func:`_context`), each limited to
    floor(``cpus``) compute threads (``resources.cpus``, default 1; at least 1).

    The threads of a trial do not depend on P, so a sweep's numbers do not depend on how many
    trials ran at once (a matrix product's rounding changes with its thread count). Default P:
    cores // threads for trials on the CPU, 1 for trials on a GPU. A worker that dies (killed,
    out of memory) fails the jobs it may have held; the pool is rebuilt for the rest.
    """

    def __init__(
        self, max_parallel: int | None = None, cpus: float = 1.0, gpu: bool = False
    ) -> None:
        self.threads = max(1, math.floor(cpus))
        if max_parallel is not None:
            self.parallel = max_parallel
        elif gpu:
            self.parallel = 1
        else:
            self.parallel = max(1, available_cores() // self.threads)
        self._pool: ProcessPoolExecutor | None = None

    def _start(self) -> ProcessPoolExecutor:
        if self._pool is None:
            self._pool = ProcessPoolExecutor(
                max_workers=self.parallel,
                mp_context=_context(),
                initializer=_init_worker,
                initargs=(self.threads, os.getpid()),
            )
        return self._pool

    def run(self, jobs: list[Job], started: Started, finished: Finished) -> None:
        queue = list(reversed(jobs))
        flight: dict[Future[dict[str, Any]], Job] = {}
        while queue or flight:
            pool = self._start()
            while queue and len(flight) < self.parallel:
                job = queue.pop()
                started(job)
                flight[pool.submit(run_trial, job.kind, job.payload, job.run_dir, self.threads)] = (
                    job
                )
            done, _ = wait(flight, return_when=FIRST_COMPLETED)
            broken = False
            for future in done:
                job = flight.pop(future)
                try:
                    result = future.result()
                except BrokenProcessPool as err:
                    broken = True
                    result = {"error": f"a worker process died ({err})", "traceback": ""}
                finished(job, result)
            if broken:
                self.close()

    def close(self) -> None:
        if self._pool is not None:
            self._pool.shutdown(wait=True, cancel_futures=True)
            self._pool = None


def _import_ray() -> Any:
    try:
        import ray
    except ImportError:
        raise ValueError(
            f"--executor ray: Ray is not installed; install it with: {RAY_INSTALL}"
        ) from None
    return ray


class RayExecutor:
    """Each trial a Ray core task with ``num_cpus=cpus`` and ``num_gpus=gpus`` (the spec's
    ``resources``), run with floor(cpus) (at least 1) compute threads.

    ``address``: ``auto`` or ``HOST:PORT`` joins a running cluster; None starts a local
    instance (all cores, no dashboard) that :meth:`close` stops. When Ray is already initialized
    in this process (a test's fixture, a benchmark), that instance is used and left running.
    ``max_parallel`` bounds the tasks submitted at once (default: all; Ray queues them by
    their resources).
    """

    def __init__(
        self,
        address: str | None = None,
        max_parallel: int | None = None,
        cpus: float = 1.0,
        gpus: float = 0.0,
    ) -> None:
        self._ray = _import_ray()
        self.address = address
        self.parallel = max_parallel or 0
        self.cpus, self.gpus = cpus, gpus
        self.threads = max(1, math.floor(cpus))
        self._owned = False

    def _start(self) -> None:
        ray = self._ray
        if ray.is_initialized():
            return
        if self.address is not None:
            ray.init(address=self.address, logging_level=logging.WARNING, log_to_driver=False)
        else:
            ray.init(
                num_cpus=available_cores(),
                include_dashboard=False,
                logging_level=logging.WARNING,
                log_to_driver=False,
            )
        self._owned = True

    def run(self, jobs: list[Job], started: Started, finished: Finished) -> None:
        ray = self._ray
        self._start()
        task = ray.remote(run_trial).options(num_cpus=self.cpus, num_gpus=self.gpus)
        window = self.parallel or len(jobs)
        queue = list(reversed(jobs))
        flight: dict[Any, Job] = {}
        while queue or flight:
            while queue and len(flight) < window:
                job = queue.pop()
                started(job)
                flight[task.remote(job.kind, job.payload, job.run_dir, self.threads)] = job
            ready, _ = ray.wait(list(flight), num_returns=1)
            for ref in ready:
                job = flight.pop(ref)
                try:
                    result = ray.get(ref)
                except Exception as err:  # a task whose worker or node died
                    result = {"error": f"{type(err).__name__}: {err}", "traceback": ""}
                finished(job, result)

    def close(self) -> None:
        if self._owned:
            self._ray.shutdown()
            self._owned = False


def make_executor(
    name: str,
    *,
    address: str | None = None,
    max_parallel: int | None = None,
    cpus: float = 1.0,
    gpus: float = 0.0,
    gpu_trials: bool = False,
) -> Executor:
    """The executor ``name`` (``local`` or ``ray``); fails at once, naming the argument, when
    the values are invalid or Ray is not installed."""
    if max_parallel is not None and max_parallel < 1:
        raise ValueError(f"--max-parallel: expected at least 1, got {max_parallel}")
    if name == "local":
        if address is not None:
            raise ValueError("--address: only for --executor ray")
        return LocalExecutor(max_parallel, cpus=cpus, gpu=gpu_trials)
    if name == "ray":
        return RayExecutor(address, max_parallel, cpus=cpus, gpus=gpus)
    raise ValueError(f"--executor: expected local or ray, got {name!r}")
