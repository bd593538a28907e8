"""The data job: run a task's `load` once and prepare its data for every training job."""

from __future__ import annotations

import logging

from reprogrid.datasets import data, rawfiles
from reprogrid.plan import fingerprint
from reprogrid.record import atomic
from reprogrid.record.logs import setup_logging
from reprogrid.tasks import spec as taskspec

log = logging.getLogger("reprogrid")


def prepare_data_job(
    *,
    task: str,
    dataset: str | None,
    raw_dir: str | None,
    verify: bool,
    key: str,
    download_dir: str,
    prepared_path: str,
    checks_path: str,
    log_path: str,
) -> int:
    """Fetch (the built-in IDX task, unless `raw_dir` is given), check and prepare the data
    of `task`; 1 on failure.

    `key` is the one planning gave the prepared data: files that changed since then are
    refused, so prepared data never sit under another content's key. Every failure ends in
    the log, bad data as one line, anything unexpected (a task's `load` raising among them)
    with its traceback.
    """
    setup_logging(log_path)
    try:
        _prepare(task, dataset, raw_dir, verify, key, download_dir, prepared_path, checks_path)
    except data.DataError as err:
        log.error("%s", err)
        return 1
    except taskspec.TaskError as err:
        log.error("reprogrid: %s", err)
        return 1
    except Exception:
        log.exception("preparing the data of task %s failed", task)
        return 1
    return 0


def _planned_key(task: str, dataset: str | None, raw_dir: str) -> str:
    """The key planning would give the files under `raw_dir` now."""
    if dataset is not None:
        files = rawfiles.inspect(raw_dir)
        return rawfiles.data_key(raw_dir, {f.path.name: f.sha256 for f in files.values()})
    files = rawfiles.folder_files(raw_dir)
    return rawfiles.data_key(raw_dir, rawfiles.digests_of(raw_dir, files), task)


def _prepare(
    task: str,
    dataset: str | None,
    raw_dir: str | None,
    verify: bool,
    key: str,
    download_dir: str,
    prepared_path: str,
    checks_path: str,
) -> None:
    from reprogrid.tasks.runtime import Task

    spec = taskspec.read(task)
    if raw_dir is None:
        folder = data.download(dataset, download_dir) if dataset is not None else None
    else:
        folder = raw_dir
        found = _planned_key(task, dataset, raw_dir)
        if found != key:
            raise data.DataError(
                f"{raw_dir}: the files changed after planning (key {found}, planned {key}); "
                "run snakemake again"
            )
    log.info("preparing the data of task %s from %s", task, folder)
    prepared = data.prepare(Task.open(spec), folder, prepared_path, dataset=dataset, verify=verify)
    record = {"raw_dir": raw_dir, **prepared, "task_fingerprint": fingerprint.of_task(spec)}
    if dataset is not None and not record["verified"]:
        log.info("note: %s files are not its published ones (data.verify is off)", dataset)
    if dataset is not None and not record["canonical_counts"]:
        log.info("note: %s counts %s differ from the published ones", dataset, record["counts"])
    atomic.write_json(checks_path, record)
    log.info(
        "prepared the data of task %s: %s examples, sha256 %s",
        task,
        record["counts"],
        record["prepared_sha256"],
    )
