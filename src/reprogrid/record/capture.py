"""What a record captures of where a job ran: the checkout, the packages, the environment.

`git_state` reads the checkout (commit, dirty, diff, remote with its credentials stripped),
`packages` the installed distributions, `environment_variables` only the variables named
in `ENV_ALLOWLIST`: nothing secret is captured.
"""

from __future__ import annotations

import datetime as dt
import importlib.metadata
import os
import subprocess
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
    # A run in the project's image (envs/Dockerfile): the name it was built as, the image
    # reference Snakemake ran it from (config key `container`, with its digest when pinned
    # by one), and the image file Apptainer (formerly Singularity) ran.
    "REPROGRID_IMAGE",
    "REPROGRID_CONTAINER",
    "APPTAINER_CONTAINER",
    "APPTAINER_NAME",
    "SINGULARITY_CONTAINER",
    "SINGULARITY_NAME",
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


def _name_and_version(metadata: str) -> tuple[str | None, str | None]:
    """The `Name` and `Version` fields of a distribution's core metadata (METADATA, PKG-INFO)."""
    fields: dict[str, str] = {}
    for line in metadata.splitlines():
        if not line:
            break
        key, _, value = line.partition(":")
        if key in ("Name", "Version") and key not in fields:
            fields[key] = value.strip()
    return fields.get("Name"), fields.get("Version")


def packages() -> dict[str, str]:
    """Every installed distribution's version, by name.

    Only the two header lines are read: parsing each file's whole metadata, as
    `Distribution.metadata` does, took a tenth of a second of every training job.
    """
    found = {}
    for dist in importlib.metadata.distributions():
        name, version = _name_and_version(
            dist.read_text("METADATA") or dist.read_text("PKG-INFO") or ""
        )
        if name:
            found[name] = version
    return dict(sorted(found.items(), key=lambda item: item[0].lower()))


def environment_variables() -> dict[str, str]:
    """The allow-listed environment variables that are set."""
    return {name: os.environ[name] for name in ENV_ALLOWLIST if name in os.environ}
