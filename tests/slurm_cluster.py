"""A throwaway one-node Slurm cluster on 127.0.0.1, for tests and for trying the profile by hand.

Everything lives in one folder: slurm.conf, a private munge key and socket, state, spool and
logs. Clients find the cluster through SLURM_CONF, and the daemons listen on free ports, so
it never touches a system Slurm or munge, and two test sessions on one machine do not meet.
One shim: the executor plugin's job step drops every SLURM_* variable, SLURM_CONF included,
before its inner `srun` (real sites keep slurm.conf at the default path), so this cluster's
`bin/srun` puts SLURM_CONF back and runs the real srun.
Slurm starts jobs as the submitting user only when slurmd runs as root, hence the root check.

By hand: `python tests/slurm_cluster.py /tmp/cluster` starts it and prints the SLURM_CONF to
export; Ctrl-C or SIGTERM stops it.
"""

from __future__ import annotations

import os
import shutil
import signal
import socket
import subprocess
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path

SBIN_PATH = os.pathsep.join([os.environ.get("PATH", ""), "/usr/sbin", "/usr/local/sbin"])
PROGRAMS = ("munged", "slurmctld", "slurmd", "sbatch", "squeue", "sinfo", "scancel", "srun")
PARTITION = "debug"
NODE = "node1"


def find_program(name: str) -> str | None:
    """The path of a Slurm or munge program, looking in the sbin folders too."""
    return shutil.which(name, path=SBIN_PATH)


def unavailable_reason() -> str | None:
    """Why a test cluster cannot start here, or None when it can."""
    missing = [name for name in PROGRAMS if find_program(name) is None]
    if missing:
        return (
            f"Slurm is not installed (no {', '.join(missing)}); "
            "`.ci/install-system` installs slurmctld slurmd slurm-client munge as root"
        )
    if os.geteuid() != 0:
        return "not root: slurmd must run as root to start jobs, so no test cluster here"
    return None


def _free_ports(count: int) -> list[int]:
    """Ports free right now, all different (the probes stay bound until all are chosen)."""
    probes = [socket.socket() for _ in range(count)]
    try:
        for probe in probes:
            probe.bind(("127.0.0.1", 0))
        return [probe.getsockname()[1] for probe in probes]
    finally:
        for probe in probes:
            probe.close()


def _memory_mb() -> int:
    for line in Path("/proc/meminfo").read_text().splitlines():
        if line.startswith("MemTotal:"):
            return int(line.split()[1]) // 1024
    raise RuntimeError("no MemTotal in /proc/meminfo")


def slurm_conf(folder: Path, cpus: int, memory_mb: int) -> str:
    """The configuration of a one-node cluster whose files all live in `folder`."""
    host = socket.gethostname().split(".")[0]
    controller_port, node_port = _free_ports(2)
    return f"""\
ClusterName=reprogrid
SlurmctldHost={host}(127.0.0.1)
SlurmctldPort={controller_port}
SlurmdPort={node_port}
SlurmUser=root
SlurmdUser=root
AuthType=auth/munge
CredType=cred/munge
AuthInfo=socket={folder}/munge.socket
StateSaveLocation={folder}/state
SlurmdSpoolDir={folder}/spool
SlurmctldPidFile={folder}/slurmctld.pid
SlurmdPidFile={folder}/slurmd.pid
SlurmctldLogFile={folder}/slurmctld.log
SlurmdLogFile={folder}/slurmd.log
ProctrackType=proctrack/linuxproc
TaskPlugin=task/none
SelectType=select/cons_tres
SelectTypeParameters=CR_Core_Memory
SchedulerType=sched/backfill
AccountingStorageType=accounting_storage/none
JobAcctGatherType=jobacct_gather/none
JobCompType=jobcomp/none
MpiDefault=none
ReturnToService=2
MinJobAge=600
KillWait=10
NodeName={NODE} NodeHostname={host} NodeAddr=127.0.0.1 CPUs={cpus} RealMemory={memory_mb} \
State=UNKNOWN
PartitionName={PARTITION} Nodes={NODE} Default=YES MaxTime=INFINITE State=UP
"""


