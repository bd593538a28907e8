"""Copies between this machine and remote storage, with rclone.

A remote is what rclone accepts as a place: `name:path` for a remote defined in rclone's
config file or by `RCLONE_CONFIG_<NAME>_*` environment variables, `:backend:path`, or a local
folder. Its credentials stay there: a remote written with inline parameters
(`name,key=value:path`, `:s3,secret_access_key=...:bucket`) is refused, because the remote
is shown in Snakemake's plan and logs and stored in its metadata.

Copies never delete at the destination unless asked (`rclone sync` instead of `rclone copy`),
and a copy of files the destination already holds (same size and modification time) copies
nothing.
"""

from __future__ import annotations

import json
import logging
import re
import shutil
import subprocess
from dataclasses import dataclass
from pathlib import Path

LOG = logging.getLogger("reprogrid.remote")

# How long the check of a remote waits for it before calling it unreachable.
CHECK_TIMEOUTS = (
    "--contimeout=10s",
    "--timeout=30s",
    "--retries=1",
    "--low-level-retries=1",
)
# rclone's exit status for "directory not found": the remote answers, the folder is new.
DIRECTORY_NOT_FOUND = 3
# Files a writer of reprogrid.record.atomic has not renamed into place yet.
UNFINISHED = ".*.tmp"
INSTALL_HINT = (
    "install it (apt-get install rclone, conda install -c conda-forge rclone, or rclone.org)"
)
# `name:` or `name,params:` at the start, as rclone reads it; a leading `:` is an on-the-fly
# backend; anything else (`/data`, `./x`, `x`) is a local path.
NAMED = re.compile(r"^(?P<name>[\w.+@ -]+)(?P<params>,[^:]*)?:")
ON_THE_FLY = re.compile(r"^:(?P<name>[\w.+@ -]+)(?P<params>,[^:]*)?:")
# rclone's log prefix (`2026/01/31 12:00:00 ERROR : `), dropped from its messages.
LOG_PREFIX = re.compile(r"^\d{4}/\d\d/\d\d \d\d:\d\d:\d\d (?:[A-Z]+\s*: )?")


class RemoteError(RuntimeError):
    """A remote rclone cannot use; the message is meant for the user as is."""


@dataclass(frozen=True)
class Copied:
    """What one copy did: files transferred to the destination, and files deleted there."""

    transferred: int
    deleted: int


def name_of(remote: str) -> str | None:
    """The name of the configured remote that `remote` (`name:path`) is on, or None for a
    local path or an on-the-fly backend (`:local:/x`)."""
    match = NAMED.match(remote)
    return match["name"] if match else None


def join(remote: str, *parts: str) -> str:
    """`remote` with `parts` appended as folders: `drive:proj` + results -> `drive:proj/results`,
    `drive:` + results -> `drive:results`."""
    tail = "/".join(part.strip("/") for part in parts)
    return f"{remote}{tail}" if remote.endswith((":", "/")) else f"{remote}/{tail}"


def _rclone() -> str:
    rclone = shutil.which("rclone")
    if rclone is None:
        raise RemoteError(f"rclone is not installed; {INSTALL_HINT}")
    return rclone


def _last_message(stderr: str) -> str:
    """rclone's last error line without its time stamp, or a placeholder when it said nothing."""
    lines = [LOG_PREFIX.sub("", line).strip() for line in stderr.splitlines() if line.strip()]
    return lines[-1] if lines else "no message"


def check(remote: str | None, key: str) -> None:
    """Return if rclone knows `remote` and reaches it; else raise RemoteError naming `key`
    (the config key or argument that gave it, with its source) and the remote.

    Reaching it means listing its folder: a folder that does not exist yet is fine, a copy
    creates it. Nothing is written anywhere.
    """
    if not remote:
        raise RemoteError(
            f"{key} is not set; set it to an rclone remote and folder, e.g. "
            "--config sync='{remote: mydrive:reprogrid}' (rclone listremotes shows the remotes)"
        )
    inline = NAMED.match(remote) or ON_THE_FLY.match(remote)
    if inline and inline["params"]:
        raise RemoteError(
            f"{key}: remote {inline['name']!r} is given with inline parameters, which would "
            "be shown in logs; define the remote in rclone's config (rclone config) "
            f"or as RCLONE_CONFIG_{inline['name'].upper()}_* environment variables instead"
        )
    rclone = _rclone()
    name = name_of(remote)
    if name is not None:
        listed = subprocess.run([rclone, "listremotes"], capture_output=True, text=True)
        if f"{name}:" not in listed.stdout.split():
            raise RemoteError(
                f"{key}: rclone knows no remote {name!r} (in {remote!r}); define it with "
                f"rclone config or RCLONE_CONFIG_{name.upper()}_TYPE and its other settings, "
                "or pick one of rclone listremotes"
            )
    probe = subprocess.run(
        [rclone, "lsf", "--max-depth=1", "--dirs-only", *CHECK_TIMEOUTS, remote],
        capture_output=True,
        text=True,
    )
    if probe.returncode not in (0, DIRECTORY_NOT_FOUND):
        raise RemoteError(
            f"{key}: rclone cannot reach {remote!r}: {_last_message(probe.stderr)}; check the "
            "network and the remote's settings (rclone lsf REMOTE: tries it)"
        )


def copy(source: str | Path, destination: str | Path, delete: bool = False) -> Copied:
    """Copy the folder `source` into the folder `destination` (either may be a remote) with
    rclone, and say what it did. Files already there unchanged are not copied again; files
    only at the destination are deleted only if `delete` (then `rclone sync`). Unfinished
    atomic writes are left out. Every file rclone copies or deletes is logged.

    Raises RemoteError if rclone fails; the destination may then hold part of the copy.
    """
    verb = "sync" if delete else "copy"
    process = subprocess.run(
        [
            _rclone(),
            verb,
            str(source),
            str(destination),
            f"--exclude={UNFINISHED}",
            "--use-json-log",
            "--verbose",
        ],
        capture_output=True,
        text=True,
    )
    entries = [entry for entry in map(_json_or_none, process.stderr.splitlines()) if entry]
    for entry in entries:
        if "stats" not in entry and "object" in entry:
            LOG.info("rclone: %s: %s", entry.get("msg", ""), entry["object"])
    if process.returncode != 0:
        errors = [e["msg"] for e in entries if e.get("level") in ("error", "critical")]
        message = errors[-1] if errors else _last_message(process.stderr)
        raise RemoteError(f"rclone {verb} {source} {destination} failed: {message}")
    stats = [entry["stats"] for entry in entries if "stats" in entry]
    final = stats[-1] if stats else {}
    return Copied(transferred=final.get("transfers", 0), deleted=final.get("deletes", 0))


def _json_or_none(line: str) -> dict | None:
    try:
        entry = json.loads(line)
    except json.JSONDecodeError:
        return None
    return entry if isinstance(entry, dict) else None
