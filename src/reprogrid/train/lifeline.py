"""A local job dies with the Snakemake that started it.

Snakemake runs the train command through a shell, so a SIGKILLed `snakemake` leaves that
shell and its trainer running, reparented to init: an orphan that goes on writing its run
folder while a new Snakemake starts the run again. A job tied to its controller here stops
as on SIGTERM (its checkpoint saved, exit 143) once the controller is gone:

- `PR_SET_PDEATHSIG` (Linux) has the kernel send SIGTERM the moment the job's parent, the
  shell, dies;
- a watcher thread looks every `POLL_SECONDS` whether the controller is still among the
  job's ancestors; once Snakemake dies its shell is reparented, so the controller drops out
  of the chain even while its zombie waits to be reaped, and a reused pid never counts.

The controller names itself in `CONTROLLER_ENV` (`workflow/glue.py`). Under Slurm a job
outlives its controller by design, and the run's claim (`reprogrid.train.claim`) is what keeps a
second job out, so nothing here applies when `SLURM_JOB_ID` is set.
"""

from __future__ import annotations

import ctypes
import logging
import os
import signal
import sys
import threading
import time
from pathlib import Path

log = logging.getLogger("reprogrid")

# The environment variable in which Snakemake's process names its pid to the jobs it starts.
CONTROLLER_ENV = "REPROGRID_CONTROLLER"
POLL_SECONDS = 1.0
PR_SET_PDEATHSIG = 1


def parent_of(pid: int) -> int | None:
    """The parent pid of `pid` from /proc, or None when it no longer runs (or no /proc)."""
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return None
    # The command name in parentheses may hold spaces and parentheses: split after it.
    return int(stat.rsplit(")", 1)[1].split()[1])


def ancestors() -> list[int]:
    """This process's parent, its parent and so on, up to (not including) pid 1."""
    chain, pid = [], os.getppid()
    while pid and pid > 1 and pid not in chain:
        chain.append(pid)
        pid = parent_of(pid)
    return chain


def controller() -> int | None:
    """The controller to die with: the pid in `CONTROLLER_ENV` when it is an ancestor of this
    process on Linux outside Slurm, else None (a trainer started by hand, a cluster job)."""
    named = os.environ.get(CONTROLLER_ENV, "")
    if not sys.platform.startswith("linux") or "SLURM_JOB_ID" in os.environ:
        return None
    if not named.isdigit() or int(named) not in ancestors():
        return None
    return int(named)


def _stop(why: str) -> None:
    log.warning("%s: stopping this job as on SIGTERM", why)
    os.kill(os.getpid(), signal.SIGTERM)


def _watch(pid: int) -> None:
    while pid in ancestors():
        time.sleep(POLL_SECONDS)
    _stop(f"the Snakemake that started this job (pid {pid}) is gone")


def tie_to_controller() -> int | None:
    """Stop this process (SIGTERM to itself) when its parent or its controller dies; the
    controller's pid, or None when there is none to tie to."""
    pid = controller()
    if pid is None:
        return None
    parent = os.getppid()
    libc = ctypes.CDLL(None, use_errno=True)
    libc.prctl(PR_SET_PDEATHSIG, signal.SIGTERM, 0, 0, 0)
    # The parent may have died before prctl took effect: then no signal will come.
    if os.getppid() != parent:
        _stop(f"the shell that started this job (pid {parent}) is gone")
    threading.Thread(target=_watch, args=(pid,), name="lifeline", daemon=True).start()
    return pid
