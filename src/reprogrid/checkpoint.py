"""Saving and restoring everything a training run needs to continue bit for bit.

A checkpoint holds the model, optimiser and scheduler states, every random number
generator's state and the position in the epoch. It is written atomically, so a job
killed while writing leaves the previous checkpoint intact.
"""

from __future__ import annotations

import io
import random
from pathlib import Path
from typing import Any

import numpy as np
import torch

from reprogrid import atomic


def to_bytes(obj: Any) -> bytes:
    """`torch.save` into memory: the bytes depend on the content only, never on a file name."""
    buffer = io.BytesIO()
    torch.save(obj, buffer)
    return buffer.getvalue()


def rng_states() -> dict[str, Any]:
    """The states of Python's, NumPy's and torch's generators (CUDA's too when present)."""
    states = {
        "python": random.getstate(),
        "numpy": np.random.get_state(),
        "torch": torch.get_rng_state(),
    }
    if torch.cuda.is_available():
        states["cuda"] = torch.cuda.get_rng_state_all()
    return states


def restore_rng_states(states: dict[str, Any]) -> None:
    """Put every generator back where `rng_states` found it."""
    random.setstate(states["python"])
    np.random.set_state(states["numpy"])
    torch.set_rng_state(states["torch"])
    if "cuda" in states and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(states["cuda"])


def save(path: str | Path, state: dict[str, Any]) -> None:
    """Atomically write a checkpoint."""
    atomic.write_bytes(path, to_bytes(state))


def load(path: str | Path) -> dict[str, Any] | None:
    """The checkpoint at `path`, or None when there is none."""
    path = Path(path)
    if not path.is_file():
        return None
    # Our own file, holding NumPy's RNG state as well as tensors: not weights-only.
    return torch.load(path, map_location="cpu", weights_only=False)
