"""The data a run sees: the train, validation and test splits on the run's device, as
tensors or as a task's Datasets, and the task's metrics of a split."""

from __future__ import annotations

import math
from collections.abc import Iterator, Mapping
from dataclasses import dataclass
from typing import Any

import torch
from torch import nn

from reprogrid.datasets import data, loading
from reprogrid.tasks.runtime import Task
from reprogrid.train.recipe import epoch_order, numerics


@torch.inference_mode()
def evaluate(
    task: Task, model: nn.Module, x, y, params: Mapping[str, Any], split: str
) -> dict[str, float]:
    """The task's metrics of `model` on one split, in evaluation mode, without gradients."""
    model.eval()
    _, autocast = numerics(model, x.device)
    with autocast():
        return task.evaluate(model, x, y, params, split)


@torch.inference_mode()
def evaluate_batches(
    task: Task, model: nn.Module, batches, params: Mapping[str, Any], split: str, device
) -> dict[str, float]:
    """A Dataset task's metrics of `model` on the split whose batches `batches` yields, in
    evaluation mode, without gradients."""
    model.eval()
    _, autocast = numerics(model, device)
    with autocast():
        return task.evaluate_batches(model, batches, params, split)


def weights_finite(model: nn.Module) -> bool:
    """Whether every weight of `model` is a finite number."""
    return all(
        bool(torch.isfinite(p).all()) for p in model.state_dict().values() if p.is_floating_point()
    )


@dataclass
class Splits:
    """The training, validation and test splits, normalised, on the training device."""

    x_train: torch.Tensor
    y_train: torch.Tensor
    x_val: torch.Tensor
    y_val: torch.Tensor
    x_test: torch.Tensor
    y_test: torch.Tensor

    @property
    def train_count(self) -> int:
        return self.x_train.shape[0]

    def batches(
        self, cfg: Mapping[str, Any], epoch: int, steps: range
    ) -> Iterator[tuple[int, torch.Tensor, torch.Tensor]]:
        """The training batches numbered `steps` of `epoch`, each with its number."""
        batch_size = cfg["batch_size"]
        order = epoch_order(self.train_count, cfg["seed"], epoch, self.x_train.device)
        for step in steps:
            idx = order[step * batch_size : (step + 1) * batch_size]
            yield step, self.x_train[idx], self.y_train[idx]

    def evaluate(
        self, task: Task, model: nn.Module, params: Mapping[str, Any], split: str
    ) -> dict[str, float]:
        """The task's metrics of `model` on the split `split` names (`val`, `test`)."""
        x, y = (self.x_val, self.y_val) if split == "val" else (self.x_test, self.y_test)
        return evaluate(task, model, x, y, params, split)


@dataclass
class DatasetSplits:
    """The splits of a task whose `load` returns Datasets, read batch by batch on the
    training device: the validation split is carved from the training Dataset's indices as
    a tensor task's from its rows, and every batch is a list of items `Task.batch` stacks.

    `data` is what `load` returned (Datasets and facts), which the `inputs` hook is given
    for each batch; `workers` is the number of DataLoader workers, which changes no result.
    """

    task: Task
    data: Mapping[str, Any]
    train_idx: list[int]
    val_idx: list[int]
    workers: int
    device: torch.device

    @property
    def train_count(self) -> int:
        return len(self.train_idx)

    def read(
        self, split: str, plan: loading.BatchPlan
    ) -> Iterator[tuple[torch.Tensor, torch.Tensor]]:
        """The batches of `plan` from the Dataset of `split` (the training Dataset's for
        `val`), stacked, on the device."""
        name = "test" if split == "test" else "train"
        for items in loading.loader(self.data[name], plan, self.workers):
            x, y = self.task.batch(items, name)
            yield self.task.inputs(x.to(self.device), self.data), y.to(self.device)

    def batches(
        self, cfg: Mapping[str, Any], epoch: int, steps: range
    ) -> Iterator[tuple[int, torch.Tensor, torch.Tensor]]:
        """The training batches numbered `steps` of `epoch`, each with its number: the same
        permutation of the training part as a tensor task's, read from batch `steps.start`."""
        order = epoch_order(self.train_count, cfg["seed"], epoch, torch.device("cpu"))
        indices = [self.train_idx[position] for position in order.tolist()]
        plan = loading.BatchPlan(indices, cfg["batch_size"], steps, (cfg["seed"], epoch))
        for step, (x, y) in zip(steps, self.read("train", plan), strict=True):
            yield step, x, y

    def evaluate(
        self, task: Task, model: nn.Module, params: Mapping[str, Any], split: str
    ) -> dict[str, float]:
        """The task's metrics of `model` on `split`, which `evaluate` is given as the
        split's batches (`SplitBatches`)."""
        batches = SplitBatches(self, split, params["eval_batch_size"])
        return evaluate_batches(task, model, batches, params, split, self.device)


class SplitBatches:
    """What a Dataset task's `evaluate` is given for a split: its `(x, y)` batches in index
    order, on the device as `inputs` makes them, `batch_size` items each (the last one
    fewer). It can be iterated more than once; `len` is its number of batches."""

    def __init__(self, splits: DatasetSplits, split: str, batch_size: int) -> None:
        self.splits, self.split, self.batch_size = splits, split, batch_size
        self.indices = splits.val_idx if split == "val" else list(range(len(splits.data["test"])))

    def __len__(self) -> int:
        return math.ceil(len(self.indices) / self.batch_size)

    def __iter__(self) -> Iterator[tuple[torch.Tensor, torch.Tensor]]:
        steps = range(len(self))
        plan = loading.BatchPlan(self.indices, self.batch_size, steps, (self.split,))
        return self.splits.read(self.split, plan)


def splits_on_device(
    task: Task,
    prepared: Mapping[str, Any],
    val_fraction: float,
    split_seed: int,
    device: torch.device,
) -> Splits:
    """The prepared data's three splits on `device`, the validation split carved with
    `split_seed`, each split's inputs as the task's `inputs` makes them."""
    x, y = prepared["train_x"], prepared["train_y"]
    train_idx, val_idx = data.split_train_val(y.shape[0], val_fraction, split_seed)

    def inputs(part: torch.Tensor) -> torch.Tensor:
        return task.inputs(part.to(device), prepared)

    return Splits(
        x_train=inputs(x[train_idx]),
        y_train=y[train_idx].to(device),
        x_val=inputs(x[val_idx]),
        y_val=y[val_idx].to(device),
        x_test=inputs(prepared["test_x"]),
        y_test=prepared["test_y"].to(device),
    )


def dataset_splits(
    task: Task,
    loaded: Mapping[str, Any],
    val_fraction: float,
    split_seed: int,
    device: torch.device,
    workers: int,
) -> DatasetSplits:
    """The splits of the Datasets `load` returned, the validation part carved from the
    training Dataset's indices by the rule that carves a tensor task's rows."""
    train_idx, val_idx = data.split_train_val(len(loaded["train"]), val_fraction, split_seed)
    return DatasetSplits(
        task=task,
        data=loaded,
        train_idx=train_idx.tolist(),
        val_idx=val_idx.tolist(),
        workers=workers,
        device=device,
    )
