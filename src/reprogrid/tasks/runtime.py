"""A task's code as a job runs it: imported from its file, every call checked.

The training loop, the data job and the audit call a task only through `Task`, which
imports the file under a name of its own (the task's folder and the working directory
first on `sys.path`, so it imports its own modules as planning's fingerprint found them)
and turns whatever the task's functions return into what reprogrid promises its callers,
or a `TaskError` naming the task, the function and what to fix.
"""

from __future__ import annotations

import hashlib
import importlib.util
import inspect
import math
import sys
from collections.abc import Callable, Mapping
from pathlib import Path
from types import ModuleType
from typing import Any

import torch
from torch import nn
from torch.utils.data import Dataset, IterableDataset

from reprogrid.tasks.spec import TaskError, TaskSpec, read

# What `load` returns beside any facts of its own: the split tensors, or the split Datasets
# of data that does not fit in memory.
SPLIT_KEYS = ("train_x", "train_y", "test_x", "test_y")
DATASET_KEYS = ("train", "test")
FACT_TYPES = (bool, int, float, str)


def _takes_params(function: Callable, positional: int) -> bool:
    """Whether `function` takes the run's parameters after its `positional` arguments."""
    try:
        parameters = list(inspect.signature(function).parameters.values())
    except (TypeError, ValueError):
        return False
    if any(p.kind is inspect.Parameter.VAR_POSITIONAL for p in parameters):
        return True
    return len(parameters) > positional


def import_file(path: Path) -> ModuleType:
    """Import the task file at `path` as a module of its own (never as `tasks.x` of another)."""
    resolved = path.resolve()
    name = "reprogrid_task_" + hashlib.sha256(str(resolved).encode()).hexdigest()[:12]
    if name in sys.modules:
        return sys.modules[name]
    for folder in (str(Path.cwd()), str(resolved.parent)):
        if folder not in sys.path:
            sys.path.insert(0, folder)
    module_spec = importlib.util.spec_from_file_location(name, resolved)
    module = importlib.util.module_from_spec(module_spec)
    sys.modules[name] = module
    module_spec.loader.exec_module(module)
    return module


def _own(tensor: torch.Tensor, storages: set[int]) -> torch.Tensor:
    """`tensor` with memory of its own: a copy where it shares its storage with another one
    `load` returned or views part of a larger one (`x[:n]`, `x[n:]`), which a safetensors
    file cannot hold; otherwise itself, so a large split is not copied for nothing."""
    storage = tensor.untyped_storage()
    whole = storage.nbytes() == tensor.numel() * tensor.element_size()
    if storage.data_ptr() in storages or not whole:
        tensor = tensor.clone()
    storages.add(tensor.untyped_storage().data_ptr())
    return tensor


def holds_datasets(data: Mapping[str, Any]) -> bool:
    """Whether `data`, as `Task.load` returns it or a training job opens it, holds the two
    split Datasets of data that does not fit in memory rather than tensors."""
    return isinstance(data.get("train"), Dataset)


def _map_style(value: Any) -> bool:
    """Whether `value` is a Dataset read by index, whose length is known."""
    return (
        isinstance(value, Dataset)
        and not isinstance(value, IterableDataset)
        and hasattr(value, "__len__")
    )


