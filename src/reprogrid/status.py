"""`reprogrid status`: where every run of a grid stands, read from files alone.

The grid is the one Snakemake would build: the same config layers (`config/config.yaml`,
`config/experiments/<name>.yaml`, `--configfile`, `--config`), resolved by `reprogrid.config`
and expanded by `reprogrid.grid`. Each run's state comes from its folder and from Snakemake's
own markers, never from Snakemake (whose lock this never takes), so it reads the same for
local and Slurm runs:

- done / diverged: the run's metrics.json says so;
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

import argparse
import base64
import json
import math
import os
import re
import sys
import time
from collections import Counter
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import yaml

from reprogrid import config as configuration
from reprogrid import grid, halving, logs, paths
from reprogrid.config_errors import ConfigError

STATES = (
    "done",
    "diverged",
    "dropped",
    "failed",
    "stopped",
    "stalled",
    "running",
    "queued",
    "pending",
)
STYLES = {
    "done": "green",
    "dropped": "dim yellow",
    "diverged": "yellow",
    "failed": "bold red",
    "stopped": "magenta",
    "stalled": "red",
    "running": "bold cyan",
    "queued": "cyan",
    "pending": "dim",
}
# States whose runs are still to train; a failed run waits for a person, so it counts not.
TO_TRAIN = ("stopped", "stalled", "running", "queued", "pending")
# A running job writes a line at least every `training.PROGRESS_SECONDS` while it trains; one
# silent for longer than this (or three epochs, if longer) is taken to be dead.
SILENT_SECONDS = 600.0

SNAKEMAKE_DIR = Path(".snakemake")
SCHEMA = Path("workflow/schemas/config.schema.yaml")
BASE_CONFIG = Path("config/config.yaml")
EXPERIMENTS = Path("config/experiments")


class StatusError(RuntimeError):
    """Input `status` cannot read; the message is one line for the user."""


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


def parse_config_values(entries: Iterable[str]) -> dict[str, Any]:
    """`--config key=value ...` read as Snakemake reads them (`snakemake.cli.parse_config`).

    Each value is tried as an int, a float, True/False, then YAML's base loader (nested
    values arrive as strings; `config.resolve` types them as a file would), else a string.
    """
    values: dict[str, Any] = {}
    for entry in entries:
        key, sep, value = entry.partition("=")
        if not sep or not re.fullmatch(r"[a-zA-Z_][\w-]*\w", key):
            raise StatusError(f"--config {entry!r} is not key=value; write e.g. train.epochs=2")
        values[key] = None if value == "" else _snakemake_value(value.strip("'\""))
    return values


def _snakemake_value(text: str) -> Any:
    for parse in (int, float):
        try:
            return parse(text)
        except ValueError:
            pass
    if text in ("True", "False"):
        return text == "True"
    try:
        return yaml.load(text, Loader=yaml.BaseLoader)
    except yaml.YAMLError:
        return text


def resolve_config(
    configfiles: Sequence[str], values: Mapping[str, Any], experiment: str | None
) -> tuple[dict[str, Any], dict[str, Any]]:
    """The configuration Snakemake would resolve in this folder, and the schema."""
    if not BASE_CONFIG.is_file() or not SCHEMA.is_file():
        raise StatusError(
            f"no {BASE_CONFIG} or {SCHEMA} here; run reprogrid status in the workflow folder "
            "(the one holding the Snakefile)"
        )
    for path in configfiles:
        if not Path(path).is_file():
            raise StatusError(f"--configfile {path}: no such file")
    values = dict(values)
    if experiment is not None:
        values["experiment"] = experiment
    schema = configuration.load_schema(SCHEMA)
    try:
        return configuration.resolve(schema, BASE_CONFIG, EXPERIMENTS, configfiles, values), schema
    except ConfigError as err:
        raise StatusError(str(err)) from None


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


def _metrics(path: Path) -> dict[str, Any] | None:
    """A run's metrics.json, or None where there is none yet; malformed: StatusError."""
    try:
        text = path.read_text(encoding="utf-8")
    except FileNotFoundError:
        return None
    except OSError as err:
        raise StatusError(f"{path} cannot be read ({err.strerror}); remove it") from None
    try:
        metrics = json.loads(text)
        ok = (
            isinstance(metrics, dict)
            and metrics.get("status") in ("ok", "diverged")
            and isinstance(metrics.get("epochs_run"), int)
            and isinstance(metrics.get("train_seconds"), int | float)
        )
    except ValueError:
        ok = False
    if not ok:
        raise StatusError(
            f"{path} is no run's metrics (JSON with status ok or diverged, epochs_run and "
            "train_seconds); delete it and run Snakemake again to retrain the run"
        )
    return metrics


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
    metrics = _metrics(folder / "metrics.json")
    if metrics is not None:
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
    planned = grid.expand_grid(config, schema)
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


def _setting(run: str) -> str:
    """A run id without its seed: the setting the run is one seed of."""
    return run.rsplit("/seed=", 1)[0]


def _states(counts: Counter) -> str:
    return ", ".join(f"{counts[state]} {state}" for state in STATES if counts[state])


def _row(cells: Sequence[tuple[str, str]], widths: Sequence[int]):
    from rich.text import Text

    line = Text()
    for (text, style), width in zip(cells, widths, strict=True):
        line.append(text.ljust(width) + "  ", style=style)
    line.rstrip()
    return line


