"""The data job: fetch, check and prepare a data set once for every training job."""

from __future__ import annotations

import logging

from reprogrid import atomic, data, rawfiles
from reprogrid.logs import setup_logging

log = logging.getLogger("reprogrid")


def prepare_data_job(
    *,
    dataset: str,
    raw_dir: str | None,
    verify: bool,
    key: str,
    download_dir: str,
    prepared_path: str,
    checks_path: str,
    log_path: str,
) -> int:
    """Fetch (unless `raw_dir` is given), check and prepare a data set; 1 on failure.

    `key` is the one planning gave the prepared data: files that changed since then are
    refused, so prepared data never sit under another content's key. Every failure ends in
    the log, bad data as one line, anything unexpected with its traceback.
    """
    setup_logging(log_path)
    try:
        _prepare(dataset, raw_dir, verify, key, download_dir, prepared_path, checks_path)
    except data.DataError as err:
        log.error("%s", err)
        return 1
    except Exception:
        log.exception("preparing %s failed", dataset)
        return 1
    return 0


def _prepare(
    dataset: str,
    raw_dir: str | None,
    verify: bool,
    key: str,
    download_dir: str,
    prepared_path: str,
    checks_path: str,
) -> None:
    if raw_dir is None:
        folder = data.download(dataset, download_dir)
    else:
        folder = raw_dir
        files = rawfiles.inspect(raw_dir)
        found = rawfiles.data_key(raw_dir, {f.path.name: f.sha256 for f in files.values()})
        if found != key:
            raise data.DataError(
                f"{raw_dir}: the files changed after planning (key {found}, planned {key}); "
                "run snakemake again"
            )
    log.info("preparing %s from %s", dataset, folder)
    record = {"raw_dir": raw_dir, **data.prepare(dataset, folder, prepared_path, verify)}
    if not record["verified"]:
        log.info("note: %s files are not its published ones (data.verify is off)", dataset)
    if not record["canonical_counts"]:
        log.info("note: %s counts %s differ from the published ones", dataset, record["counts"])
    atomic.write_json(checks_path, record)
    log.info(
        "prepared %s: %s images, sha256 %s", dataset, record["counts"], record["prepared_sha256"]
    )
