"""The registries of architectures and datasets, by name.

This module imports nothing heavy: Snakemake reads it while it plans (and again in every
cluster job), so the names it offers must be known without importing torch. Each entry
points at the code that implements it; `models.build_model` and `data` resolve them.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

# name -> class in reprogrid.train.models. Add a line here when you add a model class.
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
    """A 28x28 grey-scale classification data set in the IDX format, as its authors publish it.

    `gz_md5` holds the md5 of each published `.gz` file by role (the digests torchvision checks
    its downloads against); `idx_md5` the md5 of the IDX file inside it, where it is known, so
    that plain and re-compressed copies are recognised too.
    """

    torchvision_class: str
    num_classes: int
    train_count: int
    test_count: int
    gz_md5: dict[str, str]
    idx_md5: dict[str, str]


DATASETS: dict[str, DatasetSpec] = {
    "mnist": DatasetSpec(
        "MNIST",
        10,
        60_000,
        10_000,
        gz_md5={
            "train_images": "f68b3c2dcbeaaa9fbdd348bbdeb94873",
            "train_labels": "d53e105ee54ea40749a09fcbcd1e9432",
            "test_images": "9fb629c4189551a2d022fa330f9573f3",
            "test_labels": "ec29112dd5afa0611ce80d1b7f02629c",
        },
        idx_md5={
            "train_images": "6bbc9ace898e44ae57da46a324031adb",
            "train_labels": "a25bea736e30d166cdddb491f175f624",
            "test_images": "2646ac647ad5339dbf082846283269ea",
            "test_labels": "27ae3e4e09519cfbb04c329615203637",
        },
    ),
    "fashion-mnist": DatasetSpec(
        "FashionMNIST",
        10,
        60_000,
        10_000,
        gz_md5={
            "train_images": "8d4fb7e6c68d591d4c3dfef9ec88bf0d",
            "train_labels": "25c81989df183df01b3e8a0aad5dffbe",
            "test_images": "bef4ecab320f06d8554ea6380940ec79",
            "test_labels": "bb300cfdad3c16e7a12a480ee83cd310",
        },
        idx_md5={
            "train_images": "f4a8712d7a061bf5bd6d2ca38dc4d50a",
            "train_labels": "9018921c3c673c538a1fc5bad174d6f9",
            "test_images": "8181f5470baa50b63fa0f6fddb340f0a",
            "test_labels": "15d484375f8d13e6eb1aabb0c3f46965",
        },
    ),
    # Kuzushiji-MNIST's authors publish the digests of the .gz files only.
    "kmnist": DatasetSpec(
        "KMNIST",
        10,
        60_000,
        10_000,
        gz_md5={
            "train_images": "bdb82020997e1d708af4cf47b453dcf7",
            "train_labels": "e144d726b3acfaa3e44228e80efcd344",
            "test_images": "5c965bf0a639b31b8f53240b1b52f4d7",
            "test_labels": "7320c461ea6c1c855c0b718fb2a4b134",
        },
        idx_md5={},
    ),
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
