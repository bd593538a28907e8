"""Faults a lab meets, each run for real (docs/reproducibility.md, "Faults"): Snakemake in a
copy of the project on generated data (tests/conftest.py), one or two runs of one epoch."""

from __future__ import annotations

import os
import subprocess
import sys
import time
from pathlib import Path

import pytest

from conftest import copy_project, job_counts, small_grid, snakemake, write_config
from reprogrid.record import logs

pytestmark = pytest.mark.workflow

RUN = "arch=mlp/lr=0.01/seed=0"
TARGET = f"results/tiny/runs/{RUN}/metrics.json"


def one_run(tmp_path: Path, raw_dir: Path) -> tuple[Path, str]:
    project = copy_project(tmp_path / "project")
    config = small_grid(raw_dir, seed=[0], arch=["mlp"], lr=[0.01])
    return project, write_config(project, config).name


def tree(folder: Path) -> dict[str, bytes | None]:
    """Every path under `folder` with its bytes (None for a folder)."""
    return {
        str(path.relative_to(folder)): None if path.is_dir() else path.read_bytes()
        for path in sorted(folder.rglob("*"))
    }


def test_no_job_writes_through_a_symlink_out_of_the_project(tmp_path, raw_dir):
    project, configfile = one_run(tmp_path, raw_dir)
    outside = tmp_path / "outside"
    outside.mkdir()
    run_dir = project / "results/tiny/runs" / RUN
    run_dir.mkdir(parents=True)
    # Links planted at a declared output, the log, and the files a job keeps beside them.
    for name in ("metrics.json", "train.log", "claim.lock", "checkpoint.pt"):
        (outside / name).write_text(f"not yours: {name}\n")
        (run_dir / name).symlink_to(outside / name)
    before = tree(outside)
    # (The run's model.pt is missing, so the run trains.)
    model = f"results/tiny/runs/{RUN}/model.pt"
    snakemake(project, "--cores", "1", model, "--configfile", configfile)
    assert tree(outside) == before
    for name in ("metrics.json", "train.log", "claim.lock"):
        assert not (run_dir / name).is_symlink(), name

    # A run folder that is a link out of the project: refused before any job, in one line
    # naming it, and nothing is written through it.
    folder = project / "results/tiny/runs/arch=mlp"
    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    for path in sorted(folder.rglob("*"), reverse=True):
        path.unlink() if not path.is_dir() or path.is_symlink() else path.rmdir()
    folder.rmdir()
    folder.symlink_to(elsewhere)
    result = snakemake(project, "--cores", "1", TARGET, "--configfile", configfile, check=False)
    assert result.returncode == 1, result.stdout + result.stderr
    assert "Traceback" not in result.stdout + result.stderr
    lines = [line for line in result.stderr.splitlines() if line.startswith("reprogrid:")]
    assert len(lines) == 1, result.stderr
    assert "results/tiny/runs/arch=mlp is a symbolic link" in lines[0]
    assert list(elsewhere.iterdir()) == []


def start(project: Path, args: list[str], output: Path) -> subprocess.Popen:
    """A process in its own session, so that what it starts can be told from every other."""
    return subprocess.Popen(
        args,
        cwd=project,
        stdout=output.open("w"),
        stderr=subprocess.STDOUT,
        start_new_session=True,
    )


def snakemake_in(project: Path, configfile: str, output: Path, *args: str) -> subprocess.Popen:
    command = [sys.executable, "-m", "snakemake", "--cores", "1", "--configfile", configfile]
    return start(project, [*command, *args], output)


def processes_in(session: int, needle: bytes) -> list[int]:
    """The processes of `session` whose command line holds `needle`."""
    found = []
    for entry in Path("/proc").iterdir():
        try:
            ours = entry.name.isdigit() and os.getsid(int(entry.name)) == session
            if ours and needle in (entry / "cmdline").read_bytes():
                found.append(int(entry.name))
        except (OSError, ProcessLookupError):
            continue
    return found


def wait_until(condition, what: str, timeout: float = 120) -> None:
    deadline = time.monotonic() + timeout
    while not condition():
        assert time.monotonic() < deadline, f"no {what} after {timeout} s"
        time.sleep(0.02)


def gone(pids: list[int]) -> bool:
    return not any(Path(f"/proc/{pid}").exists() for pid in pids)


