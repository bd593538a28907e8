"""Train one run of a task: seeded, deterministic, resumable, written atomically.

The task (`reprogrid.tasks`) supplies the data, the model, the loss and the metrics; this
module owns the loop. The whole data set lives on the device as one tensor; batches are
index slices of a per-epoch permutation drawn from a generator seeded by (seed, epoch), so
the batch order never depends on global state and a resumed run replays exactly the
batches it missed. The validation split is carved from the training set with its own seed,
the same for every run. The epoch whose `train.select_metric` is best, in the direction
the task declares, supplies the kept weights.
"""

from __future__ import annotations

import csv
import hashlib
import io
import json
import logging
import math
import os
import random
import signal
import sys
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import nn

from reprogrid import atomic, checkpoint, data, logs
from reprogrid.tasks.runtime import Task

log = logging.getLogger("reprogrid.training")

# An epoch longer than this logs its progress this often: a long epoch shows it is alive.
PROGRESS_SECONDS = 30.0


class Stopped(RuntimeError):
    """Training stopped on a signal after saving a checkpoint; a rerun resumes it."""


@dataclass
class RunResult:
    """What a run achieved: `metrics` (its `status` among them), the learning curve, the
    kept weights, the epoch it resumed at (None when it started fresh), its size."""

    metrics: dict[str, Any]
    history: list[dict[str, Any]]
    weights: dict[str, torch.Tensor]
    resumed_from: int | None = None
    parameters: int = 0


def config_hash(params: Mapping[str, Any]) -> str:
    """A short fingerprint of a run's parameters; a checkpoint resumes only the same run."""
    return hashlib.sha256(json.dumps(params, sort_keys=True).encode()).hexdigest()[:16]


def seed_everything(seed: int) -> None:
    """Seed Python, NumPy and torch (all devices) from the run's one seed."""
    random.seed(seed)
    np.random.seed(seed)
    torch.manual_seed(seed)


def set_determinism(deterministic: bool) -> None:
    """Make torch choose only deterministic kernels, or let it pick the fastest."""
    if deterministic:
        # cuBLAS needs a fixed workspace to reduce in a fixed order; must precede CUDA init.
        os.environ.setdefault("CUBLAS_WORKSPACE_CONFIG", ":4096:8")
    # torch.use_deterministic_algorithms imports torch._inductor only to copy the flag into
    # inductor's config: 1.5-4 s of every job, more than a small run trains. Nothing here
    # compiles, so set torch's flag directly, and inductor's wherever it is already loaded.
    torch._C._set_deterministic_algorithms(deterministic, warn_only=False)
    inductor = sys.modules.get("torch._inductor.config")
    if inductor is not None:
        inductor.deterministic = deterministic
    torch.backends.cudnn.deterministic = deterministic
    torch.backends.cudnn.benchmark = not deterministic


def epoch_order(n: int, seed: int, epoch: int, device: torch.device) -> torch.Tensor:
    """The batch order of one epoch: a pure function of (seed, epoch)."""
    generator = torch.Generator().manual_seed(seed * 100_003 + epoch)
    return torch.randperm(n, generator=generator).to(device)


def make_optimizer(params, cfg: Mapping[str, Any]) -> torch.optim.Optimizer:
    lr, decay = cfg["lr"], cfg["weight_decay"]
    if cfg["optimizer"] == "adam":
        return torch.optim.Adam(params, lr=lr, weight_decay=decay)
    if cfg["optimizer"] == "adamw":
        return torch.optim.AdamW(params, lr=lr, weight_decay=decay)
    if cfg["optimizer"] == "adadelta":
        return torch.optim.Adadelta(params, lr=lr, weight_decay=decay)
    return torch.optim.SGD(
        params, lr=lr, momentum=cfg["momentum"], nesterov=True, weight_decay=decay
    )


