"""The `reprogrid` command: `reproduce` a run, `sync` W&B runs, `pull` raw data from remote
storage, `status` of a grid, `compare` experiments.

`reprogrid reproduce <run folder>` prints, or runs, a run's exact steps.

The steps come from the run's provenance.json alone: clone the recorded remote (or the
checkout the run folder lives in), check out the commit, apply the saved patch when the tree
was dirty, install, write a one-run config file and build that run's weights with Snakemake.
With `--execute` they run in a scratch folder and the weights are compared bit for bit.

A run folder may come from anyone: every field read from its provenance.json is checked
before use, and every value in the printed steps is shell-quoted.
"""

from __future__ import annotations

import argparse
import dataclasses
import importlib.metadata
import math
import re
import shlex
import subprocess
import sys
import tempfile
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path, PurePosixPath
from typing import Any
from urllib.parse import urlsplit

import yaml

from reprogrid import audit, compare, paths, provenance, scaffold, status
from reprogrid.provenance import shown

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
    return Plan(
        run_dir=folder.resolve(),
        record=record,
        source=source,
        commit=record.code.commit,
        patch=patch,
        config=run_config(record, raw_dir),
        target=paths.run_file(record.experiment, record.run, "model.pt"),
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
        'PATH="$PWD/.venv/bin:$PATH" snakemake ' + shlex.join(snakemake_args(the_plan)),
        f"cmp {shlex.quote(the_plan.target)} {shlex.quote(str(the_plan.run_dir / 'model.pt'))}"
        " && echo identical || echo differs",
    ]
    if the_plan.config["data"]["raw_dir"] is None:
        lines.insert(
            1, "# data.raw_dir is null: the data are downloaded (use --raw-dir when offline)"
        )
    return "\n".join(lines) + "\n"


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


def sync_command(results: str, project: str | None, entity: str | None) -> list[str]:
    """The `wandb sync` command that uploads an experiment's offline W&B runs.

    `results` is the experiment's results folder; every offline run under its
    tracking/wandb/ goes, each resuming its own W&B run id.
    """
    from reprogrid.tracking import INSTALL_HINT, installed

    folder = Path(results) / "tracking" / "wandb"
    runs = sorted(folder.glob("offline-run-*"))
    if not runs:
        raise ReproduceError(
            f"no offline W&B runs under {folder}; export with tracking.wandb.enabled: true "
            "and tracking.wandb.mode: offline first"
        )
    if not installed("wandb"):
        raise ReproduceError(f"the wandb package is not installed; {INSTALL_HINT}")
    command = [sys.executable, "-m", "wandb", "sync"]
    command += ["--project", project] if project else []
    command += ["--entity", entity] if entity else []
    return command + [str(run) for run in runs]


def sync(args: argparse.Namespace) -> int:
    """`reprogrid sync`: upload offline W&B runs, credentials from the environment or .env."""
    from reprogrid.tracking import load_dotenv

    try:
        command = sync_command(args.results, args.project, args.entity)
    except ReproduceError as err:
        print(f"reprogrid: {err}", file=sys.stderr)
        return 2
    if args.dry_run:
        print(shlex.join(command))
        return 0
    load_dotenv()
    return subprocess.run(command).returncode


def pull(args: argparse.Namespace) -> int:
    """`reprogrid pull`: copy a remote folder (raw data) into a local one with rclone; never
    deletes a local file. Credentials come from rclone's config or environment."""
    from reprogrid import remote

    try:
        remote.check(args.remote, f"reprogrid pull {args.remote}")
        copied = remote.copy(args.remote, args.folder)
    except remote.RemoteError as err:
        print(f"reprogrid: {err}", file=sys.stderr)
        return 2
    print(f"{copied.transferred} files copied from {args.remote} into {args.folder}")
    return 0