def _lines(header: Sequence[str], rows: Sequence[Sequence[tuple[str, str]]]):
    """Rows in aligned columns. rich's Table measures every cell: 4 s for 10,000 runs,
    against 0.5 s for these lines (docs/benchmarks.md)."""
    from rich.text import Text

    widths = [max([len(name), *(len(row[i][0]) for row in rows)]) for i, name in enumerate(header)]
    widths[-1] = 0
    head = _row([(name, "bold") for name in header], widths)
    return Text("\n").join([head, *(_row(row, widths) for row in rows)])


def _eta(seconds: float | None) -> str:
    return "" if seconds is None else logs.duration(seconds)


def _pace_text(seconds: float | None) -> str:
    return "" if seconds is None else f"{seconds:.1f}"


def run_rows(status: GridStatus):
    """One line per run: its state, epoch k of N, seconds per epoch, ETA and a note."""
    rows = [
        [
            (run.run, ""),
            (run.state, STYLES[run.state]),
            (f"{run.epoch}/{run.epochs}", ""),
            (_pace_text(run.seconds_per_epoch), ""),
            (_eta(run.eta), ""),
            (run.note, "red" if run.state == "failed" else "dim"),
        ]
        for run in status.runs
    ]
    return _lines(["run", "state", "epoch", "s/epoch", "ETA", "note"], rows)


def setting_rows(status: GridStatus):
    """One line per setting: its runs by state, epochs trained, and when its last run ends."""
    groups: dict[str, list[RunStatus]] = {}
    for run in status.runs:
        groups.setdefault(_setting(run.run), []).append(run)
    rows = []
    for setting, runs in groups.items():
        etas = [run.eta for run in runs if run.eta is not None]
        failed = next((run for run in runs if run.state == "failed"), None)
        rows.append(
            [
                (setting, ""),
                (_states(Counter(run.state for run in runs)), _group_style(runs)),
                (f"{sum(r.epoch for r in runs)}/{sum(r.epochs for r in runs)}", ""),
                (_eta(max(etas) if etas else None), ""),
                (f"{failed.run}: {failed.note}" if failed else "", "red"),
            ]
        )
    return _lines(["setting", "runs", "epochs", "ETA", "note"], rows)


def _group_style(runs: Sequence[RunStatus]) -> str:
    for state in ("failed", "stalled", "running", "diverged"):
        if any(run.state == state for run in runs):
            return STYLES[state]
    return STYLES["done"] if all(run.state == "done" for run in runs) else ""


def totals(status: GridStatus) -> str:
    """The grid in one line: runs by state, epochs trained, and the ETA."""
    epochs = sum(run.epoch for run in status.runs)
    planned = sum(run.epochs for run in status.runs)
    share = epochs / planned if planned else 1.0
    line = f"{status.experiment}: {len(status.runs)} runs: {_states(status.counts)}; "
    line += f"epochs {epochs}/{planned} ({math.floor(share * 100)}%)"
    if any(status.counts[state] for state in TO_TRAIN):
        if status.eta is None:
            line += "; ETA unknown until an epoch ends"
        else:
            line += f"; ETA {logs.duration(status.eta)} at {status.slots} run(s) at once"
    return line


def render(status: GridStatus, by_setting: bool):
    """The screen: one line per run (or per setting), then the totals."""
    from rich.console import Group
    from rich.text import Text

    rows = setting_rows(status) if by_setting else run_rows(status)
    return Group(rows, Text(""), Text(totals(status), style="bold"))


def main(args: argparse.Namespace) -> int:
    """`reprogrid status`: print the grid's state once, or refresh it with `--watch`."""
    from rich.console import Console

    console = Console(highlight=False)
    try:
        values = parse_config_values(args.config or [])
        config, schema = resolve_config(args.configfile or [], values, args.experiment)

        def current() -> GridStatus:
            return grid_status(config, schema, cores=args.cores, jobs=args.jobs)

        status = current()
        if not args.watch:
            console.print(render(status, args.by == "setting"), soft_wrap=True)
            return 0
        from rich.live import Live

        with Live(render(status, args.by == "setting"), console=console) as live:
            # Snakemake takes its lock only once it has planned, minutes for a large grid: a
            # watch started meanwhile sees nothing at work, so until it has seen work it
            # ends only on a grid with nothing left to train.
            seen_work = not status.over
            while not (status.over and (seen_work or not status.to_train)):
                time.sleep(args.interval)
                status = current()
                seen_work = seen_work or not status.over
                live.update(render(status, args.by == "setting"))
    except StatusError as err:
        print(f"reprogrid: {err}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        return 130
    return 0


def add_parser(commands) -> None:
    """The `status` subcommand's arguments."""
    parser = commands.add_parser(
        "status",
        help="where every run of a grid stands: done, diverged, failed, running (epoch, ETA)",
        description=__doc__.splitlines()[0],
    )
    parser.add_argument(
        "--configfile", nargs="+", metavar="FILE", help="config files, as given to Snakemake"
    )
    parser.add_argument(
        "--config", nargs="+", metavar="KEY=VALUE", help="config values, as given to Snakemake"
    )
    parser.add_argument("--experiment", help="the experiment (same as --config experiment=NAME)")
    parser.add_argument(
        "--by", choices=("run", "setting"), default="run", help="one line per run or per setting"
    )
    parser.add_argument("--cores", type=int, help="cores Snakemake uses here (for the ETA)")
    parser.add_argument("--jobs", type=int, help="Slurm jobs Snakemake runs at once (for the ETA)")
    parser.add_argument("--watch", action="store_true", help="refresh until the grid ends")
    parser.add_argument(
        "--interval", type=float, default=5.0, help="seconds between refreshes (--watch)"
    )
    parser.set_defaults(handler=main)
