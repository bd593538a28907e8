"""Successive halving: rungs, decisions, and a search that ends as runs trained straight."""

from __future__ import annotations

import json
import math

import pytest
import torch

from conftest import (
    IDX_TASK,
    assert_refused,
    copy_project,
    job_counts,
    reprogrid,
    resolve_layers,
    snakemake,
    tiny_grid,
    train_params,
    write_config,
)
from reprogrid.config.errors import ConfigError
from reprogrid.plan import halving
from reprogrid.record import provenance
from reprogrid.tasks.spec import Metrics
from reprogrid.train import training

# The built-in classification task's metric table: accuracy up, loss down.
METRICS = Metrics({"acc": "max", "loss": "min"})


@pytest.mark.parametrize(
    ("low", "high", "eta", "epochs"),
    [
        (1, 9, 3, [1, 3, 9]),
        (1, 10, 3, [1, 3, 9, 10]),
        (2, 2, 3, [2]),
        (1, 8, 2, [1, 2, 4, 8]),
        (3, 5, 4, [3, 5]),
    ],
)
def test_rungs_grow_by_eta_up_to_max_epochs(low, high, eta, epochs):
    assert halving.rung_epochs(low, high, eta) == epochs


@pytest.mark.parametrize(("entered", "kept"), [(27, 9), (9, 3), (3, 1), (2, 1), (1, 1), (10, 3)])
def test_a_rung_keeps_the_best_third_and_at_least_one(entered, kept):
    assert halving.keep_count(entered, 3) == kept


def _runs(arch, scores):
    """Run ids of one setting per lr, each with a score per seed."""
    return {
        f"arch={arch}/lr={lr}/seed={seed}": score
        for lr, seeds in scores.items()
        for seed, score in enumerate(seeds)
    }


def test_a_decision_ranks_settings_by_their_mean_over_seeds_within_each_arch():
    results = {
        **_runs("mlp", {"0.1": [0.9, 0.5], "0.2": [0.8, 0.8], "0.3": [0.1, 0.2]}),
        **_runs("cnn", {"0.1": [0.3, 0.3], "0.2": [0.4, 0.4], "0.3": [0.2, 0.2]}),
    }
    rows = halving.decide(0, 1, results, 3, METRICS, "val_acc")
    kept = {row["point"] for row in rows if row["kept"]}
    # 0.2's mean (0.8) beats 0.1's (0.7) though 0.1 has the best seed; each arch keeps one.
    assert kept == {"arch=mlp/lr=0.2", "arch=cnn/lr=0.2"}
    mlp = [row for row in rows if row["arch"] == "mlp"]
    assert [row["point"] for row in mlp] == [
        "arch=mlp/lr=0.2",
        "arch=mlp/lr=0.1",
        "arch=mlp/lr=0.3",
    ]
    assert mlp[1]["metric"] == pytest.approx(0.7)
    assert {row["seeds"] for row in rows} == {2}


def test_a_lower_loss_ranks_first_and_a_diverged_seed_ranks_last():
    results = _runs("mlp", {"0.1": [0.2, None], "0.2": [0.5, 0.5], "0.3": [0.3, 0.3]})
    rows = halving.decide(1, 3, results, 2, METRICS, "val_loss")
    assert [(row["point"], row["kept"]) for row in rows] == [
        ("arch=mlp/lr=0.3", True),
        ("arch=mlp/lr=0.2", False),
        ("arch=mlp/lr=0.1", False),
    ]
    assert rows[-1]["metric"] is None


def test_a_task_metric_is_ranked_in_the_direction_the_task_declares():
    # "score" is no loss by name: only the task's table says lower is better.
    results = _runs("mlp", {"0.1": [0.2, 0.2], "0.2": [0.5, 0.5], "0.3": [0.3, 0.3]})
    lower = halving.decide(0, 1, results, 3, Metrics({"score": "min"}), "val_score")
    higher = halving.decide(0, 1, results, 3, Metrics({"score": "max"}), "val_score")
    assert [row["point"] for row in lower if row["kept"]] == ["arch=mlp/lr=0.1"]
    assert [row["point"] for row in higher if row["kept"]] == ["arch=mlp/lr=0.2"]


def test_a_rung_figure_is_labelled_by_the_metric_and_its_direction():
    import pandas as pd

    from reprogrid.analysis import plots

    rows = halving.decide(0, 1, _runs("mlp", {"0.1": [0.2], "0.2": [0.5]}), 2, METRICS, "val_loss")
    finished = pd.DataFrame(
        {"run": ["arch=mlp/lr=0.1/seed=0"], "status": ["ok"], "val_loss": [0.1]}
    )
    figure = plots.search_rungs(pd.DataFrame(rows), finished, METRICS, "val_loss", 2)
    label = figure.axes[0].get_ylabel()
    assert label == "val_loss (lower is better), mean over seeds"
    line = next(line for line in figure.axes[0].get_lines() if len(line.get_ydata()) == 2)
    assert list(line.get_ydata()) == [0.2, 0.1]  # plain values, no scale by name


