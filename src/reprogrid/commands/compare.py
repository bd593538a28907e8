"""`reprogrid compare EXP [EXP ...]`: one table of settings (or runs) across experiments.

It reads what the aggregate rule wrote, `results/<exp>/summary/summary.csv` (`runs.csv`
with `--runs`), and each experiment's training parameters and task from one run's
provenance.json; the task's file says which metrics there are and which way each is better.
A summary older than a run's metrics.json, or missing runs of the experiment's current
grid, is named as stale; a missing one is refused: nothing is recomputed or guessed.

The csv module reads the tables: pandas alone takes 0.6 s to import, longer than the rest.

Longer than 400 lines: the staleness checks, the table and its LaTeX form share the one
reading of each experiment's files that this module makes.
"""

from __future__ import annotations

import argparse
import csv
import io
import math
import sys
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from reprogrid.plan import halving, paths
from reprogrid.record import damage, provenance
from reprogrid.tasks import spec
from reprogrid.tasks.spec import Metrics

# The summary's columns after its axes: counts, then four per metric, then seconds.
COUNTS = ("n", "n_runs", "n_diverged")
FORMATS = ("table", "csv", "markdown", "latex")


class CompareError(RuntimeError):
    """Input `compare` cannot use; the message is one line for the user."""


@dataclass
class Experiment:
    """One experiment's summary rows, each with its complete parameters, and its task's
    metrics (None for an experiment without runs, which reports none)."""

    name: str
    rows: list[dict[str, str]]
    params: list[dict[str, str]]
    stale: list[str]
    metrics: Metrics | None = None


def _read_csv(path: Path, experiment: str) -> list[dict[str, str]]:
    try:
        with path.open(newline="", encoding="utf-8") as handle:
            return list(csv.DictReader(handle))
    except FileNotFoundError:
        raise CompareError(
            f"{path} is missing: the experiment has no summary yet; run Snakemake with "
            f"--config experiment={experiment} first"
        ) from None


def _value(text: str) -> Any:
    """A CSV cell as the value it spells: a number, a boolean, or the text."""
    if text in ("True", "False", "true", "false"):
        return text.lower() == "true"
    for parse in (int, float):
        try:
            return parse(text)
        except ValueError:
            pass
    return text


def _spelled(value: Any) -> str:
    """A parameter as a run folder spells it, whether read from a CSV or a record."""
    return paths.format_value(_value(value) if isinstance(value, str) else value)


def _first_record(experiment: str, runs: Sequence[Mapping[str, str]]) -> provenance.Provenance:
    """The record of the experiment's first run, which holds its parameters and task, once
    every run the table names is whole and its job's (`damage.check_run`): a summary of a
    damaged run is no result to compare."""
    records = []
    for row in runs:
        files = paths.files_in(paths.run_dir(experiment, row["run"]))._replace(model=None)
        if not Path(files.provenance).exists():
            raise CompareError(
                f"{files.provenance} is missing; the summary names a run that is gone: "
                f"run Snakemake with --config experiment={experiment} to rebuild it"
            )
        try:
            records.append(damage.check_run(files)[0])
        except provenance.ProvenanceError as err:
            raise CompareError(str(err)) from None
    return records[0]


def _task_metrics(record: provenance.Provenance) -> Metrics:
    """The metrics the run's task declares, read from its file as planning reads it."""
    try:
        return spec.read(record.task).metrics
    except spec.TaskError as err:
        raise CompareError(f"run {record.run}: {err}") from None


