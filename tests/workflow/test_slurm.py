"""The Slurm profile against a real one-node Slurm cluster on 127.0.0.1 (tests/slurm_cluster.py).

The site values go on the command line as a user would pass them; `--sdm env-modules` stands in
for the profile's conda deployment because no conda exists here, and no cluster accounting runs,
so job states come from squeue.
"""

from __future__ import annotations

import json
import os
import re
import shutil
import subprocess
import sys
import time
from pathlib import Path

import pytest
import yaml

from conftest import REPO, copy_project, snakemake, tiny_grid, write_config
from reprogrid.record import provenance
from slurm_cluster import start_cluster, unavailable_reason

pytestmark = [pytest.mark.slurm, pytest.mark.workflow]

TWO_RUNS = {"seed": [0, 1], "arch": ["mlp"], "lr": [0.003]}
# One architecture, so no criterion comparing two.
NO_CRITERION = {"criterion": None}
RUNS = ("arch=mlp/lr=0.003/seed=0", "arch=mlp/lr=0.003/seed=1")


@pytest.fixture(scope="session")
def cluster(tmp_path_factory):
    """One Slurm cluster for the whole session, always stopped at its end."""
    reason = unavailable_reason()
    if reason:
        pytest.skip(reason)
    running = start_cluster(tmp_path_factory.mktemp("slurm"))
    yield running
    running.stop()


def site_arguments(partition: str) -> list[str]:
    """What a user adds to the profile for this cluster, and what this test cluster needs."""
    return [
        "--slurm-no-account",
        "--default-resources",
        f"slurm_partition={partition}",
        "--set-resources",
        "train:gpu=0",
        "train_rung:gpu=0",
        "--sdm",
        "env-modules",
        # No slurmdbd here, so no sacct: ask squeue, and ask it soon.
        "--slurm-status-command",
        "squeue",
        "--slurm-init-seconds-before-status-checks",
        "5",
    ]


def run_on_slurm(
    cluster, folder: Path, *args: str, check: bool = True
) -> subprocess.CompletedProcess:
    """`snakemake --profile profiles/slurm ...` in `folder`, submitting to `cluster`.

    sbatch exports this environment to the job, so the job's `python` is this venv's.
    """
    env = {
        **cluster.env,
        "PATH": os.pathsep.join([str(Path(sys.executable).parent), cluster.path]),
    }
    result = subprocess.run(
        [sys.executable, "-m", "snakemake", "--profile", "profiles/slurm", *args],
        cwd=folder,
        env=env,
        capture_output=True,
        text=True,
        timeout=600,
    )
    if check and result.returncode != 0:
        pytest.fail(
            f"snakemake on Slurm failed:\n{result.stdout}\n{result.stderr}\n{cluster.logs()}"
        )
    return result


def run_outputs(folder: Path, run: str) -> tuple[dict, bytes, provenance.Provenance]:
    """A run's metrics without its timing, its weights' bytes and its provenance."""
    run_dir = folder / "results/tiny/runs" / run
    metrics = json.loads((run_dir / "metrics.json").read_text())
    metrics.pop("train_seconds")
    return metrics, (run_dir / "model.pt").read_bytes(), provenance.read_run(run_dir)


def slurm_job(cluster, job_id: str) -> dict[str, str]:
    """`scontrol show job` as a dict; finished jobs stay listed for MinJobAge."""
    fields = {}
    for word in cluster.run("scontrol", "show", "job", "--oneliner", job_id).split():
        key, _, value = word.partition("=")
        fields[key] = value
    return fields


@pytest.fixture(scope="module")
def local_grid(tmp_path_factory, raw_dir):
    """The two runs trained locally, to compare the cluster's results with."""
    folder = copy_project(tmp_path_factory.mktemp("local") / "project")
    config = write_config(folder, tiny_grid(raw_dir, grid=TWO_RUNS, analysis=NO_CRITERION))
    targets = [f"results/tiny/runs/{run}/metrics.json" for run in RUNS]
    snakemake(folder, *targets, "--cores", "2", "--configfile", str(config))
    return folder