def test_ties_go_to_the_setting_named_first_whatever_the_order_of_results():
    results = _runs("mlp", {"0.2": [0.5], "0.1": [0.5], "0.3": [0.5]})
    reversed_results = dict(reversed(list(results.items())))
    first = halving.decide(0, 1, results, 3, METRICS, "val_acc")
    assert first == halving.decide(0, 1, reversed_results, 3, METRICS, "val_acc")
    assert [row["point"] for row in first if row["kept"]] == ["arch=mlp/lr=0.1"]


def test_a_decision_table_reads_back_as_written():
    results = _runs("mlp", {"0.1": [1 / 3], "0.2": [None]})
    rows = halving.decide(0, 1, results, 2, METRICS, "val_acc")
    assert halving.read_decision(halving.decision_csv(rows)) == rows
    runs = ["arch=mlp/lr=0.1/seed=0", "arch=mlp/lr=0.1/seed=1", "arch=mlp/lr=0.2/seed=0"]
    assert halving.kept_runs(rows, runs) == runs[:2]
    assert halving.outline(rows) == {
        "rungs": [{"rung": 0, "epochs": 1, "settings": 2, "kept": 1}],
        "stopped": 1,
    }


def test_rung_metrics_are_those_of_the_best_epoch_so_far():
    history = [
        {"epoch": e, "val_acc": acc, "val_loss": 1 - acc, "test_acc": acc / 2, "test_loss": 0.0}
        for e, acc in enumerate([0.5, 0.7, 0.7, 0.9], start=1)
    ]
    at_three = halving.rung_metrics(history, 3, "val_acc", "ok", METRICS)
    # The first of equal epochs is kept, as training keeps it; epoch 4 is not seen yet.
    assert (at_three["best_epoch"], at_three["val_acc"], at_three["epochs_run"]) == (2, 0.7, 3)
    assert halving.rung_metrics(history, 4, "val_loss", "ok", METRICS)["best_epoch"] == 4
    diverged = halving.rung_metrics(history, 2, "val_acc", "diverged", METRICS)
    assert diverged["val_acc"] is None and diverged["status"] == "diverged"


@pytest.mark.parametrize("schedule", ["onecycle", "cosine", "step"])
def test_a_run_stopped_at_a_rung_and_resumed_ends_as_one_trained_straight(
    prepared, tmp_path, schedule
):
    params = train_params(arch="mlp", epochs=3, max_batches=4, schedule=schedule, lr=0.01)
    common = {"val_fraction": 0.1, "split_seed": 0, "threads": 1}
    straight = training.train_one_run(
        IDX_TASK, prepared, params, checkpoint_path=tmp_path / "straight.pt", **common
    )
    rung = training.train_one_run(
        IDX_TASK, prepared, params, checkpoint_path=tmp_path / "search.pt", until=1, **common
    )
    assert len(rung.history) == 1
    ahead = training.train_one_run(
        IDX_TASK, prepared, params, checkpoint_path=tmp_path / "search.pt", until=1, **common
    )
    assert ahead.resumed_from == 2 and len(ahead.history) == 1
    resumed = training.train_one_run(
        IDX_TASK, prepared, params, checkpoint_path=tmp_path / "search.pt", **common
    )
    assert resumed.resumed_from == 2
    assert [row["val_acc"] for row in resumed.history] == [
        row["val_acc"] for row in straight.history
    ]
    for name, tensor in straight.weights.items():
        assert torch.equal(tensor, resumed.weights[name]), name
    assert [row["lr"] for row in resumed.history] == [row["lr"] for row in straight.history]


def _refusal(schema, layers, values):
    with pytest.raises(ConfigError) as refused:
        resolve_layers(schema, layers, values=values)
    return str(refused.value)


@pytest.mark.parametrize(
    ("halving_block", "fragments"),
    [
        ({"min_epochs": 5, "max_epochs": 3}, ["halving.min_epochs", "5 is above", "(3,"]),
        ({"eta": 1}, ["halving.eta", "must be at least 2"]),
        ({"metric": "test_acc"}, ["halving.metric", "test_acc", "the test split never decides"]),
        ({"min_epochs": 0}, ["halving.min_epochs", "at least 1"]),
    ],
)
def test_bad_halving_settings_are_refused_naming_the_key(schema, layers, halving_block, fragments):
    message = _refusal(schema, layers, {"halving": {"enabled": True, **halving_block}})
    for fragment in fragments:
        assert fragment in message, message


def test_halving_refuses_an_epochs_axis_and_sets_every_runs_epochs(schema, layers):
    message = _refusal(schema, layers, {"halving": {"enabled": True}, "grid": {"epochs": [2, 4]}})
    assert "grid.epochs" in message and "halving.max_epochs" in message
    config = resolve_layers(schema, layers, values={"halving": {"enabled": True, "max_epochs": 4}})
    assert config["train"]["epochs"] == 4
    debug = resolve_layers(schema, layers, values={"halving": {"enabled": True}, "debug": True})
    assert debug["halving"]["enabled"] is False and debug["train"]["epochs"] == 1