def staleness(experiment: str, summary: Path, runs: Sequence[Mapping[str, str]]) -> list[str]:
    """Why the summary no longer describes the experiment's runs; empty when it does.

    Runs of the current grid are those of `config/experiments/<experiment>.yaml` over
    `config/config.yaml`; an experiment defined elsewhere is checked by dates alone.
    """
    written = summary.stat().st_mtime
    folder = Path(paths.experiment_dir(experiment)) / "runs"
    newer = [p for p in folder.glob("**/metrics.json") if p.stat().st_mtime > written]
    reasons = [f"{len(newer)} run(s) finished after it was written"] if newer else []
    grid_runs = _current_grid(experiment)
    if grid_runs is not None:
        # Runs a search stopped at a rung are in no summary, by design.
        expected = set(grid_runs) - set(halving.dropped(experiment, grid_runs))
        missing = expected - {row["run"] for row in runs}
        if missing:
            reasons.append(f"{len(missing)} run(s) of the current grid missing from runs.csv")
    return reasons


def _current_grid(experiment: str) -> list[str] | None:
    from reprogrid.commands import snakeconfig

    if not (snakeconfig.EXPERIMENTS / f"{experiment}.yaml").is_file():
        return None
    try:
        config, schema = snakeconfig.resolve_config([], {}, experiment)
    except snakeconfig.StatusError:
        return None
    from reprogrid.plan import grid

    try:
        return list(grid.expand_grid(config, schema, grid.read_id_defaults(experiment)))
    except grid.RunNamesError:
        return None


def load(experiment: str, runs_only: bool) -> Experiment:
    """An experiment's summary (or runs) rows with their parameters; CompareError if missing."""
    problem = paths.name_problem(experiment, paths.EXPERIMENT_PUNCTUATION)
    if problem:
        # Never looked up: a name too long for a folder makes the lookup itself fail.
        raise CompareError(
            f"{provenance.shown(experiment)} is no experiment name: it {problem}; name an "
            "experiment trained in this folder"
        )
    summary = Path(paths.summary_file(experiment, "summary.csv"))
    if not Path(paths.experiment_dir(experiment)).is_dir():
        raise CompareError(
            f"no results for experiment {experiment!r} (no {paths.experiment_dir(experiment)}/); "
            "name an experiment trained in this folder"
        )
    runs = _read_csv(Path(paths.summary_file(experiment, "runs.csv")), experiment)
    table = runs if runs_only else _read_csv(summary, experiment)
    record = _first_record(experiment, runs) if runs else None
    train = dict(record.config.train) if record else {}
    first = [*COUNTS, "status"]
    params = []
    for row in table:
        columns = list(row)
        stop = next(i for i, name in enumerate(columns) if name in first)
        axes = {key: row[key] for key in columns[1 if runs_only else 0 : stop]}
        params.append({key: _spelled(value) for key, value in {**train, **axes}.items()})
    return Experiment(
        experiment,
        table,
        params,
        staleness(experiment, summary, runs),
        _task_metrics(record) if record else None,
    )


def chosen_metrics(
    experiments: Sequence[Experiment], asked: Sequence[str], sort: str | None
) -> tuple[list[str], int]:
    """The metrics to show (`asked`, or the headline's test and validation columns of the
    first experiment with runs) and the sign that ranks `sort` best first (+1 where higher
    is better); CompareError for a metric an experiment does not report, or a sort metric
    the experiments' tasks rank in opposite directions."""
    tables = [(exp.name, exp.metrics) for exp in experiments if exp.metrics is not None]
    if not asked:
        asked = [tables[0][1].column("test"), tables[0][1].column("val")] if tables else []
    for metric in [*asked, *([sort] if sort else [])]:
        for name, metrics in tables:
            if metric not in metrics.run_keys():
                raise CompareError(
                    f"{metric}: experiment {name} reports no such metric; "
                    f"its metrics: {', '.join(metrics.run_keys())}"
                )
    if sort is None:
        return list(asked), 1
    signs = {metrics.sign(sort) for _, metrics in tables}
    if len(signs) > 1:
        raise CompareError(
            f"--sort {sort}: the experiments' tasks disagree on which way it is better; "
            "compare them apart"
        )
    return list(asked), signs.pop() if signs else 1


