"""Successive halving: which epochs each rung trains to, and who goes on.

A search's runs all train with `halving.max_epochs` as their number of epochs (the horizon
of their learning-rate schedule); a rung stops them early, at `rung_epochs`, and a decision
keeps the best settings of each architecture, which resume from their checkpoints to the
next rung. A setting is a run without its seed: its score is the mean of the metric over
its seeds, so a decision never rests on one lucky seed. Only validation metrics decide.

This module imports nothing heavy: Snakemake reads decisions while it plans.
"""

from __future__ import annotations

import csv
import io
import math
from collections.abc import Iterable, Mapping, Sequence
from pathlib import Path
from typing import Any

from reprogrid.plan import paths
from reprogrid.tasks.spec import Metrics

# What a rung's decision table holds, one row per setting that entered the rung.
DECISION_COLUMNS = ("rung", "epochs", "arch", "point", "seeds", "metric", "kept")


def rung_epochs(min_epochs: int, max_epochs: int, eta: int) -> list[int]:
    """The epochs each rung trains to: min_epochs, eta times as many, ..., max_epochs."""
    epochs = [min_epochs]
    while epochs[-1] < max_epochs:
        epochs.append(min(epochs[-1] * eta, max_epochs))
    return epochs


def rungs(settings: Mapping[str, Any]) -> list[int] | None:
    """The rungs the `halving` block asks for (`rung_epochs`), or None when it is off."""
    if not settings["enabled"]:
        return None
    return rung_epochs(settings["min_epochs"], settings["max_epochs"], settings["eta"])


def keep_count(entered: int, eta: int) -> int:
    """How many of `entered` settings a rung keeps: the best 1/eta, at least one."""
    return max(1, entered // eta)


def setting_of(run: str) -> str:
    """A run's setting: its id without the seed, shared by the run's seeds."""
    return run.rsplit("/seed=", 1)[0]


def arch_of(setting: str) -> str:
    """A setting's (or a run's) architecture, the bracket it competes in."""
    return paths.parse_run_id(setting)["arch"]


def decide(
    rung: int,
    epochs: int,
    results: Mapping[str, float | None],
    eta: int,
    metrics: Metrics,
    metric: str,
) -> list[dict[str, Any]]:
    """One rung's decision: every setting that entered it, its score, and whether it goes on.

    `results` maps each run of the rung to its `metric` at the rung (None when the run
    diverged), ranked in the direction the task's `metrics` declare. Settings compete
    within their architecture; a setting with a diverged seed scores nothing and ranks
    last; ties go to the setting named first, so the decision is a function of the results
    alone.
    """
    seeds: dict[str, list[float | None]] = {}
    for run in sorted(results):
        seeds.setdefault(setting_of(run), []).append(results[run])
    scores = {
        setting: None if None in values else math.fsum(values) / len(values)
        for setting, values in seeds.items()
    }
    brackets: dict[str, list[str]] = {}
    for setting in sorted(scores):
        brackets.setdefault(arch_of(setting), []).append(setting)
    sign = metrics.sign(metric)
    rows = []
    for arch, settings in sorted(brackets.items()):
        ranked = sorted(
            settings,
            key=lambda s: (scores[s] is None, -sign * (scores[s] or 0.0), s),
        )
        kept = set(ranked[: keep_count(len(ranked), eta)])
        rows += [
            {
                "rung": rung,
                "epochs": epochs,
                "arch": arch,
                "point": setting,
                "seeds": len(seeds[setting]),
                "metric": scores[setting],
                "kept": setting in kept,
            }
            for setting in ranked
        ]
    return rows


def decision_csv(rows: Iterable[Mapping[str, Any]]) -> str:
    """A decision table as CSV text (floats written exactly, so a reread ranks the same)."""
    buffer = io.StringIO()
    writer = csv.DictWriter(buffer, fieldnames=DECISION_COLUMNS, lineterminator="\n")
    writer.writeheader()
    for row in rows:
        writer.writerow(
            {
                **row,
                "metric": "" if row["metric"] is None else repr(row["metric"]),
                "kept": str(row["kept"]).lower(),
            }
        )
    return buffer.getvalue()


def read_decision(text: str) -> list[dict[str, Any]]:
    """A decision table's rows, typed as `decide` made them."""
    return [
        {
            "rung": int(row["rung"]),
            "epochs": int(row["epochs"]),
            "arch": row["arch"],
            "point": row["point"],
            "seeds": int(row["seeds"]),
            "metric": float(row["metric"]) if row["metric"] else None,
            "kept": row["kept"] == "true",
        }
        for row in csv.DictReader(io.StringIO(text))
    ]


def kept_runs(decision: Sequence[Mapping[str, Any]], runs: Iterable[str]) -> list[str]:
    """The runs among `runs` whose setting a decision kept, in the order of `runs`."""
    kept = {row["point"] for row in decision if row["kept"]}
    return [run for run in runs if setting_of(run) in kept]


def rung_metrics(
    history: Sequence[Mapping[str, Any]],
    epochs: int,
    select_metric: str,
    status: str,
    metrics: Metrics,
) -> dict[str, Any]:
    """What a run would report had it been trained for `epochs` epochs only.

    The kept epoch is the best of the first `epochs` by `select_metric`, as training keeps
    it (`Metrics.best_row`); a diverged run reports no metrics.
    """
    rows = list(history[:epochs])
    best = metrics.best_row(rows, select_metric)
    chosen = best if status == "ok" and best is not None else {}
    return {
        "status": status,
        **{key: chosen.get(key) for key in metrics.run_keys()},
        "best_epoch": chosen.get("epoch"),
        "epochs_run": len(rows),
    }


def outline(decisions: Sequence[Mapping[str, Any]]) -> dict[str, Any]:
    """What a search decided, for the conclusion: per rung, the settings that entered it and
    those kept; in all, the settings stopped before the end (in no summary)."""
    rungs: dict[int, dict[str, Any]] = {}
    for row in decisions:
        entry = rungs.setdefault(
            row["rung"], {"rung": row["rung"], "epochs": row["epochs"], "settings": 0, "kept": 0}
        )
        entry["settings"] += 1
        entry["kept"] += bool(row["kept"])
    ordered = [rungs[rung] for rung in sorted(rungs)]
    return {
        "rungs": ordered,
        "stopped": sum(entry["settings"] - entry["kept"] for entry in ordered),
    }


def dropped(experiment: str, runs: Iterable[str]) -> dict[str, dict[str, Any]]:
    """The runs among `runs` whose setting a decision written so far stopped, each with the
    rung and epochs it stopped at (read from results/<experiment>/search/)."""
    stopped: dict[str, dict[str, Any]] = {}
    rung = 0
    while (path := Path(paths.search_file(experiment, f"rung-{rung}.csv"))).is_file():
        for row in read_decision(path.read_text(encoding="utf-8")):
            if not row["kept"]:
                stopped[row["point"]] = {"rung": row["rung"], "epochs": row["epochs"]}
        rung += 1
    return {run: stopped[setting_of(run)] for run in runs if setting_of(run) in stopped}
