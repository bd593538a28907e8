"""Read the run folders of a grid into tables: one row per run, one row per run and epoch."""

from __future__ import annotations

from collections.abc import Iterable, Sequence

import pandas as pd

from reprogrid.plan import paths
from reprogrid.record import damage, provenance
from reprogrid.tasks.spec import Metrics

# What runs.csv takes from each run's record, after its metrics.json fields.
RECORD_FIELDS = ("threads", "device", "commit", "dirty", "slurm_job_id")


def metric_fields(metrics: Metrics) -> list[str]:
    """What runs.csv takes from each run's metrics.json: its status, every metric the task
    reports of the kept epoch, the epoch kept, the epochs run and the training seconds."""
    return ["status", *metrics.run_keys(), "best_epoch", "epochs_run", "train_seconds"]


def runs_table(
    run_files: Iterable[tuple[str, paths.RunFiles]], axes: Sequence[str], metrics: Metrics
) -> pd.DataFrame:
    """One row per run: its id, axis values, status, metrics, seconds and code version.

    A damaged run, or one whose files come from more than one job, is refused: the
    `provenance.ProvenanceError` of `damage.check_run` names its file.
    """
    fields = metric_fields(metrics)
    rows = []
    for run, files in run_files:
        record, reported = damage.check_run(files)
        rows.append(
            {
                "run": run,
                **record.axis_values(axes),
                **{key: reported.get(key) for key in fields},
                "threads": record.threads,
                "device": record.device,
                "commit": record.commit,
                "dirty": record.dirty,
                "slurm_job_id": record.slurm_job_id,
            }
        )
    return pd.DataFrame(rows, columns=["run", *axes, *fields, *RECORD_FIELDS])


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
