"""Statistics against values computed by hand."""

from __future__ import annotations

import json
import math

import pandas as pd
import pytest
from scipy import stats as scipy_stats

from reprogrid.analysis import stats
from reprogrid.record import provenance
from reprogrid.tasks.spec import Metrics

AXES = ["arch", "lr"]
# The built-in classification task's metric table: accuracy up, loss down.
METRICS = Metrics({"acc": "max", "loss": "min"})


def best_of(runs, select="val_acc", report="test_acc", metrics=METRICS):
    """The settings chosen on `select`, as aggregate chooses them."""
    return stats.select_best(stats.summarise(runs, AXES, metrics), AXES, metrics, select, report)


def runs_frame(rows):
    frame = pd.DataFrame(rows, columns=["arch", "lr", "seed", "status", "test_acc", "val_acc"])
    frame["test_loss"] = 1 - frame["test_acc"]
    frame["val_loss"] = 1 - frame["val_acc"]
    frame["train_seconds"] = 1.0
    frame["run"] = [
        f"arch={a}/lr={lr}/seed={s}"
        for a, lr, s in zip(frame.arch, frame.lr, frame.seed, strict=True)
    ]
    return frame


@pytest.fixture
def runs():
    return runs_frame(
        [
            ("cnn", 0.1, 0, "ok", 0.90, 0.80),
            ("cnn", 0.1, 1, "ok", 0.92, 0.82),
            ("cnn", 0.1, 2, "ok", 0.94, 0.84),
            ("cnn", 0.01, 0, "ok", 0.99, 0.70),
            ("cnn", 0.01, 1, "ok", 0.98, 0.71),
            ("cnn", 0.01, 2, "diverged", None, None),
            ("mlp", 0.1, 0, "ok", 0.88, 0.60),
            ("mlp", 0.1, 1, "ok", 0.91, 0.61),
            ("mlp", 0.1, 2, "ok", 0.90, 0.62),
        ]
    )


def test_t_interval_matches_the_textbook_formula():
    low, high = stats.t_interval([0.90, 0.92, 0.94])
    half = 4.302652729911275 * 0.02 / math.sqrt(3)  # t(0.975, df=2) * sd / sqrt(n)
    assert low == pytest.approx(0.92 - half, abs=1e-9)
    assert high == pytest.approx(0.92 + half, abs=1e-9)
    assert all(math.isnan(v) for v in stats.t_interval([0.5]))


def test_summary_counts_diverged_runs_without_averaging_them(runs):
    summary = stats.summarise(runs, AXES, METRICS).set_index(["arch", "lr"])
    row = summary.loc[("cnn", 0.01)]
    assert row["n"] == 2 and row["n_runs"] == 3 and row["n_diverged"] == 1
    assert row["test_acc_mean"] == pytest.approx(0.985)
    assert row["test_acc_sd"] == pytest.approx(math.sqrt(0.00005))
    full = summary.loc[("cnn", 0.1)]
    assert full["test_acc_mean"] == pytest.approx(0.92)
    assert full["test_acc_sd"] == pytest.approx(0.02)
    assert full["test_acc_ci95_low"] == pytest.approx(
        0.92 - 4.302652729911275 * 0.02 / math.sqrt(3)
    )
    assert len(summary) == 3


def test_best_setting_is_chosen_on_validation_not_test(runs):
    best = best_of(runs).set_index("arch")
    # lr=0.01 has the higher test accuracy, lr=0.1 the higher validation accuracy.
    assert best.loc["cnn", "lr"] == 0.1
    assert best.loc["mlp", "lr"] == 0.1


def test_holm_adjustment_by_hand():
    assert stats.holm([0.01, 0.04, 0.03]) == pytest.approx([0.03, 0.06, 0.06])
    adjusted = stats.holm([0.5, float("nan"), 0.01])
    assert adjusted[0] == pytest.approx(0.5) and adjusted[2] == pytest.approx(0.02)
    assert math.isnan(adjusted[1])


