"""Rule sync: copy the experiment's results and reports to sync.remote, each to the same path
under it; deletes there only when sync.delete is true."""

import logging

from reprogrid.record.logs import setup_logging

sm = snakemake  # noqa: F821 - injected by Snakemake
setup_logging(sm.log[0])

# Imported once the log is set up, so that even a failing import lands in the rule log.
from reprogrid.commands import remote  # noqa: E402

for folder in sm.params.folders:
    destination = remote.join(sm.params.remote, folder)
    copied = remote.copy(folder, destination, delete=sm.params.delete)
    logging.getLogger("reprogrid").info(
        "%s -> %s: %d files copied, %d deleted",
        folder,
        destination,
        copied.transferred,
        copied.deleted,
    )
