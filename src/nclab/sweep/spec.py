"""The sweep spec (YAML) and its expansion into trials.

A spec is a mapping::

    base: cpu-mlp            # a preset, a config file (relative to the spec), or solve:<model>
    grid: {noise.rate: [0.0, 0.2], loss.name: [ce, ls]}   # the product of every list
    zip: [{loss.smoothing: [0.0, 0.1], optim.lr: [0.05, 0.1]}]  # lists stepped together
    seeds: [0, 1, 2]         # run.seed of a training run, --seed of a solve
    set: {optim.epochs: 60}  # fixed overrides
    resources: {cpus: 1, gpus: 0}           # per trial (threads, Ray's num_cpus / num_gpus)
    select: {column: acc_true, mode: max}   # summary row per trial: best by a column (default: last)

The trials are the product of the grid's lists (in the order written), the zip groups and the
seeds, seeds varying fastest. A training trial is the base config with ``set`` and its key
values applied through :func:`nclab.train.config.apply_overrides`; a solve trial is the argument
list of ``nclab solve MODEL`` (a key ``lambda_h`` or ``lambda-h`` is the flag ``--lambda-h``; true
adds a switch such as ``--bias``, false leaves it out). Every trial is built and validated here,
before anything is written or run.
"""

from __future__ import annotations

import argparse
import contextlib
import copy
import hashlib
import io
import itertools
import json
import math
import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from nclab.yamlfile import load_yaml_file

__all__ = ["SweepSpec", "Trial", "load_spec", "parse_spec", "trial_name"]

SPEC_KEYS = ("base", "grid", "zip", "seeds", "set", "resources", "select")
_NAME_CHARS = re.compile(r"[^A-Za-z0-9._=+,-]")
_READABLE_MAX = 80


def _solve_models() -> tuple[str, ...]:
    """The models of ``nclab solve`` (imported when needed: the models load torch)."""
    from nclab.models.cli import solve_models

    return solve_models()


@dataclass(frozen=True)
class Trial:
    """One run of a sweep.

    name: its run directory's name (stable, collision-free: see :func:`trial_name`); key: the
    grid, zip and seed values that define it, in the spec's order; kind: ``train`` or ``solve``;
    payload: what the worker runs (a training config as a dict, or the ``nclab solve`` argv);
    fingerprint: a hash of everything that changes its numbers.
    """

    name: str
    key: dict[str, Any]
    kind: str
    payload: dict[str, Any]
    fingerprint: str


@dataclass
class SweepSpec:
    """A parsed, validated spec and its trials (see the module docstring)."""

    base: str
    grid: dict[str, list[Any]]
    zip: list[dict[str, list[Any]]]
    seeds: list[int] | None
    set: dict[str, Any]
    cpus: float = 1.0
    gpus: float = 0.0
    select_column: str | None = None
    select_mode: str = "max"
    trials: list[Trial] = field(default_factory=list)

    @property
    def kind(self) -> str:
        return "solve" if self.base.startswith("solve:") else "train"

    @property
    def key_columns(self) -> list[str]:
        """The columns a trial's key adds to the gathered tables."""
        keys = [*self.grid, *(k for group in self.zip for k in group)]
        return [*keys, "seed"] if self.seeds is not None else keys

    def canonical(self) -> dict[str, Any]:
        """The spec as ``spec.yaml`` records it (the trials are defined by base, grid, zip,
        seeds and set; resources and select may change between runs of a sweep)."""
        return {
            "base": self.base,
            "grid": self.grid,
            "zip": self.zip,
            "seeds": self.seeds,
            "set": self.set,
            "resources": {"cpus": self.cpus, "gpus": self.gpus},
            "select": (
                {"column": self.select_column, "mode": self.select_mode}
                if self.select_column
                else "last"
            ),
        }


def trial_name(key: dict[str, Any]) -> str:
    """The run directory name of a trial: its ``key=value`` pairs joined by commas (characters
    other than letters, digits and ``._=+,-`` replaced by ``_``, cut at 80 characters) and 8
    hex digits of the SHA-256 of the key's JSON, which keeps names distinct when the readable
    part is not (``a/b`` and ``a_b``) and stable across runs and machines."""
    readable = ",".join(f"{k}={_text(v)}" for k, v in key.items()) or "trial"
    readable = _NAME_CHARS.sub("_", readable)[:_READABLE_MAX]
    digest = hashlib.sha256(json.dumps(key, sort_keys=True).encode()).hexdigest()[:8]
    return f"{readable}-{digest}"


