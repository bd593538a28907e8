"""A task of one's own: every guarantee reprogrid gives holds for a task file it did not write.

The task below is written the way docs/tasks.md describes, as a user would: a regression on
a CSV file, importing a module of the user's own repository. Each test runs Snakemake for
real in a copy of the project: same bytes twice, resume after kill -9, a re-plan on a real
edit and none on a comment, one-line refusals, and failures of the task's own code.
"""

from __future__ import annotations

import csv as csv_format  # `csv` is this file's fixture of a CSV file
import hashlib
import json
import os
import re
import shutil
import signal
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch

from conftest import (
    REPO,
    assert_refused,
    copy_project,
    git,
    job_counts,
    reprogrid,
    snakemake,
    write_config,
)
from reprogrid.config import schema as config_schema
from reprogrid.datasets import catalog
from reprogrid.plan import grid
from reprogrid.record import provenance
from reprogrid.tasks import spec as taskspec

TASK = '''"""Predict y from two features of a CSV file."""

import numpy as np
import torch
from torch import nn

from userlib import columns

ARCHS = ("linear", "mlp")
PARAMS = {"hidden": 16}
METRICS = {"mse": "min", "mae": "min"}


def load(raw_dir):
    table = np.loadtxt(raw_dir, delimiter=",", skiprows=1, dtype=np.float32)
    x, y = columns(table)
    n = round(len(y) * 0.8)
    return {"train_x": x[:n], "train_y": y[:n], "test_x": x[n:], "test_y": y[n:]}


def build(params, data):
    if params["arch"] == "linear":
        return nn.Linear(2, 1)
    return nn.Sequential(nn.Linear(2, params["hidden"]), nn.ReLU(), nn.Linear(params["hidden"], 1))


def loss(model, x, y):
    return torch.mean((model(x).squeeze(1) - y) ** 2)


def evaluate(model, x, y):
    error = model(x).squeeze(1) - y
    return {"mse": torch.mean(error**2).item(), "mae": torch.mean(error.abs()).item()}
'''

USERLIB = '''"""The user's own helpers, imported by the task."""

import torch


def columns(table):
    """Features and target of the table: the first two columns, and the third."""
    return torch.from_numpy(table[:, :2].copy()), torch.from_numpy(table[:, 2].copy())
'''

RUN = "arch=mlp/lr=0.003/seed=0"


def write_csv(path: Path, rows: int) -> Path:
    rng = np.random.default_rng(0)
    x = rng.uniform(-1, 1, size=(rows, 2))
    y = 2 * x[:, 0] - x[:, 1] ** 2 + 0.05 * rng.normal(size=rows)
    lines = ["x1,x2,y", *(f"{a:.6f},{b:.6f},{c:.6f}" for (a, b), c in zip(x, y, strict=True))]
    path.write_text("\n".join(lines) + "\n")
    return path


def user_project(folder: Path) -> Path:
    """A copy of the project with the user's task and helper module in tasks/."""
    copy_project(folder)
    (folder / "tasks").mkdir(exist_ok=True)
    (folder / "tasks/user_reg.py").write_text(TASK)
    (folder / "tasks/userlib.py").write_text(USERLIB)
    return folder


def user_config(folder: Path, csv: Path, **overrides) -> Path:
    config = {
        "experiment": "user",
        "task": "tasks/user_reg.py",
        "data": {"raw_dir": str(csv)},
        "grid": {"seed": [0], "arch": ["linear", "mlp"], "lr": [0.003]},
        "train": {"epochs": 2, "batch_size": 32},
        "analysis": {"criterion": None},
    }
    for key, value in overrides.items():
        config[key] = {**config.get(key, {}), **value} if isinstance(value, dict) else value
    return write_config(folder, config)


def run_file(folder: Path, name: str, run: str = RUN) -> Path:
    return folder / "results/user/runs" / run / name


def planned(folder: Path, config: Path) -> dict[str, int]:
    return job_counts(snakemake(folder, "-n", "-q", "rules", "--configfile", str(config)).stdout)


@pytest.fixture(scope="module")
def csv(tmp_path_factory) -> Path:
    return write_csv(tmp_path_factory.mktemp("csv") / "table.csv", rows=2000)


