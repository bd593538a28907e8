"""Rule rung_figure: each setting's score at every rung of the search."""

import sys

from reprogrid.record.logs import setup_logging

sm = snakemake  # noqa: F821 - injected by Snakemake
setup_logging(sm.log[0])

# Imported once the log is set up, so that even a failing import lands in the rule log.
from reprogrid.jobs.search import rung_figure_job  # noqa: E402

sys.exit(
    rung_figure_job(
        rungs=sm.input.rungs,
        runs=sm.input.runs,
        metrics=sm.params.metrics,
        metric=sm.params.metric,
        max_epochs=sm.params.max_epochs,
        outputs=dict(sm.output.items()),
    )
)
