"""Tables and texts of the report: HTML for `snakemake --report`, LaTeX and Markdown for theses."""

from __future__ import annotations

import html
from collections.abc import Iterable, Mapping, Sequence
from pathlib import Path
from typing import Any

import markdown
import pandas as pd
import yaml

from reprogrid.analysis import stats
from reprogrid.plan import paths
from reprogrid.record import provenance
from reprogrid.tasks.spec import Metrics

STYLE = """
body { font-family: system-ui, sans-serif; margin: 1.5em; color: #222; }
table { border-collapse: collapse; font-size: 0.9em; }
th, td { padding: 0.3em 0.7em; border-bottom: 1px solid #ddd; text-align: right; }
th { background: #f3f3f3; }
td:first-child, th:first-child { text-align: left; }
.warning { background: #fff3cd; border: 1px solid #e0c36c; padding: 0.6em; }
.met { color: #176c2f; font-weight: bold; }
.notmet { color: #a12626; font-weight: bold; }
pre { background: #f6f6f6; padding: 0.8em; overflow-x: auto; }
"""


def page(title: str, body: str) -> str:
    """A self-contained HTML page."""
    return (
        "<!DOCTYPE html>\n<html><head><meta charset='utf-8'>"
        f"<title>{html.escape(title)}</title><style>{STYLE}</style></head>"
        f"<body><h2>{html.escape(title)}</h2>\n{body}\n</body></html>\n"
    )


def html_table(frame: pd.DataFrame, digits: int = 4) -> str:
    return frame.to_html(
        index=False, float_format=lambda x: f"{x:.{digits}f}", na_rep="-", border=0
    )


def _pm(mean: float, sd: float) -> str:
    if pd.isna(mean):
        return "-"
    return f"{mean:.4f} ± {sd:.4f}" if not pd.isna(sd) else f"{mean:.4f}"


def _fixed(value: float, digits: int = 2) -> str:
    return "-" if pd.isna(value) else f"{value:.{digits}f}"


def _interval(low: float, high: float) -> str:
    return "-" if pd.isna(low) else f"[{low:.4f}, {high:.4f}]"


def summary_display(
    summary: pd.DataFrame, axes: Sequence[str], confidence: float, metrics: Metrics
) -> pd.DataFrame:
    """The summary as a reader wants it: each metric the table holds as mean ± sd, labelled
    by name and direction, validation first, and the interval of each test metric's mean.
    The summary holds every metric; best.csv only the selection's and the comparison's."""
    ci = stats.interval_name(confidence)
    shown = summary[list(axes)].map(paths.format_value)
    shown["n"] = summary["n"]
    shown["diverged"] = summary["n_diverged"]
    present = [c for c in metrics.columns("val", "test") if f"{c}_mean" in summary]
    for column in present:
        shown[metrics.label(column)] = [
            _pm(m, s)
            for m, s in zip(summary[f"{column}_mean"], summary[f"{column}_sd"], strict=True)
        ]
    for column in present:
        if f"{column}_{ci}_low" in summary and column.startswith("test_"):
            shown[f"{column} {round(confidence * 100)}% CI"] = [
                _interval(lo, hi)
                for lo, hi in zip(
                    summary[f"{column}_{ci}_low"], summary[f"{column}_{ci}_high"], strict=True
                )
            ]
    return shown


def comparisons_display(
    comparisons: pd.DataFrame, confidence: float, metrics: Metrics, metric: str
) -> pd.DataFrame:
    """Pairwise comparisons on `metric`, the difference headed by its name and direction."""
    shown = pd.DataFrame(
        {
            "A": comparisons["arch_a"] + " (" + comparisons["setting_a"] + ")",
            "B": comparisons["arch_b"] + " (" + comparisons["setting_b"] + ")",
            "test": comparisons["test"],
            f"diff A-B in {metrics.label(metric)}": comparisons["diff"].map(lambda d: _fixed(d, 4)),
            f"{round(confidence * 100)}% CI": [
                _interval(lo, hi)
                for lo, hi in zip(comparisons["diff_low"], comparisons["diff_high"], strict=True)
            ],
            "effect size": comparisons["effect_size"].map(_fixed),
            "p": comparisons["p_value"].map(lambda p: f"{p:.3g}"),
            "p (Holm)": comparisons["p_holm"].map(lambda p: f"{p:.3g}"),
        }
    )
    return shown


