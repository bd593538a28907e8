"""`reprogrid status` and `reprogrid compare`: a grid watched while Snakemake trains it, a
failed run named with its error, experiments compared with the summary's own numbers, the
screen as a user sees it in tmux, and bad input refused in one line."""

from __future__ import annotations

import csv
import json
import logging
import os
import shutil
import subprocess
import sys
import time
from pathlib import Path

import pytest

from conftest import (
    IDX_TASK,
    REPO,
    assert_one_line_error,
    copy_project,
    reprogrid,
    small_grid,
    snakemake,
    train_params,
    train_run,
    valid_record,
    write_config,
)
from reprogrid.commands import snakeconfig, status
from reprogrid.jobs.train import EpochLog
from reprogrid.record import atomic, logs
from reprogrid.train import training

FAILS = "arch=mlp/lr=0.01/seed=0"
# An epoch line's metrics, as training writes them for the task's validation columns.
VAL = "val_acc 0.8000 val_loss 0.8000"


def test_status_and_compare_start_without_torch_or_pandas():
    code = (
        "import sys, reprogrid.commands.cli; "
        "print(sorted(m for m in ('torch', 'pandas', 'scipy') if m in sys.modules))"
    )
    env = {**os.environ, "PYTHONPATH": str(REPO / "src")}
    out = subprocess.run([sys.executable, "-c", code], env=env, capture_output=True, text=True)
    assert out.stdout.strip() == "[]", out.stderr


def test_compare_asks_each_experiments_task_which_metrics_there_are_and_which_way_is_better():
    from reprogrid.commands import compare
    from reprogrid.tasks.spec import Metrics

    def experiment(name, metrics, errors):
        rows = [
            {"run": f"arch=mlp/lr={lr}/seed=0", "val_mse": str(e), "test_mse": str(e),
             "status": "ok"}
            for lr, e in errors.items()
        ]  # fmt: skip
        params = [{"lr": lr} for lr in errors]
        return compare.Experiment(name, rows, params, [], Metrics(metrics))

    error = experiment("error", {"mse": "min"}, {"0.1": 0.5, "0.2": 0.1, "0.3": 0.3})
    assert compare.chosen_metrics([error], [], None) == (["test_mse", "val_mse"], 1)
    shown, sign = compare.chosen_metrics([error], [], "val_mse")
    assert sign == -1
    table = compare.build(
        [error], shown, runs_only=True, all_params=False, where=[], sort="val_mse", sign=sign
    )
    assert [row[2] for row in table.rows] == ["0.2", "0.3", "0.1"]  # lowest error first
    with pytest.raises(compare.CompareError, match="test_acc: experiment error reports no"):
        compare.chosen_metrics([error], ["test_acc"], None)
    score = experiment("score", {"mse": "max"}, {"0.1": 0.5})
    with pytest.raises(compare.CompareError, match="disagree on which way it is better"):
        compare.chosen_metrics([error, score], [], "val_mse")


def test_config_values_are_read_as_snakemake_reads_them():
    values = snakeconfig.parse_config_values(
        ["experiment=tiny", "debug=True", "train={epochs: 2}", "lr=1e-3", "name="]
    )
    assert values == {
        "experiment": "tiny",
        "debug": True,
        "train": {"epochs": "2"},
        "lr": 0.001,
        "name": None,
    }


def test_a_log_is_read_from_its_last_attempt(tmp_path):
    log = tmp_path / "train.log"
    stamp = "2025-01-02 03:04:05,006"
    log.write_text(
        f"{stamp} INFO {logs.ATTEMPT_LINE % ('j', 'r', 'cpu', 1)}\n"
        f"{stamp} CRITICAL the job failed with an uncaught exception\n"
        "Traceback (most recent call last):\n"
        '  File "x.py", line 1, in <module>\n'
        "OSError: an earlier attempt\n"
        f"{stamp} INFO {logs.ATTEMPT_LINE % ('j', 'r', 'cpu', 1)}\n"
        f"{stamp} INFO " + logs.EPOCH_LINE % (3, 10, 0.5, VAL, 12.5, logs.duration(88)) + "\n"
        f"{stamp} INFO {logs.PROGRESS_LINE % (4, 10, 7, 20, 31, logs.duration(60))}\n"
    )
    tail = status.read_log(log)
    assert tail.error is None
    assert (tail.epoch, tail.epoch_seconds, tail.batch) == (3, (12.5,), (7, 20))


