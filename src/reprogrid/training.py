"""Train one run: seeded, deterministic, resumable, written atomically.

The whole data set lives on the device as one tensor; batches are index slices of a
per-epoch permutation drawn from a generator seeded by (seed, epoch), so the batch order
never depends on global state and a resumed run replays exactly the batches it missed.
The validation split is carved from the training set with its own seed, the same for
every run. The epoch whose validation metric is best supplies the kept weights.
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
import torch.nn.functional as F
from torch import nn

from reprogrid import atomic, checkpoint, data, logs, models

HISTORY_COLUMNS = (
    "epoch",
    "train_loss",
    "train_acc",
    "val_loss",
    "val_acc",
    "test_loss",
    "test_acc",
    "lr",
    "epoch_seconds",
)
METRIC_KEYS = ("test_acc", "test_loss", "val_acc", "val_loss")

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


def to_device_images(images: torch.Tensor, mean: float, std: float, device) -> torch.Tensor:
    """uint8 (n, 28, 28) to normalised float (n, 1, 28, 28) on `device`, in one pass."""
    return images.to(device).float().div_(255.0).sub_(mean).div_(std).unsqueeze(1)


def numerics(model: nn.Module, device: torch.device) -> tuple[torch.memory_format, Any]:
    """The memory format a model trains in and the autocast context of its forward passes.

    A model class may declare `memory_format` and `autocast_dtype` (see models.SpeedCNN); the
    others train in contiguous float32, exactly as before these options existed.
    """
    memory_format = getattr(model, "memory_format", torch.contiguous_format)
    dtype = getattr(model, "autocast_dtype", None)
    return memory_format, lambda: torch.autocast(
        device.type, dtype=dtype, enabled=dtype is not None
    )


@torch.inference_mode()
def evaluate(model: nn.Module, x: torch.Tensor, y: torch.Tensor, batch: int) -> tuple[float, float]:
    """Mean cross-entropy and accuracy of `model` on (x, y), in large batches."""
    model.eval()
    _, autocast = numerics(model, x.device)
    loss_sum = torch.zeros((), dtype=torch.float64, device=x.device)
    correct = torch.zeros((), dtype=torch.int64, device=x.device)
    for start in range(0, x.shape[0], batch):
        with autocast():
            logits = model(x[start : start + batch]).float()
        target = y[start : start + batch]
        loss_sum += F.cross_entropy(logits, target, reduction="sum").double()
        correct += (logits.argmax(1) == target).sum()
    n = x.shape[0]
    return loss_sum.item() / n, correct.item() / n


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

    device: torch.device
    splits: Splits
    steps: int
    per_batch: bool
    autocast: Callable[[], Any]


@dataclass
class EpochTally:
    """The running sums of the epoch in progress; a mid-epoch checkpoint keeps them as `accum`."""

    loss: torch.Tensor
    correct: torch.Tensor
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
            accum = {"loss": 0.0, "correct": 0, "seen": 0, "seconds": 0.0, "lr": lr}
        return cls(
            loss=torch.tensor(accum["loss"], dtype=torch.float64, device=device),
            correct=torch.tensor(accum["correct"], dtype=torch.int64, device=device),
            seen=accum["seen"],
            seconds=accum["seconds"],
            lr=accum["lr"],
        )

    def accum(self) -> dict[str, Any]:
        """The tally as plain values, as a checkpoint stores it."""
        return {
            "loss": self.loss.item(),
            "correct": self.correct.item(),
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
        """Keep a copy of the weights when this epoch's `metric` is the best so far."""
        score, best = row[metric], self.best["score"]
        if best is None or (score < best if metric == "val_loss" else score > best):
            self.best = {
                "epoch": row["epoch"],
                "score": score,
                "weights": {
                    k: v.detach().cpu().clone() for k, v in self.model.state_dict().items()
                },
            }


def splits_on_device(
    prepared: Mapping[str, Any], val_fraction: float, split_seed: int, device: torch.device
) -> Splits:
    """The prepared data's three splits, the validation split carved with `split_seed`."""
    train_idx, val_idx = data.split_train_val(
        prepared["train_labels"].shape[0], val_fraction, split_seed
    )
    mean, std = prepared["mean"], prepared["std"]
    images, labels = prepared["train_images"], prepared["train_labels"]
    return Splits(
        x_train=to_device_images(images[train_idx], mean, std, device),
        y_train=labels[train_idx].to(device),
        x_val=to_device_images(images[val_idx], mean, std, device),
        y_val=labels[val_idx].to(device),
        x_test=to_device_images(prepared["test_images"], mean, std, device),
        y_test=prepared["test_labels"].to(device),
    )


