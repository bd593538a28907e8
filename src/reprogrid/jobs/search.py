"""The search jobs: a rung's decision, and the table and figure of all decisions."""

from __future__ import annotations

import json
import logging
from collections.abc import Mapping, Sequence
from pathlib import Path

import pandas as pd

from reprogrid.plan import halving
from reprogrid.record import atomic
from reprogrid.tasks.spec import Metrics

log = logging.getLogger("reprogrid")


def halve_job(
    *,
    rung: int,
    epochs: int,
    results: Sequence[str],
    eta: int,
    metrics: Mapping[str, str],
    metric: str,
    output: str,
) -> int:
    """Decide a rung: rank the settings whose runs reached it by `metric`, in the direction
    the task's `metrics` (names and directions) declare, keep the best 1/eta of each
    architecture, and write every setting with its score and whether it goes on."""
    scores = {}
    for path in results:
        reached = json.loads(Path(path).read_text())
        if reached["epochs"] != epochs:
            log.error(
                "reprogrid: %s holds epoch %s, not rung %d's %d; delete it to train it again",
                path,
                reached["epochs"],
                rung,
                epochs,
            )
            return 1
        scores[reached["run"]] = reached["metrics"][metric]
    rows = halving.decide(rung, epochs, scores, eta, Metrics(dict(metrics)), metric)
    kept = sum(row["kept"] for row in rows)
    log.info("rung %d (%d epochs): %d of %d settings go on", rung, epochs, kept, len(rows))
    atomic.write_text(output, halving.decision_csv(rows))
    return 0


def rungs_job(*, decisions: Sequence[str], output: str) -> int:
    """Every decision of the search in one table, rung by rung."""
    rows = [row for path in decisions for row in halving.read_decision(Path(path).read_text())]
    atomic.write_text(output, halving.decision_csv(rows))
    return 0


def rung_figure_job(
    *,
    rungs: str,
    runs: str,
    metrics: Mapping[str, str],
    metric: str,
    max_epochs: int,
    outputs: Mapping[str, str],
) -> int:
    """The figure of the rungs: each setting's `metric` at every rung it reached, ending at
    the finished settings' over seeds (from runs.csv), labelled by the task's `metrics`."""
    from reprogrid.analysis import plots

    figure = plots.search_rungs(
        pd.read_csv(rungs), pd.read_csv(runs), Metrics(dict(metrics)), metric, max_epochs
    )
    plots.save(figure, outputs["pdf"])
    plots.save(figure, outputs["png"])
    return 0
