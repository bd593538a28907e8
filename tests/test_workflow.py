"""The pipeline end to end: Snakemake runs for real in a copy of the project on generated data."""

from __future__ import annotations

import json

import pandas as pd
import pytest

from conftest import snakemake, tiny_grid, write_config

pytestmark = pytest.mark.workflow


@pytest.fixture(scope="module")
def finished(tmp_path_factory, raw_dir):
    """The tiny grid, run once for every test of this module."""
    from conftest import copy_project

    folder = copy_project(tmp_path_factory.mktemp("grid") / "project")
    config = write_config(folder, tiny_grid(raw_dir))
    snakemake(folder, "--cores", "2", "--configfile", str(config))
    return folder, config


def test_every_run_folder_is_complete(finished):
    folder, _ = finished
    runs = sorted((folder / "results/tiny/runs").glob("arch=*/lr=*/seed=*"))
    assert len(runs) == 8
    for run in runs:
        metrics = json.loads((run / "metrics.json").read_text())
        assert metrics["status"] == "ok"
        assert metrics["test_acc"] > 0.5  # ten classes: chance is 0.1
        history = pd.read_csv(run / "history.csv")
        assert list(history.columns) == [
            "epoch", "train_loss", "train_acc", "val_loss", "val_acc",
            "test_loss", "test_acc", "lr", "epoch_seconds",
        ]  # fmt: skip
        provenance = json.loads((run / "provenance.json").read_text())
        assert provenance["seed"] == int(run.name.split("=")[1])
        assert len(provenance["data_sha256"]["prepared"]) == 64
        assert (run / "model.pt").stat().st_size > 0
        assert (run / "train.log").is_file()
        assert not (run / "checkpoint.pt").exists()


def test_summary_tables_have_one_row_per_run_and_setting(finished):
    folder, _ = finished
    runs = pd.read_csv(folder / "results/tiny/summary/runs.csv")
    summary = pd.read_csv(folder / "results/tiny/summary/summary.csv")
    assert len(runs) == 8
    assert len(summary) == 4
    assert {"test_acc_mean", "test_acc_sd", "val_loss_mean", "n"} <= set(summary.columns)
    assert (summary["n"] == 2).all()


def test_second_run_has_nothing_to_do(finished):
    folder, config = finished
    result = snakemake(folder, "-n", "--cores", "2", "--configfile", str(config))
    assert "Nothing to be done" in result.stdout + result.stderr


def test_a_third_seed_trains_only_the_new_runs(finished, raw_dir):
    folder, _ = finished
    bigger = write_config(
        folder, tiny_grid(raw_dir, grid={"seed": [0, 1, 2]}), name="three_seeds.yaml"
    )
    result = snakemake(folder, "-n", "--cores", "2", "--configfile", str(bigger))
    stats = _job_counts(result.stdout)
    assert stats["train"] == 4
    assert set(stats) == {"train", "aggregate", "figures", "tables", "all", "total"}


def test_report_holds_the_figures(finished):
    folder, config = finished
    snakemake(folder, "--report", "report.html", "--configfile", str(config))
    report = (folder / "report.html").read_text(errors="replace")
    for name in ("learning_curves.png", "accuracy_heatmap.png", "seed_spread.png"):
        assert name in report
    for name in ("learning_curves.pdf", "seed_spread.pdf", "summary.tex"):
        assert (folder / "reports/tiny" / name).is_file()


def test_inspection_commands_work(finished):
    folder, config = finished
    for args in (["--dag"], ["--rulegraph"], ["--summary"]):
        result = snakemake(folder, *args, "--configfile", str(config))
        assert result.stdout.strip()


def _job_counts(output: str) -> dict[str, int]:
    counts, inside = {}, False
    for line in output.splitlines():
        if line.startswith("Job stats"):
            inside = True
            continue
        parts = line.split()
        if inside and len(parts) == 2 and parts[1].isdigit():
            counts[parts[0]] = int(parts[1])
        elif inside and counts and not line.strip():
            break
    return counts
