"""Successive halving against the full grid it searches, side by side in one run.

    .venv/bin/python benchmarks/search.py --json search.json

Trains the experiment `search` (config/experiments/search.yaml: 27 random points of learning
rate, weight decay and batch size x {mlp, cnn} x 2 seeds on Fashion-MNIST) twice, each in a
folder of its own: once as the full grid, every run to `halving.max_epochs`, and once by
successive halving. It reports, for both, the training seconds (the runs' own
`train_seconds`: every epoch trained and evaluated, counted once, wherever it was trained;
for a run halving stopped, those it had at its last rung), the wall time, the setting chosen
on mean validation accuracy (per architecture and overall), that setting's mean test
accuracy, and whether every run halving finished has the same weights, to the byte, as the
same run of the full grid. `--max-batches` shortens every epoch to that many batches (the
same in both) where the full grid would take too long.
"""

from __future__ import annotations

import argparse
import csv
import json
import os
import tempfile
import time
from pathlib import Path
from typing import Any

from run import machine, snakemake

EXPERIMENT = "search"


def train(work: Path, raw_dir: str, cores: int, halving: bool, max_batches: int | None):
    """Train the experiment in `work`, by halving or as the full grid; its timing."""
    train_keys = f"{{max_batches: {max_batches}}}" if max_batches else "{max_batches: null}"
    config = [
        "--config",
        f"experiment={EXPERIMENT}",
        f"data={{raw_dir: {raw_dir}}}",
        f"halving={{enabled: {str(halving).lower()}}}",
        f"train={train_keys}",
    ]
    snakemake(work, "--cores", str(cores), "--until", "prepare_data", *config)
    return snakemake(work, "--cores", str(cores), *config)


def _read_csv(path: Path) -> list[dict[str, str]]:
    with path.open(newline="") as handle:
        return list(csv.DictReader(handle))


def training_seconds(work: Path) -> tuple[float, int, int]:
    """Every run's training seconds (finished: its metrics; stopped: its last rung), and how
    many runs finished and stopped."""
    seconds, finished, stopped = 0.0, 0, 0
    for folder in sorted((work / "results" / EXPERIMENT / "runs").rglob("seed=*")):
        metrics = folder / "metrics.json"
        if metrics.is_file():
            seconds += json.loads(metrics.read_text())["train_seconds"]
            finished += 1
            continue
        rungs = sorted((folder / "rungs").glob("*.json"), key=lambda p: int(p.stem))
        seconds += json.loads(rungs[-1].read_text())["metrics"]["train_seconds"]
        stopped += 1
    return seconds, finished, stopped


def chosen(work: Path) -> dict[str, Any]:
    """The setting chosen per architecture (best.csv) and overall, with their accuracies."""
    best = _read_csv(work / "results" / EXPERIMENT / "summary" / "best.csv")
    axes = ("arch", "lr", "weight_decay", "batch_size")
    picks = {
        row["arch"]: {
            "setting": {axis: row[axis] for axis in axes if axis in row},
            "val_acc_mean": float(row["val_acc_mean"]),
            "test_acc_mean": float(row["test_acc_mean"]),
        }
        for row in best
    }
    overall = max(picks.values(), key=lambda pick: pick["val_acc_mean"])
    return {"by_arch": picks, "overall": overall}


def same_weights(halving: Path, full: Path) -> dict[str, int]:
    """How many runs halving finished have the full grid's weights, byte for byte."""
    runs = halving / "results" / EXPERIMENT / "runs"
    same = differ = 0
    for model in sorted(runs.rglob("model.pt")):
        twin = full / model.relative_to(halving)
        if twin.read_bytes() == model.read_bytes():
            same += 1
        else:
            differ += 1
    return {"same": same, "differ": differ}


def measure(scratch: Path, raw_dir: str, cores: int, max_batches: int | None) -> dict[str, Any]:
    results: dict[str, Any] = {}
    for name, halving in (("full", False), ("halving", True)):
        work = scratch / name
        timing = train(work, raw_dir, cores, halving, max_batches)
        seconds, finished, stopped = training_seconds(work)
        results[name] = {
            "wall": timing["wall"],
            "train_seconds": seconds,
            "runs_finished": finished,
            "runs_stopped": stopped,
            **chosen(work),
        }
    full, halving = results["full"], results["halving"]
    results["seconds_ratio"] = halving["train_seconds"] / full["train_seconds"]
    results["wall_ratio"] = halving["wall"] / full["wall"]
    results["val_acc_gap_points"] = 100 * (
        full["overall"]["val_acc_mean"] - halving["overall"]["val_acc_mean"]
    )
    results["identical_weights"] = same_weights(scratch / "halving", scratch / "full")
    rungs = scratch / "halving" / "results" / EXPERIMENT / "search" / "rungs.csv"
    results["rungs_csv"] = rungs.read_text()
    return results


def table(results: dict[str, Any]) -> str:
    """The results as the Markdown table docs/benchmarks.md shows."""
    lines = [
        "| measure | full grid | halving (eta 3) | ratio or gap |",
        "|---|---|---|---|",
    ]
    full, halving = results["full"], results["halving"]
    lines.append(
        f"| training seconds | {full['train_seconds']:.0f} | {halving['train_seconds']:.0f} | "
        f"{results['seconds_ratio']:.3f} |"
    )
    lines.append(
        f"| wall (s) | {full['wall']:.0f} | {halving['wall']:.0f} | {results['wall_ratio']:.3f} |"
    )
    lines.append(
        f"| runs finished / stopped | {full['runs_finished']} / {full['runs_stopped']} | "
        f"{halving['runs_finished']} / {halving['runs_stopped']} | |"
    )
    for arch in sorted(full["by_arch"]):
        a, b = full["by_arch"][arch], halving["by_arch"][arch]
        lines.append(f"| {arch}: chosen setting | {_setting(a)} | {_setting(b)} | |")
        lines.append(
            f"| {arch}: mean val / test acc (%) | {_acc(a)} | {_acc(b)} | "
            f"{100 * (a['val_acc_mean'] - b['val_acc_mean']):+.2f} points val |"
        )
    same = results["identical_weights"]
    lines.append(
        f"| halving's finished runs equal to the full grid's | | {same['same']} of "
        f"{same['same'] + same['differ']} | |"
    )
    return "\n".join(lines)


def _setting(pick: dict[str, Any]) -> str:
    return ", ".join(f"{key} {value}" for key, value in pick["setting"].items() if key != "arch")


def _acc(pick: dict[str, Any]) -> str:
    return f"{100 * pick['val_acc_mean']:.2f} / {100 * pick['test_acc_mean']:.2f}"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--raw-dir", default="/usr/share/datasets/fashion-mnist")
    parser.add_argument("--cores", type=int, default=2)
    parser.add_argument("--max-batches", type=int, help="batches per epoch (default: every batch)")
    parser.add_argument("--json", type=Path, help="also write the results here")
    args = parser.parse_args()

    results: dict[str, Any] = {
        "machine": machine(),
        "started": time.strftime("%Y-%m-%d %H:%M:%S"),
        "max_batches": args.max_batches,
    }
    with tempfile.TemporaryDirectory(prefix="reprogrid-search-") as scratch:
        results.update(measure(Path(scratch), args.raw_dir, args.cores, args.max_batches))
    results["machine"]["load_average_after"] = os.getloadavg()
    print(table(results))
    print(json.dumps(results, indent=1))
    if args.json:
        args.json.write_text(json.dumps(results, indent=1))


if __name__ == "__main__":
    main()
