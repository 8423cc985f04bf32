"""Explicit, opt-in downloads of the public datasets, verified against published checksums.

Nothing in nclab downloads unless asked (``nclab train --download`` or
``load_dataset(..., download=True)``). Each file is streamed to a temporary file beside its
destination, its MD5 is compared with the value published with the dataset (the same values
torchvision checks), and only then is it renamed into place; an archive is extracted with
tarfile's ``data`` filter (no absolute paths, links or files outside the folder).
"""

from __future__ import annotations

import hashlib
import os
import tarfile
import tempfile
import urllib.request
from dataclasses import dataclass
from pathlib import Path

__all__ = ["REMOTES", "Remote", "cache_dir", "download"]

_MNIST = "https://ossci-datasets.s3.amazonaws.com/mnist/"
_FASHION = "http://fashion-mnist.s3-website.eu-central-1.amazonaws.com/"
_SVHN = "http://ufldl.stanford.edu/housenumbers/"


@dataclass(frozen=True)
class Remote:
    """A file to fetch: where from, its name, its MD5, whether it is a tar archive."""

    url: str
    filename: str
    md5: str
    extract: bool = False


REMOTES: dict[str, tuple[Remote, ...]] = {
    "mnist": (
        Remote(
            _MNIST + "train-images-idx3-ubyte.gz",
            "train-images-idx3-ubyte.gz",
            "f68b3c2dcbeaaa9fbdd348bbdeb94873",
        ),
        Remote(
            _MNIST + "train-labels-idx1-ubyte.gz",
            "train-labels-idx1-ubyte.gz",
            "d53e105ee54ea40749a09fcbcd1e9432",
        ),
        Remote(
            _MNIST + "t10k-images-idx3-ubyte.gz",
            "t10k-images-idx3-ubyte.gz",
            "9fb629c4189551a2d022fa330f9573f3",
        ),
        Remote(
            _MNIST + "t10k-labels-idx1-ubyte.gz",
            "t10k-labels-idx1-ubyte.gz",
            "ec29112dd5afa0611ce80d1b7f02629c",
        ),
    ),
    "fashion-mnist": (
        Remote(
            _FASHION + "train-images-idx3-ubyte.gz",
            "train-images-idx3-ubyte.gz",
            "8d4fb7e6c68d591d4c3dfef9ec88bf0d",
        ),
        Remote(
            _FASHION + "train-labels-idx1-ubyte.gz",
            "train-labels-idx1-ubyte.gz",
            "25c81989df183df01b3e8a0aad5dffbe",
        ),
        Remote(
            _FASHION + "t10k-images-idx3-ubyte.gz",
            "t10k-images-idx3-ubyte.gz",
            "bef4ecab320f06d8554ea6380940ec79",
        ),
        Remote(
            _FASHION + "t10k-labels-idx1-ubyte.gz",
            "t10k-labels-idx1-ubyte.gz",
            "bb300cfdad3c16e7a12a480ee83cd310",
        ),
    ),
    "cifar10": (
        Remote(
            "https://www.cs.toronto.edu/~kriz/cifar-10-python.tar.gz",
            "cifar-10-python.tar.gz",
            "c58f30108f718f92721af3b95e74349a",
            extract=True,
        ),
    ),
    "svhn": (
        Remote(_SVHN + "train_32x32.mat", "train_32x32.mat", "e26dedcc434d2e4c54c9b2d4a06d8373"),
        Remote(_SVHN + "test_32x32.mat", "test_32x32.mat", "eb5a983be6a315427106f1b164d9cef3"),
    ),
}


def cache_dir() -> Path:
    """``$XDG_CACHE_HOME/nclab`` (default ``~/.cache/nclab``): where downloads go by default."""
    base = os.environ.get("XDG_CACHE_HOME") or str(Path.home() / ".cache")
    return Path(base) / "nclab"


def _md5(path: Path) -> str:
    digest = hashlib.md5(usedforsecurity=False)
    with path.open("rb") as handle:
        for block in iter(lambda: handle.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def _extract(archive_path: Path, folder: Path) -> None:
    """Extract a tar archive refusing absolute paths, '..', links and devices."""
    with tarfile.open(archive_path) as archive:
        if hasattr(tarfile, "data_filter"):  # Python >= 3.11.4 / 3.10.12
            archive.extractall(folder, filter="data")
            return
        root = folder.resolve()
        for member in archive.getmembers():
            inside = (root / member.name).resolve().is_relative_to(root)
            if not inside or not (member.isfile() or member.isdir()):
                raise ValueError(
                    f"{archive_path.name}: refusing the archive member {member.name!r}"
                )
        archive.extractall(folder)


def download(name: str, dest: str | os.PathLike[str]) -> Path:
    """Fetch every file of dataset ``name`` into ``dest`` (verified; archives extracted)."""
    if name not in REMOTES:
        raise ValueError(f"dataset: no download for {name!r}; downloadable: {sorted(REMOTES)}")
    folder = Path(dest)
    folder.mkdir(parents=True, exist_ok=True)
    for remote in REMOTES[name]:
        target = folder / remote.filename
        if not (target.is_file() and _md5(target) == remote.md5):
            fd, tmp = tempfile.mkstemp(dir=folder, prefix=f".{remote.filename}.", suffix=".part")
            try:
                with os.fdopen(fd, "wb") as out, urllib.request.urlopen(remote.url) as response:
                    for block in iter(lambda: response.read(1 << 20), b""):
                        out.write(block)
                got = _md5(Path(tmp))
                if got != remote.md5:
                    raise ValueError(
                        f"{remote.filename}: checksum mismatch (md5 {got}, expected {remote.md5}); "
                        "the file was discarded"
                    )
                os.replace(tmp, target)
            finally:
                Path(tmp).unlink(missing_ok=True)
        if remote.extract:
            _extract(target, folder)
    return folder
