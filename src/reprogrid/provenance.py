"""What produced a result: code version, machine, software, data, configuration.

A run's record, `provenance.json`, is a `Provenance`: `build_record` makes it when the run
ends, `read` reads one back with every field's type checked. Each fact sits in one place
(the seed in `config.train`, the commit in `code`, the host in `machine`, Slurm's job in
`env`); readers ask the record's properties rather than walking its keys.

Nothing secret is recorded: no dump of the environment, only the variables named in
`ENV_ALLOWLIST`, and remote URLs lose any credentials they carry.
"""

from __future__ import annotations

import dataclasses
import datetime as dt
import importlib.metadata
import json
import os
import shlex
import subprocess
import sys
import types
import typing
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit, urlunsplit

from reprogrid import atomic, paths

# Variables that describe where and how a job ran, and never hold secrets.
ENV_ALLOWLIST = (
    "CUDA_VISIBLE_DEVICES",
    "CUBLAS_WORKSPACE_CONFIG",
    "OMP_NUM_THREADS",
    "PYTHONHASHSEED",
    "CONDA_DEFAULT_ENV",
    "SLURM_JOB_ID",
    "SLURM_ARRAY_JOB_ID",
    "SLURM_ARRAY_TASK_ID",
    "SLURM_JOB_NODELIST",
    "SLURMD_NODENAME",
    "SLURM_JOB_PARTITION",
    "SLURM_CPUS_PER_TASK",
    "SLURM_JOB_GPUS",
    "SLURM_RESTART_COUNT",
    # A run in the project's image (envs/Dockerfile): the name it was built as, the image
    # reference Snakemake ran it from (config key `container`, with its digest when pinned
    # by one), and the image file Apptainer (formerly Singularity) ran.
    "REPROGRID_IMAGE",
    "REPROGRID_CONTAINER",
    "APPTAINER_CONTAINER",
    "APPTAINER_NAME",
    "SINGULARITY_CONTAINER",
    "SINGULARITY_NAME",
)

# Untracked files with these endings change what the pipeline does, so a run names them.
SOURCE_SUFFIXES = (".py", ".smk", ".yaml", ".yml", ".json", ".rst", ".cfg", ".toml")


def now() -> str:
    """The current time in ISO 8601, UTC."""
    return dt.datetime.now(dt.UTC).isoformat(timespec="seconds")


def _git(repo: Path, *args: str) -> str | None:
    try:
        out = subprocess.run(
            ["git", "-C", str(repo), *args], capture_output=True, text=True, check=True
        )
    except (OSError, subprocess.CalledProcessError):
        return None
    return out.stdout


SSH_SCHEMES = ("ssh", "git+ssh", "ssh+git")


def strip_credentials(url: str) -> str:
    """A remote URL without password, token or query string, still usable to clone.

    Over HTTP(S) and other URL schemes the whole user part goes, since a token often sits in
    the user name (`https://<token>@host/x.git`). Over SSH the user name stays (`git@...`
    names an account, and cloning needs it) and only a password goes, in both spellings:
    `ssh://git@host/x.git` and `git@github.com:org/repo.git`.
    """
    parts = urlsplit(url)
    if parts.scheme and parts.hostname:
        host = parts.hostname
        if ":" in host:
            host = f"[{host}]"
        if parts.port:
            host += f":{parts.port}"
        if parts.scheme.lower() in SSH_SCHEMES and parts.username:
            host = f"{parts.username}@{host}"
        return urlunsplit((parts.scheme, host, parts.path, "", ""))
    user, at, rest = url.partition("@")
    if "://" not in url and at and "/" not in user:
        # scp-like SSH, `user@host:path`: keep the user name, drop a password after a colon.
        return f"{user.split(':', 1)[0]}@{rest.split('?', 1)[0]}"
    return url


