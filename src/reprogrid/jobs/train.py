"""The training job: one run of the grid, with its provenance, written atomically."""

from __future__ import annotations

import argparse
import ast
import json
import logging
import sys
import time
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from reprogrid import atomic, fingerprint, paths, provenance
from reprogrid.logs import setup_logging

log = logging.getLogger("reprogrid")

# Exit status of a job stopped by SIGTERM after saving its checkpoint (128 + 15, as a shell says).
STOPPED_EXIT = 143

# The checkout this module runs from: its commit is the code that trains.
REPO = Path(__file__).resolve().parents[3]

# This module as the train rule runs it; its fingerprint covers everything it imports.
JOB = "reprogrid.jobs.train"


def code_state(repo_dir: str) -> dict[str, Any]:
    """The code as it is now: the checkout's git state and the job's code fingerprint."""
    return {**provenance.git_state(repo_dir), "fingerprint": fingerprint.of_modules(JOB)}


def train_job(
    *,
    run: str,
    params: Mapping[str, Any],
    experiment: str,
    split: Mapping[str, Any],
    prepared_path: str,
    checks_path: str,
    outputs: Mapping[str, str],
    threads: int,
    gpus: int,
    repo_dir: str,
    planned_code: str | None = None,
) -> int:
    """Train one run of the grid and write its outputs; the job's exit status.

    The code is looked at when the job starts and again when it ends: a change in between
    (another commit, an edit) is flagged in the provenance (`code.at_end`).
    A checkpoint resumes only if made with the same parameters, data and code.
    """
    # Imported here, once the command has set up the log, so a broken environment's
    # ImportError lands in the rule log with its traceback.
    from reprogrid import data, devices, training

    started = provenance.now()
    code = code_state(repo_dir)
    if planned_code is not None and code["fingerprint"] != planned_code:
        log.warning(
            "the code changed after planning: planned with code %s, running code %s; "
            "the next plan schedules this run again",
            planned_code,
            code["fingerprint"],
        )
    run_dir = Path(outputs["metrics"]).parent
    device, gpu_lock = devices.select_device(gpus)
    log.info("run %s on %s with %d thread(s)", run, device, threads)

    load_tick = time.perf_counter()
    prepared = data.load_prepared(prepared_path)
    log.info("data loaded in %.3f s", time.perf_counter() - load_tick)
    checks = json.loads(Path(checks_path).read_text())

    def report(row: Mapping[str, Any]) -> None:
        log.info(
            "epoch %d: train_loss %.4f val_acc %.4f test_acc %.4f (%.1f s)",
            row["epoch"],
            row["train_loss"],
            row["val_acc"],
            row["test_acc"],
            row["epoch_seconds"],
        )

    try:
        result = training.train_one_run(
            prepared,
            params,
            val_fraction=split["val_fraction"],
            split_seed=split["split_seed"],
            checkpoint_path=run_dir / paths.CHECKPOINT,
            threads=threads,
            device=device,
            on_epoch=report,
            data_sha256=checks["prepared_sha256"],
            code=code["fingerprint"],
        )
    except training.Stopped as stop:
        log.info("%s", stop)
        return STOPPED_EXIT

    at_end = code_state(repo_dir)
    record = provenance.build_record(
        run=run,
        experiment=experiment,
        params=params,
        split=split,
        checks=checks,
        threads=threads,
        gpus=gpus,
        device=device,
        code=code,
        code_at_end=at_end,
        started=started,
        resumed_from_epoch=result.resumed_from,
        model_parameters=result.parameters,
        target=outputs["metrics"],
    )
    if record.code.changed_during_run:
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
    patch = run_dir / paths.DIFF_PATCH
    if code["diff"]:
        atomic.write_text(patch, code["diff"])
    else:
        patch.unlink(missing_ok=True)
    record.write(outputs["provenance"])
    training.write_outputs(
        result,
        cfg=params,
        num_classes=prepared["num_classes"],
        model_path=outputs["model"],
        history_path=outputs["history"],
        metrics_path=outputs["metrics"],
    )
    (run_dir / paths.CHECKPOINT).unlink(missing_ok=True)
    log.info("run %s finished: %s", run, result.metrics)
    if gpu_lock is not None:
        gpu_lock.close()
    return 0


def main(argv: list[str] | None = None) -> int:
    """The train rule's command line: `python -m reprogrid.jobs.train --run ... --log ...`.

    A command rather than a `script:` because Snakemake reads a script's source once per
    job while planning, a third of the dry-run time of a 10,000-run grid
    (docs/benchmarks.md). Mappings arrive as Python literals, as Snakemake formats them.
    """
    parser = argparse.ArgumentParser(prog="python -m reprogrid.jobs.train")
    for name in ("run", "params", "experiment", "split", "data", "checks", "log"):
        parser.add_argument(f"--{name}", required=True)
    for name in ("metrics", "history", "model", "provenance"):
        parser.add_argument(f"--{name}", required=True)
    parser.add_argument("--threads", type=int, required=True)
    parser.add_argument("--gpus", type=int, default=0)
    parser.add_argument("--code", help="the code fingerprint the run was planned with")
    args = parser.parse_args(argv)
    setup_logging(args.log)
    return train_job(
        run=args.run,
        params=ast.literal_eval(args.params),
        experiment=args.experiment,
        split=ast.literal_eval(args.split),
        prepared_path=args.data,
        checks_path=args.checks,
        outputs={
            name: getattr(args, name) for name in ("metrics", "history", "model", "provenance")
        },
        threads=args.threads,
        gpus=args.gpus,
        repo_dir=str(REPO),
        planned_code=args.code,
    )


if __name__ == "__main__":
    sys.exit(main())
