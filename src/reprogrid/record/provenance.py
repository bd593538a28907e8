"""What produced a result: code version, machine, software, data, configuration.

A run's record, `provenance.json`, is a `Provenance`: `build_record` makes it when the run
ends, `read` reads one back with every field's type checked. Each fact sits in one place
(the seed in `config.train`, the commit in `code`, the host in `machine`, Slurm's job in
`env`); readers ask the record's properties rather than walking its keys.

Nothing secret is recorded: no dump of the environment, only the variables named in
`capture.ENV_ALLOWLIST`, and remote URLs lose any credentials they carry.

Longer than 400 lines: the record's shape is a dataclass per section of provenance.json,
kept in one module so that the whole record reads in one place; what only reads or checks
records lives beside it (`typed`, `damage`, `capture`).
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import shlex
import sys
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from reprogrid.plan import paths
from reprogrid.record import atomic, logs
from reprogrid.record.capture import environment_variables, git_state, now, packages, same_code
from reprogrid.record.typed import ProvenanceError, shown, typed_value


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


# The shape of provenance.json; a record of another shape (an older reprogrid's) is refused.
FORMAT = 4


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
    """The training job: its id (its train.log attempt starts with it), when, the epoch a
    checkpoint resumed it from, its model's size, and the sha256 of each output it wrote
    beside this record, by file name."""

    id: str | None
    started: str
    finished: str
    resumed_from_epoch: int | None
    model_parameters: int
    command: Command
    outputs: dict[str, str]


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
    job_id: str,
    outputs: Mapping[str, bytes],
) -> Provenance:
    """The record of a run that ends now, on this machine, in this environment.

    `checks` is the data step's record (checks.json); `machine` is `devices.describe`'s
    account of where it ran; `code` and `code_at_end` are
    `git_state`s with the code `fingerprint` added, taken when the run started and ended;
    `task` names the task (`name`, `file`, `fingerprint`). `outputs` are the bytes of the
    files job `job_id` writes beside the record, by file name.
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
            id=job_id,
            started=started,
            finished=now(),
            resumed_from_epoch=resumed_from_epoch,
            model_parameters=model_parameters,
            command=Command(argv=list(sys.argv), target=target),
            outputs={name: sha256(content) for name, content in outputs.items()},
        ),
        env=environment_variables(),
        packages=packages(),
    )


def sha256(content: bytes) -> str:
    return hashlib.sha256(content).hexdigest()


def check_one_job(record: Provenance, folder: str | Path, outputs: Sequence[str | Path]) -> None:
    """Check that the `outputs` of the run in `folder` and its train.log come from the job
    that wrote `record`: each output has the sha256 the record names for its file name, and
    the log's last attempt is that job's (a folder without a log has none to check).

    A file whose bytes are not the record's (damaged, or another job's) or a log of another
    job raises `ProvenanceError` naming it, with how to retrain the run. A
    record of a job without an id (format 3 or older) has nothing to check against.
    """
    folder, job = Path(folder), record.job.id
    if job is None:
        return
    for output in map(Path, outputs):
        try:
            content = output.read_bytes()
        except OSError as err:
            raise ProvenanceError(output, f"cannot be read: {err.strerror}") from None
        if record.job.outputs.get(output.name) != sha256(content):
            raise ProvenanceError(
                output,
                f"does not hold the bytes job {job} wrote (their sha256 is in "
                f"{paths.PROVENANCE}): it was damaged, or another job wrote it; "
                f"{retrain_hint(folder)}",
            )
    log_path = folder / paths.TRAIN_LOG
    last = logs.last_job(log_path)
    if log_path.is_file() and last != job:
        found = f"ends with an attempt of job {last}" if last else "names no job"
        raise ProvenanceError(
            log_path,
            f"{found}, not job {job}, which wrote {paths.PROVENANCE}; two jobs wrote this run; "
            f"{retrain_hint(folder)}",
        )


def retrain_hint(folder: str | Path) -> str:
    """What to do about a run folder whose files cannot be trusted: train it again."""
    return f"delete {folder} and run Snakemake again to retrain it"


def damaged(path: str | Path, why: str) -> ProvenanceError:
    """The refusal of a run's file that is cut short or garbled, saying how to retrain it."""
    return ProvenanceError(path, f"is damaged ({why}); {retrain_hint(Path(path).parent)}")


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
    return {**record, "format": 3, "config": {"task": task, **config}}


def _from_format_3(record: dict[str, Any]) -> dict[str, Any]:
    """A record of format 3 (before job ids) as format 4 has it: its job has no id and names
    no outputs, so nothing ties its files to one job."""
    job = record.get("job")
    if not isinstance(job, dict):
        return record
    return {**record, "format": FORMAT, "job": {"id": None, **job, "outputs": {}}}


def from_dict(record: Any, path: str | Path = "provenance record") -> Provenance:
    """A parsed provenance.json as a `Provenance`; `ProvenanceError` names a bad field."""
    if not isinstance(record, dict):
        raise ProvenanceError(path, f"holds a JSON {type(record).__name__}, not an object")
    if record.get("format") == 2:
        record = _from_format_2(record)
    if record.get("format") == 3:
        record = _from_format_3(record)
    if record.get("format") != FORMAT:
        found = f"format {shown(record['format'])}" if "format" in record else "no `format`"
        raise ProvenanceError(
            path,
            f"is a record of {found}, not of format {FORMAT} (an older reprogrid's run?); "
            "train the run again with this code",
        )
    return typed_value(path, Provenance, {k: v for k, v in record.items() if k != "format"}, "")


def read(path: str | Path) -> Provenance:
    """The record at `path` (a provenance.json), every field's type checked.

    A file that is missing, not JSON, or not of this `FORMAT` raises one `ProvenanceError`.
    """
    try:
        content = Path(path).read_bytes()
    except OSError as err:
        raise ProvenanceError(path, f"cannot be read: {err.strerror}") from None
    try:
        record = json.loads(content.decode("utf-8"))
    except (ValueError, RecursionError) as err:
        why = "not UTF-8 text" if isinstance(err, UnicodeDecodeError) else f"not JSON: {err}"
        raise ProvenanceError(
            path, f"cannot be read ({why}); {retrain_hint(Path(path).parent)}"
        ) from None
    return from_dict(record, path)


def read_run(folder: str | Path) -> Provenance:
    """The record of the run in `folder`."""
    return read(Path(folder) / paths.PROVENANCE)
