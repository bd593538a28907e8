"""The analysis jobs: tables, statistics and comparisons across the grid."""

from __future__ import annotations

import json
import logging
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import pandas as pd

from reprogrid import atomic, collect, paths, provenance, stats

log = logging.getLogger("reprogrid")


def _write_csv(path: str, table) -> None:
    atomic.write_text(path, table.to_csv(index=False))


def aggregate_job(
    *,
    run_files: Sequence[tuple[str, paths.RunFiles]],
    axes: list[str],
    analysis: Mapping[str, Any],
    repo: str,
    outputs: Mapping[str, str],
) -> int:
    """Tables of the whole grid: runs, curves, summary over seeds, best settings, comparisons.

    `run_files` pairs each run id with the files of it the rule declares. `repo` is the
    workflow's checkout: the conclusion warns about runs whose recorded commit is not the
    one checked out there now. A run record that cannot be read (one of an older
    reprogrid, kept by `--rerun-triggers` without `params`) ends the job in one line: 1.
    """
    try:
        table = collect.runs_table(run_files, [*axes, "seed"])
    except provenance.ProvenanceError as err:
        log.error("reprogrid: %s", err)
        return 1
    summary = stats.summarise(table, axes, analysis["confidence"])
    best = stats.select_best(summary, axes)
    comparisons = stats.compare(table, best, axes, analysis["confidence"], analysis["alpha"])
    _write_csv(outputs["runs"], table)
    _write_csv(outputs["histories"], collect.histories_table(run_files, [*axes, "seed"]))
    _write_csv(outputs["summary"], summary)
    _write_csv(outputs["best"], best)
    _write_csv(outputs["comparisons"], comparisons)
    atomic.write_json(
        outputs["conclusion"],
        {
            "criterion": stats.evaluate_criterion(
                comparisons, analysis["criterion"], analysis["alpha"]
            ),
            "selection": stats.selection_warnings(best, axes),
            "code_versions": stats.code_versions(table, provenance.git_state(repo)),
            "runs": len(table),
            "ok": int((table["status"] == "ok").sum()),
            "diverged": int((table["status"] == "diverged").sum()),
        },
    )
    return 0


def figures_job(
    *, histories: str, runs: str, summary: str, axes: list[str], outputs: Mapping[str, str]
) -> int:
    """The grid's figures as PNG and PDF, and one learning-curve figure per run."""
    from reprogrid import plots

    history_table = pd.read_csv(histories)
    run_table = pd.read_csv(runs)
    summary_table = pd.read_csv(summary)
    figures = {
        "curves": plots.learning_curves(history_table, axes),
        "heatmap": plots.accuracy_heatmap(summary_table, axes),
        "spread": plots.seed_spread(run_table, axes),
    }
    for name, figure in figures.items():
        plots.save(figure, outputs[f"{name}_pdf"])
        plots.save(figure, outputs[f"{name}_png"])
    run_dir = Path(outputs["run_figures"])
    run_dir.mkdir(parents=True, exist_ok=True)
    for run, curve in history_table.groupby("run", sort=True):
        plots.save(plots.run_curve(curve, run), run_dir / f"{run.replace('/', ',')}.png")
    return 0


def tables_job(
    *,
    experiment: str,
    provenance_files: Sequence[tuple[str, str]],
    axes: list[str],
    config: Mapping[str, Any],
    labbook: str | None,
    inputs: Mapping[str, str],
    outputs: Mapping[str, str],
) -> int:
    """The report's tables and texts (HTML), and the thesis tables (LaTeX, Markdown).

    `provenance_files` pairs each run id with its provenance file, as the rule declares it.
    """
    from reprogrid import reporting

    confidence = config["analysis"]["confidence"]
    summary = pd.read_csv(inputs["summary"])
    comparisons = pd.read_csv(inputs["comparisons"])
    best = pd.read_csv(inputs["best"])
    run_table = pd.read_csv(inputs["runs"])
    conclusion = json.loads(Path(inputs["conclusion"]).read_text())
    provenances = reporting.read_provenances(provenance_files)

    summary_shown = reporting.summary_display(summary, axes, confidence)
    comparisons_shown = reporting.comparisons_display(comparisons, confidence)
    best_shown = reporting.summary_display(best, axes, confidence)
    page, table = reporting.page, reporting.html_table
    atomic.write_text(
        outputs["summary_html"],
        page(f"Summary over seeds: {experiment}", table(summary_shown)),
    )
    atomic.write_text(
        outputs["comparisons_html"],
        page(
            "Comparisons at the settings chosen on validation accuracy",
            reporting.conclusion_html(conclusion)
            + "<h3>Chosen settings</h3>"
            + table(best_shown)
            + "<h3>Pairwise tests</h3>"
            + table(comparisons_shown),
        ),
    )
    versions = conclusion["code_versions"]
    warning = f"<p class='warning'>{versions['warning']}</p>" if versions["warning"] else ""
    atomic.write_text(
        outputs["provenance_html"],
        page(
            "Provenance of every run",
            warning + table(reporting.provenance_table(run_table, provenances)),
        ),
    )
    guide = reporting.reproduction_guide(config, provenances, summary_shown)
    atomic.write_text(
        outputs["reproduction_html"],
        reporting.markdown_page(f"Reproducing {experiment}", guide),
    )
    labbook_text = (
        Path(labbook).read_text(encoding="utf-8")
        if labbook
        else f"No lab book: write `config/experiments/{experiment}.md` for this experiment."
    )
    atomic.write_text(
        outputs["labbook_html"], reporting.markdown_page(f"Lab book: {experiment}", labbook_text)
    )
    atomic.write_text(
        outputs["summary_tex"],
        reporting.latex_table(
            summary_shown, f"Test accuracy over seeds ({experiment})", f"tab:{experiment}-summary"
        ),
    )
    atomic.write_text(
        outputs["comparisons_tex"],
        reporting.latex_table(
            comparisons_shown,
            f"Pairwise comparisons ({experiment})",
            f"tab:{experiment}-comparisons",
        ),
    )
    atomic.write_text(
        outputs["summary_md"],
        "\n".join(
            [
                f"# {experiment}",
                "",
                conclusion["criterion"]["statement"],
                "",
                *[f"> {warning}\n" for warning in conclusion["selection"]],
                "## Summary over seeds",
                "",
                summary_shown.to_markdown(index=False),
                "",
                "## Comparisons",
                "",
                comparisons_shown.to_markdown(index=False),
                "",
                *([f"> {versions['warning']}", ""] if versions["warning"] else []),
            ]
        ),
    )
    return 0
