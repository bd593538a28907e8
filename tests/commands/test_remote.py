"""Copies to and from remote storage with rclone: `snakemake sync`, `reprogrid pull`.

The remotes are real rclone remotes of the local type, defined as a user would define one
without a config file: through RCLONE_CONFIG_<NAME>_TYPE in the environment.
"""

from __future__ import annotations

import shutil
from pathlib import Path

import pytest

from conftest import copy_project, reprogrid, snakemake, tiny_grid, write_config
from reprogrid.commands import remote

pytestmark = pytest.mark.skipif(shutil.which("rclone") is None, reason="rclone is not installed")

RUN = "arch=mlp/lr=0.001/seed=0"


@pytest.fixture
def store(monkeypatch, tmp_path) -> Path:
    """The folder behind the rclone remote `store:` (local type, defined in the environment)."""
    monkeypatch.setenv("RCLONE_CONFIG_STORE_TYPE", "local")
    folder = tmp_path / "store"
    folder.mkdir()
    return folder


def files_under(folder: Path) -> dict[str, tuple[bytes, int]]:
    """Every file under `folder`: its bytes and modification time (ns), by relative path."""
    return {
        str(path.relative_to(folder)): (path.read_bytes(), path.stat().st_mtime_ns)
        for path in sorted(folder.rglob("*"))
        if path.is_file()
    }


# --- reprogrid.commands.remote -------------------------------------------------------------------


def test_copy_copies_once_and_deletes_only_when_asked(store, tmp_path):
    source = tmp_path / "results"
    (source / "runs").mkdir(parents=True)
    (source / "runs/model.pt").write_bytes(b"weights")
    (source / "summary.csv").write_text("a,b\n")
    (source / ".summary.csv.host.1.abc.tmp").write_text("half a write")
    target = f"store:{store}/results"

    first = remote.copy(source, target)
    assert first == remote.Copied(transferred=2, deleted=0)
    copied = files_under(store / "results")
    assert {name: content for name, (content, _) in copied.items()} == {
        "runs/model.pt": b"weights",
        "summary.csv": b"a,b\n",
    }

    assert remote.copy(source, target) == remote.Copied(transferred=0, deleted=0)
    assert files_under(store / "results") == copied  # same bytes, same times: nothing rewritten

    (source / "summary.csv").unlink()
    assert remote.copy(source, target) == remote.Copied(transferred=0, deleted=0)
    assert (store / "results/summary.csv").is_file()
    assert remote.copy(source, target, delete=True) == remote.Copied(transferred=0, deleted=1)
    assert not (store / "results/summary.csv").exists()
    assert (store / "results/runs/model.pt").read_bytes() == b"weights"


def test_check_accepts_a_known_remote_and_a_folder_not_made_yet(store):
    remote.check(f"store:{store}", "sync.remote")
    remote.check(f"store:{store}/not/yet", "sync.remote")


def test_check_refuses_an_unknown_remote_naming_it(store):
    with pytest.raises(remote.RemoteError, match="rclone knows no remote 'nowhere'") as caught:
        remote.check("nowhere:backups", "config key sync.remote (set by test.yaml)")
    assert str(caught.value).startswith("config key sync.remote (set by test.yaml): ")
    assert "RCLONE_CONFIG_NOWHERE_TYPE" in str(caught.value)


def test_check_refuses_an_unreachable_remote_naming_it(monkeypatch):
    # A WebDAV server on a port nobody listens on: rclone knows the remote, cannot reach it.
    monkeypatch.setenv("RCLONE_CONFIG_DEAD_TYPE", "webdav")
    monkeypatch.setenv("RCLONE_CONFIG_DEAD_URL", "http://127.0.0.1:1")
    with pytest.raises(remote.RemoteError, match="rclone cannot reach 'dead:x'") as caught:
        remote.check("dead:x", "sync.remote")
    assert "connection refused" in str(caught.value)
    assert "\n" not in str(caught.value)


@pytest.mark.parametrize("given", ["store,secret=hunter2:x", ":s3,secret_access_key=hunter2:b"])
def test_check_refuses_credentials_in_the_remote_without_showing_them(given):
    with pytest.raises(remote.RemoteError, match="inline parameters") as caught:
        remote.check(given, "sync.remote")
    assert "hunter2" not in str(caught.value)


def test_check_refuses_an_unset_remote():
    with pytest.raises(remote.RemoteError, match=r"sync\.remote is not set"):
        remote.check(None, "sync.remote")


@pytest.mark.parametrize(
    ("base", "joined"),
    [
        ("drive:", "drive:results/x"),
        ("drive:proj", "drive:proj/results/x"),
        ("drive:proj/", "drive:proj/results/x"),
        ("/mnt/store", "/mnt/store/results/x"),
    ],
)
def test_join_puts_the_folder_under_the_remote(base, joined):
    assert remote.join(base, "results/x/") == joined


