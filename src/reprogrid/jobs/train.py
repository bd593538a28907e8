"""The training job: one run of the grid, with its provenance, written atomically."""

from __future__ import annotations

import argparse
import json
import logging
import os
import secrets
import sys
import time
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

from reprogrid.plan import fingerprint, paths
from reprogrid.record import atomic, capture, logs, provenance
from reprogrid.tasks import spec as taskspec
from reprogrid.train import claim, eager, lifeline

if TYPE_CHECKING:
    from reprogrid.tasks.runtime import Task
    from reprogrid.train.training import RunResult

log = logging.getLogger("reprogrid")

# Exit status of a job stopped by SIGTERM after saving its checkpoint (128 + 15, as a shell says).
STOPPED_EXIT = 143
# Exit status of a job refused its run because another job holds it.
CLAIMED_EXIT = 1
# How long a job waits for the run's holder to end before refusing: a job whose Snakemake
# was just killed needs a moment to save its checkpoint (`lifeline.POLL_SECONDS`, a batch).
CLAIM_WAIT_SECONDS = 5.0

# The checkout this module runs from: its commit is the code that trains.
REPO = Path(__file__).resolve().parents[3]

# This module as the train rule runs it; its fingerprint covers everything it imports.
JOB = "reprogrid.jobs.train"


def code_state(repo_dir: str, task: taskspec.TaskSpec) -> dict[str, Any]:
    """The code as it is now: the checkout's git state and the fingerprint of the job and
    its task (`fingerprint.of_job`)."""
    return {
        **capture.git_state(repo_dir),
        "fingerprint": fingerprint.of_job(JOB, task.path),
    }


@dataclass(frozen=True)
class TrainJob:
    """What the train rule hands its job: the run, its parameters and its files."""

    run: str
    task: str
    params: Mapping[str, Any]
    experiment: str
    split: Mapping[str, Any]
    prepared_path: str
    checks_path: str
    outputs: Mapping[str, str]
    threads: int
    gpus: int
    repo_dir: str
    # DataLoader workers of a task whose `load` returns Datasets (resources.workers).
    workers: int = 0
    planned_code: str | None = None
    # A rung of a search: train to this epoch only and write `outputs["rung"]`.
    until: int | None = None
    # This job's id: its train.log attempt line, its checkpoints and the record name it.
    id: str = field(default_factory=lambda: secrets.token_hex(6))

    @property
    def run_dir(self) -> Path:
        if self.until is not None:
            return Path(self.outputs["rung"]).parent.parent
        return Path(self.outputs["metrics"]).parent


class EpochLog:
    """The job's log line per epoch trained: epoch k of N, the training loss and the
    headline metric on both splits, its wall seconds (evaluation and checkpoint included)
    and the run's ETA at this attempt's pace."""

    def __init__(self, epochs: int, metrics: taskspec.Metrics) -> None:
        self.epochs = epochs
        self.columns = [metrics.column(split) for split in taskspec.SPLITS]
        self.started = self.last = time.perf_counter()
        self.trained = 0

    def __call__(self, row: Mapping[str, Any]) -> None:
        now = time.perf_counter()
        seconds, self.last = now - self.last, now
        self.trained += 1
        left = self.epochs - row["epoch"]
        log.info(
            logs.EPOCH_LINE,
            row["epoch"],
            self.epochs,
            row["train_loss"],
            " ".join(f"{column} {row[column]:.4f}" for column in self.columns),
            seconds,
            logs.duration((now - self.started) / self.trained * left),
        )


def code_at_start(
    repo_dir: str, task: taskspec.TaskSpec, planned_code: str | None
) -> dict[str, Any]:
    """The code as the job starts, warning when it is not the code the run was planned with."""
    code = code_state(repo_dir, task)
    if planned_code is not None and code["fingerprint"] != planned_code:
        log.warning(
            "the code changed after planning: planned with code %s, running code %s; "
            "the next plan schedules this run again",
            planned_code,
            code["fingerprint"],
        )
    return code


def code_at_end(code: Mapping[str, Any], repo_dir: str, task: taskspec.TaskSpec) -> dict[str, Any]:
    """The code as the job ends; a change since `code` is warned in the log (and flagged in
    the record, `code.at_end`)."""
    at_end = code_state(repo_dir, task)
    if not (capture.same_code(code, at_end) and code["fingerprint"] == at_end["fingerprint"]):
        log.warning(
            "the code changed while this run trained: commit %s (dirty: %s, code %s) at the "
            "start, commit %s (dirty: %s, code %s) at the end; the record names the start's",
            code["commit"],
            code["dirty"],
            code["fingerprint"],
            at_end["commit"],
            at_end["dirty"],
            at_end["fingerprint"],
        )
    return at_end