def make_scheduler(optimizer, cfg: Mapping[str, Any], steps_per_epoch: int):
    """The learning-rate schedule and whether it steps per batch (True) or per epoch."""
    total = cfg["epochs"] * steps_per_epoch
    if cfg["schedule"] == "cosine":
        return torch.optim.lr_scheduler.CosineAnnealingLR(optimizer, T_max=total), True
    if cfg["schedule"] == "onecycle":
        return torch.optim.lr_scheduler.OneCycleLR(
            optimizer, max_lr=cfg["lr"], total_steps=total, pct_start=0.25
        ), True
    if cfg["schedule"] == "step":
        return torch.optim.lr_scheduler.StepLR(
            optimizer, step_size=1, gamma=cfg["step_gamma"]
        ), False
    return torch.optim.lr_scheduler.ConstantLR(optimizer, factor=1.0, total_iters=0), False


def numerics(model: nn.Module, device: torch.device) -> tuple[torch.memory_format, Any]:
    """The memory format a model trains in and the autocast context of its forward passes.

    A model class may declare `memory_format` and `autocast_dtype` (see models.SpeedCNN); the
    others train in contiguous float32, exactly as before these options existed. Both the
    task's loss and its evaluation run inside the autocast context.
    """
    memory_format = getattr(model, "memory_format", torch.contiguous_format)
    dtype = getattr(model, "autocast_dtype", None)
    return memory_format, lambda: torch.autocast(
        device.type, dtype=dtype, enabled=dtype is not None
    )


@torch.inference_mode()
def evaluate(
    task: Task, model: nn.Module, x, y, params: Mapping[str, Any], split: str
) -> dict[str, float]:
    """The task's metrics of `model` on one split, in evaluation mode, without gradients."""
    model.eval()
    _, autocast = numerics(model, x.device)
    with autocast():
        return task.evaluate(model, x, y, params, split)


def weights_finite(model: nn.Module) -> bool:
    """Whether every weight of `model` is a finite number."""
    return all(
        bool(torch.isfinite(p).all()) for p in model.state_dict().values() if p.is_floating_point()
    )


class _SignalFlag:
    """Turns SIGTERM (a cluster's time limit, a user's kill) into a flag the loop checks."""

    def __init__(self) -> None:
        self.raised: int | None = None
        self._previous: dict[int, Any] = {}

    def __enter__(self):
        for sig in (signal.SIGTERM, signal.SIGINT):
            self._previous[sig] = signal.signal(sig, self._handle)
        return self

    def _handle(self, signum, frame) -> None:
        self.raised = signum

    def __exit__(self, *exc) -> None:
        for sig, handler in self._previous.items():
            signal.signal(sig, handler)


@dataclass
class Splits:
    """The training, validation and test splits, normalised, on the training device."""

    x_train: torch.Tensor
    y_train: torch.Tensor
    x_val: torch.Tensor
    y_val: torch.Tensor
    x_test: torch.Tensor
    y_test: torch.Tensor


@dataclass
class Setup:
    """What a run trains on and how, fixed once built: a checkpoint never holds it."""

    task: Task
    device: torch.device
    splits: Splits
    steps: int
    per_batch: bool
    autocast: Callable[[], Any]