def _matches(params: Mapping[str, str], where: Sequence[tuple[str, str]]) -> bool:
    return all(params.get(key) == _spelled(value) for key, value in where)


def parse_where(entries: Sequence[str]) -> list[tuple[str, str]]:
    """`--where key=value` filters as pairs; one line if an entry is no pair."""
    pairs = []
    for entry in entries:
        key, sep, value = entry.partition("=")
        if not sep or not key:
            raise CompareError(f"--where {entry!r} is not key=value; write e.g. --where arch=cnn")
        pairs.append((key, value))
    return pairs


@dataclass
class Table:
    """What every format prints: a header and rows of cells, numbers kept for csv."""

    header: list[str]
    rows: list[list[str]]
    numbers: list[list[Any]]
    number_header: list[str]


def _num(text: str | None) -> float:
    try:
        return float(text) if text not in (None, "") else math.nan
    except ValueError:
        return math.nan


def _fmt(value: float) -> str:
    return "" if math.isnan(value) else f"{value:.4f}"


def build(
    experiments: Sequence[Experiment],
    metrics: Sequence[str],
    *,
    runs_only: bool,
    all_params: bool,
    where: Sequence[tuple[str, str]],
    sort: str | None,
    sign: int = 1,
) -> Table:
    """The comparison: one row per setting (or run), the parameters that differ (all with
    `all_params`), each metric's mean ± sd and 95% interval (its value for runs), counts.
    Rows sorted by `sort` come best first: `sign` is +1 where higher is better, -1 where
    lower is (`chosen_metrics` gives it)."""
    entries = [
        (exp.name, row, params)
        for exp in experiments
        for row, params in zip(exp.rows, exp.params, strict=True)
    ]
    known = sorted({"experiment", *(key for _, _, params in entries for key in params)})
    for key, _ in where:
        if key not in known:
            raise CompareError(f"--where {key}: no such parameter; known: {', '.join(known)}")
    entries = [e for e in entries if _matches({"experiment": e[0], **e[2]}, where)]
    keys = sorted({key for _, _, params in entries for key in params})
    if not all_params:
        keys = [k for k in keys if len({params.get(k, "") for _, _, params in entries}) > 1]
    if sort is not None:
        column = sort if runs_only else f"{sort}_mean"
        entries.sort(key=lambda e: (math.isnan(_num(e[1][column])), -sign * _num(e[1][column])))
    header = ["experiment", *(["run"] if runs_only else []), *keys]
    number_header = list(header)
    if runs_only:
        header += [*metrics, "status"]
        number_header += [*metrics, "status"]
    else:
        for metric in metrics:
            header += [f"{metric} mean ± sd", f"{metric} 95% CI"]
            number_header += [
                f"{metric}_{part}" for part in ("mean", "sd", "ci95_low", "ci95_high")
            ]
        header += ["n", "diverged"]
        number_header += ["n", "n_runs", "n_diverged"]
    rows, numbers = [], []
    for name, row, params in entries:
        lead = [name, *([row["run"]] if runs_only else []), *(params.get(k, "") for k in keys)]
        if runs_only:
            values = [_num(row[m]) for m in metrics]
            rows.append([*lead, *map(_fmt, values), row["status"]])
            numbers.append([*lead, *values, row["status"]])
            continue
        cells: list[str] = []
        raw: list[Any] = []
        for metric in metrics:
            mean, sd, low, high = (
                _num(row[f"{metric}_{part}"]) for part in ("mean", "sd", "ci95_low", "ci95_high")
            )
            cells.append(_fmt(mean) + ("" if math.isnan(sd) else f" ± {sd:.4f}"))
            cells.append("" if math.isnan(low) else f"[{low:.4f}, {high:.4f}]")
            raw += [mean, sd, low, high]
        counts = [row["n"], row["n_runs"], row["n_diverged"]]
        rows.append([*lead, *cells, f"{row['n']}/{row['n_runs']}", row["n_diverged"]])
        numbers.append([*lead, *raw, *counts])
    return Table(header, rows, numbers, number_header)


