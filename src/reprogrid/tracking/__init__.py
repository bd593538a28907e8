"""Finished runs, as the experiment trackers (W&B, MLflow) receive them.

A tracker never touches a training job: export is its own job that reads what a run wrote
(metrics.json, history.csv, provenance.json, uncommitted.patch, and model.pt when asked).
`run_facts` is the one reader of a run's provenance; `load_run` adds its history and final
metrics. Credentials live only in the environment or a git-ignored `.env`, where the tracker
libraries read them; nothing here copies them anywhere.

This module imports neither tracker: planning checks them with `check` without loading them.
May import `record` and `plan`.
"""

from __future__ import annotations

import hashlib
import importlib.util
import json
import os
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any
from urllib.parse import parse_qsl, urlsplit

from reprogrid.plan import paths
from reprogrid.record import damage, provenance

TRACKERS = ("mlflow", "wandb")
INSTALL_HINT = "pip install -e '.[tracking]'"
DOTENV = ".env"

# Tags that find a grid run's tracker run again: the experiment and the run id, together.
KEY_TAG = "reprogrid.key"


def tracking_dir(experiment: str) -> str:
    """Where an experiment's exports live: their records, W&B's files, a local MLflow store."""
    return f"{paths.experiment_dir(experiment)}/tracking"


def record_path(experiment: str, tracker: str) -> str:
    """The export job's record: which tracker run stands for each grid run."""
    return f"{tracking_dir(experiment)}/{tracker}.json"


class TrackingError(RuntimeError):
    """A tracker setting or state that stops an export; the message is meant for the user as is."""


@dataclass(frozen=True)
class RunFacts:
    """What a run's provenance says about it, in the terms a tracker needs."""

    run: str
    experiment: str
    config: dict[str, Any]
    commit: str | None
    dirty: bool | None
    remote: str | None
    data_sha256: dict[str, str]
    host: str | None
    patch: Path | None
    finished: str | None

    @property
    def train(self) -> dict[str, Any]:
        """The run's full resolved training configuration."""
        return self.config["train"]

    @property
    def key(self) -> str:
        """The run's name across experiments: `<experiment>:<run id>`."""
        return f"{self.experiment}:{self.run}"

    @property
    def setting(self) -> str:
        """The run id without its seed: the runs that differ only by seed share it."""
        return self.run.rsplit("/seed=", 1)[0]

    def axes(self, grid_axes: Sequence[str]) -> dict[str, Any]:
        """The value of every grid axis, and of every axis the run id names."""
        names = [
            *grid_axes,
            *(name for name in paths.parse_run_id(self.run) if name not in grid_axes),
        ]
        return {name: self.train[name] for name in names}


def run_facts(run_dir: str | Path) -> RunFacts:
    """A finished run's provenance record (`provenance.read_run`) in the terms a tracker needs."""
    folder = Path(run_dir)
    try:
        record = provenance.read_run(folder)
    except provenance.ProvenanceError as error:
        raise TrackingError(str(error)) from None
    return RunFacts(
        run=record.run,
        experiment=record.experiment,
        config=record.to_dict()["config"],
        commit=record.commit,
        dirty=record.dirty,
        remote=record.code.remote,
        data_sha256={**record.data.raw_sha256, "prepared": record.data.prepared_sha256},
        host=record.machine.hostname,
        patch=folder / record.code.patch if record.code.patch else None,
        finished=record.job.finished,
    )


@dataclass(frozen=True)
class TrackedRun:
    """One finished run: its facts, its per-epoch history and its final metrics."""

    folder: Path
    facts: RunFacts
    columns: tuple[str, ...]
    history: list[dict[str, float]]
    metrics: dict[str, Any]

    @property
    def status(self) -> str:
        return str(self.metrics.get("status"))

    def final_metrics(self) -> dict[str, float]:
        """The numeric values of metrics.json (the chosen epoch's metrics, timings, counts)."""
        return {
            name: float(value)
            for name, value in self.metrics.items()
            if isinstance(value, int | float) and not isinstance(value, bool)
        }

    def files(self, with_model: bool) -> list[Path]:
        """The run's files a tracker stores beside it; the weights only `with_model`."""
        names = ["metrics.json", "history.csv", "provenance.json"]
        found = [self.folder / name for name in names]
        if self.facts.patch is not None and self.facts.patch.is_file():
            found.append(self.facts.patch)
        if with_model:
            found.append(self.folder / "model.pt")
        return found


def load_run(run_dir: str | Path, with_model: bool = False) -> TrackedRun:
    """A finished run folder, read whole; refused when a file is missing or damaged
    (`damage.check_run`; its model.pt too when the model goes `with_model`)."""
    folder = Path(run_dir)
    files = paths.files_in(folder)
    try:
        _, metrics = damage.check_run(files if with_model else files._replace(model=None))
        columns, history = damage.read_history(files.history)
    except provenance.ProvenanceError as error:
        raise TrackingError(str(error)) from None
    return TrackedRun(
        folder=folder,
        facts=run_facts(folder),
        columns=columns,
        history=history,
        metrics=metrics,
    )


def param_value(value: Any) -> str:
    """A config value as a tracker param: strings as they are, anything else as JSON."""
    return value if isinstance(value, str) else json.dumps(value)


def flatten(config: Mapping[str, Any], prefix: str = "") -> dict[str, Any]:
    """A nested configuration as `a.b.c -> value`."""
    flat: dict[str, Any] = {}
    for key, value in config.items():
        name = f"{prefix}{key}"
        if isinstance(value, Mapping):
            flat.update(flatten(value, f"{name}."))
        else:
            flat[name] = value
    return flat


