"""Make src/nclab/data/fashion_mnist_small.npz from the full Fashion-MNIST.

Run: ``python scripts/make_fashion_subset.py`` with Debian's ``dataset-fashion-mnist`` installed
(or ``--data-dir`` holding the four IDX files). Takes 400 training and 100 test images per class,
chosen at random with seed 0 and kept in their original order, as uint8.
"""

from __future__ import annotations

import argparse
from pathlib import Path

import numpy as np

from nclab.train.data import load_dataset, subset

OUT = Path(__file__).resolve().parents[1] / "src" / "nclab" / "data" / "fashion_mnist_small.npz"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--data-dir", default=None, help="folder with the IDX files")
    args = parser.parse_args()
    arrays = {}
    for split, train, per_class in (("train", True, 400), ("test", False, 100)):
        data = subset(
            load_dataset("fashion-mnist", train=train, data_dir=args.data_dir),
            per_class=per_class,
            seed=0,
        )
        arrays[f"{split}_images"] = data.images[:, 0].numpy()
        arrays[f"{split}_labels"] = data.labels.numpy().astype(np.uint8)
    np.savez_compressed(OUT, **arrays)
    print(f"wrote {OUT} ({OUT.stat().st_size / 1e6:.1f} MB)")


if __name__ == "__main__":
    main()
