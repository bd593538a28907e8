"""Rule track: export the grid's finished runs to one tracker (W&B or MLflow)."""

import sys
from pathlib import Path

from reprogrid.jobs.track import track_job
from reprogrid.record.logs import setup_logging

sm = snakemake  # noqa: F821 - injected by Snakemake
setup_logging(sm.log[0])
sys.exit(
    track_job(
        tracker=sm.wildcards.tracker,
        experiment=sm.params.experiment,
        run_dirs=[str(Path(path).parent) for path in sm.input.provenance],
        settings=sm.params.settings,
        axes=sm.params.axes,
        output=sm.output.record,
    )
)
