"""Rule train: train one run of the grid and write its metrics, curve, weights and provenance."""

import sys
from pathlib import Path

from reprogrid.jobs.train import train_job

sm = snakemake  # noqa: F821 - injected by Snakemake
sys.exit(
    train_job(
        run=sm.wildcards.run,
        params=sm.params.train,
        experiment=sm.params.experiment,
        split=sm.params.split,
        prepared_path=sm.input.data,
        checks_path=sm.input.checks,
        outputs=dict(sm.output.items()),
        log_path=sm.log[0],
        threads=sm.threads,
        gpus=int(sm.resources.get("gpu", 0)),
        repo_dir=str(Path(sm.scriptdir).parent),
    )
)