def all_jobs(cluster) -> set[str]:
    """Ids of every job the cluster still lists, finished ones included."""
    return set(cluster.run("squeue", "--noheader", "--states=all", "--format=%i").split())


def test_the_grid_runs_on_slurm_and_matches_a_local_run(cluster, local_grid, tmp_path, raw_dir):
    folder = copy_project(tmp_path / "project")
    config = write_config(folder, tiny_grid(raw_dir, grid=TWO_RUNS, analysis=NO_CRITERION))
    before = all_jobs(cluster)
    run_on_slurm(cluster, folder, *site_arguments(cluster.partition), "--configfile", str(config))

    job_ids = set()
    for run in RUNS:
        metrics, model, record = run_outputs(folder, run)
        local_metrics, local_model, _ = run_outputs(local_grid, run)
        assert metrics == local_metrics
        assert model == local_model
        job_id = record.slurm_job_id
        job = slurm_job(cluster, job_id)
        assert job["JobState"] == "COMPLETED"
        assert job["Partition"] == cluster.partition
        assert "rule_train" in job["Comment"]
        assert record.slurm_node == job["NodeList"]
        job_ids.add(job_id)
    assert len(job_ids) == len(RUNS)
    # Only the training runs went to the queue; data, tables and figures ran in the controller.
    assert all_jobs(cluster) - before == job_ids
    assert (folder / "reports/tiny/summary.md").is_file()


def test_packed_runs_share_one_slurm_job_and_match_a_local_run(
    cluster, local_grid, tmp_path, raw_dir
):
    folder = copy_project(tmp_path / "project")
    config = write_config(folder, tiny_grid(raw_dir, grid=TWO_RUNS, analysis=NO_CRITERION))
    packed = ["--profile", "profiles/slurm/packed", "--group-components", "train=2"]
    run_on_slurm(
        cluster, folder, *packed, *site_arguments(cluster.partition), "--configfile", str(config)
    )

    job_ids = set()
    for run in RUNS:
        metrics, model, record = run_outputs(folder, run)
        local_metrics, local_model, _ = run_outputs(local_grid, run)
        assert (metrics, model) == (local_metrics, local_model)
        job_ids.add(record.slurm_job_id)
    assert len(job_ids) == 1
    job = slurm_job(cluster, job_ids.pop())
    assert job["JobState"] == "COMPLETED"
    assert job["NumCPUs"] == "2"  # the two runs' threads, side by side


def test_a_failing_run_in_a_packed_job_leaves_the_finished_runs_outputs(cluster, tmp_path, raw_dir):
    # A packed job runs its runs one after another, costliest first: the cnn run finishes,
    # then the mlp run fails.
    grid = {"seed": [0], "arch": ["cnn", "mlp"], "lr": [0.003]}
    folder = copy_project(tmp_path / "project")
    config = write_config(folder, tiny_grid(raw_dir, grid=grid, analysis=NO_CRITERION))
    runs = ("arch=cnn/lr=0.003/seed=0", "arch=mlp/lr=0.003/seed=0")
    finished, failing = (folder / "results/tiny/runs" / run for run in runs)
    # A folder where the run's metrics.json belongs: that run trains, cannot write its
    # metrics and exits 1. (The tests run as root, which a read-only folder would not stop.)
    (failing / "metrics.json").mkdir(parents=True)
    (failing / "metrics.json/blocker").write_text("")
    packed = ["--profile", "profiles/slurm/packed", "--group-components", "train=2"]
    targets = [f"results/tiny/runs/{run}/metrics.json" for run in runs]
    result = run_on_slurm(
        cluster, folder, *packed, *site_arguments(cluster.partition), *targets,
        "--configfile", str(config), check=False,
    )  # fmt: skip
    log = f"{result.stdout}\n{result.stderr}"
    assert result.returncode != 0, log
    assert "Error in group train" in log, log
    for name in ("metrics.json", "history.csv", "model.pt", "provenance.json"):
        assert (finished / name).is_file(), f"{name} of the finished run is gone:\n{log}"
    assert json.loads((finished / "metrics.json").read_text())["status"] == "ok"
    assert not (failing / "metrics.json").is_file()

    # Once the cause is gone, the same command trains the failed run alone.
    shutil.rmtree(failing / "metrics.json")
    # The same site values as the run: the profile's GPU would make the device another one,
    # which plans the finished run again too (config/README.md, "Run identity").
    plan = snakemake(
        folder, *targets, "--profile", "profiles/slurm", *packed, "-n",
        *site_arguments(cluster.partition), "--configfile", str(config),
    )  # fmt: skip
    assert plan.stdout.count("Training arch=") == 1, plan.stdout
    assert f"Training {runs[1]}" in plan.stdout


