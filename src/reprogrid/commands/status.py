"""`reprogrid status`: where every run of a grid stands, read from files alone.

The grid is the one Snakemake would build: the same config layers (`config/config.yaml`,
`config/experiments/<name>.yaml`, `--configfile`, `--config`), resolved by
`reprogrid.config.resolve` and expanded by `reprogrid.plan.grid`. Each run's state comes from
its folder and from Snakemake's own markers, never from Snakemake (whose lock this never
takes), so it reads the same for local and Slurm runs:

- done / diverged: the run's metrics.json says so;
- damaged: the run has its metrics.json, but one of its files is cut short or garbled
  (`damage.check_finished`; the note names the file): delete the run folder and run
  Snakemake again to retrain it;
- running: Snakemake marked the run's outputs incomplete (`.snakemake/incomplete/`, the
  marker a job gets when it starts and loses when it ends) and its train.log moved since;
- queued: marked, but its train.log has not moved since (a Slurm job waiting in the queue);
- stalled: marked, but its train.log has been silent for longer than a run can be
  (the Snakemake that started it was killed: run Snakemake again, the run resumes);
- failed: no marker, and the last attempt in train.log ends in a traceback (its first
  line is shown) or ends without a word (the job was killed);
- stopped: no marker, and the last attempt stopped on a signal with a checkpoint saved;
- dropped: a search by successive halving stopped the run's setting at a rung (it trained
  that rung's epochs and is in no summary);
- pending: nothing yet.

Under successive halving a run is followed through its rungs: until it reaches the last,
its state is that of the rung it trains to (its marker and its log under `rungs/`).

Nothing here imports torch or pandas: it starts in a fraction of a second.
"""

from __future__ import annotations

import base64
import json
import os
import time
from collections import Counter
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from reprogrid.commands.snakeconfig import StatusError
from reprogrid.plan import grid, halving, paths
from reprogrid.record import damage, logs, provenance

STATES = (
    "done",
    "diverged",
    "dropped",
    "failed",
    "damaged",
    "stopped",
    "stalled",
    "running",
    "queued",
    "pending",
)
# States whose runs are still to train; a failed or damaged run waits for a person, so it
# counts not.
TO_TRAIN = ("stopped", "stalled", "running", "queued", "pending")
# A running job writes a line at least every `training.PROGRESS_SECONDS` while it trains; one
# silent for longer than this (or three epochs, if longer) is taken to be dead.
SILENT_SECONDS = 600.0

SNAKEMAKE_DIR = Path(".snakemake")


@dataclass
class LogTail:
    """What the last attempt in a train.log says."""

    modified: float
    epoch: int = 0
    epoch_seconds: tuple[float, ...] = ()
    epoch_time: float | None = None
    started: float | None = None
    batch: tuple[int, int] | None = None
    error: str | None = None
    stopped: bool = False


@dataclass
class RunStatus:
    """One run's state, how far it got, and what is known of its pace."""

    run: str
    state: str
    epoch: int
    epochs: int
    seconds_per_epoch: float | None = None
    eta: float | None = None
    note: str = ""


@dataclass
class GridStatus:
    """Every run of an experiment's grid, and the grid's totals."""

    experiment: str
    runs: list[RunStatus]
    slots: int
    seconds_per_epoch: float | None
    eta: float | None
    snakemake_active: bool

    @property
    def counts(self) -> Counter:
        return Counter(run.state for run in self.runs)

    @property
    def over(self) -> bool:
        """True when nothing trains and no Snakemake works in this folder."""
        counts = self.counts
        active = counts["running"] + counts["queued"]
        return not active and not self.snakemake_active

    @property
    def to_train(self) -> int:
        """How many runs are still to train (a failed run waits for a person, not counted)."""
        counts = self.counts
        return sum(counts[state] for state in TO_TRAIN)


