"""One writer per run folder, proved for real: the claim between two processes, a job that
dies with its killed Snakemake, a second Snakemake refused while an orphan trains, and
aggregation refusing a run whose files come from two jobs."""

from __future__ import annotations

import json
import os
import re
import shutil
import signal
import socket
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import pytest

from conftest import REPO, copy_project, snakemake, tiny_grid, write_config
from reprogrid.plan import paths
from reprogrid.record import damage, logs, provenance
from reprogrid.train import claim, lifeline

RUN = "arch=cnn/lr=0.003/seed=0"
HOLD = textwrap.dedent(
    """
    import sys, time
    from reprogrid.train import claim
    held = claim.RunClaim("r", sys.argv[1], claim.this_process("job-a", "then")).take()
    print("held", flush=True)
    time.sleep(float(sys.argv[2]))
    held.release()
    """
)


def holder(folder: Path, seconds: float, **env: str) -> subprocess.Popen:
    """Another process holding the claim on `folder` for `seconds`, once it says so."""
    process = subprocess.Popen(
        [sys.executable, "-c", HOLD, str(folder), str(seconds)],
        env={**os.environ, "PYTHONPATH": str(REPO / "src"), **env},
        stdout=subprocess.PIPE,
        text=True,
    )
    assert process.stdout.readline() == "held\n"
    return process


def test_a_second_claim_is_refused_naming_the_holder_until_it_is_killed(tmp_path):
    other = holder(tmp_path, 60)
    mine = claim.RunClaim("r", tmp_path, claim.this_process("job-b", "now"))
    with pytest.raises(claim.Claimed) as refused:
        mine.take()
    message = str(refused.value)
    host = socket.gethostname()
    assert f"job job-a (pid {other.pid} on host {host}" in message
    assert f"`kill {other.pid}` on {host}" in message
    assert "\n" not in message

    other.kill()
    other.wait()
    with mine.take():
        record = json.loads((tmp_path / paths.CLAIM).read_text())
        assert (record["job"], record["pid"]) == ("job-b", os.getpid())
    assert (tmp_path / paths.CLAIM).read_text() == ""


def test_a_claim_waits_for_a_holder_that_ends(tmp_path):
    other = holder(tmp_path, 0.5)
    with claim.RunClaim("r", tmp_path, claim.this_process("job-b", "now")).take(wait=30):
        assert other.wait(timeout=5) == 0


def test_a_holder_in_a_slurm_job_is_stopped_with_scancel(tmp_path):
    other = holder(tmp_path, 60, SLURM_JOB_ID="4242")
    try:
        with pytest.raises(claim.Claimed, match=r"Slurm job 4242.*`scancel 4242`"):
            claim.RunClaim("r", tmp_path, claim.this_process("job-b", "now")).take()
    finally:
        other.kill()
        other.wait()


TIED = textwrap.dedent(
    """
    import signal, sys, time
    from pathlib import Path
    from reprogrid.train import lifeline
    signal.signal(signal.SIGTERM, lambda *_: (Path(sys.argv[1]).write_text("stopped"), sys.exit(0)))
    print(lifeline.tie_to_controller(), flush=True)
    time.sleep(60)
    """
)
CONTROLLER = textwrap.dedent(
    """
    import os, shlex, subprocess, sys, time
    os.environ["REPROGRID_CONTROLLER"] = str(os.getpid())
    # Through a shell that stays (`; true`), as a rule's shell command may.
    command = f'{shlex.quote(sys.executable)} -c "$TIED" {shlex.quote(sys.argv[1])}; true'
    subprocess.Popen(["bash", "-c", command])
    time.sleep(60)
    """
)


def test_a_tied_job_is_stopped_when_its_controller_is_killed_through_a_shell(tmp_path):
    env = {**os.environ, "PYTHONPATH": str(REPO / "src"), "TIED": TIED}
    env.pop("SLURM_JOB_ID", None)
    mark = tmp_path / "mark"
    controller = subprocess.Popen(
        [sys.executable, "-c", CONTROLLER, str(mark)], env=env, stdout=subprocess.PIPE, text=True
    )
    assert controller.stdout.readline().strip() == str(controller.pid)
    controller.kill()
    controller.wait()
    deadline = time.monotonic() + 10
    while not mark.exists():
        assert time.monotonic() < deadline, "the tied job was not stopped"
        time.sleep(0.05)


