"""Train one run of a task: seeded, deterministic, resumable, written atomically.

The task (`reprogrid.tasks`) supplies the data, the model, the loss and the metrics; this
module owns the loop. The whole data set lives on the device as one tensor; batches are
index slices of a per-epoch permutation drawn from a generator seeded by (seed, epoch), so
the batch order never depends on global state and a resumed run replays exactly the
batches it missed. A task whose data do not fit in memory gives Datasets instead, read
through DataLoaders in the batches of that same permutation (`DatasetSplits`,
`reprogrid.datasets.loading`). The validation split is carved from the training set with its own
seed, the same for every run. The epoch whose `train.select_metric` is best, in the direction
the task declares, supplies the kept weights.
"""

from __future__ import annotations

import logging
import math
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
from torch import nn

from reprogrid.record import logs
from reprogrid.tasks.runtime import Task, holds_datasets
from reprogrid.train import checkpoint
from reprogrid.train.recipe import (
    config_hash,
    make_optimizer,
    make_scheduler,
    numerics,
    seed_everything,
    set_determinism,
)
from reprogrid.train.splits import (
    DatasetSplits,
    Splits,
    dataset_splits,
    splits_on_device,
    weights_finite,
)
from reprogrid.train.state import EpochTally, SignalFlag, TrainState

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


@dataclass
class Setup:
    """What a run trains on and how, fixed once built: a checkpoint never holds it."""

    task: Task
    device: torch.device
    splits: Splits | DatasetSplits
    steps: int
    per_batch: bool
    autocast: Callable[[], Any]


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
    workers: int = 0,
) -> tuple[Setup, TrainState]:
    """Seed the process, put the data on the device (or, for Datasets, prepare to read
    them with `workers` DataLoader workers), build the model, optimiser and schedule.

    The order is part of the result: the model's initial weights draw from the seeded generators.
    """
    torch.set_num_threads(threads)
    set_determinism(cfg["deterministic"])
    seed_everything(cfg["seed"])
    dev = torch.device(device)
    split = (val_fraction, split_seed, dev)
    if holds_datasets(prepared):
        splits = dataset_splits(task, prepared, *split, workers)
    else:
        splits = splits_on_device(task, prepared, *split)
    model = task.build(cfg, prepared)
    memory_format, autocast = numerics(model, dev)
    model = model.to(dev, memory_format=memory_format)
    optimizer = make_optimizer(model.parameters(), cfg)
    steps = math.ceil(splits.train_count / cfg["batch_size"])
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
        log.info(
            "resuming from epoch %d, batch %d (checkpoint of job %s)",
            state.epoch + 1,
            state.batch,
            saved.get("job"),
        )


def train_epoch(
    state: TrainState,
    setup: Setup,
    cfg: Mapping[str, Any],
    epoch: int,
    flag: SignalFlag,
    checkpoint_path: str | Path,
) -> EpochTally:
    """Train the rest of `epoch`, from `state.batch` on; its tally.

    On a signal, saves a checkpoint after the current batch and raises Stopped.
    """
    model, optimizer, splits = state.model, state.optimizer, setup.splits
    model.train()
    tally = EpochTally.resume(state.accum, optimizer.param_groups[0]["lr"], setup.device)
    tick = reported = time.perf_counter()
    first = state.batch
    task = setup.task
    augments = "augment" in task.spec.hooks
    steps = range(state.batch, setup.steps)
    for step, xb, yb in splits.batches(cfg, epoch, steps):
        if augments:
            xb, yb = task.augment(xb, yb, batch_generator(cfg["seed"], epoch, step, setup.device))
        with setup.autocast():
            loss, extras = task.loss(model, xb, yb, cfg)
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        optimizer.step()
        if setup.per_batch:
            state.scheduler.step()
        tally.add(loss, extras, xb.shape[0])
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
    val = splits.evaluate(task, state.model, cfg, "val")
    test = splits.evaluate(task, state.model, cfg, "test")
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
    with SignalFlag() as flag:
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
    job: str | None = None,
    workers: int = 0,
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
    `job` names the job training, in each checkpoint it writes. `workers` is the number of
    DataLoader workers reading a Dataset task's batches: any number gives the same bytes,
    so it is no part of the checkpoint's key.
    """
    split = {"val_fraction": val_fraction, "split_seed": split_seed}
    key = resume_key(
        cfg, threads=threads, device=device, data_sha256=data_sha256, code=code, **split
    )
    setup, state = set_up(
        task, prepared, cfg, threads=threads, device=device, key=key, workers=workers, **split
    )
    restore_or_start(state, checkpoint_path)
    state.job = job
    status = train_epochs(state, setup, cfg, checkpoint_path, on_epoch, until)
    return finish(state, status)