# --- reprogrid pull -----------------------------------------------------------------------------


def test_pull_copies_raw_data_into_a_folder_and_keeps_local_files(store, raw_dir, tmp_path):
    shutil.copytree(raw_dir, store / "mnist")
    here = tmp_path / "raw"
    here.mkdir()
    (here / "notes.txt").write_text("mine")

    result = reprogrid("pull", f"store:{store}/mnist", str(here))
    assert result.returncode == 0, result.stderr
    assert result.stdout == f"4 files copied from store:{store}/mnist into {here}\n"
    assert {p.name: p.read_bytes() for p in raw_dir.iterdir()} == {
        p.name: p.read_bytes() for p in here.iterdir() if p.name != "notes.txt"
    }
    assert (here / "notes.txt").read_text() == "mine"
    again = reprogrid("pull", f"store:{store}/mnist", str(here))
    assert again.stdout == f"0 files copied from store:{store}/mnist into {here}\n"


def test_pull_from_an_unknown_remote_is_one_line(tmp_path):
    result = reprogrid("pull", "nowhere:mnist", str(tmp_path / "raw"))
    assert result.returncode == 2
    assert result.stdout == ""
    assert result.stderr.count("\n") == 1 and result.stderr.startswith("reprogrid: ")
    assert "reprogrid pull nowhere:mnist: rclone knows no remote 'nowhere'" in result.stderr
    assert not (tmp_path / "raw").exists()


# --- snakemake sync -----------------------------------------------------------------------------


def one_run(raw_dir: Path, **overrides) -> dict:
    return tiny_grid(raw_dir, grid={"seed": [0], "arch": ["mlp"], "lr": [0.001]}, **overrides) | {
        "analysis": {"criterion": None}
    }


@pytest.mark.workflow
def test_sync_pushes_results_and_reports_once_and_deletes_only_when_asked(store, raw_dir, tmp_path):
    project = copy_project(tmp_path / "project")
    config = write_config(project, one_run(raw_dir, sync={"remote": f"store:{store}/lab"}))
    snakemake(project, "sync", "--cores", "2", "--configfile", str(config))

    pushed = files_under(store / "lab")
    for name in ("model.pt", "metrics.json", "provenance.json"):
        local = project / "results/tiny/runs" / RUN / name
        assert pushed[f"results/tiny/runs/{RUN}/{name}"][0] == local.read_bytes()
    assert "results/tiny/summary/summary.csv" in pushed
    assert any(name.startswith("reports/tiny/") for name in pushed)
    assert set(pushed) == {
        f"{folder}/{path.relative_to(project / folder)}"
        for folder in ("results/tiny", "reports/tiny")
        for path in (project / folder).rglob("*")
        if path.is_file()
    }

    # Again with nothing new: nothing copied, nothing rewritten; a file only the remote has stays.
    (store / "lab/results/tiny/from-elsewhere.txt").write_text("keep me")
    pushed = files_under(store / "lab")
    snakemake(project, "sync", "--cores", "2", "--configfile", str(config))
    assert files_under(store / "lab") == pushed
    log = (project / "logs/tiny/sync.log").read_text()
    assert log.count("0 files copied, 0 deleted") == 2, log

    # sync.delete: true makes the remote a mirror of the local folders.
    mirror = write_config(
        project, one_run(raw_dir, sync={"remote": f"store:{store}/lab", "delete": True}), "m.yaml"
    )
    snakemake(project, "sync", "--cores", "2", "--configfile", str(mirror))
    assert not (store / "lab/results/tiny/from-elsewhere.txt").exists()
    assert set(files_under(store / "lab")) == set(pushed) - {"results/tiny/from-elsewhere.txt"}


@pytest.mark.workflow
def test_sync_to_an_unknown_remote_is_one_line_and_runs_nothing(raw_dir, tmp_path):
    project = copy_project(tmp_path / "project")
    config = write_config(project, one_run(raw_dir, sync={"remote": "nowhere:lab"}))
    result = snakemake(project, "sync", "--cores", "2", "--configfile", str(config), check=False)
    output = result.stdout + result.stderr
    assert result.returncode == 1, output
    assert "Traceback" not in output
    ours = [line for line in output.splitlines() if line.startswith("reprogrid:")]
    assert len(ours) == 1 and output.strip().splitlines()[-1] == ours[0], output
    assert "config key sync.remote (set by " in ours[0]
    assert "rclone knows no remote 'nowhere'" in ours[0]
    assert not (project / "results").exists()


@pytest.mark.workflow
def test_sync_is_not_part_of_the_default_target(raw_dir, tmp_path, store):
    project = copy_project(tmp_path / "project")
    config = write_config(project, one_run(raw_dir, sync={"remote": f"store:{store}"}))
    result = snakemake(project, "-n", "--configfile", str(config))
    assert "rule sync" not in result.stdout + result.stderr
