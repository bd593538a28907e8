"""Training learns, is a pure function of its seed, resumes exactly and records divergence."""

from __future__ import annotations

import csv
import io
import os
import pickle
import signal

import pytest
import torch
from torch.optim.optimizer import register_optimizer_step_post_hook

from conftest import IDX_TASK, train_params, train_run
from reprogrid.train import checkpoint, training
from reprogrid.train import outputs as run_outputs

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
    assert result.metrics["status"] == "ok"
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
    assert result.metrics["status"] == "diverged"
    assert result.metrics["test_acc"] is None


def test_loss_selection_keeps_the_lowest_validation_loss(prepared, tmp_path):
    result = train(prepared, tmp_path, select_metric="val_loss", epochs=3)
    best = min(result.history, key=lambda row: row["val_loss"])
    assert result.metrics["best_epoch"] == best["epoch"]


def test_max_batches_limits_each_epoch(prepared, tmp_path):
    """Each epoch takes max_batches optimiser steps, though the split holds 34 batches of 16."""
    steps = []
    hook = register_optimizer_step_post_hook(lambda *_: steps.append(1))
    try:
        train(prepared, tmp_path, epochs=2, max_batches=3, batch_size=16)
    finally:
        hook.remove()
    assert len(steps) == 2 * 3


def test_history_csv_writes_each_epoch_under_the_documented_columns(prepared, tmp_path):
    result = train(prepared, tmp_path, epochs=2, max_batches=3)
    rows = list(csv.DictReader(io.StringIO(run_outputs.history_csv(result.history))))
    assert list(rows[0]) == [
        "epoch", "train_loss", "train_acc", "val_loss", "val_acc",
        "test_loss", "test_acc", "lr", "epoch_seconds",
    ]  # fmt: skip
    assert [int(row["epoch"]) for row in rows] == [1, 2]
    for row, epoch in zip(rows, result.history, strict=True):
        assert float(row["val_acc"]) == epoch["val_acc"]  # written exactly, read back the same
        assert float(row["train_loss"]) == epoch["train_loss"]


def stopped_after_first_epoch(prepared, folder, **overrides):
    """Train two epochs but stop after the first, leaving its checkpoint in `folder`."""

    def stop(row):
        if row["epoch"] == 1:
            os.kill(os.getpid(), signal.SIGTERM)

    keys = {name: overrides.pop(name) for name in ("data_sha256", "code") if name in overrides}
    params = {**BASE, "epochs": 2, "max_batches": 3, **overrides}
    with pytest.raises(training.Stopped):
        resume(prepared, folder, params, on_epoch=stop, **keys)
    assert (folder / "checkpoint.pt").is_file()
    return params


def resume(prepared, folder, params, on_epoch=None, **keys):
    return training.train_one_run(
        IDX_TASK,
        prepared, params, val_fraction=0.1, split_seed=0,
        checkpoint_path=folder / "checkpoint.pt", threads=1, on_epoch=on_epoch, **keys,
    )  # fmt: skip


@pytest.mark.parametrize(
    ("part", "made", "wanted"),
    [("data_sha256", "aaaa", "bbbb"), ("code", "c0de0001", "c0de0002")],
)
def test_checkpoint_of_other_data_or_code_is_ignored_saying_which(
    prepared, tmp_path, caplog, part, made, wanted
):
    params = stopped_after_first_epoch(prepared, tmp_path, **{part: made})
    with caplog.at_level("INFO", logger="reprogrid"):
        result = resume(prepared, tmp_path, params, **{part: wanted})
    assert result.resumed_from is None
    assert len(result.history) == 2
    label = {"data_sha256": "data", "code": "code"}[part]
    assert f"made with other {label} ({made} vs {wanted})" in caplog.text


def test_checkpoint_of_the_same_data_and_code_resumes(prepared, tmp_path):
    keys = {"data_sha256": "aaaa", "code": "c0de0001"}
    params = stopped_after_first_epoch(prepared, tmp_path, **keys)
    assert resume(prepared, tmp_path, params, **keys).resumed_from == 2


@pytest.mark.parametrize(
    ("optimizer", "schedule"),
    [
        (optimizer, schedule)
        for optimizer in ("adam", "adamw", "sgd", "adadelta")
        for schedule in ("constant", "cosine", "onecycle", "step")
        # One-cycle needs a momentum or beta1 to cycle, which Adadelta has not.
        if (optimizer, schedule) != ("adadelta", "onecycle")
    ],
)
def test_every_checkpoint_loads_as_tensors_and_plain_values(
    prepared, tmp_path, optimizer, schedule
):
    stopped_after_first_epoch(prepared, tmp_path, optimizer=optimizer, schedule=schedule)
    torch.load(tmp_path / "checkpoint.pt", weights_only=True)
    assert checkpoint.load(tmp_path / "checkpoint.pt") is not None
    assert list(tmp_path.iterdir()) == [tmp_path / "checkpoint.pt"]


class CreatesAFile:
    """Unpickled, it creates the file it names: what a hostile checkpoint could do instead."""

    def __init__(self, path):
        self.path = str(path)

    def __reduce__(self):
        return (open, (self.path, "w"))


@pytest.mark.parametrize("form", ["torch.save", "pickle"])
def test_a_checkpoint_that_would_run_code_never_does_and_the_run_starts_fresh(
    prepared, tmp_path, caplog, form
):
    # The payload is real: unpickled the ordinary way, it creates its file.
    proof = tmp_path / "proof"
    pickle.loads(pickle.dumps(CreatesAFile(proof)))
    assert proof.exists()

    folder, marker = tmp_path / "run", tmp_path / "pwned"
    folder.mkdir()
    state = {key: CreatesAFile(marker) for key in checkpoint.KEYS}
    payload = (
        checkpoint.to_bytes(state) if form == "torch.save" else pickle.dumps(state, protocol=2)
    )
    (folder / "checkpoint.pt").write_bytes(payload)
    with caplog.at_level("INFO", logger="reprogrid"):
        result = resume(prepared, folder, {**BASE, "epochs": 1, "max_batches": 3})
    assert not marker.exists()
    assert result.metrics["status"] == "ok"
    assert result.resumed_from is None
    assert len(list(folder.glob("checkpoint.pt.damaged-*"))) == 1
    assert "moved aside" in caplog.text


@pytest.mark.parametrize("damage", ["truncated", "garbage", "empty", "not a checkpoint"])
def test_a_damaged_checkpoint_is_moved_aside_and_the_run_starts_fresh(
    prepared, tmp_path, caplog, damage
):
    params = stopped_after_first_epoch(prepared, tmp_path)
    path = tmp_path / "checkpoint.pt"
    good = path.read_bytes()
    path.write_bytes(
        {
            "truncated": good[: len(good) // 2],
            "garbage": os.urandom(4096),
            "empty": b"",
            "not a checkpoint": checkpoint.to_bytes({"epoch": 1, "weights": torch.zeros(3)}),
        }[damage]
    )
    with caplog.at_level("INFO", logger="reprogrid"):
        result = resume(prepared, tmp_path, params)
    assert result.resumed_from is None
    assert result.metrics["status"] == "ok"
    aside = list(tmp_path.glob("checkpoint.pt.damaged-*"))
    assert len(aside) == 1
    assert f"moved aside to {aside[0].name}" in caplog.text
    # The run's own checkpoints work again after it: the next one resumes.
    params = stopped_after_first_epoch(prepared, tmp_path / "again")
    assert resume(prepared, tmp_path / "again", params).resumed_from == 2
