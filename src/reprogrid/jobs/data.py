"""The data job: fetch, check and prepare a data set once for every training job."""

from __future__ import annotations

import logging

from reprogrid import atomic, data, paths
from reprogrid.logs import setup_logging

log = logging.getLogger("reprogrid")


def prepare_data_job(
    *, dataset: str, raw_dir: str | None, prepared_path: str, checks_path: str, log_path: str
) -> int:
    """Fetch (unless `raw_dir` is given), check and prepare a data set; 1 on bad data."""
    setup_logging(log_path)
    try:
        folder = raw_dir or data.download(dataset, paths.download_dir(dataset))
        log.info("preparing %s from %s", dataset, folder)
        record = {"raw_dir": raw_dir, **data.prepare(dataset, folder, prepared_path)}
    except data.DataError as err:
        log.error("%s", err)
        return 1
    if not record["canonical_counts"]:
        log.info("note: %s counts %s differ from the published ones", dataset, record["counts"])
    atomic.write_json(checks_path, record)
    log.info(
        "prepared %s: %s images, sha256 %s", dataset, record["counts"], record["prepared_sha256"]
    )
    return 0
