"""Rule prepare_data: check the raw IDX files and write the prepared tensors."""

import sys

from reprogrid.jobs.data import prepare_data_job

sm = snakemake  # noqa: F821 - injected by Snakemake
sys.exit(
    prepare_data_job(
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
