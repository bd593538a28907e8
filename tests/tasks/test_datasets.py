"""Data that does not fit in memory: a task whose `load` returns Datasets.

The task below reads one small .npy file per example, as a user's Dataset over files too
many to hold would, and draws noise in `__getitem__` from torch's global generator, which
is the case that tells whether batches are seeded per batch or per worker. Snakemake runs
for real in copies of the project: the same bytes twice, for 0 and 2 workers, and after a
SIGTERM mid-epoch; the data job stores no samples; wrong Datasets are refused in one line.
"""

from __future__ import annotations

import json
import os
import re
import signal
import subprocess
from pathlib import Path

import numpy as np
import pytest
import torch
from test_tasks import run_file, start

from conftest import copy_project, job_counts, snakemake, write_config
from reprogrid.datasets import data, loading
from reprogrid.datasets.rawfiles import DataError
from reprogrid.tasks import runtime
from reprogrid.tasks.spec import TaskError
from reprogrid.train import training

TASK = '''"""Predict y from the two features of one .npy file per example."""

import os
import time
from pathlib import Path

import numpy as np
import torch
from torch import nn
from torch.utils.data import Dataset

PARAMS = {"hidden": 16, "dropout": 0.2}
METRICS = {"mse": "min", "mae": "min"}


class Rows(Dataset):
    def __init__(self, folder, pace):
        self.files = sorted(Path(folder).glob("*.npy"))
        self.pace = pace

    def __len__(self):
        return len(self.files)

    def __getitem__(self, index):
        # Read at each item, so that a test can slow an epoch down while it runs.
        time.sleep(float(self.pace.read_text()))
        row = torch.from_numpy(np.load(self.files[index]))
        return row[:2] + 0.01 * torch.randn(2), row[2]


def load(raw_dir):
    slow = Path(os.environ.get("ROWS_PACE", Path(raw_dir) / "item_seconds.txt"))
    return {
        "train": Rows(Path(raw_dir) / "train", slow),
        "test": Rows(Path(raw_dir) / "test", slow),
        "features": 2,
    }


def build(params, data):
    return nn.Sequential(
        nn.Linear(data["features"], params["hidden"]),
        nn.ReLU(),
        nn.Dropout(params["dropout"]),
        nn.Linear(params["hidden"], 1),
    )


def loss(model, x, y):
    return torch.mean((model(x).squeeze(1) - y) ** 2)


def evaluate(model, batches):
    squared = absolute = count = 0.0
    for x, y in batches:
        error = model(x).squeeze(1) - y
        squared += torch.sum(error**2).item()
        absolute += torch.sum(error.abs()).item()
        count += len(y)
    return {"mse": squared / count, "mae": absolute / count}
'''


def write_rows(folder: Path, train: int = 400, test: int = 80, item_seconds: float = 0.0) -> Path:
    """One .npy file per example, [x1, x2, y], under train/ and test/."""
    rng = np.random.default_rng(0)
    for split, count in (("train", train), ("test", test)):
        (folder / split).mkdir(parents=True)
        for index in range(count):
            x = rng.uniform(-1, 1, size=2)
            row = np.array([x[0], x[1], 2 * x[0] - x[1] ** 2], dtype=np.float32)
            np.save(folder / split / f"{index:05d}.npy", row)
    (folder / "item_seconds.txt").write_text(f"{item_seconds}\n")
    return folder


def dataset_project(folder: Path) -> Path:
    copy_project(folder)
    (folder / "tasks").mkdir(exist_ok=True)
    (folder / "tasks/rows_npy.py").write_text(TASK)
    return folder


def dataset_config(folder: Path, raw: Path, workers: int = 0) -> Path:
    return write_config(
        folder,
        {
            "experiment": "user",
            "task": "tasks/rows_npy.py",
            "data": {"raw_dir": str(raw)},
            "grid": {"seed": [0], "arch": ["mlp"], "lr": [0.003]},
            "train": {"epochs": 2, "batch_size": 16, "eval_batch_size": 30},
            "resources": {"workers": workers},
            "analysis": {"criterion": None},
        },
        f"workers{workers}.yaml",
    )


def train(folder: Path, config: Path) -> bytes:
    target = str(run_file(folder, "model.pt").relative_to(folder))
    snakemake(folder, "--cores", "1", target, "--configfile", str(config))
    return run_file(folder, "model.pt").read_bytes()


@pytest.fixture(scope="module")
def rows(tmp_path_factory) -> Path:
    # Slow enough per item that a signal lands while an epoch is under way.
    return write_rows(tmp_path_factory.mktemp("rows") / "raw", item_seconds=0.003)


