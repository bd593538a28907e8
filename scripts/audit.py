"""Rule audit_retrain: retrain the sampled runs in the scratch area and write the audit table."""

import sys
from pathlib import Path

from reprogrid.plan.paths import RunFiles
from reprogrid.record.logs import setup_logging

sm = snakemake  # noqa: F821 - injected by Snakemake
setup_logging(sm.log[0])

# Imported once the log is set up, so that even a failing import lands in the rule log.
from reprogrid.jobs.audit import audit_job  # noqa: E402

sys.exit(
    audit_job(
        task_name=sm.params.task,
        stored=[
            (run, RunFiles(*files))
            for run, *files in zip(
                sm.params.runs,
                sm.input.metrics,
                sm.input.history,
                sm.input.provenance,
                sm.input.models,
                strict=True,
            )
        ],
        checks_path=sm.input.checks,
        prepared_path=sm.input.data,
        scratch=sm.params.scratch,
        outputs=dict(sm.output.items()),
        log_path=sm.log[0],
        gpus=int(sm.resources.get("gpu", 0)),
        repo_dir=str(Path(sm.scriptdir).parent),
    )
)
