"""Rule rungs: every decision of the search in one table."""

import sys

from reprogrid.record.logs import setup_logging

sm = snakemake  # noqa: F821 - injected by Snakemake
setup_logging(sm.log[0])

# Imported once the log is set up, so that even a failing import lands in the rule log.
from reprogrid.jobs.search import rungs_job  # noqa: E402

sys.exit(rungs_job(decisions=list(sm.input.decisions), output=sm.output.rungs))