class Task:
    """A task's functions, called as the contract says and checked on the way out."""

    def __init__(self, spec: TaskSpec, module: ModuleType) -> None:
        self.spec, self.module = spec, module
        self.metrics = spec.metrics
        self._with_params = {
            "loss": _takes_params(module.loss, 3),
            "evaluate": _takes_params(module.evaluate, 3),
            "evaluate_batches": _takes_params(module.evaluate, 2),
        }

    @classmethod
    def open(cls, spec: TaskSpec) -> Task:
        """Import `spec`'s file: an import that fails raises, its traceback for the job's log."""
        return cls(spec, import_file(spec.path))

    def _fail(self, function: str, problem: str) -> TaskError:
        return TaskError(f"task {self.spec.name}: {function} {problem}")

    def load(self, raw: str | None) -> tuple[dict[str, Any], dict[str, Any]]:
        """The task's data from `raw` (data.raw_dir) and the facts it returned beside them
        (numbers and strings), each checked: the four split tensors, contiguous, or the two
        split Datasets of data that does not fit in memory (`holds_datasets`)."""
        data = self.module.load(raw)
        if not isinstance(data, Mapping):
            raise self._fail("load", f"returned {type(data).__name__}, not a dict of tensors")
        if any(key in data for key in DATASET_KEYS) or any(
            isinstance(value, Dataset) for value in data.values()
        ):
            return self._datasets(data)
        missing = [key for key in SPLIT_KEYS if key not in data]
        if missing:
            raise self._fail(
                "load", f"returned no {', '.join(missing)}; return all of {SPLIT_KEYS}"
            )
        tensors, facts, storages = {}, {}, set()
        for key, value in data.items():
            if isinstance(value, torch.Tensor):
                tensors[key] = _own(value.detach().cpu().contiguous(), storages)
            elif key not in SPLIT_KEYS and isinstance(value, FACT_TYPES):
                facts[key] = value
            else:
                kind = "a tensor" if key in SPLIT_KEYS else "a tensor, number or string"
                raise self._fail("load", f"returned {key} as {type(value).__name__}; give {kind}")
        for split in ("train", "test"):
            x, y = tensors[f"{split}_x"], tensors[f"{split}_y"]
            if x.shape[0] == 0 or x.shape[0] != y.shape[0]:
                raise self._fail(
                    "load",
                    f"returned {x.shape[0]} {split}_x rows and {y.shape[0]} {split}_y rows; "
                    "give each split one y per x, and at least one",
                )
        return tensors, facts

    def _datasets(self, data: Mapping[str, Any]) -> tuple[dict[str, Dataset], dict[str, Any]]:
        """The two split Datasets `load` returned, and its facts, each checked."""
        missing = [key for key in DATASET_KEYS if key not in data]
        if missing:
            raise self._fail(
                "load",
                f"returned no {', '.join(missing)}; return both Datasets, "
                '{"train": ..., "test": ...}, or the four split tensors',
            )
        datasets, facts = {}, {}
        for key, value in data.items():
            if key in DATASET_KEYS and _map_style(value):
                datasets[key] = value
            elif key not in DATASET_KEYS and isinstance(value, FACT_TYPES):
                facts[key] = value
            else:
                kind = (
                    "a map-style torch.utils.data.Dataset (with __len__ and __getitem__)"
                    if key in DATASET_KEYS
                    else "a number or a string beside Datasets"
                )
                raise self._fail("load", f"returned {key} as {type(value).__name__}; give {kind}")
        for split, dataset in datasets.items():
            if len(dataset) == 0:
                raise self._fail("load", f"returned an empty {split} Dataset; give it one item")
        return datasets, facts

    def batch(self, items: list[Any], split: str) -> tuple[torch.Tensor, torch.Tensor]:
        """Items of a split's Dataset as one batch: every `x` stacked, every `y` stacked;
        an item that is not two tensors, or tensors of another shape, is refused."""
        for item in items:
            if not (
                isinstance(item, tuple | list)
                and len(item) == 2
                and all(isinstance(part, torch.Tensor) for part in item)
            ):
                what = (
                    f"({', '.join(type(part).__name__ for part in item)})"
                    if isinstance(item, tuple | list)
                    else type(item).__name__
                )
                raise self._fail(
                    "load", f"returned a {split} Dataset whose item is {what}; give (x, y) tensors"
                )
        xs, ys = [item[0] for item in items], [item[1] for item in items]
        for name, parts in (("x", xs), ("y", ys)):
            shapes = {tuple(part.shape) for part in parts}
            if len(shapes) > 1:
                raise self._fail(
                    "load",
                    f"returned a {split} Dataset whose items' {name} differ in shape "
                    f"({', '.join(map(str, sorted(shapes)))}); give every {name} one shape",
                )
        return torch.stack(xs), torch.stack(ys)

    def inputs(self, x: torch.Tensor, data: Mapping[str, Any]) -> torch.Tensor:
        """A split's inputs as the model takes them, once on the device (hook `inputs`)."""
        if "inputs" not in self.spec.hooks:
            return x
        return self.module.inputs(x, data)

    def build(self, params: Mapping[str, Any], data: Mapping[str, Any]) -> nn.Module:
        """A freshly initialised model for `params`; anything but a module is refused."""
        model = self.module.build(dict(params), data)
        if not isinstance(model, nn.Module):
            raise self._fail(
                "build", f"returned {type(model).__name__}, not a torch.nn.Module; return the model"
            )
        return model

    def describe(self, data: Mapping[str, Any]) -> dict[str, Any]:
        """What model.pt keeps beside the weights to rebuild the model (hook `describe`)."""
        if "describe" not in self.spec.hooks:
            return {}
        return dict(self.module.describe(data))

    def augment(self, x, y, generator: torch.Generator):
        """One training batch as the task alters it with reprogrid's seeded `generator`."""
        if "augment" not in self.spec.hooks:
            return x, y
        return self.module.augment(x, y, generator)

    def loss(self, model, x, y, params) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
        """The batch's mean loss, and the sums over the batch of any training metrics
        (`loss` may return `(loss, {name: sum})`; the history shows each as `train_<name>`)."""
        args = (model, x, y, params) if self._with_params["loss"] else (model, x, y)
        out = self.module.loss(*args)
        extras: dict[str, torch.Tensor] = {}
        if isinstance(out, tuple):
            if len(out) != 2 or not isinstance(out[1], Mapping):
                raise self._fail("loss", "returned a tuple; return loss, or (loss, {name: sum})")
            out, extras = out
        if not (isinstance(out, torch.Tensor) and out.dim() == 0):
            raise self._fail(
                "loss", f"returned {type(out).__name__}; return the batch's mean as a scalar tensor"
            )
        return out, dict(extras)

    def evaluate(self, model, x, y, params, split: str) -> dict[str, float]:
        """The task's metrics on one split, as floats, every declared one and no other."""
        args = (model, x, y, params) if self._with_params["evaluate"] else (model, x, y)
        return self._metrics(self.module.evaluate(*args), split)

    def evaluate_batches(self, model, batches, params, split: str) -> dict[str, float]:
        """The metrics of a Dataset task on one split, whose `(x, y)` batches `batches`
        yields, as `evaluate` checks them."""
        with_params = self._with_params["evaluate_batches"]
        args = (model, batches, params) if with_params else (model, batches)
        return self._metrics(self.module.evaluate(*args), split)

    def _metrics(self, found: Any, split: str) -> dict[str, float]:
        if not isinstance(found, Mapping):
            raise self._fail("evaluate", f"returned {type(found).__name__}, not a dict of metrics")
        missing = [name for name in self.metrics.names if name not in found]
        extra = [name for name in found if name not in self.metrics.directions]
        if missing or extra:
            what = f"no {', '.join(missing)}" if missing else f"{', '.join(map(str, extra))}"
            raise self._fail(
                "evaluate",
                f"returned {what} on the {split} split; return exactly the METRICS "
                f"({', '.join(self.metrics.names)}), or declare the others in METRICS",
            )
        values = {}
        for name, value in found.items():
            try:
                values[name] = float(value)
            except (TypeError, ValueError, RuntimeError):
                raise self._fail(
                    "evaluate", f"returned {name} as {type(value).__name__}; give a number"
                ) from None
        return values

    def check_finite(self, values: Mapping[str, float], split: str, epoch: int) -> None:
        """Refuse a non-finite metric of a model whose weights are finite: the task's bug."""
        for name, value in values.items():
            if not math.isfinite(value):
                raise self._fail(
                    "evaluate",
                    f"returned {name} = {value} on the {split} split at epoch {epoch}, while "
                    "the weights are finite; make it finite (a diverged model reports itself)",
                )


def open_task(name: str, root: str | Path = ".") -> Task:
    """The task `name` (a built-in task's name or a task file's path), ready to call: for a
    notebook, a benchmark or a test, as a job opens it."""
    return Task.open(read(name, root))
