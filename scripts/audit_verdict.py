"""Rule audit: pass when every audited run reproduced; otherwise fail naming the runs."""

import sys

from reprogrid.jobs.audit import audit_verdict_job
from reprogrid.logs import setup_logging

sm = snakemake  # noqa: F821 - injected by Snakemake
setup_logging(sm.log[0])
sys.exit(audit_verdict_job(table=sm.input.table, html_page=sm.input.html, passed=sm.output.passed))
