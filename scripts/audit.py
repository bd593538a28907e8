"""Rule audit_retrain: retrain the sampled runs in the scratch area and write the audit table."""

import sys
from pathlib import Path

from reprogrid.jobs.audit import audit_job

sm = snakemake  # noqa: F821 - injected by Snakemake
sys.exit(
    audit_job(
        experiment=sm.params.experiment,
        runs=sm.params.runs,
        checks_path=sm.input.checks,
        prepared_path=sm.input.data,
        scratch=sm.params.scratch,
        outputs=dict(sm.output.items()),
        log_path=sm.log[0],
        gpus=int(sm.resources.get("gpu", 0)),
        repo_dir=str(Path(sm.scriptdir).parent),
    )
)