def test_progress_is_logged_without_changing_a_result(prepared, tmp_path, monkeypatch, caplog):
    params = train_params(arch="mlp", lr=0.01, epochs=2, batch_size=64, seed=0)
    quiet = train_run(prepared, tmp_path / "quiet", params)
    # Every batch counts as a long epoch's 30 s here.
    monkeypatch.setattr(training, "PROGRESS_SECONDS", 0.0)
    with caplog.at_level(logging.INFO, logger="reprogrid"):
        loud = train_run(
            prepared, tmp_path / "loud", params, on_epoch=EpochLog(2, IDX_TASK.metrics)
        )
    messages = [record.getMessage() for record in caplog.records]
    progress = [logs.PROGRESS.match(m) for m in messages if logs.PROGRESS.match(m)]
    epochs = [logs.EPOCH.match(m) for m in messages if logs.EPOCH.match(m)]
    assert [(m[1], m[2]) for m in epochs] == [("1", "2"), ("2", "2")]
    assert progress[0].groups()[:3] == ("1", "2", "1")
    assert progress[-1].groups()[:2] == ("2", "2")
    assert progress[-1][3] == progress[-1][4]  # the last batch of n is batch n
    assert "run ETA 0 s" in [m for m in messages if logs.EPOCH.match(m)][-1]
    timing = ("train_seconds",)
    assert {k: v for k, v in loud.metrics.items() if k not in timing} == {
        k: v for k, v in quiet.metrics.items() if k not in timing
    }
    assert all(loud.weights[k].equal(quiet.weights[k]) for k in quiet.weights)


@pytest.fixture
def grid_project(tmp_path, raw_dir) -> tuple[Path, Path]:
    """A project with a grid of three runs, one of them bound to fail."""
    folder = copy_project(tmp_path / "project")
    config = small_grid(raw_dir, arch=["cnn", "mlp"], lr=[0.003, 0.01], seed=[0])
    config["train"] = {"epochs": 6, "batch_size": 32}
    config = write_config(tmp_path, config)
    # A checkpoint path the job cannot write: its first save fails, for real.
    (folder / "results/tiny/runs" / FAILS / "checkpoint.pt").mkdir(parents=True)
    return folder, config


def status_of(folder: Path, config: Path, *args: str) -> subprocess.CompletedProcess:
    return reprogrid("status", "--configfile", str(config), *args, cwd=folder)


@pytest.mark.workflow
def test_status_follows_a_grid_while_snakemake_trains_it(grid_project):
    folder, config = grid_project
    targets = [f"results/tiny/runs/arch={a}/lr={lr}/seed=0/metrics.json"
               for a in ("cnn", "mlp") for lr in ("0.003", "0.01")]  # fmt: skip
    before = status_of(folder, config)
    assert before.returncode == 0, before.stderr
    assert before.stdout.count(" pending ") == 4
    job = subprocess.Popen(
        [sys.executable, "-m", "snakemake", "--cores", "1", "--keep-going", *targets,
         "--configfile", str(config)],
        cwd=folder, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
    )  # fmt: skip
    seen = []
    try:
        while job.poll() is None:
            shown = status_of(folder, config).stdout
            running = [line for line in shown.splitlines() if " running " in line]
            if running and not running[0].split()[2].startswith("0/"):
                seen = running
                break
            time.sleep(0.2)
    finally:
        assert job.wait(timeout=600) != 0  # the one run bound to fail fails
    assert seen, "no running run with an epoch done was ever shown"
    assert seen[0].split()[2] in {f"{k}/6" for k in range(1, 6)}
    after = status_of(folder, config, "--cores", "1")
    lines = {line.split()[0]: line for line in after.stdout.splitlines() if "=" in line}
    assert all(" done " in lines[run] for run in lines if run != FAILS)
    assert " failed " in lines[FAILS]
    assert "IsADirectoryError" in lines[FAILS]
    assert "3 done, 1 failed" in after.stdout
    by_setting = status_of(folder, config, "--by", "setting").stdout
    assert "arch=cnn/lr=0.003 " in by_setting and "1 done" in by_setting


def test_a_watch_started_while_snakemake_plans_waits_for_it(tmp_path, raw_dir):
    """Snakemake takes its lock only once it has planned (minutes for a large grid): a watch
    started before sees nothing at work, and must wait for the work, not end at once."""
    folder = copy_project(tmp_path / "project")
    config = write_config(tmp_path, small_grid(raw_dir, arch=["mlp"], lr=[0.01], seed=[0]))
    watch = subprocess.Popen(
        [sys.executable, "-m", "reprogrid.commands.cli", "status", "--configfile", str(config),
         "--watch", "--interval", "0.1"],
        cwd=folder, env={**os.environ, "PYTHONPATH": str(REPO / "src")},
        stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True,
    )  # fmt: skip
    lock = folder / ".snakemake/locks/0.input.lock"
    try:
        time.sleep(3)
        assert watch.poll() is None, watch.communicate()[1]
        lock.parent.mkdir(parents=True)
        lock.write_text("")  # Snakemake has planned and works...
        time.sleep(1)
        assert watch.poll() is None, watch.communicate()[1]
        lock.unlink()  # ...and ends, its run left to train: the watch ends with it
        assert watch.wait(timeout=30) == 0, watch.communicate()[1]
    finally:
        if watch.poll() is None:
            watch.kill()
            watch.wait()


