"""`reprogrid reproduce <run folder>`: a run's exact steps, printed or run.

The steps come from the run's provenance.json alone: clone the recorded remote (or the
checkout the run folder lives in), check out the commit, apply the saved patch when the tree
was dirty, install, write a one-run config file and build that run's weights with Snakemake.
With `--execute` they run in a scratch folder and the weights are compared bit for bit.

A run folder may come from anyone: every field read from its provenance.json is checked
before use, and every value in the printed steps is shell-quoted.

Longer than 400 lines: each field a printed step uses has its own check beside the step, so
that no value from a stranger's record reaches a shell unread.
"""

from __future__ import annotations

import dataclasses
import importlib.metadata
import json
import math
import re
import shlex
import subprocess
import sys
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path, PurePosixPath
from typing import Any
from urllib.parse import urlsplit

import yaml

from reprogrid.analysis import audit
from reprogrid.plan import grid, paths
from reprogrid.record import provenance
from reprogrid.record.provenance import shown

CONFIG_NAME = "reproduce.yaml"


LOG_NAME = "reproduce.log"


COMMIT = re.compile(r"[0-9a-f]{40}")


# Release numbers with an optional local label: 2.5.1, 3.11.2, 2.5.1+cpu, 0.21.0a0+git1a2b.
VERSION = re.compile(r"[0-9]+(?:\.[0-9A-Za-z]+)*(?:\+[0-9A-Za-z.]+)?")


# The schema's `experiment.pattern` (workflow/schemas/config.schema.yaml); tests keep them equal.
EXPERIMENT = re.compile(r"^(?!.*[.][.])[A-Za-z0-9][A-Za-z0-9_.-]*(?![\s\S])")


# One value in a run id: a number, a name, true/false; never `.`, `..` or a leading `-`.
AXIS_VALUE = re.compile(r"[A-Za-z0-9][A-Za-z0-9_.+-]*")


REMOTE_SCHEMES = ("https", "http", "ssh", "git", "file")


MAX_THREADS = 1024


MAX_GPUS = 64


class ReproduceError(RuntimeError):
    """A run that cannot be reproduced as asked; the message is meant for the user as is."""


@dataclass
class Plan:
    """Everything `reproduce` needs, read from one run folder."""

    run_dir: Path
    record: provenance.Provenance
    source: str
    commit: str
    patch: Path | None
    config: dict[str, Any]
    target: str
    # The values the experiment's run ids leave out, for the axes the run's id names
    # (results/<experiment>/run-names.json beside its runs), so that the reproduction names
    # the run the same whatever its checkout's defaults; None when the experiment has none.
    run_names: dict[str, Any] | None = None


def _git_toplevel(folder: Path) -> str | None:
    try:
        out = subprocess.run(
            ["git", "-C", str(folder), "rev-parse", "--show-toplevel"],
            capture_output=True,
            text=True,
            check=True,
        )
    except (OSError, subprocess.CalledProcessError):
        return None
    return out.stdout.strip() or None


def run_config(record: provenance.Provenance, raw_dir: str | None) -> dict[str, Any]:
    """A config file that makes Snakemake train exactly this run, under the same run id.

    Every axis named in the run id becomes a one-value grid axis, so the folder name comes
    out the same; every other training parameter is fixed under `train`.
    """
    train = record.config.train
    axes = list(paths.parse_run_id(record.run))
    data = {k: v for k, v in dataclasses.asdict(record.config.data).items() if v is not None}
    return {
        "experiment": record.experiment,
        "task": record.task,
        "data": {**data, "raw_dir": raw_dir if raw_dir is not None else data.get("raw_dir")},
        "grid": {axis: [train[axis]] for axis in axes},
        "train": {key: value for key, value in train.items() if key not in axes},
        "resources": dataclasses.asdict(record.config.resources),
        "analysis": {"criterion": None},
    }


def _refuse(record_path: Path, field: str, problem: str) -> ReproduceError:
    where = f"field `{field}` " if field else ""
    return ReproduceError(
        f"refusing {record_path}: {where}{problem}; "
        "a run folder from elsewhere is reproduced only when its record is well formed"
    )


