"""Reproducibility proved for real: fresh clones agree bit for bit, a dirty tree keeps its diff,
a killed or stopped job resumes to the same weights, and mixed code versions are flagged."""

from __future__ import annotations

import importlib.metadata
import json
import os
import re
import signal
import stat
import subprocess
import sys
import time
from pathlib import Path

import pandas as pd
import pytest

import idxdata
from conftest import (
    copy_project,
    git,
    git_project,
    job_counts,
    snakemake,
    tiny_grid,
    write_config,
)
from reprogrid.analysis import audit, stats
from reprogrid.plan import paths
from reprogrid.record import capture, provenance
from reprogrid.train import devices

RUN = "arch=cnn/lr=0.003/seed=0"
TIMING = set(audit.TIMING_FIELDS)


def run_file(folder: Path, name: str, experiment: str = "resume", run: str = RUN) -> Path:
    return folder / "results" / experiment / "runs" / run / name


def without_timing(record: dict) -> dict:
    return {key: value for key, value in record.items() if key not in TIMING}


@pytest.fixture(scope="module")
def resume_config(tmp_path_factory) -> Path:
    """One cnn run of four epochs on enough data that each epoch takes about a second."""
    folder = tmp_path_factory.mktemp("resume")
    raw = idxdata.write_dataset(folder / "raw", n_train=3000, n_test=300)
    config = tiny_grid(
        raw,
        experiment="resume",
        grid={"seed": [0], "arch": ["cnn"], "lr": [0.003]},
        train={"epochs": 4},
        analysis={"criterion": None},
    )
    return write_config(folder, config)


def train_target(folder: Path) -> str:
    return str(run_file(folder, "model.pt").relative_to(folder))


@pytest.fixture(scope="module")
def reference(tmp_path_factory, resume_config) -> Path:
    """The run trained once, uninterrupted, in a fresh git checkout."""
    folder = git_project(tmp_path_factory.mktemp("reference") / "project")
    snakemake(folder, "--cores", "1", train_target(folder), "--configfile", str(resume_config))
    return folder


@pytest.mark.workflow
def test_two_fresh_clones_give_byte_identical_weights_and_metrics(
    reference, resume_config, tmp_path
):
    other = git_project(tmp_path / "project")
    snakemake(other, "--cores", "1", train_target(other), "--configfile", str(resume_config))
    assert run_file(other, "model.pt").read_bytes() == run_file(reference, "model.pt").read_bytes()
    metrics = [json.loads(run_file(f, "metrics.json").read_text()) for f in (reference, other)]
    assert metrics[0]["status"] == "ok"
    assert without_timing(metrics[0]) == without_timing(metrics[1])
    curves = [
        pd.read_csv(run_file(f, "history.csv")).drop(columns="epoch_seconds")
        for f in (reference, other)
    ]
    pd.testing.assert_frame_equal(curves[0], curves[1], check_exact=True)
    record = provenance.read(run_file(other, "provenance.json"))
    assert record.commit == git(other, "rev-parse", "HEAD").strip()
    assert record.dirty is False
    assert not run_file(other, "uncommitted.patch").exists()


def start_training(folder: Path, config: Path, output: Path) -> subprocess.Popen:
    """Snakemake in its own process group, so the whole job tree can be signalled at once."""
    return subprocess.Popen(
        [sys.executable, "-m", "snakemake", "--cores", "1", train_target(folder),
         "--configfile", str(config)],
        cwd=folder,
        stdout=output.open("w"),
        stderr=subprocess.STDOUT,
        start_new_session=True,
    )  # fmt: skip


def wait_for(path: Path, process: subprocess.Popen, timeout: float = 300) -> None:
    deadline = time.monotonic() + timeout
    while not path.exists():
        assert process.poll() is None, "training ended before its first checkpoint"
        assert time.monotonic() < deadline, f"no {path.name} after {timeout} s"
        time.sleep(0.02)


def training_pid(session: int) -> int:
    """The training script's process among those of `session`."""
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            if os.getsid(int(entry.name)) != session:
                continue
            argv = (entry / "cmdline").read_bytes().decode(errors="replace").split("\0")[:-1]
        except (OSError, ProcessLookupError):
            continue
        # The interpreter itself, not a shell whose command line merely names the module.
        if argv and "python" in Path(argv[0]).name and "reprogrid.jobs.train" in argv:
            return int(entry.name)
    raise AssertionError("no training process found")