@pytest.fixture(scope="module")
def reference(tmp_path_factory, rows) -> Path:
    folder = tmp_path_factory.mktemp("reference")
    train(dataset_project(folder / "project"), dataset_config(folder, rows))
    return folder / "project"


@pytest.mark.workflow
def test_datasets_give_the_same_bytes_twice_and_for_any_worker_count(tmp_path, rows, reference):
    weights = run_file(reference, "model.pt").read_bytes()
    metrics = json.loads(run_file(reference, "metrics.json").read_text())
    assert metrics["status"] == "ok" and set(metrics) >= {"val_mse", "test_mae"}
    assert train(dataset_project(tmp_path / "again"), dataset_config(tmp_path, rows)) == weights
    workers = dataset_config(tmp_path, rows, workers=2)
    assert train(dataset_project(tmp_path / "workers"), workers) == weights
    # The worker count is no part of a run: setting it trains nothing again.
    target = str(run_file(reference, "model.pt").relative_to(reference))
    plan = snakemake(reference, target, "-n", "-q", "rules", "--configfile", str(workers))
    assert job_counts(plan.stdout) == {}


@pytest.mark.workflow
def test_the_data_job_stores_no_samples_but_what_identifies_them(reference):
    (checks_path,) = (reference / "resources/data/rows_npy").glob("*/checks.json")
    checks = json.loads(checks_path.read_text())
    assert checks["counts"] == {"train": 400, "test": 80}
    assert checks["datasets"]["counts"] == checks["counts"]
    assert re.fullmatch(r"[0-9a-f]{64}", checks["datasets"]["probe_sha256"])
    prepared = checks_path.with_name("prepared.safetensors")
    assert prepared.stat().st_size < 1000
    assert data.load_prepared(prepared) == {"features": 2}


def trainers(process: subprocess.Popen) -> list[int]:
    """The training job among the processes of Snakemake's `process` (started in a session
    of its own) and its DataLoader workers (forked: the same argv)."""
    found = []
    for entry in Path("/proc").iterdir():
        try:
            if not entry.name.isdigit() or os.getsid(int(entry.name)) != process.pid:
                continue
            argv = (entry / "cmdline").read_bytes().split(b"\0")
        except (OSError, ProcessLookupError):
            continue
        if b"python" in Path(argv[0].decode()).name.encode() and b"reprogrid.jobs.train" in argv:
            found.append(int(entry.name))
    return found


def set_pace(path: Path, item_seconds: float) -> None:
    """Set the seconds the task sleeps per item; a whole file at every read of its workers."""
    path.with_suffix(".new").write_text(f"{item_seconds}\n")
    path.with_suffix(".new").replace(path)


@pytest.mark.workflow
def test_sigterm_mid_epoch_with_workers_resumes_to_the_same_bytes(
    tmp_path, monkeypatch, rows, reference
):
    config = dataset_config(tmp_path, rows, workers=2)
    folder = dataset_project(tmp_path / "stopped")
    output = tmp_path / "stopped.txt"
    pace = tmp_path / "pace.txt"
    set_pace(pace, 0.003)
    monkeypatch.setenv("ROWS_PACE", str(pace))
    process = start(folder, config, output)
    while not run_file(folder, "checkpoint.pt").exists():
        assert process.poll() is None, output.read_text()
    # Epoch 1 is saved: epoch 2 now takes many seconds, so the signal lands while it is under way
    # however slowly this loop is scheduled. Its workers are up when the job has three pids.
    set_pace(pace, 0.1)
    while len(pids := trainers(process)) != 3:
        assert process.poll() is None, output.read_text()
    # A cluster's time limit signals every process of the job, its workers too.
    for pid in pids:
        os.kill(pid, signal.SIGTERM)
    assert process.wait(timeout=120) != 0
    text = output.read_text()
    stopped = re.search(r"stopped by signal 15 in epoch (\d+) after batch (\d+)", text)
    assert stopped and "Traceback" not in text, text
    epoch, batch = stopped.groups()
    assert int(batch) > 0
    set_pace(pace, 0.003)
    snakemake(folder, "--unlock", "--configfile", str(config))
    target = str(run_file(folder, "model.pt").relative_to(folder))
    result = snakemake(
        folder, "--cores", "1", target, "--configfile", str(config), "--rerun-incomplete"
    )
    assert f"resuming from epoch {epoch}, batch {batch}" in result.stderr, result.stderr
    assert run_file(folder, "model.pt").read_bytes() == run_file(reference, "model.pt").read_bytes()


