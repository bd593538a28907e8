"""The audit: a fixed sample of stored runs is retrained and compared bit for bit; it passes on
a fresh grid, shows in the report, and fails naming the run whose weights were altered."""

from __future__ import annotations

import html
import io
import json
import re

import pandas as pd
import pytest
import torch

from conftest import copy_project, snakemake, tiny_grid, write_config
from reprogrid.analysis import audit
from reprogrid.plan import paths
from reprogrid.train import checkpoint

RUNS = [f"arch=mlp/lr=0.003/seed={seed}" for seed in range(3)]


def test_the_sample_is_fixed_bounded_and_drawn_from_the_grid():
    first = audit.sample_runs(RUNS, 2)
    assert first == audit.sample_runs(reversed(RUNS), 2)
    assert len(first) == 2
    assert set(first) <= set(RUNS)
    assert audit.sample_runs(RUNS, 10) == sorted(RUNS)


def write_run(folder, metrics, history):
    folder.mkdir(parents=True)
    (folder / "metrics.json").write_text(json.dumps(metrics))
    (folder / "history.csv").write_text(history)


def test_results_compare_bit_for_bit_except_timing(tmp_path):
    metrics = {"status": "ok", "test_acc": 0.8125, "train_seconds": 1.5}
    history = "epoch,test_acc,epoch_seconds\n1,0.8125,1.5\n"
    write_run(tmp_path / "a", metrics, history)
    write_run(tmp_path / "b", {**metrics, "train_seconds": 9.0}, history.replace("1.5", "9.0"))
    write_run(tmp_path / "c", {**metrics, "test_acc": 0.8125000000000001}, history)
    write_run(tmp_path / "d", metrics, history.replace("0.8125,", "0.8126,"))
    stored = paths.files_in(tmp_path / "a")
    assert audit.same_results(stored, paths.files_in(tmp_path / "b"))
    assert not audit.same_results(stored, paths.files_in(tmp_path / "c"))
    assert not audit.same_results(stored, paths.files_in(tmp_path / "d"))


def test_the_failure_message_is_one_line_naming_every_failed_run():
    message = audit.failure_message(["arch=cnn/lr=0.1/seed=0", "arch=mlp/lr=0.1/seed=2"], "t.html")
    assert "\n" not in message
    assert "arch=cnn/lr=0.1/seed=0, arch=mlp/lr=0.1/seed=2" in message
    assert message.endswith("see t.html")


@pytest.fixture(scope="module")
def audited(tmp_path_factory, raw_dir):
    """A fresh three-run grid, audited once and reported; what the audit wrote, kept aside."""
    base = tmp_path_factory.mktemp("audit")
    folder = copy_project(base / "project")
    config = tiny_grid(
        raw_dir,
        grid={"seed": [0, 1, 2], "arch": ["mlp"], "lr": [0.003]},
        analysis={"criterion": None, "audit_runs": 2},
    )
    configfile = str(write_config(base, config))
    result = snakemake(folder, "--cores", "2", "audit", "--configfile", configfile)
    snakemake(folder, "--report", "report.html", "audit", "--configfile", configfile)
    audit_dir = folder / "results/tiny/audit"
    return {
        "folder": folder,
        "configfile": configfile,
        "stderr": result.stderr,
        "table": pd.read_csv(audit_dir / "audit.csv"),
        "passed": (audit_dir / "passed.txt").exists(),
        "report": (folder / "report.html").read_text(encoding="utf-8"),
    }


@pytest.mark.workflow
def test_the_audit_passes_on_a_fresh_grid(audited):
    table = audited["table"]
    assert list(table.columns[:4]) == ["run", "weights_identical", "metrics_identical", "passed"]
    assert list(table["run"]) == audit.sample_runs(RUNS, 2)
    assert table["weights_identical"].all()
    assert table["metrics_identical"].all()
    assert table["passed"].all()
    assert (table["stored_sha256"] == table["retrained_sha256"]).all()
    assert audited["passed"]
    scratch = audited["folder"] / "results/tiny/audit/scratch"
    assert sorted(
        p.parent.relative_to(scratch).as_posix() for p in scratch.rglob("model.pt")
    ) == list(table["run"])


@pytest.mark.workflow
def test_the_report_shows_the_audit_under_reproduction(audited):
    # The report's categories, as Snakemake embeds them: category -> subcategory -> paths.
    found = re.search(r"var categories = (\{.*\});", audited["report"])
    categories = json.loads(html.unescape(found.group(1)))
    shown = [path for paths in categories["Reproduction"].values() for path in paths]
    assert "results/tiny/audit/audit.html" in shown


@pytest.mark.workflow
def test_an_altered_weights_file_fails_the_audit_naming_the_run(audited):
    folder, configfile = audited["folder"], audited["configfile"]
    altered, untouched = audit.sample_runs(RUNS, 2)
    model = folder / "results/tiny/runs" / altered / "model.pt"
    stored = torch.load(io.BytesIO(model.read_bytes()), weights_only=True)
    first = next(iter(stored["state_dict"]))
    stored["state_dict"][first].view(-1)[0] += 1e-6
    model.write_bytes(checkpoint.to_bytes(stored))

    result = snakemake(folder, "--cores", "2", "audit", "--configfile", configfile, check=False)
    assert result.returncode != 0
    output = result.stdout + result.stderr
    assert f"audit failed: 1 run(s) did not reproduce bit for bit: {altered};" in output
    table = pd.read_csv(folder / "results/tiny/audit/audit.csv").set_index("run")
    assert not table.loc[altered, "weights_identical"]
    assert not table.loc[altered, "passed"]
    assert table.loc[altered, "metrics_identical"]  # only the weights file was touched
    assert table.loc[untouched, "passed"]
    assert not (folder / "results/tiny/audit/passed.txt").exists()