def rerun(folder: Path, config: Path) -> subprocess.CompletedProcess:
    """What a user does after a lost job: unlock, then rerun what was incomplete."""
    snakemake(folder, "--unlock", "--configfile", str(config))
    return snakemake(
        folder, "--cores", "1", train_target(folder), "--configfile", str(config),
        "--rerun-incomplete",
    )  # fmt: skip


@pytest.mark.workflow
def test_sigkill_midway_then_rerun_incomplete_resumes_to_identical_weights(
    reference, resume_config, tmp_path
):
    folder = copy_project(tmp_path / "project")
    process = start_training(folder, resume_config, tmp_path / "killed.txt")
    wait_for(run_file(folder, "checkpoint.pt"), process)
    os.killpg(process.pid, signal.SIGKILL)
    process.wait()
    assert not run_file(folder, "model.pt").exists()

    result = rerun(folder, resume_config)
    resumed = re.search(r"resuming from epoch (\d+), batch 0", result.stderr)
    assert resumed, result.stderr
    assert 2 <= int(resumed.group(1)) <= 4
    assert run_file(folder, "model.pt").read_bytes() == run_file(reference, "model.pt").read_bytes()
    record = provenance.read(run_file(folder, "provenance.json"))
    assert record.job.resumed_from_epoch == int(resumed.group(1))
    assert not run_file(folder, "checkpoint.pt").exists()


@pytest.mark.workflow
def test_sigterm_saves_mid_epoch_exits_cleanly_and_the_rerun_resumes_to_identical_weights(
    reference, resume_config, tmp_path
):
    folder = copy_project(tmp_path / "project")
    output = tmp_path / "stopped.txt"
    process = start_training(folder, resume_config, output)
    wait_for(run_file(folder, "checkpoint.pt"), process)
    # A cluster's time limit: SIGTERM reaches the training job, which must save and exit.
    os.kill(training_pid(process.pid), signal.SIGTERM)
    assert process.wait(timeout=120) != 0
    stopped = re.search(
        r"stopped by signal 15 in epoch (\d+) after batch (\d+); checkpoint saved",
        output.read_text(),
    )
    assert stopped, output.read_text()
    assert "exit status 143" in output.read_text()
    assert "Traceback" not in output.read_text()
    assert not run_file(folder, "model.pt").exists()

    result = rerun(folder, resume_config)
    epoch, batch = stopped.groups()
    assert f"resuming from epoch {epoch}, batch {batch}" in result.stderr
    assert int(batch) > 0
    assert run_file(folder, "model.pt").read_bytes() == run_file(reference, "model.pt").read_bytes()


@pytest.mark.workflow
def test_a_run_on_a_dirty_tree_keeps_its_diff_and_names_untracked_sources(tmp_path, raw_dir):
    folder = git_project(tmp_path / "project")
    models = folder / "src/reprogrid/train/models.py"
    models.write_text(models.read_text() + "\n# A local experiment, not committed.\n")
    (folder / "scripts/scratch_notes.py").write_text("print('not committed either')\n")
    config = write_config(
        tmp_path,
        tiny_grid(
            raw_dir,
            grid={"seed": [0], "arch": ["mlp"], "lr": [0.003]},
            analysis={"criterion": None},
        ),
    )
    run = "arch=mlp/lr=0.003/seed=0"
    target = str(Path("results/tiny/runs", run, "model.pt"))
    snakemake(folder, "--cores", "1", target, "--configfile", str(config))

    record = provenance.read(run_file(folder, "provenance.json", "tiny", run))
    assert record.dirty is True
    assert record.code.patch == "uncommitted.patch"
    assert "scripts/scratch_notes.py" in record.code.untracked_sources
    patch = run_file(folder, "uncommitted.patch", "tiny", run).read_text()
    assert "+# A local experiment, not committed." in patch
    assert "src/reprogrid/train/models.py" in patch
    # The patch restores the tree: applied to a clean checkout of the commit it gives the file.
    git(folder, "stash", "--quiet")
    git(folder, "apply", str(run_file(folder, "uncommitted.patch", "tiny", run)))
    assert "# A local experiment, not committed." in models.read_text()