def set_up(
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
    splits = splits_on_device(prepared, val_fraction, split_seed, dev)
    model = models.build_model(cfg["arch"], prepared["num_classes"])
    memory_format, autocast = numerics(model, dev)
    model = model.to(dev, memory_format=memory_format)
    optimizer = make_optimizer(model.parameters(), cfg)
    steps = math.ceil(splits.x_train.shape[0] / cfg["batch_size"])
    if cfg["max_batches"]:
        steps = min(steps, cfg["max_batches"])
    scheduler, per_batch = make_scheduler(optimizer, cfg, steps)
    setup = Setup(device=dev, splits=splits, steps=steps, per_batch=per_batch, autocast=autocast)
    return setup, TrainState(key=key, model=model, optimizer=optimizer, scheduler=scheduler)


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
    for step in range(state.batch, setup.steps):
        idx = order[step * batch_size : (step + 1) * batch_size]
        xb, yb = splits.x_train[idx], splits.y_train[idx]
        with setup.autocast():
            logits = model(xb)
            loss = F.cross_entropy(logits, yb, label_smoothing=cfg["label_smoothing"])
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        optimizer.step()
        if setup.per_batch:
            state.scheduler.step()
        tally.loss += loss.detach().double() * yb.shape[0]
        tally.correct += (logits.detach().argmax(1) == yb).sum()
        tally.seen += yb.shape[0]
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


def end_epoch(
    state: TrainState, setup: Setup, cfg: Mapping[str, Any], epoch: int, tally: EpochTally
) -> dict[str, Any]:
    """Step a per-epoch schedule, evaluate, and add the epoch's row to the history."""
    train_loss = tally.loss.item() / tally.seen
    if not setup.per_batch:
        state.scheduler.step()
    splits, eval_batch = setup.splits, cfg["eval_batch_size"]
    eval_tick = time.perf_counter()
    val_loss, val_acc = evaluate(state.model, splits.x_val, splits.y_val, eval_batch)
    test_loss, test_acc = evaluate(state.model, splits.x_test, splits.y_test, eval_batch)
    state.train_seconds += tally.seconds + (time.perf_counter() - eval_tick)
    row = {
        "epoch": epoch + 1,
        "train_loss": train_loss,
        "train_acc": tally.correct.item() / tally.seen,
        "val_loss": val_loss,
        "val_acc": val_acc,
        "test_loss": test_loss,
        "test_acc": test_acc,
        "lr": tally.lr,
        "epoch_seconds": tally.seconds,
    }
    state.history.append(row)
    return row


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
            if not (math.isfinite(row["train_loss"]) and math.isfinite(row["val_loss"])):
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
    if status == "ok" and best["epoch"] is not None:
        chosen = state.history[best["epoch"] - 1]
        metrics = {key: chosen[key] for key in METRIC_KEYS}
    else:
        metrics = dict.fromkeys(METRIC_KEYS)
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
        parameters=models.count_parameters(state.model),
    )


def train_one_run(
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
    """Train the model `cfg` describes on the prepared data and return what it achieved.

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
    setup, state = set_up(prepared, cfg, threads=threads, device=device, key=key, **split)
    restore_or_start(state, checkpoint_path)
    status = train_epochs(state, setup, cfg, checkpoint_path, on_epoch, until)
    return finish(state, status)


def history_csv(history: list[dict[str, Any]]) -> str:
    """The learning curve as CSV text, one row per epoch."""
    buffer = io.StringIO()
    writer = csv.DictWriter(buffer, fieldnames=HISTORY_COLUMNS, lineterminator="\n")
    writer.writeheader()
    for row in history:
        writer.writerow(
            {
                key: repr(row[key]) if isinstance(row[key], float) else row[key]
                for key in HISTORY_COLUMNS
            }
        )
    return buffer.getvalue()


def write_outputs(
    result: RunResult,
    *,
    cfg: Mapping[str, Any],
    num_classes: int,
    model_path: str | Path,
    history_path: str | Path,
    metrics_path: str | Path,
) -> None:
    """Write the run's declared outputs, each atomically, the metrics (its seal) last."""
    atomic.write_bytes(
        model_path,
        checkpoint.to_bytes(
            {"arch": cfg["arch"], "num_classes": num_classes, "state_dict": result.weights}
        ),
    )
    atomic.write_text(history_path, history_csv(result.history))
    atomic.write_json(metrics_path, result.metrics)
