"""The registries of architectures and datasets, by name.

This module imports nothing heavy: Snakemake reads it while it plans (and again in every
cluster job), so the names it offers must be known without importing torch. Each entry
points at the code that implements it; `models.build_model` and `data` resolve them.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

# name -> class in reprogrid.models. Add a line here when you add a model class.
ARCHITECTURES: dict[str, str] = {
    "mlp": "MLP",
    "cnn": "SmallCNN",
    "speedcnn": "SpeedCNN",
    "examples_cnn": "ExamplesCNN",
}


# Relative CPU time per training image (mlp = 1), measured on Fashion-MNIST (docs/benchmarks.md).
# Snakemake starts the costliest runs first, so a grid does not end with one long run on one
# core while the others idle. A missing entry counts as 1; it affects order, never results.
TRAINING_COST: dict[str, float] = {
    "mlp": 1,
    "cnn": 10,
    "speedcnn": 4,
    "examples_cnn": 90,
}


@dataclass(frozen=True)
class DatasetSpec:
    """A 28x28 grey-scale classification data set in the IDX format."""

    torchvision_class: str
    num_classes: int
    train_count: int
    test_count: int


DATASETS: dict[str, DatasetSpec] = {
    "mnist": DatasetSpec("MNIST", 10, 60_000, 10_000),
    "fashion-mnist": DatasetSpec("FashionMNIST", 10, 60_000, 10_000),
    "kmnist": DatasetSpec("KMNIST", 10, 60_000, 10_000),
}

# The four files of every such data set, as torchvision and the original sites name them.
IDX_FILES: dict[str, str] = {
    "train_images": "train-images-idx3-ubyte",
    "train_labels": "train-labels-idx1-ubyte",
    "test_images": "t10k-images-idx3-ubyte",
    "test_labels": "t10k-labels-idx1-ubyte",
}


def find_idx_file(folder: Path, stem: str) -> Path | None:
    """The IDX file `stem` in `folder`, gzipped or plain, or None."""
    for candidate in (folder / f"{stem}.gz", folder / stem):
        if candidate.is_file():
            return candidate
    return None