@pytest.mark.workflow
def test_a_user_task_trains_summarises_and_records_its_task(tmp_path, csv):
    folder = user_project(tmp_path / "project")
    config = user_config(tmp_path, csv)
    snakemake(folder, "--cores", "2", "--configfile", str(config))
    metrics = json.loads(run_file(folder, "metrics.json").read_text())
    assert metrics["status"] == "ok"
    assert set(metrics) >= {"test_mae", "test_mse", "val_mae", "val_mse"}
    header = run_file(folder, "history.csv").read_text().splitlines()[0]
    assert header == "epoch,train_loss,val_mse,val_mae,test_mse,test_mae,lr,epoch_seconds"
    record = provenance.read(run_file(folder, "provenance.json"))
    assert record.config.task.name == "tasks/user_reg.py"
    assert record.config.task.file.endswith("tasks/user_reg.py")
    assert record.config.train["select_metric"] == "val_mse"
    assert record.config.data.dataset is None
    assert record.data.raw_sha256 == {"table.csv": hashlib.sha256(csv.read_bytes()).hexdigest()}
    assert (folder / "results/user/summary/summary.csv").is_file()


@pytest.mark.workflow
def test_edits_plan_again_exactly_the_runs_of_the_task(tmp_path, csv):
    folder = user_project(tmp_path / "project")
    config = user_config(tmp_path, csv)
    snakemake(folder, "--cores", "2", "--configfile", str(config))
    assert planned(folder, config) == {}

    task, helper = folder / "tasks/user_reg.py", folder / "tasks/userlib.py"
    original_task, original_helper = task.read_text(), helper.read_text()
    task.write_text(original_task.replace("import numpy", "# A note.\nimport numpy") + "\n# end\n")
    helper.write_text(original_helper.replace('"""Features', '"""Reworded: features'))
    assert planned(folder, config) == {}

    helper.write_text(original_helper.replace("table[:, 2].copy()", "(table[:, 2] * 1).copy()"))
    plan = planned(folder, config)
    assert plan["train"] == 2 and plan["prepare_data"] == 1

    helper.write_text(original_helper)
    task.write_text(original_task.replace('"hidden": 16', '"hidden": 17'))
    assert planned(folder, config)["train"] == 2

    task.write_text(original_task)
    assert planned(folder, config) == {}


def start(folder: Path, config: Path, output: Path) -> subprocess.Popen:
    target = str(run_file(folder, "model.pt").relative_to(folder))
    return subprocess.Popen(
        [sys.executable, "-m", "snakemake", "--cores", "1", target, "--configfile", str(config)],
        cwd=folder,
        stdout=output.open("w"),
        stderr=subprocess.STDOUT,
        start_new_session=True,
    )


@pytest.mark.workflow
def test_a_user_task_gives_the_same_bytes_twice_and_after_kill_9(tmp_path, csv):
    big = write_csv(tmp_path / "big.csv", rows=30000)
    config = user_config(tmp_path, big, train={"epochs": 3, "batch_size": 16})
    reference = user_project(tmp_path / "reference")
    target = str(run_file(reference, "model.pt").relative_to(reference))
    snakemake(reference, "--cores", "1", target, "--configfile", str(config))
    other = user_project(tmp_path / "other")
    snakemake(other, "--cores", "1", target, "--configfile", str(config))
    weights = run_file(reference, "model.pt").read_bytes()
    assert run_file(other, "model.pt").read_bytes() == weights

    killed = user_project(tmp_path / "killed")
    process = start(killed, config, tmp_path / "killed.txt")
    checkpoint = run_file(killed, "checkpoint.pt")
    while not checkpoint.exists():
        assert process.poll() is None, (tmp_path / "killed.txt").read_text()
    os.killpg(process.pid, signal.SIGKILL)
    process.wait()
    snakemake(killed, "--unlock", "--configfile", str(config))
    result = snakemake(
        killed, "--cores", "1", target, "--configfile", str(config), "--rerun-incomplete"
    )
    assert re.search(r"resuming from epoch \d+, batch 0", result.stderr), result.stderr
    assert run_file(killed, "model.pt").read_bytes() == weights