@dataclass
class EpochTally:
    """The running sums of the epoch in progress; a mid-epoch checkpoint keeps them as `accum`.

    `sums` holds the training metrics the task's loss returns (sums over each batch),
    integers summed as integers and anything else in float64, so a count stays exact.
    """

    loss: torch.Tensor
    sums: dict[str, torch.Tensor]
    seen: int
    seconds: float
    lr: float

    @classmethod
    def resume(cls, accum: Mapping[str, Any] | None, lr: float, device: torch.device) -> EpochTally:
        """The tally a mid-epoch checkpoint's `accum` describes, or a fresh one at rate `lr`.

        A per-batch schedule has moved on by a mid-epoch resume: the rate the epoch
        reports is the one it started with, kept in `accum`.
        """
        if accum is None:
            accum = {"loss": 0.0, "sums": {}, "seen": 0, "seconds": 0.0, "lr": lr}
        return cls(
            loss=torch.tensor(accum["loss"], dtype=torch.float64, device=device),
            sums={
                name: torch.tensor(
                    value,
                    dtype=torch.int64 if isinstance(value, int) else torch.float64,
                    device=device,
                )
                for name, value in accum["sums"].items()
            },
            seen=accum["seen"],
            seconds=accum["seconds"],
            lr=accum["lr"],
        )

    def add(self, loss: torch.Tensor, extras: Mapping[str, torch.Tensor], count: int) -> None:
        """Add one batch of `count` examples: its mean loss and its metrics' sums."""
        self.loss += loss.detach().double() * count
        for name, value in extras.items():
            value = value.detach()
            value = value.long() if not value.is_floating_point() else value.double()
            self.sums[name] = self.sums[name] + value if name in self.sums else value
        self.seen += count

    def means(self) -> dict[str, float]:
        """The epoch's training loss and metrics per example, as the history lists them."""
        return {
            "train_loss": self.loss.item() / self.seen,
            **{f"train_{name}": value.item() / self.seen for name, value in self.sums.items()},
        }

    def accum(self) -> dict[str, Any]:
        """The tally as plain values, as a checkpoint stores it."""
        return {
            "loss": self.loss.item(),
            "sums": {name: value.item() for name, value in self.sums.items()},
            "seen": self.seen,
            "seconds": self.seconds,
            "lr": self.lr,
        }


@dataclass
class TrainState:
    """Everything a checkpoint saves and restores: where training stands and how it got there.

    `epoch` and `batch` name the next batch to train; `accum` holds the sums of an epoch
    stopped part-way (None between epochs). `resumed_from` is not saved: it says which
    epoch this process resumed at, if it resumed.
    """

    key: dict[str, Any]
    model: nn.Module
    optimizer: torch.optim.Optimizer
    scheduler: Any
    metrics: Any = None
    history: list[dict[str, Any]] = field(default_factory=list)
    best: dict[str, Any] = field(
        default_factory=lambda: {"epoch": None, "score": None, "weights": None}
    )
    epoch: int = 0
    batch: int = 0
    train_seconds: float = 0.0
    accum: dict[str, Any] | None = None
    resumed_from: int | None = None

    def checkpoint(self) -> dict[str, Any]:
        """The checkpoint of this state, the generators' states included."""
        return {
            "key": self.key,
            "epoch": self.epoch,
            "batch": self.batch,
            "model": self.model.state_dict(),
            "optimizer": self.optimizer.state_dict(),
            "scheduler": self.scheduler.state_dict(),
            "rng": checkpoint.rng_states(),
            "history": self.history,
            "best": self.best,
            "train_seconds": self.train_seconds,
            "accum": self.accum,
        }

    def restore(self, saved: Mapping[str, Any]) -> None:
        """Continue from `saved`, a checkpoint of the same run: generators included."""
        self.model.load_state_dict(saved["model"])
        self.optimizer.load_state_dict(saved["optimizer"])
        self.scheduler.load_state_dict(saved["scheduler"])
        checkpoint.restore_rng_states(saved["rng"])
        self.history, self.best = saved["history"], saved["best"]
        self.epoch, self.batch = saved["epoch"], saved["batch"]
        self.train_seconds, self.accum = saved["train_seconds"], saved["accum"]
        self.resumed_from = self.epoch + 1

    def keep_if_best(self, row: Mapping[str, Any], metric: str) -> None:
        """Keep a copy of the weights when this epoch's `metric` is the best so far, in the
        direction the task declares (the first of equals stays)."""
        if self.metrics.better(row[metric], self.best["score"], metric):
            self.best = {
                "epoch": row["epoch"],
                "score": row[metric],
                "weights": {
                    k: v.detach().cpu().clone() for k, v in self.model.state_dict().items()
                },
            }


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


