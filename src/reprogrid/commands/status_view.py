"""`reprogrid status` on screen: a row per run or per setting, the totals, colours for a
terminal (rich) and plain text for a file or a pipe, and the command itself (`main`, with
`--watch`). What each run's state is comes from `commands.status`."""

from __future__ import annotations

import argparse
import math
import sys
import time
from collections import Counter
from collections.abc import Sequence

from reprogrid.commands.snakeconfig import StatusError, parse_config_values, resolve_config
from reprogrid.commands.status import STATES, TO_TRAIN, GridStatus, RunStatus, grid_status
from reprogrid.record import logs

STYLES = {
    "done": "green",
    "dropped": "dim yellow",
    "diverged": "yellow",
    "failed": "bold red",
    "damaged": "bold red",
    "stopped": "magenta",
    "stalled": "red",
    "running": "bold cyan",
    "queued": "cyan",
    "pending": "dim",
}


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
            (run.note, "red" if run.state in ("failed", "damaged") else "dim"),
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
        failed = next((run for run in runs if run.state in ("failed", "damaged")), None)
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
    for state in ("failed", "damaged", "stalled", "running", "diverged"):
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
