"""What a run carries from epoch to epoch, and what its checkpoint holds (`TrainState`):
the epoch's tally, the best epoch so far, and the signal that stops it."""

from __future__ import annotations

import signal
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

import torch
from torch import nn

from reprogrid.train import checkpoint


class SignalFlag:
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
    # The id of the job training this state: each checkpoint names the job that wrote it.
    job: str | None = None

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
            "job": self.job,
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