def formatted(table: Table, form: str) -> str:
    """The table as csv (numbers in full), markdown or LaTeX text."""
    if form == "csv":
        out = io.StringIO()
        writer = csv.writer(out, lineterminator="\n")
        writer.writerow(table.number_header)
        writer.writerows(["" if v != v else v for v in row] for row in table.numbers)
        return out.getvalue()
    if form == "markdown":
        lines = [table.header, ["---"] * len(table.header), *table.rows]
        return "".join("| " + " | ".join(cells) + " |\n" for cells in lines)
    # The report's escape, imported here alone: reprogrid.analysis.reporting needs pandas, which
    # every other format of `compare` starts without.
    from reprogrid.analysis.reporting import latex_escape

    columns = "l" * len(table.header)
    body = [" & ".join(map(latex_escape, cells)) + " \\\\" for cells in table.rows]
    head = " & ".join(map(latex_escape, table.header)) + " \\\\"
    lines = [f"\\begin{{tabular}}{{{columns}}}", "\\toprule", head, "\\midrule", *body]
    return "\n".join([*lines, "\\bottomrule", "\\end{tabular}"]) + "\n"


def rich_table(table: Table):
    """The table for a terminal."""
    from rich.table import Table as RichTable

    shown = RichTable(show_lines=False)
    for name in table.header:
        numeric = name in ("n", "diverged") or "mean" in name or "CI" in name
        shown.add_column(name, justify="right" if numeric else "left")
    for row in table.rows:
        shown.add_row(*row)
    return shown


def main(args: argparse.Namespace) -> int:
    """`reprogrid compare`: print the table; stale summaries are named on stderr."""
    try:
        where = parse_where(args.where or [])
        experiments = [load(name, args.runs) for name in dict.fromkeys(args.experiments)]
        metrics, sign = chosen_metrics(experiments, args.metric or [], args.sort)
        table = build(
            experiments,
            metrics,
            runs_only=args.runs,
            all_params=args.all_params,
            where=where,
            sort=args.sort,
            sign=sign,
        )
    except CompareError as err:
        print(f"reprogrid: {err}", file=sys.stderr)
        return 2
    for exp in experiments:
        if exp.stale:
            print(
                f"reprogrid: {paths.summary_file(exp.name, 'summary.csv')} is stale "
                f"({'; '.join(exp.stale)}); run Snakemake with --config experiment={exp.name} "
                "to update it",
                file=sys.stderr,
            )
    if args.format == "table":
        from rich.console import Console

        Console(highlight=False).print(rich_table(table))
    else:
        sys.stdout.write(formatted(table, args.format))
    return 0


def add_parser(commands) -> None:
    """The `compare` subcommand's arguments."""
    parser = commands.add_parser(
        "compare",
        help="one table of settings (or runs) across experiments, from their summaries",
        description=__doc__.splitlines()[0],
    )
    parser.add_argument("experiments", nargs="+", metavar="EXP", help="experiments to compare")
    parser.add_argument("--runs", action="store_true", help="one row per run, not per setting")
    parser.add_argument(
        "--metric",
        action="append",
        metavar="SPLIT_METRIC",
        help="a metric to show: val_ or test_ and a name of the task's METRICS "
        "(repeatable; default: the first metric's test_ and val_)",
    )
    parser.add_argument(
        "--sort",
        metavar="SPLIT_METRIC",
        help="best first by this metric's mean, in the direction the task declares",
    )
    parser.add_argument(
        "--where", action="append", metavar="KEY=VALUE", help="keep rows whose KEY is VALUE"
    )
    parser.add_argument(
        "--all-params", action="store_true", help="every parameter, not only those that differ"
    )
    parser.add_argument("--format", choices=FORMATS, default="table", help="output format")
    parser.set_defaults(handler=main)
