"""What deterministic mode costs: the same run with train.deterministic true and false.

Trains one run (by default the cnn on Fashion-MNIST, one epoch, one thread) `--repeats` times
in each mode (see MODES), rotating their order, and prints the seconds of every repeat, the
medians, the slowdown against the non-deterministic mode and whether the repeats and the
modes give byte-identical weights.

    PYTHONPATH=src .venv/bin/python benchmarks/determinism.py \
        --raw-dir /usr/share/datasets/fashion-mnist --dataset fashion-mnist \
        --arch cnn --epochs 1 --threads 1 --repeats 3
"""

from __future__ import annotations

import argparse
import hashlib
import json
import statistics
import tempfile
import time
from pathlib import Path

import torch

from reprogrid.config import schema as config_schema
from reprogrid.datasets import data
from reprogrid.plan import grid
from reprogrid.tasks import runtime
from reprogrid.train import checkpoint, training

REPO = Path(__file__).resolve().parents[1]
# The schema's training defaults: the run a user gets unless the config says otherwise.
# The built-in IDX task, which the benchmark trains as the train job does.
TASK = runtime.open_task("idx_classification")
DEFAULTS = grid.train_defaults(
    config_schema.load_schema(REPO / "workflow/schemas/config.schema.yaml")
)


def timed_run(prepared, cfg, threads: int, device: str, folder: Path) -> tuple[float, str]:
    """Seconds spent training (evaluation included) and the sha256 of the weights file."""
    (folder / "checkpoint.pt").unlink(missing_ok=True)
    tick = time.perf_counter()
    result = training.train_one_run(
        TASK,
        prepared,
        cfg,
        val_fraction=0.1,
        split_seed=0,
        checkpoint_path=folder / "checkpoint.pt",
        threads=threads,
        device=device,
    )
    seconds = time.perf_counter() - tick
    weights = checkpoint.to_bytes(
        {"arch": cfg["arch"], **TASK.describe(prepared), "state_dict": result.weights}
    )
    return seconds, hashlib.sha256(weights).hexdigest()


# name -> (train.deterministic, torch.utils.deterministic.fill_uninitialized_memory). The third
# mode asks whether the cost is the NaN-filling of every new tensor that deterministic mode adds.
MODES = {
    "deterministic": (True, True),
    "nondeterministic": (False, True),
    "deterministic_nofill": (True, False),
}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--raw-dir", required=True, help="folder with the four IDX files")
    parser.add_argument("--dataset", default="fashion-mnist")
    parser.add_argument("--arch", default="cnn")
    parser.add_argument("--epochs", type=int, default=1)
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--device", default="cpu")
    args = parser.parse_args()

    names = list(MODES)
    seconds: dict[str, list[float]] = {name: [] for name in names}
    hashes: dict[str, set[str]] = {name: set() for name in names}
    with tempfile.TemporaryDirectory() as scratch:
        folder = Path(scratch)
        data.prepare(TASK, args.raw_dir, folder / "prepared.safetensors", dataset=args.dataset)
        prepared = data.load_prepared(folder / "prepared.safetensors")
        for repeat in range(args.repeats):
            # Rotate the order so that a drift in machine load hits every mode alike.
            for name in names[repeat % 3 :] + names[: repeat % 3]:
                deterministic, fill = MODES[name]
                torch.utils.deterministic.fill_uninitialized_memory = fill
                cfg = {
                    **DEFAULTS,
                    "arch": args.arch,
                    "epochs": args.epochs,
                    "deterministic": deterministic,
                }
                took, sha = timed_run(prepared, cfg, args.threads, args.device, folder)
                seconds[name].append(took)
                hashes[name].add(sha)
                print(f"repeat {repeat + 1} {name}: {took:.2f} s", flush=True)

    baseline = statistics.median(seconds["nondeterministic"])
    print(
        json.dumps(
            {
                "arch": args.arch,
                "dataset": args.dataset,
                "epochs": args.epochs,
                "threads": args.threads,
                "device": args.device,
                "torch": torch.__version__,
                "repeats": args.repeats,
                "seconds": {name: [round(s, 2) for s in seconds[name]] for name in names},
                "median_seconds": {
                    name: round(statistics.median(seconds[name]), 2) for name in names
                },
                "slowdown_percent_vs_nondeterministic": {
                    name: round((statistics.median(seconds[name]) / baseline - 1) * 100, 1)
                    for name in names
                },
                "repeats_identical": {name: len(hashes[name]) == 1 for name in names},
                "all_modes_identical": len(set().union(*hashes.values())) == 1,
            },
            indent=2,
        )
    )


if __name__ == "__main__":
    main()