def write_patch(patch: Path, diff: str) -> None:
    """Keep the uncommitted diff the run was made with next to it; none when there is none."""
    if diff:
        atomic.write_text(patch, diff)
    else:
        patch.unlink(missing_ok=True)


def write_run(job: TrainJob, files: dict[str, bytes], record: provenance.Provenance) -> None:
    """Write the run's provenance and outputs (`files`, whose sha256 the record names; the
    metrics, its seal, last); drop its checkpoint."""
    from reprogrid.train import outputs as run_outputs

    record.write(job.outputs["provenance"])
    run_outputs.write_outputs(
        files,
        model_path=job.outputs["model"],
        history_path=job.outputs["history"],
        metrics_path=job.outputs["metrics"],
    )
    (job.run_dir / paths.CHECKPOINT).unlink(missing_ok=True)


def write_rung(
    job: TrainJob, result: RunResult, checks: Mapping[str, Any], code: str, task: Task
) -> None:
    """Write what the run reached at its rung: the metrics it would report had it stopped
    here, its curve so far and its training seconds; the checkpoint stays for the next rung."""
    from reprogrid.plan import halving

    until = job.until
    atomic.write_json(
        job.outputs["rung"],
        {
            "run": job.run,
            "epochs": until,
            "metrics": {
                **halving.rung_metrics(
                    result.history,
                    until,
                    job.params["select_metric"],
                    result.metrics["status"],
                    task.metrics,
                ),
                "train_seconds": result.metrics["train_seconds"],
            },
            "history": result.history[:until],
            "resumed_from_epoch": result.resumed_from,
            "data_sha256": checks["prepared_sha256"],
            "code": code,
        },
    )


def train_job(job: TrainJob) -> int:
    """Train one run of the grid and write its outputs; the job's exit status.

    The code is looked at when the job starts and again when it ends: a change in between
    (another commit, an edit) is flagged in the provenance (`code.at_end`).
    A checkpoint resumes only if made with the same parameters, data and code.
    """
    # Imported here, once the command has set up the log, so a broken environment's
    # ImportError lands in the rule log with its traceback.
    from reprogrid.train import devices

    started = capture.now()
    spec = taskspec.read(job.task)
    code = code_at_start(job.repo_dir, spec, job.planned_code)
    device, gpu_lock = devices.select_device(job.gpus)
    try:
        return _train_on(job, spec, device, code, started)
    finally:
        if gpu_lock is not None:
            gpu_lock.close()


def _train_on(
    job: TrainJob, spec: taskspec.TaskSpec, device: str, code: Mapping[str, Any], started: str
) -> int:
    """`train_job` on `device`, once it is held."""
    from reprogrid.datasets import data
    from reprogrid.tasks.runtime import Task
    from reprogrid.train import training

    log.info(logs.ATTEMPT_LINE, job.id, job.run, device, job.threads)

    task = Task.open(spec)
    load_tick = time.perf_counter()
    try:
        prepared = data.open_prepared(task, job.prepared_path)
    except (data.DataError, taskspec.TaskError) as error:
        log.error("reprogrid: %s", error)
        return 1
    log.info("data loaded in %.3f s", time.perf_counter() - load_tick)
    checks = json.loads(Path(job.checks_path).read_text())
    try:
        result = training.train_one_run(
            task,
            prepared,
            job.params,
            val_fraction=job.split["val_fraction"],
            split_seed=job.split["split_seed"],
            checkpoint_path=job.run_dir / paths.CHECKPOINT,
            threads=job.threads,
            device=device,
            on_epoch=EpochLog(job.params["epochs"], task.metrics),
            data_sha256=checks["prepared_sha256"],
            code=code["fingerprint"],
            until=job.until,
            job=job.id,
            workers=job.workers,
        )
    except training.Stopped as stop:
        log.info("%s", stop)
        return STOPPED_EXIT
    except taskspec.TaskError as error:
        log.error("reprogrid: %s", error)
        return 1
    if job.until is not None:
        write_rung(job, result, checks, code["fingerprint"], task)
        log.info("run %s reached epoch %d: %s", job.run, job.until, result.metrics["status"])
        return 0

    land_run(job, spec, task.describe(prepared), result, checks, code, device, started)
    log.info("run %s finished: %s", job.run, result.metrics)
    return 0