def test_paired_comparison_over_shared_seeds(runs):
    best = best_of(runs)
    table = stats.compare(runs, best, AXES, "test_acc")
    row = table.iloc[0]
    assert (row["arch_a"], row["arch_b"], row["test"]) == ("cnn", "mlp", "paired t")
    diffs = [0.02, 0.01, 0.04]
    assert row["diff"] == pytest.approx(sum(diffs) / 3)
    expected = scipy_stats.ttest_rel([0.90, 0.92, 0.94], [0.88, 0.91, 0.90])
    assert row["p_value"] == pytest.approx(expected.pvalue)
    assert row["p_holm"] == pytest.approx(expected.pvalue)
    sd = pd.Series(diffs).std()
    assert row["effect_size"] == pytest.approx((sum(diffs) / 3) / sd)
    assert row["diff_low"] < row["diff"] < row["diff_high"]


def test_welch_comparison_when_seeds_differ():
    a = pd.Series([0.90, 0.92, 0.94], index=[0, 1, 2])
    b = pd.Series([0.80, 0.85, 0.83, 0.81], index=[10, 11, 12, 13])
    result = stats.compare_pair(a, b, 0.95)
    expected = scipy_stats.ttest_ind(a, b, equal_var=False)
    assert result["test"] == "Welch t"
    assert result["p_value"] == pytest.approx(expected.pvalue)
    assert result["df"] == pytest.approx(expected.df)
    assert result["diff"] == pytest.approx(0.92 - 0.8225)


def test_criterion_is_met_or_not_with_its_numbers(runs):
    best = best_of(runs)
    table = stats.compare(runs, best, AXES, "test_acc")

    def criterion(better, worse, min_diff):
        return {"better": better, "worse": worse, "min_diff": min_diff, "metric": "test_acc"}

    easy = stats.evaluate_criterion(table, criterion("cnn", "mlp", 0.01), 0.2, METRICS)
    assert easy["met"] is True and "MET" in easy["statement"]
    assert easy["criterion"] == (
        "cnn beats mlp by at least 0.01 in test_acc (higher is better) at Holm-adjusted p < 0.2"
    )
    assert f"observed difference (cnn - mlp) {easy['diff']:.4f}" in easy["statement"]
    hard = stats.evaluate_criterion(table, criterion("cnn", "mlp", 0.05), 0.2, METRICS)
    assert hard["met"] is False and "NOT MET" in hard["statement"]
    reverse = stats.evaluate_criterion(table, criterion("mlp", "cnn", 0), 0.2, METRICS)
    assert reverse["met"] is False and reverse["diff"] < 0
    assert stats.evaluate_criterion(table, None, 0.05, METRICS)["met"] is None


# A task whose headline is lower-is-better (an error) and whose second metric is higher.
REGRESSION = Metrics({"mse": "min", "r2": "max"})


def regression_runs(rows):
    """Runs of REGRESSION from (arch, lr, seed, status, val_mse, test_mse, val_r2) rows."""
    columns = ["arch", "lr", "seed", "status", "val_mse", "test_mse", "val_r2"]
    frame = pd.DataFrame(rows, columns=columns)
    frame["test_r2"] = frame["val_r2"]
    frame["train_seconds"] = 1.0
    return frame


@pytest.fixture
def regression():
    return regression_runs(
        [
            ("cnn", 0.1, 0, "ok", 0.30, 0.20, 0.50),
            ("cnn", 0.1, 1, "ok", 0.32, 0.22, 0.50),
            ("cnn", 0.1, 2, "ok", 0.34, 0.21, 0.50),
            # The higher validation error: worse, whatever its test error and r2.
            ("cnn", 0.01, 0, "ok", 0.50, 0.10, 0.90),
            ("cnn", 0.01, 1, "ok", 0.52, 0.11, 0.90),
            ("cnn", 0.01, 2, "ok", 0.51, 0.12, 0.90),
            # The lowest validation error, over the one seed that survived.
            ("cnn", 0.3, 0, "ok", 0.10, 0.10, 0.10),
            ("cnn", 0.3, 1, "diverged", None, None, None),
            ("mlp", 0.1, 0, "ok", 0.40, 0.30, 0.40),
            ("mlp", 0.1, 1, "ok", 0.41, 0.33, 0.40),
            ("mlp", 0.1, 2, "ok", 0.42, 0.31, 0.40),
            ("mlp", 0.01, 0, "ok", 0.60, 0.50, 0.60),
            ("mlp", 0.01, 1, "ok", 0.61, 0.51, 0.60),
            ("mlp", 0.01, 2, "ok", 0.62, 0.52, 0.60),
        ]
    )


