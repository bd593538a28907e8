"""The export job: a grid's finished runs sent to one tracker, after training, from their files.

Training never waits for it and never sees it: the job only reads run folders. A setting or
state that stops the export (an unreachable server, a broken run folder) is one `reprogrid:`
line in the job's log and a failed job; the runs stay as they are.
"""

from __future__ import annotations

import logging
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

from reprogrid import tracking
from reprogrid.record import atomic

log = logging.getLogger("reprogrid")


def track_job(
    *,
    tracker: str,
    experiment: str,
    run_dirs: Sequence[str],
    settings: Mapping[str, Any],
    axes: Sequence[str],
    output: str,
) -> int:
    """Export every run in `run_dirs` to `tracker` and write the export's record; exit status.

    `settings` is the resolved `tracking` config. Credentials come from the environment,
    with the working directory's `.env` under it.
    """
    try:
        if tracker not in tracking.enabled(settings):
            raise tracking.TrackingError(
                f"config key tracking.{tracker}.enabled is false; set it to true to export"
            )
        tracking.load_dotenv()
        runs = [tracking.load_run(folder, with_model=settings["log_model"]) for folder in run_dirs]
        if tracker == "mlflow":
            from reprogrid.tracking import mlflow_export as exporter
        else:
            from reprogrid.tracking import wandb_export as exporter
        record = exporter.export_runs(
            runs,
            experiment=experiment,
            settings=settings[tracker],
            axes=axes,
            with_model=settings["log_model"],
        )
    except tracking.TrackingError as err:
        log.error("reprogrid: %s", err)
        return 1
    atomic.write_json(Path(output), record)
    return 0
