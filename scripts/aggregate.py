"""Rule aggregate: the grid's tables, statistics over seeds and comparisons."""

import sys

from reprogrid.plan.paths import RunFiles
from reprogrid.record.logs import setup_logging

sm = snakemake  # noqa: F821 - injected by Snakemake
setup_logging(sm.log[0])

# Imported once the log is set up, so that even a failing import lands in the rule log.
from reprogrid.jobs.analysis import aggregate_job  # noqa: E402

sys.exit(
    aggregate_job(
        run_files=[
            (run, RunFiles(*files))
            for run, *files in zip(
                sm.params.runs,
                sm.input.metrics,
                sm.input.history,
                sm.input.provenance,
                sm.input.model,
                strict=True,
            )
        ],
        axes=sm.params.axes,
        metrics=sm.params.metrics,
        select_metric=sm.params.select_metric,
        analysis=sm.params.analysis,
        repo=sm.params.repo,
        outputs=dict(sm.output.items()),
        rungs=sm.input.rungs[0] if sm.input.rungs else None,
    )
)
