"""The Snakemake glue in workflow/glue.py: a debug run's claim on the debug folders."""

from __future__ import annotations

import os
import sys

import pytest

from conftest import REPO
from reprogrid.config.errors import ConfigError

sys.path.insert(0, str(REPO / "workflow"))
import glue


def test_a_debug_claim_excludes_a_second_one(tmp_path):
    lock = tmp_path / ".snakemake/reprogrid-debug.lock"
    held = glue.claim_debug_outputs(lock)
    # flock claims belong to an open file, so a second open in this process counts as another run.
    with pytest.raises(ConfigError, match="another debug run is running"):
        glue.claim_debug_outputs(lock)
    held.close()
    glue.claim_debug_outputs(lock).close()


def test_clearing_deletes_only_the_debug_folders(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    kept = [tmp_path / "results/default/runs/x", tmp_path / "logs/default"]
    cleared = [
        tmp_path / "results/debug/runs/x",
        tmp_path / "reports/debug",
        tmp_path / "logs/debug",
    ]
    for folder in kept + cleared:
        folder.mkdir(parents=True)
    glue.clear_debug_outputs()
    assert all(folder.is_dir() for folder in kept)
    assert not any(folder.exists() for folder in cleared)


def test_the_pythonpath_gets_the_checkout_first_once(monkeypatch):
    monkeypatch.setenv("PYTHONPATH", "/elsewhere")
    glue.export_pythonpath("/checkout/src")
    glue.export_pythonpath("/checkout/src")
    assert os.environ["PYTHONPATH"] == "/checkout/src" + os.pathsep + "/elsewhere"


def test_the_image_is_named_to_the_jobs_only_while_rules_run_in_one(monkeypatch):
    monkeypatch.setenv("REPROGRID_CONTAINER", "docker://stale@sha256:00")
    glue.export_container("docker://example.org/reprogrid@sha256:ab")
    assert os.environ["REPROGRID_CONTAINER"] == "docker://example.org/reprogrid@sha256:ab"
    glue.export_container(None)
    assert "REPROGRID_CONTAINER" not in os.environ
