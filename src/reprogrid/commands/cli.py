"""The `reprogrid` command: `reproduce` a run (`commands.reproduce`), `sync` W&B runs, `pull`
raw data from remote storage, `status` of a grid, `compare` experiments, `task new`.

Each subcommand parses its arguments here and hands them to the module that does the work;
a mistake ends in one `reprogrid:` line and exit status 2.
"""

from __future__ import annotations

import argparse
import shlex
import subprocess
import sys
import tempfile
from collections.abc import Sequence
from pathlib import Path

from reprogrid.commands import compare, scaffold, status_view
from reprogrid.commands import reproduce as reproduction
from reprogrid.plan import paths
from reprogrid.record import atomic, damage, provenance


class SyncError(ValueError):
    """A W&B sync that cannot start; its message is the one line to print."""


def sync_command(results: str, project: str | None, entity: str | None) -> list[str]:
    """The `wandb sync` command that uploads an experiment's offline W&B runs.

    `results` is the experiment's results folder; every offline run under its
    tracking/wandb/ goes, each resuming its own W&B run id.
    """
    from reprogrid.tracking import INSTALL_HINT, installed

    folder = Path(results) / "tracking" / "wandb"
    runs = sorted(folder.glob("offline-run-*"))
    if not runs:
        raise SyncError(
            f"no offline W&B runs under {folder}; export with tracking.wandb.enabled: true "
            "and tracking.wandb.mode: offline first"
        )
    if not installed("wandb"):
        raise SyncError(f"the wandb package is not installed; {INSTALL_HINT}")
    command = [sys.executable, "-m", "wandb", "sync"]
    command += ["--project", project] if project else []
    command += ["--entity", entity] if entity else []
    return command + [str(run) for run in runs]


def sync(args: argparse.Namespace) -> int:
    """`reprogrid sync`: upload offline W&B runs, credentials from the environment or .env."""
    from reprogrid.tracking import load_dotenv

    try:
        command = sync_command(args.results, args.project, args.entity)
    except SyncError as err:
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
    from reprogrid.commands import remote

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
        the_plan = reproduction.plan(args.run_dir, args.source, raw_dir)
        if not args.execute:
            print(reproduction.script(the_plan, args.workdir or "reprogrid-reproduce"), end="")
            return 0
        try:
            # The stored files are compared at the end: one that does not parse is damaged.
            from reprogrid.train import checkpoint

            stored = paths.files_in(args.run_dir)
            damage.check_whole(stored)
            checkpoint.check_weights(stored.model)
        except provenance.ProvenanceError as err:
            raise reproduction.ReproduceError(str(err)) from None
        if args.workdir:
            workdir = Path(args.workdir).resolve()
            if workdir.exists():
                raise reproduction.ReproduceError(f"--workdir {workdir} exists; name a new folder")
        else:
            workdir = Path(tempfile.mkdtemp(prefix="reprogrid-reproduce-")) / "checkout"
        identical = reproduction.execute(the_plan, workdir)
    except reproduction.ReproduceError as err:
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
    status_view.add_parser(commands)
    compare.add_parser(commands)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point of `reprogrid`: the chosen command's exit status (2: refused input, 1:
    a full disk, said in one line)."""
    args = _parser().parse_args(argv)
    try:
        return args.handler(args)
    except atomic.DiskFull as full:
        print(f"reprogrid: {full}", file=sys.stderr)
        return 1


if __name__ == "__main__":
    sys.exit(main())
