"""Planning through Snakemake: bad config refused before any job, the plan each config gives.

Each test runs Snakemake for real in a copy of the project (tests/conftest.py); the unit
tests of the same rules are in tests/config/test_config.py and tests/plan/test_grid.py.
"""

from __future__ import annotations

import gzip
import os
import re
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import pandas as pd
import pytest
import yaml

from conftest import (
    assert_refused,
    copy_project,
    job_counts,
    small_grid,
    snakemake,
    tiny_grid,
    write_config,
)
from reprogrid.plan import paths

pytestmark = pytest.mark.workflow


# --- through Snakemake: refused before any job, in one line -----------------------------------


@pytest.fixture(scope="module")
def planning_project(tmp_path_factory, raw_dir):
    """A project copy whose config.yaml reads the generated data; only dry runs happen here."""
    folder = copy_project(tmp_path_factory.mktemp("plan") / "project")
    config = yaml.safe_load((folder / "config/config.yaml").read_text(encoding="utf-8"))
    config["data"].update(raw_dir=str(raw_dir), verify=False)
    write_config(folder / "config", config, "config.yaml")
    return folder


def nothing_written(folder: Path) -> bool:
    """No result, report or prepared data (an earlier plan's caches live in .snakemake/)."""
    return not any((folder / part).exists() for part in ("results", "reports", "resources"))


# A grid of 10^6 runs: 1,000 seeds x 2 architectures x 500 learning rates.
SEEDS = ", ".join(str(seed) for seed in range(1000))
RATES = ", ".join(str(k / 1000) for k in range(1, 501))
MILLION = f"grid={{seed: [{SEEDS}], arch: [mlp, cnn], lr: [{RATES}]}}"

