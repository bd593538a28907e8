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

from reprogrid import atomic, checkpoint, data, models

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


class Stopped(RuntimeError):
    """Training stopped on a signal after saving a checkpoint; a rerun resumes it."""


@dataclass
class RunResult:
    status: str
    metrics: dict[str, Any]
    history: list[dict[str, Any]]
    weights: dict[str, torch.Tensor]
    resumed_from: int | None = None
    parameters: int = 0
    extra: dict[str, Any] = field(default_factory=dict)


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


def _better(score: float, best: float | None, metric: str) -> bool:
    if best is None:
        return True
    return score < best if metric == "val_loss" else score > best


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
) -> RunResult:
    """Train the model `cfg` describes on the prepared data and return what it achieved.

    A checkpoint is written after every epoch (and on SIGTERM, mid-epoch) to
    `checkpoint_path`. If one exists that was made with the same parameters (threads,
    device and split included), the same prepared data (`data_sha256`) and the same code
    (`code`, a fingerprint), training resumes from it and ends with the same weights as an
    uninterrupted run; any other checkpoint is ignored, saying which part differs.
    """
    torch.set_num_threads(threads)
    set_determinism(cfg["deterministic"])
    seed_everything(cfg["seed"])
    dev = torch.device(device)

    train_idx, val_idx = data.split_train_val(
        prepared["train_labels"].shape[0], val_fraction, split_seed
    )
    mean, std = prepared["mean"], prepared["std"]
    images, labels = prepared["train_images"], prepared["train_labels"]
    x_train = to_device_images(images[train_idx], mean, std, dev)
    y_train = labels[train_idx].to(dev)
    x_val = to_device_images(images[val_idx], mean, std, dev)
    y_val = labels[val_idx].to(dev)
    x_test = to_device_images(prepared["test_images"], mean, std, dev)
    y_test = prepared["test_labels"].to(dev)

    model = models.build_model(cfg["arch"], prepared["num_classes"])
    memory_format, autocast = numerics(model, dev)
    model = model.to(dev, memory_format=memory_format)
    optimizer = make_optimizer(model.parameters(), cfg)
    batch_size = cfg["batch_size"]
    n_train = x_train.shape[0]
    steps = math.ceil(n_train / batch_size)
    if cfg["max_batches"]:
        steps = min(steps, cfg["max_batches"])
    scheduler, per_batch = make_scheduler(optimizer, cfg, steps)

    # Threads, device and split change the arithmetic too: resume only under the same ones.
    resume_key = {
        "config": config_hash(
            {
                **cfg,
                "threads": threads,
                "device": dev.type,
                "val_fraction": val_fraction,
                "split_seed": split_seed,
            }
        ),
        "data": data_sha256,
        "code": code,
    }
    state = checkpoint.load(checkpoint_path)
    differs = checkpoint.differences(state["key"], resume_key) if state is not None else []
    if differs:
        log.info(
            "ignoring checkpoint %s, training from the start: made with other %s",
            checkpoint_path,
            ", ".join(differs),
        )
        state = None
    history: list[dict[str, Any]] = []
    best: dict[str, Any] = {"epoch": None, "score": None, "weights": None}
    start_epoch, start_batch, train_seconds = 0, 0, 0.0
    accum = None
    resumed_from = None
    if state is not None:
        model.load_state_dict(state["model"])
        optimizer.load_state_dict(state["optimizer"])
        scheduler.load_state_dict(state["scheduler"])
        checkpoint.restore_rng_states(state["rng"])
        history, best = state["history"], state["best"]
        start_epoch, start_batch = state["epoch"], state["batch"]
        train_seconds, accum = state["train_seconds"], state["accum"]
        resumed_from = start_epoch + 1
        log.info("resuming from epoch %d, batch %d", start_epoch + 1, start_batch)

    def snapshot(epoch: int, batch: int, accum_now) -> dict[str, Any]:
        return {
            "key": resume_key,
            "epoch": epoch,
            "batch": batch,
            "model": model.state_dict(),
            "optimizer": optimizer.state_dict(),
            "scheduler": scheduler.state_dict(),
            "rng": checkpoint.rng_states(),
            "history": history,
            "best": best,
            "train_seconds": train_seconds,
            "accum": accum_now,
        }

    status = "ok"
    with _SignalFlag() as flag:
        for epoch in range(start_epoch, cfg["epochs"]):
            model.train()
            order = epoch_order(n_train, cfg["seed"], epoch, dev)
            if accum is None:
                accum = {
                    "loss": 0.0,
                    "correct": 0,
                    "seen": 0,
                    "seconds": 0.0,
                    "lr": optimizer.param_groups[0]["lr"],
                }
            loss_sum = torch.tensor(accum["loss"], dtype=torch.float64, device=dev)
            correct = torch.tensor(accum["correct"], dtype=torch.int64, device=dev)
            seen, seconds = accum["seen"], accum["seconds"]
            # A per-batch schedule has moved on by a mid-epoch resume: keep the epoch's first rate.
            lr_at_start = accum["lr"]
            tick = time.perf_counter()
            for step in range(start_batch, steps):
                idx = order[step * batch_size : (step + 1) * batch_size]
                xb, yb = x_train[idx], y_train[idx]
                with autocast():
                    logits = model(xb)
                    loss = F.cross_entropy(logits, yb, label_smoothing=cfg["label_smoothing"])
                optimizer.zero_grad(set_to_none=True)
                loss.backward()
                optimizer.step()
                if per_batch:
                    scheduler.step()
                loss_sum += loss.detach().double() * yb.shape[0]
                correct += (logits.detach().argmax(1) == yb).sum()
                seen += yb.shape[0]
                if flag.raised is not None:
                    # The partial epoch's seconds travel in `accum`; the epoch's end adds them.
                    seconds += time.perf_counter() - tick
                    partial = {
                        "loss": loss_sum.item(),
                        "correct": correct.item(),
                        "seen": seen,
                        "seconds": seconds,
                        "lr": lr_at_start,
                    }
                    checkpoint.save(checkpoint_path, snapshot(epoch, step + 1, partial))
                    log.info(
                        "stopped by signal %d in epoch %d after batch %d; checkpoint saved",
                        flag.raised,
                        epoch + 1,
                        step + 1,
                    )
                    raise Stopped(f"stopped by signal {flag.raised}; rerun to resume")
            seconds += time.perf_counter() - tick
            train_loss = loss_sum.item() / seen
            if not per_batch:
                scheduler.step()
            eval_tick = time.perf_counter()
            val_loss, val_acc = evaluate(model, x_val, y_val, cfg["eval_batch_size"])
            test_loss, test_acc = evaluate(model, x_test, y_test, cfg["eval_batch_size"])
            train_seconds += seconds + (time.perf_counter() - eval_tick)
            row = {
                "epoch": epoch + 1,
                "train_loss": train_loss,
                "train_acc": correct.item() / seen,
                "val_loss": val_loss,
                "val_acc": val_acc,
                "test_loss": test_loss,
                "test_acc": test_acc,
                "lr": lr_at_start,
                "epoch_seconds": seconds,
            }
            history.append(row)
            if on_epoch is not None:
                on_epoch(row)
            if not (math.isfinite(train_loss) and math.isfinite(val_loss)):
                status = "diverged"
                log.info("epoch %d: loss is not finite; the run diverged", epoch + 1)
                break
            score = row[cfg["select_metric"]]
            if _better(score, best["score"], cfg["select_metric"]):
                best = {
                    "epoch": epoch + 1,
                    "score": score,
                    "weights": {k: v.detach().cpu().clone() for k, v in model.state_dict().items()},
                }
            accum, start_batch = None, 0
            checkpoint.save(checkpoint_path, snapshot(epoch + 1, 0, None))

    weights = best["weights"] or {k: v.detach().cpu() for k, v in model.state_dict().items()}
    if status == "ok" and best["epoch"] is not None:
        chosen = history[best["epoch"] - 1]
        metrics = {key: chosen[key] for key in METRIC_KEYS}
    else:
        metrics = dict.fromkeys(METRIC_KEYS)
    metrics = {
        "status": status,
        **metrics,
        "best_epoch": best["epoch"],
        "epochs_run": len(history),
        "train_seconds": train_seconds,
    }
    return RunResult(
        status=status,
        metrics=metrics,
        history=history,
        weights=weights,
        resumed_from=resumed_from,
        parameters=models.count_parameters(model),
    )


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