def reproduce(args: argparse.Namespace) -> int:
    """`reprogrid reproduce`: 0 identical or printed, 1 differs, 2 refused."""
    raw_dir = str(Path(args.raw_dir).resolve()) if args.raw_dir else None
    try:
        the_plan = plan(args.run_dir, args.source, raw_dir)
        if not args.execute:
            print(script(the_plan, args.workdir or "reprogrid-reproduce"), end="")
            return 0
        if args.workdir:
            workdir = Path(args.workdir).resolve()
            if workdir.exists():
                raise ReproduceError(f"--workdir {workdir} exists; name a new folder")
        else:
            workdir = Path(tempfile.mkdtemp(prefix="reprogrid-reproduce-")) / "checkout"
        identical = execute(the_plan, workdir)
    except ReproduceError as err:
        print(f"reprogrid: {err}", file=sys.stderr)
        return 2
    print("identical" if identical else "differs")
    return 0 if identical else 1


def task(args: argparse.Namespace) -> int:
    """`reprogrid task new NAME`: write a task file, its experiment and its lab book."""
    try:
        written = scaffold.new_task(args.name, args.root)
    except scaffold.ScaffoldError as error:
        print(f"reprogrid: {error}", file=sys.stderr)
        return 2
    for path in written:
        print(f"wrote {path}")
    print(
        f"run it: snakemake --cores 2 --config experiment={args.name} debug=True, then without "
        "debug=True; docs/tasks.md explains the contract"
    )
    return 0


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="reprogrid", description=__doc__.splitlines()[0])
    commands = parser.add_subparsers(dest="command", required=True)
    reproducing = commands.add_parser(
        "reproduce", help="print (or run, with --execute) the exact steps that reproduce a run"
    )
    reproducing.add_argument("run_dir", help="a run folder: results/<experiment>/runs/<run>")
    reproducing.add_argument(
        "--execute",
        action="store_true",
        help="run the steps in a scratch folder and compare the weights bit for bit",
    )
    reproducing.add_argument(
        "--workdir", help="where to clone (must not exist yet); default: a new temporary folder"
    )
    reproducing.add_argument(
        "--source", help="repository URL or path to clone instead of the recorded one"
    )
    reproducing.add_argument(
        "--raw-dir",
        help="folder with the four IDX files (default: the one the run recorded, else download)",
    )
    reproducing.set_defaults(handler=reproduce)
    upload = commands.add_parser(
        "sync", help="upload an experiment's offline W&B runs (from a machine with internet)"
    )
    upload.add_argument("results", help="the experiment's results folder: results/<experiment>")
    upload.add_argument("--project", help="W&B project (default: the one each run recorded)")
    upload.add_argument("--entity", help="W&B entity (default: the one each run recorded)")
    upload.add_argument(
        "--dry-run", action="store_true", help="print the wandb sync command, run nothing"
    )
    upload.set_defaults(handler=sync)
    download = commands.add_parser(
        "pull",
        help="copy a folder from remote storage (rclone) here, e.g. raw data into data.raw_dir",
    )
    download.add_argument("remote", help="an rclone remote and folder: name:path")
    download.add_argument("folder", help="the local folder to copy into (created if missing)")
    download.set_defaults(handler=pull)
    tasks = commands.add_parser("task", help="write a task of your own: `reprogrid task new NAME`")
    task_commands = tasks.add_subparsers(dest="task_command", required=True)
    creating = task_commands.add_parser(
        "new", help="write tasks/NAME.py, config/experiments/NAME.yaml and its lab book"
    )
    creating.add_argument("name", help="the task's name, which names its experiment too")
    creating.add_argument(
        "--root", default=".", help="the project folder to write into (default: here)"
    )
    creating.set_defaults(handler=task)
    status.add_parser(commands)
    compare.add_parser(commands)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point of `reprogrid`: the chosen command's exit status (2: refused input)."""
    args = _parser().parse_args(argv)
    return args.handler(args)


if __name__ == "__main__":
    sys.exit(main())
