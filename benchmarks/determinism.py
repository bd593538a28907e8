"""What deterministic mode costs: the same run with train.deterministic true and false.

Trains one run (by default the cnn on Fashion-MNIST, one epoch, one thread) `--repeats` times
in each mode, alternating the modes so that a change in machine load hits both alike, and
prints the training seconds of every repeat, the medians, the slowdown and whether the modes
and the repeats give byte-identical weights.

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

from reprogrid import checkpoint, data, training

DEFAULTS = {
    "seed": 0,
    "lr": 0.001,
    "batch_size": 128,
    "optimizer": "adam",
    "momentum": 0.9,
    "weight_decay": 0.0,
    "schedule": "constant",
    "step_gamma": 0.7,
    "label_smoothing": 0.0,
    "select_metric": "val_acc",
    "eval_batch_size": 2000,
    "max_batches": None,
}


def timed_run(prepared, cfg, threads: int, device: str, folder: Path) -> tuple[float, str]:
    """Seconds spent training (evaluation included) and the sha256 of the weights file."""
    (folder / "checkpoint.pt").unlink(missing_ok=True)
    tick = time.perf_counter()
    result = training.train_one_run(
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
        {"arch": cfg["arch"], "num_classes": prepared["num_classes"], "state_dict": result.weights}
    )
    return seconds, hashlib.sha256(weights).hexdigest()


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

    with tempfile.TemporaryDirectory() as scratch:
        folder = Path(scratch)
        data.prepare(args.dataset, args.raw_dir, folder / "prepared.pt")
        prepared = data.load_prepared(folder / "prepared.pt")
        seconds: dict[bool, list[float]] = {True: [], False: []}
        hashes: dict[bool, set[str]] = {True: set(), False: set()}
        for repeat in range(args.repeats):
            for deterministic in (True, False) if repeat % 2 == 0 else (False, True):
                cfg = {
                    **DEFAULTS,
                    "arch": args.arch,
                    "epochs": args.epochs,
                    "deterministic": deterministic,
                }
                took, sha = timed_run(prepared, cfg, args.threads, args.device, folder)
                seconds[deterministic].append(took)
                hashes[deterministic].add(sha)
                print(
                    f"repeat {repeat + 1} deterministic={deterministic}: {took:.2f} s", flush=True
                )

    on, off = statistics.median(seconds[True]), statistics.median(seconds[False])
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
                "seconds_deterministic": [round(s, 2) for s in seconds[True]],
                "seconds_nondeterministic": [round(s, 2) for s in seconds[False]],
                "median_deterministic": round(on, 2),
                "median_nondeterministic": round(off, 2),
                "slowdown_percent": round((on / off - 1) * 100, 1),
                "repeats_identical_deterministic": len(hashes[True]) == 1,
                "repeats_identical_nondeterministic": len(hashes[False]) == 1,
                "modes_identical": hashes[True] == hashes[False],
            },
            indent=2,
        )
    )


if __name__ == "__main__":
    main()
