"""What produced a result: code version, machine, software, data, configuration.

Nothing secret is recorded: no dump of the environment, only the variables named in
`ENV_ALLOWLIST`, and remote URLs lose any credentials they carry.
"""

from __future__ import annotations

import datetime as dt
import importlib.metadata
import os
import platform
import socket
import subprocess
import sys
from collections.abc import Mapping
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit, urlunsplit

# Variables that describe where and how a job ran, and never hold secrets.
ENV_ALLOWLIST = (
    "CUDA_VISIBLE_DEVICES",
    "CUBLAS_WORKSPACE_CONFIG",
    "OMP_NUM_THREADS",
    "PYTHONHASHSEED",
    "CONDA_DEFAULT_ENV",
    "SLURM_JOB_ID",
    "SLURM_ARRAY_JOB_ID",
    "SLURM_ARRAY_TASK_ID",
    "SLURM_JOB_NODELIST",
    "SLURMD_NODENAME",
    "SLURM_JOB_PARTITION",
    "SLURM_CPUS_PER_TASK",
    "SLURM_JOB_GPUS",
    "SLURM_RESTART_COUNT",
)

# Untracked files with these endings change what the pipeline does, so a run names them.
SOURCE_SUFFIXES = (".py", ".smk", ".yaml", ".yml", ".json", ".rst", ".cfg", ".toml")


def now() -> str:
    """The current time in ISO 8601, UTC."""
    return dt.datetime.now(dt.UTC).isoformat(timespec="seconds")


def _git(repo: Path, *args: str) -> str | None:
    try:
        out = subprocess.run(
            ["git", "-C", str(repo), *args], capture_output=True, text=True, check=True
        )
    except (OSError, subprocess.CalledProcessError):
        return None
    return out.stdout


SSH_SCHEMES = ("ssh", "git+ssh", "ssh+git")


def strip_credentials(url: str) -> str:
    """A remote URL without password, token or query string, still usable to clone.

    Over HTTP(S) and other URL schemes the whole user part goes, since a token often sits in
    the user name (`https://<token>@host/x.git`). Over SSH the user name stays (`git@...`
    names an account, and cloning needs it) and only a password goes, in both spellings:
    `ssh://git@host/x.git` and `git@github.com:org/repo.git`.
    """
    parts = urlsplit(url)
    if parts.scheme and parts.hostname:
        host = parts.hostname
        if ":" in host:
            host = f"[{host}]"
        if parts.port:
            host += f":{parts.port}"
        if parts.scheme.lower() in SSH_SCHEMES and parts.username:
            host = f"{parts.username}@{host}"
        return urlunsplit((parts.scheme, host, parts.path, "", ""))
    user, at, rest = url.partition("@")
    if "://" not in url and at and "/" not in user:
        # scp-like SSH, `user@host:path`: keep the user name, drop a password after a colon.
        return f"{user.split(':', 1)[0]}@{rest.split('?', 1)[0]}"
    return url


def git_state(repo: str | Path) -> dict[str, Any]:
    """Commit, branch, dirty flag, remote, untracked sources and the uncommitted diff.

    `diff` is the text of `git diff HEAD` (empty when clean); callers save it as a patch.
    Outside a git checkout, `commit` is None.
    """
    repo = Path(repo)
    commit = _git(repo, "rev-parse", "HEAD")
    if commit is None:
        return {
            "commit": None,
            "branch": None,
            "dirty": None,
            "remote": None,
            "untracked_sources": [],
            "diff": "",
        }
    status = _git(repo, "status", "--porcelain", "--untracked-files=no") or ""
    untracked = (_git(repo, "ls-files", "--others", "--exclude-standard") or "").splitlines()
    remote = (_git(repo, "remote", "get-url", "origin") or "").strip()
    return {
        "commit": commit.strip(),
        "branch": (_git(repo, "rev-parse", "--abbrev-ref", "HEAD") or "").strip() or None,
        "dirty": bool(status.strip()),
        "remote": strip_credentials(remote) if remote else None,
        "untracked_sources": sorted(
            name
            for name in untracked
            if name.endswith(SOURCE_SUFFIXES) or name.endswith("Snakefile")
        ),
        "diff": _git(repo, "diff", "HEAD", "--binary") or "",
    }


def same_code(start: Mapping[str, Any], end: Mapping[str, Any]) -> bool:
    """Whether two `git_state`s name the same code: commit, dirty flag and uncommitted diff."""
    return all(start[key] == end[key] for key in ("commit", "dirty", "diff"))


def packages() -> dict[str, str]:
    """Every installed distribution's version, by name."""
    found = {}
    for dist in importlib.metadata.distributions():
        name = dist.metadata["Name"]
        if name:
            found[name] = dist.version
    return dict(sorted(found.items(), key=lambda item: item[0].lower()))


def _cpu_name() -> str:
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()


def machine(device: str) -> dict[str, Any]:
    """Python, platform, host, CPU and the torch/CUDA/cuDNN stack, with GPU names."""
    import torch

    cuda = torch.cuda.is_available()
    return {
        "python": sys.version.split()[0],
        "platform": platform.platform(),
        "hostname": socket.gethostname(),
        "cpu": _cpu_name(),
        "cpu_count": os.cpu_count(),
        "torch": torch.__version__,
        "cuda": torch.version.cuda,
        "cudnn": torch.backends.cudnn.version() if cuda else None,
        "device": device,
        "gpus": [torch.cuda.get_device_name(i) for i in range(torch.cuda.device_count())]
        if cuda
        else [],
        "torch_threads": torch.get_num_threads(),
    }


def slurm() -> dict[str, Any] | None:
    """The Slurm job this runs in, or None outside Slurm."""
    job = os.environ.get("SLURM_JOB_ID")
    if not job:
        return None
    return {
        "job_id": job,
        "node": os.environ.get("SLURMD_NODENAME") or os.environ.get("SLURM_JOB_NODELIST"),
        "partition": os.environ.get("SLURM_JOB_PARTITION"),
        "restart_count": os.environ.get("SLURM_RESTART_COUNT"),
    }


def environment_variables() -> dict[str, str]:
    """The allow-listed environment variables that are set."""
    return {name: os.environ[name] for name in ENV_ALLOWLIST if name in os.environ}