def wandb_run_id(experiment: str, run: str) -> str:
    """The W&B run id of a grid run: the same every export, so re-export resumes that run."""
    return "rg-" + hashlib.sha256(f"{experiment}\0{run}".encode()).hexdigest()[:24]


def read_dotenv(path: str | Path) -> dict[str, str]:
    """The `NAME=value` lines of a `.env` file (`export`, quotes and `#` comments allowed);
    a name left empty (as in `.env.example`) is not set."""
    path = Path(path)
    if not path.is_file():
        return {}
    found = {}
    for line in path.read_text(encoding="utf-8").splitlines():
        line = line.strip()
        if not line or line.startswith("#") or "=" not in line:
            continue
        name, value = line.removeprefix("export ").split("=", 1)
        value = value.strip()
        if len(value) >= 2 and value[0] == value[-1] and value[0] in "'\"":
            value = value[1:-1]
        elif " #" in value:
            value = value.split(" #", 1)[0].rstrip()
        if value:
            found[name.strip()] = value
    return found


def load_dotenv(path: str | Path = DOTENV) -> None:
    """Put a `.env` file's variables into this process's environment; set ones win."""
    for name, value in read_dotenv(path).items():
        os.environ.setdefault(name, value)


def installed(tracker: str) -> bool:
    """Whether this interpreter can import the tracker's package (without importing it)."""
    return importlib.util.find_spec(tracker) is not None


def enabled(tracking: Mapping[str, Any]) -> list[str]:
    """The trackers the `tracking` config turns on."""
    return [name for name in TRACKERS if tracking[name]["enabled"]]


def check(
    tracking: Mapping[str, Any], env: Mapping[str, str], *, packages: bool = True
) -> list[str]:
    """The enabled trackers, after the checks a schema cannot make; `env` is the environment
    with `.env` under it, `packages` whether this interpreter is the one that will export
    (not so when a conda env or container runs the job). Raises TrackingError naming the key
    and what to do."""
    trackers = enabled(tracking)
    for name in trackers:
        if packages and not installed(name):
            raise TrackingError(
                f"config key tracking.{name}.enabled: the {name} package is not installed; "
                f"install the tracking extra ({INSTALL_HINT}) or set it to false"
            )
    wandb = tracking["wandb"]
    if (
        "wandb" in trackers
        and wandb["mode"] == "online"
        and not (wandb["project"] or env.get("WANDB_PROJECT"))
    ):
        raise TrackingError(
            "config key tracking.wandb.project: online mode needs a project; set it, or "
            "WANDB_PROJECT in the environment or .env"
        )
    uri = tracking["mlflow"]["tracking_uri"]
    if uri is not None:
        check_tracking_uri(uri)
    return trackers


# What MLflow tracks to besides a folder: a server, a file store, a database (SQLAlchemy's
# dialects, optionally with a driver: postgresql+psycopg2).
SERVER_SCHEMES = ("http", "https")
STORE_SCHEMES = ("file", "sqlite", "postgresql", "mysql", "mssql")
# Query parameters of a database URI that carry a secret.
_SECRET_WORDS = ("password", "passwd", "pwd", "token", "secret", "credential", "auth")


def check_tracking_uri(uri: str) -> None:
    """Refuse a `tracking.mlflow.tracking_uri` MLflow cannot track to, or one holding a secret.

    Checked whether or not MLflow is enabled: the report's tables quote the resolved config,
    and an enabled export hands the URI to Snakemake's params, which its metadata and logs
    keep. The messages never show the URI: it may hold a secret. Raises TrackingError.
    """
    key = "config key tracking.mlflow.tracking_uri"
    if not uri.isprintable():
        raise TrackingError(f"{key}: the URI holds a control character (a newline, say); remove it")
    if "://" not in uri:
        return  # a folder, as mlflow_export.store reads it
    try:
        parts = urlsplit(uri)
        parts.port  # noqa: B018 (reading the port is what checks it)
    except ValueError as err:
        raise TrackingError(
            f"{key}: the URI is malformed ({err}); give http(s)://host[:port], a database URI "
            "(sqlite:///path, postgresql://host/db) or a folder"
        ) from None
    scheme = parts.scheme.lower()
    server = scheme in SERVER_SCHEMES
    queried = [name.lower() for name, _ in parse_qsl(parts.query, keep_blank_values=True)]
    if (
        parts.username
        or parts.password
        or (server and (parts.query or parts.fragment))
        or any(word in name for name in queried for word in _SECRET_WORDS)
    ):
        raise TrackingError(
            f"{key}: the URI holds credentials (a user:password@, a token or a query string); "
            "remove them and set MLFLOW_TRACKING_USERNAME and MLFLOW_TRACKING_PASSWORD (or "
            "MLFLOW_TRACKING_TOKEN) in the environment or .env, or for a database its client's "
            "own (PGPASSWORD, ~/.pgpass)"
        )
    if not server and scheme.split("+", 1)[0] not in STORE_SCHEMES:
        raise TrackingError(
            f"{key}: MLflow does not track to the scheme {parts.scheme!r}; use "
            f"{' or '.join(SERVER_SCHEMES)}, a database ({', '.join(STORE_SCHEMES[1:])}), "
            "file:// or a folder"
        )
    if server and (not parts.hostname or any(char.isspace() for char in parts.netloc)):
        given = f", not {parts.hostname!r}" if parts.hostname else ""
        raise TrackingError(
            f"{key}: a {scheme} URI needs a host without spaces{given}; give {scheme}://host[:port]"
        )
