"""The speedrun experiment resolves and plans; its network trains deterministically, resumably."""

from __future__ import annotations

import os
import signal
import subprocess
import sys

import pytest
import torch

from conftest import REPO, snakemake, train_params, train_run
from reprogrid.config import resolve as configuration
from reprogrid.config import schema as config_schema
from reprogrid.datasets import catalog
from reprogrid.plan import grid
from reprogrid.train import models, recipe, training

CFG = train_params(
    arch="speedcnn", lr=0.003, epochs=2, batch_size=64, schedule="onecycle", eval_batch_size=256
)


def train(prepared, tmp_path, on_epoch=None, **overrides):
    return train_run(prepared, tmp_path, {**CFG, **overrides}, on_epoch)


def test_the_speedrun_experiment_resolves_to_its_recipe():
    schema = config_schema.load_schema(REPO / "workflow/schemas/config.schema.yaml")
    config = configuration.resolve(
        schema,
        REPO / "config/config.yaml",
        REPO / "config/experiments",
        (),
        {"experiment": "speedrun"},
    )
    assert config["data"]["dataset"] == "fashion-mnist"
    assert config["resources"]["threads"] == 2
    assert config["grid"]["arch"] == ["speedcnn"]
    runs = grid.expand_grid(config, schema)
    assert len(runs) == len(config["grid"]["seed"])
    assert {run["arch"] for run in runs.values()} == {"speedcnn"}


def test_the_speedrun_experiment_plans_one_two_thread_job_per_seed(project, raw_dir):
    result = snakemake(
        project,
        "-n",
        "--cores",
        "2",
        "--config",
        "experiment=speedrun",
        f"data={{raw_dir: {raw_dir}, verify: false}}",
    )
    output = result.stdout + result.stderr
    assert "results/speedrun/runs/arch=speedcnn/" in output
    assert "(2 thread(s)" in output


def test_every_architecture_maps_to_a_model_that_classifies_images():
    images = torch.zeros(3, 1, 28, 28)
    for arch in catalog.ARCHITECTURES:
        model = models.build_model(arch, num_classes=10).eval()
        with torch.inference_mode():
            assert model(images).shape == (3, 10), arch


def test_speedcnn_learns_in_bfloat16_and_channels_last(prepared, tmp_path):
    model = models.build_model("speedcnn")
    assert recipe.numerics(model, torch.device("cpu"))[0] == torch.channels_last
    result = train(prepared, tmp_path)
    losses = [row["train_loss"] for row in result.history]
    assert result.metrics["status"] == "ok"
    assert losses[-1] < losses[0]
    assert result.metrics["test_acc"] > 0.5
    assert all(
        value.dtype == torch.float32
        for value in result.weights.values()
        if value.is_floating_point()
    )


def test_speedcnn_is_deterministic_and_resumes_to_the_same_weights(prepared, tmp_path):
    whole = train(prepared, tmp_path / "whole")
    again = train(prepared, tmp_path / "again")
    assert all(torch.equal(whole.weights[k], again.weights[k]) for k in whole.weights)

    def stop_in_second_epoch(row):
        if row["epoch"] == 1:
            os.kill(os.getpid(), signal.SIGTERM)

    with pytest.raises(training.Stopped):
        train(prepared, tmp_path / "cut", on_epoch=stop_in_second_epoch)
    resumed = train(prepared, tmp_path / "cut")
    assert resumed.resumed_from is not None
    assert all(torch.equal(whole.weights[k], resumed.weights[k]) for k in whole.weights)
    assert [row["test_acc"] for row in resumed.history] == [
        row["test_acc"] for row in whole.history
    ]


def test_determinism_is_switched_on_and_off_without_loading_the_compiler():
    code = (
        "import sys, torch\n"
        "from reprogrid.train import recipe\n"
        "recipe.set_determinism(True)\n"
        "assert torch.are_deterministic_algorithms_enabled()\n"
        "assert not torch.is_deterministic_algorithms_warn_only_enabled()\n"
        "recipe.set_determinism(False)\n"
        "assert not torch.are_deterministic_algorithms_enabled()\n"
        "assert 'torch._inductor' not in sys.modules, 'inductor was imported'\n"
    )
    env = {**os.environ, "PYTHONPATH": str(REPO / "src")}
    result = subprocess.run([sys.executable, "-c", code], env=env, capture_output=True, text=True)
    assert result.returncode == 0, result.stderr