def test_no_tie_under_slurm_or_to_a_process_that_is_no_ancestor(monkeypatch):
    monkeypatch.delenv("SLURM_JOB_ID", raising=False)
    monkeypatch.setenv(lifeline.CONTROLLER_ENV, str(os.getppid()))
    assert lifeline.controller() == os.getppid()
    monkeypatch.setenv(lifeline.CONTROLLER_ENV, str(os.getpid()))
    assert lifeline.controller() is None
    monkeypatch.setenv(lifeline.CONTROLLER_ENV, str(os.getppid()))
    monkeypatch.setenv("SLURM_JOB_ID", "4242")
    assert lifeline.controller() is None


# One run of about a second per epoch, long enough to outlive a second Snakemake start.
@pytest.fixture(scope="module")
def long_config(tmp_path_factory, raw_dir) -> Path:
    config = tiny_grid(
        raw_dir,
        experiment="claim",
        grid={"seed": [0], "arch": ["cnn"], "lr": [0.003]},
        train={"epochs": 16, "batch_size": 8},
        analysis={"criterion": None},
    )
    return write_config(tmp_path_factory.mktemp("claim"), config)


def run_dir(folder: Path) -> Path:
    return folder / paths.run_dir("claim", RUN)


def run_file(folder: Path, name: str) -> Path:
    return run_dir(folder) / name


def target(config: Path) -> list[str]:
    return [paths.run_file("claim", RUN, "model.pt"), "--configfile", str(config)]


@pytest.fixture(scope="module")
def reference(tmp_path_factory, long_config) -> Path:
    """The run trained once, uninterrupted."""
    folder = copy_project(tmp_path_factory.mktemp("reference") / "project")
    snakemake(folder, "--cores", "1", *target(long_config))
    return folder


def start(folder: Path, args: list[str], output: Path) -> subprocess.Popen:
    """A process in its own session, so that its trainer can be told from every other."""
    return subprocess.Popen(
        args, cwd=folder, stdout=output.open("w"), stderr=subprocess.STDOUT, start_new_session=True
    )


def trainer_of(session: int) -> int:
    """The training job's process in `session`."""
    for entry in Path("/proc").iterdir():
        try:
            if not entry.name.isdigit() or os.getsid(int(entry.name)) != session:
                continue
            argv = (entry / "cmdline").read_bytes().split(b"\0")
        except (OSError, ProcessLookupError):
            continue
        if b"python" in Path(argv[0].decode()).name.encode() and b"reprogrid.jobs.train" in argv:
            return int(entry.name)
    raise AssertionError("no training process found")


def wait_for_epoch(log: Path, process: subprocess.Popen, timeout: float = 120) -> None:
    deadline = time.monotonic() + timeout
    while not (log.is_file() and logs.EPOCH.search(log.read_text())):
        assert process.poll() is None, "training ended before its first epoch"
        assert time.monotonic() < deadline, f"no epoch in {log} after {timeout} s"
        time.sleep(0.05)


def gone(pid: int, timeout: float) -> bool:
    deadline = time.monotonic() + timeout
    while Path(f"/proc/{pid}").exists():
        if time.monotonic() > deadline:
            return False
        time.sleep(0.05)
    return True


def assert_one_job_made_it(folder: Path, reference: Path) -> str:
    """The run equals the reference bit for bit and its files come from one job: its id."""
    model = run_file(folder, "model.pt").read_bytes()
    assert model == run_file(reference, "model.pt").read_bytes()
    record = provenance.read(run_file(folder, paths.PROVENANCE))
    assert logs.last_job(run_file(folder, paths.TRAIN_LOG)) == record.job.id
    damage.check_run(paths.files_in(run_dir(folder)))
    assert run_file(folder, paths.CLAIM).read_text() == ""
    return record.job.id


@pytest.mark.workflow
def test_a_killed_snakemake_takes_its_trainer_along_and_the_rerun_ends_identical(
    reference, long_config, tmp_path
):
    folder = copy_project(tmp_path / "project")
    command = [sys.executable, "-m", "snakemake", "--cores", "1", *target(long_config)]
    controller = start(folder, command, tmp_path / "killed.txt")
    wait_for_epoch(run_file(folder, paths.TRAIN_LOG), controller)
    trainer = trainer_of(controller.pid)
    os.kill(controller.pid, signal.SIGKILL)
    controller.wait()

    assert gone(trainer, 30), "the trainer outlived its Snakemake"
    # Its parent was Snakemake itself (the shell execs a lone command): the kernel's
    # death signal stopped it as SIGTERM would, checkpoint saved.
    log = run_file(folder, paths.TRAIN_LOG).read_text()
    stopped = re.search(r"stopped by signal 15 in epoch (\d+) after batch (\d+)", log)
    assert stopped, log
    orphan = logs.last_job(run_file(folder, paths.TRAIN_LOG))

    # The documented recovery: unlock, then run again; the run resumes where it stopped.
    snakemake(folder, "--unlock", "--configfile", str(long_config))
    result = snakemake(folder, "--cores", "1", *target(long_config))
    epoch, batch = stopped.groups()
    assert f"resuming from epoch {epoch}, batch {batch} (checkpoint of job {orphan})" in (
        result.stderr
    )
    assert assert_one_job_made_it(folder, reference) != orphan


