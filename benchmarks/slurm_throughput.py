"""Submission throughput on Slurm: the grid as job arrays against one job per run, one run.

    .venv/bin/python benchmarks/slurm_throughput.py --runs 500 --json throughput.json

Starts the one-node test cluster of tests/slurm_cluster.py (as root, like the Slurm tests),
writes a small generated IDX data set and a grid of `--runs` tiny runs (one `mlp` a seed,
one epoch of one batch: `train.max_batches: 1`), and trains it on that cluster once for each
mode, each in a fresh copy of the project with its data already prepared:

- `per-run`: `snakemake --profile profiles/slurm --until train ...`, one Slurm job a run;
- `arrays`: the same with `--profile profiles/slurm/arrays` on top, the runs as array tasks.

Both add the site values the Slurm tests add (tests/workflow/test_slurm.py `site_arguments`: no
account, the test partition, `train:gpu=0`, env-modules in place of conda, squeue for job
states, first status check after 5 s); everything else is the profiles' own. From the
controller's log (slurmctld.log, millisecond timestamps) each mode reports the time from
its first submission to its last job's end, jobs per minute over that span, and the number
of submissions (sbatch calls), and beside it the wall clock of the Snakemake call. With
`--rounds` above 1 the modes alternate. The runs are tiny, so this measures the scheduler,
the plugin and each job's start and end, not training.
"""

from __future__ import annotations

import argparse
import json
import os
import re
import signal
import statistics
import subprocess
import sys
import tempfile
import time
from datetime import datetime
from pathlib import Path
from typing import Any

import yaml

REPO = Path(__file__).resolve().parents[1]
BIN = Path(sys.executable).parent
sys.path[:0] = [str(REPO / "src"), str(REPO / "tests"), str(REPO / "tests/workflow")]

from test_slurm import site_arguments  # noqa: E402

import idxdata  # noqa: E402
from conftest import copy_project  # noqa: E402
from slurm_cluster import Cluster, start_cluster, unavailable_reason  # noqa: E402

MODES = {
    "per-run": ["--profile", "profiles/slurm"],
    "arrays": ["--profile", "profiles/slurm", "--profile", "profiles/slurm/arrays"],
}
LOG_LINE = re.compile(r"^\[(?P<time>[0-9T:.-]+)\] (?P<message>.*)$")
SUBMITTED = re.compile(r"_slurm_rpc_submit_batch_job: JobId=(\d+) ")
# The main scheduler ("sched: Allocate JobId=") and the backfill scheduler ("Started JobId=")
# both start jobs.
STARTED = re.compile(r"(?:Allocate|Started) JobId=(\S+) ")
CPUS = re.compile(r"#CPUs=(\d+)")
ENDED = re.compile(r"_job_complete: JobId=(\S+) done$")


def grid_config(raw_dir: Path, runs: int) -> dict[str, Any]:
    """`runs` runs of one batch each: seeds 0 .. runs-1 of one architecture and learning rate."""
    return {
        "experiment": "throughput",
        "data": {"raw_dir": str(raw_dir), "verify": False},
        "grid": {"seed": list(range(runs)), "arch": ["mlp"], "lr": [0.003]},
        "train": {"epochs": 1, "batch_size": 64, "max_batches": 1},
        "analysis": {"criterion": None},
    }


def snakemake(cluster: Cluster, folder: Path, *args: str) -> float:
    """Run Snakemake in `folder` against `cluster`; its wall-clock seconds.

    sbatch exports this environment to each job, so the job's `python` is this one's.
    """
    env = {**cluster.env, "PATH": os.pathsep.join([str(BIN), cluster.path])}
    with (folder / "snakemake.log").open("a") as log:
        tick = time.perf_counter()
        result = subprocess.run(
            [sys.executable, "-m", "snakemake", *args],
            cwd=folder,
            env=env,
            stdout=log,
            stderr=subprocess.STDOUT,
        )
        wall = time.perf_counter() - tick
    if result.returncode != 0:
        tail = (folder / "snakemake.log").read_text()[-4000:]
        sys.exit(f"snakemake {' '.join(args)} failed in {folder}:\n{tail}\n{cluster.logs()}")
    return wall


def controller_events(log_text: str) -> dict[str, Any]:
    """Submissions, job starts and job ends in a stretch of slurmctld.log, summed up.

    Jobs are named as the controller names them (`12`, or `11_3(14)` for an array task).
    """
    submitted, started, ended, cpus = [], {}, {}, set()
    for line in log_text.splitlines():
        match = LOG_LINE.match(line)
        if not match:
            continue
        stamp = datetime.fromisoformat(match["time"]).timestamp()
        message = match["message"]
        if SUBMITTED.search(message):
            submitted.append(stamp)
        elif found := STARTED.search(message):
            started[found[1]] = stamp
            cpus.update(CPUS.findall(message))
        elif found := ENDED.search(message):
            ended[found[1]] = stamp
    if not submitted or not started or not ended:
        sys.exit(f"no submissions, starts or ends in slurmctld.log:\n{log_text[-3000:]}")
    starts, ends = sorted(started.values()), sorted(ended.values())
    # How long the node waited for its next job: each job end to the first start after it.
    waits = [min(s for s in starts if s >= end) - end for end in ends if end < starts[-1]]
    return {
        "submissions": len(submitted),
        "jobs_ended": len(ended),
        "cpus_per_job": sorted(int(count) for count in cpus),
        "submit_span": max(submitted) - min(submitted),
        "first_submission_to_last_end": ends[-1] - min(submitted),
        "jobs_started": len(started),
        "median_job_seconds": statistics.median(
            ended[job] - started[job] for job in ended if job in started
        ),
        "median_wait_after_an_end": statistics.median(waits) if waits else None,
    }


