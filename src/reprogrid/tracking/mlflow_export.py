"""Export finished runs to MLflow: one MLflow run per grid run, in the experiment's name.

A grid run's MLflow run is found again by its `reprogrid.key` tag. MLflow keeps params and
metric values once logged, so an unchanged run is left as it is, and a recomputed one (its
history, metrics or config differ: the `reprogrid.fingerprint` tag) replaces its MLflow run,
which MLflow marks deleted. Either way one active MLflow run stands for each grid run.
"""

from __future__ import annotations

import datetime as dt
import hashlib
import json
import logging
import urllib.error
import urllib.request
from collections import Counter
from collections.abc import Sequence
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

from reprogrid.plan import paths
from reprogrid.tracking import (
    KEY_TAG,
    TrackedRun,
    TrackingError,
    flatten,
    param_value,
    tracking_dir,
)

log = logging.getLogger("reprogrid")

FINGERPRINT_TAG = "reprogrid.fingerprint"
LOCAL_STORE = "mlflow"
# MLflow's limits of one log_batch request: params, and entities of every kind together.
MAX_PARAMS, MAX_ENTITIES = 100, 1000
PARALLEL = 4


def store(tracking_uri: str | None, experiment: str) -> tuple[str, str | None]:
    """The tracking URI to use and, for a local folder, the artifact location of its runs.

    A server URL (http, https) or a database URI is used as given; a folder (the default:
    results/<experiment>/tracking/mlflow) holds an SQLite store and the runs' artifacts.
    """
    uri = tracking_uri or f"{tracking_dir(experiment)}/{LOCAL_STORE}"
    if "://" in uri:
        return uri, None
    folder = Path(uri).resolve()
    folder.mkdir(parents=True, exist_ok=True)
    return f"sqlite:///{folder / 'mlflow.db'}", (folder / "artifacts").as_uri()


def check_reachable(uri: str, timeout: float = 10.0) -> None:
    """Refuse a tracking server that does not answer; any HTTP answer counts as one.

    The URI holds no credentials (planning refuses those), so the message may show it.
    """
    if urlsplit(uri).scheme not in ("http", "https"):
        return
    try:
        with urllib.request.urlopen(f"{uri.rstrip('/')}/health", timeout=timeout):
            pass
    except urllib.error.HTTPError:
        return
    except (urllib.error.URLError, OSError) as err:
        reason = getattr(err, "reason", err)
        raise TrackingError(
            f"cannot reach the MLflow server at {uri} ({reason}); start it, or fix "
            "tracking.mlflow.tracking_uri; the runs themselves are untouched"
        ) from None


def _millis(stamp: str | None) -> int | None:
    return int(dt.datetime.fromisoformat(stamp).timestamp() * 1000) if stamp else None


def params(run: TrackedRun, axes: Sequence[str]) -> dict[str, str]:
    """Every grid axis under its own name, then the full resolved config as `section.key`."""
    values = {name: param_value(value) for name, value in run.facts.axes(axes).items()}
    for name, value in flatten(run.facts.config).items():
        values[name] = param_value(value)
    return values


def tags(run: TrackedRun, axes: Sequence[str]) -> dict[str, str]:
    """What MLflow's UI filters and groups by: the run's key, setting, axes, code and data."""
    facts = run.facts
    found = {
        KEY_TAG: facts.key,
        "reprogrid.run": facts.run,
        "reprogrid.setting": facts.setting,
        "reprogrid.status": run.status,
        "reprogrid.dirty": param_value(facts.dirty),
        "reprogrid.host": facts.host or "",
        "mlflow.runName": facts.run,
        "mlflow.source.name": "reprogrid",
        **{f"axis.{name}": param_value(value) for name, value in facts.axes(axes).items()},
        **{f"data.sha256.{name}": digest for name, digest in facts.data_sha256.items()},
    }
    if facts.commit:
        found["mlflow.source.git.commit"] = facts.commit
    if facts.remote:
        found["mlflow.source.git.repoURL"] = facts.remote
    return found


def metrics(run: TrackedRun) -> list[tuple[str, float, int]]:
    """(name, value, step): every history column per epoch, then the final metrics at step 0."""
    found = [
        (column, row[column], int(row["epoch"])) for row in run.history for column in run.columns
    ]
    return found + [(f"final/{name}", value, 0) for name, value in run.final_metrics().items()]


def fingerprint(run_params: dict[str, str], run: TrackedRun) -> str:
    """What a run's MLflow run holds and MLflow cannot change in place."""
    content = {"params": run_params, "metrics": metrics(run), "status": run.status}
    return hashlib.sha256(json.dumps(content, sort_keys=True).encode()).hexdigest()