def train_command(folder: Path, config: Path) -> str:
    """The train job's shell command as Snakemake would run it, its data prepared first."""
    plan = snakemake(folder, "-n", "-p", *target(config)).stdout
    shown = next(line for line in plan.splitlines() if "-m reprogrid.jobs.train" in line)
    command = shown[shown.index('"$REPROGRID_PYTHON"') :]
    snakemake(
        folder, "--cores", "1", re.search(r"--data (\S+)", command)[1], "--configfile", str(config)
    )
    return command


@pytest.mark.workflow
def test_a_second_snakemake_is_refused_while_an_orphan_trains_the_run(
    reference, long_config, tmp_path
):
    folder = copy_project(tmp_path / "project")
    env = {**os.environ, "REPROGRID_PYTHON": sys.executable, "PYTHONPATH": str(folder / "src")}
    env.pop(lifeline.CONTROLLER_ENV, None)
    # A trainer no Snakemake controls: what a killed controller leaves where the OS cannot help.
    orphan = subprocess.Popen(
        ["bash", "-c", train_command(folder, long_config)],
        cwd=folder,
        env=env,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
        start_new_session=True,
    )
    wait_for_epoch(run_file(folder, paths.TRAIN_LOG), orphan)
    pid = trainer_of(orphan.pid)
    held_by = json.loads(run_file(folder, paths.CLAIM).read_text())
    assert held_by["pid"] == pid

    second = snakemake(folder, "--cores", "1", *target(long_config), check=False)
    assert second.returncode != 0
    output = second.stdout + second.stderr
    refusals = [line for line in output.splitlines() if line.startswith("reprogrid:")]
    assert len(refusals) == 1, output
    assert f"run {RUN} is being trained by job {held_by['job']}" in refusals[0]
    assert f"pid {pid} on host {socket.gethostname()}" in refusals[0]
    assert f"`kill {pid}`" in refusals[0]
    assert "Traceback" not in output
    # One writer: the orphan trains on, still the holder, its checkpoint its own.
    assert orphan.poll() is None, "the refusal stopped the orphan"
    assert json.loads(run_file(folder, paths.CLAIM).read_text()) == held_by

    # What the refusal says to do: stop the orphan, run Snakemake again.
    os.kill(pid, signal.SIGTERM)
    assert orphan.wait(timeout=60) == 143
    result = snakemake(folder, "--cores", "1", *target(long_config))
    assert f"(checkpoint of job {held_by['job']})" in result.stderr
    assert assert_one_job_made_it(folder, reference) != held_by["job"]


@pytest.mark.workflow
def test_aggregation_refuses_a_run_whose_files_come_from_two_jobs(reference, tmp_path):
    folder = tmp_path / "run"
    shutil.copytree(run_dir(reference), folder)
    files = paths.files_in(folder)
    damage.check_run(files)
    record = provenance.read(files.provenance)

    log = folder / paths.TRAIN_LOG
    attempt = logs.ATTEMPT_LINE % ("other", RUN, "cpu", 1)
    log.write_text(f"{log.read_text()}2026-01-01 00:00:00,000 INFO {attempt}\n")
    with pytest.raises(provenance.ProvenanceError) as refused:
        damage.check_run(files)
    assert str(refused.value).startswith(f"{log}: ends with an attempt of job other, not job")
    assert record.job.id in str(refused.value)

    shutil.copy2(run_file(reference, paths.TRAIN_LOG), log)
    metrics = Path(files.metrics)
    metrics.write_text(metrics.read_text().replace('"ok"', '"ok" '))
    with pytest.raises(
        provenance.ProvenanceError, match=f"^{re.escape(str(metrics))}: does not hold"
    ):
        damage.check_run(files)