@pytest.mark.workflow
def test_runs_from_two_commits_are_flagged_in_the_conclusion(tmp_path, raw_dir):
    folder = git_project(tmp_path / "project")
    target = "results/tiny/summary/conclusion.json"

    def grid(seeds):
        config = tiny_grid(
            raw_dir,
            grid={"seed": seeds, "arch": ["mlp"], "lr": [0.003]},
            analysis={"criterion": None},
        )
        return str(write_config(tmp_path, config, f"seeds{len(seeds)}.yaml"))

    snakemake(folder, "--cores", "2", target, "--configfile", grid([0]))
    (folder / "NOTES.md").write_text("A later commit.\n")
    git(folder, "add", "NOTES.md")
    git(folder, "commit", "--quiet", "-m", "a later commit")
    snakemake(folder, "--cores", "2", target, "--configfile", grid([0, 1]))

    versions = json.loads((folder / target).read_text())["code_versions"]
    assert len(versions["commits"]) == 2
    assert versions["mixed"] is True
    assert "runs come from 2 different commits" in versions["warning"]


def test_code_versions_flag_dirty_trees_and_unknown_commits_but_not_one_clean_commit():
    clean = pd.DataFrame({"run": ["a", "b"], "commit": ["c1", "c1"], "dirty": [False, False]})
    assert stats.code_versions(clean)["warning"] is None
    assert stats.code_versions(clean)["mixed"] is False
    dirty = clean.assign(dirty=[False, True])
    assert stats.code_versions(dirty)["dirty_runs"] == ["b"]
    assert "1 run(s) were made on a dirty tree" in stats.code_versions(dirty)["warning"]
    unknown = clean.assign(commit=["c1", None])
    assert "1 run(s) record no git commit" in stats.code_versions(unknown)["warning"]


def planned_jobs(folder: Path, config: Path) -> dict[str, int]:
    """The jobs `snakemake -n` plans, by rule."""
    return job_counts(snakemake(folder, "-n", "-q", "rules", "--configfile", str(config)).stdout)


@pytest.mark.workflow
def test_code_changes_plan_again_what_they_change_and_nothing_else(tmp_path, raw_dir):
    folder = copy_project(tmp_path / "project")
    config = write_config(
        tmp_path,
        tiny_grid(
            raw_dir,
            grid={"seed": [0, 1], "arch": ["mlp"], "lr": [0.003]},
            analysis={"criterion": None},
        ),
    )
    snakemake(folder, "--cores", "2", "--configfile", str(config))
    assert planned_jobs(folder, config) == {}

    models = folder / "src/reprogrid/train/models.py"
    original = models.read_text()
    # Comments, blank lines and docstrings are not code: no GPU hour is spent on them.
    models.write_text(original.replace('"""', '"""Reworded. ', 1) + "\n\n# A note on the models.\n")
    assert planned_jobs(folder, config) == {}

    models.write_text(original + "\nDEFAULT_WIDTH = 128\n")
    plan = planned_jobs(folder, config)
    assert plan["train"] == 2
    assert {"aggregate", "figures", "tables"} <= plan.keys()

    # Back to the code the runs were made with: nothing to do, whatever the file's mtime.
    models.write_text(original)
    assert planned_jobs(folder, config) == {}

    plots = folder / "src/reprogrid/analysis/plots.py"
    plots.write_text(plots.read_text() + "\nFIGURE_DPI = 300\n")
    plan = planned_jobs(folder, config)
    assert "train" not in plan
    assert plan["figures"] == 1 and plan["tables"] == 1

    # Snakemake's own opt-out: without the params trigger, code changes plan nothing.
    models.write_text(original + "\nDEFAULT_WIDTH = 128\n")
    output = snakemake(
        folder, "-n", "--rerun-triggers", "mtime", "input", "code", "software-env",
        "--configfile", str(config),
    ).stdout  # fmt: skip
    assert "Nothing to be done" in output


@pytest.mark.parametrize(
    ("remote", "recorded"),
    [
        ("https://user:tok-SECRET@host.example/x.git?token=q-SECRET", "https://host.example/x.git"),
        ("https://tok-SECRET@github.com/org/repo.git", "https://github.com/org/repo.git"),
        ("http://user:pw-SECRET@[::1]:8080/x.git#frag", "http://[::1]:8080/x.git"),
        ("git@github.com:org/repo.git", "git@github.com:org/repo.git"),
        ("ssh://git@host.example/x.git", "ssh://git@host.example/x.git"),
        ("ssh://git:pw-SECRET@host.example:2222/x.git", "ssh://git@host.example:2222/x.git"),
        ("/srv/git/repo.git", "/srv/git/repo.git"),
        ("file:///srv/git/repo.git", "file:///srv/git/repo.git"),
    ],
)
def test_remote_urls_lose_credentials_and_keep_working(remote, recorded):
    assert capture.strip_credentials(remote) == recorded