BROKEN = {
    "evaluate misses a metric": (
        ('"mae": torch.mean(error.abs()).item()}', "}"),
        "evaluate returned no mae on the val split",
    ),
    "evaluate is not finite": (
        ('"mae": torch.mean(error.abs()).item()', '"mae": float("nan")'),
        "evaluate returned mae = nan on the val split at epoch 1",
    ),
    "build returns no module": (
        ("return nn.Linear(2, 1)", "return 'a model'"),
        "build returned str, not a torch.nn.Module",
    ),
}


@pytest.mark.workflow
@pytest.mark.parametrize("case", BROKEN)
def test_a_broken_task_fails_its_run_naming_what_to_fix(tmp_path, csv, case):
    (old, new), message = BROKEN[case]
    folder = user_project(tmp_path / "project")
    task = folder / "tasks/user_reg.py"
    task.write_text(task.read_text().replace(old, new))
    config = user_config(tmp_path, csv, grid={"seed": [0], "arch": ["linear"], "lr": [0.003]})
    result = snakemake(folder, "--cores", "1", "--configfile", str(config), check=False)
    assert result.returncode != 0
    log = run_file(folder, "train.log", "arch=linear/lr=0.003/seed=0").read_text()
    assert f"reprogrid: task tasks/user_reg.py: {message}" in log
    assert not run_file(folder, "metrics.json", "arch=linear/lr=0.003/seed=0").exists()


@pytest.mark.workflow
def test_load_raising_fails_the_data_job_with_its_traceback_in_the_log(tmp_path, csv):
    folder = user_project(tmp_path / "project")
    task = folder / "tasks/user_reg.py"
    task.write_text(
        task.read_text().replace("    table = np.loadtxt", "    1 / 0\n    table = np.loadtxt")
    )
    result = snakemake(
        folder, "--cores", "1", "--configfile", str(user_config(tmp_path, csv)), check=False
    )
    assert result.returncode != 0
    logs = list((folder / "resources/data/user_reg").glob("*/prepare.log"))
    assert logs, result.stderr
    text = logs[0].read_text()
    assert "Traceback (most recent call last)" in text and "ZeroDivisionError" in text


PLANNING_REFUSALS = {
    "missing file": ({"task": "tasks/nothing.py"}, "task file tasks/nothing.py does not exist"),
    "bare name not built in": ({"task": "regresion"}, "'regresion' is no built-in task"),
    "undeclared select metric": (
        {"train": {"select_metric": "val_acc"}},
        "train.select_metric",
    ),
    "undeclared criterion metric": (
        {"analysis": {"criterion": {"better": "mlp", "worse": "linear", "metric": "test_r2"}}},
        "analysis.criterion.metric",
    ),
    "arch outside ARCHS": (
        {"grid": {"seed": [0], "arch": ["cnn"], "lr": [0.003]}},
        "unknown value 'cnn'; choose one of: linear, mlp",
    ),
    "axis neither train nor PARAMS": (
        {"grid": {"seed": [0], "arch": ["mlp"], "lr": [0.003], "hiden": [8]}},
        "did you mean 'grid.hidden'",
    ),
}


@pytest.mark.workflow
@pytest.mark.parametrize("case", PLANNING_REFUSALS)
def test_bad_task_input_is_refused_before_any_job_in_one_line(tmp_path, csv, case):
    overrides, fragment = PLANNING_REFUSALS[case]
    folder = user_project(tmp_path / "project")
    config = user_config(tmp_path, csv, **overrides)
    assert_refused(snakemake(folder, "-n", "--configfile", str(config), check=False), fragment)
    assert not (folder / "results").exists()


FILE_REFUSALS = {
    "does not parse": ("def load(:\n", "does not parse (line 1"),
    "lacks evaluate": (
        TASK.split("def evaluate")[0],
        "lacks evaluate; define def evaluate(...)",
    ),
    "ARCHS not a literal": (
        TASK.replace('ARCHS = ("linear", "mlp")', "ARCHS = tuple(['linear'])"),
        "ARCHS must be a literal",
    ),
    "bad direction": (
        TASK.replace('"mae": "min"', '"mae": "lower"'),
        "METRICS['mae'] is 'lower'; a direction is \"min\"",
    ),
    "PARAMS value of no type": (
        TASK.replace('{"hidden": 16}', '{"hidden": None}'),
        "PARAMS['hidden'] defaults to None",
    ),
    "PARAMS key taken": (
        TASK.replace('{"hidden": 16}', '{"lr": 0.1}'),
        "declares PARAMS key 'lr', which is reprogrid's train.lr",
    ),
    "no METRICS": (
        TASK.replace('METRICS = {"mse": "min", "mae": "min"}', ""),
        "lacks METRICS",
    ),
}


