"""Which device a training job uses.

Snakemake's `gpu` resource counts GPUs but names none (snakemake#281), so concurrent
local jobs would all pick GPU 0. Each job here claims a GPU with an exclusive `flock` on
a per-GPU lock file; the kernel drops the lock when the process ends, however it ends, so
a killed job never leaves a GPU claimed. Under Slurm the scheduler already restricts
`CUDA_VISIBLE_DEVICES` to the job's GPUs, and the first visible one is used.
"""

from __future__ import annotations

import fcntl
import os
import tempfile
import time
from pathlib import Path
from typing import IO


class NoGPUError(RuntimeError):
    """The job asked for a GPU and none is visible."""


def default_lock_dir() -> Path:
    return Path(tempfile.gettempdir()) / f"reprogrid-gpu-locks-{os.getuid()}"


def claim_gpu(count: int, lock_dir: str | Path, poll_seconds: float = 0.5) -> tuple[int, IO]:
    """Claim one of `count` GPUs for this process; return its index and the held lock file.

    Keep the returned file open for as long as the GPU is in use.
    """
    folder = Path(lock_dir)
    folder.mkdir(parents=True, exist_ok=True)
    while True:
        for index in range(count):
            handle = open(folder / f"gpu{index}.lock", "a")  # noqa: SIM115 - held open on purpose
            try:
                fcntl.flock(handle, fcntl.LOCK_EX | fcntl.LOCK_NB)
            except BlockingIOError:
                handle.close()
                continue
            return index, handle
        time.sleep(poll_seconds)


def select_device(gpus: int) -> tuple[str, IO | None]:
    """The torch device for a job granted `gpus` GPUs, and the lock that reserves it."""
    if gpus <= 0:
        return "cpu", None
    import torch

    if not torch.cuda.is_available():
        raise NoGPUError(
            f"the job was given {gpus} GPU(s) but torch sees none; "
            "check the CUDA build of torch, or set resources gpu=0"
        )
    if os.environ.get("SLURM_JOB_ID"):
        return "cuda:0", None
    index, lock = claim_gpu(torch.cuda.device_count(), default_lock_dir())
    torch.cuda.set_device(index)
    return f"cuda:{index}", lock
