"""Property-based tests of `nclab train`'s configuration: generated values for every key, the
same as ``key=value`` overrides in any text, and mutated and random YAML files. Each case ends in
a valid config or a ValueError of one line that names the key (or the file, line and column);
nothing else escapes.

Deterministic (``derandomize=True``, no example database) and bounded: 100 + 40 + 45 + 15 = 200
cases per run, about 1 s of test time on one core.
"""

from __future__ import annotations

import dataclasses
import math
import re
import tempfile
import typing
from collections.abc import Callable
from pathlib import Path
from typing import Any

import yaml
from hypothesis import given, settings
from hypothesis import strategies as st

from nclab.losses import LOSSES
from nclab.train.config import TrainConfig, apply_overrides
from nclab.train.data import DATASETS
from nclab.train.nets import NETWORKS
from nclab.train.noise import NOISE_CONVENTIONS, NOISE_KINDS

FUZZ = settings(
    derandomize=True,
    database=None,
    deadline=None,
)

Rule = Callable[[Any], bool]


def integer(low: int, optional: bool = False) -> Rule:
    # Python ints (not bools) in [low, 2**63): torch and numpy take 64-bit integers.
    return lambda v: (optional and v is None) or (type(v) is int and low <= v < 2**63)


def number(ok: Callable[[float], bool], optional: bool = False) -> Rule:
    # An int, a float or a string that float() reads (YAML 1.1 reads 1e-4 as a string); finite.
    def rule(v: Any) -> bool:
        if optional and v is None:
            return True
        if isinstance(v, bool) or not isinstance(v, (int, float, str)):
            return False
        try:
            x = float(v)
        except (ValueError, OverflowError):
            return False
        return math.isfinite(x) and ok(x)

    return rule


def choice(*names: str) -> Rule:
    return lambda v: isinstance(v, str) and v in names


def boolean(v: Any) -> bool:
    return type(v) is bool


def module_names(v: Any) -> bool:
    return (
        isinstance(v, list)
        and len(v) >= 1
        and all(isinstance(x, str) and x for x in v)
        and len(set(v)) == len(v)
    )


def widths(v: Any) -> bool:
    return isinstance(v, list) and len(v) >= 1 and all(integer(1)(x) for x in v)


# What each key accepts when every other key keeps its default (an independent statement of the
# documented rules: the default loss is ce, so only the neutral loss parameters are valid; the
# default schedule is step, so milestones must stay empty).
SPEC: dict[str, Rule] = {
    "data.name": choice(*DATASETS),
    "data.data_dir": lambda v: v is None or (isinstance(v, str) and v != ""),
    "data.num_classes": integer(2, optional=True),
    "data.per_class": integer(1, optional=True),
    "data.test_per_class": integer(1, optional=True),
    "data.augment": boolean,
    "data.normalize": boolean,
    "data.batch_size": integer(1),
    "data.eval_batch_size": integer(1, optional=True),
    "noise.rate": number(lambda x: 0 <= x < 1),
    "noise.kind": choice(*NOISE_KINDS),
    "noise.convention": choice(*NOISE_CONVENTIONS),
    "model.name": choice(*NETWORKS),
    "model.widths": widths,
    "model.batchnorm": boolean,
    "model.bias": boolean,
    "model.width": number(lambda x: x > 0),
    "loss.name": choice(*LOSSES),
    "loss.smoothing": number(lambda x: x == 0),
    "loss.gamma": number(lambda x: x == 0),
    "loss.target_scale": number(lambda x: x == 1),
    "loss.target_weight": number(lambda x: x == 1),
    "optim.epochs": integer(1),
    "optim.lr": number(lambda x: x > 0),
    "optim.momentum": number(lambda x: 0 <= x < 1),
    "optim.weight_decay": number(lambda x: x >= 0),
    "optim.classifier_weight_decay": number(lambda x: x >= 0, optional=True),
    "optim.feature_penalty": number(lambda x: x >= 0),
    "optim.schedule": choice("constant", "step", "cosine"),
    "optim.step_size": integer(1),
    "optim.milestones": lambda v: v == [],
    "optim.gamma": number(lambda x: 0 < x <= 1),
    "track.layers": module_names,
    "track.eval_every": integer(1),
    "track.test_metrics": boolean,
    "track.cache_features": boolean,
    "track.source": choice("eval", "train"),
    "track.global_mean": choice("sample", "class"),
    "track.within_class": choice("pooled", "class_balanced"),
    "track.center_weights": boolean,
    "track.rank_rtol": number(lambda x: 0 <= x < 1, optional=True),
    "track.drop_empty_classes": boolean,
    "run.seed": integer(0),
    "run.device": choice("auto", "cpu", "cuda"),
    "run.bf16": boolean,
    "run.channels_last": boolean,
    "run.compile": boolean,
    "run.progress": boolean,
    "run.checkpoint_every": integer(1),
    "run.checkpoint_seconds": number(lambda x: x >= 0),
    "run.threads": integer(1, optional=True),
}

# A key whose bad value breaks a rule between keys names the other key of the rule.
ALSO_NAMED = {"optim.schedule": "optim.milestones"}

