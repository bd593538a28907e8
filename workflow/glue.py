"""What only makes sense under Snakemake: the environment of rule jobs and the debug folders.

`workflow/rules/common.smk` imports this module; the package never does, so it stays
usable from a notebook or a plain script.
"""

from __future__ import annotations

import fcntl
import os
import shutil
from pathlib import Path
from typing import IO

from reprogrid.config.errors import ConfigError, shown
from reprogrid.config.resolve import DEBUG_EXPERIMENT
from reprogrid.plan import paths
from reprogrid.train import lifeline


def export_pythonpath(src: str) -> None:
    """Put `src` first on PYTHONPATH, for this process's children.

    Rule scripts, local or on a cluster node, then import the package from the checkout
    whose commit the provenance records, whatever environment runs them.
    """
    current = os.environ.get("PYTHONPATH", "")
    if src not in current.split(os.pathsep):
        os.environ["PYTHONPATH"] = os.pathsep.join(part for part in (src, current) if part)


def export_interpreter(python: str) -> None:
    """Name the Python that runs the train command, as $REPROGRID_PYTHON for child processes."""
    os.environ["REPROGRID_PYTHON"] = python


def export_controller() -> None:
    """Name this Snakemake process as $REPROGRID_CONTROLLER for the jobs it starts, so a
    local training job stops when this process is killed (`reprogrid.train.lifeline`)."""
    os.environ[lifeline.CONTROLLER_ENV] = str(os.getpid())


def export_container(image: str | None) -> None:
    """Name the image every rule runs in, as $REPROGRID_CONTAINER for the jobs (Apptainer
    passes the environment in), so a run's provenance records it; unset for no image."""
    if image:
        os.environ["REPROGRID_CONTAINER"] = image
    else:
        os.environ.pop("REPROGRID_CONTAINER", None)


def claim_debug_outputs(lock_file: str | Path) -> IO:
    """Claim the debug folders for this process: the returned file holds the claim open.

    The claim is an exclusive `flock` on `lock_file`, dropped by the kernel when the process
    ends, however it ends. While another process holds it, a debug run is at work in these
    folders, and this raises ConfigError without touching anything.
    """
    Path(lock_file).parent.mkdir(parents=True, exist_ok=True)
    handle = open(lock_file, "a")  # noqa: SIM115 - held open on purpose
    try:
        fcntl.flock(handle, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
        handle.close()
        raise ConfigError(
            "another debug run is running in this folder (it holds "
            f"{shown(str(lock_file))}); wait for it to end, since this one would first delete "
            f"its outputs under {paths.experiment_dir(DEBUG_EXPERIMENT)}/"
        ) from None
    return handle


def clear_debug_outputs() -> None:
    """Delete every output of earlier debug runs, so the next one starts from nothing.

    Call it only while holding `claim_debug_outputs`, so no running debug run loses files.
    """
    for folder in (
        paths.experiment_dir(DEBUG_EXPERIMENT),
        paths.report_dir(DEBUG_EXPERIMENT),
        str(Path(paths.log_file(DEBUG_EXPERIMENT, "any")).parent),
    ):
        shutil.rmtree(folder, ignore_errors=True)
