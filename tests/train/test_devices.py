"""GPU claiming across real processes: distinct GPUs for concurrent jobs, freed when one dies."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from reprogrid.train import devices

SRC = Path(__file__).resolve().parents[2] / "src"

# A job that claims one of `count` GPUs, says which, and holds it until its stdin closes.
HOLDER = """
import sys
from reprogrid.train.devices import claim_gpu
index, lock = claim_gpu(int(sys.argv[1]), sys.argv[2], poll_seconds=0.02)
print(index, flush=True)
sys.stdin.read()
"""


def start_holder(count: int, lock_dir: Path, visible: str | None = None) -> subprocess.Popen:
    env = {**os.environ, "PYTHONPATH": str(SRC)}
    env.pop("CUDA_VISIBLE_DEVICES", None)
    if visible is not None:
        env["CUDA_VISIBLE_DEVICES"] = visible
    return subprocess.Popen(
        [sys.executable, "-c", HOLDER, str(count), str(lock_dir)],
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        text=True,
        env=env,
    )


def claimed(holder: subprocess.Popen) -> int:
    return int(holder.stdout.readline())


@pytest.fixture
def holders():
    started: list[subprocess.Popen] = []
    yield started
    for holder in started:
        holder.kill()
        holder.wait()
        holder.stdin.close()
        holder.stdout.close()


def test_concurrent_jobs_claim_distinct_gpus(tmp_path, holders):
    holders.extend(start_holder(3, tmp_path) for _ in range(3))
    assert sorted(claimed(holder) for holder in holders) == [0, 1, 2]


def test_a_killed_job_frees_its_gpu_for_a_waiting_one(tmp_path, holders):
    holders.extend(start_holder(2, tmp_path) for _ in range(2))
    indices = [claimed(holder) for holder in holders]
    waiting = start_holder(2, tmp_path)
    holders.append(waiting)
    time.sleep(1.0)
    assert waiting.poll() is None  # both GPUs are held: it waits, it does not share
    victim = holders[0]
    victim.send_signal(signal.SIGKILL)
    victim.wait()
    assert claimed(waiting) == indices[0]


def test_jobs_seeing_different_gpus_lock_by_physical_gpu(tmp_path, holders):
    # GPU 1 of the machine, seen alone, is index 0 of that job, and is still GPU 1's lock.
    only_second = start_holder(1, tmp_path, visible="1")
    holders.append(only_second)
    assert claimed(only_second) == 0
    both = start_holder(2, tmp_path, visible="0,1")
    holders.append(both)
    # Its index 1 is the machine's GPU 1, taken; numbering locks by index would hand it out.
    assert claimed(both) == 0
    assert sorted(p.name for p in tmp_path.iterdir()) == ["gpu0.lock", "gpu1.lock"]


def test_claims_are_kept_per_slurm_job(monkeypatch):
    monkeypatch.delenv("SLURM_JOB_ID", raising=False)
    local = devices.default_lock_dir()
    monkeypatch.setenv("SLURM_JOB_ID", "41")
    first = devices.default_lock_dir()
    monkeypatch.setenv("SLURM_JOB_ID", "42")
    assert len({local, first, devices.default_lock_dir()}) == 3


def test_no_gpu_asked_means_the_cpu_and_no_claim():
    assert devices.select_device(0) == ("cpu", None)
