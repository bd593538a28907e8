"""Checkpoint halve: one rung's decision, which settings of the search go on."""

import sys

from reprogrid.record.logs import setup_logging

sm = snakemake  # noqa: F821 - injected by Snakemake
setup_logging(sm.log[0])

# Imported once the log is set up, so that even a failing import lands in the rule log.
from reprogrid.jobs.search import halve_job  # noqa: E402

sys.exit(
    halve_job(
        rung=int(sm.wildcards.rung),
        epochs=sm.params.epochs,
        results=list(sm.input),
        eta=sm.params.eta,
        metrics=sm.params.metrics,
        metric=sm.params.metric,
        output=sm.output.decision,
    )
)
