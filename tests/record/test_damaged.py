"""A damaged finished run is named, never summarised: a file cut short, garbled or planted in
a run folder or as the prepared data is refused in one `reprogrid:` line by every reader
(aggregation, `reprogrid compare`, `reprogrid reproduce`, the audit, the train job), and
`reprogrid status` shows the run as damaged and goes on."""

from __future__ import annotations

import os
import pickle
import re
import shutil
import subprocess
from pathlib import Path

import pytest

from conftest import git_project, reprogrid, small_disk, small_grid, snakemake, write_config
from reprogrid import tracking
from reprogrid.plan import paths

RUN = "arch=mlp/lr=0.003/seed=0"
RUN_DIR = paths.run_dir("tiny", RUN)
SUMMARY = paths.summary_file("tiny", "summary.csv")
CONFIG = "damaged.yaml"
# What a job's log line that refuses in one line looks like on Snakemake's screen.
REFUSAL = re.compile(r"^\S+ \S+ ERROR (reprogrid: .*)$", re.MULTILINE)


@pytest.fixture(scope="module")
def finished(tmp_path_factory, raw_dir) -> Path:
    """A committed project with one run trained and summarised."""
    folder = git_project(tmp_path_factory.mktemp("damaged") / "project")
    config = small_grid(raw_dir, arch=["mlp"], lr=[0.003], seed=[0])
    write_config(folder, config, CONFIG)
    snakemake(folder, "--cores", "2", SUMMARY, "--configfile", CONFIG)
    return folder


@pytest.fixture
def project(finished, tmp_path) -> Path:
    """A copy of the finished project for one test to damage."""
    return Path(shutil.copytree(finished, tmp_path / "project", symlinks=True))


def cut(path: Path, keep: int) -> None:
    """Keep the first `keep` bytes of `path` (all but `-keep` when negative)."""
    path.write_bytes(path.read_bytes()[:keep])


def cut_history_mid_row(folder: Path) -> str:
    cut(folder / "history.csv", -7)
    return "history.csv: is damaged (its last row is cut"


def cut_metrics(folder: Path) -> str:
    cut(folder / "metrics.json", 40)
    return "metrics.json: is damaged (not JSON"


def garble_metrics(folder: Path) -> str:
    (folder / "metrics.json").write_bytes(bytes(range(128, 256)) * 3)
    return "metrics.json: is damaged (not UTF-8 text)"


def cut_provenance(folder: Path) -> str:
    cut(folder / "provenance.json", 500)
    return "provenance.json: cannot be read (not JSON"


def cut_model(folder: Path) -> str:
    cut(folder / "model.pt", 5000)
    return "model.pt:"


DAMAGES = [cut_history_mid_row, cut_metrics, garble_metrics, cut_provenance, cut_model]


def one_refusal(output: str) -> str:
    """The one `reprogrid:` line a failed job logged (Snakemake shows its log twice)."""
    assert "Traceback" not in output, output
    lines = set(REFUSAL.findall(output))
    assert len(lines) == 1, output
    return lines.pop()


def one_line(result: subprocess.CompletedProcess) -> str:
    """The one `reprogrid:` line a command refused with, exit status 2."""
    assert result.returncode == 2, result.stdout + result.stderr
    assert result.stderr.count("\n") == 1 and result.stderr.startswith("reprogrid: "), result.stderr
    return result.stderr


@pytest.mark.workflow
@pytest.mark.parametrize("damage", DAMAGES, ids=[damage.__name__ for damage in DAMAGES])
def test_every_reader_names_a_damaged_run_and_how_to_retrain_it(project, damage):
    retrain = f"delete {RUN_DIR} and run Snakemake again to retrain it"
    named = damage(project / RUN_DIR)
    model = damage is cut_model

    # compare reads a summary made before the damage: the run it summarises is named.
    if not model:
        refusal = one_line(reprogrid("compare", "tiny", cwd=project))
        assert f"{RUN_DIR}/{named}" in refusal
        assert retrain in refusal

    # status is a viewer: the run is damaged, the file named, and it carries on. (It reads
    # no record, only how provenance.json ends, so it words that refusal its own way.)
    shown = reprogrid("status", "--configfile", CONFIG, cwd=project)
    assert shown.returncode == 0, shown.stderr
    row = next(line for line in shown.stdout.splitlines() if line.startswith(RUN))
    if model:
        assert row.split()[1] == "done"  # status reads no weights; the readers of them do
    else:
        assert row.split()[1] == "damaged"
        # Rich wraps the note in its column.
        note = "provenance.json: is damaged (cut short" if damage is cut_provenance else named
        assert "".join(f"{RUN_DIR}/{note}".split()) in "".join(shown.stdout.split())
    assert "tiny: 1 runs: " in shown.stdout

    # reproduce --execute compares the stored files: it refuses before it clones anything.
    workdir = project.parent / "reproduced"
    refusal = one_line(
        reprogrid("reproduce", RUN_DIR, "--execute", "--workdir", str(workdir), cwd=project)
    )
    assert named in refusal and retrain in refusal
    assert not workdir.exists()

    # Aggregation refuses, in one line of its log; the summary is gone, not wrong.
    result = snakemake(project, "--cores", "1", SUMMARY, "--configfile", CONFIG, check=False)
    assert result.returncode == 1
    refusal = one_refusal(result.stdout + result.stderr)
    assert refusal.startswith(f"reprogrid: {RUN_DIR}/")
    assert (named if not model else "model.pt: does not hold the bytes job") in refusal
    assert retrain in refusal
    assert not (project / paths.summary_file("tiny", "histories.csv")).exists()

    if damage is cut_history_mid_row:
        # Doing what the line says trains the run again, and the summary is made.
        shutil.rmtree(project / RUN_DIR)
        snakemake(project, "--cores", "1", SUMMARY, "--configfile", CONFIG)


