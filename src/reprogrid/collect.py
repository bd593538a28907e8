"""Read the run folders of a grid into tables: one row per run, one row per run and epoch."""

from __future__ import annotations

import json
from collections.abc import Iterable, Sequence
from pathlib import Path

import pandas as pd

from reprogrid import paths, provenance, stats

METRIC_FIELDS = ("status", *stats.METRICS, "best_epoch", "epochs_run", "train_seconds")
RUN_COLUMNS = (
    *METRIC_FIELDS,
    "threads",
    "device",
    "commit",
    "dirty",
    "slurm_job_id",
)


def runs_table(
    run_files: Iterable[tuple[str, paths.RunFiles]], axes: Sequence[str]
) -> pd.DataFrame:
    """One row per run: its id, axis values, status, metrics, seconds and code version."""
    rows = []
    for run, files in run_files:
        metrics = json.loads(Path(files.metrics).read_text())
        record = provenance.read(files.provenance)
        rows.append(
            {
                "run": run,
                **record.axis_values(axes),
                **{key: metrics.get(key) for key in METRIC_FIELDS},
                "threads": record.threads,
                "device": record.device,
                "commit": record.commit,
                "dirty": record.dirty,
                "slurm_job_id": record.slurm_job_id,
            }
        )
    return pd.DataFrame(rows, columns=["run", *axes, *RUN_COLUMNS])


def histories_table(
    run_files: Iterable[tuple[str, paths.RunFiles]], axes: Sequence[str]
) -> pd.DataFrame:
    """Every run's learning curve stacked, labelled by run and axis values."""
    frames = []
    for run, files in run_files:
        record = provenance.read(files.provenance)
        # The curve's own `lr` column (the rate in force each epoch) would clash with the axis.
        history = pd.read_csv(files.history).rename(columns={"lr": "epoch_lr"})
        for axis, value in reversed(list(record.axis_values(axes).items())):
            history.insert(0, axis, value)
        history.insert(0, "run", run)
        frames.append(history)
    return pd.concat(frames, ignore_index=True)
