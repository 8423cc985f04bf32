"""Sweeps: grids of training runs or model solves, run by a local process pool or Ray tasks,
resumable from the sweep directory, gathered into one table (see docs/sweeps.md)."""

from nclab.sweep.gather import gather
from nclab.sweep.runner import SweepResult, run_sweep
from nclab.sweep.spec import SweepSpec, Trial, load_spec, parse_spec

__all__ = ["SweepResult", "SweepSpec", "Trial", "gather", "load_spec", "parse_spec", "run_sweep"]
