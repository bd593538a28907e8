"""Behaviour pinned to the byte: the default grid's weights and metrics on generated data.

`tests/golden/default_grid.json` was written by the code before the training story was split
into named steps (issue "One owner per concept"); any change that alters a single weight or
metric of the default grid fails here. Float kernels differ between CPU instruction sets, so
the bytes are kept per capability torch dispatches to (`torch.backends.cpu.
get_cpu_capability()`: AVX512 recorded on the machine that wrote the file first, AVX2 written
by that same code on an AVX2 machine); a capability with no entry is skipped, saying so.
Regenerate it only for a change meant to alter results: `python tests/workflow/test_golden.py`
rewrites this machine's entry, and the commit says why.
"""

from __future__ import annotations

import hashlib
import json
import sys
from pathlib import Path

import pytest
import torch

import idxdata
from conftest import copy_project, snakemake, write_config

pytestmark = pytest.mark.workflow

GOLDEN = Path(__file__).resolve().parents[1] / "golden" / "default_grid.json"
# Seconds are the only thing a run records that depends on the machine's load.
TIMING_KEYS = ("train_seconds",)


def fingerprint(results: Path) -> dict[str, dict]:
    """Per run: sha256 of model.pt and history.csv less its seconds, and the metrics."""
    runs = {}
    for metrics_file in sorted(results.glob("runs/**/metrics.json")):
        run_dir = metrics_file.parent
        run = str(run_dir.relative_to(results / "runs"))
        metrics = json.loads(metrics_file.read_text())
        history = [
            line.rsplit(",", 1)[0] for line in (run_dir / "history.csv").read_text().splitlines()
        ]
        runs[run] = {
            "model_sha256": hashlib.sha256((run_dir / "model.pt").read_bytes()).hexdigest(),
            "history_sha256": hashlib.sha256("\n".join(history).encode()).hexdigest(),
            "metrics": {k: v for k, v in metrics.items() if k not in TIMING_KEYS},
        }
    return runs


def run_default_grid(folder: Path) -> dict[str, dict]:
    """The default grid of config/config.yaml, trained on a small generated data set."""
    project = copy_project(folder / "project")
    raw = idxdata.write_dataset(folder / "raw", n_train=1200, n_test=300, noise=220)
    config = write_config(project, {"data": {"raw_dir": str(raw), "verify": False}})
    snakemake(project, "aggregate", "--cores", "2", "--configfile", str(config))
    return fingerprint(project / "results" / "default")


def capability() -> str:
    """The CPU instruction set torch's float kernels dispatch to on this machine."""
    return torch.backends.cpu.get_cpu_capability()


def test_default_grid_weights_and_metrics_are_unchanged(tmp_path):
    golden = json.loads(GOLDEN.read_text())
    if golden["torch"] != torch.__version__:
        pytest.skip(f"golden bytes were recorded with torch {golden['torch']}")
    if capability() not in golden["cpu"]:
        pytest.skip(f"no golden bytes for CPU capability {capability()} (run this file to add)")
    expected_runs = golden["cpu"][capability()]
    found = run_default_grid(tmp_path)
    assert sorted(found) == sorted(expected_runs)
    for run, expected in expected_runs.items():
        assert found[run] == expected, run


if __name__ == "__main__":
    import tempfile

    with tempfile.TemporaryDirectory() as scratch:
        runs = run_default_grid(Path(scratch))
    recorded = json.loads(GOLDEN.read_text()) if GOLDEN.is_file() else {}
    by_cpu = recorded.get("cpu", {}) if recorded.get("torch") == torch.__version__ else {}
    by_cpu[capability()] = runs
    GOLDEN.parent.mkdir(exist_ok=True)
    GOLDEN.write_text(json.dumps({"torch": torch.__version__, "cpu": by_cpu}, indent=1) + "\n")
    sys.exit(0)