def batches(params: list, metrics: list):
    """(params, metrics) chunks for log_batch: as few requests as MLflow's limits allow."""
    while params or metrics:
        param_chunk, params = params[:MAX_PARAMS], params[MAX_PARAMS:]
        room = MAX_ENTITIES - len(param_chunk)
        metric_chunk, metrics = metrics[:room], metrics[room:]
        yield param_chunk, metric_chunk


class MlflowExporter:
    """Exports runs of one reprogrid experiment to one MLflow tracking store."""

    def __init__(self, tracking_uri: str | None, experiment: str) -> None:
        from mlflow.tracking import MlflowClient

        self.uri, artifact_location = store(tracking_uri, experiment)
        check_reachable(self.uri)
        self.client = MlflowClient(tracking_uri=self.uri)
        self.experiment_id = self._experiment(experiment, artifact_location)
        self.existing = self._existing_runs()

    def _experiment(self, name: str, artifact_location: str | None) -> str:
        found = self.client.get_experiment_by_name(name)
        if found is None:
            return self.client.create_experiment(name, artifact_location=artifact_location)
        if found.lifecycle_stage == "deleted":
            self.client.restore_experiment(found.experiment_id)
        return found.experiment_id

    def _existing_runs(self) -> dict[str, Any]:
        """The experiment's active MLflow runs that carry a reprogrid key, by key."""
        found: dict[str, Any] = {}
        token = None
        while True:
            page = self.client.search_runs([self.experiment_id], max_results=1000, page_token=token)
            for mlflow_run in page:
                key = mlflow_run.data.tags.get(KEY_TAG)
                if key is None:
                    continue
                if key in found:
                    self.client.delete_run(mlflow_run.info.run_id)
                else:
                    found[key] = mlflow_run
            token = page.token
            if not token:
                return found

    def export(self, run: TrackedRun, axes: Sequence[str], with_model: bool) -> tuple[str, str]:
        """Export one run; its MLflow run id and what happened (created, replaced, unchanged)."""
        from mlflow.entities import Metric, Param

        run_params = params(run, axes)
        mark = fingerprint(run_params, run)
        previous = self.existing.get(run.facts.key)
        if previous is not None and previous.data.tags.get(FINGERPRINT_TAG) == mark:
            return previous.info.run_id, "unchanged"
        if previous is not None:
            self.client.delete_run(previous.info.run_id)
        started = _millis(run.facts.finished)
        run_tags = {**tags(run, axes), FINGERPRINT_TAG: mark}
        created = self.client.create_run(
            self.experiment_id,
            start_time=started,
            tags=run_tags,
            run_name=run.facts.run,
        )
        run_id = created.info.run_id
        for param_chunk, metric_chunk in batches(
            [Param(name, value) for name, value in run_params.items()],
            [Metric(name, value, started or 0, step) for name, value, step in metrics(run)],
        ):
            self.client.log_batch(run_id, params=param_chunk, metrics=metric_chunk)
        for path in run.files(with_model):
            if path.name in ("metrics.json", "history.csv"):
                continue  # they are the run's metrics already
            folder = "code" if path.name == paths.DIFF_PATCH else None
            self.client.log_artifact(run_id, str(path), artifact_path=folder)
        self.client.set_terminated(
            run_id, status="FINISHED" if run.status == "ok" else "FAILED", end_time=started
        )
        return run_id, "replaced" if previous is not None else "created"


def export_runs(
    runs: Sequence[TrackedRun],
    *,
    experiment: str,
    settings: dict[str, Any],
    axes: Sequence[str],
    with_model: bool,
) -> dict[str, Any]:
    """Export every run; the record the export job writes (no credentials in it)."""
    exporter = MlflowExporter(settings["tracking_uri"], experiment)
    # Each run is a few requests that mostly wait on the server: a few at a time overlap.
    with ThreadPoolExecutor(max_workers=PARALLEL) as pool:
        done = list(pool.map(lambda run: exporter.export(run, axes, with_model), runs))
    exported = {run.facts.run: run_id for run, (run_id, _) in zip(runs, done, strict=True)}
    counts = Counter(what for _, what in done)
    log.info("mlflow: %s", ", ".join(f"{n} {what}" for what, n in sorted(counts.items())))
    return {
        "tracker": "mlflow",
        "tracking_uri": exporter.uri,
        "experiment_id": exporter.experiment_id,
        "runs": exported,
    }