@pytest.mark.workflow
def test_a_bad_halving_key_stops_snakemake_before_any_job(project, raw_dir):
    config = tiny_grid(raw_dir, halving={"enabled": True, "min_epochs": 4, "max_epochs": 2})
    write_config(project, config)
    result = snakemake(project, "-n", "--configfile", "test.yaml", check=False)
    assert_refused(result, "halving.min_epochs", "halving.max_epochs")


def _search(raw_dir, **grid):
    return tiny_grid(
        raw_dir,
        grid={"seed": [0, 1], "arch": ["mlp"], **grid},
        train={"batch_size": 32, "max_batches": 6},
        halving={"enabled": True, "eta": 2, "min_epochs": 1, "max_epochs": 4},
        analysis={"criterion": None},
    )


def _model_bytes(folder, experiment="tiny"):
    return {
        path.relative_to(folder).as_posix(): path.read_bytes()
        for path in sorted((folder / "results" / experiment / "runs").rglob("model.pt"))
    }


@pytest.mark.workflow
def test_a_search_halves_to_runs_equal_to_those_trained_straight(tmp_path, raw_dir):
    lrs = [0.0003, 0.001, 0.01, 0.03]
    search = copy_project(tmp_path / "search")
    write_config(search, _search(raw_dir, lr=lrs))
    planned = job_counts(snakemake(search, "-n", "--configfile", "test.yaml").stdout)
    # Before any decision only the first rung's runs are known: every run to epoch 1; the
    # two decisions are planned, what they let through is not.
    assert planned["train_rung"] == 8 and planned["halve"] == 2 and "train" not in planned

    # Stopped after the first decision, then picked up where it stopped.
    snakemake(search, "results/tiny/search/rung-0.csv", "--cores", "2", "--configfile", "test.yaml")
    snakemake(search, "--cores", "2", "--configfile", "test.yaml")
    rungs = (search / "results/tiny/search/rungs.csv").read_text().splitlines()
    assert rungs[0] == "rung,epochs,arch,point,seeds,metric,kept"
    decided = [line.split(",") for line in rungs[1:]]
    assert [(row[0], row[1], row[-1]) for row in decided] == [
        ("0", "1", "true"),
        ("0", "1", "true"),
        ("0", "1", "false"),
        ("0", "1", "false"),
        ("1", "2", "true"),
        ("1", "2", "false"),
    ]
    winner = decided[4][3]
    finished = _model_bytes(search)
    assert sorted(finished) == [f"results/tiny/runs/{winner}/seed={s}/model.pt" for s in (0, 1)]
    conclusion = json.loads((search / "results/tiny/summary/conclusion.json").read_text())
    assert conclusion["runs"] == 2 and conclusion["search"]["stopped"] == 3
    assert (search / "reports/tiny/search_rungs.png").stat().st_size > 0
    summary_md = (search / "reports/tiny/summary.md").read_text()
    assert "rung 0: 4 settings at 1 epoch, 2 kept; rung 1: 2 settings at 2 epochs" in summary_md
    assert "3 settings stopped at their rung are in no summary" in summary_md
    runs_csv = (search / "results/tiny/summary/runs.csv").read_text()
    assert runs_csv.count(winner) == 2 and "stopped" not in runs_csv
    for seed in (0, 1):
        record = provenance.read(search / f"results/tiny/runs/{winner}/seed={seed}/provenance.json")
        assert record.job.resumed_from_epoch == 3
    assert job_counts(snakemake(search, "-n", "--configfile", "test.yaml").stdout) == {}
    snakemake(search, "--report", "report.html", "--configfile", "test.yaml")
    assert "search_rungs.png" in (search / "report.html").read_text(errors="replace")
    shown = reprogrid("status", "--configfile", "test.yaml", cwd=search)
    assert "2 done" in shown.stdout and "6 dropped" in shown.stdout, shown.stdout + shown.stderr

    # The same search again from nothing decides the same, to the same bytes; and each
    # survivor's weights are those of its setting trained straight to max_epochs.
    again = copy_project(tmp_path / "again")
    write_config(again, _search(raw_dir, lr=lrs))
    snakemake(again, "--cores", "2", "--configfile", "test.yaml")
    assert (again / "results/tiny/search/rungs.csv").read_text() == "\n".join(rungs) + "\n"
    assert _model_bytes(again) == finished
    straight = copy_project(tmp_path / "straight")
    lr = float(winner.split("lr=")[1])
    plain = _search(raw_dir, lr=[lr])
    plain["halving"] = {"enabled": False}
    plain["train"]["epochs"] = 4
    write_config(straight, plain)
    snakemake(straight, "--cores", "2", "--configfile", "test.yaml")
    assert _model_bytes(straight) == finished
    metrics = json.loads((straight / f"results/tiny/runs/{winner}/seed=0/metrics.json").read_text())
    assert math.isfinite(metrics["val_acc"])