def test_packages_name_every_distribution_with_its_version_as_its_metadata_says():
    parsed = {}
    for dist in importlib.metadata.distributions():
        if dist.metadata["Name"]:
            parsed[dist.metadata["Name"]] = dist.version
    assert capture.packages() == parsed
    assert list(capture.packages()) == sorted(parsed, key=str.lower)


def test_only_the_header_of_a_distributions_metadata_is_read():
    metadata = "Metadata-Version: 2.1\nName: tool\nVersion: 1.2\n\nName: not-this\nVersion: 9\n"
    assert capture._name_and_version(metadata) == ("tool", "1.2")
    assert capture._name_and_version("") == (None, None)


def test_a_record_holds_each_value_once_and_reads_back_as_written(tmp_path):
    code = {**capture.git_state(tmp_path), "fingerprint": "c0de0001"}
    record = provenance.build_record(
        run="arch=mlp/lr=0.003/seed=4",
        experiment="tiny",
        params={"arch": "mlp", "lr": 0.003, "seed": 4, "deterministic": True},
        split={"val_fraction": 0.1, "split_seed": 0},
        checks={
            "dataset": "mnist",
            "raw_dir": None,
            "verify": True,
            "raw_sha256": {"t10k-labels-idx1-ubyte.gz": "ab" * 32},
            "prepared_sha256": "cd" * 32,
        },
        threads=2,
        gpus=0,
        machine=devices.describe("cpu"),
        code=code,
        code_at_end={**code, "fingerprint": "c0de0002"},
        task={
            "name": "idx_classification",
            "file": "idx_classification.py",
            "fingerprint": "ab12",
            "commit": None,
            "dirty": None,
        },
        started=capture.now(),
        resumed_from_epoch=None,
        model_parameters=1234,
        target="results/tiny/runs/arch=mlp/lr=0.003/seed=4/metrics.json",
        job_id="0123456789ab",
        outputs={"metrics.json": b"{}\n"},
    )
    record.write(tmp_path / "provenance.json")
    written = json.loads((tmp_path / "provenance.json").read_text())
    assert list(written) == [
        "format", "run", "experiment", "config", "code", "data", "machine", "job", "env",
        "packages",
    ]  # fmt: skip
    assert provenance.read(tmp_path / "provenance.json") == record
    assert (record.seed, record.threads, record.dataset, record.commit) == (4, 2, "mnist", None)
    assert record.task == "idx_classification"
    assert record.code.changed_during_run
    assert record.code.at_end.fingerprint == "c0de0002"
    assert record.torch_version == importlib.metadata.version("torch")

    leaves = []

    def walk(value, path):
        if isinstance(value, dict):
            for key, item in value.items():
                walk(item, [*path, key])
        else:
            leaves.append(path[-1])

    walk({k: v for k, v in written.items() if k not in ("env", "packages")}, [])
    for name in ("seed", "experiment", "hostname", "dataset", "threads", "deterministic"):
        assert leaves.count(name) == 1, name
    # The code at the start and, having changed, at the end: two moments, not one value twice;
    # and the checkout of the task's file, which for a user's task is another repository.
    assert leaves.count("commit") == leaves.count("dirty") == 3


def test_a_record_of_another_format_is_one_error_naming_it(tmp_path):
    (tmp_path / "provenance.json").write_text(json.dumps({"run": "x", "seed": 0, "commit": None}))
    with pytest.raises(
        provenance.ProvenanceError, match=f"no `format`, not of format {provenance.FORMAT}"
    ):
        provenance.read_run(tmp_path)


def an_older_record(tmp_path: Path, form: int) -> dict:
    """A record as reprogrid wrote it at format `form`: 2 had no task, 3 no job id."""
    code = {**capture.git_state(tmp_path), "fingerprint": "c0de0001"}
    record = provenance.build_record(
        run="arch=mlp/lr=0.003/seed=4",
        experiment="tiny",
        params={"arch": "mlp", "lr": 0.003, "seed": 4},
        split={"val_fraction": 0.1, "split_seed": 0},
        checks={"dataset": "mnist", "raw_dir": None, "verify": True, "prepared_sha256": "cd" * 32},
        threads=1,
        gpus=0,
        machine=devices.describe("cpu"),
        code=code,
        code_at_end=code,
        task=provenance.task_record("idx_classification", tmp_path / "t.py", "c0de0001"),
        started=capture.now(),
        resumed_from_epoch=None,
        model_parameters=1,
        target="metrics.json",
        job_id="0123456789ab",
        outputs={"metrics.json": b"{}"},
    ).to_dict()
    del record["job"]["id"], record["job"]["outputs"]
    if form == 2:
        del record["config"]["task"]
    return {**record, "format": form}


