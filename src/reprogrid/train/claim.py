"""One writer per run folder: the claim a training job holds on its run for its whole life.

The claim is an exclusive `flock` on `claim.lock` in the run folder. The kernel drops it
when the holder ends, however it ends (SIGKILL and an out-of-memory kill included), so a
dead job never leaves its run claimed and no stale lock has to be cleared by hand. The
holder writes who it is into the file (host, pid, job id, Slurm job, start time), so a job
refused the claim can say which process trains the run and how to stop it.

On a local file system, on NFS with its lock service and on Lustre mounted with `flock`,
the lock is seen by every host. Lustre's `localflock` and NFS mounted `nolock` keep locks
per node, which no process can detect: there, jobs on two nodes would both get the claim
(docs/reproducibility.md says what protects the folder then). Where a file system refuses
locks (`flock` fails with ENOLCK, EOPNOTSUPP or ENOSYS: Lustre mounted with neither option),
the claim falls back to the holder the file records and refuses while it names another
process; the job that took it clears the record when it ends, and a record left by a
killed job is named in the refusal, with what to delete once that job is known to be gone.
"""

from __future__ import annotations

import dataclasses
import errno
import fcntl
import json
import os
import socket
import time
from dataclasses import dataclass
from pathlib import Path
from typing import IO

from reprogrid.plan import paths

# A file system that keeps no locks answers flock with one of these.
NO_LOCKS = (errno.ENOLCK, errno.EOPNOTSUPP, errno.ENOSYS)


class Claimed(RuntimeError):
    """Another job holds the run; the message is one line naming it and how to stop it."""


@dataclass(frozen=True)
class Holder:
    """The job holding a claim: where it runs, its process, its job id, since when."""

    host: str
    pid: int
    job: str
    started: str
    slurm_job: str | None = None

    def how_to_stop(self) -> str:
        if self.slurm_job:
            return f"`scancel {self.slurm_job}`"
        return f"`kill {self.pid}` on {self.host}"

    def describe(self) -> str:
        where = f"pid {self.pid} on host {self.host}"
        if self.slurm_job:
            where += f", Slurm job {self.slurm_job}"
        return f"job {self.job} ({where}, since {self.started})"


def this_process(job: str, started: str) -> Holder:
    """The holder this process would be, as job `job` started at `started`."""
    return Holder(
        host=socket.gethostname(),
        pid=os.getpid(),
        job=job,
        started=started,
        slurm_job=os.environ.get("SLURM_JOB_ID"),
    )


def recorded_holder(handle: IO) -> Holder | None:
    """The holder a claim file records, or None when it records none (or not legibly)."""
    handle.seek(0)
    try:
        return Holder(**json.loads(handle.read()))
    except (ValueError, TypeError):
        return None


def _alive(holder: Holder) -> bool:
    """Whether `holder` may still run: a process of this host is asked, another host's
    cannot be, so it counts as running."""
    if holder.host != socket.gethostname():
        return True
    try:
        os.kill(holder.pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return holder.pid != os.getpid()


class RunClaim:
    """The claim on one run folder, held from `take` until `release` (or the process ends)."""

    def __init__(self, run: str, folder: str | Path, holder: Holder) -> None:
        self.run, self.holder = run, holder
        self.path = Path(folder) / paths.CLAIM
        self.locks = True
        self._handle: IO | None = None

    def take(self, wait: float = 0.0, poll: float = 0.2) -> RunClaim:
        """Claim the run, waiting up to `wait` seconds for a holder to end; raises `Claimed`
        naming the holder when it still holds the run then."""
        self.path.parent.mkdir(parents=True, exist_ok=True)
        deadline = time.monotonic() + wait
        while True:
            handle = self._open()
            held, other = self._lock(handle)
            if not held:
                handle.close()
                if time.monotonic() >= deadline:
                    raise Claimed(self._refusal(other))
                time.sleep(poll)
                continue
            handle.seek(0)
            handle.truncate()
            handle.write(json.dumps(dataclasses.asdict(self.holder)))
            handle.flush()
            os.fsync(handle.fileno())
            self._handle = handle
            return self

    def _open(self) -> IO:
        """The claim file, opened for reading and appending without following a symbolic
        link: a link planted there is removed (as renaming a file over it would), so the
        claim never writes to a file outside the run folder."""
        while True:
            try:
                fd = os.open(self.path, os.O_RDWR | os.O_APPEND | os.O_CREAT | os.O_NOFOLLOW, 0o666)
            except OSError as error:
                if error.errno != errno.ELOOP:
                    raise
                self.path.unlink(missing_ok=True)
                continue
            return os.fdopen(fd, "a+")

    def _lock(self, handle: IO) -> tuple[bool, Holder | None]:
        """Lock `handle`: whether it is ours now, else the holder its record names."""
        try:
            fcntl.flock(handle, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            return False, recorded_holder(handle)
        except OSError as error:
            if error.errno not in NO_LOCKS:
                raise
            # No locks on this file system: the record is all there is to go by.
            self.locks = False
            other = recorded_holder(handle)
            return (False, other) if other is not None and _alive(other) else (True, None)
        return True, None

    def _refusal(self, other: Holder | None) -> str:
        # A holder that has just taken the lock may not have written its record yet.
        who = other.describe() if other is not None else "another job"
        stop = f"stop it with {other.how_to_stop()}" if other is not None else "stop it"
        message = (
            f"run {self.run} is being trained by {who}, which holds {self.path}; a second "
            f"job would write the same folder: wait for it to end, or {stop} and run "
            "Snakemake again"
        )
        if not self.locks:
            message += f" (this file system keeps no locks: once it has ended, delete {self.path})"
        return message

    def release(self) -> None:
        """Clear the record and drop the lock; a no-op when not held."""
        if self._handle is None:
            return
        self._handle.seek(0)
        self._handle.truncate()
        self._handle.close()
        self._handle = None

    def __enter__(self) -> RunClaim:
        return self

    def __exit__(self, *exc) -> None:
        self.release()