@dataclass
class Cluster:
    """A running test cluster: its folder, the environment its clients need, its daemons."""

    folder: Path
    partition: str = PARTITION
    daemons: list[subprocess.Popen] = field(default_factory=list)

    @property
    def path(self) -> str:
        """The PATH of this cluster's clients: its srun shim first, then the system's."""
        return os.pathsep.join([str(self.folder / "bin"), SBIN_PATH])

    @property
    def env(self) -> dict[str, str]:
        """This process's environment plus SLURM_CONF and the cluster's PATH."""
        return {**os.environ, "SLURM_CONF": str(self.folder / "slurm.conf"), "PATH": self.path}

    def run(self, *args: str) -> str:
        """Run a Slurm client command against this cluster; its standard output."""
        return subprocess.run(
            [find_program(args[0]) or args[0], *args[1:]],
            env=self.env,
            capture_output=True,
            text=True,
            check=True,
            timeout=30,
        ).stdout

    def logs(self) -> str:
        """The tail of each daemon log, for a failure message."""
        parts = []
        for name in ("munged.log", "slurmctld.log", "slurmd.log"):
            path = self.folder / name
            if path.is_file():
                tail = "\n".join(path.read_text(errors="replace").splitlines()[-20:])
                parts.append(f"== {name}\n{tail}")
        return "\n".join(parts)

    def _start(self, *command: str) -> None:
        output = (self.folder / f"{Path(command[0]).name}.out").open("w")
        self.daemons.append(
            subprocess.Popen(
                command, env=self.env, stdout=output, stderr=subprocess.STDOUT, cwd=self.folder
            )
        )
        output.close()

    def _wait_until_idle(self, timeout: float) -> None:
        deadline = time.monotonic() + timeout
        state = ""
        while time.monotonic() < deadline:
            dead = [proc.args[0] for proc in self.daemons if proc.poll() is not None]
            if dead:
                raise RuntimeError(f"{', '.join(dead)} exited at start\n{self.logs()}")
            try:
                state = self.run("sinfo", "--noheader", "--format=%T").strip()
            except subprocess.SubprocessError:
                state = ""
            if state == "idle":
                return
            time.sleep(0.5)
        raise RuntimeError(f"node not idle after {timeout:.0f} s (state {state!r})\n{self.logs()}")

    def stop(self) -> None:
        """Cancel every job, then stop the daemons this cluster started; safe to call twice."""
        if any(proc.poll() is None for proc in self.daemons[1:]):
            try:
                self.run("scancel", "--full", f"--partition={self.partition}")
                deadline = time.monotonic() + 20
                while self.run("squeue", "--noheader").strip() and time.monotonic() < deadline:
                    time.sleep(0.5)
            except subprocess.SubprocessError:
                pass  # a cluster that cannot answer has no jobs left to wait for
        for proc in reversed(self.daemons):
            if proc.poll() is None:
                proc.send_signal(signal.SIGTERM)
                try:
                    proc.wait(timeout=15)
                except subprocess.TimeoutExpired:
                    proc.kill()
                    proc.wait()
        self.daemons.clear()


def start_cluster(folder: str | Path, timeout: float = 60) -> Cluster:
    """Start munged, slurmctld and slurmd in `folder`; return once the node takes jobs.

    The node gets this machine's CPUs and 90 % of its memory (slurmd drains a node that
    claims more than it has). On failure everything started is stopped again.
    """
    folder = Path(folder).resolve()
    for part in ("state", "spool"):
        (folder / part).mkdir(parents=True, exist_ok=True)
    folder.chmod(0o700)
    key = folder / "munge.key"
    key.write_bytes(os.urandom(1024))
    key.chmod(0o400)
    conf = slurm_conf(folder, os.cpu_count() or 1, int(_memory_mb() * 0.9))
    (folder / "slurm.conf").write_text(conf)
    shim = folder / "bin" / "srun"
    shim.parent.mkdir(exist_ok=True)
    shim.write_text(f'#!/bin/sh\nSLURM_CONF={folder}/slurm.conf exec {find_program("srun")} "$@"\n')
    shim.chmod(0o755)
    cluster = Cluster(folder)
    try:
        cluster._start(
            find_program("munged"),
            "--foreground",
            "--force",
            f"--socket={folder}/munge.socket",
            f"--key-file={key}",
            f"--pid-file={folder}/munged.pid",
            f"--log-file={folder}/munged.log",
            f"--seed-file={folder}/munged.seed",
        )
        deadline = time.monotonic() + 10
        while not (folder / "munge.socket").exists() and time.monotonic() < deadline:
            time.sleep(0.1)
        cluster._start(find_program("slurmctld"), "-D", "-c", "-i")
        cluster._start(find_program("slurmd"), "-D", "-N", NODE)
        cluster._wait_until_idle(timeout)
    except BaseException:
        cluster.stop()
        raise
    return cluster


if __name__ == "__main__":
    if reason := unavailable_reason():
        sys.exit(reason)
    running = start_cluster(sys.argv[1] if len(sys.argv) > 1 else "slurm-cluster")
    print(f"export SLURM_CONF={running.folder / 'slurm.conf'}  # partition {running.partition}")
    # Handlers, not defaults: a shell starts background jobs with SIGINT ignored.
    for stop_signal in (signal.SIGINT, signal.SIGTERM):
        signal.signal(stop_signal, lambda *_: sys.exit(0))
    try:
        signal.pause()
    finally:
        running.stop()