NAMES = [n for names in (DATASETS, NETWORKS, LOSSES, NOISE_KINDS, NOISE_CONVENTIONS) for n in names]
EDGES = [0, 1, -1, 2, 0.5, 1.0, 1e-300, 2**63 - 1, 2**63, -(2**63), 2**64, 10**400]
SCALARS = st.one_of(
    st.integers(min_value=-(2**80), max_value=2**80),
    st.floats(allow_nan=True, allow_infinity=True),
    st.sampled_from(EDGES),
    st.booleans(),
    st.none(),
    st.text(max_size=6),
    st.sampled_from([*NAMES, "nan", "inf", "-inf", "1e-4", "1e400", "0x10", "", "penultimate"]),
)
VALUES = st.one_of(
    SCALARS,
    st.lists(SCALARS, max_size=3),
    st.dictionaries(st.text(max_size=3), SCALARS, max_size=2),
)


def test_the_spec_covers_every_key() -> None:
    cfg = TrainConfig()
    keys = {
        f"{section.name}.{key}"
        for section in dataclasses.fields(cfg)
        for key in typing.get_type_hints(type(getattr(cfg, section.name)))
    }
    assert keys == set(SPEC)


@settings(FUZZ, max_examples=100)
@given(key=st.sampled_from(sorted(SPEC)), value=VALUES)
def test_a_value_is_accepted_exactly_when_valid_else_the_key_is_named(key: str, value: Any) -> None:
    section, name = key.split(".")
    try:
        cfg = TrainConfig.from_dict({section: {name: value}})
    except ValueError as err:
        message = str(err)
        assert not SPEC[key](value), message
        assert message.startswith((f"{key}: ", f"{ALSO_NAMED.get(key, key)}: ")), message
        assert "\n" not in message
        return
    assert SPEC[key](value), (key, value)
    hint = typing.get_type_hints(type(getattr(cfg, section)))[name]
    is_float = hint is float or hint == float | None
    expected = float(value) if is_float and value is not None else value
    assert getattr(getattr(cfg, section), name) == expected


OVERRIDE_TEXT = st.one_of(
    st.text(max_size=12),
    st.builds(str, SCALARS),
    st.sampled_from(["[", "{a: 1", "!!python/name:os.system", "&a [*a]", "- 1", "[1, 2]", "~"]),
)


@settings(FUZZ, max_examples=40)
@given(key=st.sampled_from(sorted(SPEC)), text=OVERRIDE_TEXT)
def test_an_override_in_any_text_is_applied_or_refused_naming_its_key(key: str, text: str) -> None:
    # The value of key=TEXT is TEXT read as YAML (plain values only).
    try:
        value = yaml.safe_load(text)
        parsed = True
    except yaml.YAMLError:
        parsed = False
    try:
        apply_overrides(TrainConfig(), [f"{key}={text}"])
    except ValueError as err:
        message = str(err)
        assert message.startswith((f"{key}: ", f"{ALSO_NAMED.get(key, key)}: ")), message
        assert not parsed or not SPEC[key](value), message
        assert "\n" not in message
        return
    assert parsed and SPEC[key](value), (key, text)


VALID_YAML = """\
data:
  name: fashion-mnist-small
  per_class: 40
noise:
  rate: 0.2
  kind: symmetric
optim:
  epochs: 4
  lr: 0.05
  schedule: multistep
  milestones: [2, 3]
track:
  layers: [body.3, penultimate]
run:
  seed: 0
"""
HOSTILE = st.sampled_from(["\x00", "\t", "\x07", ":", "[", "]", "{", "&", "*", "!", "-", "'", '"', "#", "\n", " ", "é", "\ufeff", "!!python/object:os.system ", "<<: "])  # fmt: skip
PREFIX = re.compile(r"^cfg\.yaml(:(\d+):(\d+))?: \S")


@st.composite
def mutated_yaml(draw: st.DrawFn) -> str:
    lines = VALID_YAML.splitlines(keepends=True)
    for _ in range(draw(st.integers(1, 3))):
        kind = draw(st.sampled_from(["insert", "duplicate", "delete", "truncate"]))
        text = "".join(lines)
        if kind == "insert":
            at = draw(st.integers(0, len(text)))
            text = text[:at] + draw(HOSTILE) + text[at:]
        elif kind == "truncate":
            text = text[: draw(st.integers(0, len(text)))]
        else:
            i = draw(st.integers(0, len(lines) - 1))
            copies = [lines[i]] * (2 if kind == "duplicate" else 0)
            text = "".join(lines[:i] + copies + lines[i + 1 :])
        lines = text.splitlines(keepends=True) or [""]
    return "".join(lines)


@settings(FUZZ, max_examples=45)
@given(text=mutated_yaml())
def test_mutated_yaml_is_a_config_or_one_line_with_file_line_and_column(text: str) -> None:
    try:
        cfg = TrainConfig.from_yaml(text, source="cfg.yaml")
    except ValueError as err:
        message = str(err)
        match = PREFIX.match(message)
        assert match is not None and "\n" not in message, message
        if match.group(2) is not None:
            assert 1 <= int(match.group(2)) <= text.count("\n") + 1, message
        return
    cfg.validate()


@settings(FUZZ, max_examples=15)
@given(junk=st.binary(max_size=24), at=st.integers(0, len(VALID_YAML)))
def test_bytes_in_a_config_file_give_a_config_or_an_error_naming_the_file(
    junk: bytes, at: int
) -> None:
    raw = VALID_YAML.encode()
    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / "cfg.yaml"
        path.write_bytes(raw[:at] + junk + raw[at:])
        try:
            TrainConfig.from_file(path)
        except ValueError as err:
            assert str(err).startswith(f"{path}:") and "\n" not in str(err), str(err)
