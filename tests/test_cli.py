"""`reprogrid reproduce`: the printed steps rebuild the run, `--execute` proves it bit for bit,
and mistakes end in one line."""

from __future__ import annotations

import json
import os
import re
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
import yaml
from test_reproducibility import git, git_project

from conftest import REPO, snakemake, tiny_grid, write_config

RUN = "arch=mlp/lr=0.003/seed=0"


def reprogrid(*args: str, cwd: Path | None = None) -> subprocess.CompletedProcess:
    """The `reprogrid` command, run from the source tree like an installed entry point."""
    env = {**os.environ, "PYTHONPATH": str(REPO / "src")}
    return subprocess.run(
        [sys.executable, "-m", "reprogrid.cli", *args],
        cwd=cwd,
        env=env,
        capture_output=True,
        text=True,
    )


def assert_one_line_error(result: subprocess.CompletedProcess, fragment: str) -> None:
    assert result.returncode == 2
    assert result.stdout == ""
    assert result.stderr.count("\n") == 1, result.stderr
    assert result.stderr.startswith("reprogrid: ")
    assert fragment in result.stderr


def test_a_missing_run_folder_is_one_line(tmp_path):
    assert_one_line_error(reprogrid("reproduce", str(tmp_path / "nowhere")), "no run folder")


def test_a_folder_without_provenance_is_one_line(tmp_path):
    assert_one_line_error(reprogrid("reproduce", str(tmp_path)), "holds no provenance.json")


def test_a_run_without_a_commit_is_one_line(tmp_path):
    (tmp_path / "provenance.json").write_text(json.dumps({"commit": None, "git": {}}))
    assert_one_line_error(reprogrid("reproduce", str(tmp_path)), "records no git commit")


@pytest.fixture(scope="module")
def dirty_run(tmp_path_factory, raw_dir):
    """One run made in a git checkout with an uncommitted change."""
    base = tmp_path_factory.mktemp("cli")
    folder = git_project(base / "project")
    models = folder / "src/reprogrid/models.py"
    models.write_text(models.read_text() + "\n# An uncommitted change the run depends on.\n")
    config = tiny_grid(
        raw_dir, grid={"seed": [0], "arch": ["mlp"], "lr": [0.003]}, analysis={"criterion": None}
    )
    configfile = write_config(base, config)
    target = f"results/tiny/runs/{RUN}/model.pt"
    snakemake(folder, "--cores", "1", target, "--configfile", str(configfile))
    return folder / "results/tiny/runs" / RUN


@pytest.mark.workflow
def test_the_printed_steps_pin_the_commit_patch_packages_config_and_target(dirty_run, raw_dir):
    result = reprogrid("reproduce", str(dirty_run), "--raw-dir", str(raw_dir))
    assert result.returncode == 0, result.stderr
    steps = result.stdout
    commit = git(dirty_run, "rev-parse", "HEAD").strip()
    assert f"git clone {dirty_run.parents[5]} " in steps
    assert f"git checkout {commit}\n" in steps
    assert f"git apply {dirty_run / 'uncommitted.patch'}\n" in steps
    assert "pip install torch==" in steps
    assert (
        f"snakemake --cores 1 results/tiny/runs/{RUN}/model.pt --configfile reproduce.yaml" in steps
    )
    written = re.search(r"<<'EOF'\n(.*?)\nEOF\n", steps, re.DOTALL).group(1)
    config = yaml.safe_load(written)
    assert config["experiment"] == "tiny"
    assert config["grid"] == {"arch": ["mlp"], "lr": [0.003], "seed": [0]}
    assert config["train"]["epochs"] == 1
    assert config["train"]["batch_size"] == 64
    assert config["data"]["raw_dir"] == str(raw_dir)
    assert config["resources"]["threads"] == 1


@pytest.mark.workflow
def test_execute_rebuilds_the_run_with_identical_weights(dirty_run, raw_dir, tmp_path):
    result = reprogrid(
        "reproduce", str(dirty_run), "--execute", "--raw-dir", str(raw_dir),
        "--workdir", str(tmp_path / "checkout"),
    )  # fmt: skip
    assert result.returncode == 0, result.stdout + result.stderr
    assert "weights: identical" in result.stdout
    assert "metrics: identical" in result.stdout
    assert result.stdout.splitlines()[-1] == "identical"
    rebuilt = tmp_path / "checkout/src/reprogrid/models.py"
    assert "# An uncommitted change the run depends on." in rebuilt.read_text()


@pytest.mark.workflow
def test_execute_says_differs_when_the_stored_weights_were_altered(dirty_run, raw_dir, tmp_path):
    copy = tmp_path / "run"
    shutil.copytree(dirty_run, copy)
    model = copy / "model.pt"
    model.write_bytes(model.read_bytes() + b"\0")
    result = reprogrid(
        "reproduce", str(copy), "--execute", "--raw-dir", str(raw_dir),
        "--source", str(dirty_run.parents[5]), "--workdir", str(tmp_path / "checkout"),
    )  # fmt: skip
    assert result.returncode == 1, result.stdout + result.stderr
    assert "weights: differs" in result.stdout
    assert result.stdout.splitlines()[-1] == "differs"
