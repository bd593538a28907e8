"""Whether a finished run's files are whole: a damaged run is named, never summarised.

A finished run folder holds metrics.json, history.csv, model.pt and provenance.json. The
record names the sha256 of the other three as its job wrote them (`job.outputs`), so a
file cut short by a full disk, garbled or overwritten is refused by its bytes
(`provenance.check_one_job`). Records of format 3 name no sha256, and a file can be whole
yet hold nothing a run writes, so metrics.json and history.csv are parsed too: metrics.json
a UTF-8 JSON object with a run's status, epochs and seconds, history.csv a header and whole
rows of numbers ending in a line break. Every refusal is one `provenance.ProvenanceError`
naming the file and saying how to train the run again.

Three strengths: `check_run` (aggregation, `compare`, the tracking export) parses and
compares every sha256, model.pt's too where it is named; `check_whole` (the audit,
`reprogrid reproduce`) parses, model.pt read as weights; `check_finished` (`reprogrid
status`) looks only at what is cheap. Nothing here imports torch or pandas: `status`,
`compare` and the analysis env check runs with this module; a model.pt is read by
`train.checkpoint.check_weights`.
"""

from __future__ import annotations

import csv
import io
import json
import os
from pathlib import Path
from typing import Any

from reprogrid.plan import paths
from reprogrid.record import provenance

# How every provenance.json ends: the record's closing brace, on a line of its own.
RECORD_END = b"\n}\n"


def _text(path: str | Path) -> str:
    try:
        content = Path(path).read_bytes()
    except OSError as err:
        raise provenance.ProvenanceError(path, f"cannot be read: {err.strerror}") from None
    try:
        return content.decode("utf-8")
    except UnicodeDecodeError:
        raise provenance.damaged(path, "not UTF-8 text") from None


def read_metrics(path: str | Path) -> dict[str, Any]:
    """A run's metrics.json; `provenance.ProvenanceError` when it is no run's metrics."""
    text = _text(path)
    try:
        metrics = json.loads(text)
    except (ValueError, RecursionError) as err:
        raise provenance.damaged(path, f"not JSON: {err}") from None
    if not (
        isinstance(metrics, dict)
        and metrics.get("status") in ("ok", "diverged")
        and isinstance(metrics.get("epochs_run"), int)
        and isinstance(metrics.get("train_seconds"), int | float)
    ):
        raise provenance.damaged(
            path, "no run's metrics: JSON with status ok or diverged, epochs_run and train_seconds"
        )
    return metrics


def read_history(path: str | Path) -> tuple[tuple[str, ...], list[dict[str, float]]]:
    """history.csv's columns and rows, every value a float (exact: the file holds repr);
    `provenance.ProvenanceError` when a row is cut or a value is no number."""
    text = _text(path)
    if not text.endswith("\n"):
        raise provenance.damaged(path, "its last row is cut: the file ends without a line break")
    try:
        header, *rows = list(csv.reader(io.StringIO(text, newline=""))) or [[]]
    except csv.Error as err:
        raise provenance.damaged(path, f"not CSV: {err}") from None
    if not header:
        raise provenance.damaged(path, "its first line names no columns")
    table = []
    for number, row in enumerate(rows, start=2):
        if len(row) != len(header):
            raise provenance.damaged(
                path, f"line {number} has {len(row)} values, not the header's {len(header)}"
            )
        try:
            table.append(dict(zip(header, map(float, row), strict=True)))
        except ValueError:
            raise provenance.damaged(
                path, f"line {number} holds a value that is no number"
            ) from None
    return tuple(header), table


def check_whole(files: paths.RunFiles) -> tuple[provenance.Provenance, dict[str, Any]]:
    """The record and metrics of a finished run whose files parse: the record, metrics.json
    and history.csv (its model.pt is `train.checkpoint.check_weights`'s, which needs torch).
    No sha256 is compared: the audit and
    `reprogrid reproduce` exist to tell whether a run's stored bytes are those its record
    gives, so a whole file of other bytes is their verdict (`differs`), not damage."""
    record = provenance.read(files.provenance)
    metrics = read_metrics(files.metrics)
    read_history(files.history)
    return record, metrics


def check_finished(files: paths.RunFiles) -> dict[str, Any]:
    """The metrics of a finished run whose files are whole, checked as cheaply as a viewer
    of 10,000 runs needs (`reprogrid status`): metrics.json parses, history.csv ends in a
    line break with a row per epoch run, and provenance.json ends as a whole record does,
    with its closing brace on a line of its own (every other brace of the record is
    indented, so a record cut short cannot end so). No sha256 is compared and
    no record read: that took 5 times as long, and `check_run` does it where results are
    made."""
    metrics = read_metrics(files.metrics)
    try:
        history = Path(files.history).read_bytes()
    except OSError as err:
        raise provenance.ProvenanceError(files.history, f"cannot be read: {err.strerror}") from None
    if not history.endswith(b"\n"):
        raise provenance.damaged(
            files.history, "its last row is cut: the file ends without a line break"
        )
    rows = history.count(b"\n") - 1
    if rows != metrics["epochs_run"]:
        raise provenance.damaged(
            files.history,
            f"it has {rows} row(s), not one for each of the {metrics['epochs_run']} "
            "epoch(s) metrics.json says were run",
        )
    try:
        with open(files.provenance, "rb") as handle:
            handle.seek(0, os.SEEK_END)
            handle.seek(max(0, handle.tell() - len(RECORD_END)))
            end = handle.read()
    except OSError as err:
        raise provenance.ProvenanceError(
            files.provenance, f"cannot be read: {err.strerror}"
        ) from None
    if end != RECORD_END:
        raise provenance.damaged(files.provenance, "cut short: it does not end as a record does")
    return metrics


def check_run(files: paths.RunFiles) -> tuple[provenance.Provenance, dict[str, Any]]:
    """The record and metrics of a finished run whose files are whole and its job's: the
    record, metrics and history parse, the metrics, history and (when `files` names it)
    model have the sha256 the record names, and its train.log ends with that job's attempt."""
    record = provenance.read(files.provenance)
    metrics = read_metrics(files.metrics)
    read_history(files.history)
    outputs = [files.metrics, files.history, *([files.model] if files.model else [])]
    provenance.check_one_job(record, Path(files.provenance).parent, outputs)
    return record, metrics
