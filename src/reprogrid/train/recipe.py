"""How a run is set up before its first step: seeding, determinism, the epoch's order, the
optimiser and schedule a config names, and the numerics a run records."""

from __future__ import annotations

import hashlib
import json
import os
import random
import sys
from collections.abc import Mapping
from typing import Any

import numpy as np
import torch
from torch import nn


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