@pytest.mark.workflow
@pytest.mark.skipif(shutil.which("tmux") is None, reason="tmux is not installed")
def test_the_screen_a_user_sees_in_tmux(grid_project, tmp_path):
    folder, config = grid_project
    shutil.rmtree(folder / "results/tiny/runs" / FAILS)
    snakemake(folder, "--cores", "1", "results/tiny/runs/arch=mlp/lr=0.003/seed=0/metrics.json",
              "--configfile", str(config))  # fmt: skip
    session = f"reprogrid-status-{os.getpid()}"
    command = (
        f"cd {folder} && PYTHONPATH={REPO / 'src'} {sys.executable} "
        "-m reprogrid.commands.cli status "
        f"--configfile {config}; sleep 60"
    )
    subprocess.run(["tmux", "new-session", "-d", "-s", session, "-x", "150", "-y", "20", command],
                   check=True)  # fmt: skip
    try:
        deadline = time.monotonic() + 60
        screen = ""
        while "runs:" not in screen and time.monotonic() < deadline:
            time.sleep(0.3)
            screen = subprocess.run(["tmux", "capture-pane", "-p", "-t", session],
                                    capture_output=True, text=True).stdout  # fmt: skip
    finally:
        subprocess.run(["tmux", "kill-session", "-t", session], check=False)
    rows = [line.split() for line in screen.splitlines() if line.strip()]
    assert rows[0] == ["run", "state", "epoch", "s/epoch", "ETA", "note"]
    assert rows[3][:3] == ["arch=mlp/lr=0.003/seed=0", "done", "6/6"]
    assert rows[1] == ["arch=cnn/lr=0.003/seed=0", "pending", "0/6"]
    assert "tiny: 4 runs: 1 done, 3 pending; epochs 6/24 (25%); ETA" in screen


@pytest.fixture(scope="module")
def two_experiments(tmp_path_factory, raw_dir) -> Path:
    """A project where experiments `tiny` and `wide` are trained and summarised."""
    root = tmp_path_factory.mktemp("compare")
    folder = copy_project(root / "project")
    for name, lrs in (("tiny", [0.001, 0.003]), ("wide", [0.01])):
        config = small_grid(raw_dir, arch=["mlp"], lr=lrs, seed=[0, 1])
        config["experiment"] = name
        path = write_config(root, config, f"{name}.yaml")
        snakemake(folder, "--cores", "2", f"results/{name}/summary/summary.csv",
                  "--configfile", str(path))  # fmt: skip
    return folder


def read_rows(text: str) -> list[dict[str, str]]:
    return list(csv.DictReader(text.splitlines()))


@pytest.mark.workflow
def test_compare_shows_the_summaries_own_means(two_experiments):
    folder = two_experiments
    result = reprogrid("compare", "tiny", "wide", "--format", "csv", cwd=folder)
    assert result.returncode == 0, result.stderr
    rows = read_rows(result.stdout)
    assert [(row["experiment"], row["lr"]) for row in rows] == [
        ("tiny", "0.001"),
        ("tiny", "0.003"),
        ("wide", "0.01"),
    ]
    assert "arch" not in rows[0]  # the same in every row
    for row in rows:
        summary = read_rows(
            (folder / f"results/{row['experiment']}/summary/summary.csv").read_text()
        )
        mine = next(line for line in summary if line["lr"] == row["lr"])
        for column in ("test_acc_mean", "test_acc_sd", "val_acc_ci95_low", "n", "n_diverged"):
            assert float(row[column]) == float(mine[column])
    best = reprogrid("compare", "tiny", "wide", "--format", "csv", "--sort", "val_acc",
                     "--where", "arch=mlp", cwd=folder)  # fmt: skip
    means = [float(row["val_acc_mean"]) for row in read_rows(best.stdout)]
    assert means == sorted(means, reverse=True)
    only = read_rows(reprogrid("compare", "tiny", "wide", "--format", "csv", "--where",
                               "lr=0.01", "--runs", cwd=folder).stdout)  # fmt: skip
    assert [row["run"] for row in only] == ["arch=mlp/lr=0.01/seed=0", "arch=mlp/lr=0.01/seed=1"]
    markdown = reprogrid("compare", "tiny", "--format", "markdown", cwd=folder).stdout
    assert markdown.splitlines()[0].startswith("| experiment | lr | test_acc mean ± sd |")
    latex = reprogrid("compare", "tiny", "--format", "latex", cwd=folder).stdout
    assert "\\begin{tabular}" in latex and "$\\pm$" in latex


