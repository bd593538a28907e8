"""The audit jobs: retrain sampled runs from their records and compare them bit for bit."""

from __future__ import annotations

import html
import json
import logging
import shutil
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

from reprogrid.analysis import audit
from reprogrid.datasets import data
from reprogrid.plan import paths
from reprogrid.record import atomic, capture, damage, provenance
from reprogrid.record.logs import setup_logging
from reprogrid.tasks import spec as taskspec
from reprogrid.tasks.runtime import Task
from reprogrid.train import checkpoint, devices, training
from reprogrid.train import outputs as run_outputs

log = logging.getLogger("reprogrid")


def _notes(
    record: provenance.Provenance, prepared_sha: str, commit: str | None, device: str
) -> str:
    """What differs between the run's record and the audit's conditions, in words."""
    notes = []
    if record.device.split(":")[0] != device.split(":")[0]:
        notes.append(f"run trained on {record.device}, audited on {device}")
    if record.data.prepared_sha256 != prepared_sha:
        notes.append("the prepared data differ from the run's")
    if record.commit != commit:
        notes.append(f"run made at commit {str(record.commit)[:12]}, audited at {str(commit)[:12]}")
    if record.dirty:
        notes.append("run made on a dirty tree")
    return "; ".join(notes)


def retrain(
    record: provenance.Provenance,
    task: Task,
    prepared: Mapping[str, Any],
    folder: Path,
    device: str,
) -> paths.RunFiles:
    """Train a run again from its provenance record into `folder`, from nothing; its files."""
    cfg = record.config
    shutil.rmtree(folder, ignore_errors=True)
    folder.mkdir(parents=True)
    result = training.train_one_run(
        task,
        prepared,
        cfg.train,
        val_fraction=cfg.data.val_fraction,
        split_seed=cfg.data.split_seed,
        checkpoint_path=folder / paths.CHECKPOINT,
        threads=record.threads,
        device=device,
    )
    files = paths.files_in(folder)
    run_outputs.write_outputs(
        run_outputs.output_files(result, cfg=cfg.train, described=task.describe(prepared)),
        model_path=files.model,
        history_path=files.history,
        metrics_path=files.metrics,
    )
    (folder / paths.CHECKPOINT).unlink(missing_ok=True)
    return files


def audit_html(rows: Sequence[Mapping[str, Any]]) -> str:
    """The audit table as a report page, with the verdict first."""
    import pandas as pd

    from reprogrid.analysis import reporting

    failed = [row["run"] for row in rows if not row["passed"]]
    if failed:
        verdict = (
            f"<p class='notmet'>{len(failed)} of {len(rows)} audited run(s) did not reproduce "
            f"bit for bit: {html.escape(', '.join(failed))}.</p>"
        )
    else:
        verdict = (
            f"<p class='met'>All {len(rows)} audited run(s) reproduced bit for bit: "
            "identical weights files, identical metrics and learning curves (timing aside).</p>"
        )
    shown = pd.DataFrame(rows)
    for column in ("stored_sha256", "retrained_sha256"):
        shown[column] = shown[column].str[:16]
    return reporting.page(
        "Audit: stored runs retrained from their records", verdict + reporting.html_table(shown)
    )


def audit_job(
    *,
    task_name: str,
    stored: Sequence[tuple[str, paths.RunFiles]],
    checks_path: str,
    prepared_path: str,
    scratch: str,
    outputs: Mapping[str, str],
    log_path: str,
    gpus: int,
    repo_dir: str,
) -> int:
    """Retrain each stored run in `scratch` and write the pass/fail table (CSV and HTML).

    `stored` pairs each audited run id with its files, as the rule declares them. A stored
    run whose files do not parse (`damage.check_whole`, `checkpoint.check_weights`: a
    model.pt cut short, say) or prepared data that are not ours end the job in one line
    before anything trains: 1.
    """
    setup_logging(log_path)
    task = Task.open(taskspec.read(task_name))
    try:
        records = {run: damage.check_whole(files)[0] for run, files in stored}
        for _, files in stored:
            checkpoint.check_weights(files.model)
        prepared = data.open_prepared(task, prepared_path)
    except (provenance.ProvenanceError, data.DataError, taskspec.TaskError) as err:
        log.error("reprogrid: %s", err)
        return 1
    device, gpu_lock = devices.select_device(gpus)
    prepared_sha = json.loads(Path(checks_path).read_text())["prepared_sha256"]
    commit = capture.git_state(repo_dir)["commit"]
    rows = []
    for run, files in stored:
        record = records[run]
        folder = Path(scratch) / run
        log.info("auditing %s: retraining it in %s", run, folder)
        retrained = retrain(record, task, prepared, folder, device)
        row = audit.verdict(run, files, retrained, _notes(record, prepared_sha, commit, device))
        log.info("%s: %s", run, "reproduced bit for bit" if row["passed"] else "DIFFERS")
        rows.append(row)
    atomic.write_text(outputs["table"], audit.table_csv(rows))
    atomic.write_text(outputs["html"], audit_html(rows))
    if gpu_lock is not None:
        gpu_lock.close()
    return 0
