"""The fixed cost of a training job, two versions of reprogrid side by side.

    .venv/bin/python benchmarks/fixed_cost.py --baseline 1943711

Both versions (git revisions of this checkout; the candidate defaults to HEAD) are exported
into fresh git checkouts of their own in a temporary folder, so both pay the same git calls.
Each trains the `mlp` runs of the default grid (6 runs of ~3 s on Fashion-MNIST) one job at a
time (`--cores 1`), the two versions alternating, `--repeats` times each. The fixed cost of a
job is what its Snakemake call spends beyond training:

    (wall - sum of train_seconds - wall of the same call with nothing to do) / jobs

which counts Snakemake's handling of each job, the interpreter, imports, provenance and
writing outputs, and leaves out Snakemake's own start and end. The load average is recorded
beside every call.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import statistics
import subprocess
import sys
import tarfile
import tempfile
import time
from io import BytesIO
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parents[1]
BIN = Path(sys.executable).parent
RUNS = [f"arch=mlp/lr={lr}/seed={seed}" for seed in (0, 1, 2) for lr in ("0.001", "0.003")]


def export(revision: str, into: Path) -> str:
    """A fresh one-commit git checkout of `revision` at `into`; the revision's short hash."""
    commit = subprocess.run(
        ["git", "-C", str(REPO), "rev-parse", "--short", revision],
        check=True,
        capture_output=True,
        text=True,
    ).stdout.strip()
    archive = subprocess.run(
        ["git", "-C", str(REPO), "archive", "--format=tar", commit], check=True, capture_output=True
    ).stdout
    into.mkdir(parents=True)
    with tarfile.open(fileobj=BytesIO(archive)) as tar:
        tar.extractall(into, filter="data")
    for args in (
        ["init", "-q"],
        ["add", "-A"],
        ["-c", "user.name=bench", "-c", "user.email=bench@localhost", "commit", "-qm", commit],
    ):
        subprocess.run(["git", "-C", str(into), *args], check=True, capture_output=True)
    return commit


def snakemake(tree: Path, work: Path, *args: str) -> float:
    """Run the Snakefile of `tree` in `work`; its wall-clock seconds."""
    env = {**os.environ, "PATH": f"{BIN}{os.pathsep}{os.environ.get('PATH', '')}"}
    env.pop("PYTHONPATH", None)
    tick = time.perf_counter()
    result = subprocess.run(
        [sys.executable, "-m", "snakemake", "-s", str(tree / "Snakefile"), "-d", str(work), *args],
        env=env,
        capture_output=True,
        text=True,
    )
    wall = time.perf_counter() - tick
    if result.returncode != 0:
        sys.exit(
            f"snakemake {' '.join(args)} failed:\n{result.stdout[-3000:]}{result.stderr[-3000:]}"
        )
    return wall


def targets() -> list[str]:
    return [f"results/default/runs/{run}/metrics.json" for run in RUNS]


def train_seconds(work: Path) -> float:
    return sum(json.loads((work / target).read_text())["train_seconds"] for target in targets())


def one_round(tree: Path, work: Path, config: list[str]) -> dict[str, Any]:
    """Train the mlp runs from nothing, then time the same call with nothing left to do."""
    shutil.rmtree(work / "results", ignore_errors=True)
    load = os.getloadavg()[0]
    wall = snakemake(tree, work, *targets(), "--cores", "1", *config)
    trained = train_seconds(work)
    idle = snakemake(tree, work, *targets(), "--cores", "1", *config)
    return {
        "load": load,
        "wall": wall,
        "train_seconds": trained,
        "idle_wall": idle,
        "fixed_per_job": (wall - trained - idle) / len(RUNS),
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--baseline", required=True, help="git revision to compare against")
    parser.add_argument("--candidate", default="HEAD", help="git revision measured")
    parser.add_argument("--raw-dir", default="/usr/share/datasets/fashion-mnist")
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--json", type=Path, help="also write the results here")
    args = parser.parse_args()

    config = ["--config", f"data={{dataset: fashion-mnist, raw_dir: {args.raw_dir}}}"]
    results: dict[str, Any] = {"started": time.strftime("%Y-%m-%d %H:%M:%S"), "rounds": []}
    with tempfile.TemporaryDirectory(prefix="reprogrid-fixed-") as scratch:
        versions = {}
        for role in ("baseline", "candidate"):
            tree = Path(scratch) / role / "tree"
            commit = export(getattr(args, role), tree)
            work = Path(scratch) / role / "work"
            snakemake(tree, work, "--cores", "1", "--until", "prepare_data", *config)
            versions[role] = (tree, work)
            results[role] = commit
        for repeat in range(args.repeats):
            for role, (tree, work) in versions.items():
                measured = {"version": role, "repeat": repeat, **one_round(tree, work, config)}
                results["rounds"].append(measured)
                print(json.dumps(measured), file=sys.stderr, flush=True)
    for role in versions:
        costs = [r["fixed_per_job"] for r in results["rounds"] if r["version"] == role]
        results[f"{role}_median"] = statistics.median(costs)
    results["ratio"] = results["candidate_median"] / results["baseline_median"]
    print(
        f"fixed cost per job: {results['baseline']} {results['baseline_median']:.2f} s, "
        f"{results['candidate']} {results['candidate_median']:.2f} s "
        f"({results['ratio']:.2f}x), medians of {args.repeats}"
    )
    print(json.dumps(results, indent=1))
    if args.json:
        args.json.write_text(json.dumps(results, indent=1))


if __name__ == "__main__":
    main()