def incomplete_markers(snakemake_dir: Path = SNAKEMAKE_DIR) -> dict[str, Path]:
    """Snakemake's incomplete markers: output path -> marker file.

    Snakemake 9's file persistence writes one per output of a started job, named by the
    path in URL-safe base64, split into folders of `@`-prefixed chunks when long.
    """
    markers: dict[str, Path] = {}
    root = snakemake_dir / "incomplete"
    for folder, _, names in os.walk(root):
        chunks = [part[1:] for part in Path(folder).relative_to(root).parts]
        for name in names:
            try:
                path = base64.urlsafe_b64decode("".join([*chunks, name])).decode()
            except (ValueError, UnicodeDecodeError):
                continue
            markers[path] = Path(folder) / name
    return markers


def snakemake_active(snakemake_dir: Path = SNAKEMAKE_DIR) -> bool:
    """True while a Snakemake holds its lock in this folder (read, never taken)."""
    return any((snakemake_dir / "locks").glob("*.lock"))


def _timestamp(text: str) -> float:
    return time.mktime(time.strptime(text, logs.TIME_FORMAT))


def read_log(path: Path) -> LogTail | None:
    """The last attempt of a train.log (a resumed job appends), or None without a log."""
    try:
        modified = path.stat().st_mtime
        text = path.read_text(encoding="utf-8", errors="replace")
    except (FileNotFoundError, IsADirectoryError, NotADirectoryError):
        return None
    lines = text.splitlines()
    starts = [i for i, line in enumerate(lines) if logs.ATTEMPT.search(line)]
    tail = LogTail(modified=modified)
    seconds: list[float] = []
    in_traceback = False
    for line in lines[starts[-1] if starts else 0 :]:
        stamped = logs.LINE.fullmatch(line)
        if in_traceback and not stamped and line and not line[0].isspace():
            tail.error, in_traceback = line, False
        if line.startswith(logs.TRACEBACK):
            in_traceback = True
        if not stamped:
            continue
        when, _, message = stamped.groups()
        if tail.started is None:
            tail.started = _timestamp(when)
        if epoch := logs.EPOCH.match(message):
            tail.epoch, tail.batch = int(epoch[1]), None
            tail.epoch_time = _timestamp(when)
            seconds.append(float(epoch[3]))
        elif progress := logs.PROGRESS.match(message):
            tail.batch = (int(progress[3]), int(progress[4]))
        elif logs.STOPPED.match(message):
            tail.stopped = True
    tail.epoch_seconds = tuple(seconds)
    return tail


def run_status(
    run: str,
    folder: Path,
    epochs: int,
    marker: Path | None,
    now: float,
    log: str = paths.TRAIN_LOG,
) -> RunStatus:
    """The state of one run, from its folder, its incomplete marker (None: unmarked) and
    the log of the job training it (`log`, in its folder)."""
    files = paths.files_in(folder)
    if os.path.lexists(files.metrics):
        # Training writes metrics.json last: the run is finished, its files are all there.
        try:
            metrics = damage.check_finished(files)
        except provenance.ProvenanceError as err:
            return RunStatus(run, "damaged", 0, epochs, note=str(err))
        done = metrics["epochs_run"]
        pace = metrics["train_seconds"] / done if done else None
        if metrics["status"] == "diverged":
            note = f"loss not finite in epoch {done}"
            return RunStatus(run, "diverged", done, epochs, pace, note=note)
        return RunStatus(run, "done", done, epochs, pace)
    tail = read_log(folder / log) if folder.is_dir() else None
    if marker is not None:
        return _marked(run, epochs, marker, tail, now)
    if tail is None:
        return RunStatus(run, "pending", 0, epochs)
    pace = _pace(tail)
    if tail.error is not None:
        return RunStatus(run, "failed", tail.epoch, epochs, pace, note=tail.error)
    if tail.stopped:
        note = "stopped by a signal; Snakemake resumes it from its checkpoint"
        return RunStatus(run, "stopped", tail.epoch, epochs, pace, note=note)
    note = f"{Path(log).name} ends without an error: the job was killed (see {log})"
    return RunStatus(run, "failed", tail.epoch, epochs, pace, note=note)


