"""Time the MLflow export of a 100-run x 10-epoch grid to a local MLflow tracking server.

    .venv/bin/python benchmarks/tracking.py [--runs 100] [--epochs 10] [--json out.json]

The run folders are synthesised (history.csv, metrics.json, provenance.json as a training
job writes them, seeded random numbers) instead of trained; the export reads them exactly as
the `track` job does. A real `mlflow server` (SQLite store, proxied artifacts) is started on a
free loopback port for the measurement and stopped after. Measured: the first export (every
MLflow run created), an export again (every run unchanged) and one after every history
changed (every run replaced), each in wall seconds.
"""

from __future__ import annotations

import argparse
import json
import os
import random
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO / "src"))
sys.path.insert(0, str(REPO / "tests"))

import mlflow_server  # noqa: E402
from reprogrid import tracking  # noqa: E402
from reprogrid.config import schema as config_schema  # noqa: E402
from reprogrid.plan import grid, paths  # noqa: E402
from reprogrid.record import (  # noqa: E402
    atomic,
    provenance,
)
from reprogrid.tasks import spec as taskspec  # noqa: E402
from reprogrid.tracking import mlflow_export  # noqa: E402
from reprogrid.train import (  # noqa: E402
    devices,
)
from reprogrid.train import outputs as run_outputs  # noqa: E402

EXPERIMENT = "bench"
# The built-in task's metrics, and the learning curve's columns after `epoch`, as it writes them.
METRICS = taskspec.read(taskspec.DEFAULT).metrics
HISTORY_COLUMNS = (
    "train_loss",
    "train_acc",
    *METRICS.columns("val", "test"),
    "lr",
    "epoch_seconds",
)


def synthesise(root: Path, runs: int, epochs: int, seed: int) -> list[Path]:
    """`runs` finished run folders under `root`, as the train job leaves them."""
    schema = config_schema.load_schema(REPO / "workflow/schemas/config.schema.yaml")
    defaults = grid.train_defaults(schema)
    rng = random.Random(seed)
    folders = []
    for index in range(runs):
        train = {**defaults, "arch": ("mlp", "cnn")[index % 2], "lr": 0.001, "seed": index // 2}
        train["epochs"] = epochs
        run = paths.run_id({key: train[key] for key in ("arch", "lr", "seed")}, defaults)
        folder = root / paths.run_dir(EXPERIMENT, run)
        history = [
            {
                "epoch": epoch,
                **{column: rng.random() for column in HISTORY_COLUMNS},
            }
            for epoch in range(1, epochs + 1)
        ]
        best = history[-1]
        outputs = {
            "history.csv": run_outputs.history_csv(history).encode(),
            "metrics.json": atomic.json_text(
                {
                    "status": "ok",
                    **{key: best[key] for key in METRICS.run_keys()},
                    "best_epoch": epochs,
                    "epochs_run": epochs,
                    "train_seconds": sum(row["epoch_seconds"] for row in history),
                }
            ).encode(),
        }
        for name, content in outputs.items():
            atomic.write_bytes(folder / name, content)
        code = {
            "commit": "0" * 40,
            "dirty": False,
            "branch": "main",
            "remote": None,
            "untracked_sources": [],
            "diff": "",
            "fingerprint": "0" * 16,
        }
        provenance.build_record(
            run=run,
            experiment=EXPERIMENT,
            params=train,
            split={"val_fraction": 0.1, "split_seed": 0},
            checks={
                "dataset": "mnist",
                "raw_dir": None,
                "verify": True,
                "raw_sha256": {},
                "prepared_sha256": "f" * 64,
            },
            threads=1,
            gpus=0,
            machine=devices.describe("cpu"),
            code=code,
            code_at_end=code,
            task=provenance.task_record(taskspec.DEFAULT, "idx_classification.py", "0" * 16),
            started="2026-11-26T09:00:00+00:00",
            resumed_from_epoch=None,
            model_parameters=0,
            target=str(folder / "metrics.json"),
            job_id=f"{len(folders):012x}",
            outputs=outputs,
        ).write(folder / "provenance.json")
        folders.append(folder)
    return folders


def timed_export(folders: list[Path], url: str) -> dict[str, Any]:
    """Read and export every run as the track job does; wall seconds and the outcome."""
    tick = time.perf_counter()
    runs = [tracking.load_run(folder) for folder in folders]
    record = mlflow_export.export_runs(
        runs,
        experiment=EXPERIMENT,
        settings={"enabled": True, "tracking_uri": url},
        axes=["seed", "arch", "lr"],
        with_model=False,
    )
    return {"seconds": time.perf_counter() - tick, "runs": len(record["runs"])}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--runs", type=int, default=100)
    parser.add_argument("--epochs", type=int, default=10)
    parser.add_argument("--json", type=Path, help="also write the results here")
    args = parser.parse_args()
    results: dict[str, Any] = {"runs": args.runs, "epochs": args.epochs}
    with tempfile.TemporaryDirectory(prefix="reprogrid-track-bench-") as scratch:
        scratch = Path(scratch)
        (scratch / "store").mkdir()
        with mlflow_server.running(scratch / "store") as url:
            folders = synthesise(scratch / "work", args.runs, args.epochs, seed=0)
            results["first"] = timed_export(folders, url)
            results["again"] = timed_export(folders, url)
            folders = synthesise(scratch / "work", args.runs, args.epochs, seed=1)
            results["recomputed"] = timed_export(folders, url)
    results["load_average"] = os.getloadavg()
    print(f"MLflow export of {args.runs} runs x {args.epochs} epochs to a local server:")
    for name in ("first", "again", "recomputed"):
        print(f"  {name:>10}: {results[name]['seconds']:.1f} s")
    if args.json:
        args.json.write_text(json.dumps(results, indent=2))


if __name__ == "__main__":
    main()
