"""reprogrid on one GPU: the speedrun's time per run, and a 3 x 3 x 3 grid sharing the GPU.

    python benchmarks/gpu.py --raw-dir /usr/share/datasets/fashion-mnist \
        --dataset fashion-mnist --json gpu.json

1. speedrun: the `speedrun` experiment's runs (config/experiments/speedrun.yaml: speedcnn,
   one-cycle Adam, 4 epochs), each seed trained once on the GPU in this process after one
   untimed warm-up run; per run the seconds to 90% test accuracy (cumulative epoch_seconds,
   as benchmarks/run.py reads them), the training seconds and the final test accuracy;
2. grid: seeds {0, 1, 2} x {mlp, cnn, speedcnn} x lr {0.001, 0.003, 0.01}, 3 epochs, every run
   a process of its own (as Snakemake starts them), with 9, 3 and 1 runs on the GPU at once;
   per setting the wall seconds of the whole grid, the summed training seconds and the
   sha256 of every run's weights, which must not depend on how many runs share the GPU.

Training goes through the package (`training.train_one_run`) with the schema's defaults,
deterministic mode included, exactly as a training job runs it; Snakemake is not needed.
"""

from __future__ import annotations

import argparse
import hashlib
import itertools
import json
import subprocess
import sys
import tempfile
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO / "src"))

import yaml  # noqa: E402

from reprogrid.config import schema as config_schema  # noqa: E402
from reprogrid.datasets import data  # noqa: E402
from reprogrid.plan import grid  # noqa: E402
from reprogrid.tasks import runtime  # noqa: E402
from reprogrid.train import (  # noqa: E402
    checkpoint,
    training,
)

# The built-in IDX task, which the benchmark trains as the train job does.
TASK = runtime.open_task("idx_classification")
DEFAULTS = grid.train_defaults(
    config_schema.load_schema(REPO / "workflow/schemas/config.schema.yaml")
)
TARGET = 0.90
GRID = {"seed": [0, 1, 2], "arch": ["mlp", "cnn", "speedcnn"], "lr": [0.001, 0.003, 0.01]}
# Most runs at once first: a time limit then cuts the least telling setting.
SHARING = (9, 3, 1)


def train(prepared_path: str, cfg: dict[str, Any], folder: Path, device: str) -> dict[str, Any]:
    """One run on `device`: its history, training seconds and the sha256 of its weights."""
    prepared = data.load_prepared(prepared_path)
    folder.mkdir(parents=True, exist_ok=True)
    result = training.train_one_run(
        TASK,
        prepared,
        cfg,
        val_fraction=0.1,
        split_seed=0,
        checkpoint_path=folder / "checkpoint.pt",
        threads=1,
        device=device,
    )
    weights = checkpoint.to_bytes(
        {"arch": cfg["arch"], **TASK.describe(prepared), "state_dict": result.weights}
    )
    return {
        "history": result.history,
        "train_seconds": result.metrics["train_seconds"],
        "test_acc": result.metrics["test_acc"],
        "sha256": hashlib.sha256(weights).hexdigest(),
    }


def time_to(history: list[dict[str, Any]], target: float) -> float | None:
    total = 0.0
    for row in history:
        total += row["epoch_seconds"]
        if row["test_acc"] >= target:
            return total
    return None


def speedrun(prepared_path: str, scratch: Path, device: str) -> list[dict[str, Any]]:
    experiment = yaml.safe_load((REPO / "config/experiments/speedrun.yaml").read_text())
    base = {**DEFAULTS, **experiment["train"], "arch": "speedcnn", "lr": 0.003}
    train(prepared_path, {**base, "seed": 99, "epochs": 1}, scratch / "warmup", device)
    results = []
    for seed in experiment["grid"]["seed"]:
        run = train(prepared_path, {**base, "seed": seed}, scratch / f"speedrun-{seed}", device)
        results.append(
            {
                "seed": seed,
                "time_to_90": time_to(run["history"], TARGET),
                "train_seconds": run["train_seconds"],
                "final_test_acc": run["history"][-1]["test_acc"],
            }
        )
        print(f"speedrun seed {seed}: {results[-1]}", file=sys.stderr, flush=True)
    return results


def grid(prepared_path: str, scratch: Path, at_once: int, device: str) -> dict[str, Any]:
    points = [dict(zip(GRID, values, strict=True)) for values in itertools.product(*GRID.values())]
    runs = [{**DEFAULTS, "epochs": 3, **point} for point in points]

    def one(index: int) -> dict[str, Any]:
        out = subprocess.run(
            [sys.executable, __file__, "--worker", prepared_path, json.dumps(runs[index]), device],
            cwd=scratch,
            capture_output=True,
            text=True,
        )
        if out.returncode != 0:
            raise RuntimeError(f"run {runs[index]} failed:\n{out.stderr[-3000:]}")
        return json.loads(out.stdout.splitlines()[-1])

    tick = time.perf_counter()
    with ThreadPoolExecutor(at_once) as pool:
        done = list(pool.map(one, range(len(runs))))
    wall = time.perf_counter() - tick
    return {
        "at_once": at_once,
        "runs": len(runs),
        "wall": wall,
        "train_seconds": sum(run["train_seconds"] for run in done),
        "sha256": [run["sha256"] for run in done],
        "test_acc": {
            f"{r['arch']} lr={r['lr']} seed={r['seed']}": d["test_acc"]
            for r, d in zip(runs, done, strict=True)
        },
    }


def worker(prepared_path: str, cfg_json: str, device: str) -> None:
    cfg = json.loads(cfg_json)
    with tempfile.TemporaryDirectory() as folder:
        run = train(prepared_path, cfg, Path(folder), device)
    print(json.dumps({key: run[key] for key in ("train_seconds", "test_acc", "sha256")}))


def main() -> None:
    if sys.argv[1:2] == ["--worker"]:
        worker(*sys.argv[2:5])
        return
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--raw-dir", required=True)
    parser.add_argument("--dataset", default="fashion-mnist")
    parser.add_argument("--json", type=Path)
    parser.add_argument("--device", default="cuda", help="cpu checks the script on small data")
    parser.add_argument(
        "--verify", action=argparse.BooleanOptionalAction, default=True, help="as data.verify"
    )
    args = parser.parse_args()
    import torch

    report: dict[str, Any] = {"device": args.device, "torch": torch.__version__, "grid": []}
    if args.device == "cuda":
        report["device"] = torch.cuda.get_device_name(0)

    def save() -> None:
        if args.json:
            args.json.write_text(json.dumps(report, indent=1) + "\n")

    with tempfile.TemporaryDirectory() as folder:
        scratch = Path(folder)
        prepared_path = str(scratch / "prepared.safetensors")
        data.prepare(TASK, args.raw_dir, prepared_path, dataset=args.dataset, verify=args.verify)
        report["speedrun"] = speedrun(prepared_path, scratch, args.device)
        save()
        for at_once in SHARING:
            part = grid(prepared_path, scratch, at_once, args.device)
            report["grid"].append(part)
            print(
                f"grid, {at_once} at once: {part['wall']:.1f} s wall, "
                f"{part['train_seconds']:.1f} s training",
                file=sys.stderr,
                flush=True,
            )
            report["grid_weights_identical_across_sharing"] = (
                len({tuple(part["sha256"]) for part in report["grid"]}) == 1
            )
            save()


if __name__ == "__main__":
    main()