@pytest.mark.workflow
def test_compare_names_a_stale_summary(two_experiments):
    folder = two_experiments
    metrics = folder / "results/wide/runs/arch=mlp/lr=0.01/seed=1/metrics.json"
    later = time.time() + 5
    os.utime(metrics, (later, later))
    result = reprogrid("compare", "wide", cwd=folder)
    assert result.returncode == 0
    assert "results/wide/summary/summary.csv is stale (1 run(s) finished after it" in result.stderr
    assert "wide" in result.stdout  # one setting: no parameter differs, the experiment shows


@pytest.mark.workflow
def test_bad_input_ends_in_one_line(two_experiments):
    folder = two_experiments
    assert_one_line_error(
        reprogrid("compare", "tiny", "nothing", cwd=folder), "no results for experiment"
    )
    assert_one_line_error(
        reprogrid("compare", "tiny", "--where", "width=3", cwd=folder), "--where width: no such"
    )
    assert_one_line_error(
        reprogrid("status", "--config", "experiment=nosuch", cwd=folder), "experiment"
    )


def test_names_no_folder_can_have_end_in_one_line(tmp_path, raw_dir):
    """A name too long for a folder made the lookup itself fail, in a traceback."""
    folder = copy_project(tmp_path / "project")
    (folder / "results").mkdir()
    for name, problem in (("x" * 300, "has 300 characters, more than 64"), ("../x", "'/'")):
        assert_one_line_error(reprogrid("compare", name, cwd=folder), problem)
        assert_one_line_error(
            reprogrid("status", "--experiment", name, cwd=folder), "not a valid experiment name"
        )
    config = write_config(tmp_path, small_grid(raw_dir, arch=["mlp"], lr=[0.01], seed=[0]))
    raw = "data={raw_dir: /" + "a" * 5000 + "}"
    assert_one_line_error(
        reprogrid("status", "--configfile", str(config), "--config", raw, cwd=folder),
        "data.raw_dir (set by --config)",
    )


def finish(folder: Path, metrics: dict) -> None:
    """Write a finished run's metrics, a history of a row per epoch, and a record."""
    (folder / "metrics.json").write_text(json.dumps(metrics))
    rows = "".join(f"{epoch},0.5\n" for epoch in range(1, metrics["epochs_run"] + 1))
    (folder / "history.csv").write_text(f"epoch,train_loss\n{rows}")
    (folder / "provenance.json").write_text(atomic.json_text(valid_record()))


def test_the_grid_runs_and_their_states_from_files(tmp_path, monkeypatch):
    """Every state from the files alone, Snakemake's incomplete markers included."""
    monkeypatch.chdir(tmp_path)
    runs = {f"arch=mlp/lr=0.1/seed={seed}": seed for seed in range(5)}
    folders = {run: tmp_path / "results/x/runs" / run for run in runs}
    for folder in list(folders.values())[:4]:
        folder.mkdir(parents=True)
    done, running, queued, stalled, pending = folders
    metrics = {"status": "ok", "epochs_run": 4, "train_seconds": 8.0}
    finish(folders[done], metrics)
    now = time.time()
    stamp = time.strftime(logs.TIME_FORMAT, time.localtime(now - 1)) + ",000"
    epoch = logs.EPOCH_LINE % (1, 4, 0.5, VAL, 3.0, "9 s")
    for run in (running, stalled):
        (folders[run] / "train.log").write_text(f"{stamp} INFO {epoch}\n")
    old = now - 2 * status.SILENT_SECONDS
    os.utime(folders[stalled] / "train.log", (old, old))
    incomplete = tmp_path / ".snakemake/incomplete"
    incomplete.mkdir(parents=True)
    for run in (running, queued, stalled):
        output = f"results/x/runs/{run}/metrics.json"
        marker = incomplete / status.base64.urlsafe_b64encode(output.encode()).decode()
        marker.write_text(json.dumps({"external_jobid": "77" if run == queued else None}))
        os.utime(marker, (old - 1, old - 1))
    markers = status.incomplete_markers()
    states = {
        run: status.run_status(
            run, folders[run], 4, markers.get(f"results/x/runs/{run}/metrics.json"), now
        )
        for run in runs
    }
    assert {run: s.state for run, s in states.items()} == {
        done: "done",
        running: "running",
        queued: "queued",
        stalled: "stalled",
        pending: "pending",
    }
    assert states[running].epoch == 1 and 7.0 <= states[running].eta <= 8.0
    assert states[queued].note == "Slurm job 77"
    assert states[done].seconds_per_epoch == 2.0