def task_record(name: str, file: str | Path, fingerprint: str) -> dict[str, Any]:
    """What a run records of its task (`TaskRecord`'s fields), the file's checkout read now."""
    state = git_state(Path(file).parent)
    return {
        "name": name,
        "file": str(file),
        "fingerprint": fingerprint,
        "commit": state["commit"],
        "dirty": state["dirty"],
    }


def git_state(repo: str | Path) -> dict[str, Any]:
    """Commit, branch, dirty flag, remote, untracked sources and the uncommitted diff.

    `diff` is the text of `git diff HEAD` (empty when clean); callers save it as a patch.
    Outside a git checkout, `commit` is None.
    """
    repo = Path(repo)
    commit = _git(repo, "rev-parse", "HEAD")
    if commit is None:
        return {
            "commit": None,
            "branch": None,
            "dirty": None,
            "remote": None,
            "untracked_sources": [],
            "diff": "",
        }
    status = _git(repo, "status", "--porcelain", "--untracked-files=no") or ""
    untracked = (_git(repo, "ls-files", "--others", "--exclude-standard") or "").splitlines()
    remote = (_git(repo, "remote", "get-url", "origin") or "").strip()
    return {
        "commit": commit.strip(),
        "branch": (_git(repo, "rev-parse", "--abbrev-ref", "HEAD") or "").strip() or None,
        "dirty": bool(status.strip()),
        "remote": strip_credentials(remote) if remote else None,
        "untracked_sources": sorted(
            name
            for name in untracked
            if name.endswith(SOURCE_SUFFIXES) or name.endswith("Snakefile")
        ),
        "diff": _git(repo, "diff", "HEAD", "--binary") or "",
    }


def same_code(start: Mapping[str, Any], end: Mapping[str, Any]) -> bool:
    """Whether two `git_state`s name the same code: commit, dirty flag and uncommitted diff."""
    return all(start[key] == end[key] for key in ("commit", "dirty", "diff"))


def _name_and_version(metadata: str) -> tuple[str | None, str | None]:
    """The `Name` and `Version` fields of a distribution's core metadata (METADATA, PKG-INFO)."""
    fields: dict[str, str] = {}
    for line in metadata.splitlines():
        if not line:
            break
        key, _, value = line.partition(":")
        if key in ("Name", "Version") and key not in fields:
            fields[key] = value.strip()
    return fields.get("Name"), fields.get("Version")


def packages() -> dict[str, str]:
    """Every installed distribution's version, by name.

    Only the two header lines are read: parsing each file's whole metadata, as
    `Distribution.metadata` does, took a tenth of a second of every training job.
    """
    found = {}
    for dist in importlib.metadata.distributions():
        name, version = _name_and_version(
            dist.read_text("METADATA") or dist.read_text("PKG-INFO") or ""
        )
        if name:
            found[name] = version
    return dict(sorted(found.items(), key=lambda item: item[0].lower()))


def environment_variables() -> dict[str, str]:
    """The allow-listed environment variables that are set."""
    return {name: os.environ[name] for name in ENV_ALLOWLIST if name in os.environ}


# The shape of provenance.json; a record of another shape (an older reprogrid's) is refused.
FORMAT = 3


class ProvenanceError(ValueError):
    """A provenance.json that is not a well-formed record; the message names the field."""

    def __init__(self, path: str | Path, problem: str, field: str = "") -> None:
        self.path, self.problem, self.field = str(path), problem, field
        where = f"field `{field}` " if field else ""
        super().__init__(f"{path}: {where}{problem}")


@dataclass(frozen=True)
class DataConfig:
    """The data a run trained on, as configured: the config file's `data` section
    (`dataset` names the IDX data set of the built-in IDX task, None for other tasks)."""

    dataset: str | None
    raw_dir: str | None
    verify: bool
    val_fraction: float
    split_seed: int


@dataclass(frozen=True)
class Resources:
    """What the run was given: CPU threads (torch uses exactly these) and GPUs."""

    threads: int
    gpu: int


