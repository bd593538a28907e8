"""Which device a training job uses, and what it is.

Snakemake's `gpu` resource counts GPUs but names none (snakemake#281), so concurrent
local jobs would all pick GPU 0. Each job here claims a GPU with an exclusive `flock` on
a per-GPU lock file; the kernel drops the lock when the process ends, however it ends, so
a killed job never leaves a GPU claimed. A lock file is named after the GPU's entry in
`CUDA_VISIBLE_DEVICES` when that is set, so jobs that see different subsets of one
machine's GPUs still never share one. Under Slurm the scheduler restricts the visible GPUs
to the job's own and numbers them afresh in every job, so claims are kept per Slurm job:
several runs packed into one job (a Snakemake group) each get one of the job's GPUs.
"""

from __future__ import annotations

import fcntl
import os
import platform
import socket
import sys
import tempfile
import time
from pathlib import Path
from typing import IO, Any


class NoGPUError(RuntimeError):
    """The job asked for a GPU and none is visible."""


def default_lock_dir() -> Path:
    """Where this user's GPU claims live; one folder per Slurm job inside a Slurm job."""
    name = f"reprogrid-gpu-locks-{os.getuid()}"
    job = os.environ.get("SLURM_JOB_ID")
    if job:
        name += f"-slurm-job-{job}"
    return Path(tempfile.gettempdir()) / name


def lock_name(index: int) -> str:
    """The lock file of visible GPU `index`: named by its CUDA_VISIBLE_DEVICES entry if any."""
    visible = [entry.strip() for entry in os.environ.get("CUDA_VISIBLE_DEVICES", "").split(",")]
    gpu = visible[index] if index < len(visible) and visible[index] else str(index)
    return f"gpu{gpu}.lock"


def claim_gpu(count: int, lock_dir: str | Path, poll_seconds: float = 0.5) -> tuple[int, IO]:
    """Claim one of `count` visible GPUs for this process; return its index and the held lock.

    Waits while all are claimed. Keep the returned file open for as long as the GPU is in use.
    """
    folder = Path(lock_dir)
    folder.mkdir(parents=True, exist_ok=True)
    while True:
        for index in range(count):
            handle = open(folder / lock_name(index), "a")  # noqa: SIM115 - held open on purpose
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
    index, lock = claim_gpu(torch.cuda.device_count(), default_lock_dir())
    torch.cuda.set_device(index)
    return f"cuda:{index}", lock


def _cpu_name() -> str:
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()


def describe(device: str) -> dict[str, Any]:
    """Python, platform, host, CPU, the CUDA/cuDNN torch runs on, the device and GPU names.

    A run's provenance records it (`provenance.Machine`); torch's own version is in its
    `packages`, with every other distribution's.
    """
    import torch

    cuda = torch.cuda.is_available()
    return {
        "python": sys.version.split()[0],
        "platform": platform.platform(),
        "hostname": socket.gethostname(),
        "cpu": _cpu_name(),
        "cpu_count": os.cpu_count(),
        "cuda": torch.version.cuda,
        "cudnn": torch.backends.cudnn.version() if cuda else None,
        "device": device,
        "gpus": [torch.cuda.get_device_name(i) for i in range(torch.cuda.device_count())]
        if cuda
        else [],
    }
