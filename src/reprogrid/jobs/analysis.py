"""The analysis jobs: tables, statistics and comparisons across the grid."""

from __future__ import annotations

import json
import logging
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import pandas as pd

from reprogrid.analysis import collect, stats
from reprogrid.plan import halving, paths
from reprogrid.record import atomic, capture, provenance
from reprogrid.tasks.spec import Metrics

log = logging.getLogger("reprogrid")


def _write_csv(path: str, table) -> None:
    atomic.write_text(path, table.to_csv(index=False))


def aggregate_job(
    *,
    run_files: Sequence[tuple[str, paths.RunFiles]],
    axes: list[str],
    metrics: Mapping[str, str],
    select_metric: str,
    analysis: Mapping[str, Any],
    repo: str,
    outputs: Mapping[str, str],
    rungs: str | None = None,
) -> int:
    """Tables of the whole grid: runs, curves, summary over seeds, best settings, comparisons.

    `metrics` are the task's metric names and directions; the best setting of each
    architecture is the one with the best mean `select_metric` (a validation column), and
    the architectures are compared on the criterion's test metric (the headline's without
    a criterion).

    Under successive halving `run_files` are the runs trained to the end and `rungs` the
    search's decisions: the conclusion says how many settings each rung stopped.

    `run_files` pairs each run id with the files of it the rule declares. `repo` is the
    workflow's checkout: the conclusion warns about runs whose recorded commit is not the
    one checked out there now. A run record that cannot be read (one of an older
    reprogrid, kept by `--rerun-triggers` without `params`) or a damaged run (a file cut
    short, garbled or of another job: `damage.check_run`, model.pt by its sha256) ends the
    job in one line naming the file: 1.
    """
    table_of = Metrics(dict(metrics))
    try:
        table = collect.runs_table(run_files, [*axes, "seed"], table_of)
    except provenance.ProvenanceError as err:
        log.error("reprogrid: %s", err)
        return 1
    compared = stats.compared_metric(analysis["criterion"], table_of)
    summary = stats.summarise(table, axes, table_of, analysis["confidence"])
    best = stats.select_best(summary, axes, table_of, select_metric, compared)
    comparisons = stats.compare(
        table, best, axes, compared, analysis["confidence"], analysis["alpha"]
    )
    _write_csv(outputs["runs"], table)
    _write_csv(outputs["histories"], collect.histories_table(run_files, [*axes, "seed"]))
    _write_csv(outputs["summary"], summary)
    _write_csv(outputs["best"], best)
    _write_csv(outputs["comparisons"], comparisons)
    atomic.write_json(
        outputs["conclusion"],
        {
            "criterion": stats.evaluate_criterion(
                comparisons, analysis["criterion"], analysis["alpha"], table_of
            ),
            "selection": stats.selection_warnings(best, axes),
            "code_versions": stats.code_versions(table, capture.git_state(repo)),
            "runs": len(table),
            "ok": int((table["status"] == "ok").sum()),
            "diverged": int((table["status"] == "diverged").sum()),
            **(
                {"search": halving.outline(halving.read_decision(Path(rungs).read_text()))}
                if rungs
                else {}
            ),
        },
    )
    return 0


def figures_job(
    *,
    histories: str,
    runs: str,
    summary: str,
    axes: list[str],
    metrics: Mapping[str, str],
    metric: str,
    outputs: Mapping[str, str],
) -> int:
    """The grid's figures as PNG and PDF, and one learning-curve figure per run: curves of
    every one of the task's `metrics`, the heatmap and seed spread of `metric` (the test
    column the architectures are compared on)."""
    from reprogrid.analysis import plots

    table_of = Metrics(dict(metrics))
    history_table = pd.read_csv(histories)
    run_table = pd.read_csv(runs)
    summary_table = pd.read_csv(summary)
    figures = {
        "curves": plots.learning_curves(history_table, axes, table_of),
        "heatmap": plots.metric_heatmap(summary_table, axes, table_of, metric),
        "spread": plots.seed_spread(run_table, axes, table_of, metric),
    }
    for name, figure in figures.items():
        plots.save(figure, outputs[f"{name}_pdf"])
        plots.save(figure, outputs[f"{name}_png"])
    run_dir = Path(outputs["run_figures"])
    run_dir.mkdir(parents=True, exist_ok=True)
    for run, curve in history_table.groupby("run", sort=True):
        plots.save(plots.run_curve(curve, run, table_of), run_dir / f"{run.replace('/', ',')}.png")
    return 0


