"""Saving and restoring everything a training run needs to continue bit for bit.

A checkpoint holds the model, optimiser and scheduler states, every random number
generator's state, the position in the epoch, and the key of what made it: the run's
parameters, its prepared data and its code. It is written atomically, so a job killed while
writing leaves the previous checkpoint intact.

A checkpoint is read with `torch.load(..., weights_only=True)`: tensors and plain Python
values only, so a file placed in a run folder can never run code. A file that cannot be read
that way (truncated, garbage, made by another program or an older version) is moved aside
as `checkpoint.pt.damaged-<time>` and the run starts fresh; it never blocks a retry.
"""

from __future__ import annotations

import datetime as dt
import io
import logging
import random
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import numpy as np
import torch

from reprogrid.record import atomic, provenance

log = logging.getLogger("reprogrid.checkpoint")

# What every checkpoint holds; a file without one of these is treated as damaged.
KEYS = frozenset(
    {
        "key",
        "epoch",
        "batch",
        "model",
        "optimizer",
        "scheduler",
        "rng",
        "history",
        "best",
        "train_seconds",
        "accum",
    }
)


def to_bytes(obj: Any) -> bytes:
    """`torch.save` into memory: the bytes depend on the content only, never on a file name."""
    buffer = io.BytesIO()
    torch.save(obj, buffer)
    return buffer.getvalue()


def rng_states() -> dict[str, Any]:
    """The states of Python's, NumPy's and torch's generators (CUDA's too when present),
    as tensors and plain values, which a weights-only load accepts."""
    kind, keys, position, has_gauss, cached = np.random.get_state()
    states = {
        "python": random.getstate(),
        "numpy": {
            "kind": kind,
            "keys": torch.from_numpy(keys.astype(np.int64)),
            "position": int(position),
            "has_gauss": int(has_gauss),
            "cached_gaussian": float(cached),
        },
        "torch": torch.get_rng_state(),
    }
    if torch.cuda.is_available():
        states["cuda"] = torch.cuda.get_rng_state_all()
    return states


def restore_rng_states(states: dict[str, Any]) -> None:
    """Put every generator back where `rng_states` found it."""
    version, internal, gauss = states["python"]
    random.setstate((version, tuple(internal), gauss))
    numpy = states["numpy"]
    np.random.set_state(
        (
            numpy["kind"],
            numpy["keys"].numpy().astype(np.uint32),
            numpy["position"],
            numpy["has_gauss"],
            numpy["cached_gaussian"],
        )
    )
    torch.set_rng_state(states["torch"])
    if "cuda" in states and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(states["cuda"])


def save(path: str | Path, state: dict[str, Any]) -> None:
    """Atomically write a checkpoint."""
    atomic.write_bytes(path, to_bytes(state))


def move_aside(path: Path, why: str) -> None:
    """Rename a checkpoint that must not be used to `<name>.damaged-<time>`, and log why."""
    stamp = dt.datetime.now(dt.UTC).strftime("%Y%m%dT%H%M%S.%fZ")
    aside = path.with_name(f"{path.name}.damaged-{stamp}")
    try:
        path.rename(aside)
    except OSError as error:
        path.unlink(missing_ok=True)
        log.warning("checkpoint %s is damaged (%s) and could not be kept: %s", path, why, error)
        return
    log.warning("checkpoint %s is damaged (%s); moved aside to %s", path, why, aside.name)


def load(path: str | Path) -> dict[str, Any] | None:
    """The checkpoint at `path`, or None when there is none or it is damaged.

    A damaged one (unreadable as tensors and plain values, or missing what a checkpoint
    holds) is moved aside and logged, so the caller starts fresh.
    """
    path = Path(path)
    if not path.is_file():
        return None
    try:
        state = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as error:
        # Whatever the file holds, it is not ours to trust: pickle, zip and torch errors alike.
        first_line = (str(error).splitlines() or [""])[0][:200]
        move_aside(path, f"{type(error).__name__}: {first_line}")
        return None
    if not (isinstance(state, dict) and state.keys() >= KEYS and isinstance(state["key"], dict)):
        move_aside(path, "it lacks the fields of a checkpoint")
        return None
    return state


def differences(made_with: Mapping[str, Any], wanted: Mapping[str, Any]) -> list[str]:
    """The parts of a checkpoint's key (`config`, `data`, `code`) that differ from `wanted`,
    each as `part (stored value vs wanted value)`."""
    return [
        f"{part} ({made_with.get(part)} vs {value})"
        for part, value in wanted.items()
        if made_with.get(part) != value
    ]


def check_weights(path: str | Path) -> None:
    """Refuse a model.pt torch cannot read as tensors and plain values (cut short, garbled,
    or a pickle that would run code), without running anything it holds."""
    try:
        content = Path(path).read_bytes()
    except OSError as err:
        raise provenance.ProvenanceError(path, f"cannot be read: {err.strerror}") from None
    try:
        torch.load(io.BytesIO(content), map_location="cpu", weights_only=True)
    except Exception as error:
        # Whatever the file holds, it is no weights file of ours: pickle, zip and torch errors.
        first_line = (str(error).splitlines() or [""])[0][:200]
        raise provenance.damaged(path, f"{type(error).__name__}: {first_line}") from None