def test_a_lower_is_better_metric_chooses_the_lowest_validation_mean(regression):
    best = best_of(regression, "val_mse", "test_mse", REGRESSION).set_index("arch")
    assert best.loc["cnn", "lr"] == 0.1 and best.loc["mlp", "lr"] == 0.1
    assert best.loc["cnn", "val_mse_mean"] == pytest.approx(0.32)
    assert "lr=0.3 (mean val_mse 0.1000, 1 of 2 seeds lost)" in best.loc["cnn", "passed_over"]
    assert best.loc["mlp", "passed_over"] == ""
    assert list(best.reset_index().columns) == [
        "arch", "lr", "n", "n_runs", "n_diverged", "complete", "val_mse_mean", "val_mse_sd",
        "test_mse_mean", "test_mse_sd", "test_mse_ci95_low", "test_mse_ci95_high",
        "passed_over",
    ]  # fmt: skip


def test_selection_follows_the_select_metric_not_the_headline(regression):
    # On r2 (higher is better) cnn's lr=0.01 and mlp's lr=0.01 lead, where mse chose lr=0.1.
    best = best_of(regression, "val_r2", "test_mse", REGRESSION).set_index("arch")
    assert best.loc["cnn", "lr"] == 0.01 and best.loc["mlp", "lr"] == 0.01
    assert "val_r2_mean" in best.columns and "val_mse_mean" not in best.columns


def test_a_lower_is_better_criterion_asks_the_better_side_to_be_lower(regression):
    best = best_of(regression, "val_mse", "test_mse", REGRESSION)
    table = stats.compare(regression, best, AXES, "test_mse")
    row = table.iloc[0]
    assert (row["metric"], row["arch_a"], row["arch_b"]) == ("test_mse", "cnn", "mlp")
    assert row["diff"] == pytest.approx((-0.10 - 0.11 - 0.10) / 3)  # a - b, as ever

    def criterion(better, worse, min_diff):
        return {"better": better, "worse": worse, "min_diff": min_diff, "metric": "test_mse"}

    lower = stats.evaluate_criterion(table, criterion("cnn", "mlp", 0.05), 0.05, REGRESSION)
    assert lower["met"] is True and lower["diff"] < 0
    assert lower["statement"].startswith(
        "Success criterion MET: cnn beats mlp by at least 0.05 in test_mse (lower is better) "
        "at Holm-adjusted p < 0.05; observed difference (cnn - mlp) -0.1033"
    )
    # Lower by 0.10, not by 0.2; and mlp, the higher error, beats cnn by nothing.
    assert (
        stats.evaluate_criterion(table, criterion("cnn", "mlp", 0.2), 0.05, REGRESSION)["met"]
        is False
    )
    reverse = stats.evaluate_criterion(table, criterion("mlp", "cnn", 0), 0.05, REGRESSION)
    assert reverse["met"] is False and reverse["diff"] > 0


def test_one_latex_escape_serves_the_report_and_compare():
    from reprogrid.analysis import reporting
    from reprogrid.commands import compare

    text = "a$b{c}d\\e%f&g#h_i~j^k±"
    escaped = (
        "a\\$b\\{c\\}d\\textbackslash{}e\\%f\\&g\\#h\\_i\\textasciitilde{}j"
        "\\textasciicircum{}k$\\pm$"
    )
    assert reporting.latex_escape(text) == escaped
    table = reporting.latex_table(pd.DataFrame({text: [text]}), text, "tab:x")
    assert table.count(escaped) == 3  # the header, the cell and the caption
    shown = compare.Table([text], [[text]], [[text]], [text])
    assert compare.formatted(shown, "latex").count(escaped) == 2