def test_a_record_made_before_tasks_reads_as_a_run_of_the_built_in_task(tmp_path):
    (tmp_path / "provenance.json").write_text(json.dumps(an_older_record(tmp_path, 2)))
    old = provenance.read_run(tmp_path)
    assert old.task == "idx_classification"
    assert old.config.task.fingerprint == "c0de0001"
    assert old.config.data.dataset == "mnist"
    assert old.job.id is None and old.job.outputs == {}


def test_a_record_made_before_job_ids_reads_and_has_no_job_to_check(tmp_path):
    (tmp_path / "provenance.json").write_text(json.dumps(an_older_record(tmp_path, 3)))
    (tmp_path / "metrics.json").write_text("{}")
    old = provenance.read_run(tmp_path)
    assert old.job.id is None and old.job.outputs == {}
    provenance.check_one_job(old, tmp_path, [tmp_path / "metrics.json"])


SECRETS = {
    "WANDB_API_KEY": "wandb-key-SECRET-4f1c",
    "GITHUB_TOKEN": "ghp_SECRET0000github",
    "AWS_SECRET_ACCESS_KEY": "aws-SECRET-wJalrXUtnFEMI",
}
TOKEN_REMOTE = (
    "https://deploy:remote-SECRET-7a2b@git.example.org/lab/reprogrid.git?token=q-SECRET-9d"
)


@pytest.mark.workflow
def test_no_secret_reaches_any_file_and_results_follow_the_umask(tmp_path, raw_dir):
    folder = git_project(tmp_path / "project")
    git(folder, "remote", "add", "origin", TOKEN_REMOTE)
    config = write_config(
        tmp_path,
        tiny_grid(
            raw_dir,
            grid={"seed": [0], "arch": ["mlp"], "lr": [0.003]},
            analysis={"criterion": None},
        ),
    )
    env = {**os.environ, **SECRETS}
    command = [sys.executable, "-m", "snakemake", "--cores", "2", "--configfile", str(config)]
    for args in (command, [*command, "--report", "report.html"]):
        result = subprocess.run(
            args, cwd=folder, env=env, capture_output=True, text=True,
            preexec_fn=lambda: os.umask(0o002),
        )  # fmt: skip
        assert result.returncode == 0, result.stdout + result.stderr
        leaked = [secret for secret in SECRETS.values() if secret in result.stdout + result.stderr]
        assert not leaked

    record = provenance.read_run(folder / "results/tiny/runs/arch=mlp/lr=0.003/seed=0")
    assert record.code.remote == "https://git.example.org/lab/reprogrid.git"
    written = [
        path
        for path in folder.rglob("*")
        if path.is_file() and ".git" not in path.relative_to(folder).parts
    ]
    assert any(".snakemake" in path.parts for path in written)
    for path in written:
        content = path.read_bytes()
        for secret in [*SECRETS.values(), "remote-SECRET-7a2b", "q-SECRET-9d"]:
            assert secret.encode() not in content, f"{secret} in {path}"
    for part in ("results", "reports", "resources"):
        for path in (folder / part).rglob("*"):
            if path.is_file():
                assert stat.S_IMODE(path.stat().st_mode) == 0o664, path


@pytest.mark.workflow
def test_a_code_change_during_training_is_flagged_in_the_provenance(resume_config, tmp_path):
    folder = git_project(tmp_path / "project")
    process = start_training(folder, resume_config, tmp_path / "output.txt")
    wait_for(run_file(folder, "checkpoint.pt"), process)
    started = git(folder, "rev-parse", "HEAD").strip()
    models = folder / "src/reprogrid/train/models.py"
    models.write_text(models.read_text() + "\nDEFAULT_WIDTH = 128\n")
    git(folder, "commit", "--quiet", "-am", "a change while the run trains")
    assert process.wait(timeout=300) == 0, (tmp_path / "output.txt").read_text()

    record = provenance.read(run_file(folder, "provenance.json"))
    assert record.code.changed_during_run is True
    assert record.commit == started
    assert record.code.at_end.commit == git(folder, "rev-parse", "HEAD").strip()
    assert record.code.at_end.fingerprint != record.code.fingerprint
    log = run_file(folder, paths.TRAIN_LOG).read_text()
    assert "the code changed while this run trained" in log