def _control_characters(value: Any, field: str) -> str | None:
    """The field under `value` whose text holds a control character (a newline, say)."""
    if isinstance(value, str):
        return field if any(ord(ch) < 32 or ord(ch) == 127 for ch in value) else None
    if isinstance(value, dict):
        items = [(f"{field}.{key}", key) for key in value] + [
            (f"{field}.{key}", item) for key, item in value.items()
        ]
    elif isinstance(value, list):
        items = [(f"{field}[{index}]", item) for index, item in enumerate(value)]
    else:
        return None
    for name, item in items:
        found = _control_characters(item, name)
        if found:
            return found
    return None


def _check_run_id(record: provenance.Provenance, record_path: Path, folder: Path) -> None:
    run = record.run
    if not re.fullmatch(paths.RUN_ID_REGEX, run):
        raise _refuse(
            record_path, "run", f"is not a run id like arch=cnn/lr=0.001/seed=0: {shown(run)}"
        )
    parts = paths.parse_run_id(run)
    for value in parts.values():
        if not AXIS_VALUE.fullmatch(value):
            raise _refuse(
                record_path, "run", f"holds a value that is no number or name: {shown(value)}"
            )
    train = record.config.train
    for axis, value in parts.items():
        if axis not in train or paths.format_value(train[axis]) != value:
            raise _refuse(record_path, "run", f"says {axis}={value} but config.train does not")
    if folder.resolve().parts[-len(parts) :] != tuple(run.split("/")):
        raise _refuse(
            record_path,
            "run",
            f"is {run} but the folder is {folder}; keep a run in the folder named after it",
        )


def _check_remote(remote: str | None, record_path: Path) -> None:
    if remote is None:
        return
    scheme = urlsplit(remote).scheme if "://" in remote else None
    if (
        not remote
        or remote.startswith("-")
        or "::" in remote
        or (scheme is not None and scheme not in REMOTE_SCHEMES)
        or any(ord(ch) < 32 or ord(ch) == 127 for ch in remote)
    ):
        raise _refuse(
            record_path,
            "code.remote",
            f"is not a plain {'/'.join(REMOTE_SCHEMES)} URL, scp-style address or path: "
            f"{shown(remote)}",
        )


def _check_patch(record: provenance.Provenance, record_path: Path, folder: Path) -> Path:
    name = record.code.patch or paths.DIFF_PATCH
    relative = PurePosixPath(name)
    inside = folder.resolve()
    patch = (inside / name).resolve()
    if relative.is_absolute() or ".." in relative.parts or not patch.is_relative_to(inside):
        raise _refuse(
            record_path, "code.patch", f"must name a file inside the run folder: {shown(name)}"
        )
    if not patch.is_file():
        raise ReproduceError(
            f"the run was made on a dirty tree but {patch} is missing; "
            "its uncommitted changes cannot be restored"
        )
    return patch


def _matching(
    record_path: Path, field: str, value: str | None, pattern: re.Pattern, what: str
) -> None:
    if value is None or not pattern.fullmatch(value):
        raise _refuse(record_path, field, f"is not {what}: {shown(value)}")


def _count(record_path: Path, field: str, value: int, low: int, high: int) -> None:
    if not low <= value <= high:
        raise _refuse(record_path, field, f"must be from {low} to {high}, not {value}")


