"""Shared fixtures: generated IDX data and throwaway copies of the project to run Snakemake in."""

from __future__ import annotations

import os
import re
import shutil
import subprocess
import sys
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import pytest
import yaml

import idxdata
from reprogrid.config import resolve as configuration
from reprogrid.config import schema as config_schema
from reprogrid.datasets import data
from reprogrid.plan import grid
from reprogrid.record import provenance
from reprogrid.tasks import runtime
from reprogrid.tasks import spec as taskspec
from reprogrid.train import training

REPO = Path(__file__).resolve().parents[1]
SCHEMA = config_schema.load_schema(REPO / "workflow/schemas/config.schema.yaml")
# The run `valid_record` describes.
RECORD_RUN = "arch=mlp/lr=0.003/seed=0"
PROJECT_PARTS = ("Snakefile", "workflow", "config", "scripts", "envs", "profiles", "src")


@pytest.fixture(scope="session")
def raw_dir(tmp_path_factory) -> Path:
    """A small learnable data set as the four gzipped IDX files."""
    return idxdata.write_dataset(tmp_path_factory.mktemp("raw"), n_train=1200, n_test=300)


def copy_project(dest: Path) -> Path:
    """A copy of the project's workflow files in `dest`, as a fresh clone would have them."""
    dest.mkdir(parents=True, exist_ok=True)
    for part in PROJECT_PARTS:
        source = REPO / part
        if source.is_dir():
            shutil.copytree(source, dest / part, ignore=shutil.ignore_patterns("__pycache__"))
        else:
            shutil.copy2(source, dest / part)
    return dest


@pytest.fixture
def project(tmp_path) -> Path:
    return copy_project(tmp_path / "project")


def write_config(folder: Path, config: dict, name: str = "test.yaml") -> Path:
    path = folder / name
    path.write_text(yaml.safe_dump(config), encoding="utf-8")
    return path


def snakemake(folder: Path, *args: str, check: bool = True) -> subprocess.CompletedProcess:
    """Run Snakemake for real in `folder` with this interpreter; fail the test on error."""
    result = subprocess.run(
        [sys.executable, "-m", "snakemake", *args],
        cwd=folder,
        capture_output=True,
        text=True,
    )
    if check and result.returncode != 0:
        pytest.fail(f"snakemake {' '.join(args)} failed:\n{result.stdout}\n{result.stderr}")
    return result


def tiny_grid(raw_dir: Path, **overrides) -> dict:
    """A config of 2 seeds x 2 archs x 2 lrs, one epoch, reading the generated data in `raw_dir`."""
    config = {
        "experiment": "tiny",
        "data": {"raw_dir": str(raw_dir), "verify": False},
        "grid": {"seed": [0, 1], "arch": ["mlp", "cnn"], "lr": [0.001, 0.003]},
        "train": {"epochs": 1, "batch_size": 64},
    }
    for key, value in overrides.items():
        config[key] = {**config.get(key, {}), **value} if isinstance(value, dict) else value
    return config


def small_grid(raw_dir: Path, **axes) -> dict:
    """tiny_grid with the axes given, and no success criterion (it needs both archs)."""
    return tiny_grid(raw_dir, grid=axes, analysis={"criterion": None})


@pytest.fixture
def schema() -> dict:
    return SCHEMA


@pytest.fixture
def layers(tmp_path, raw_dir) -> tuple[Path, Path]:
    """A base config file and an empty experiments folder, as in a project's config/."""
    base = write_config(tmp_path, tiny_grid(raw_dir, experiment="default"), "config.yaml")
    experiments = tmp_path / "experiments"
    experiments.mkdir()
    return base, experiments


def resolve_layers(schema, layers, files=(), values=None) -> dict:
    """The configuration `layers` resolve to, with `files` and `values` given on top."""
    base, experiments = layers
    return configuration.resolve(schema, base, experiments, files, values)


def reprogrid(*args: str, cwd: Path | None = None) -> subprocess.CompletedProcess:
    """The `reprogrid` command, run from the source tree like an installed entry point."""
    env = {**os.environ, "PYTHONPATH": str(REPO / "src")}
    return subprocess.run(
        [sys.executable, "-m", "reprogrid.commands.cli", *args],
        cwd=cwd,
        env=env,
        capture_output=True,
        text=True,
    )


def job_counts(output: str) -> dict[str, int]:
    """The jobs Snakemake plans, by rule, from the job stats table in its `output` (none: {})."""
    if "Job stats:" not in output:
        return {}
    table = output.split("Job stats:", 1)[1].lstrip("\n").split("\n\n", 1)[0]
    counts = re.findall(r"^(\w+)\s+(\d+)$", table, flags=re.MULTILINE)
    return {rule: int(count) for rule, count in counts if rule != "total"}


def train_params(**overrides) -> dict:
    """A run's complete training parameters: the schema's defaults, then `overrides`."""
    return {**grid.train_defaults(SCHEMA), **overrides}


# The built-in IDX task, as a training job opens it.
IDX_TASK = runtime.Task.open(taskspec.read(taskspec.DEFAULT))


def prepare_idx(raw: Path, out: Path, dataset: str = "mnist", verify: bool = False) -> dict:
    """Prepare IDX files with the built-in task, as the data job does; the checks' record."""
    return data.prepare(IDX_TASK, raw, out, dataset=dataset, verify=verify)