@dataclass(frozen=True)
class TaskRecord:
    """The task the run answers: its name as the config gives it (a built-in task's name or
    a task file's path), the file, the fingerprint of the file and all it imports, and the
    commit and dirty flag of the git checkout holding the file (None outside one): a task of
    a user's repository is pinned by that repository's commit, not reprogrid's."""

    name: str
    file: str
    fingerprint: str
    commit: str | None
    dirty: bool | None


@dataclass(frozen=True)
class Config:
    """The resolved configuration of the run; `train` holds every training parameter, the
    task's own among them."""

    task: TaskRecord
    data: DataConfig
    train: dict[str, Any]
    resources: Resources


@dataclass(frozen=True)
class CodeVersion:
    """The code as seen at one moment: commit, dirty flag, the train job's code fingerprint."""

    commit: str | None
    dirty: bool | None
    fingerprint: str


@dataclass(frozen=True)
class Code:
    """The code that trained, as it was when the run started.

    `commit` and `dirty` are None outside a git checkout; `patch` names the file in the run
    folder that holds the uncommitted diff (None on a clean tree). `at_end` is None when the
    code was the same when the run ended, else what it was then.
    """

    commit: str | None
    dirty: bool | None
    branch: str | None
    remote: str | None
    untracked_sources: list[str]
    patch: str | None
    fingerprint: str
    at_end: CodeVersion | None

    @property
    def changed_during_run(self) -> bool:
        return self.at_end is not None


@dataclass(frozen=True)
class Data:
    """The bytes the run read: sha256 of each raw file by name, and of the prepared data."""

    raw_sha256: dict[str, str]
    prepared_sha256: str


@dataclass(frozen=True)
class Machine:
    """Where it ran: host, CPU, device, GPUs, Python and the CUDA/cuDNN torch used."""

    hostname: str
    platform: str
    cpu: str
    cpu_count: int | None
    device: str
    gpus: list[str]
    python: str
    cuda: str | None
    cudnn: int | None


@dataclass(frozen=True)
class Command:
    """The command line of the job, and the output Snakemake asked it for."""

    argv: list[str]
    target: str


@dataclass(frozen=True)
class Job:
    """The training job: when, the epoch a checkpoint resumed it from, its model's size."""

    started: str
    finished: str
    resumed_from_epoch: int | None
    model_parameters: int
    command: Command


@dataclass(frozen=True)
class Provenance:
    """One run's record: everything that produced its weights, each fact once."""

    run: str
    experiment: str
    config: Config
    code: Code
    data: Data
    machine: Machine
    job: Job
    env: dict[str, str]
    packages: dict[str, str]

    @property
    def seed(self) -> int:
        return self.config.train["seed"]

    @property
    def threads(self) -> int:
        return self.config.resources.threads

    @property
    def dataset(self) -> str | None:
        return self.config.data.dataset

    @property
    def task(self) -> str:
        return self.config.task.name

    @property
    def deterministic(self) -> bool | None:
        return self.config.train.get("deterministic")

    @property
    def commit(self) -> str | None:
        return self.code.commit

    @property
    def dirty(self) -> bool | None:
        return self.code.dirty

    @property
    def device(self) -> str:
        return self.machine.device

    @property
    def python_version(self) -> str:
        return self.machine.python

    @property
    def torch_version(self) -> str | None:
        return self.packages.get("torch")

    @property
    def torchvision_version(self) -> str | None:
        return self.packages.get("torchvision")

    @property
    def slurm_job_id(self) -> str | None:
        """The Slurm job the run trained in (None outside Slurm), from its environment."""
        return self.env.get("SLURM_JOB_ID")

    @property
    def image(self) -> str | None:
        """The reprogrid image the run trained in (None outside one), from its environment:
        the reference Snakemake ran, else the name the image was built as."""
        return self.env.get("REPROGRID_CONTAINER") or self.env.get("REPROGRID_IMAGE")

    @property
    def slurm_node(self) -> str | None:
        return self.env.get("SLURMD_NODENAME") or self.env.get("SLURM_JOB_NODELIST")

    def axis_values(self, axes: Sequence[str]) -> dict[str, Any]:
        """The run's value of each grid axis in `axes` (a training parameter each)."""
        return {axis: self.config.train[axis] for axis in axes}

    def to_dict(self) -> dict[str, Any]:
        """The record as provenance.json holds it: `format` first, then every field."""
        return {"format": FORMAT, **dataclasses.asdict(self)}

    def write(self, path: str | Path) -> None:
        """Write the record to `path` atomically."""
        atomic.write_json(path, self.to_dict())