@pytest.mark.workflow
@pytest.mark.parametrize("case", FILE_REFUSALS)
def test_a_malformed_task_file_is_refused_naming_the_file(tmp_path, csv, case):
    text, fragment = FILE_REFUSALS[case]
    folder = user_project(tmp_path / "project")
    (folder / "tasks/user_reg.py").write_text(text)
    result = snakemake(folder, "-n", "--configfile", str(user_config(tmp_path, csv)), check=False)
    assert_refused(result, "config key task", "tasks/user_reg.py", fragment)


def test_the_metric_table_ranks_in_each_declared_direction():
    metrics = taskspec.Metrics({"mse": "min", "r2": "max"})
    assert metrics.primary == "mse" and metrics.column("val") == "val_mse"
    assert metrics.better(0.1, 0.2, "val_mse") and not metrics.better(0.2, 0.1, "val_mse")
    assert metrics.better(0.9, 0.8, "test_r2") and not metrics.better(0.8, 0.8, "test_r2")
    rows = [
        {"epoch": 1, "val_mse": 0.3},
        {"epoch": 2, "val_mse": 0.1},
        {"epoch": 3, "val_mse": 0.1},
    ]
    assert metrics.best_row(rows, "val_mse")["epoch"] == 2
    assert metrics.run_keys() == ["test_mse", "test_r2", "val_mse", "val_r2"]
    assert metrics.label("val_r2") == "val_r2 (higher is better)"
    with pytest.raises(KeyError):
        metrics.direction("val_acc")


def test_the_built_in_tasks_are_read_from_their_literals():
    idx = taskspec.read("idx_classification")
    assert idx.builtin and idx.metrics.primary == "acc"
    assert idx.archs == tuple(catalog.ARCHITECTURES)
    assert {"inputs", "describe"} <= idx.hooks
    folder = taskspec.read("image_folder")
    assert folder.metrics.names == ["acc", "loss"]
    assert set(taskspec.builtin_names()) == {"idx_classification", "image_folder"}


MODULE = """module reprogrid:
    snakefile:
        "{snakefile}"
    config:
        config


use rule * from reprogrid
"""


@pytest.mark.workflow
def test_reprogrid_runs_as_a_module_of_the_users_own_repository(tmp_path, csv):
    reprogrid = copy_project(tmp_path / "reprogrid")
    mine = tmp_path / "mine"
    (mine / "tasks").mkdir(parents=True)
    (mine / "config/experiments").mkdir(parents=True)
    (mine / "tasks/user_reg.py").write_text(TASK)
    (mine / "tasks/userlib.py").write_text(USERLIB)
    (mine / "Snakefile").write_text(MODULE.format(snakefile=reprogrid / "Snakefile"))
    base = {
        "experiment": "user",
        "task": "tasks/user_reg.py",
        "data": {"raw_dir": str(csv)},
        "grid": {"seed": [0], "arch": ["linear"], "lr": [0.003]},
        "train": {"epochs": 1},
        "analysis": {"criterion": None},
    }
    write_config(mine / "config", base, "config.yaml")
    (mine / "config/experiments/user.md").write_text("# Lab book: user\n")
    snakemake(mine, "--cores", "2")
    run = mine / "results/user/runs/arch=linear/lr=0.003/seed=0"
    assert json.loads((run / "metrics.json").read_text())["status"] == "ok"
    assert (mine / "reports/user/summary.md").is_file()
    assert "Lab book: user" in (mine / "reports/user/labbook.html").read_text()
    record = provenance.read(run / "provenance.json")
    assert record.config.task.file == str(mine / "tasks/user_reg.py")
    assert not (reprogrid / "results").exists()


