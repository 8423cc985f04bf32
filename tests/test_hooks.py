"""collect(): features hooked from named modules equal the features computed by hand."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from torch import nn

from nclab.metrics import collect, measure
from nclab.metrics.hooks import capture


def make_mlp(k: int = 4) -> nn.Sequential:
    torch.manual_seed(0)
    return nn.Sequential(
        nn.Linear(5, 16), nn.ReLU(), nn.Linear(16, 8), nn.ReLU(), nn.Linear(8, k)
    ).double()


def make_loader(n: int = 97, k: int = 4, shape: tuple[int, ...] = (5,)) -> list:
    gen = torch.Generator().manual_seed(1)
    x = torch.randn(n, *shape, generator=gen, dtype=torch.float64)
    y = torch.arange(n) % k
    sizes = [32, 32, 1, n - 65]  # uneven, including a batch of one: every sample counts
    return list(zip(x.split(sizes), y.split(sizes), strict=True))


def assert_close_reports(a: dict[str, float], b: dict[str, float]) -> None:
    assert set(a) == set(b)
    for key in a:
        assert np.isclose(a[key], b[key], rtol=1e-10, atol=1e-14), key


def test_collect_equals_measure_on_hand_computed_features() -> None:
    model = make_mlp()
    model.train()
    loader = make_loader()
    reports = collect(model, loader, ["1", "3"])
    assert list(reports) == ["1", "3"] and model.training
    x = torch.cat([b[0] for b in loader])
    y = torch.cat([b[1] for b in loader])
    with torch.no_grad():
        f1 = model[1](model[0](x))
        f2 = model[3](model[2](f1))
    assert_close_reports(reports["1"].as_dict(), measure(f1, y).as_dict())
    want = measure(f2, y, model[4].weight, model[4].bias).as_dict()
    assert_close_reports(reports["3"].as_dict(), want)
    assert reports["3"].num_samples == 97


def test_collect_flattens_convolutional_activations() -> None:
    torch.manual_seed(0)
    model = nn.Sequential(
        nn.Conv2d(2, 3, 3, padding=1), nn.ReLU(), nn.Flatten(), nn.Linear(3 * 4 * 4, 3)
    ).double()
    loader = make_loader(n=70, k=3, shape=(2, 4, 4))
    reports = collect(model, loader, ["1"], classifier=None, num_classes=3)
    x = torch.cat([b[0] for b in loader])
    y = torch.cat([b[1] for b in loader])
    with torch.no_grad():
        feats = model[1](model[0](x)).flatten(1)
    assert reports["1"].dim == 48
    assert_close_reports(reports["1"].as_dict(), measure(feats, y).as_dict())


def test_collect_errors_name_the_argument() -> None:
    model = make_mlp()
    loader = make_loader()
    with pytest.raises(ValueError, match=r"layers: \['fc'\] not found.*valid module names"):
        collect(model, loader, ["fc"])
    with pytest.raises(ValueError, match="classifier: in_features 8 does not match the width 16"):
        collect(model, loader, ["1"])
    with pytest.raises(ValueError, match=r"classifier: '1' is not an nn\.Linear"):
        collect(model, loader, ["3"], classifier="1")
    with pytest.raises(TypeError, match="layers: expected a non-empty list"):
        collect(model, loader, "3")
    with pytest.raises(ValueError, match="num_classes: required"):
        collect(nn.Sequential(nn.ReLU()), loader, ["0"], classifier=None)


class _Residual(nn.Module):
    """A block that adds its input to its BatchNorm's output in place, as torchvision's ResNet
    blocks do (``out += identity``), then an in-place ReLU."""

    def __init__(self) -> None:
        super().__init__()
        self.lin = nn.Linear(5, 5)
        self.bn = nn.BatchNorm1d(5)
        self.relu = nn.ReLU(inplace=True)
        self.fc = nn.Linear(5, 4)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out = self.bn(self.lin(x))
        out += x
        return self.fc(self.relu(out))


def test_outputs_modified_in_place_later_are_measured_as_the_module_returned_them() -> None:
    torch.manual_seed(0)
    model = _Residual().double().eval()
    loader = make_loader()
    x = torch.cat([b[0] for b in loader])
    y = torch.cat([b[1] for b in loader])
    with torch.no_grad():
        bn_out = model.bn(model.lin(x))
    report = collect(model, loader, ["bn"], classifier=None, num_classes=4)
    assert_close_reports(report["bn"].as_dict(), measure(bn_out, y).as_dict())
    # Without a copy the hooked tensor is the one `out += x` changes: reading it is an error.
    with torch.no_grad(), capture(model, ["bn"]) as captured:
        model(x)
        with pytest.raises(RuntimeError, match="output of module 'bn' was modified in place"):
            captured["bn"]
    with torch.no_grad(), capture(model, ["lin"]) as captured:
        model(x)
        assert torch.equal(captured["lin"], model.lin(x))  # untouched outputs read fine


def test_a_module_that_runs_twice_in_one_forward_pass_is_an_error() -> None:
    # torchvision's BasicBlock calls its one ReLU module twice; hooking it would measure only
    # the second call's output.
    torch.manual_seed(0)
    relu = nn.ReLU()
    model = nn.Sequential(nn.Linear(5, 8), relu, nn.Linear(8, 8), relu, nn.Linear(8, 4)).double()
    with pytest.raises(RuntimeError, match=r"module '1' ran 2 times in one forward pass"):
        collect(model, make_loader(), ["1"])
    reports = collect(model, make_loader(), ["2"])  # a module that runs once is fine
    assert reports["2"].num_samples == 97