def test_a_stopped_run_is_retried_with_more_time_and_resumes(cluster, tmp_path, raw_dir):
    # SIGTERM to the job's steps is what Slurm sends at the time limit (or `--signal` before
    # it); here scancel sends it as soon as the first epoch's checkpoint exists.
    run = RUNS[0]
    long = tiny_grid(raw_dir, grid=TWO_RUNS, train={"epochs": 40}, analysis=NO_CRITERION)
    target = f"results/tiny/runs/{run}/metrics.json"
    local = copy_project(tmp_path / "local")
    snakemake(local, target, "--cores", "1", "--configfile", str(write_config(local, long)))

    folder = copy_project(tmp_path / "slurm")
    config = write_config(folder, long)
    env = {**cluster.env, "PATH": os.pathsep.join([str(Path(sys.executable).parent), cluster.path])}
    command = [sys.executable, "-m", "snakemake", target, "--profile", "profiles/slurm"]
    controller = subprocess.Popen(
        [*command, *site_arguments(cluster.partition), "--configfile", str(config)],
        cwd=folder,
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
    )
    checkpoint = folder / "results/tiny/runs" / run / "checkpoint.pt"
    deadline = time.monotonic() + 120
    while not checkpoint.exists() and time.monotonic() < deadline:
        time.sleep(0.05)
    running = cluster.run("squeue", "--noheader", "--states=RUNNING", "--format=%i").split()
    assert checkpoint.exists() and len(running) == 1, "the run never got going on Slurm"
    cluster.run("scancel", "--signal=TERM", running[0])
    output, _ = controller.communicate(timeout=300)
    assert controller.returncode == 0, f"{output}\n{cluster.logs()}"

    metrics, model, record = run_outputs(folder, run)
    local_metrics, local_model, _ = run_outputs(local, run)
    assert record.job.resumed_from_epoch is not None
    assert (metrics, model) == (local_metrics, local_model)
    stopped, retried = (
        slurm_job(cluster, running[0]),
        slurm_job(cluster, record.slurm_job_id),
    )
    assert stopped["JobState"] == "FAILED"
    assert (stopped["TimeLimit"], retried["TimeLimit"]) == ("01:00:00", "02:00:00")


ARRAYS = ("--profile", "profiles/slurm/arrays")
SIX_RUNS = {"seed": [0, 1, 2], "arch": ["mlp"], "lr": [0.001, 0.003]}


def run_targets(runs) -> list[str]:
    return [f"results/tiny/runs/{run}/metrics.json" for run in runs]


def array_task(record: provenance.Provenance) -> str | None:
    """The `<jobid>_<task>` a run trained in, as squeue and sacct name it; None outside an array."""
    env = record.env
    if "SLURM_ARRAY_JOB_ID" not in env:
        return None
    return f"{env['SLURM_ARRAY_JOB_ID']}_{env['SLURM_ARRAY_TASK_ID']}"


