"""The raw data a config names, checked while planning: its folder, its files and a split
that fits them (a class per validation image or more, batches no larger than the data).

`is_idx_task` says whether a resolved config runs the built-in IDX task, which alone has
files and a split to check before any job.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from reprogrid.config.errors import (
    ConfigError,
    shown,
)
from reprogrid.config.layers import Resolution
from reprogrid.datasets import catalog, rawfiles
from reprogrid.plan.split import validation_count
from reprogrid.record import provenance
from reprogrid.tasks import spec as taskspec


def is_idx_task(resolution: Resolution) -> bool:
    """Whether the runs answer the built-in IDX task, whose data set `data.dataset` names."""
    return resolution.task is None or resolution.task.name == taskspec.DEFAULT


def _check_raw_path(raw: str | None, source: str) -> None:
    """What a task's `load` reads exists: a folder or a file (or nothing, for null)."""
    if raw is None or Path(raw).exists():
        return
    hint = " ('~' is not expanded: write the full path)" if raw.startswith("~") else ""
    raise ConfigError(
        f"config key data.raw_dir (set by {source}): {raw} does not exist{hint}; point it at "
        "the folder or file the task's load reads, or set it to null"
    )


def _check_raw_dir(raw_dir: str | None, source: str) -> None:
    if raw_dir is None:
        return
    key = f"config key data.raw_dir (set by {source})"
    folder = Path(raw_dir)
    try:
        folder.stat()
    except (FileNotFoundError, NotADirectoryError):
        pass
    except OSError as err:
        # A path too long, or a folder on the way that may not be entered: is_file() and
        # is_dir() raise these rather than answer.
        raise ConfigError(
            f"{key}: {provenance.shown(raw_dir)} cannot be looked up ({err.strerror}); point "
            "it at the folder holding the four IDX files"
        ) from None
    if folder.is_file():
        raise ConfigError(
            f"{key}: {raw_dir} is a file, not a folder; point it at the folder holding the "
            f"four IDX files (this one lies in {folder.parent})"
        )
    if not folder.is_dir():
        hint = " ('~' is not expanded: write the full path)" if raw_dir.startswith("~") else ""
        raise ConfigError(
            f"{key}: folder {raw_dir} does not exist{hint}; "
            "point it at the folder holding the four IDX files"
        )
    missing = [
        name for name in catalog.IDX_FILES.values() if catalog.find_idx_file(folder, name) is None
    ]
    if missing:
        raise ConfigError(
            f"{key}: {raw_dir} lacks {', '.join(missing)} (.gz or plain); "
            "copy the four IDX files there"
        )


def _training_images(config: Mapping[str, Any]) -> tuple[int, str] | None:
    """How many images the training set has, and where that number comes from."""
    dataset = config["data"]["dataset"]
    raw_dir = config["data"]["raw_dir"]
    if raw_dir is None:
        return catalog.DATASETS[dataset].train_count, f"the {dataset} training set"
    path = catalog.find_idx_file(Path(raw_dir), catalog.IDX_FILES["train_images"])
    count = rawfiles.idx_count(path)
    return None if count is None else (count, shown(str(path)))


def _check_split(resolution: Resolution) -> None:
    """The validation split holds an image per class or more, and leaves every batch size
    at most the training images left."""
    config = resolution.config
    known = _training_images(config)
    if known is None:
        return
    count, origin = known
    fraction = config["data"]["val_fraction"]
    key = f"config key data.val_fraction (set by {resolution.source('data', 'val_fraction')})"
    n_val = validation_count(count, fraction)
    n_train = count - n_val
    classes = catalog.DATASETS[config["data"]["dataset"]].num_classes
    if n_train < 1:
        raise ConfigError(
            f"{key}: {fraction} leaves no training images ({origin} has {count}); lower it"
        )
    if n_val < classes:
        raise ConfigError(
            f"{key}: {fraction} holds out {n_val} of {count} images ({origin}) for validation, "
            f"fewer than one per class ({classes}); raise it to at least "
            f"{_round_up(classes / count)}"
        )
    for where, key_path, size in _batch_sizes(config):
        if size > n_train:
            raise ConfigError(
                f"config key {where} (set by {resolution.source(*key_path)}): {size} is larger "
                f"than the training split ({n_train} images: {count} in {origin} less {n_val} "
                f"for validation); use at most {n_train}"
            )


def _round_up(value: float) -> float:
    """`value` rounded up to two significant digits, so a bound quoted to the user holds."""
    scale = 10 ** (1 - math.floor(math.log10(value)))
    return math.ceil(value * scale) / scale


def _batch_sizes(config: Mapping[str, Any]) -> list[tuple[str, tuple[str, ...], int]]:
    """The training batch sizes the runs use, each with the key that sets it; a sampled
    batch size, every size its distribution can give at most."""
    if "batch_size" in config["grid"]:
        sizes = config["grid"]["batch_size"]
        return [(f"grid.batch_size[{i}]", ("grid", "batch_size"), n) for i, n in enumerate(sizes)]
    sampled = config["search"]["space"].get("batch_size")
    if sampled:
        key = ("search", "space", "batch_size")
        sizes = sampled.get("choice") or sampled["int"][1:]
        return [("search.space.batch_size", key, n) for n in sizes]
    return [("train.batch_size", ("train", "batch_size"), config["train"]["batch_size"])]


def check_data(resolution: Resolution) -> None:
    """The raw data folder: for the IDX task, its files and a split that fits them; for any
    other task, a path the task's `load` can read."""
    config = resolution.config
    if is_idx_task(resolution):
        _check_raw_dir(config["data"]["raw_dir"], resolution.source("data", "raw_dir"))
        _check_split(resolution)
    else:
        _check_raw_path(config["data"]["raw_dir"], resolution.source("data", "raw_dir"))