REFUSALS = [
    # (--config values, fragments the message must hold)
    (["train={optimizer: adadelta, schedule: onecycle}"], ["train.optimizer", "onecycle"]),
    (["grid={seed: [0], arch: [resnet], lr: [0.1]}"], ["grid.arch[0]", "resnet", "choose one"]),
    (["grid={seed: [0], arch: [mlp], lr: [-0.1]}"], ["grid.lr[0]", "-0.1", "greater than 0"]),
    (["grid={seed: [0], arch: [mlp], lr: [fast]}"], ["grid.lr[0]", "'fast'", "not a valid number"]),
    (["grid={seed: [0], arch: [mlp], lr: [true]}"], ["grid.lr[0]", "not a valid number"]),
    (["train={lr: -1}"], ["train.lr", "greater than 0"]),
    (["train={epochs: 0}"], ["train.epochs", "at least 1"]),
    (["train={epochs: 1.5}"], ["train.epochs", "1.5", "not a valid integer"]),
    (["grid={seed: [], arch: [mlp], lr: [0.1]}"], ["grid.seed", "empty"]),
    (["grid={seed: [1, 1], arch: [mlp], lr: [0.1]}"], ["grid.seed", "twice"]),
    (["grid={seed: [0], arch: [mlp, mlp], lr: [0.1]}"], ["grid.arch", "twice"]),
    (["grid={seed: [0], arch: [mlp], lr: [0.1, 1e-1]}"], ["grid.lr", "twice"]),
    (["grid={seed: 0, arch: [mlp], lr: [0.1]}"], ["grid.seed", "not a valid list"]),
    (["grid={seed: [a], arch: [mlp], lr: [0.1]}"], ["grid.seed[0]", "not a valid integer"]),
    (["grid={seed: [0], arch: [mlp], lr: [0.1], batch_size: [0]}"], ["grid.batch_size[0]"]),
    (
        ["grid={seed: [0], arch: [mlp], lr: [0.1], optimiser: [sgd]}"],
        ["did you mean 'grid.optimizer'"],
    ),
    (["expriment=fashion"], ["'expriment'", "did you mean 'experiment'"]),
    (["train={epoch: 2}"], ["'train.epoch'", "did you mean 'train.epochs'"]),
    (["data={dataset: fashion}"], ["data.dataset", "did you mean 'fashion-mnist'"]),
    (["train={batch_size: 0}"], ["train.batch_size", "at least 1"]),
    (["train={optimizer: rmsprop}"], ["train.optimizer", "choose one of"]),
    (["data={raw_dir: /no/such/folder}"], ["data.raw_dir", "/no/such/folder", "does not exist"]),
    (["data={val_fraction: 1}"], ["data.val_fraction", "less than 1"]),
    (["experiment=nosuch"], ["experiment", "nosuch.yaml", "known experiments"]),
    (["experiment=debug"], ["experiment", "reserved"]),
    (["debug=maybe"], ["debug", "not a valid boolean"]),
    (["train=3"], ["train", "not a valid mapping"]),
    (["train={lr: .inf}"], ["train.lr", "not a valid number"]),
    (["analysis={criterion: {better: cnn, worse: speedcnn}}"], ["analysis.criterion.worse"]),
    (["resources={threads: 0}"], ["resources.threads", "at least 1"]),
    (["data={dataset: MNIST}"], ["data.dataset", "did you mean 'mnist'"]),
    (["grid={seed: [0], arch: [mlp], lr: [0.1], foo: [1]}"], ["'grid.foo'", "allowed here"]),
    (["train={epochs: 2"], ["train", "'{epochs: 2'", "not a valid mapping"]),
    (["grid={seed: [-1], arch: [mlp], lr: [0.1]}"], ["grid.seed[0]", "at least 0"]),
    (["grid={seed: [0], arch: [cnn], lr: [0.1]}"], ["analysis.criterion.worse", "null"]),
    (["grid={seed: [4294967296], arch: [mlp], lr: [0.1]}"], ["grid.seed[0]", "at most 4294967295"]),
    (["train={seed: 4294967296}"], ["train.seed (set by --config)", "32-bit"]),
    (["data={split_seed: 4294967296}"], ["data.split_seed (set by --config)", "at most"]),
    (["train={epochs: 100000}"], ["train.epochs (set by --config)", "at most 10000"]),
    (["train={eval_batch_size: 10000000}"], ["train.eval_batch_size", "at most 1000000"]),
    (["train={batch_size: 1081}"], ["train.batch_size (set by --config)", "training split (1080"]),
    (
        ["grid={seed: [0], arch: [mlp], lr: [0.1], batch_size: [64, 5000]}"],
        ["grid.batch_size[1] (set by --config)", "5000 is larger than the training split"],
    ),
    (["data={val_fraction: 0.9999}"], ["data.val_fraction (set by --config)", "no training"]),
    (["data={val_fraction: 0.001}"], ["data.val_fraction", "fewer than one per class"]),
    (["resources={gpu: 2}"], ["resources.gpu (set by --config)", "at most 1", "one device"]),
    (["resources={gpu: -1}"], ["resources.gpu", "at least 0"]),
    (["train={epochs: true}"], ["train.epochs", "True is not a valid integer"]),
    (["train={batch_size: -64}"], ["train.batch_size", "at least 1"]),
    (["train=null"], ["config key train (set by --config) has no value"]),
    (["grid={seed: [0], arch: [mlp], lr: [0]}"], ["grid.lr[0]", "greater than 0"]),
    (
        ["grid={seed: [0], arch: [mlp], lr: [0.1], epochs: [2, 0]}"],
        ["grid.epochs[1]", "at least 1"],
    ),
    (["grid={seed: [0], arch: [], lr: [0.1]}"], ["grid.arch", "empty"]),
    (["experiment=fashon"], ["experiment (set by --config)", "did you mean 'fashion'"]),
    (["analysis={criterion: {better: cnn, worse: mlp, min_diff: -1}}"], ["min_diff", "at least 0"]),
    (
        ["analysis={criterion: {better: cnn, worse: mlp, metric: test_mse}}"],
        ["analysis.criterion.metric", "test_mse"],
    ),
    (["data={raw_dir: '~/mnist'}"], ["data.raw_dir", "'~' is not expanded"]),
    (["experiment=" + "x" * 300], ["experiment (set by --config)", "300 characters, more than 64"]),
    (["experiment=a..b"], ["experiment (set by --config)", "not a valid experiment name"]),
    (["data={raw_dir: /" + "a" * 5000 + "}"], ["data.raw_dir (set by --config)", "looked up"]),
    ([MILLION], ["grid.seed (set by --config)", "1,000,000 runs", "grid.arch 2", "100,000"]),
    (
        [
            "grid={seed: [0], arch: [mlp]}",
            "analysis={criterion: null}",
            "search={method: random, samples: 100000, space: {lr: {uniform: [0.1, 0.1001]}}}",
        ],
        ["search.samples (set by --config)", "holds only 1", "3 significant digits"],
    ),
]


