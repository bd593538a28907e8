"""Prepared data: a task's `load` run once, its tensors written for every training job.

`prepare` runs the task's `load` on the raw files and writes one safetensors file that a
training job loads, memory-mapped, in milliseconds; for a task whose `load` returns
Datasets, the file holds what identifies them instead, and `open_prepared` has each
training job call `load` again. For the built-in IDX task it first
checks that the files are the data set they are named as (`rawfiles.check`); `read_idx`
and `check_split` read and check IDX files (downloaded by torchvision or copied into a
folder) for that task.
"""

from __future__ import annotations

import gzip
import hashlib
import importlib
import json
import math
import struct
import zlib
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import numpy as np
import torch

from reprogrid.datasets import catalog, rawfiles
from reprogrid.datasets.loading import identity
from reprogrid.datasets.rawfiles import DataError
from reprogrid.plan.split import validation_count
from reprogrid.record import atomic
from reprogrid.tasks.runtime import Task, holds_datasets

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
    task: Task,
    raw: str | Path | None,
    out_file: str | Path,
    *,
    dataset: str | None = None,
    verify: bool = True,
) -> dict[str, Any]:
    """Run the task's `load` on `raw` and write what it returned; the record of the checks.

    For the built-in IDX task, `dataset` names the data set whose published files the raw
    files must be (`rawfiles.check`, with `verify`). The tensors are written in the
    safetensors format, which holds data and no code, beside the facts `load` returned.
    """
    record: dict[str, Any] = {"task": task.spec.name}
    if dataset is not None:
        files = rawfiles.inspect(raw)
        record.update(
            dataset=dataset,
            verify=verify,
            verified=rawfiles.check(dataset, files, verify),
            raw_files={role: str(file.path) for role, file in files.items()},
            raw_sha256={file.path.name: file.sha256 for file in files.values()},
        )
    elif raw is not None:
        record["raw_sha256"] = rawfiles.digests_of(raw, rawfiles.folder_files(raw))
    loaded, facts = task.load(None if raw is None else str(raw))
    if holds_datasets(loaded):
        # Data that do not fit in memory stay where they are: the file records what
        # identifies them, and each training job calls `load` again (`open_prepared`).
        described = {"raw_dir": None if raw is None else str(raw), **identity(task, loaded)}
        record.update(counts=described["counts"], facts=facts, datasets=described)
        atomic.write_bytes(out_file, write_tensors({}, facts, datasets=described))
        record["prepared_sha256"] = sha256(out_file)
        return record
    tensors = loaded
    record["counts"] = {split: int(tensors[f"{split}_x"].shape[0]) for split in ("train", "test")}
    if dataset is not None:
        spec = catalog.DATASETS[dataset]
        record["canonical_counts"] = record["counts"] == {
            "train": spec.train_count,
            "test": spec.test_count,
        }
    record["facts"] = facts
    atomic.write_bytes(out_file, write_tensors(tensors, facts))
    record["prepared_sha256"] = sha256(out_file)
    return record


# The safetensors metadata entries that hold the facts `load` returned and, for a task
# whose `load` returns Datasets, what identifies them, each as JSON.
FACTS_KEY = "reprogrid.facts"
DATASETS_KEY = "reprogrid.datasets"


def write_tensors(
    tensors: Mapping[str, torch.Tensor],
    facts: Mapping[str, Any],
    datasets: Mapping[str, Any] | None = None,
) -> bytes:
    """Tensors and plain facts as the bytes of a safetensors file (no pickle, no code); for
    Datasets, no tensors and, under `DATASETS_KEY`, what identifies them."""
    from safetensors.torch import save

    metadata = {FACTS_KEY: json.dumps(dict(facts), sort_keys=True)}
    if datasets is not None:
        metadata[DATASETS_KEY] = json.dumps(dict(datasets), sort_keys=True)
    return save(dict(tensors), metadata=metadata)


def _read_prepared(path: str | Path) -> tuple[dict[str, Any], dict[str, Any] | None]:
    """The prepared tensors, memory-mapped, and facts, and what identifies Datasets (None
    for tensors)."""
    from safetensors import safe_open

    try:
        with safe_open(str(path), framework="pt") as handle:
            metadata = handle.metadata() or {}
            facts = json.loads(metadata.get(FACTS_KEY, "{}"))
            datasets = json.loads(metadata[DATASETS_KEY]) if DATASETS_KEY in metadata else None
            tensors = {key: handle.get_tensor(key) for key in handle.keys()}  # noqa: SIM118
    except Exception as error:
        # Whatever the file holds, it is not prepared data of ours: say so in one line.
        raise DataError(
            f"{path}: is not prepared data ({type(error).__name__}: {error}); delete it and "
            "run snakemake again to prepare the data anew"
        ) from None
    return {**facts, **tensors}, datasets


def load_prepared(path: str | Path) -> dict[str, Any]:
    """The prepared tensors, memory-mapped, with the facts `load` returned beside them."""
    return _read_prepared(path)[0]


def open_prepared(task: Task, path: str | Path) -> dict[str, Any]:
    """What a training job trains on: the prepared tensors and facts (`load_prepared`), or,
    for a task whose `load` returns Datasets, the Datasets and facts `load` returns again,
    refused unless they are those the data job identified."""
    prepared, recorded = _read_prepared(path)
    if recorded is None:
        return prepared
    raw = recorded["raw_dir"]
    loaded, facts = task.load(raw)
    if not holds_datasets(loaded):
        raise DataError(
            f"{raw}: task {task.spec.name}'s load now returns tensors where it returned "
            "Datasets when the data were prepared; run snakemake again to prepare them anew"
        )
    found = identity(task, loaded)
    differs = [
        what
        for what, now, then in (
            ("lengths", found["counts"], recorded["counts"]),
            ("items", found["probe_sha256"], recorded["probe_sha256"]),
            ("facts", facts, prepared),
        )
        if now != then
    ]
    if differs:
        raise DataError(
            f"{raw}: the {' and '.join(differs)} of task {task.spec.name}'s Datasets differ "
            f"from those prepared in {path} (lengths then {recorded['counts']}, now "
            f"{found['counts']}); the data changed since: run snakemake again"
        )
    return {**facts, **loaded}


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
