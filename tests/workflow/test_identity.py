"""A run's identity: what plans a stored run again, and what keeps its folder name.

Snakemake for real in a copy of the project (tests/conftest.py), one run of one epoch, then
plans (`snakemake -n`) after each change; config/README.md, "Run identity".
"""

from __future__ import annotations

import json
import re
import shutil

import pytest

import idxdata
from conftest import job_counts, small_grid, snakemake, write_config

pytestmark = pytest.mark.workflow

RUN = "arch=mlp/lr=0.01/seed=0"


def test_threads_device_data_plan_a_run_again_and_a_default_edit_renames_none(
    project, raw_dir, tmp_path
):
    raw = shutil.copytree(raw_dir, tmp_path / "raw")
    # batch_size listed at the schema's default (128): the run's folder leaves it out.
    config = small_grid(raw, seed=[0], arch=["mlp"], lr=[0.01], batch_size=[128])
    configfile = write_config(project, config).name
    target = f"results/tiny/runs/{RUN}/metrics.json"
    snakemake(project, "--cores", "1", target, "--configfile", configfile)
    assert snakemake(project, "-n", target, "--configfile", configfile).stdout.count("run=") == 0

    # Another thread count or another kind of device computes other bytes: trained again,
    # as for torch's choice of kernels (deterministic mode off).
    changes = (
        ["--config", "resources={threads: 2}"],
        ["--set-resources", "train:gpu=1"],
        ["--config", "train={deterministic: false}"],
    )
    for change in changes:
        plan = snakemake(project, "-n", target, "--configfile", configfile, *change)
        assert job_counts(plan.stdout) == {"train": 1}, change
        assert "Params have changed since last execution" in plan.stdout, change

    # A schema default edited after the run was trained: the run keeps its folder, and
    # nothing trains again (before, its folder name became .../batch_size=128/...).
    schema = project / "workflow/schemas/config.schema.yaml"
    text = schema.read_text(encoding="utf-8")
    assert text.count("        default: 128\n") == 1  # train.batch_size's
    schema.write_text(text.replace("        default: 128\n", "        default: 64\n"))
    plan = snakemake(project, "-n", "--configfile", configfile)
    assert "train" not in job_counts(plan.stdout), plan.stdout
    assert "batch_size=" not in plan.stdout
    assert json.loads((project / "results/tiny/run-names.json").read_text()) == {"batch_size": 128}

    # Raw data changed after the run: the data are prepared again under a new key, and the
    # plan names the run trained on the old data, and why: its input is the new data.
    old_key = next((project / "resources/data/mnist").iterdir()).name
    idxdata.write_dataset(raw, seed=1)
    plan = snakemake(project, "-n", target, "--configfile", configfile)
    assert job_counts(plan.stdout) == {"prepare_data": 1, "train": 1}, plan.stdout
    train = plan.stdout.split(f": Training {RUN} (", 1)[1].split("Shell command", 1)[0]
    new_key = re.search(r"Reason: Input files updated by another job: \S+/mnist/([^/]+)/", train)
    assert new_key is not None, plan.stdout
    assert new_key.group(1) != old_key

    # The old files put back: their prepared data and the run are current again.
    shutil.rmtree(raw)
    shutil.copytree(raw_dir, raw)
    plan = snakemake(project, "-n", target, "--configfile", configfile)
    assert job_counts(plan.stdout) == {}, plan.stdout