# Run by `reprogrid status` below: the command itself, with every write it attempts recorded
# through Python's audit hooks (open for writing, rename, mkdir, remove, ...).
WATCHED_STATUS = """
import os, sys
writes = []
CHANGES = {"os.rename", "os.remove", "os.mkdir", "os.rmdir", "os.symlink", "os.link",
           "os.truncate", "os.utime", "os.chmod", "shutil.rmtree"}
def hook(event, args):
    if event == "open":
        path, mode, flags = args
        writing = (mode and set(mode) & set("wax+")) or (
            flags & (os.O_WRONLY | os.O_RDWR | os.O_CREAT | os.O_TRUNC))
        if writing and not isinstance(path, int):
            writes.append(os.path.abspath(path))
    elif event in CHANGES:
        writes.append(os.path.abspath(args[0]))
sys.dont_write_bytecode = True
sys.addaudithook(hook)
from reprogrid.commands.cli import main
status = main(sys.argv[1:])
found = "\\n".join(writes)
with open(os.environ["WRITES"], "w") as handle:
    handle.write(found)
sys.exit(status)
"""


def test_a_second_snakemake_is_refused_and_status_beside_a_run_writes_nothing(tmp_path, raw_dir):
    project, configfile = one_run(tmp_path, raw_dir)
    first = snakemake_in(project, configfile, tmp_path / "first.out")
    wait_until(lambda: processes_in(first.pid, b"reprogrid.jobs.train"), "training job")
    writes = tmp_path / "writes.txt"
    watch = subprocess.Popen(
        [
            sys.executable,
            "-c",
            WATCHED_STATUS,
            "status",
            "--configfile",
            configfile,
            "--watch",
            "--interval",
            "0.5",
        ],
        cwd=project,
        env={**os.environ, "PYTHONPATH": str(project / "src"), "WRITES": str(writes)},
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
        text=True,
    )
    second = subprocess.run(
        [sys.executable, "-m", "snakemake", "--cores", "1", "--configfile", configfile],
        cwd=project,
        capture_output=True,
        text=True,
    )
    assert first.poll() is None, "the first Snakemake ended before the second could ask"
    assert second.returncode == 1, second.stdout + second.stderr
    assert "Directory cannot be locked" in second.stdout + second.stderr
    assert first.wait(timeout=300) == 0, (tmp_path / "first.out").read_text()
    assert watch.wait(timeout=60) == 0, watch.stderr.read()
    # The first run lost nothing: its one training attempt, its tables and its report.
    log = (project / "results/tiny/runs" / RUN / "train.log").read_text()
    assert len(logs.ATTEMPT.findall(log)) == 1
    assert snakemake(project, "-n", "--configfile", configfile).stdout.count("Job ") == 0
    # The watch, beside the run from its first epoch to its report, wrote nothing anywhere.
    assert writes.read_text() == ""


def finished_outputs(project: Path) -> dict[str, bytes | None]:
    """The experiment's tables and report: what aggregation and the report rules write."""
    return {folder: tree(project / folder) for folder in ("results/tiny/summary", "reports/tiny")}


def test_a_controller_killed_in_aggregation_or_the_report_recovers_to_the_same_bytes(
    tmp_path, raw_dir
):
    project, configfile = one_run(tmp_path, raw_dir)
    snakemake(project, "--cores", "1", "--configfile", configfile)
    uninterrupted = finished_outputs(project)
    for rule in ("aggregate", "figures"):
        output = tmp_path / f"{rule}.out"
        controller = snakemake_in(project, configfile, output, "--forcerun", rule)
        script = f"{rule}.py".encode()
        wait_until(lambda: processes_in(controller.pid, script), f"{rule} job")  # noqa: B023
        orphans = processes_in(controller.pid, script)
        controller.kill()
        controller.wait()
        wait_until(lambda: gone(orphans), f"end of the {rule} job")  # noqa: B023
        # The next call says what to do, in Snakemake's words.
        refused = snakemake(project, "--cores", "1", "--configfile", configfile, check=False)
        assert refused.returncode == 1, refused.stdout + refused.stderr
        assert "It can be removed with the --unlock argument" in refused.stderr, refused.stderr
        snakemake(project, "--unlock", "--configfile", configfile)
        # Without the default profile (which sets rerun-incomplete), Snakemake names the
        # job's outputs as incomplete and the flag that makes them again.
        bare = ["--workflow-profile", "none", "-n", "--configfile", configfile]
        incomplete = snakemake(project, *bare, check=False)
        assert incomplete.returncode == 1, incomplete.stdout + incomplete.stderr
        said = incomplete.stdout + incomplete.stderr
        assert "IncompleteFilesException" in said, said
        assert "rerun your command with the --rerun-incomplete flag" in said, said
        rerun = snakemake(project, "--cores", "1", "--configfile", configfile)
        assert job_counts(rerun.stdout + rerun.stderr)[rule] == 1, rerun.stderr
        assert finished_outputs(project) == uninterrupted, rule