def test_summary_tables_name_each_metric_and_its_direction(regression):
    from reprogrid.analysis import reporting

    summary = stats.summarise(regression, AXES, REGRESSION)
    shown = reporting.summary_display(summary, AXES, 0.95, REGRESSION)
    assert list(shown.columns)[4:] == [
        "val_mse (lower is better)", "val_r2 (higher is better)",
        "test_mse (lower is better)", "test_r2 (higher is better)",
        "test_mse 95% CI", "test_r2 95% CI",
    ]  # fmt: skip
    best = best_of(regression, "val_mse", "test_mse", REGRESSION)
    table = stats.compare(regression, best, AXES, "test_mse")
    compared = reporting.comparisons_display(table, 0.95, REGRESSION, "test_mse")
    assert compared["diff A-B in test_mse (lower is better)"].tolist() == ["-0.1033"]


def test_learning_curves_have_a_panel_per_metric_and_split_labelled_by_direction():
    from reprogrid.analysis import plots

    history = pd.DataFrame(
        [
            {"run": f"arch=mlp/lr=0.1/seed={seed}", "arch": "mlp", "lr": 0.1, "seed": seed,
             "epoch": epoch, "train_loss": 1 / epoch, "val_mse": 1 / epoch, "test_mse": 1 / epoch,
             "val_r2": epoch / 3, "test_r2": epoch / 3}
            for seed in (0, 1)
            for epoch in (1, 2, 3)
        ]
    )  # fmt: skip
    figure = plots.learning_curves(history, AXES, REGRESSION)
    assert [ax.get_title() for ax in figure.axes] == [
        "val_mse (lower is better)", "val_r2 (higher is better)",
        "test_mse (lower is better)", "test_r2 (higher is better)",
        "train_loss (lower is better)",
    ]  # fmt: skip
    curve = plots.run_curve(history[history["seed"] == 0], "one run", REGRESSION)
    assert [ax.get_ylabel() for ax in curve.axes] == ["mse", "r2", "training loss"]


def test_mixed_code_versions_are_flagged():
    frame = pd.DataFrame(
        {
            "run": ["a", "b", "c"],
            "commit": ["1" * 40, "2" * 40, "1" * 40],
            "dirty": [False, True, False],
        }
    )
    versions = stats.code_versions(frame)
    assert versions["mixed"] is True
    assert versions["dirty_runs"] == ["b"]
    assert "2 different commits" in versions["warning"]
    clean = stats.code_versions(frame.assign(commit="1" * 40, dirty=False))
    assert clean["mixed"] is False and clean["warning"] is None


def test_a_setting_that_lost_seeds_is_not_chosen_over_one_that_kept_them():
    runs = runs_frame(
        [
            ("cnn", 0.1, 0, "ok", 0.90, 0.80),
            ("cnn", 0.1, 1, "ok", 0.92, 0.82),
            # The better validation mean, over the two seeds that survived.
            ("cnn", 0.3, 0, "ok", 0.95, 0.90),
            ("cnn", 0.3, 1, "diverged", None, None),
            ("mlp", 0.1, 0, "ok", 0.88, 0.60),
            ("mlp", 0.1, 1, "ok", 0.91, 0.61),
        ]
    )
    best = best_of(runs).set_index("arch")
    assert best.loc["cnn", "lr"] == 0.1
    assert bool(best.loc["cnn", "complete"]) is True
    assert "lr=0.3" in best.loc["cnn", "passed_over"]
    assert "1 of 2 seeds lost" in best.loc["cnn", "passed_over"]
    assert best.loc["mlp", "passed_over"] == ""
    (warning,) = stats.selection_warnings(best.reset_index(), AXES)
    assert warning.startswith("cnn: chose lr=0.1, whose seeds all finished, over lr=0.3")


def test_where_every_setting_lost_seeds_the_choice_is_marked_incomplete():
    runs = runs_frame(
        [
            ("cnn", 0.1, 0, "ok", 0.90, 0.80),
            ("cnn", 0.1, 1, "diverged", None, None),
            ("cnn", 0.3, 0, "ok", 0.95, 0.90),
            ("cnn", 0.3, 1, "diverged", None, None),
            ("mlp", 0.1, 0, "ok", 0.88, 0.60),
            ("mlp", 0.1, 1, "ok", 0.91, 0.61),
        ]
    )
    best = best_of(runs).set_index("arch")
    assert best.loc["cnn", "lr"] == 0.3
    assert bool(best.loc["cnn", "complete"]) is False
    assert best.loc["cnn", "n_diverged"] == 1
    (warning,) = stats.selection_warnings(best.reset_index(), AXES)
    assert "cnn: every setting lost seeds; chose lr=0.3 with 1 of 2 seeds finished" in warning