def read_record(folder: Path) -> provenance.Provenance:
    """The run's provenance.json, read as a `Provenance` and every field `reproduce` uses
    checked for what it may hold (a commit, a run id of this folder, version numbers, a
    remote git can clone without running anything, ...); one line if not."""
    record_path = folder / paths.PROVENANCE
    if not record_path.is_file():
        raise ReproduceError(
            f"{folder} holds no provenance.json; only a finished run can be reproduced"
        )
    try:
        record = provenance.read(record_path)
    except provenance.ProvenanceError as err:
        raise _refuse(record_path, err.field, err.problem) from None
    if record.commit is None:
        raise ReproduceError(
            f"{record_path} records no git commit (the run was not made in a git checkout); "
            "the code that produced it cannot be pinned"
        )
    _matching(record_path, "code.commit", record.commit, COMMIT, "a 40-digit hexadecimal commit")
    _matching(record_path, "experiment", record.experiment, EXPERIMENT, "an experiment name")
    _check_run_id(record, record_path, folder)
    if record.dirty is None:
        raise _refuse(record_path, "code.dirty", "must be true or false for a commit")
    _check_remote(record.code.remote, record_path)
    _matching(record_path, "machine.python", record.python_version, VERSION, "a version number")
    _matching(record_path, "packages.torch", record.torch_version, VERSION, "a version number")
    if record.torchvision_version is not None:
        _matching(
            record_path,
            "packages.torchvision",
            record.torchvision_version,
            VERSION,
            "a version number",
        )
    _count(record_path, "config.resources.threads", record.threads, 1, MAX_THREADS)
    _count(record_path, "config.resources.gpu", record.config.resources.gpu, 0, MAX_GPUS)
    for field in ("config", "code"):
        bad = _control_characters(dataclasses.asdict(getattr(record, field)), field)
        if bad:
            raise _refuse(record_path, bad, "holds a control character (a newline, say)")
    return record


def plan(run_dir: str | Path, source: str | None, raw_dir: str | None) -> Plan:
    """Read a run folder's provenance into the steps that reproduce it.

    The folder is not trusted: `read_record` refuses a record with any malformed field
    this reads, and the patch must lie inside the folder.
    """
    folder = Path(run_dir)
    if not folder.is_dir():
        raise ReproduceError(
            f"no run folder {folder}; give the folder of one run, "
            "e.g. results/<experiment>/runs/arch=cnn/lr=0.001/seed=0"
        )
    record = read_record(folder)
    source = source or record.code.remote or _git_toplevel(folder.resolve())
    if not source:
        raise ReproduceError(
            f"{folder / paths.PROVENANCE} records no remote and {folder} is not inside a git "
            "checkout; pass --source <repository URL or path>"
        )
    patch = _check_patch(record, folder / paths.PROVENANCE, folder) if record.dirty else None
    axes = paths.parse_run_id(record.run)
    names = folder.resolve().parents[len(axes)] / paths.RUN_NAMES
    try:
        kept = grid.read_run_names(names, record.experiment)
    except grid.RunNamesError as err:
        raise ReproduceError(str(err)) from None
    run_names = {key: kept[key] for key in axes if key in kept} or None
    return Plan(
        run_dir=folder.resolve(),
        record=record,
        source=source,
        commit=record.code.commit,
        patch=patch,
        config=run_config(record, raw_dir),
        target=paths.run_file(record.experiment, record.run, "model.pt"),
        run_names=run_names,
    )


def snakemake_args(the_plan: Plan) -> list[str]:
    """The Snakemake arguments that build the run's weights from the written config file."""
    return [
        "--cores",
        str(the_plan.record.threads),
        the_plan.target,
        "--configfile",
        CONFIG_NAME,
    ]


def _config_text(config: Mapping[str, Any]) -> str:
    # Never folded: no line of a value can then read `EOF` and end the here-document early.
    return yaml.safe_dump(config, sort_keys=False, width=math.inf)