def test_a_grid_goes_to_slurm_as_one_array_whose_tasks_match_a_local_run(
    cluster, local_grid, tmp_path, raw_dir
):
    folder = copy_project(tmp_path / "project")
    config = write_config(folder, tiny_grid(raw_dir, grid=SIX_RUNS, analysis=NO_CRITERION))
    runs = [f"arch=mlp/lr={lr}/seed={seed}" for seed in (0, 1, 2) for lr in (0.001, 0.003)]
    before = all_jobs(cluster)
    submitted = run_on_slurm(
        cluster, folder, *ARRAYS, *site_arguments(cluster.partition), *run_targets(runs),
        "--configfile", str(config), "--verbose",
    )  # fmt: skip

    tasks = all_jobs(cluster) - before
    (array,) = {task.split("_")[0] for task in tasks}
    assert tasks == {f"{array}_{index}" for index in range(1, 7)}
    assert {array_task(run_outputs(folder, run)[2]) for run in runs} == tasks
    for run in RUNS:
        metrics, model, _ = run_outputs(folder, run)
        assert (metrics, model) == run_outputs(local_grid, run)[:2]
    assert slurm_job(cluster, f"{array}_1")["JobState"] == "COMPLETED"
    # The plugin writes tasks 2.. into the one --wrap argument; a full array of the profile's
    # limit must leave it under half of the 128 KiB an argument may hold.
    wrap = re.search(r'--wrap="(.*?)"(?: |$)', submitted.stdout + submitted.stderr, re.MULTILINE)
    per_task = (len(wrap[1]) - len(wrap[1].split(" --slurm-jobstep-array-execs")[0])) / 5
    limit = yaml.safe_load((REPO / "profiles/slurm/arrays/config.yaml").read_text())
    assert len(wrap[1]) + (limit["slurm-array-limit"] - 6) * per_task < 64 * 1024


def test_a_search_halves_on_slurm_in_arrays_as_it_does_locally(cluster, tmp_path, raw_dir):
    search = tiny_grid(
        raw_dir,
        grid={"seed": [0, 1], "arch": ["mlp"], "lr": [0.0003, 0.001, 0.01, 0.03]},
        halving={"enabled": True, "eta": 2, "min_epochs": 1, "max_epochs": 2},
        analysis=NO_CRITERION,
    )
    local = copy_project(tmp_path / "local")
    snakemake(local, "--cores", "2", "--configfile", str(write_config(local, search)))
    folder = copy_project(tmp_path / "slurm")
    config = write_config(folder, search)
    before = all_jobs(cluster)
    run_on_slurm(
        cluster, folder, *ARRAYS, *site_arguments(cluster.partition), "--configfile", str(config)
    )

    # One array for rung 0's eight runs, one for the four the decision kept: two submissions.
    arrays = {task.split("_")[0] for task in all_jobs(cluster) - before}
    assert len(arrays) == 2
    decisions = "results/tiny/search/rungs.csv"
    assert (folder / decisions).read_text() == (local / decisions).read_text()
    models = sorted(path.relative_to(folder) for path in folder.rglob("model.pt"))
    assert len(models) == 4
    for model in models:
        assert (folder / model).read_bytes() == (local / model).read_bytes()


def task_training(run: str) -> str | None:
    """The array task (`<jobid>_<task>`) whose training process trains `run` right now."""
    for entry in Path("/proc").iterdir():
        try:
            argv = (entry / "cmdline").read_bytes().split(b"\0")
            environ = dict(
                item.split(b"=", 1)
                for item in (entry / "environ").read_bytes().split(b"\0")
                if b"=" in item
            )
        except (OSError, ValueError):
            continue
        if (
            b"reprogrid.jobs.train" in argv
            and run.encode() in argv
            and b"SLURM_ARRAY_TASK_ID" in environ
        ):
            job, index = environ[b"SLURM_ARRAY_JOB_ID"], environ[b"SLURM_ARRAY_TASK_ID"]
            return f"{job.decode()}_{index.decode()}"
    return None