def set_up(
    task: Task,
    prepared: Mapping[str, Any],
    cfg: Mapping[str, Any],
    *,
    val_fraction: float,
    split_seed: int,
    threads: int,
    device: str,
    key: dict[str, Any],
) -> tuple[Setup, TrainState]:
    """Seed the process, put the data on the device, build the model, optimiser and schedule.

    The order is part of the result: the model's initial weights draw from the seeded generators.
    """
    torch.set_num_threads(threads)
    set_determinism(cfg["deterministic"])
    seed_everything(cfg["seed"])
    dev = torch.device(device)
    splits = splits_on_device(task, prepared, val_fraction, split_seed, dev)
    model = task.build(cfg, prepared)
    memory_format, autocast = numerics(model, dev)
    model = model.to(dev, memory_format=memory_format)
    optimizer = make_optimizer(model.parameters(), cfg)
    steps = math.ceil(splits.x_train.shape[0] / cfg["batch_size"])
    if cfg["max_batches"]:
        steps = min(steps, cfg["max_batches"])
    scheduler, per_batch = make_scheduler(optimizer, cfg, steps)
    setup = Setup(
        task=task, device=dev, splits=splits, steps=steps, per_batch=per_batch, autocast=autocast
    )
    state = TrainState(
        key=key, model=model, optimizer=optimizer, scheduler=scheduler, metrics=task.metrics
    )
    return setup, state


def resume_key(
    cfg: Mapping[str, Any],
    *,
    threads: int,
    device: str,
    val_fraction: float,
    split_seed: int,
    data_sha256: str | None,
    code: str | None,
) -> dict[str, Any]:
    """What a checkpoint must have been made with to be resumed: parameters, data and code.

    Threads, device and split change the arithmetic too: resume only under the same ones.
    """
    return {
        "config": config_hash(
            {
                **cfg,
                "threads": threads,
                "device": torch.device(device).type,
                "val_fraction": val_fraction,
                "split_seed": split_seed,
            }
        ),
        "data": data_sha256,
        "code": code,
    }


def restore_or_start(state: TrainState, checkpoint_path: str | Path) -> None:
    """Restore `state` from the checkpoint at `checkpoint_path` if it has the same key;
    otherwise leave it at the start, saying which part of the key differs."""
    saved = checkpoint.load(checkpoint_path)
    differs = checkpoint.differences(saved["key"], state.key) if saved is not None else []
    if differs:
        log.info(
            "ignoring checkpoint %s, training from the start: made with other %s",
            checkpoint_path,
            ", ".join(differs),
        )
        saved = None
    if saved is not None:
        state.restore(saved)
        log.info("resuming from epoch %d, batch %d", state.epoch + 1, state.batch)


def train_epoch(
    state: TrainState,
    setup: Setup,
    cfg: Mapping[str, Any],
    epoch: int,
    flag: _SignalFlag,
    checkpoint_path: str | Path,
) -> EpochTally:
    """Train the rest of `epoch`, from `state.batch` on; its tally.

    On a signal, saves a checkpoint after the current batch and raises Stopped.
    """
    model, optimizer, splits = state.model, state.optimizer, setup.splits
    batch_size = cfg["batch_size"]
    model.train()
    order = epoch_order(splits.x_train.shape[0], cfg["seed"], epoch, setup.device)
    tally = EpochTally.resume(state.accum, optimizer.param_groups[0]["lr"], setup.device)
    tick = reported = time.perf_counter()
    first = state.batch
    task = setup.task
    augments = "augment" in task.spec.hooks
    for step in range(state.batch, setup.steps):
        idx = order[step * batch_size : (step + 1) * batch_size]
        xb, yb = splits.x_train[idx], splits.y_train[idx]
        if augments:
            xb, yb = task.augment(xb, yb, batch_generator(cfg["seed"], epoch, step, setup.device))
        with setup.autocast():
            loss, extras = task.loss(model, xb, yb, cfg)
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        optimizer.step()
        if setup.per_batch:
            state.scheduler.step()
        tally.add(loss, extras, idx.shape[0])
        # A clock read only, no device sync: the arithmetic is that of a silent loop.
        now = time.perf_counter()
        if now - reported >= PROGRESS_SECONDS:
            reported = now
            per_batch = (now - tick) / (step + 1 - first)
            log.info(
                logs.PROGRESS_LINE,
                epoch + 1,
                cfg["epochs"],
                step + 1,
                setup.steps,
                tally.seconds + now - tick,
                logs.duration(per_batch * (setup.steps - step - 1)),
            )
        if flag.raised is not None:
            # The partial epoch's seconds travel in `accum`; the epoch's end adds them.
            tally.seconds += time.perf_counter() - tick
            state.epoch, state.batch, state.accum = epoch, step + 1, tally.accum()
            checkpoint.save(checkpoint_path, state.checkpoint())
            log.info(logs.STOPPED_LINE, flag.raised, epoch + 1, step + 1)
            raise Stopped(f"stopped by signal {flag.raised}; rerun to resume")
    tally.seconds += time.perf_counter() - tick
    return tally


