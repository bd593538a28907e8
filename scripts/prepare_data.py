"""Rule prepare_data: run the task's `load` on the raw files and write the prepared tensors."""

import sys

from reprogrid.record.logs import setup_logging

sm = snakemake  # noqa: F821 - injected by Snakemake
setup_logging(sm.log[0])

# Imported once the log is set up, so that even a failing import lands in the rule log.
from reprogrid.jobs.data import prepare_data_job  # noqa: E402

sys.exit(
    prepare_data_job(
        task=sm.params.task,
        dataset=sm.params.dataset,
        raw_dir=sm.params.raw_dir,
        verify=sm.params.verify,
        key=sm.params.key,
        download_dir=sm.params.download_dir,
        prepared_path=sm.output.prepared,
        checks_path=sm.output.checks,
        log_path=sm.log[0],
    )
)