@pytest.mark.parametrize(("values", "fragments"), REFUSALS, ids=lambda v: str(v)[:40])
def test_bad_config_is_refused_before_any_job(planning_project, values, fragments):
    result = snakemake(planning_project, "-n", "--config", *values, check=False)
    assert_refused(result, *fragments)
    assert nothing_written(planning_project)


def test_an_experiment_name_ending_in_a_newline_is_refused(planning_project, tmp_path):
    # A schema pattern ending in `$` let it through: `$` matches before a final newline.
    named = tmp_path / "named.yaml"
    named.write_text('experiment: "tiny\\n"\n', encoding="utf-8")
    result = snakemake(planning_project, "-n", "--configfile", str(named), check=False)
    assert_refused(result, "experiment (set by ", "named.yaml", "'tiny\\n'", "control character")
    assert nothing_written(planning_project)


def test_bad_configfile_values_are_refused_naming_the_file(planning_project, tmp_path):
    quoted = tmp_path / "quoted.yaml"
    quoted.write_text("grid:\n  seed: ['0']\n  arch: [mlp]\n  lr: [1e-3]\n", encoding="utf-8")
    result = snakemake(planning_project, "-n", "--configfile", str(quoted), check=False)
    assert_refused(result, "grid.seed[0]", "quoted.yaml", "not a valid integer")


def test_broken_yaml_in_a_configfile_is_refused_by_snakemake(planning_project, tmp_path):
    # Snakemake reads --configfile files itself before the workflow, in its own words.
    broken = tmp_path / "broken.yaml"
    broken.write_text("grid:\n  seed: [0, 1\n  arch: [mlp]\n", encoding="utf-8")
    result = snakemake(planning_project, "-n", "--configfile", str(broken), check=False)
    output = result.stdout + result.stderr
    assert result.returncode == 1
    assert "Traceback" not in output
    assert "Config file is not valid JSON or YAML" in output
    assert nothing_written(planning_project)


def test_broken_yaml_in_config_yaml_is_refused_naming_the_file(tmp_path):
    folder = copy_project(tmp_path / "project")
    with open(folder / "config/config.yaml", "a", encoding="utf-8") as handle:
        handle.write("train:\n  epochs: 2\n bad: [\n")
    result = snakemake(folder, "-n", check=False)
    assert_refused(result, "config/config.yaml at line", "is not valid YAML")
    assert nothing_written(folder)


def test_broken_yaml_in_an_experiment_file_is_refused_naming_it(planning_project):
    (planning_project / "config/experiments/broken.yaml").write_text("grid: [\n")
    try:
        result = snakemake(planning_project, "-n", "--config", "experiment=broken", check=False)
    finally:
        (planning_project / "config/experiments/broken.yaml").unlink()
    assert_refused(result, "config/experiments/broken.yaml at line", "is not valid YAML")


def test_an_undecodable_byte_in_config_yaml_is_refused_naming_the_file(tmp_path):
    folder = copy_project(tmp_path / "project")
    with open(folder / "config/config.yaml", "ab") as handle:
        handle.write(b"# r\xe9sum\xe9\n")
    result = snakemake(folder, "-n", check=False)
    assert_refused(result, "config/config.yaml at line", "is not UTF-8")
    assert nothing_written(folder)