def batch_generator(seed: int, epoch: int, step: int, device: torch.device) -> torch.Generator:
    """The generator a task's `augment` draws from for one batch: a pure function of
    (seed, epoch, batch), so a resumed run augments the batches it replays alike."""
    generator = torch.Generator(device=device)
    return generator.manual_seed((seed * 100_003 + epoch) * 1_000_003 + step)


def end_epoch(
    state: TrainState, setup: Setup, cfg: Mapping[str, Any], epoch: int, tally: EpochTally
) -> dict[str, Any]:
    """Step a per-epoch schedule, evaluate, and add the epoch's row to the history.

    The row holds the training loss and metrics, then each split's metrics in the order
    the task's `evaluate` returns them.
    """
    trained = tally.means()
    if not setup.per_batch:
        state.scheduler.step()
    splits, task = setup.splits, setup.task
    eval_tick = time.perf_counter()
    val = evaluate(task, state.model, splits.x_val, splits.y_val, cfg, "val")
    test = evaluate(task, state.model, splits.x_test, splits.y_test, cfg, "test")
    state.train_seconds += tally.seconds + (time.perf_counter() - eval_tick)
    row = {
        "epoch": epoch + 1,
        **trained,
        **{f"val_{name}": value for name, value in val.items()},
        **{f"test_{name}": value for name, value in test.items()},
        "lr": tally.lr,
        "epoch_seconds": tally.seconds,
    }
    state.history.append(row)
    return row


def diverged(state: TrainState, row: Mapping[str, Any], task: Task) -> bool:
    """Whether the epoch of `row` diverged: a training loss or a weight that is no longer
    finite. A non-finite metric of finite weights is the task's fault, not the run's."""
    if not math.isfinite(row["train_loss"]) or not weights_finite(state.model):
        return True
    for split in ("val", "test"):
        values = {name: row[f"{split}_{name}"] for name in task.metrics.names}
        task.check_finite(values, split, row["epoch"])
    return False


def train_epochs(
    state: TrainState,
    setup: Setup,
    cfg: Mapping[str, Any],
    checkpoint_path: str | Path,
    on_epoch: Callable[[dict[str, Any]], None] | None,
    until: int | None = None,
) -> str:
    """Train from where `state` stands to epoch `until` (default: the last), a checkpoint
    after each; the run's status: `ok`, or `diverged` when a loss stops being finite.

    Stopping at `until` changes nothing of the epochs trained: the schedule's horizon is
    still `cfg["epochs"]`, so a run resumed later ends as one trained straight through.
    """
    with _SignalFlag() as flag:
        for epoch in range(state.epoch, cfg["epochs"] if until is None else until):
            tally = train_epoch(state, setup, cfg, epoch, flag, checkpoint_path)
            row = end_epoch(state, setup, cfg, epoch, tally)
            if on_epoch is not None:
                on_epoch(row)
            if diverged(state, row, setup.task):
                log.info("epoch %d: loss is not finite; the run diverged", epoch + 1)
                return "diverged"
            state.keep_if_best(row, cfg["select_metric"])
            state.epoch, state.batch, state.accum = epoch + 1, 0, None
            checkpoint.save(checkpoint_path, state.checkpoint())
    return "ok"


