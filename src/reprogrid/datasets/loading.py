"""Data that does not fit in memory: a task's Datasets, read batch by batch.

A task whose `load` returns `{"train": Dataset, "test": Dataset}` keeps its samples where
they are. The data job records what identifies them (`identity`: each split's length and
the sha256 of a few of its items) and each training job calls `load` again and checks that
it sees the same. Batches are read through `torch.utils.data.DataLoader`:

- a `BatchPlan` lists the batches the loader reads, each as the Dataset indices of one
  slice of the epoch's seeded permutation, from the batch training stands at: a resumed run
  reads exactly the batches it had not trained;
- `SeededItems` reads each batch under Python's, NumPy's and torch's generators seeded for
  that batch alone, in a worker or in the training process alike, then puts the training
  process's generators back: a Dataset that draws random numbers reads the same items for
  any number of workers, and the model's own draws (dropout) never see the loader;
- workers ignore SIGTERM and SIGINT: the training process saves its checkpoint on them and
  stops its workers itself.
"""

from __future__ import annotations

import hashlib
import json
import random
import signal
import sys
from collections.abc import Iterator, Mapping, Sequence
from contextlib import contextmanager
from typing import TYPE_CHECKING, Any

import numpy as np
import torch
from torch.utils.data import DataLoader, Dataset

if TYPE_CHECKING:
    from reprogrid.tasks.runtime import Task

# How many items of each split the data job reads to identify it, evenly spaced.
PROBES = 8


def item_seed(*parts: int | str) -> int:
    """The 32-bit seed (NumPy takes no more) of the batch that `parts` name."""
    digest = hashlib.sha256(json.dumps(parts).encode()).digest()
    return int.from_bytes(digest[:4], "little")


@contextmanager
def seeded(seed: int) -> Iterator[None]:
    """Python's, NumPy's and torch's CPU generators seeded with `seed`, then put back."""
    saved = random.getstate(), np.random.get_state(), torch.get_rng_state()
    random.seed(seed)
    np.random.seed(seed)
    torch.default_generator.manual_seed(seed)
    try:
        yield
    finally:
        random.setstate(saved[0])
        np.random.set_state(saved[1])
        torch.set_rng_state(saved[2])


class SeededItems:
    """A Dataset as a DataLoader reads it here: a batch at a time, each under its own seed.

    The loader hands `__getitems__` what a `BatchPlan` yields, `(seed, indices)`, and gets
    back the items as the Dataset returns them; `Task.batch` checks and stacks them.
    """

    def __init__(self, dataset: Dataset) -> None:
        self.dataset = dataset

    def __getitems__(self, request: tuple[int, Sequence[int]]) -> list[Any]:
        seed, indices = request
        with seeded(seed):
            return [self.dataset[index] for index in indices]


class BatchPlan:
    """The batches a loader reads: `indices` (Dataset indices, in the order they are read)
    cut into slices of `batch_size`, those numbered `steps`, each with the seed that
    `(*key, step)` names."""

    def __init__(
        self, indices: Sequence[int], batch_size: int, steps: range, key: tuple[int | str, ...]
    ) -> None:
        self.indices, self.batch_size, self.steps, self.key = indices, batch_size, steps, key

    def __iter__(self) -> Iterator[tuple[int, Sequence[int]]]:
        for step in self.steps:
            start = step * self.batch_size
            yield item_seed(*self.key, step), self.indices[start : start + self.batch_size]

    def __len__(self) -> int:
        return len(self.steps)


def _worker_started(worker_id: int) -> None:
    """A worker leaves SIGTERM and SIGINT to the training process, which saves and stops it."""
    signal.signal(signal.SIGTERM, signal.SIG_IGN)
    signal.signal(signal.SIGINT, signal.SIG_IGN)


def loader(dataset: Dataset, plan: BatchPlan, workers: int) -> DataLoader:
    """A DataLoader reading the batches of `plan` from `dataset` with `workers` processes
    (0: in this one), each batch a list of items.

    Workers are forked, so they share the task's module and its Datasets as imported; their
    own seeds (drawn from a generator of their own, not the training process's) are
    overridden for every batch by `SeededItems`.
    """
    forked = workers > 0 and sys.platform == "linux"
    return DataLoader(
        SeededItems(dataset),
        batch_sampler=plan,
        num_workers=workers,
        collate_fn=list,
        worker_init_fn=_worker_started,
        generator=torch.Generator().manual_seed(0),
        multiprocessing_context="fork" if forked else None,
    )


def _digest(tensor: torch.Tensor) -> bytes:
    """A tensor's dtype, shape and bytes, as a digest takes them."""
    flat = tensor.detach().cpu().contiguous().reshape(-1)
    return (
        f"{tensor.dtype}{tuple(tensor.shape)}".encode() + flat.view(torch.uint8).numpy().tobytes()
    )


def identity(task: Task, datasets: Mapping[str, Dataset]) -> dict[str, Any]:
    """What identifies a task's Datasets without storing them: each split's length and the
    sha256 of `PROBES` evenly spaced items of each, read and checked as training reads them."""
    digest = hashlib.sha256()
    counts = {}
    for split in ("train", "test"):
        dataset = datasets[split]
        count = len(dataset)
        counts[split] = count
        probes = sorted({round(i * (count - 1) / (PROBES - 1)) for i in range(PROBES)})
        items = SeededItems(dataset).__getitems__((item_seed("probe", split), probes))
        x, y = task.batch(items, split)
        digest.update(_digest(x) + _digest(y))
    return {"counts": counts, "probe_sha256": digest.hexdigest()}
