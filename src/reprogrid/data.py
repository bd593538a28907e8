"""The four IDX files of a 28x28 data set: fetch, check, and prepare once for every run.

`prepare` reads the raw files (downloaded by torchvision or copied into a folder), checks
that they are the data set they are named as (`rawfiles.check`), checks every header and
label, and writes one compact file of uint8 tensors that a training job loads,
memory-mapped, in milliseconds.
"""

from __future__ import annotations

import gzip
import hashlib
import importlib
import math
import struct
import zlib
from pathlib import Path
from typing import Any

import numpy as np
import torch

from reprogrid import atomic, catalog, checkpoint, rawfiles
from reprogrid.rawfiles import DataError
from reprogrid.split import validation_count

IMAGE_MAGIC = 0x00000803  # unsigned bytes, 3 dimensions
LABEL_MAGIC = 0x00000801  # unsigned bytes, 1 dimension
SIDE = 28


def sha256(path: str | Path) -> str:
    """Hex sha256 of a file's bytes."""
    digest = hashlib.sha256()
    with open(path, "rb") as handle:
        for block in iter(lambda: handle.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def _read_bytes(path: Path) -> bytes:
    try:
        if path.suffix == ".gz":
            with gzip.open(path, "rb") as handle:
                return handle.read()
        return path.read_bytes()
    except (OSError, EOFError, zlib.error) as err:
        raise rawfiles.unreadable(path, err) from None


def read_idx(path: str | Path, magic: int) -> np.ndarray:
    """Parse one IDX file, checking its magic number, dimensions and length."""
    path = Path(path)
    raw = _read_bytes(path)
    if len(raw) < 8:
        raise DataError(f"{path}: too short to be an IDX file ({len(raw)} bytes); copy it again")
    (found,) = struct.unpack(">I", raw[:4])
    if found != magic:
        hint = f"; it is gzipped: name it {path.name}.gz" if raw[:2] == rawfiles.GZIP_MAGIC else ""
        raise DataError(f"{path}: magic number {found:#010x}, expected {magic:#010x}{hint}")
    ndim = found & 0xFF
    header = 4 + 4 * ndim
    if len(raw) < header:
        raise DataError(f"{path}: truncated header")
    shape = struct.unpack(f">{ndim}I", raw[4:header])
    expected = math.prod(shape) + header
    if len(raw) != expected:
        raise DataError(
            f"{path}: {len(raw)} bytes where the header {tuple(shape)} promises {expected}; "
            "the file is truncated or corrupt"
        )
    return np.frombuffer(raw, dtype=np.uint8, offset=header).reshape(shape)


def check_split(
    images: np.ndarray, labels: np.ndarray, num_classes: int, sources: tuple[Path, Path]
) -> None:
    """Refuse a split whose images and labels do not belong together."""
    image_file, label_file = sources
    if images.shape[1:] != (SIDE, SIDE):
        raise DataError(f"{image_file}: images are {images.shape[1:]}, expected ({SIDE}, {SIDE})")
    if images.shape[0] == 0:
        raise DataError(f"{image_file}: holds no images")
    if images.shape[0] != labels.shape[0]:
        raise DataError(
            f"{label_file}: {labels.shape[0]} labels for {images.shape[0]} images in {image_file}"
        )
    if labels.max() >= num_classes:
        raise DataError(f"{label_file}: label {int(labels.max())} outside 0..{num_classes - 1}")


def download(dataset: str, root: str | Path) -> Path:
    """Download `dataset` into `root` as torchvision does; return the folder of its IDX files.

    Each file comes from the first of torchvision's mirrors that serves it with the published
    md5. Without network this refuses in one line saying which files to put where instead.
    """
    spec = catalog.DATASETS[dataset]
    klass = getattr(importlib.import_module("torchvision.datasets"), spec.torchvision_class)
    utils = importlib.import_module("torchvision.datasets.utils")
    raw = Path(root) / spec.torchvision_class / "raw"
    for filename, md5 in klass.resources:
        for mirror in klass.mirrors:
            try:
                utils.download_and_extract_archive(
                    f"{mirror}{filename}", download_root=str(raw), filename=filename, md5=md5
                )
                break
            except (OSError, RuntimeError) as err:  # URLError, or a download failing its md5
                failure = err
        else:
            files = ", ".join(f"{stem}.gz" for stem in catalog.IDX_FILES.values())
            raise DataError(
                f"cannot download {dataset} ({filename}: {failure}); without network, set "
                f"data.raw_dir to a folder holding its four IDX files {files} (gzipped or not)"
            )
    return raw


def prepare(
    dataset: str, raw_dir: str | Path, out_file: str | Path, verify: bool = True
) -> dict[str, Any]:
    """Check the raw files and write the prepared tensors; return the checks' record.

    `verify` refuses files other than `dataset`'s published ones (see `rawfiles.check`).
    """
    spec = catalog.DATASETS[dataset]
    files = rawfiles.inspect(raw_dir)
    verified = rawfiles.check(dataset, files, verify)
    arrays = {}
    for split in ("train", "test"):
        image_file, label_file = files[f"{split}_images"].path, files[f"{split}_labels"].path
        images = read_idx(image_file, IMAGE_MAGIC)
        labels = read_idx(label_file, LABEL_MAGIC)
        check_split(images, labels, spec.num_classes, (image_file, label_file))
        arrays[split] = (images, labels)

    train_images = arrays["train"][0].astype(np.float64) / 255.0
    record = {
        "dataset": dataset,
        "num_classes": spec.num_classes,
        "verify": verify,
        "verified": verified,
        "raw_files": {role: str(file.path) for role, file in files.items()},
        "raw_sha256": {file.path.name: file.sha256 for file in files.values()},
        "counts": {split: int(arrays[split][0].shape[0]) for split in arrays},
        "canonical_counts": (
            arrays["train"][0].shape[0] == spec.train_count
            and arrays["test"][0].shape[0] == spec.test_count
        ),
        "mean": float(train_images.mean()),
        "std": float(train_images.std()),
    }
    payload = {
        "train_images": torch.from_numpy(arrays["train"][0].copy()),
        "train_labels": torch.from_numpy(arrays["train"][1].astype(np.int64)),
        "test_images": torch.from_numpy(arrays["test"][0].copy()),
        "test_labels": torch.from_numpy(arrays["test"][1].astype(np.int64)),
        "mean": record["mean"],
        "std": record["std"],
        "num_classes": spec.num_classes,
    }
    atomic.write_bytes(out_file, checkpoint.to_bytes(payload))
    record["prepared_sha256"] = sha256(out_file)
    return record


def load_prepared(path: str | Path) -> dict[str, Any]:
    """The prepared tensors, memory-mapped (a few milliseconds for 70,000 images)."""
    return torch.load(path, mmap=True, weights_only=True)


def split_train_val(
    labels_count: int, val_fraction: float, split_seed: int
) -> tuple[torch.Tensor, torch.Tensor]:
    """Indices of the training and validation parts, the same for every run with this seed."""
    generator = torch.Generator().manual_seed(split_seed)
    order = torch.randperm(labels_count, generator=generator)
    n_val = validation_count(labels_count, val_fraction)
    if n_val >= labels_count:
        raise DataError(
            f"val_fraction {val_fraction} leaves no training images out of {labels_count}"
        )
    return order[n_val:].sort().values, order[:n_val].sort().values