def script(the_plan: Plan, workdir: str) -> str:
    """The steps as a shell script a person can read and paste."""
    lines = [
        f"# Reproduce run {the_plan.record.run} of experiment {the_plan.record.experiment}",
        f"git clone -- {shlex.quote(the_plan.source)} {shlex.quote(workdir)}",
        f"cd -- {shlex.quote(workdir)}",
        f"git checkout {shlex.quote(the_plan.commit)}",
    ]
    if the_plan.patch is not None:
        lines.append(f"git apply {shlex.quote(str(the_plan.patch))}")
    untracked = the_plan.record.code.untracked_sources
    if untracked:
        lines.append(
            "# warning: these untracked files existed when the run was made and are not "
            f"recorded; copy them in: {shlex.join(untracked)}"
        )
    lines += [
        provenance.install_command([the_plan.record]),
        f"cat > {CONFIG_NAME} <<'EOF'",
        _config_text(the_plan.config).rstrip(),
        "EOF",
        *_run_names_steps(the_plan),
        'PATH="$PWD/.venv/bin:$PATH" snakemake ' + shlex.join(snakemake_args(the_plan)),
        f"cmp {shlex.quote(the_plan.target)} {shlex.quote(str(the_plan.run_dir / 'model.pt'))}"
        " && echo identical || echo differs",
    ]
    if the_plan.config["data"]["raw_dir"] is None:
        lines.insert(
            1, "# data.raw_dir is null: the data are downloaded (use --raw-dir when offline)"
        )
    return "\n".join(lines) + "\n"


def _run_names_file(the_plan: Plan) -> str:
    return paths.id_defaults_file(the_plan.record.experiment)


def _run_names_steps(the_plan: Plan) -> list[str]:
    """The steps that write the experiment's record of what run ids leave out, if any."""
    if the_plan.run_names is None:
        return []
    path = _run_names_file(the_plan)
    return [
        f"mkdir -p {shlex.quote(str(Path(path).parent))}",
        f"cat > {shlex.quote(path)} <<'EOF'",
        json.dumps(the_plan.run_names),
        "EOF",
    ]


def _step(args: Sequence[str], cwd: Path | None, log: Path) -> None:
    with log.open("a", encoding="utf-8") as handle:
        handle.write(f"$ {shlex.join(args)}\n")
        handle.flush()
        try:
            done = subprocess.run(args, cwd=cwd, stdout=handle, stderr=subprocess.STDOUT)
        except OSError as err:
            raise ReproduceError(f"step `{shlex.join(args)}` could not start: {err}") from None
    if done.returncode != 0:
        raise ReproduceError(
            f"step `{shlex.join(args)}` failed with exit status {done.returncode}; see {log}"
        )


def execute(the_plan: Plan, workdir: Path) -> bool:
    """Run the steps in `workdir` with this Python; True when the weights are identical.

    Installing is the one step not run: the reproduction uses this interpreter's packages,
    and says so when its torch differs from the run's.
    """
    workdir.parent.mkdir(parents=True, exist_ok=True)
    log = workdir.parent / f"{workdir.name}.{LOG_NAME}"
    print(f"reproducing in {workdir} (commands and output in {log})")
    _step(["git", "clone", "--quiet", "--", the_plan.source, str(workdir)], None, log)
    _step(["git", "-c", "advice.detachedHead=false", "checkout", the_plan.commit], workdir, log)
    if the_plan.patch is not None:
        _step(["git", "apply", str(the_plan.patch)], workdir, log)
    # The installed distribution's version, as the run's record took it (`packages`).
    installed = importlib.metadata.version("torch")
    recorded = the_plan.record.torch_version
    if installed != recorded:
        print(f"warning: this Python has torch {installed}, the run used {recorded}")
    (workdir / CONFIG_NAME).write_text(_config_text(the_plan.config), encoding="utf-8")
    if the_plan.run_names is not None:
        names = workdir / _run_names_file(the_plan)
        names.parent.mkdir(parents=True, exist_ok=True)
        names.write_text(json.dumps(the_plan.run_names), encoding="utf-8")
    _step([sys.executable, "-m", "snakemake", *snakemake_args(the_plan)], workdir, log)
    reproduced = workdir / the_plan.target
    stored_sha = audit.file_sha256(the_plan.run_dir / "model.pt")
    reproduced_sha = audit.file_sha256(reproduced)
    same_metrics = audit.same_results(
        paths.files_in(the_plan.run_dir), paths.files_in(reproduced.parent)
    )
    identical = stored_sha == reproduced_sha
    print(f"weights: {'identical' if identical else 'differs'} (sha256 {reproduced_sha[:16]})")
    print(f"metrics: {'identical' if same_metrics else 'differ'} (timing aside)")
    return identical and same_metrics
