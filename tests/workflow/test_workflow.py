"""The pipeline end to end: Snakemake runs for real in a copy of the project on generated data."""

from __future__ import annotations

import json
import math
import shlex
import shutil
import subprocess

import pandas as pd
import pytest
from scipy import stats as scipy_stats

from conftest import job_counts, snakemake, tiny_grid, write_config
from reprogrid.record import provenance

pytestmark = pytest.mark.workflow


@pytest.fixture(scope="module")
def finished(tmp_path_factory, raw_dir):
    """The tiny grid, run once for every test of this module."""
    from conftest import copy_project

    folder = copy_project(tmp_path_factory.mktemp("grid") / "project")
    config = write_config(folder, tiny_grid(raw_dir, grid={"seed": [0, 1, 2]}))
    result = snakemake(folder, "--cores", "2", "--configfile", str(config))
    (folder / "first_run.log").write_text(result.stdout + result.stderr)
    return folder, config


def test_every_run_folder_is_complete(finished):
    folder, _ = finished
    runs = sorted((folder / "results/tiny/runs").glob("arch=*/lr=*/seed=*"))
    assert len(runs) == 12
    for run in runs:
        metrics = json.loads((run / "metrics.json").read_text())
        assert metrics["status"] == "ok"
        assert metrics["test_acc"] > 0.5  # ten classes: chance is 0.1
        history = pd.read_csv(run / "history.csv")
        assert list(history.columns) == [
            "epoch", "train_loss", "train_acc", "val_loss", "val_acc",
            "test_loss", "test_acc", "lr", "epoch_seconds",
        ]  # fmt: skip
        record = provenance.read_run(run)
        assert record.seed == int(run.name.split("=")[1])
        assert len(record.data.prepared_sha256) == 64
        assert (run / "model.pt").stat().st_size > 0
        assert (run / "train.log").is_file()
        assert not (run / "checkpoint.pt").exists()


def test_costliest_runs_start_first(finished):
    folder, _ = finished
    started = [
        line.split("Training ", 1)[1].split("/")[0]
        for line in (folder / "first_run.log").read_text().splitlines()
        if "Training arch=" in line
    ]
    assert started == ["arch=cnn"] * 6 + ["arch=mlp"] * 6


def test_summary_tables_have_one_row_per_run_and_setting(finished):
    folder, _ = finished
    runs = pd.read_csv(folder / "results/tiny/summary/runs.csv")
    summary = pd.read_csv(folder / "results/tiny/summary/summary.csv")
    assert len(runs) == 12
    assert len(summary) == 4
    assert {"test_acc_mean", "test_acc_sd", "val_loss_mean", "n"} <= set(summary.columns)
    assert (summary["n"] == 3).all()


def test_summary_intervals_match_a_hand_computed_t_interval(finished):
    folder, _ = finished
    runs = pd.read_csv(folder / "results/tiny/summary/runs.csv")
    summary = pd.read_csv(folder / "results/tiny/summary/summary.csv")
    t = scipy_stats.t.ppf(0.975, df=2)
    for _, row in summary.iterrows():
        values = runs[(runs.arch == row.arch) & (runs.lr == row.lr)]["test_acc"].to_numpy()
        mean, sd = values.mean(), values.std(ddof=1)
        assert row.test_acc_mean == pytest.approx(mean)
        assert row.test_acc_sd == pytest.approx(sd)
        assert row.test_acc_ci95_low == pytest.approx(mean - t * sd / math.sqrt(3))
        assert row.test_acc_ci95_high == pytest.approx(mean + t * sd / math.sqrt(3))


def test_best_setting_has_the_highest_mean_validation_accuracy(finished):
    folder, _ = finished
    summary = pd.read_csv(folder / "results/tiny/summary/summary.csv")
    best = pd.read_csv(folder / "results/tiny/summary/best.csv")
    assert sorted(best.arch) == ["cnn", "mlp"]
    for _, row in best.iterrows():
        assert row.val_acc_mean == summary[summary.arch == row.arch].val_acc_mean.max()
    comparisons = pd.read_csv(folder / "results/tiny/summary/comparisons.csv")
    assert len(comparisons) == 1
    assert {"p_value", "p_holm", "diff", "diff_low", "diff_high", "effect_size"} <= set(
        comparisons.columns
    )
    # The criterion names no metric: the task's first, on test, is compared.
    assert comparisons["metric"].tolist() == ["test_acc"]