def _code(code: Mapping[str, Any], code_at_end: Mapping[str, Any]) -> Code:
    """The record's code: as at the start, with the end's state only where it differs."""
    changed = not (
        same_code(code, code_at_end) and code["fingerprint"] == code_at_end["fingerprint"]
    )
    return Code(
        commit=code["commit"],
        dirty=code["dirty"],
        branch=code["branch"],
        remote=code["remote"],
        untracked_sources=list(code["untracked_sources"]),
        patch=paths.DIFF_PATCH if code["diff"] else None,
        fingerprint=code["fingerprint"],
        at_end=CodeVersion(
            commit=code_at_end["commit"],
            dirty=code_at_end["dirty"],
            fingerprint=code_at_end["fingerprint"],
        )
        if changed
        else None,
    )


def build_record(
    *,
    run: str,
    experiment: str,
    params: Mapping[str, Any],
    split: Mapping[str, Any],
    checks: Mapping[str, Any],
    threads: int,
    gpus: int,
    machine: Mapping[str, Any],
    code: Mapping[str, Any],
    code_at_end: Mapping[str, Any],
    task: Mapping[str, str],
    started: str,
    resumed_from_epoch: int | None,
    model_parameters: int,
    target: str,
) -> Provenance:
    """The record of a run that ends now, on this machine, in this environment.

    `checks` is the data step's record (checks.json); `machine` is `devices.describe`'s
    account of where it ran; `code` and `code_at_end` are
    `git_state`s with the code `fingerprint` added, taken when the run started and ended;
    `task` names the task (`name`, `file`, `fingerprint`).
    """
    return Provenance(
        run=run,
        experiment=experiment,
        config=Config(
            task=TaskRecord(**task),
            data=DataConfig(
                dataset=checks.get("dataset"),
                raw_dir=checks["raw_dir"],
                verify=checks.get("verify", False),
                val_fraction=split["val_fraction"],
                split_seed=split["split_seed"],
            ),
            train=dict(params),
            resources=Resources(threads=threads, gpu=gpus),
        ),
        code=_code(code, code_at_end),
        data=Data(
            raw_sha256=dict(checks.get("raw_sha256", {})),
            prepared_sha256=checks["prepared_sha256"],
        ),
        machine=Machine(**machine),
        job=Job(
            started=started,
            finished=now(),
            resumed_from_epoch=resumed_from_epoch,
            model_parameters=model_parameters,
            command=Command(argv=list(sys.argv), target=target),
        ),
        env=environment_variables(),
        packages=packages(),
    )


def install_command(records: Sequence[Provenance]) -> str:
    """The shell line that installs the checkout with the torch and torchvision `records` used.

    Where runs recorded different versions, the first run's are pinned.
    """
    pins = [
        f"{name}=={version}"
        for name, version in (
            ("torch", records[0].torch_version),
            ("torchvision", records[0].torchvision_version),
        )
        if version is not None
    ]
    return "python3 -m venv .venv && .venv/bin/pip install " + shlex.join([*pins, "-e", "."])


JSON_KINDS = {
    dict: "an object",
    list: "a list",
    str: "a string",
    int: "an integer",
    float: "a number",
    bool: "true or false",
    type(None): "null",
}


def shown(value: Any) -> str:
    """A value as an error message shows it: its repr, cut to 60 characters."""
    text = repr(value)
    return text if len(text) <= 60 else text[:57] + "..."