def _text(value: Any) -> str:
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, list):
        return "+".join(_text(v) for v in value)
    return str(value)


def load_spec(path: str | Path) -> SweepSpec:
    """Read and validate the spec file ``path`` (a config-file base is relative to it)."""
    p = Path(path)
    return parse_spec(load_yaml_file(p, "SPEC"), root=p.parent)


def parse_spec(data: Any, root: str | Path = ".") -> SweepSpec:
    """Validate the spec mapping ``data`` and expand its trials; errors name the spec key."""
    if not isinstance(data, dict):
        raise ValueError(
            f"spec: expected a mapping with keys {list(SPEC_KEYS)}, got {type(data).__name__}"
        )
    unknown = sorted(set(map(str, data)) - set(SPEC_KEYS))
    if unknown:
        raise ValueError(f"spec: unknown keys {unknown}; valid keys: {list(SPEC_KEYS)}")
    base = data.get("base")
    if not isinstance(base, str) or not base:
        raise ValueError(
            f"base: expected a preset name, a config file or solve:<model>, got {base!r}"
        )
    grid = _axes(data.get("grid"), "grid")
    zips = data.get("zip") or []
    if isinstance(zips, dict):
        zips = [zips]
    if not isinstance(zips, list):
        raise ValueError(f"zip: expected a list of mappings of lists, got {zips!r}")
    zip_groups = []
    for i, group in enumerate(zips):
        axes = _axes(group, f"zip[{i}]")
        if not axes:
            raise ValueError(f"zip[{i}]: expected a non-empty mapping of lists")
        lengths = {k: len(v) for k, v in axes.items()}
        if len(set(lengths.values())) > 1:
            raise ValueError(f"zip[{i}]: lists stepped together need equal lengths, got {lengths}")
        zip_groups.append(axes)
    seeds = data.get("seeds")
    if seeds is not None:
        if (
            not isinstance(seeds, list)
            or not seeds
            or any(isinstance(s, bool) or not isinstance(s, int) for s in seeds)
        ):
            raise ValueError(f"seeds: expected a non-empty list of integers, got {seeds!r}")
    fixed = data.get("set") or {}
    if not isinstance(fixed, dict):
        raise ValueError(f"set: expected a mapping of key: value, got {fixed!r}")
    if not grid and not zip_groups and seeds is None:
        raise ValueError("grid: the spec defines no trials; give a grid, a zip or seeds")
    _check_repeated_keys(grid, zip_groups, seeds, fixed, base)
    cpus, gpus = _resources(data.get("resources"))
    column, mode = _select(data.get("select"))
    spec = SweepSpec(
        base=base,
        grid=grid,
        zip=zip_groups,
        seeds=list(seeds) if seeds is not None else None,
        set=dict(fixed),
        cpus=cpus,
        gpus=gpus,
        select_column=column,
        select_mode=mode,
    )
    builder = _SolveBuilder(base) if spec.kind == "solve" else _TrainBuilder(base, Path(root))
    where = {
        **{k: "set" for k in spec.set},
        **{k: "grid" for k in spec.grid},
        **{k: f"zip[{i}]" for i, group in enumerate(spec.zip) for k in group},
        "seed": "seeds",
    }
    trials = [builder.trial(key, spec.set, where) for key in _keys(spec)]
    _check_duplicates(trials)
    spec.trials = trials
    return spec


def _axes(value: Any, where: str) -> dict[str, list[Any]]:
    if value is None:
        return {}
    if not isinstance(value, dict):
        raise ValueError(f"{where}: expected a mapping of key: [values], got {value!r}")
    if where == "grid" and not value:
        raise ValueError("grid: empty; give at least one key: [values] (or leave grid out)")
    axes = {}
    for key, values in value.items():
        if not isinstance(values, list) or not values:
            raise ValueError(f"{where}.{key}: expected a non-empty list of values, got {values!r}")
        axes[str(key)] = list(values)
    return axes


