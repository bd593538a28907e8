"""What a finished run writes: its model, history and metrics, as bytes, each file atomically."""

from __future__ import annotations

import csv
import io
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from reprogrid.record import atomic
from reprogrid.train import checkpoint
from reprogrid.train.training import RunResult


def history_csv(history: list[dict[str, Any]]) -> str:
    """The learning curve as CSV text, one row per epoch, the columns in the rows' order."""
    buffer = io.StringIO()
    columns = list(history[0]) if history else ["epoch"]
    writer = csv.DictWriter(buffer, fieldnames=columns, lineterminator="\n")
    writer.writeheader()
    for row in history:
        writer.writerow(
            {key: repr(row[key]) if isinstance(row[key], float) else row[key] for key in columns}
        )
    return buffer.getvalue()


def output_files(
    result: RunResult, *, cfg: Mapping[str, Any], described: Mapping[str, Any]
) -> dict[str, bytes]:
    """The run's declared outputs as the bytes they hold, by file name; the model file holds
    the arch, what the task's `describe` says of the data, and the weights."""
    model = {"arch": cfg["arch"], **described, "state_dict": result.weights}
    return {
        "model.pt": checkpoint.to_bytes(model),
        "history.csv": history_csv(result.history).encode("utf-8"),
        "metrics.json": atomic.json_text(result.metrics).encode("utf-8"),
    }


def write_outputs(
    files: Mapping[str, bytes],
    *,
    model_path: str | Path,
    history_path: str | Path,
    metrics_path: str | Path,
) -> None:
    """Write the run's declared outputs (`output_files`), each atomically, the metrics (its
    seal) last."""
    atomic.write_bytes(model_path, files["model.pt"])
    atomic.write_bytes(history_path, files["history.csv"])
    atomic.write_bytes(metrics_path, files["metrics.json"])
