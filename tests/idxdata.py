"""Small, learnable data sets in the IDX format, written the way the real files are."""

from __future__ import annotations

import gzip
import struct
from pathlib import Path

import numpy as np

FILES = {
    "train_images": "train-images-idx3-ubyte.gz",
    "train_labels": "train-labels-idx1-ubyte.gz",
    "test_images": "t10k-images-idx3-ubyte.gz",
    "test_labels": "t10k-labels-idx1-ubyte.gz",
}


def idx_bytes(array: np.ndarray) -> bytes:
    """An IDX file's bytes for a uint8 array of one or three dimensions."""
    header = struct.pack(">I", 0x00000800 | array.ndim)
    header += struct.pack(f">{array.ndim}I", *array.shape)
    return header + array.astype(np.uint8).tobytes()


def make_split(n: int, rng: np.random.Generator, templates: np.ndarray, noise: float):
    labels = rng.integers(0, templates.shape[0], size=n)
    images = templates[labels] + rng.normal(0, noise, size=(n, 28, 28))
    return np.clip(images, 0, 255).astype(np.uint8), labels.astype(np.uint8)


def write_dataset(
    folder: str | Path, n_train: int = 1200, n_test: int = 300, seed: int = 0, noise: float = 90.0
) -> Path:
    """Write the four gzipped IDX files of a 10-class toy data set into `folder`.

    Each class is a fixed random pattern of bright blocks; images are that pattern plus
    Gaussian noise, so a model must learn but can learn fast.
    """
    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(seed)
    # Coarse 7x7 patterns blown up to 28x28: shapes with edges, which convolutions see well.
    coarse = (rng.random((10, 7, 7)) > 0.6) * 200.0
    templates = np.kron(coarse, np.ones((1, 4, 4)))
    train = make_split(n_train, rng, templates, noise)
    test = make_split(n_test, rng, templates, noise)
    arrays = {
        "train_images": train[0],
        "train_labels": train[1],
        "test_images": test[0],
        "test_labels": test[1],
    }
    for role, name in FILES.items():
        (folder / name).write_bytes(gzip.compress(idx_bytes(arrays[role]), mtime=0))
    return folder
