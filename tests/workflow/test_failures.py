"""A failed job explains itself: its traceback is in its rule log, and Snakemake shows it."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

from conftest import REPO, copy_project, snakemake, tiny_grid, write_config

RUN = "arch=mlp/lr=0.003/seed=0"


def test_an_uncaught_exception_is_logged_with_its_traceback(tmp_path):
    log = tmp_path / "job.log"
    script = (
        "from reprogrid.record.logs import setup_logging\n"
        f"setup_logging({str(log)!r})\n"
        "def prepare():\n"
        "    raise RuntimeError('the disk is full')\n"
        "prepare()\n"
    )
    env = {**os.environ, "PYTHONPATH": str(REPO / "src")}
    result = subprocess.run([sys.executable, "-c", script], env=env, capture_output=True, text=True)
    assert result.returncode == 1
    text = log.read_text()
    assert "Traceback (most recent call last)" in text
    assert "in prepare" in text
    assert "RuntimeError: the disk is full" in text
    assert "RuntimeError: the disk is full" in result.stderr


@pytest.fixture
def one_run(tmp_path, raw_dir) -> tuple[Path, Path]:
    folder = copy_project(tmp_path / "project")
    config = tiny_grid(
        raw_dir, grid={"seed": [0], "arch": ["mlp"], "lr": [0.003]}, analysis={"criterion": None}
    )
    return folder, write_config(tmp_path, config)


@pytest.mark.workflow
def test_a_crashed_training_job_leaves_its_traceback_in_its_log(one_run):
    folder, config = one_run
    run_dir = folder / "results/tiny/runs" / RUN
    # A checkpoint path the job cannot write: its first save fails, outside any user mistake.
    (run_dir / "checkpoint.pt").mkdir(parents=True)
    result = snakemake(
        folder, "--cores", "1", f"results/tiny/runs/{RUN}/model.pt",
        "--configfile", str(config), "--show-failed-logs", check=False,
    )  # fmt: skip
    assert result.returncode != 0
    log = (run_dir / "train.log").read_text()
    assert "Traceback (most recent call last)" in log
    assert "IsADirectoryError" in log
    shown = result.stdout + result.stderr
    assert "Logfile results/tiny/runs/arch=mlp/lr=0.003/seed=0/train.log:" in shown
    assert shown.count("Traceback (most recent call last)") >= 2


@pytest.mark.workflow
def test_a_crashed_script_rule_leaves_its_traceback_in_its_log(one_run):
    folder, config = one_run
    snakemake(folder, "--cores", "1", "results/tiny/summary/histories.csv",
              "--configfile", str(config))  # fmt: skip
    # A summary table damaged after it was written: the figures job cannot read it.
    (folder / "results/tiny/summary/histories.csv").write_text("not,a\nhistory,table\n")
    result = snakemake(
        folder, "--cores", "1", "reports/tiny/learning_curves.png",
        "--configfile", str(config), "--show-failed-logs", check=False,
    )  # fmt: skip
    assert result.returncode != 0
    log = (folder / "logs/tiny/figures.log").read_text()
    assert "Traceback (most recent call last)" in log
    assert "Logfile logs/tiny/figures.log:" in result.stdout + result.stderr