def _check_repeated_keys(
    grid: dict[str, list[Any]],
    zips: list[dict[str, list[Any]]],
    seeds: list[int] | None,
    fixed: dict[str, Any],
    base: str,
) -> None:
    seed_key = "seed" if base.startswith("solve:") else "run.seed"
    places: dict[str, list[str]] = {}
    for key in grid:
        places.setdefault(_canonical_key(key), []).append(f"grid.{key}")
    for i, group in enumerate(zips):
        for key in group:
            places.setdefault(_canonical_key(key), []).append(f"zip[{i}].{key}")
    for key in fixed:
        places.setdefault(_canonical_key(str(key)), []).append(f"set.{key}")
    if seeds is not None:
        places.setdefault(_canonical_key(seed_key), []).append("seeds")
    repeated = {k: v for k, v in places.items() if len(v) > 1}
    if repeated:
        where = "; ".join(" and ".join(v) for v in repeated.values())
        raise ValueError(f"spec: a key is given more than once ({where})")


def _canonical_key(key: str) -> str:
    return key.lstrip("-").replace("-", "_")


def _resources(value: Any) -> tuple[float, float]:
    if value is None:
        return 1.0, 0.0
    if not isinstance(value, dict) or set(map(str, value)) - {"cpus", "gpus"}:
        raise ValueError(f"resources: expected a mapping with cpus and/or gpus, got {value!r}")
    out = []
    for name, default in (("cpus", 1.0), ("gpus", 0.0)):
        amount = value.get(name, default)
        if isinstance(amount, bool) or not isinstance(amount, (int, float)) or amount < 0:
            raise ValueError(f"resources.{name}: expected a non-negative number, got {amount!r}")
        out.append(float(amount))
    if out[0] <= 0:
        raise ValueError(f"resources.cpus: expected a positive number, got {out[0]!r}")
    return out[0], out[1]


def _select(value: Any) -> tuple[str | None, str]:
    if value is None or value == "last":
        return None, "max"
    if not isinstance(value, dict) or set(map(str, value)) - {"column", "mode"}:
        raise ValueError(f"select: expected last or {{column: NAME, mode: max|min}}, got {value!r}")
    column, mode = value.get("column"), value.get("mode", "max")
    if not isinstance(column, str) or not column:
        raise ValueError(f"select.column: expected a column name, got {column!r}")
    if mode not in ("max", "min"):
        raise ValueError(f"select.mode: expected max or min, got {mode!r}")
    return column, str(mode)


def _keys(spec: SweepSpec) -> list[dict[str, Any]]:
    axes: list[list[dict[str, Any]]] = [[{k: v} for v in values] for k, values in spec.grid.items()]
    for group in spec.zip:
        n = len(next(iter(group.values())))
        axes.append([{k: values[i] for k, values in group.items()} for i in range(n)])
    if spec.seeds is not None:
        axes.append([{"seed": s} for s in spec.seeds])
    keys = []
    for combo in itertools.product(*axes):
        key: dict[str, Any] = {}
        for part in combo:
            key.update(part)
        keys.append(key)
    return keys


def _check_duplicates(trials: list[Trial]) -> None:
    seen: dict[str, Trial] = {}
    for trial in trials:
        other = seen.get(trial.fingerprint)
        if other is not None:
            raise ValueError(
                f"spec: duplicate trials {other.key} and {trial.key} run the same configuration"
            )
        seen[trial.fingerprint] = trial


def _override_text(value: Any) -> str:
    """``value`` as the YAML that :func:`apply_overrides` parses back (JSON is YAML)."""
    if isinstance(value, float) and not math.isfinite(value):
        return {math.inf: ".inf", -math.inf: "-.inf"}.get(value, ".nan")
    return json.dumps(value)