@pytest.fixture(scope="module")
def prepared(tmp_path_factory):
    """A small prepared data set, loaded as a training job loads it."""
    folder = tmp_path_factory.mktemp("data")
    idxdata.write_dataset(folder / "raw", n_train=600, n_test=200, noise=150)
    prepare_idx(folder / "raw", folder / "prepared.safetensors")
    return data.load_prepared(folder / "prepared.safetensors")


def train_run(prepared, folder: Path, params: dict, on_epoch=None) -> training.RunResult:
    """Train one run of the built-in task on one thread, its checkpoint in `folder`."""
    return training.train_one_run(
        IDX_TASK,
        prepared,
        params,
        val_fraction=0.1,
        split_seed=0,
        checkpoint_path=folder / "checkpoint.pt",
        threads=1,
        on_epoch=on_epoch,
    )


# What Snakemake prints before any rule runs, which is not a message of ours.
SNAKEMAKE_CHATTER = ("Using workflow specific profile", "Using profile")


def assert_refused(result, *fragments):
    """Refused with exit status 1 and one `reprogrid:` line holding every fragment."""
    output = result.stdout + result.stderr
    assert result.returncode == 1, output
    assert "Traceback" not in output
    lines = [line for line in output.splitlines() if line.strip()]
    message = [line for line in lines if not line.startswith(SNAKEMAKE_CHATTER)]
    assert len(message) == 1, output
    assert message[0].startswith("reprogrid: "), output
    for fragment in fragments:
        assert fragment in message[0], output


def git(folder: Path, *args: str) -> str:
    """Run git in `folder` as a throwaway identity; its output."""
    return subprocess.run(
        ["git", "-c", "user.name=test", "-c", "user.email=test@example.org", *args],
        cwd=folder,
        check=True,
        capture_output=True,
        text=True,
    ).stdout


def git_project(folder: Path) -> Path:
    """A fresh clone's worth of the project in `folder`: its files, committed once."""
    copy_project(folder)
    shutil.copy2(REPO / ".gitignore", folder / ".gitignore")
    git(folder, "init", "--quiet")
    git(folder, "add", "--all")
    git(folder, "commit", "--quiet", "-m", "the project")
    return folder


def assert_one_line_error(result: subprocess.CompletedProcess, fragment: str) -> None:
    assert result.returncode == 2
    assert result.stdout == ""
    assert result.stderr.count("\n") == 1, result.stderr
    assert result.stderr.startswith("reprogrid: ")
    assert fragment in result.stderr


def valid_record(remote: str = "https://example.org/lab/reprogrid.git") -> dict:
    """A well-formed provenance record of run RECORD_RUN, made on a dirty tree."""
    return {
        "format": provenance.FORMAT,
        "run": RECORD_RUN,
        "experiment": "tiny",
        "config": {
            "task": {
                "name": "idx_classification",
                "file": "src/reprogrid/tasks/builtin/idx_classification.py",
                "fingerprint": "ab12cd34",
                "commit": "0123456789abcdef0123456789abcdef01234567",
                "dirty": True,
            },
            "data": {
                "dataset": "mnist",
                "raw_dir": None,
                "verify": True,
                "val_fraction": 0.1,
                "split_seed": 0,
            },
            "train": {"arch": "mlp", "lr": 0.003, "seed": 0, "epochs": 1},
            "resources": {"threads": 1, "gpu": 0},
        },
        "code": {
            "commit": "0123456789abcdef0123456789abcdef01234567",
            "dirty": True,
            "branch": "main",
            "remote": remote,
            "untracked_sources": [],
            "patch": "uncommitted.patch",
            "fingerprint": "c0de0001",
            "at_end": None,
        },
        "data": {
            "raw_sha256": {"train-images-idx3-ubyte.gz": "ab" * 32},
            "prepared_sha256": "cd" * 32,
        },
        "machine": {
            "hostname": "node1",
            "platform": "Linux",
            "cpu": "x86_64",
            "cpu_count": 8,
            "device": "cpu",
            "gpus": [],
            "python": "3.11.7",
            "cuda": None,
            "cudnn": None,
        },
        "job": {
            "id": "0123456789ab",
            "started": "2026-01-01T00:00:00+00:00",
            "finished": "2026-01-01T00:01:00+00:00",
            "resumed_from_epoch": None,
            "model_parameters": 1000,
            "command": {
                "argv": ["train"],
                "target": f"results/tiny/runs/{RECORD_RUN}/metrics.json",
            },
            "outputs": {"metrics.json": "ef" * 32},
        },
        "env": {},
        "packages": {"torch": "2.14.1+cpu", "torchvision": "0.29.1"},
    }


@contextmanager
def small_disk(folder: Path, size: str) -> Iterator[Path]:
    """A tmpfs of `size` (`200k`) mounted on `folder` for the block: a real disk that fills up.

    The test is skipped where mounting is not permitted (not root, or a container without
    the right to mount); the tmpfs is unmounted however the block ends.
    """
    folder.mkdir(parents=True, exist_ok=True)
    if os.geteuid() != 0:
        pytest.skip("a full disk is tested on a tmpfs, and mounting one needs root")
    mounted = subprocess.run(
        ["mount", "-t", "tmpfs", "-o", f"size={size}", "tmpfs", str(folder)],
        capture_output=True,
        text=True,
    )
    if mounted.returncode != 0:
        pytest.skip(
            "a full disk is tested on a tmpfs, which cannot be mounted here: "
            + mounted.stderr.strip()
        )
    try:
        yield folder
    finally:
        subprocess.run(["umount", str(folder)], check=True)