def tables_job(
    *,
    experiment: str,
    provenance_files: Sequence[tuple[str, str]],
    axes: list[str],
    metrics: Mapping[str, str],
    metric: str,
    config: Mapping[str, Any],
    labbook: str | None,
    inputs: Mapping[str, str],
    outputs: Mapping[str, str],
) -> int:
    """The report's tables and texts (HTML), and the thesis tables (LaTeX, Markdown).

    `provenance_files` pairs each run id with its provenance file, as the rule declares it.
    `metrics` are the task's metric names and directions, `metric` the test column the
    architectures are compared on.
    """
    from reprogrid.analysis import reporting

    table_of = Metrics(dict(metrics))
    confidence = config["analysis"]["confidence"]
    shown = {
        "summary": reporting.summary_display(
            pd.read_csv(inputs["summary"]), axes, confidence, table_of
        ),
        "comparisons": reporting.comparisons_display(
            pd.read_csv(inputs["comparisons"]), confidence, table_of, metric
        ),
        "best": reporting.summary_display(pd.read_csv(inputs["best"]), axes, confidence, table_of),
    }
    conclusion = json.loads(Path(inputs["conclusion"]).read_text())
    provenances = reporting.read_provenances(provenance_files)
    run_table = pd.read_csv(inputs["runs"])
    pages = {
        "summary_html": (
            f"Summary over seeds: {experiment}",
            reporting.html_table(shown["summary"]),
        ),
        "comparisons_html": (
            f"Comparisons on {metric} at the settings chosen on {config['train']['select_metric']}",
            reporting.comparisons_html(conclusion, shown["best"], shown["comparisons"]),
        ),
        "provenance_html": (
            "Provenance of every run",
            reporting.provenance_html(conclusion, run_table, provenances),
        ),
    }
    for key, (title, body) in pages.items():
        atomic.write_text(outputs[key], reporting.page(title, body))
    texts = {
        "reproduction_html": (
            f"Reproducing {experiment}",
            reporting.reproduction_guide(config, provenances, shown["summary"]),
        ),
        "labbook_html": (f"Lab book: {experiment}", _labbook_text(experiment, labbook)),
    }
    for key, (title, text) in texts.items():
        atomic.write_text(outputs[key], reporting.markdown_page(title, text))
    _write_thesis_files(experiment, shown, conclusion, outputs)
    return 0


def _labbook_text(experiment: str, labbook: str | None) -> str:
    if labbook:
        return Path(labbook).read_text(encoding="utf-8")
    return f"No lab book: write `config/experiments/{experiment}.md` for this experiment."


def _write_thesis_files(
    experiment: str,
    shown: Mapping[str, pd.DataFrame],
    conclusion: Mapping[str, Any],
    outputs: Mapping[str, str],
) -> None:
    """The LaTeX tables and the Markdown summary a thesis takes over as they are."""
    from reprogrid.analysis import reporting

    atomic.write_text(
        outputs["summary_tex"],
        reporting.latex_table(
            shown["summary"],
            f"Every metric over seeds ({experiment})",
            f"tab:{experiment}-summary",
        ),
    )
    atomic.write_text(
        outputs["comparisons_tex"],
        reporting.latex_table(
            shown["comparisons"],
            f"Pairwise comparisons ({experiment})",
            f"tab:{experiment}-comparisons",
        ),
    )
    atomic.write_text(
        outputs["summary_md"],
        reporting.summary_markdown(experiment, conclusion, shown["summary"], shown["comparisons"]),
    )
