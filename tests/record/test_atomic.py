"""Atomic writes: whole files only, the umask's mode, a synced folder, no stale temporaries."""

from __future__ import annotations

import os
import signal
import stat
import subprocess
import sys
from pathlib import Path

import pytest

from conftest import small_disk
from reprogrid.record import atomic

REPO = Path(__file__).resolve().parents[2]

# A writer that stops inside an atomic write, its temporary file written but not yet renamed.
WRITER = """
import sys, time
from reprogrid.record import atomic
with atomic.atomic_path(sys.argv[1]) as tmp:
    tmp.write_text("half of it")
    print(tmp, flush=True)
    time.sleep(600)
"""


@pytest.mark.parametrize(("umask", "mode"), [(0o002, 0o664), (0o022, 0o644), (0o077, 0o600)])
def test_files_get_the_mode_the_umask_allows(tmp_path, umask, mode):
    previous = os.umask(umask)
    try:
        atomic.write_text(tmp_path / "a.txt", "text")
        atomic.write_json(tmp_path / "b.json", {"a": 1})
        atomic.write_bytes(tmp_path / "sub" / "c.bin", b"\0")
    finally:
        os.umask(previous)
    for name in ("a.txt", "b.json", "sub/c.bin"):
        assert stat.S_IMODE((tmp_path / name).stat().st_mode) == mode, name


def test_the_file_and_then_its_folder_are_synced(tmp_path, monkeypatch):
    synced = []
    real_fsync = os.fsync

    def recording_fsync(fd):
        synced.append(os.readlink(f"/proc/self/fd/{fd}"))
        real_fsync(fd)

    monkeypatch.setattr(os, "fsync", recording_fsync)
    atomic.write_text(tmp_path / "out.txt", "text")
    assert len(synced) == 2
    assert Path(synced[0]).parent == tmp_path and Path(synced[0]).name.endswith(".tmp")
    assert synced[1] == str(tmp_path)


def start_writer(target: Path) -> tuple[subprocess.Popen, Path]:
    env = {**os.environ, "PYTHONPATH": str(REPO / "src")}
    writer = subprocess.Popen(
        [sys.executable, "-c", WRITER, str(target)], stdout=subprocess.PIPE, text=True, env=env
    )
    return writer, Path(writer.stdout.readline().strip())


def test_temporaries_of_killed_writers_go_and_those_of_live_writers_stay(tmp_path):
    target = tmp_path / "metrics.json"
    killed, killed_tmp = start_writer(target)
    live, live_tmp = start_writer(target)
    try:
        killed.send_signal(signal.SIGKILL)
        killed.wait()
        assert killed_tmp.exists() and live_tmp.exists()
        assert f".{killed.pid}." in killed_tmp.name
        elsewhere = tmp_path / ".metrics.json.otherhost.1.0000.tmp"
        elsewhere.write_text("a writer on another node")
        other_target = tmp_path / ".metrics.json.x.tmp"
        other_target.write_text("not ours to judge")

        atomic.write_json(target, {"ok": True})

        assert target.read_text() == '{\n  "ok": true\n}\n'
        assert not killed_tmp.exists()
        assert live_tmp.exists()
        assert elsewhere.exists() and other_target.exists()
    finally:
        live.kill()
        live.wait()


def test_a_failed_write_leaves_the_old_file_and_no_temporary(tmp_path):
    target = tmp_path / "out.txt"
    atomic.write_text(target, "old")
    with pytest.raises(RuntimeError), atomic.atomic_path(target) as tmp:
        tmp.write_text("new, half")
        raise RuntimeError("writer failed")
    assert target.read_text() == "old"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["out.txt"]


# A job that writes more than its disk holds, as a training job writes its outputs.
FILLER = """
import sys
from reprogrid.record import atomic
from reprogrid.record.logs import setup_logging
setup_logging(sys.argv[2])
atomic.write_bytes(sys.argv[1], bytes(400_000))
"""


def test_a_full_disk_leaves_the_old_file_and_no_temporary_and_names_the_disk(tmp_path):
    with small_disk(tmp_path / "disk", "200k") as disk:
        target = disk / "model.pt"
        atomic.write_bytes(target, b"old")
        with pytest.raises(atomic.DiskFull) as full:
            atomic.write_bytes(target, bytes(400_000))
        assert str(full.value) == (
            f"no space left on the disk holding {target} (nothing of it was written); "
            "free space and run again"
        )
        assert target.read_bytes() == b"old"
        assert sorted(p.name for p in disk.iterdir()) == ["model.pt"]


def test_a_job_that_fills_its_disk_says_so_in_one_line_without_a_traceback(tmp_path):
    log = tmp_path / "job.log"
    with small_disk(tmp_path / "disk", "200k") as disk:
        target = disk / "metrics.json"
        env = {**os.environ, "PYTHONPATH": str(REPO / "src")}
        result = subprocess.run(
            [sys.executable, "-c", FILLER, str(target), str(log)],
            env=env,
            capture_output=True,
            text=True,
        )
        assert list(disk.iterdir()) == []
    assert result.returncode == 1
    assert result.stdout == ""
    (line,) = result.stderr.splitlines()
    assert line.endswith(
        f"ERROR reprogrid: no space left on the disk holding {target} (nothing of it was "
        "written); free space and run again"
    )
    assert log.read_text().splitlines() == [line]


def test_a_job_whose_log_is_on_the_full_disk_says_so_in_one_line_on_screen(tmp_path):
    with small_disk(tmp_path / "disk", "200k") as disk:
        # Another program filled the disk: the job's log lines cannot be written there either.
        with pytest.raises(OSError, match="No space left"), open(disk / "other", "wb") as other:
            other.write(bytes(400_000))
        target, log = disk / "metrics.json", disk / "train.log"
        env = {**os.environ, "PYTHONPATH": str(REPO / "src")}
        result = subprocess.run(
            [sys.executable, "-c", FILLER, str(target), str(log)],
            env=env,
            capture_output=True,
            text=True,
        )
        assert sorted(p.name for p in disk.iterdir()) == ["other", "train.log"]
    assert result.returncode == 1
    (line,) = result.stderr.splitlines()
    assert f" ERROR reprogrid: no space left on the disk holding {target} (" in line