def latex_table(frame: pd.DataFrame, caption: str, label: str) -> str:
    """A booktabs LaTeX table (needs \\usepackage{booktabs})."""
    escaped = frame.copy()
    escaped.columns = [latex_escape(str(c)) for c in escaped.columns]
    for column in escaped.columns:
        escaped[column] = escaped[column].map(
            lambda v: latex_escape(str(v)) if not isinstance(v, float) else f"{v:g}"
        )
    return escaped.style.hide(axis="index").to_latex(
        hrules=True,
        caption=latex_escape(caption),
        label=label,
        position="htbp",
        position_float="centering",
    )


# What each character LaTeX reads as markup becomes in text; ± is the one non-ASCII sign
# the tables write.
LATEX_ESCAPES = {
    "\\": r"\textbackslash{}",
    "{": r"\{",
    "}": r"\}",
    "$": r"\$",
    "%": r"\%",
    "&": r"\&",
    "#": r"\#",
    "_": r"\_",
    "~": r"\textasciitilde{}",
    "^": r"\textasciicircum{}",
    "±": r"$\pm$",
}


def latex_escape(text: str) -> str:
    """`text` as LaTeX typesets it literally; one pass, so no replacement is escaped again.
    Every LaTeX table of reprogrid (the report's, `reprogrid compare`'s) escapes with it."""
    return "".join(LATEX_ESCAPES.get(char, char) for char in text)


def search_statement(conclusion: Mapping[str, Any]) -> str | None:
    """What successive halving decided, in one sentence; None for a grid trained whole."""
    search = conclusion.get("search")
    if not search:
        return None
    rungs = "; ".join(
        f"rung {rung['rung']}: {rung['settings']} settings at {rung['epochs']} "
        f"epoch{'s' if rung['epochs'] != 1 else ''}, {rung['kept']} kept"
        for rung in search["rungs"]
    )
    return (
        f"Successive halving ({rungs}): the runs above are those of the settings kept to the "
        f"end; {search['stopped']} settings stopped at their rung are in no summary "
        "(search/rungs.csv lists every decision)."
    )


def conclusion_html(conclusion: Mapping[str, Any]) -> str:
    """The verdict on the criterion, the run counts and every warning of the conclusion."""
    criterion = conclusion["criterion"]
    met = criterion.get("met")
    css = "met" if met else ("notmet" if met is False else "")
    body = f"<p class='{css}'>{html.escape(criterion['statement'])}</p>"
    body += (
        f"<p>{conclusion['runs']} runs: {conclusion['ok']} ok, "
        f"{conclusion['diverged']} diverged (diverged runs are counted, never averaged in).</p>"
    )
    search = search_statement(conclusion)
    if search:
        body += f"<p>{html.escape(search)}</p>"
    for warning in [*conclusion["selection"], conclusion["code_versions"]["warning"]]:
        if warning:
            body += f"<p class='warning'>{html.escape(warning)}</p>"
    return body


def comparisons_html(
    conclusion: Mapping[str, Any], best_shown: pd.DataFrame, comparisons_shown: pd.DataFrame
) -> str:
    """The comparisons page: the conclusion, the chosen settings and the pairwise tests."""
    return (
        conclusion_html(conclusion)
        + "<h3>Chosen settings</h3>"
        + html_table(best_shown)
        + "<h3>Pairwise tests</h3>"
        + html_table(comparisons_shown)
    )


def provenance_html(
    conclusion: Mapping[str, Any],
    runs: pd.DataFrame,
    provenances: Mapping[str, provenance.Provenance],
) -> str:
    """The provenance page: the code-version warning, if any, above one row per run."""
    warning = conclusion["code_versions"]["warning"]
    shown = f"<p class='warning'>{warning}</p>" if warning else ""
    return shown + html_table(provenance_table(runs, provenances))


def summary_markdown(
    experiment: str,
    conclusion: Mapping[str, Any],
    summary_shown: pd.DataFrame,
    comparisons_shown: pd.DataFrame,
) -> str:
    """summary.md: the criterion's verdict, warnings, the summary and the comparisons."""
    warning = conclusion["code_versions"]["warning"]
    search = search_statement(conclusion)
    return "\n".join(
        [
            f"# {experiment}",
            "",
            conclusion["criterion"]["statement"],
            "",
            *([search, ""] if search else []),
            *[f"> {note}\n" for note in conclusion["selection"]],
            "## Summary over seeds",
            "",
            summary_shown.to_markdown(index=False),
            "",
            "## Comparisons",
            "",
            comparisons_shown.to_markdown(index=False),
            "",
            *([f"> {warning}", ""] if warning else []),
        ]
    )