def land_run(
    job: TrainJob,
    spec: taskspec.TaskSpec,
    described: Mapping[str, Any],
    result: RunResult,
    checks: Mapping[str, Any],
    code: Mapping[str, Any],
    device: str,
    started: str,
) -> None:
    """Write a finished run: its uncommitted diff, its record (naming this job and the
    sha256 of each output) and its outputs."""
    from reprogrid.train import devices
    from reprogrid.train import outputs as run_outputs

    at_end = code_at_end(code, job.repo_dir, spec)
    write_patch(job.run_dir / paths.DIFF_PATCH, code["diff"])
    files = run_outputs.output_files(result, cfg=job.params, described=described)
    record = provenance.build_record(
        run=job.run,
        experiment=job.experiment,
        params=job.params,
        split=job.split,
        checks=checks,
        threads=job.threads,
        gpus=job.gpus,
        machine=devices.describe(device),
        code=code,
        code_at_end=at_end,
        task=provenance.task_record(spec.name, spec.path, fingerprint.of_task(spec)),
        started=started,
        resumed_from_epoch=result.resumed_from,
        model_parameters=result.parameters,
        target=job.outputs["metrics"],
        job_id=job.id,
        outputs=files,
    )
    write_run(job, files, record)


def main(argv: list[str] | None = None) -> int:
    """The train rule's command line: `python -m reprogrid.jobs.train --run ... --log ...`.

    A command rather than a `script:` because Snakemake reads a script's source once per
    job while planning, a third of the dry-run time of a 10,000-run grid
    (docs/benchmarks.md). Mappings (`--params`, `--split`) arrive as JSON.

    The job claims its run folder first (`reprogrid.train.claim`) and holds it to the end; while
    another job holds it, this one says so in one line and exits with `CLAIMED_EXIT`.
    Started by a local Snakemake, it stops when that Snakemake dies (`reprogrid.train.lifeline`).
    """
    parser = argparse.ArgumentParser(prog="python -m reprogrid.jobs.train")
    for name in ("run", "task", "params", "experiment", "split", "data", "checks", "log"):
        parser.add_argument(f"--{name}", required=True)
    for name in ("metrics", "history", "model", "provenance"):
        parser.add_argument(f"--{name}")
    parser.add_argument("--until", type=int, help="a rung: train to this epoch only")
    parser.add_argument("--rung", help="where a rung writes what the run reached")
    parser.add_argument("--threads", type=int, required=True)
    parser.add_argument("--gpus", type=int, default=0)
    parser.add_argument("--workers", type=int, default=0, help="DataLoader workers (Datasets)")
    parser.add_argument("--code", help="the code fingerprint the run was planned with")
    args = parser.parse_args(argv)
    job = TrainJob(
        run=args.run,
        task=args.task,
        params=json.loads(args.params),
        experiment=args.experiment,
        split=json.loads(args.split),
        prepared_path=args.data,
        checks_path=args.checks,
        outputs={
            name: getattr(args, name)
            for name in ("metrics", "history", "model", "provenance", "rung")
            if getattr(args, name) is not None
        },
        threads=args.threads,
        gpus=args.gpus,
        workers=args.workers,
        repo_dir=str(REPO),
        planned_code=args.code,
        until=args.until,
    )
    run_claim = claim.RunClaim(job.run, job.run_dir, claim.this_process(job.id, capture.now()))
    try:
        run_claim.take(wait=CLAIM_WAIT_SECONDS)
    except claim.Claimed as refusal:
        # Before the log is opened: a refused job adds nothing to the folder the holder writes.
        print(f"reprogrid: {refusal}", file=sys.stderr)
        return CLAIMED_EXIT
    with run_claim:
        logs.setup_logging(args.log)
        lifeline.tie_to_controller()
        eager.skip_compiler()
        return train_job(job)


def leave(status: int) -> None:
    """End the process with `status` once its log and output streams are flushed, without
    Python's teardown: unloading torch takes 0.3 to 0.5 s a job, and every output is
    written and closed by now."""
    logging.shutdown()
    sys.stdout.flush()
    sys.stderr.flush()
    os._exit(status)


if __name__ == "__main__":
    leave(main())