class _TrainBuilder:
    def __init__(self, base: str, root: Path) -> None:
        from nclab.train.config import TrainConfig
        from nclab.train.presets import PRESETS, preset

        if base in PRESETS:
            self.base = preset(base)
        else:
            path = Path(base) if Path(base).is_absolute() else root / base
            if not path.is_file():
                raise ValueError(
                    f"base: expected a preset ({', '.join(sorted(PRESETS))}), a config file or "
                    f"solve:<model> ({', '.join(_solve_models())}); {base!r} is none of these"
                )
            try:
                self.base = TrainConfig.from_file(path)
            except ValueError as err:
                raise ValueError(f"base: {err}") from None

    def trial(self, key: dict[str, Any], fixed: dict[str, Any], where: dict[str, str]) -> Trial:
        from nclab.train.config import apply_overrides

        cfg = copy.deepcopy(self.base)
        values = {**fixed, **{("run.seed" if k == "seed" else k): v for k, v in key.items()}}
        # All at once: the config's checks across keys see the trial's whole configuration.
        try:
            apply_overrides(cfg, [f"{k}={_override_text(v)}" for k, v in values.items()])
        except ValueError as err:
            named = str(err).split(":", 1)[0]
            section = where.get("seed" if named == "run.seed" else named, "spec")
            raise ValueError(f"{section}: {err} (trial {json.dumps(key)})") from None
        cfg.run.progress = False
        return Trial(
            name=trial_name(key),
            key=key,
            kind="train",
            payload={"config": cfg.to_dict()},
            fingerprint=cfg.fingerprint(),
        )


class _SolveBuilder:
    def __init__(self, base: str) -> None:
        self.model = base.split(":", 1)[1]
        if self.model not in _solve_models():
            raise ValueError(
                f"base: expected solve:<model> with a model in {_solve_models()}, got {base!r}"
            )
        self.parser = _solve_parser(self.model)
        self.actions = {
            _canonical_key(opt): action
            for action in self.parser._actions
            for opt in action.option_strings
            if opt.startswith("--") and action.dest not in ("help", "json")
        }

    def trial(self, key: dict[str, Any], fixed: dict[str, Any], where: dict[str, str]) -> Trial:
        argv = [self.model]
        for name, value in {**fixed, **key}.items():
            argv += self._flag(where[name], str(name), value)
        message = io.StringIO()
        try:
            with contextlib.redirect_stderr(message):
                self.parser.parse_args(argv[1:])
        except SystemExit:
            lines = message.getvalue().strip().splitlines()
            raise ValueError(
                f"set: solve:{self.model}: {lines[-1] if lines else 'invalid arguments'}"
            ) from None
        return Trial(
            name=trial_name(key),
            key=key,
            kind="solve",
            payload={"argv": argv},
            fingerprint=hashlib.sha256(json.dumps(argv).encode()).hexdigest()[:16],
        )

    def _flag(self, where: str, name: str, value: Any) -> list[str]:
        action = self.actions.get(_canonical_key(name))
        if action is None:
            raise ValueError(
                f"{where}.{name}: unknown key of solve:{self.model}; valid keys: "
                f"{sorted(self.actions)}"
            )
        flag = next(o for o in action.option_strings if o.startswith("--"))
        if action.nargs == 0:
            if not isinstance(value, bool):
                raise ValueError(f"{where}.{name}: expected true or false, got {value!r}")
            return [flag] if value else []
        if isinstance(value, (bool, list, dict)) or value is None:
            raise ValueError(f"{where}.{name}: expected a single value, got {value!r}")
        text = repr(value) if isinstance(value, float) else str(value)
        if callable(action.type):
            try:
                action.type(text)
            except (TypeError, ValueError):
                kind = getattr(action.type, "__name__", "value")
                raise ValueError(f"{where}.{name}: expected {kind}, got {value!r}") from None
        if action.choices is not None and text not in action.choices:
            raise ValueError(
                f"{where}.{name}: expected one of {list(action.choices)}, got {value!r}"
            )
        return [flag, text]


def _solve_parser(model: str) -> argparse.ArgumentParser:
    """The argument parser of ``nclab solve MODEL`` (built by the models' own CLI)."""
    from nclab.models.cli import add_solve_parser

    root = argparse.ArgumentParser(prog="nclab")
    sub = root.add_subparsers(dest="command")
    add_solve_parser(sub)
    solve = sub.choices["solve"]
    models = next(a for a in solve._actions if isinstance(a, argparse._SubParsersAction))
    parser: argparse.ArgumentParser = models.choices[model]
    return parser