def write_images(root: Path, sizes: dict[str, tuple[int, int]], colour: bool) -> Path:
    """class folders of PNG and JPEG files under train/ and test/: each class a colour
    or brightness of its own, sizes varying, as a user's photos would."""
    from PIL import Image

    rng = np.random.default_rng(0)
    for split, count in (("train", 24), ("test", 8)):
        for label, name in enumerate(("cat", "dog")):
            folder = root / split / name
            folder.mkdir(parents=True)
            for index in range(count):
                width, height = sizes[name] if index % 2 else (20, 16)
                base = 60 + 120 * label
                pixels = np.clip(base + rng.normal(0, 20, (height, width, 3)), 0, 255)
                image = Image.fromarray(pixels.astype(np.uint8))
                image = image if colour else image.convert("L")
                suffix = ".png" if index % 3 else ".jpg"
                image.save(folder / f"{index}{suffix}")
    return root


@pytest.mark.workflow
def test_image_folders_of_any_size_train_with_the_built_in_task(tmp_path):
    raw = write_images(tmp_path / "photos", {"cat": (24, 18), "dog": (31, 22)}, colour=True)
    folder = copy_project(tmp_path / "project")
    config = write_config(
        tmp_path,
        {
            "experiment": "photos",
            "task": "image_folder",
            "data": {"raw_dir": str(raw)},
            "grid": {"seed": [0], "arch": ["linear", "cnn"], "lr": [0.01]},
            "train": {"epochs": 3, "batch_size": 8},
            "analysis": {"criterion": None},
        },
    )
    snakemake(folder, "--cores", "2", "--configfile", str(config))
    run = folder / "results/photos/runs/arch=cnn/lr=0.01/seed=0"
    metrics = json.loads((run / "metrics.json").read_text())
    assert metrics["status"] == "ok" and metrics["test_acc"] > 0.9
    checks = json.loads(
        next((folder / "resources/data/image_folder").glob("*/checks.json")).read_text()
    )
    assert checks["counts"] == {"train": 48, "test": 16}
    assert checks["facts"]["classes"] == "cat,dog"


def test_image_folders_are_read_as_imagefolder_reads_them(tmp_path):
    from reprogrid.tasks import runtime

    raw = write_images(tmp_path / "grey", {"cat": (20, 16), "dog": (20, 16)}, colour=False)
    task = runtime.open_task("image_folder")
    tensors, facts = task.load(str(raw))
    assert tensors["train_x"].shape == (48, 1, 16, 20)
    assert tensors["train_x"].dtype.is_floating_point is False
    assert tensors["train_y"].tolist() == [0] * 24 + [1] * 24
    assert facts["classes"] == "cat,dog"
    mixed = write_images(tmp_path / "mixed", {"cat": (24, 18), "dog": (31, 22)}, colour=True)
    tensors, _ = task.load(str(mixed))
    assert tensors["test_x"].shape == (16, 3, 16, 20)


def test_the_example_tasks_train_on_data_made_on_the_fly(tmp_path):
    import idxdata
    from reprogrid.datasets import data
    from reprogrid.tasks import runtime
    from reprogrid.train import training

    cases = {
        "tasks/vae_idx.py": (
            idxdata.write_dataset(tmp_path / "idx", n_train=300, n_test=60),
            {"arch": "vae", "latent": 4, "hidden": 32},
        ),
        "tasks/regression_csv.py": (
            write_csv(tmp_path / "table.csv", rows=400),
            {"arch": "mlp", "target": "y", "hidden": 8, "dropout": 0.1},
        ),
    }
    for name, (raw, params) in cases.items():
        task = runtime.open_task(name, REPO)
        out = tmp_path / f"{Path(name).stem}.safetensors"
        data.prepare(task, raw, out)
        prepared = data.load_prepared(out)
        schema = config_schema.load_schema(REPO / "workflow/schemas/config.schema.yaml", task.spec)
        cfg = {**grid.train_defaults(schema), "epochs": 2, "lr": 0.003, "batch_size": 32, **params}
        results = [
            training.train_one_run(
                task,
                prepared,
                cfg,
                val_fraction=0.1,
                split_seed=0,
                checkpoint_path=tmp_path / f"{attempt}.pt",
                threads=1,
            )
            for attempt in ("first", "second")
        ]
        assert results[0].metrics["status"] == "ok", name
        assert set(results[0].metrics) >= set(task.metrics.run_keys())
        for key, tensor in results[0].weights.items():
            assert torch.equal(tensor, results[1].weights[key]), (name, key)


