"""The audit's verdicts: which runs to retrain, and whether a retrained run matches its record.

A run passes when its retrained weights file is byte-identical to the stored one and its
metrics and learning curve are identical except for the fields that measure time. This
module is imported while Snakemake plans (to choose the sample), so it imports nothing heavy.
"""

from __future__ import annotations

import csv
import hashlib
import io
import json
import logging
import random
from collections.abc import Iterable, Mapping, Sequence
from pathlib import Path
from typing import Any

from reprogrid.plan.paths import RunFiles
from reprogrid.record import atomic

log = logging.getLogger("reprogrid")

# Fields that measure how long something took: they differ between any two executions.
TIMING_FIELDS = ("train_seconds", "epoch_seconds")

# The sample is drawn with its own fixed seed, so the same grid always audits the same runs.
SAMPLE_SEED = 0

COLUMNS = (
    "run",
    "weights_identical",
    "metrics_identical",
    "passed",
    "stored_sha256",
    "retrained_sha256",
    "note",
)


def sample_runs(runs: Iterable[str], count: int) -> list[str]:
    """`count` runs of the grid (all of them if it has fewer), the same ones every time."""
    ordered = sorted(runs)
    chosen = random.Random(SAMPLE_SEED).sample(ordered, min(count, len(ordered)))
    return sorted(chosen)


def file_sha256(path: str | Path) -> str:
    """The sha256 of a file's bytes."""
    return hashlib.sha256(Path(path).read_bytes()).hexdigest()


def _without_timing(record: Mapping[str, Any]) -> dict[str, Any]:
    return {key: value for key, value in record.items() if key not in TIMING_FIELDS}


def _history_rows(text: str) -> list[dict[str, Any]]:
    return [_without_timing(row) for row in csv.DictReader(io.StringIO(text))]


def same_results(stored: RunFiles, retrained: RunFiles) -> bool:
    """True when the metrics and learning curves of two runs agree, timing aside.

    Values are compared as written (floats as their exact repr), so equal means bit for bit.
    """
    metrics = [json.loads(Path(files.metrics).read_text()) for files in (stored, retrained)]
    history = [_history_rows(Path(files.history).read_text()) for files in (stored, retrained)]
    return _without_timing(metrics[0]) == _without_timing(metrics[1]) and history[0] == history[1]


def verdict(run: str, stored: RunFiles, retrained: RunFiles, note: str = "") -> dict:
    """One row of the audit table: does the run `retrained` match the `stored` one?"""
    stored_sha = file_sha256(stored.model)
    retrained_sha = file_sha256(retrained.model)
    weights = stored_sha == retrained_sha
    metrics = same_results(stored, retrained)
    return {
        "run": run,
        "weights_identical": weights,
        "metrics_identical": metrics,
        "passed": weights and metrics,
        "stored_sha256": stored_sha,
        "retrained_sha256": retrained_sha,
        "note": note,
    }


def table_csv(rows: Sequence[Mapping[str, Any]]) -> str:
    """The audit table as CSV text, one row per audited run."""
    buffer = io.StringIO()
    writer = csv.DictWriter(buffer, fieldnames=COLUMNS, lineterminator="\n")
    writer.writeheader()
    writer.writerows(rows)
    return buffer.getvalue()


def failed_runs(table_path: str | Path) -> list[str]:
    """The runs an audit table marks as not reproduced."""
    with open(table_path, newline="", encoding="utf-8") as handle:
        return [row["run"] for row in csv.DictReader(handle) if row["passed"] != "True"]


def failure_message(failed: Sequence[str], table_path: str | Path) -> str:
    """The one line that ends a failed audit, naming every run that did not reproduce."""
    return (
        f"audit failed: {len(failed)} run(s) did not reproduce bit for bit: "
        f"{', '.join(failed)}; see {table_path}"
    )


def conclude(*, table: str, html_page: str, passed: str) -> int:
    """End the audit: 0 and a `passed` stamp when every run reproduced, else 1 naming them."""
    failed = failed_runs(table)
    if failed:
        log.error("reprogrid: %s", failure_message(failed, html_page))
        return 1
    atomic.write_text(passed, f"every audited run in {table} reproduced bit for bit\n")
    return 0
