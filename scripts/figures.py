"""Rule figures: learning curves, heatmap and seed spread of the compared metric, run curves."""

import sys

from reprogrid.record.logs import setup_logging

sm = snakemake  # noqa: F821 - injected by Snakemake
setup_logging(sm.log[0])

# Imported once the log is set up, so that even a failing import lands in the rule log.
from reprogrid.jobs.analysis import figures_job  # noqa: E402

sys.exit(
    figures_job(
        histories=sm.input.histories,
        runs=sm.input.runs,
        summary=sm.input.summary,
        axes=sm.params.axes,
        metrics=sm.params.metrics,
        metric=sm.params.metric,
        outputs=dict(sm.output.items()),
    )
)