def test_an_undecodable_byte_in_an_experiment_file_is_refused_naming_it(planning_project):
    (planning_project / "config/experiments/latin.yaml").write_bytes(b"train: {epochs: 2} # \xff\n")
    try:
        result = snakemake(planning_project, "-n", "--config", "experiment=latin", check=False)
    finally:
        (planning_project / "config/experiments/latin.yaml").unlink()
    assert_refused(result, "config/experiments/latin.yaml at line 1, column 22", "is not UTF-8")


def test_a_key_that_is_not_a_name_is_refused_in_any_layer(planning_project, tmp_path):
    keys = tmp_path / "keys.yaml"
    keys.write_text("train:\n  epochs: 2\n  1: x\n", encoding="utf-8")
    result = snakemake(planning_project, "-n", "--configfile", str(keys), check=False)
    assert_refused(result, "keys.yaml at line 3: key 1 is read as a number")
    (planning_project / "config/experiments/keys.yaml").write_text("1: x\nfoo: y\n")
    try:
        result = snakemake(planning_project, "-n", "--config", "experiment=keys", check=False)
    finally:
        (planning_project / "config/experiments/keys.yaml").unlink()
    assert_refused(result, "config/experiments/keys.yaml at line 1: key 1 is read as a number")


def test_merge_keys_in_a_configfile_reach_the_plan(planning_project, tmp_path):
    merged = tmp_path / "merged.yaml"
    merged.write_text(
        "experiment: merged\n"
        "grid:\n  <<: {seed: [3], arch: [mlp]}\n  lr: [0.5]\n"
        "analysis: {criterion: null}\n",
        encoding="utf-8",
    )
    result = snakemake(planning_project, "-n", "--configfile", str(merged))
    assert planned_runs(result) == {"arch=mlp/lr=0.5/seed=3"}


def test_an_experiment_typo_in_a_configfile_is_refused(planning_project, tmp_path):
    typo = write_config(tmp_path, {"experiment": "fashon"}, "typo.yaml")
    result = snakemake(planning_project, "-n", "--configfile", str(typo), check=False)
    assert_refused(result, "experiment (set by ", "typo.yaml", "did you mean 'fashion'")
    assert nothing_written(planning_project)
    # An experiment of its own, named apart from the known ones, plans into its own folder.
    own = write_config(
        tmp_path,
        {"experiment": "wide", "grid": {"seed": [0], "arch": ["mlp"], "lr": [0.2]}},
        "own.yaml",
    )
    result = snakemake(planning_project, "-n", "--configfile", str(own), "--config",
                       "analysis={criterion: null}")  # fmt: skip
    assert "results/wide/runs/arch=mlp/lr=0.2/seed=0/metrics.json" in result.stdout


def test_raw_dir_naming_a_file_is_refused_before_any_job(planning_project, raw_dir):
    file = raw_dir / "train-labels-idx1-ubyte.gz"
    result = snakemake(planning_project, "-n", "--config", f"data={{raw_dir: {file}}}", check=False)
    assert_refused(result, "data.raw_dir (set by --config)", "is a file, not a folder")


def assert_refused_while_planning(result, *fragments):
    """Refused in one `reprogrid:` line once Snakemake builds its plan, after its own header."""
    output = result.stdout + result.stderr
    assert result.returncode == 1, output
    assert "Traceback" not in output and "Error" not in output, output
    ours = [line for line in output.splitlines() if line.startswith("reprogrid:")]
    assert len(ours) == 1, output
    assert output.strip().splitlines()[-1] == ours[0], output
    for fragment in fragments:
        assert fragment in ours[0], output