def test_task_new_writes_a_task_that_runs_as_is_and_refuses_to_overwrite(tmp_path):
    folder = copy_project(tmp_path / "project")
    result = reprogrid("task", "new", "wine", cwd=folder)
    assert result.returncode == 0, result.stderr
    assert (folder / "tasks/wine.py").is_file()
    spec = taskspec.read("tasks/wine.py", folder)
    assert spec.metrics.names == ["mse", "mae"] and spec.archs == ("linear", "mlp")
    again = reprogrid("task", "new", "wine", cwd=folder)
    assert again.returncode == 2
    assert again.stderr.startswith("reprogrid: ") and "exists already" in again.stderr
    for name in ("Wine", "debug", "default", "2wine"):
        refused = reprogrid("task", "new", name, cwd=folder)
        assert refused.returncode == 2 and refused.stderr.count("\n") == 1, name
    snakemake(folder, "--cores", "2", "--config", "experiment=wine", "debug=True")
    metrics = json.loads(
        (folder / "results/debug/runs/arch=mlp/lr=0.01/seed=0/metrics.json").read_text()
    )
    assert metrics["status"] == "ok" and "test_mae" in metrics


@pytest.mark.workflow
def test_every_stage_after_training_speaks_a_user_tasks_metrics(tmp_path, csv):
    """A task of one's own through the stages beyond training: a sampled search over one of
    its PARAMS, halved on val_mse (lower is better), the audit, the W&B export, status,
    compare and reproduce, each on the task's metrics in their declared direction."""
    pytest.importorskip("wandb")
    folder = user_project(tmp_path / "project")
    # A checkout of its own, as a user's repository is: reproduce pins the commit.
    shutil.copy2(REPO / ".gitignore", folder / ".gitignore")
    git(folder, "init", "--quiet")
    git(folder, "add", "--all")
    git(folder, "commit", "--quiet", "-m", "a question of one's own")
    config = user_config(
        tmp_path,
        csv,
        grid={"seed": [0, 1], "arch": ["mlp"]},
        search={
            "method": "random",
            "samples": 4,
            "seed": 0,
            "space": {"hidden": {"choice": [1, 2, 16, 32]}},
        },
        halving={"enabled": True, "eta": 2, "min_epochs": 1, "max_epochs": 3},
        tracking={"wandb": {"enabled": True, "mode": "offline", "project": "user"}},
        analysis={"criterion": None, "audit_runs": 1},
    )
    snakemake(folder, "--cores", "2", "all", "audit", "--configfile", str(config))
    results = folder / "results/user"

    with (results / "search/rungs.csv").open() as rungs:
        first = [row for row in csv_rows(rungs) if row["rung"] == "0"]
    kept = [float(row["metric"]) for row in first if row["kept"] == "true"]
    dropped = [float(row["metric"]) for row in first if row["kept"] == "false"]
    assert len(kept) == len(dropped) == 2 and max(kept) <= min(dropped)

    with (results / "summary/summary.csv").open() as summary:
        settings = csv_rows(summary)
    with (results / "summary/best.csv").open() as best:
        chosen = csv_rows(best)[0]
    assert float(chosen["val_mse_mean"]) == min(float(row["val_mse_mean"]) for row in settings)

    assert (results / "audit/passed.txt").is_file()
    finished = sorted(p.parent for p in (results / "runs").rglob("metrics.json"))
    assert len(finished) == 2  # the one setting left after the last rung, two seeds
    assert len(list((results / "tracking/wandb").glob("offline-run-*"))) == len(finished)

    shown = reprogrid("status", "--configfile", str(config), cwd=folder)
    assert shown.returncode == 0 and "2 done" in shown.stdout, shown.stdout + shown.stderr
    compared = reprogrid("compare", "user", cwd=folder)
    assert compared.returncode == 0 and "test_mse" in compared.stdout, compared.stderr
    steps = reprogrid("reproduce", str(finished[0]), cwd=folder)
    assert steps.returncode == 0 and "snakemake" in steps.stdout, steps.stderr


def csv_rows(stream) -> list[dict[str, str]]:
    return list(csv_format.DictReader(stream))