def test_an_array_task_stopped_at_its_time_limit_is_retried_with_more_time_and_resumes(
    cluster, tmp_path, raw_dir
):
    long = tiny_grid(raw_dir, grid=TWO_RUNS, train={"epochs": 100}, analysis=NO_CRITERION)
    local = copy_project(tmp_path / "local")
    snakemake(
        local, *run_targets(RUNS), "--cores", "2", "--configfile", str(write_config(local, long))
    )

    folder = copy_project(tmp_path / "slurm")
    config = write_config(folder, long)
    env = {**cluster.env, "PATH": os.pathsep.join([str(Path(sys.executable).parent), cluster.path])}
    command = [sys.executable, "-m", "snakemake", *run_targets(RUNS), "--profile", "profiles/slurm"]
    controller = subprocess.Popen(
        [*command, *ARRAYS, *site_arguments(cluster.partition), "--configfile", str(config)],
        cwd=folder,
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
    )
    # SIGTERM to every process of the task of the first run that saved a checkpoint, as Slurm
    # sends it at the task's time limit. An array task runs its command in the batch step,
    # without a job step, so `--full`: a plain `scancel --signal` (and `--signal=TERM@120`)
    # signals job steps only.
    deadline = time.monotonic() + 120
    stopped_run = task = None
    while task is None and time.monotonic() < deadline:
        for run in RUNS:
            if (folder / "results/tiny/runs" / run / "checkpoint.pt").exists():
                stopped_run, task = run, task_training(run)
                break
        time.sleep(0.05)
    assert task is not None, "no array task got going on Slurm"
    cluster.run("scancel", "--full", "--signal=TERM", task)
    output, _ = controller.communicate(timeout=300)
    assert controller.returncode == 0, f"{output}\n{cluster.logs()}"

    for run in RUNS:
        metrics, model, _ = run_outputs(folder, run)
        assert (metrics, model) == run_outputs(local, run)[:2]
    records = {run: run_outputs(folder, run)[2] for run in RUNS}
    (other,) = set(RUNS) - {stopped_run}
    assert records[stopped_run].job.resumed_from_epoch is not None
    assert records[other].job.resumed_from_epoch is None
    assert array_task(records[other]) is not None
    stopped = slurm_job(cluster, task)
    retried = slurm_job(cluster, records[stopped_run].slurm_job_id)
    assert stopped["JobState"] == "FAILED"
    assert (stopped["TimeLimit"], retried["TimeLimit"]) == ("01:00:00", "02:00:00")


def test_profile_keeps_gpu_flags_out_of_slurm_extra():
    # The plugin refuses a job whose slurm_extra holds options it manages itself (GPUs too).
    from snakemake_executor_plugin_slurm.validation import get_forbidden_slurm_options

    profile = yaml.safe_load((REPO / "profiles/slurm/config.yaml").read_text())
    train = profile["set-resources"]["train"]
    assert train["gpu"] == 1
    assert profile["set-resources"]["train_rung"] == train
    assert "--signal=TERM@" in train["slurm_extra"]
    for pattern, what in get_forbidden_slurm_options().items():
        assert not re.search(pattern, train["slurm_extra"]), what


def test_dry_run_of_the_default_grid_shows_the_train_jobs_and_their_resources(project):
    # Dry runs check the deployment method too; env-modules stands in for the absent conda.
    result = snakemake(project, "--profile", "profiles/slurm", "-n", "--sdm", "env-modules")
    lines = [line for line in result.stdout.splitlines() if "Training arch=" in line]
    assert len(lines) == 12  # 3 seeds x 2 architectures x 2 learning rates
    assert all("(1 thread(s), 1 GPU(s), 3000 MB, 60 min)" in line for line in lines)
    assert "Job stats" in result.stdout


def test_packed_profile_puts_four_runs_into_each_submission(project):
    result = snakemake(
        project,
        "--profile",
        "profiles/slurm",
        "--profile",
        "profiles/slurm/packed",
        "-n",
        "--sdm",
        "env-modules",
    )
    assert result.stdout.count("Group job train") == 3  # 12 runs, 4 to a job


def test_arrays_profile_hands_every_run_over_at_once(project):
    # The plugin (2.8.0) never submits a batch smaller than the ready runs left behind, so
    # the arrays profile must let Snakemake hand over every run in one go.
    profile = yaml.safe_load((REPO / "profiles/slurm/arrays/config.yaml").read_text())
    assert profile["slurm-array-jobs"] == "train,train_rung"
    per_second = int(profile["max-jobs-per-timespan"].split("/")[0])
    assert min(profile["jobs"], per_second) >= 100_000 > profile["slurm-array-limit"]
    result = snakemake(
        project, "--profile", "profiles/slurm", "--profile", "profiles/slurm/arrays",
        "-n", "--sdm", "env-modules",
    )  # fmt: skip
    assert result.stdout.count("Training arch=") == 12