@pytest.mark.parametrize(
    ("target", "fragments"),
    [
        (
            "results/default/runs/arch=mlp/lr=0.01/seed=0/metrics.json",
            ["no run arch=mlp/lr=0.01/seed=0 in the grid", "grid.lr (set by config/config.yaml)"],
        ),
        (
            "results/default/runs/arch=mlp/lr=0.001/batch_size=32/seed=0/model.pt",
            ["batch_size is no grid axis", "list the value under grid"],
        ),
        (
            "results/default/runs/arch=mlp/lr=0.001/seed=7/history.csv",
            ["grid.seed (set by config/config.yaml) lists 0, 1, 2, not 7"],
        ),
    ],
)
def test_a_run_outside_the_grid_is_refused_in_one_line(planning_project, target, fragments):
    for args in (["-n"], ["--cores", "1"]):
        result = snakemake(planning_project, *args, target, check=False)
        assert_refused_while_planning(result, *fragments)
        assert nothing_written(planning_project)


def test_a_local_run_asking_for_a_gpu_torch_cannot_see_is_refused(planning_project):
    import torch

    if torch.cuda.is_available():
        pytest.skip("torch sees a GPU here")
    grid = ["grid={seed: [0], arch: [mlp], lr: [0.1]}", "analysis={criterion: null}"]
    # A dry run cannot tell where the jobs will run (--profile profiles/slurm -n looks the
    # same), so it plans; a real local run is refused before its first job.
    snakemake(planning_project, "-n", "--config", *grid, "resources={gpu: 1}")
    result = snakemake(
        planning_project, "--cores", "1", "--config", *grid, "resources={gpu: 1}", check=False
    )
    assert_refused_while_planning(
        result, "config key resources.gpu (set by --config)", "torch sees no GPU",
        "--config resources='{gpu: 0}'",
    )  # fmt: skip
    assert nothing_written(planning_project)
    result = snakemake(
        planning_project, "--cores", "1", "--config", *grid, "--set-resources", "train:gpu=1",
        check=False,
    )  # fmt: skip
    assert_refused_while_planning(result, "--set-resources train:gpu=1", "train:gpu=0")
    assert nothing_written(planning_project)


def test_missing_raw_file_is_refused_before_any_job(planning_project, tmp_path, raw_dir):
    partial = tmp_path / "partial"
    shutil.copytree(raw_dir, partial)
    (partial / "train-images-idx3-ubyte.gz").unlink()
    result = snakemake(
        planning_project, "-n", "--config", f"data={{raw_dir: {partial}}}", check=False
    )
    assert_refused(result, "data.raw_dir", "train-images-idx3-ubyte")


def planned_runs(result) -> set[str]:
    return set(re.findall(r"Training (\S+)", result.stdout + result.stderr))


def test_precedence_through_snakemake(planning_project, tmp_path):
    """config.yaml < experiment file < --configfile < --config, seen in the planned runs."""
    write_config(
        planning_project / "config/experiments",
        {"grid": {"seed": [7], "arch": ["mlp"], "lr": [0.5]}, "train": {"epochs": 1}},
        "layered.yaml",
    )
    arch = write_config(
        tmp_path,
        {"grid": {"arch": ["cnn"], "lr": [0.25]}, "analysis": {"criterion": None}},
        "arch.yaml",
    )
    result = snakemake(
        planning_project, "-n", "--configfile", str(arch),
        "--config", "experiment=layered", "grid={lr: [1e-2]}",
    )  # fmt: skip
    assert planned_runs(result) == {"arch=cnn/lr=0.01/seed=7"}
    assert "results/layered/runs/arch=cnn/lr=0.01/seed=7/metrics.json" in result.stdout


def test_fashion_experiment_plans_into_its_own_folder(planning_project):
    result = snakemake(planning_project, "-n", "--config", "experiment=fashion")
    output = result.stdout
    assert paths.prepared_data("fashion-mnist", paths.DOWNLOADED) in output
    assert "results/fashion/summary/runs.csv" in output
    assert "reports/fashion/labbook.html" in output
    assert len(planned_runs(result)) == 12
    assert "results/default" not in output


