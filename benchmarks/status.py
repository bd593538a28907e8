"""Time `reprogrid status` on a 10,000-run experiment, as a user runs it.

    .venv/bin/python benchmarks/status.py [--repeats 5] [--json out.json]

A scratch workflow folder gets the project's config/ and schema and a config file whose grid
is 2 archs x 50 learning rates x 100 seeds = 10,000 runs of 10 epochs. Its run folders are
synthesised, not trained: 7,000 done (metrics.json, history.csv, provenance.json), 200
diverged, 500 running (train.log with epoch lines, Snakemake's incomplete marker), 300
failed (train.log ending in a traceback), 2,000 pending (no folder). Measured: the wall
seconds of the whole command (`python -m reprogrid.commands.cli status`, interpreter start
included), one line per run and `--by setting`, output to a file and to a terminal-like
stream with colours (FORCE_COLOR); the median of `--repeats` runs each.
"""

from __future__ import annotations

import argparse
import base64
import json
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import yaml

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO / "src"))

from reprogrid.plan import paths  # noqa: E402
from reprogrid.record import (  # noqa: E402
    atomic,
    logs,
)

EXPERIMENT = "bench"
ARCHS = ["mlp", "cnn"]
LRS = [round(0.0001 * (i + 1), 4) for i in range(50)]
SEEDS = list(range(100))
EPOCHS = 10
# A finished run's curve and a record of a run's size (status checks how each ends).
HISTORY = "epoch,train_loss,val_acc\n" + "".join(f"{k},0.3,0.9\n" for k in range(1, EPOCHS + 1))
RECORD = atomic.json_text({"format": 4, "packages": {f"package{i}": "1.0" for i in range(190)}})


def synthesise(root: Path) -> Path:
    """A workflow folder with a 10,000-run grid in every state; its config file."""
    shutil.copytree(REPO / "config", root / "config")
    (root / "workflow/schemas").mkdir(parents=True)
    shutil.copy(REPO / "workflow/schemas/config.schema.yaml", root / "workflow/schemas")
    config = root / "bench.yaml"
    grid = {"arch": ARCHS, "lr": LRS, "seed": SEEDS}
    config.write_text(
        yaml.safe_dump({"experiment": EXPERIMENT, "grid": grid, "train": {"epochs": EPOCHS}})
    )
    stamp = time.strftime(logs.TIME_FORMAT) + ",000"
    incomplete = root / ".snakemake/incomplete"
    incomplete.mkdir(parents=True)
    runs = [f"arch={a}/lr={lr!r}/seed={s}" for a in ARCHS for lr in LRS for s in SEEDS]
    for index, run in enumerate(runs):
        folder = root / paths.run_dir(EXPERIMENT, run)
        kind = index % 100
        if kind >= 80:
            continue  # pending
        folder.mkdir(parents=True)
        if kind < 72:
            status = "diverged" if kind < 2 else "ok"
            metrics = {"status": status, "epochs_run": EPOCHS, "train_seconds": 31.5}
            (folder / "metrics.json").write_text(json.dumps(metrics))
            (folder / "history.csv").write_text(HISTORY)
            (folder / paths.PROVENANCE).write_text(RECORD)
            continue
        attempt = f"{stamp} INFO {logs.ATTEMPT_LINE % (f'{index:012x}', run, 'cpu', 1)}\n"
        epochs = "".join(
            f"{stamp} INFO "
            + logs.EPOCH_LINE
            % (
                k,
                EPOCHS,
                0.3,
                "val_acc 0.9000 val_loss 0.9000",
                3.1,
                logs.duration(3.1 * (EPOCHS - k)),
            )
            + "\n"
            for k in range(1, 4)
        )
        if kind < 77:
            (folder / paths.TRAIN_LOG).write_text(attempt + epochs)
            output = paths.run_file(EXPERIMENT, run, "metrics.json")
            name = base64.urlsafe_b64encode(output.encode()).decode()
            (incomplete / name).write_text('{"external_jobid": null}')
            os.utime(folder / paths.TRAIN_LOG)
        else:
            error = (
                f"{stamp} CRITICAL the job failed with an uncaught exception\n"
                "Traceback (most recent call last):\n"
                '  File "train.py", line 1, in <module>\n'
                "RuntimeError: CUDA out of memory\n"
            )
            (folder / paths.TRAIN_LOG).write_text(attempt + epochs + error)
    return config


def time_status(root: Path, config: Path, args: list[str], colour: bool, repeats: int) -> float:
    """Median wall seconds of `reprogrid status` in `root`."""
    env = {**os.environ, "PYTHONPATH": str(REPO / "src"), "COLUMNS": "150"}
    if colour:
        env["FORCE_COLOR"] = "1"
    times = []
    for _ in range(repeats):
        tick = time.perf_counter()
        done = subprocess.run(
            [
                sys.executable,
                "-m",
                "reprogrid.commands.cli",
                "status",
                "--configfile",
                str(config),
                *args,
            ],
            cwd=root,
            env=env,
            capture_output=True,
            text=True,
        )
        times.append(time.perf_counter() - tick)
        if done.returncode != 0:
            sys.exit(f"status failed: {done.stderr}")
    return statistics.median(times)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--json", help="write the results here too")
    args = parser.parse_args()
    with tempfile.TemporaryDirectory(prefix="reprogrid-status-") as scratch:
        root = Path(scratch)
        config = synthesise(root)
        results = {
            f"{view} {'terminal' if colour else 'file'}": time_status(
                root, config, extra, colour, args.repeats
            )
            for view, extra in (("per run", []), ("by setting", ["--by", "setting"]))
            for colour in (False, True)
        }
    for name, seconds in results.items():
        print(f"{name:<22} {seconds:.2f} s")
    if args.json:
        Path(args.json).write_text(json.dumps(results, indent=2) + "\n")


if __name__ == "__main__":
    main()