def task_file(folder: Path, old: str = "", new: str = "") -> runtime.Task:
    path = folder / "rows_task.py"
    path.write_text(TASK.replace(old, new))
    return runtime.open_task(str(path))


REFUSALS = {
    "a key missing": (
        '"test": Rows(Path(raw_dir) / "test", slow),',
        "",
        'load returned no test; return both Datasets, {"train": ..., "test": ...}',
    ),
    "not a Dataset": (
        '"test": Rows(Path(raw_dir) / "test", slow),',
        '"test": [1, 2],',
        "load returned test as list; give a map-style torch.utils.data.Dataset",
    ),
    "split tensors beside Datasets": (
        '"features": 2,',
        '"features": 2, "test_x": torch.zeros(3),',
        "load returned test_x as Tensor; give a number or a string beside Datasets",
    ),
    "an item of one tensor": (
        "return row[:2] + 0.01 * torch.randn(2), row[2]",
        "return row",
        "load returned a train Dataset whose item is Tensor; give (x, y) tensors",
    ),
    "an item with a number": (
        "return row[:2] + 0.01 * torch.randn(2), row[2]",
        "return row[:2], float(row[2])",
        "load returned a train Dataset whose item is (Tensor, float); give (x, y) tensors",
    ),
    "items of two shapes": (
        "return row[:2] + 0.01 * torch.randn(2), row[2]",
        "return row[: 1 + index % 2], row[2]",
        "items' x differ in shape ((1,), (2,)); give every x one shape",
    ),
}


@pytest.mark.parametrize("case", REFUSALS)
def test_wrong_datasets_are_refused_in_one_line_naming_the_task(tmp_path, case):
    old, new, message = REFUSALS[case]
    raw = write_rows(tmp_path / "raw", train=20, test=10)
    task = task_file(tmp_path, old, new)
    with pytest.raises(TaskError) as refused:
        data.prepare(task, raw, tmp_path / "prepared.safetensors")
    assert f"task {task.spec.name}: " in str(refused.value)
    assert message in str(refused.value) and "\n" not in str(refused.value)
    assert not (tmp_path / "prepared.safetensors").exists()


def test_a_training_job_refuses_datasets_changed_since_they_were_prepared(tmp_path):
    raw = write_rows(tmp_path / "raw", train=20, test=10)
    task = task_file(tmp_path)
    data.prepare(task, raw, tmp_path / "prepared.safetensors")
    assert len(data.open_prepared(task, tmp_path / "prepared.safetensors")["train"]) == 20
    np.save(raw / "train/00019.npy", np.zeros(3, dtype=np.float32))
    with pytest.raises(DataError, match=r"the items of task .* differ .* run snakemake again"):
        data.open_prepared(task, tmp_path / "prepared.safetensors")
    (raw / "train/00019.npy").unlink()
    with pytest.raises(DataError, match=r"lengths then \{'test': 10, 'train': 20\}, now"):
        data.open_prepared(task, tmp_path / "prepared.safetensors")


def test_items_are_read_under_seeds_of_their_batch_and_leave_the_trainer_generators(tmp_path):
    task = task_file(tmp_path)
    loaded, _ = task.load(str(write_rows(tmp_path / "raw", train=40, test=10)))
    plan = loading.BatchPlan(list(range(40)), 16, range(1, 3), (0, 0))
    torch.manual_seed(5)
    before = torch.get_rng_state()
    read = [
        [task.batch(items, "train")[0] for items in loading.loader(loaded["train"], plan, w)]
        for w in (0, 2)
    ]
    assert torch.equal(torch.get_rng_state(), before)
    assert [len(batch) for batch in read[0]] == [16, 8]
    assert all(torch.equal(a, b) for a, b in zip(*read, strict=True))


def test_a_dataset_task_trains_through_the_loop_as_a_tensor_task(tmp_path):
    from conftest import train_params

    task = task_file(tmp_path)
    data.prepare(task, write_rows(tmp_path / "raw", train=60, test=20), tmp_path / "p.safetensors")
    prepared = data.open_prepared(task, tmp_path / "p.safetensors")
    params = train_params(
        arch="mlp", lr=0.01, epochs=1, batch_size=16, hidden=4, dropout=0.0, select_metric="val_mse"
    )
    result = training.train_one_run(
        task, prepared, params, val_fraction=0.1, split_seed=0,
        checkpoint_path=tmp_path / "checkpoint.pt", threads=1,
    )  # fmt: skip
    assert result.metrics["status"] == "ok"
    assert result.history[0]["train_loss"] > 0 and result.metrics["val_mse"] > 0