def _pace(tail: LogTail) -> float | None:
    seconds = tail.epoch_seconds
    return sum(seconds) / len(seconds) if seconds else None


def _marked(run: str, epochs: int, marker: Path, tail: LogTail | None, now: float) -> RunStatus:
    try:
        marked_at = marker.stat().st_mtime
        job = json.loads(marker.read_text()).get("external_jobid")
    except (OSError, ValueError, AttributeError):
        marked_at, job = now, None
    where = f"Slurm job {job}" if job else ""
    if tail is None or tail.modified < marked_at:
        return RunStatus(run, "queued", 0, epochs, note=where)
    pace = _pace(tail)
    silent = now - tail.modified
    if silent > max(SILENT_SECONDS, 3 * (pace or 0)):
        note = (
            f"train.log silent for {logs.duration(silent)}: the Snakemake that started it "
            "was stopped; run Snakemake again to resume it"
        )
        return RunStatus(run, "stalled", tail.epoch, epochs, pace, note=note)
    status = RunStatus(run, "running", tail.epoch, epochs, pace, note=where)
    if tail.batch is not None:
        status.note = " ".join(filter(None, [f"batch {tail.batch[0]}/{tail.batch[1]}", where]))
    if pace is not None and tail.epoch_time is not None:
        status.eta = max(0.0, (epochs - tail.epoch) * pace - (now - tail.epoch_time))
    return status


def grid_status(
    config: Mapping[str, Any],
    schema: Mapping[str, Any],
    *,
    cores: int | None = None,
    jobs: int | None = None,
    now: float | None = None,
) -> GridStatus:
    """Every run of the configured grid and the totals, read from files in this folder.

    The ETA divides the epochs still to train, at the grid's mean seconds per epoch, by
    the runs that train at once: `jobs` (Slurm), else `cores` over each run's threads,
    else as many as run now.
    """
    now = time.time() if now is None else now
    experiment = config["experiment"]
    markers = incomplete_markers()
    try:
        planned = grid.expand_grid(config, schema, grid.read_id_defaults(experiment))
    except grid.RunNamesError as err:
        raise StatusError(str(err)) from None
    rungs = halving.rungs(config["halving"]) or []
    dropped = halving.dropped(experiment, planned) if rungs else {}
    runs = []
    for run, params in planned.items():
        folder = Path(paths.run_dir(experiment, run))
        if run in dropped:
            epochs = dropped[run]["epochs"]
            note = f"stopped by the search at rung {dropped[run]['rung']} ({epochs} epochs)"
            runs.append(RunStatus(run, "dropped", epochs, epochs, note=note))
            continue
        epochs, log = params["epochs"], paths.TRAIN_LOG
        output = paths.run_file(experiment, run, "metrics.json")
        stage = next(
            (e for e in rungs[:-1] if not Path(paths.rung_file(experiment, run, e)).is_file()),
            None,
        )
        if stage is not None:
            epochs, output = stage, paths.rung_file(experiment, run, stage)
            log = paths.rung_log(experiment, run, stage).removeprefix(f"{folder}/")
        marker = markers.get(output)
        runs.append(run_status(run, folder, epochs, marker, now, log))
    paces = [run.seconds_per_epoch for run in runs if run.seconds_per_epoch is not None]
    pace = sum(paces) / len(paces) if paces else None
    running = sum(run.state == "running" for run in runs)
    if jobs:
        slots = jobs
    elif cores:
        slots = max(1, cores // config["resources"]["threads"])
    else:
        slots = max(1, running)
    for run in runs:
        if run.state == "running" and run.eta is None and pace is not None:
            run.eta = (run.epochs - run.epoch) * pace
    eta = None
    if pace is not None:
        work = sum(
            run.eta if run.state == "running" else (run.epochs - run.epoch) * pace
            for run in runs
            if run.state in TO_TRAIN
        )
        eta = work / slots
    return GridStatus(experiment, runs, slots, pace, eta, snakemake_active())