def test_criterion_with_fewer_than_two_runs_on_a_side_is_not_decided():
    runs = runs_frame(
        [
            ("cnn", 0.1, 0, "ok", 0.95, 0.80),
            ("cnn", 0.1, 1, "ok", 0.96, 0.82),
            ("mlp", 0.1, 0, "ok", 0.88, 0.60),
            ("mlp", 0.1, 1, "diverged", None, None),
        ]
    )
    best = best_of(runs)
    table = stats.compare(runs, best, AXES, "test_acc")
    result = stats.evaluate_criterion(
        table, {"better": "cnn", "worse": "mlp", "metric": "test_acc"}, 0.05, METRICS
    )
    assert result["met"] is None
    assert result["statement"].startswith("Not decided: ")
    assert "NOT MET" not in result["statement"]
    assert "cnn has 2 and mlp 1 finished run(s)" in result["statement"]


def test_runs_made_at_another_commit_than_the_checkout_are_named():
    frame = pd.DataFrame(
        {
            "run": [f"arch=cnn/lr=0.1/seed={seed}" for seed in range(8)],
            "commit": ["a" * 40] * 7 + ["b" * 40],
            "dirty": [False] * 8,
        }
    )
    versions = stats.code_versions(frame, {"commit": "b" * 40, "dirty": False})
    assert versions["runs_not_at_checkout"] == [f"arch=cnn/lr=0.1/seed={s}" for s in range(7)]
    warning = versions["warning"]
    assert "7 run(s) were made at another commit than the one checked out now (bbbbbbbbbbbb)" in (
        warning
    )
    assert "arch=cnn/lr=0.1/seed=4 and 2 more" in warning
    assert "snakemake --forcerun train" in warning
    same = frame.assign(commit="b" * 40)
    assert stats.code_versions(same, {"commit": "b" * 40, "dirty": False})["warning"] is None
    dirty_now = stats.code_versions(same, {"commit": "b" * 40, "dirty": True})["warning"]
    assert "the checkout has uncommitted changes now" in dirty_now


@pytest.mark.workflow
def test_summary_and_report_warn_when_runs_are_not_at_the_commit_checked_out(tmp_path, raw_dir):
    from conftest import git, git_project, snakemake, tiny_grid, write_config

    folder = git_project(tmp_path / "project")
    config = tiny_grid(
        raw_dir, grid={"seed": [0, 1], "arch": ["mlp"], "lr": [0.003]}, analysis={"criterion": None}
    )
    configfile = str(write_config(tmp_path, config))
    conclusion = folder / "results/tiny/summary/conclusion.json"
    summary_md = folder / "reports/tiny/summary.md"
    provenance_html = folder / "reports/tiny/provenance.html"
    targets = [str(p.relative_to(folder)) for p in (conclusion, summary_md, provenance_html)]
    snakemake(folder, "--cores", "2", *targets, "--configfile", configfile)
    assert json.loads(conclusion.read_text())["code_versions"]["warning"] is None

    (folder / "NOTES.md").write_text("A later commit.\n")
    git(folder, "add", "NOTES.md")
    git(folder, "commit", "--quiet", "-m", "a later commit")
    snakemake(
        folder, "--cores", "2", *targets, "--configfile", configfile, "--forcerun", "aggregate"
    )
    head = git(folder, "rev-parse", "HEAD").strip()
    versions = json.loads(conclusion.read_text())["code_versions"]
    runs = ["arch=mlp/lr=0.003/seed=0", "arch=mlp/lr=0.003/seed=1"]
    assert versions["checkout"] == {"commit": head, "dirty": False}
    assert versions["runs_not_at_checkout"] == runs
    expected = f"2 run(s) were made at another commit than the one checked out now ({head[:12]})"
    for text in (versions["warning"], summary_md.read_text(), provenance_html.read_text()):
        assert expected in text
        assert ", ".join(runs) in text
        assert "snakemake --forcerun train" in text


