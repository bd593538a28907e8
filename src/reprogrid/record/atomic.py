"""Write files so that a reader sees the old content or the new one, never a torn one.

A write goes to a temporary file beside the target, `.<name>.<host>.<pid>.<token>.tmp`, created
with the mode the umask allows (as `open` would create the target itself), synced, renamed
over the target, and the folder synced so the rename survives a crash. A writer killed before
the rename leaves its temporary file behind; the next write of the same target removes those
left by processes of this host that no longer run. Temporary files of other hosts (a shared
file system) are left alone: whether their writer still runs cannot be known from here.

A write that finds its disk full (ENOSPC, or EDQUOT for a full quota) removes its temporary
file, leaves the target as it was and raises `DiskFull`, whose message names the file and
the disk; a job's log shows it in one line (`reprogrid.record.logs`).
"""

from __future__ import annotations

import errno
import glob
import json
import os
import re
import secrets
import socket
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any


class DiskFull(OSError):
    """A write that found no space left on the disk holding `path`; the message says so."""

    def __init__(self, path: str | os.PathLike) -> None:
        self.path = str(path)
        super().__init__(
            f"no space left on the disk holding {self.path} (nothing of it was written); "
            "free space and run again"
        )


# The errors of a write to a full disk, or to a full quota on it.
FULL = (errno.ENOSPC, errno.EDQUOT)


def _host() -> str:
    """This host's name as it may appear in a file name."""
    return re.sub(r"[^A-Za-z0-9.-]", "_", socket.gethostname()) or "host"


def _running(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        # Another user's process has this pid: it runs.
        return True
    return True


def remove_stale_temporaries(target: Path) -> list[Path]:
    """Remove the temporary files of `target` left by writers of this host that have died.

    A file is removed only when its name says it was made here by a pid that no longer
    runs; anything else (a live writer, another host, a name of another form) is kept.
    The files removed.
    """
    prefix, host = f".{target.name}.", _host()
    removed = []
    for candidate in target.parent.glob(f".{glob.escape(target.name)}.*.tmp"):
        parts = candidate.name[len(prefix) : -len(".tmp")].rsplit(".", 2)
        if len(parts) != 3 or parts[0] != host or not parts[1].isdigit():
            continue
        if _running(int(parts[1])):
            continue
        candidate.unlink(missing_ok=True)
        removed.append(candidate)
    return removed


def _sync_folder(folder: Path) -> None:
    try:
        fd = os.open(folder, os.O_RDONLY)
    except OSError:
        return
    try:
        os.fsync(fd)
    except OSError:
        # Some file systems (several network ones) refuse to sync a folder; the rename stands.
        pass
    finally:
        os.close(fd)


@contextmanager
def atomic_path(path: str | os.PathLike) -> Iterator[Path]:
    """Yield a temporary path beside `path`; move it into place only if the block succeeds.

    The file at `path` gets the mode the umask allows (0644 under umask 022), is synced to
    disk, and so is its folder after the rename.
    """
    target = Path(path)
    target.parent.mkdir(parents=True, exist_ok=True)
    remove_stale_temporaries(target)
    tmp_path = target.parent / (
        f".{target.name}.{_host()}.{os.getpid()}.{secrets.token_hex(4)}.tmp"
    )
    try:
        # 0o666 filtered by the umask, as for any new file (mkstemp would force 0600).
        os.close(os.open(tmp_path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o666))
        yield tmp_path
        with open(tmp_path, "rb") as handle:
            os.fsync(handle.fileno())
        os.replace(tmp_path, target)
        _sync_folder(target.parent)
    except OSError as err:
        if err.errno in FULL:
            raise DiskFull(target) from None
        raise
    finally:
        tmp_path.unlink(missing_ok=True)


def write_text(path: str | os.PathLike, text: str) -> None:
    """Atomically write `text` to `path`."""
    with atomic_path(path) as tmp:
        tmp.write_text(text, encoding="utf-8")


def json_text(data: Any) -> str:
    """`data` as the indented JSON `write_json` writes; NaN and infinities become null."""
    return json.dumps(_finite(data), indent=2, sort_keys=False) + "\n"


def write_json(path: str | os.PathLike, data: Any) -> None:
    """Atomically write `data` as indented JSON; NaN and infinities become null."""
    write_text(path, json_text(data))


def _finite(value: Any) -> Any:
    if isinstance(value, float) and (value != value or value in (float("inf"), float("-inf"))):
        return None
    if isinstance(value, dict):
        return {key: _finite(item) for key, item in value.items()}
    if isinstance(value, list | tuple):
        return [_finite(item) for item in value]
    return value


def write_bytes(path: str | os.PathLike, data: bytes) -> None:
    """Atomically write `data` to `path`."""
    with atomic_path(path) as tmp:
        tmp.write_bytes(data)
