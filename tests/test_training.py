"""Training learns, is a pure function of its seed, resumes exactly and records divergence."""

from __future__ import annotations

import os
import signal

import pytest
import torch

from conftest import train_params, train_run
from reprogrid import training

BASE = train_params(arch="mlp", lr=0.003, batch_size=64, eval_batch_size=256)


def train(prepared, tmp_path, on_epoch=None, **overrides):
    return train_run(prepared, tmp_path, {**BASE, **overrides}, on_epoch)


def same_weights(a, b) -> bool:
    return a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)


@pytest.mark.parametrize("arch", ["mlp", "cnn"])
def test_loss_falls_and_accuracy_beats_chance(prepared, tmp_path, arch):
    result = train(prepared, tmp_path, arch=arch)
    losses = [row["train_loss"] for row in result.history]
    assert losses[-1] < losses[0] * 0.5
    assert result.status == "ok"
    assert result.metrics["test_acc"] > 0.5
    assert result.metrics["best_epoch"] in (1, 2, 3)
    chosen = result.history[result.metrics["best_epoch"] - 1]
    assert result.metrics["val_acc"] == max(row["val_acc"] for row in result.history)
    assert result.metrics["test_acc"] == chosen["test_acc"]


def test_same_seed_gives_identical_weights_and_other_seed_does_not(prepared, tmp_path):
    first = train(prepared, tmp_path / "a")
    again = train(prepared, tmp_path / "b")
    other = train(prepared, tmp_path / "c", seed=1)
    assert same_weights(first.weights, again.weights)
    assert first.history[-1]["train_loss"] == again.history[-1]["train_loss"]
    assert not same_weights(first.weights, other.weights)


def test_stopped_run_resumes_to_the_same_weights(prepared, tmp_path):
    uninterrupted = train(prepared, tmp_path / "whole", arch="cnn", schedule="onecycle")

    def stop_after_first_epoch(row):
        if row["epoch"] == 1:
            os.kill(os.getpid(), signal.SIGTERM)

    with pytest.raises(training.Stopped):
        train(prepared, tmp_path / "split", arch="cnn", schedule="onecycle",
              on_epoch=stop_after_first_epoch)  # fmt: skip
    assert (tmp_path / "split" / "checkpoint.pt").is_file()
    resumed = train(prepared, tmp_path / "split", arch="cnn", schedule="onecycle")
    assert resumed.resumed_from == 2
    assert same_weights(uninterrupted.weights, resumed.weights)
    for column in ("val_acc", "lr", "train_loss"):
        assert [r[column] for r in resumed.history] == [r[column] for r in uninterrupted.history]


def test_checkpoint_of_other_parameters_is_not_resumed(prepared, tmp_path):
    train(prepared, tmp_path, epochs=1)
    result = train(prepared, tmp_path, epochs=2, lr=0.001)
    assert result.resumed_from is None
    assert len(result.history) == 2


def test_divergence_is_recorded_not_raised(prepared, tmp_path):
    result = train(prepared, tmp_path, optimizer="sgd", lr=1e6, epochs=2)
    assert result.status == "diverged"
    assert result.metrics["status"] == "diverged"
    assert result.metrics["test_acc"] is None


def test_loss_selection_keeps_the_lowest_validation_loss(prepared, tmp_path):
    result = train(prepared, tmp_path, select_metric="val_loss", epochs=3)
    best = min(result.history, key=lambda row: row["val_loss"])
    assert result.metrics["best_epoch"] == best["epoch"]


def test_max_batches_limits_each_epoch(prepared, tmp_path):
    seen = []
    train(prepared, tmp_path, epochs=1, max_batches=2, batch_size=16,
          on_epoch=lambda row: seen.append(row))  # fmt: skip
    assert len(seen) == 1


def test_history_csv_has_the_documented_columns():
    text = training.history_csv([dict.fromkeys(training.HISTORY_COLUMNS, 1.0)])
    assert text.splitlines()[0] == ",".join(training.HISTORY_COLUMNS)
