"""Rule tables: report tables (HTML), thesis tables (LaTeX, Markdown), guide and lab book."""

import sys

from reprogrid.record.logs import setup_logging

sm = snakemake  # noqa: F821 - injected by Snakemake
setup_logging(sm.log[0])

# Imported once the log is set up, so that even a failing import lands in the rule log.
from reprogrid.jobs.analysis import tables_job  # noqa: E402

sys.exit(
    tables_job(
        experiment=sm.params.experiment,
        provenance_files=list(zip(sm.params.runs, sm.input.provenance, strict=True)),
        axes=sm.params.axes,
        metrics=sm.params.metrics,
        metric=sm.params.metric,
        config=sm.params.config,
        labbook=sm.input.labbook[0] if sm.input.labbook else None,
        inputs=dict(sm.input.items()),
        outputs=dict(sm.output.items()),
    )
)