def test_the_report_shows_an_undecided_criterion_and_the_selection_warnings():
    from reprogrid.analysis import reporting

    conclusion = {
        "criterion": {"met": None, "statement": "Not decided: cnn beats mlp; add seeds."},
        "selection": ["cnn: every setting lost seeds; chose lr=0.3."],
        "code_versions": {"warning": None},
        "runs": 4,
        "ok": 3,
        "diverged": 1,
    }
    body = reporting.conclusion_html(conclusion)
    assert "<p class=''>Not decided: cnn beats mlp; add seeds.</p>" in body
    assert "<p class='warning'>cnn: every setting lost seeds; chose lr=0.3.</p>" in body


def test_the_reproduction_guide_names_the_versions_and_threads_the_runs_recorded():
    from conftest import valid_record
    from reprogrid.analysis import reporting

    records = {}
    for seed in (0, 1):
        record = valid_record()
        record["run"] = f"arch=mlp/lr=0.003/seed={seed}"
        record["config"]["train"]["seed"] = seed
        record["config"]["resources"]["threads"] = 3
        record["machine"]["python"] = "3.12.4"
        record["packages"] = {"torch": "2.3.0+cpu", "torchvision": "0.18.0", "numpy": "2.0.1"}
        records[record["run"]] = provenance.from_dict(record)
    config = {key: {} for key in ("experiment", "data", "grid", "search", "train", "analysis")}
    guide = reporting.reproduction_guide(config, records, pd.DataFrame({"n": [2]}))
    assert "Python 3.12.4, torch 2.3.0+cpu, torchvision 0.18.0, 3 thread(s) per run" in guide
    assert ".venv/bin/pip install torch==2.3.0+cpu torchvision==0.18.0 -e ." in guide
    assert provenance.install_command(list(records.values())) in guide
    assert "snakemake --cores 3 --configfile reproduce.yaml" in guide
    assert "2.14.1" not in guide
    assert "--cores 8" not in guide


def test_the_reproduction_guide_says_when_runs_recorded_different_versions():
    from conftest import valid_record
    from reprogrid.analysis import reporting

    records = {}
    for seed, torch_version, threads in ((0, "2.3.0", 1), (1, "2.4.1", 2)):
        record = valid_record()
        record["run"] = f"arch=mlp/lr=0.003/seed={seed}"
        record["config"]["train"]["seed"] = seed
        record["config"]["resources"]["threads"] = threads
        record["packages"]["torch"] = torch_version
        records[record["run"]] = provenance.from_dict(record)
    config = {key: {} for key in ("experiment", "data", "grid", "search", "train", "analysis")}
    guide = reporting.reproduction_guide(config, records, pd.DataFrame({"n": [2]}))
    assert "torch 2.3.0 or 2.4.1 (the runs differ)" in guide
    assert "1 or 2 thread(s) per run" in guide
    assert "snakemake --cores 2 --configfile" in guide


def test_aggregating_a_run_recorded_by_an_older_reprogrid_fails_in_one_line(
    tmp_path, monkeypatch, caplog
):
    from reprogrid.jobs.analysis import aggregate_job
    from reprogrid.plan import paths

    monkeypatch.chdir(tmp_path)
    run = "arch=mlp/lr=0.003/seed=0"
    folder = tmp_path / paths.run_dir("tiny", run)
    folder.mkdir(parents=True)
    (folder / "metrics.json").write_text(json.dumps({"status": "ok"}))
    old = {"run": run, "seed": 0, "commit": None, "config": {"train": {"seed": 0}}}
    (folder / "provenance.json").write_text(json.dumps(old))
    status = aggregate_job(
        run_files=[(run, paths.files_in(paths.run_dir("tiny", run)))], axes=["arch", "lr"],
        metrics=METRICS.directions, select_metric="val_acc", analysis={}, repo=str(tmp_path),
        outputs={},
    )  # fmt: skip
    assert status == 1
    assert [r.getMessage() for r in caplog.records] == [
        f"reprogrid: {paths.run_dir('tiny', run)}/provenance.json: is a record of no `format`, "
        f"not of format {provenance.FORMAT} (an older reprogrid's run?); "
        "train the run again with this code"
    ]
