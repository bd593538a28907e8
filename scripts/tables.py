"""Rule tables: report tables (HTML), thesis tables (LaTeX, Markdown), guide and lab book."""

import sys

from reprogrid.jobs.analysis import tables_job
from reprogrid.logs import setup_logging

sm = snakemake  # noqa: F821 - injected by Snakemake
setup_logging(sm.log[0])
sys.exit(
    tables_job(
        experiment=sm.params.experiment,
        runs=sm.params.runs,
        axes=sm.params.axes,
        config=sm.params.config,
        labbook=sm.input.labbook[0] if sm.input.labbook else None,
        inputs=dict(sm.input.items()),
        outputs=dict(sm.output.items()),
    )
)