def finish(state: TrainState, status: str) -> RunResult:
    """The run's result: the best epoch's weights and metrics (the last weights and no
    metrics when it diverged or trained no epoch)."""
    best = state.best
    weights = best["weights"] or {k: v.detach().cpu() for k, v in state.model.state_dict().items()}
    keys = state.metrics.run_keys()
    if status == "ok" and best["epoch"] is not None:
        chosen = state.history[best["epoch"] - 1]
        metrics = {key: chosen[key] for key in keys}
    else:
        metrics = dict.fromkeys(keys)
    metrics = {
        "status": status,
        **metrics,
        "best_epoch": best["epoch"],
        "epochs_run": len(state.history),
        "train_seconds": state.train_seconds,
    }
    return RunResult(
        metrics=metrics,
        history=state.history,
        weights=weights,
        resumed_from=state.resumed_from,
        parameters=count_parameters(state.model),
    )


def count_parameters(model: nn.Module) -> int:
    """Number of trainable weights."""
    return sum(p.numel() for p in model.parameters() if p.requires_grad)


def train_one_run(
    task: Task,
    prepared: Mapping[str, Any],
    cfg: Mapping[str, Any],
    *,
    val_fraction: float,
    split_seed: int,
    checkpoint_path: str | Path,
    threads: int,
    device: str = "cpu",
    on_epoch: Callable[[dict[str, Any]], None] | None = None,
    data_sha256: str | None = None,
    code: str | None = None,
    until: int | None = None,
) -> RunResult:
    """Train the model `cfg` describes on the prepared data of `task` and return what it
    achieved.

    A checkpoint is written after every epoch (and on SIGTERM, mid-epoch) to
    `checkpoint_path`. If one exists that was made with the same parameters (threads,
    device and split included), the same prepared data (`data_sha256`) and the same code
    (`code`, a fingerprint), training resumes from it and ends with the same weights as an
    uninterrupted run; any other checkpoint is ignored, saying which part differs.
    With `until`, training stops after that epoch (a rung of a search), its checkpoint
    kept for the next rung; a checkpoint already past it trains nothing.
    """
    split = {"val_fraction": val_fraction, "split_seed": split_seed}
    key = resume_key(
        cfg, threads=threads, device=device, data_sha256=data_sha256, code=code, **split
    )
    setup, state = set_up(task, prepared, cfg, threads=threads, device=device, key=key, **split)
    restore_or_start(state, checkpoint_path)
    status = train_epochs(state, setup, cfg, checkpoint_path, on_epoch, until)
    return finish(state, status)


def history_csv(history: list[dict[str, Any]]) -> str:
    """The learning curve as CSV text, one row per epoch, the columns in the rows' order."""
    buffer = io.StringIO()
    columns = list(history[0]) if history else ["epoch"]
    writer = csv.DictWriter(buffer, fieldnames=columns, lineterminator="\n")
    writer.writeheader()
    for row in history:
        writer.writerow(
            {key: repr(row[key]) if isinstance(row[key], float) else row[key] for key in columns}
        )
    return buffer.getvalue()


def write_outputs(
    result: RunResult,
    *,
    cfg: Mapping[str, Any],
    described: Mapping[str, Any],
    model_path: str | Path,
    history_path: str | Path,
    metrics_path: str | Path,
) -> None:
    """Write the run's declared outputs, each atomically, the metrics (its seal) last."""
    atomic.write_bytes(
        model_path,
        checkpoint.to_bytes({"arch": cfg["arch"], **described, "state_dict": result.weights}),
    )
    atomic.write_text(history_path, history_csv(result.history))
    atomic.write_json(metrics_path, result.metrics)