def _typed(path: str | Path, kind: Any, value: Any, field: str) -> Any:
    """`value` read as `kind` (a dataclass, a built-in, a union, list[...] or dict[str, ...])."""
    if kind is Any:
        return value
    origin, args = typing.get_origin(kind), typing.get_args(kind)
    if origin in (typing.Union, types.UnionType):
        for option in args:
            if _is(value, _json_kind(option)):
                return _typed(path, option, value, field)
        names = " or ".join(JSON_KINDS[_json_kind(option)] for option in args)
        raise ProvenanceError(path, f"must be {names}, not {shown(value)}", field)
    if not _is(value, _json_kind(kind)):
        raise ProvenanceError(
            path, f"must be {JSON_KINDS[_json_kind(kind)]}, not {shown(value)}", field
        )
    if dataclasses.is_dataclass(kind):
        hints = typing.get_type_hints(kind)
        for key in value:
            if key not in hints:
                raise ProvenanceError(path, "is not a field of this record", _join(field, key))
        names = [f.name for f in dataclasses.fields(kind)]
        for name in names:
            if name not in value:
                raise ProvenanceError(path, "is missing", _join(field, name))
        return kind(**{n: _typed(path, hints[n], value[n], _join(field, n)) for n in names})
    if origin is list:
        return [_typed(path, args[0], item, f"{field}[{i}]") for i, item in enumerate(value)]
    if origin is dict:
        return {key: _typed(path, args[1], item, _join(field, key)) for key, item in value.items()}
    return value


def _json_kind(kind: Any) -> type:
    """The Python type a JSON value of `kind` parses to: a dataclass is read from an object."""
    base = typing.get_origin(kind) or kind
    return dict if dataclasses.is_dataclass(base) else base


def _join(field: str, key: str) -> str:
    return f"{field}.{key}" if field else key


def _is(value: Any, kind: type) -> bool:
    """Whether a JSON value is of `kind`: true is no integer, and an integer is a number."""
    if isinstance(value, bool):
        return kind is bool
    if kind is float:
        return isinstance(value, int | float)
    return isinstance(value, kind)


def _from_format_2(record: dict[str, Any]) -> dict[str, Any]:
    """A record of format 2 (before tasks) as format 3 has it: every such run answered the
    built-in IDX task, with the code its record names."""
    config = record.get("config")
    code = record.get("code")
    if not (isinstance(config, dict) and isinstance(code, dict)):
        return record
    task = {
        "name": "idx_classification",
        "file": "src/reprogrid/tasks/builtin/idx_classification.py",
        "fingerprint": code.get("fingerprint"),
        "commit": code.get("commit"),
        "dirty": code.get("dirty"),
    }
    return {**record, "format": FORMAT, "config": {"task": task, **config}}


def from_dict(record: Any, path: str | Path = "provenance record") -> Provenance:
    """A parsed provenance.json as a `Provenance`; `ProvenanceError` names a bad field."""
    if not isinstance(record, dict):
        raise ProvenanceError(path, f"holds a JSON {type(record).__name__}, not an object")
    if record.get("format") == 2:
        record = _from_format_2(record)
    if record.get("format") != FORMAT:
        found = f"format {shown(record['format'])}" if "format" in record else "no `format`"
        raise ProvenanceError(
            path,
            f"is a record of {found}, not of format {FORMAT} (an older reprogrid's run?); "
            "train the run again with this code",
        )
    return _typed(path, Provenance, {k: v for k, v in record.items() if k != "format"}, "")


def read(path: str | Path) -> Provenance:
    """The record at `path` (a provenance.json), every field's type checked.

    A file that is missing, not JSON, or not of this `FORMAT` raises one `ProvenanceError`.
    """
    try:
        record = json.loads(Path(path).read_bytes().decode("utf-8"))
    except (OSError, ValueError, RecursionError) as err:
        raise ProvenanceError(path, f"cannot be read: {err}") from None
    return from_dict(record, path)


def read_run(folder: str | Path) -> Provenance:
    """The record of the run in `folder`."""
    return read(Path(folder) / paths.PROVENANCE)
