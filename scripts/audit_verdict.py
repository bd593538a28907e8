"""Rule audit: pass when every audited run reproduced; otherwise fail naming the runs."""

import sys

from reprogrid.record.logs import setup_logging

sm = snakemake  # noqa: F821 - injected by Snakemake
setup_logging(sm.log[0])

# Imported once the log is set up, so that even a failing import lands in the rule log.
from reprogrid.analysis.audit import conclude  # noqa: E402

sys.exit(conclude(table=sm.input.table, html_page=sm.input.html, passed=sm.output.passed))