def provenance_table(
    runs: pd.DataFrame, provenances: Mapping[str, provenance.Provenance]
) -> pd.DataFrame:
    """Per run: commit, dirty flag, host, device, versions, Slurm job."""
    rows = []
    for run in runs["run"]:
        record = provenances[run]
        rows.append(
            {
                "run": run,
                "commit": (record.commit or "none")[:12],
                "dirty": record.dirty,
                "host": record.machine.hostname,
                "device": record.device,
                "torch": record.torch_version or "-",
                "cuda": record.machine.cuda or "-",
                "python": record.python_version,
                "threads": record.threads,
                "deterministic": record.deterministic,
                "slurm job": record.slurm_job_id or "-",
                "resumed from epoch": record.job.resumed_from_epoch or "-",
            }
        )
    return pd.DataFrame(rows)


def _recorded(values: Sequence[Any], what: str) -> str:
    """The one value the runs recorded, or all of them when they differ."""
    found = sorted({str(value) for value in values if value is not None})
    if not found:
        return f"{what} (not recorded)"
    if len(found) == 1:
        return f"{what} {found[0]}"
    return f"{what} {' or '.join(found)} (the runs differ)"


def _code_warnings(commits: Sequence[str], dirty: Sequence[str]) -> list[str]:
    """The guide's warnings about code that cannot be pinned as one clean commit."""
    lines = []
    if not commits:
        lines += [
            "**Warning:** these runs record no git commit (they were not made in a git "
            "checkout), so the code that produced them cannot be pinned.",
            "",
        ]
    elif len(commits) > 1:
        lines += ["**Warning:** the runs come from several commits; reproduce each run alone.", ""]
    if dirty:
        lines += [
            f"**Warning:** {len(dirty)} run(s) were made on a dirty tree; each keeps its "
            "uncommitted diff as `uncommitted.patch` in its folder "
            "(`git apply` it after checkout).",
            "",
        ]
    return lines


def reproduction_guide(
    config: Mapping[str, Any],
    provenances: Mapping[str, provenance.Provenance],
    summary_shown: pd.DataFrame,
) -> str:
    """The exact steps that rebuild this experiment, with the results to expect (Markdown).

    The versions, threads and cores are those the runs recorded: `--cores` is the most
    threads one run used, so every run gets its own threads again.
    """
    records = list(provenances.values())
    commits = sorted({r.commit for r in records if r.commit})
    remotes = sorted({r.code.remote for r in records if r.code.remote})
    dirty = sorted(run for run, r in provenances.items() if r.dirty)
    threads = sorted({r.threads for r in records})
    resolved = {
        key: config[key] for key in ("experiment", "data", "grid", "search", "train", "analysis")
    }
    lines = [
        f"{_recorded([r.python_version for r in records], 'Python')}, "
        f"{_recorded([r.torch_version for r in records], 'torch')}, "
        f"{_recorded([r.torchvision_version for r in records], 'torchvision')}, "
        f"{' or '.join(map(str, threads))} thread(s) per run "
        "(CPU results are bit-identical for the same threads, hardware and versions).",
        "",
    ]
    lines += _code_warnings(commits, dirty)
    lines += [
        "Save the resolved configuration below as `reproduce.yaml`, then:",
        "",
        "```bash",
        f"git clone {remotes[0] if remotes else '<repository>'} reprogrid && cd reprogrid",
        f"git checkout {commits[0] if commits else '<commit>'}",
        provenance.install_command(records),
        f'PATH="$PWD/.venv/bin:$PATH" snakemake --cores {threads[-1]} --configfile reproduce.yaml',
        "```",
        "",
        f"`--cores {threads[-1]}` gives every run the threads it recorded; more cores train "
        "runs side by side, with the same results.",
        "",
        "```yaml",
        yaml.safe_dump(resolved, sort_keys=False).rstrip(),
        "```",
        "",
        "One run alone: `reprogrid reproduce results/<experiment>/runs/<run>` prints its steps.",
        "",
        "## Expected results",
        "",
        summary_shown.to_markdown(index=False),
        "",
    ]
    return "\n".join(lines)


def markdown_page(title: str, text: str) -> str:
    """Markdown rendered into an HTML page."""
    return page(title, markdown.markdown(text, extensions=["tables", "fenced_code"]))


def read_provenances(
    files: Iterable[tuple[str, str | Path]],
) -> dict[str, provenance.Provenance]:
    """Each run's record, by run id, from (run id, provenance file) pairs."""
    return {run: provenance.read(path) for run, path in files}