def one_mode(cluster: Cluster, scratch: Path, raw_dir: Path, mode: str, runs: int, round_: int):
    """Train the grid once in `mode` in a fresh copy; what Slurm and Snakemake say it took."""
    folder = copy_project(scratch / f"{mode}-{round_}")
    config = folder / "throughput.yaml"
    config.write_text(yaml.safe_dump(grid_config(raw_dir, runs)))
    common = ["--configfile", str(config), *site_arguments(cluster.partition)]
    snakemake(cluster, folder, *MODES[mode], *common, "--until", "prepare_data")
    log = cluster.folder / "slurmctld.log"
    offset = log.stat().st_size
    load = os.getloadavg()[0]
    wall = snakemake(cluster, folder, *MODES[mode], *common, "--until", "train")
    # The controller writes a job's end before Snakemake can see it; the flush is not synchronous.
    time.sleep(1)
    with log.open("rb") as handle:
        handle.seek(offset)
        events = controller_events(handle.read().decode(errors="replace"))
    trained = len(list((folder / "results/throughput/runs").glob("*/*/*/metrics.json")))
    if trained != runs:
        sys.exit(f"{mode}: {trained} of {runs} runs have metrics.json in {folder}")
    span = events["first_submission_to_last_end"]
    return {
        "mode": mode,
        "round": round_,
        "runs": runs,
        "load_before": load,
        "load_after": os.getloadavg()[0],
        **events,
        "jobs_per_minute": runs / span * 60,
        "snakemake_wall": wall,
    }


def table(results: list[dict[str, Any]]) -> str:
    rows = [
        "| mode | round | load before / after | sbatch calls | jobs ended | first submission "
        "to last end | jobs/min | median job | median wait after a job's end | Snakemake wall |",
        "|---|---|---|---|---|---|---|---|---|---|",
    ]
    for r in results:
        rows.append(
            f"| {r['mode']} | {r['round']} | {r['load_before']:.1f} / {r['load_after']:.1f} "
            f"| {r['submissions']} | {r['jobs_ended']} | {r['first_submission_to_last_end']:.1f} s "
            f"| {r['jobs_per_minute']:.1f} | {r['median_job_seconds']:.2f} s "
            f"| {r['median_wait_after_an_end'] or 0:.2f} s | {r['snakemake_wall']:.1f} s |"
        )
    return "\n".join(rows)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--runs", type=int, default=500, help="runs in the grid")
    parser.add_argument("--rounds", type=int, default=1, help="times each mode trains the grid")
    parser.add_argument("--modes", nargs="+", choices=list(MODES), default=list(MODES))
    parser.add_argument("--json", type=Path, help="also write the results here")
    args = parser.parse_args()
    if reason := unavailable_reason():
        sys.exit(reason)

    # Handlers, not defaults: a shell starts background jobs with SIGINT ignored, and SIGTERM
    # would end the script without stopping the cluster.
    for stop_signal in (signal.SIGINT, signal.SIGTERM):
        signal.signal(stop_signal, lambda *_: sys.exit(1))
    results: dict[str, Any] = {"started": time.strftime("%Y-%m-%d %H:%M:%S"), "modes": []}
    with tempfile.TemporaryDirectory(prefix="reprogrid-throughput-") as temporary:
        scratch = Path(temporary)
        raw_dir = idxdata.write_dataset(scratch / "raw", n_train=1200, n_test=300)
        cluster = start_cluster(scratch / "slurm")
        try:
            for round_ in range(1, args.rounds + 1):
                for mode in args.modes:
                    measured = one_mode(cluster, scratch, raw_dir, mode, args.runs, round_)
                    results["modes"].append(measured)
                    print(json.dumps(measured), file=sys.stderr, flush=True)
        finally:
            cluster.stop()
    results["finished"] = time.strftime("%Y-%m-%d %H:%M:%S")
    spans = {
        mode: min(r["first_submission_to_last_end"] for r in results["modes"] if r["mode"] == mode)
        for mode in args.modes
    }
    if set(spans) == set(MODES):
        results["per_run_over_arrays"] = spans["per-run"] / spans["arrays"]
    print(table(results["modes"]))
    if "per_run_over_arrays" in results:
        print(f"one job per run takes {results['per_run_over_arrays']:.2f}x the time of arrays")
    if args.json:
        args.json.write_text(json.dumps(results, indent=1))


if __name__ == "__main__":
    main()