def plant_pickle(path: Path) -> None:
    path.write_bytes(pickle.dumps({"images": [0] * 100}))


def cut_prepared(path: Path) -> None:
    cut(path, -1000)


def prepared_data(project: Path) -> Path:
    (prepared,) = project.glob("resources/data/*/*/prepared.safetensors")
    return prepared


@pytest.mark.workflow
@pytest.mark.parametrize("damage", [plant_pickle, cut_prepared], ids=["pickle", "truncated"])
def test_prepared_data_that_are_not_ours_are_refused_in_one_line(project, damage):
    prepared = prepared_data(project)
    damage(prepared)
    name = prepared.relative_to(project).as_posix()
    # The data changed after the run: Snakemake trains it again, and the train job refuses.
    result = snakemake(
        project, "--cores", "1", f"{RUN_DIR}/metrics.json", "--configfile", CONFIG, check=False
    )
    assert result.returncode == 1
    refusal = one_refusal(result.stdout + result.stderr)
    assert refusal.startswith(f"reprogrid: {name}: is not prepared data (")
    assert "run snakemake again to prepare the data anew" in refusal
    log = (project / RUN_DIR / "train.log").read_text()
    assert refusal in log and "Traceback" not in log


@pytest.mark.workflow
@pytest.mark.parametrize("damaged", ["model", "prepared"])
def test_the_audit_refuses_damaged_files_in_one_line_before_it_trains(project, damaged):
    if damaged == "model":
        cut_model(project / RUN_DIR)
        named = f"{RUN_DIR}/model.pt: is damaged ("
    else:
        prepared = prepared_data(project)
        made = prepared.stat()
        plant_pickle(prepared)
        # Planted with the old file's time (as `cp -p` would): no training is planned.
        os.utime(prepared, ns=(made.st_atime_ns, made.st_mtime_ns))
        named = f"{prepared.relative_to(project).as_posix()}: is not prepared data"
    result = snakemake(project, "--cores", "1", "audit", "--configfile", CONFIG, check=False)
    assert result.returncode == 1
    assert one_refusal(result.stdout + result.stderr).startswith(f"reprogrid: {named}")
    assert "auditing" not in (project / "logs/tiny/audit.log").read_text()


@pytest.mark.workflow
def test_the_tracking_export_refuses_a_damaged_run_before_it_sends_anything(project, raw_dir):
    config = small_grid(raw_dir, arch=["mlp"], lr=[0.003], seed=[0])
    # A server nobody listens on: the refusal comes before any connection is tried.
    config["tracking"] = {"mlflow": {"enabled": True, "tracking_uri": "http://127.0.0.1:9"}}
    write_config(project, config, "tracked.yaml")
    named = cut_history_mid_row(project / RUN_DIR)
    record = tracking.record_path("tiny", "mlflow")
    result = snakemake(project, "--cores", "1", record, "--configfile", "tracked.yaml", check=False)
    assert result.returncode == 1
    refusal = one_refusal(result.stdout + result.stderr)
    assert refusal.startswith(f"reprogrid: {RUN_DIR}/{named}")
    assert f"delete {RUN_DIR} and run Snakemake again to retrain it" in refusal


@pytest.mark.workflow
def test_a_full_disk_ends_aggregation_in_one_line_and_leaves_no_table(project):
    summary = project / paths.summary_file("tiny", "")
    # A disk with room for two files: a note of the user's, and the first table; the second
    # finds it full. (The note keeps the folder: Snakemake removes an output folder a failed
    # job leaves empty, which a mount point cannot be.)
    with small_disk(summary, "8k"):
        (summary / "NOTES.txt").write_text("the summary's disk\n")
        result = snakemake(project, "--cores", "1", SUMMARY, "--configfile", CONFIG, check=False)
        left = sorted(path.name for path in summary.iterdir())
    assert result.returncode == 1
    refusal = one_refusal(result.stdout + result.stderr)
    assert re.fullmatch(
        r"reprogrid: no space left on the disk holding results/tiny/summary/\w+\.csv "
        r"\(nothing of it was written\); free space and run again",
        refusal,
    ), refusal
    # Snakemake removes the tables the failed job wrote; no temporary file stays.
    assert left == ["NOTES.txt"]