def test_truncated_dataset_stops_the_data_step_naming_the_file(tmp_path, raw_dir):
    broken = tmp_path / "raw"
    shutil.copytree(raw_dir, broken)
    images = broken / "train-images-idx3-ubyte.gz"
    whole = gzip.decompress(images.read_bytes())
    images.write_bytes(gzip.compress(whole[: len(whole) // 2], mtime=0))
    folder = copy_project(tmp_path / "project")
    config = write_config(folder, tiny_grid(broken))
    result = snakemake(folder, "--cores", "1", "--configfile", str(config), check=False)
    output = result.stdout + result.stderr
    assert result.returncode != 0
    assert "train-images-idx3-ubyte.gz" in output
    assert "truncated" in output
    (log_file,) = (folder / paths.data_dir("mnist")).glob("*/prepare.log")
    log = log_file.read_text(encoding="utf-8")
    assert f"{images}: " in log and "truncated" in log
    assert not list((folder / paths.data_dir("mnist")).glob("*/prepared.safetensors"))
    assert not (folder / "results").exists()


# --- through Snakemake: real tiny runs ---------------------------------------------------------


def test_nested_cli_override_trains_that_many_epochs(tmp_path, raw_dir):
    folder = copy_project(tmp_path / "project")
    grid = small_grid(raw_dir, seed=[0], arch=["mlp"], lr=[0.003])
    config = write_config(folder, grid)
    snakemake(
        folder, "results/tiny/runs/arch=mlp/lr=0.003/seed=0/metrics.json",
        "--cores", "1", "--configfile", str(config), "--config", "train={epochs: 2}",
    )  # fmt: skip
    run = folder / "results/tiny/runs/arch=mlp/lr=0.003/seed=0"
    history = pd.read_csv(run / "history.csv")
    assert list(history["epoch"]) == [1, 2]
    # A cluster job re-reads the Snakefile with the --configfiles and --config it is given;
    # run the train job the way a Slurm job runs it: it must resolve the same config and
    # so retrain the same bytes.
    model = (run / "model.pt").read_bytes()
    written = (run / "model.pt").stat().st_mtime_ns
    snakemake(
        folder, "--target-jobs", "train:run=arch=mlp/lr=0.003/seed=0", "--allowed-rules",
        "train", "--mode", "remote", "--force", "--no-hooks", "--nolock", "--cores", "1",
        "--configfiles", str(config), "--config", "train={epochs: 2}",
    )  # fmt: skip
    assert (run / "model.pt").stat().st_mtime_ns != written, "the job did not run"
    assert (run / "model.pt").read_bytes() == model
    assert list(pd.read_csv(run / "history.csv")["epoch"]) == [1, 2]


@pytest.fixture(scope="module")
def finished_small(tmp_path_factory, raw_dir):
    """One finished pipeline of 2 runs at the default batch size, to add grid axes to."""
    folder = copy_project(tmp_path_factory.mktemp("axes") / "project")
    grid = small_grid(raw_dir, seed=[0], arch=["mlp"], lr=[0.001, 0.003])
    grid["train"] = {"epochs": 1, "max_batches": 4}
    write_config(folder, grid)
    (folder / "config/experiments/tiny.md").write_text(
        "# Lab book: tiny\n\n## Hypothesis\nSmall grids finish in seconds.\n", encoding="utf-8"
    )
    snakemake(folder, "--cores", "2", "--configfile", "test.yaml")
    return folder, grid


def test_the_lab_book_is_in_the_report(finished_small):
    folder, _ = finished_small
    page = (folder / "reports/tiny/labbook.html").read_text(encoding="utf-8")
    assert "Small grids finish in seconds." in page


def test_an_axis_at_its_default_plans_nothing(finished_small):
    folder, grid = finished_small
    same = write_config(
        folder, {**grid, "grid": {**grid["grid"], "batch_size": [128]}}, "same.yaml"
    )
    result = snakemake(folder, "-n", "--configfile", str(same))
    # No run moves or retrains, and the summary stands; only the report's tables page,
    # which quotes the resolved config (now with the new axis), is written again.
    assert set(job_counts(result.stdout)) <= {"tables", "all"}, result.stdout
    result = snakemake(folder, "-n", "--rerun-triggers", "mtime", "--configfile", str(same))
    assert "Nothing to be done" in result.stdout + result.stderr


def test_new_axis_values_plan_exactly_the_new_runs(finished_small):
    folder, grid = finished_small
    more = write_config(
        folder, {**grid, "grid": {**grid["grid"], "batch_size": [128, 256]}}, "more.yaml"
    )
    result = snakemake(folder, "-n", "--configfile", str(more))
    assert planned_runs(result) == {
        "arch=mlp/lr=0.001/batch_size=256/seed=0",
        "arch=mlp/lr=0.003/batch_size=256/seed=0",
    }
    assert job_counts(result.stdout) == {
        "train": 2,
        "aggregate": 1,
        "figures": 1,
        "tables": 1,
        "all": 1,
    }


def test_debug_run_writes_only_under_debug_folders(tmp_path, raw_dir):
    folder = copy_project(tmp_path / "project")
    grid = small_grid(raw_dir, seed=[3, 4], arch=["mlp"], lr=[0.001])
    config = write_config(folder, grid)
    stale = folder / "results/debug/runs/arch=cnn/lr=0.5/seed=9"
    stale.mkdir(parents=True)
    snakemake(folder, "-n", "--configfile", str(config), "--config", "debug=True")
    assert stale.is_dir(), "a dry run must not delete anything"

    snakemake(folder, "--cores", "2", "--configfile", str(config), "--config", "debug=True")
    assert not stale.exists(), "a debug run starts from nothing"
    top = {path.relative_to(folder).parts[:2] for path in folder.rglob("*") if path.is_file()}
    written = {parts for parts in top if parts[0] in ("results", "reports", "logs")}
    assert written == {("results", "debug"), ("reports", "debug"), ("logs", "debug")}
    runs = sorted((folder / "results/debug/runs").glob("arch=*/lr=*/seed=*"))
    assert [run.relative_to(folder / "results/debug/runs").as_posix() for run in runs] == [
        "arch=mlp/lr=0.001/seed=3"
    ]
    history = pd.read_csv(runs[0] / "history.csv")
    assert len(history) == 1
    assert "reports/debug/summary.html" in {
        path.relative_to(folder).as_posix() for path in (folder / "reports").rglob("*.html")
    }


def test_a_debug_run_never_deletes_a_running_debug_run(tmp_path, raw_dir):
    """A second debug run, started while one runs, is refused and deletes nothing."""
    folder = copy_project(tmp_path / "project")
    config = write_config(folder, small_grid(raw_dir, seed=[0], arch=["mlp", "cnn"], lr=[0.1]))
    command = [sys.executable, "-m", "snakemake", "--cores", "1", "--configfile", str(config),
               "--config", "debug=True"]  # fmt: skip
    first = subprocess.Popen(
        command, cwd=folder, start_new_session=True, stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT, text=True,
    )  # fmt: skip
    runs = folder / "results/debug/runs"
    try:
        deadline = time.monotonic() + 300
        while not list(runs.glob("*/*/*/metrics.json")):
            assert first.poll() is None, first.communicate()[0]
            assert time.monotonic() < deadline, "the first debug run trained nothing"
            time.sleep(0.05)
        # Hold the first run mid-grid, its claim and Snakemake's lock held, while the second starts.
        os.killpg(first.pid, signal.SIGSTOP)
        written = sorted(path for path in folder.glob("*/debug/**/*") if path.is_file())
        second = snakemake(folder, *command[3:], check=False)
        assert_refused_while_planning(second, "another debug run is running")
        assert sorted(path for path in folder.glob("*/debug/**/*") if path.is_file()) == written
    finally:
        os.killpg(first.pid, signal.SIGCONT)
    output = first.communicate(timeout=600)[0]
    assert first.returncode == 0, output
    assert (folder / "results/debug/summary/runs.csv").is_file()
    assert len(list(runs.glob("*/*/*/metrics.json"))) == 2
