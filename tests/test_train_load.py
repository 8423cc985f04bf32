"""load_run reads a run back exactly (config, table, weights, data split); train accepts a
network of the user's own with user-named tracked layers."""

from __future__ import annotations

import math
from pathlib import Path

import pytest
import torch
from torch import nn

from nclab.train import load_run, read_metrics, train
from nclab.train.config import TrainConfig, apply_overrides
from nclab.train.presets import preset
from nclab.train.rundir import RunDirectoryError
from nclab.train.setup import prepare_data


def smoke(*overrides: str) -> TrainConfig:
    return apply_overrides(preset("smoke"), ["run.progress=false", *overrides])


def _same_weights(a: nn.Module, b: nn.Module) -> bool:
    sa, sb = a.state_dict(), b.state_dict()
    return sa.keys() == sb.keys() and all(torch.equal(sa[k], sb[k]) for k in sa)


def test_load_run_gives_back_the_config_table_weights_and_data_split(tmp_path: Path) -> None:
    cfg = smoke("optim.epochs=2")
    result = train(cfg, tmp_path / "run")
    before = torch.random.get_rng_state()
    run = load_run(tmp_path / "run")
    assert torch.equal(torch.random.get_rng_state(), before)  # the caller's RNG is untouched
    assert run.config.fingerprint() == cfg.fingerprint()
    assert run.rows == read_metrics(tmp_path / "run") and len(run.rows) == 2
    assert run.epoch == 2 and run.final and not run.model.training
    assert _same_weights(run.model, result.model)
    train_split, test_split, k, _ = prepare_data(cfg, torch.device("cpu"))
    assert run.num_classes == k == 4
    for got, want in ((run.train, train_split), (run.test, test_split)):
        assert torch.equal(got.x, want.x)
        assert torch.equal(got.observed, want.observed) and torch.equal(got.true, want.true)
    assert bool((run.train.observed != run.train.true).any())  # the noisy labels as trained
    # The rebuilt network gives the table's last test accuracy on the test split.
    with torch.no_grad():
        acc = (run.model(run.test.x).argmax(1) == run.test.true).double().mean().item()
    assert acc == pytest.approx(run.rows[-1]["test_acc"], abs=1e-12)


def test_load_run_of_an_unfinished_run_takes_its_checkpoint(tmp_path: Path) -> None:
    result = train(smoke("optim.epochs=2", "run.checkpoint_seconds=0"), tmp_path / "run")
    (tmp_path / "run" / "model.pt").unlink()  # as a run killed after its last checkpoint
    run = load_run(tmp_path / "run")
    assert run.epoch == 2 and not run.final and _same_weights(run.model, result.model)
    with pytest.raises(FileNotFoundError, match=r"holds no config\.yaml"):
        load_run(tmp_path / "elsewhere")


class TwoStage(nn.Module):
    """A user's own network: its own module names, a classifier named ``head``."""

    def __init__(self) -> None:
        super().__init__()
        self.features = nn.Sequential(nn.Flatten(), nn.Linear(784, 32), nn.ReLU())
        self.head = nn.Linear(32, 4)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out: torch.Tensor = self.head(self.features(x))
        return out


def test_train_takes_a_users_network_with_its_own_layer_names(tmp_path: Path) -> None:
    cfg = smoke("optim.epochs=2", "track.layers=[features.1, features]")
    torch.manual_seed(0)
    result = train(cfg, tmp_path / "run", model=TwoStage())
    rows = {(r["epoch"], r["layer"]): r for r in result.rows}
    assert set(rows) == {(e, layer) for e in (1, 2) for layer in ("features.1", "features")}
    # The classifier metrics (W, b of `head`) go to the layer whose output is head's input.
    assert math.isfinite(rows[2, "features"]["nc3_duality"])
    assert rows[2, "features"]["dim"] == 32
    assert (
        "nc3_duality" not in rows[2, "features.1"] or rows[2, "features.1"]["nc3_duality"] is None
    )
    assert "TwoStage" in (tmp_path / "run" / "model.txt").read_text()
    with pytest.raises(ValueError, match=r"model: .* pass a fresh instance"):
        load_run(tmp_path / "run")
    run = load_run(tmp_path / "run", model=TwoStage())
    assert _same_weights(run.model, result.model)
    # Resuming with another network (narrower features) is refused.
    other = TwoStage()
    other.features[1], other.head = nn.Linear(784, 16), nn.Linear(16, 4)
    longer = apply_overrides(cfg, ["optim.epochs=3"])
    with pytest.raises(RunDirectoryError, match="the network differs"):
        train(longer, tmp_path / "run", resume=True, model=other)


def test_a_users_network_is_checked_before_anything_is_written(tmp_path: Path) -> None:
    wrong_k = nn.Sequential(nn.Flatten(), nn.Linear(784, 3))
    with pytest.raises(ValueError, match=r"logits of shape \(batch, 4\).*got \(2, 3\)"):
        train(smoke("track.layers=['1']"), tmp_path / "a", model=wrong_k)
    with pytest.raises(ValueError, match=r"layers: \['penultimate'\] not found"):
        train(smoke(), tmp_path / "b", model=TwoStage())
    assert not (tmp_path / "a").exists() and not (tmp_path / "b").exists()


def test_a_network_that_does_not_take_the_images_or_a_shared_layer_is_bad_input(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    class SharedReLU(TwoStage):
        def forward(self, x: torch.Tensor) -> torch.Tensor:
            h = self.features(x)
            out: torch.Tensor = self.head(self.features[2](h))  # the ReLU runs twice
            return out

    with pytest.raises(ValueError, match=r"track\.layers: module 'features\.2' ran 2 times"):
        train(smoke("track.layers=[features.2]"), tmp_path / "a", model=SharedReLU())
    flat = nn.Sequential(nn.Linear(784, 4))  # no Flatten: (2, 1, 28, 28) images do not fit
    with pytest.raises(
        ValueError,
        match=r"model: a forward pass of two training images of shape \(1, 28, 28\) failed",
    ):
        train(smoke("track.layers=['0']"), tmp_path / "b", model=flat)
    assert not (tmp_path / "a").exists() and not (tmp_path / "b").exists()
