"""The README's Python snippets run as written (doctest-style), in one namespace, in order.

The names a snippet uses without defining (`features`, `labels`, `W`, `b`, `batches`,
`loader_of_feature_batches`, `model`, `loader`) are small real data made here: 10 classes,
d = 16, features collapsing around a simplex ETF, and a network with modules named as in the
snippet. A snippet preceded by a line `<!-- not run: REASON -->` is skipped (none should be
without a reason a reader can check).
"""

from __future__ import annotations

import os
import re
from collections import OrderedDict
from pathlib import Path

import numpy as np
import pytest
import torch
from torch import nn

README = Path(__file__).resolve().parents[1] / "README.md"
BLOCK = re.compile(r"(<!-- not run: [^>]+-->\s*)?```python\n(.*?)```", re.S)


def snippets() -> list[tuple[int, str, bool]]:
    text = README.read_text()
    out = []
    for match in BLOCK.finditer(text):
        line = text[: match.start(2)].count("\n") + 1
        out.append((line, match.group(2), match.group(1) is not None))
    return out


def namespace() -> dict[str, object]:
    g = np.random.default_rng(0)
    k, d, n = 10, 16, 20
    labels = np.repeat(np.arange(k), n)
    centres = g.normal(size=(k, d)).astype(np.float32)
    features = (centres[labels] + 0.1 * g.normal(size=(k * n, d))).astype(np.float32)
    batches = [(features[i : i + 32], labels[i : i + 32]) for i in range(0, k * n, 32)]
    model = nn.Sequential(
        OrderedDict(
            layer3=nn.Linear(8, d), act=nn.ReLU(), avgpool=nn.Linear(d, d), fc=nn.Linear(d, k)
        )
    )
    x = torch.randn(k * n, 8, generator=torch.Generator().manual_seed(1))
    y = torch.from_numpy(labels)
    loader = [(x[i : i + 50], y[i : i + 50]) for i in range(0, k * n, 50)]
    return {
        "features": features,
        "labels": labels,
        "W": centres,
        "b": np.zeros(k, dtype=np.float32),
        "batches": batches,
        "loader_of_feature_batches": batches,
        "model": model,
        "loader": loader,
    }


def test_the_readme_has_python_snippets() -> None:
    assert len(snippets()) >= 4


def test_readme_snippets_run_as_written(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.chdir(tmp_path)
    torch.set_num_threads(1)
    scope = namespace()
    ran = 0
    for line, code, skipped in snippets():
        if skipped:
            continue
        try:
            exec(compile(code, f"README.md:{line}", "exec"), scope)
        except Exception as err:  # the snippet's line in the README, then the error
            raise AssertionError(f"README.md snippet at line {line} failed: {err!r}") from err
        ran += 1
    assert ran >= 4
    assert os.getcwd() == str(tmp_path)