def test_second_run_has_nothing_to_do(finished):
    folder, config = finished
    result = snakemake(folder, "-n", "--cores", "2", "--configfile", str(config))
    assert "Nothing to be done" in result.stdout + result.stderr


def test_the_plan_prints_each_runs_parameters_as_json(project, raw_dir):
    config = write_config(project, tiny_grid(raw_dir))
    result = snakemake(project, "-n", "-p", "--configfile", str(config))
    printed = result.stdout + result.stderr
    commands = [
        shlex.split(line.split("Shell command: ", 1)[1])
        for line in printed.splitlines()
        if "Shell command: " in line and "reprogrid.jobs.train" in line
    ]
    assert len(commands) == 8
    for argv in commands:
        params = json.loads(argv[argv.index("--params") + 1])
        run = f"arch={params['arch']}/lr={params['lr']}/seed={params['seed']}"
        assert argv[argv.index("--run") + 1] == run
        assert params["epochs"] == 1 and params["deterministic"] is True
        split = json.loads(argv[argv.index("--split") + 1])
        assert split == {"val_fraction": 0.1, "split_seed": 0}
    assert """'"'"'""" not in printed


def test_another_seed_trains_only_the_new_runs(finished, raw_dir):
    folder, _ = finished
    bigger = write_config(
        folder, tiny_grid(raw_dir, grid={"seed": [0, 1, 2, 3]}), name="four_seeds.yaml"
    )
    result = snakemake(folder, "-n", "--cores", "2", "--configfile", str(bigger))
    assert job_counts(result.stdout) == {
        "train": 4,
        "aggregate": 1,
        "figures": 1,
        "tables": 1,
        "all": 1,
    }


def test_report_holds_the_figures(finished):
    folder, config = finished
    snakemake(folder, "--report", "report.html", "--configfile", str(config))
    report = (folder / "report.html").read_text(errors="replace")
    for name in ("learning_curves.png", "accuracy_heatmap.png", "seed_spread.png"):
        assert name in report
    for name in ("learning_curves.pdf", "seed_spread.pdf", "summary.tex"):
        assert (folder / "reports/tiny" / name).is_file()
    # Every run's page carries its axes as labels, the columns the report filters by.
    for arch in ("mlp", "cnn"):
        for lr in ("0.001", "0.003"):
            for seed in ("0", "1"):
                labels = {"arch": arch, "lr": lr, "seed": seed, "other axes": ""}
                assert f'"labels": {json.dumps(labels)}' in report


CHROMIUM = shutil.which("chromium") or shutil.which("chromium-browser")
HEADLESS = [
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-quic",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
    "--virtual-time-budget=15000",
]


@pytest.mark.skipif(CHROMIUM is None, reason="Chromium is not installed (.ci/install-system)")
def test_report_renders_in_a_headless_browser(finished, tmp_path):
    folder, config = finished
    snakemake(folder, "--report", "browser.html", "--configfile", str(config))
    dom = subprocess.run(
        [CHROMIUM, *HEADLESS, f"--user-data-dir={tmp_path}", "--dump-dom",
         (folder / "browser.html").as_uri()],
        capture_output=True, text=True, timeout=120, check=True,
    ).stdout  # fmt: skip
    # The report is a client-side app: these menu entries exist only once its script has run.
    for category in ("Results", "Runs", "Provenance", "Reproduction", "Lab book"):
        assert f"<span>{category}</span>" in dom
    for page in ("learning_curves.png", "provenance.html", "reproduction.html", "labbook.html"):
        assert page in dom


def test_thesis_outputs(finished):
    folder, _ = finished
    reports = folder / "reports/tiny"
    table = (reports / "summary.tex").read_text()
    assert "\\toprule" in table and "\\bottomrule" in table
    assert "test\\_acc (higher is better)" in table and "val\\_loss (lower is better)" in table
    comparisons = (reports / "comparisons.tex").read_text()
    assert "\\toprule" in comparisons
    assert "diff A-B in test\\_acc (higher is better)" in comparisons
    assert (reports / "learning_curves.pdf").read_bytes().startswith(b"%PDF")
    assert "Summary over seeds" in (reports / "summary.md").read_text()
    runs = sorted(p.name for p in (reports / "runs").glob("*.png"))
    assert len(runs) == 12 and runs[0] == "arch=cnn,lr=0.001,seed=0.png"


def test_inspection_commands_work(finished):
    folder, config = finished
    for args in (["--dag"], ["--rulegraph"], ["--summary"]):
        result = snakemake(folder, *args, "--configfile", str(config))
        assert result.stdout.strip()
