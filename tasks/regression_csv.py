"""Regression on any CSV file: which model predicts the target column best?

`data.raw_dir` names a CSV file (or a folder holding exactly one) with a header row and
numeric columns. Every column but `train.target` is a feature. The last fifth of the rows
(after a fixed shuffle) is the test split, the same for every run; reprogrid carves the
validation split from the rest. Features are standardised with the training rows' mean and
standard deviation; the target is predicted in its own units. Lab book:
config/experiments/regression.md.
"""

from pathlib import Path

import numpy as np
import torch
from torch import nn

ARCHS = ("linear", "mlp")
PARAMS = {"target": "target", "hidden": 32, "dropout": 0.0}
METRICS = {"mse": "min", "r2": "max"}

# The test split's share of the rows, and the seed of the one shuffle that picks them.
TEST_FRACTION = 0.2
SPLIT_SEED = 0


def _csv_file(raw_dir) -> Path:
    path = Path(raw_dir)
    if path.is_file():
        return path
    found = sorted(path.glob("*.csv"))
    if len(found) != 1:
        raise ValueError(f"{raw_dir} holds {len(found)} .csv files; point data.raw_dir at one")
    return found[0]


def load(raw_dir):
    """Every numeric column of the CSV as float32 rows; their names, comma-separated."""
    if raw_dir is None:
        raise ValueError("set data.raw_dir to a CSV file (or a folder holding one)")
    path = _csv_file(raw_dir)
    names = path.read_text(encoding="utf-8").splitlines()[0].split(",")
    table = np.loadtxt(path, delimiter=",", skiprows=1, dtype=np.float64, ndmin=2)
    order = np.random.default_rng(SPLIT_SEED).permutation(table.shape[0])
    n_test = max(1, round(table.shape[0] * TEST_FRACTION))
    train, test = table[order[n_test:]], table[order[:n_test]]
    rows = {"train": torch.from_numpy(train).float(), "test": torch.from_numpy(test).float()}
    return {
        "train_x": rows["train"],
        "train_y": rows["train"],
        "test_x": rows["test"],
        "test_y": rows["test"],
        "columns": ",".join(name.strip() for name in names),
        "mean": torch.from_numpy(train.mean(axis=0)).float(),
        "std": torch.from_numpy(train.std(axis=0)).float().clamp_min(1e-12),
    }


class Regressor(nn.Module):
    """Standardised features to the target: a linear map, or one hidden layer of ReLUs."""

    def __init__(self, arch, columns, target, mean, std, hidden, dropout) -> None:
        super().__init__()
        if target not in columns:
            raise ValueError(f"train.target {target!r} is no column of the CSV ({columns})")
        self.target = columns.index(target)
        self.features = [i for i in range(len(columns)) if i != self.target]
        self.register_buffer("mean", mean[self.features].clone())
        self.register_buffer("std", std[self.features].clone())
        width = len(self.features)
        if arch == "linear":
            self.net = nn.Linear(width, 1)
        else:
            self.net = nn.Sequential(
                nn.Linear(width, hidden), nn.ReLU(), nn.Dropout(dropout), nn.Linear(hidden, 1)
            )

    def forward(self, rows):
        return self.net((rows[:, self.features] - self.mean) / self.std).squeeze(1)


def build(params, data):
    columns = data["columns"].split(",")
    return Regressor(
        params["arch"],
        columns,
        params["target"],
        data["mean"],
        data["std"],
        params["hidden"],
        params["dropout"],
    )


def loss(model, x, y):
    return torch.mean((model(x) - y[:, model.target]) ** 2)


def evaluate(model, x, y):
    target = y[:, model.target].double()
    error = model(x).double() - target
    mse = torch.mean(error**2).item()
    variance = torch.mean((target - target.mean()) ** 2).item()
    return {"mse": mse, "r2": 1.0 - mse / variance if variance > 0 else 0.0}
