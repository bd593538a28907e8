"""reprogrid's speed against its yardsticks, measured side by side in one run.

    .venv/bin/python benchmarks/run.py --raw-dir /usr/share/datasets/fashion-mnist

1. time to 90% Fashion-MNIST test accuracy: the `speedrun` experiment, run by Snakemake, read
   from each run's history.csv (cumulative epoch_seconds until test_acc >= 0.90), against the
   pytorch/examples recipe (benchmarks/examples_recipe.py) with the same data and threads;
2. training images per second of both;
3. grid efficiency of the default grid: sum(train_seconds x threads) / (wall x cores), the
   wall clock being that of the Snakemake call that trains the grid (data already prepared);
4. the dry-run time and peak memory of a 10,000-run grid (`--runs`) against
   benchmarks/bare/Snakefile, the same job graph with nothing of ours in it.

Everything runs in a temporary folder; the checkout is only read. Results are printed as a
Markdown table (docs/benchmarks.md holds the measured one) and written as JSON with --json.
"""

from __future__ import annotations

import argparse
import csv
import json
import os
import platform
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parents[1]
BIN = Path(sys.executable).parent
sys.path.insert(0, str(REPO / "src"))
sys.path.insert(0, str(REPO / "benchmarks"))

TARGET = 0.90


def snakemake(workdir: Path, *args: str, snakefile: Path = REPO / "Snakefile") -> dict[str, float]:
    """Run Snakemake in `workdir`; its wall-clock and CPU seconds (user + system) and its peak
    resident memory in MB."""
    env = {**os.environ, "PATH": f"{BIN}{os.pathsep}{os.environ.get('PATH', '')}"}
    with tempfile.TemporaryFile("w+") as output:
        tick = time.perf_counter()
        process = subprocess.Popen(
            [sys.executable, "-m", "snakemake", "-s", str(snakefile), "-d", str(workdir), *args],
            env=env,
            stdout=output,
            stderr=subprocess.STDOUT,
            text=True,
        )
        # wait4 gives this call's own resource use, where RUSAGE_CHILDREN would keep the
        # largest peak of every earlier call.
        _, status, usage = os.wait4(process.pid, 0)
        wall = time.perf_counter() - tick
        process.returncode = os.waitstatus_to_exitcode(status)
        if process.returncode != 0:
            output.seek(0)
            sys.exit(f"snakemake {' '.join(args)} failed:\n{output.read()[-6000:]}")
    return {
        "wall": wall,
        "cpu": usage.ru_utime + usage.ru_stime,
        "peak_mb": usage.ru_maxrss / 1024,
    }


def time_to(history: list[dict[str, Any]], target: float) -> float | None:
    """Cumulative epoch_seconds until test_acc first reaches `target`; None if it never does."""
    total = 0.0
    for row in history:
        total += float(row["epoch_seconds"])
        if float(row["test_acc"]) >= target:
            return total
    return None


def speedrun(work: Path, raw_dir: str, threads: int) -> list[dict[str, Any]]:
    """Train every run of the speedrun experiment with Snakemake; one result per run."""
    data = f"data={{raw_dir: {raw_dir}}}"
    config = ["--config", "experiment=speedrun", data, f"resources={{threads: {threads}}}"]
    snakemake(work, "--cores", str(threads), "--until", "prepare_data", *config)
    snakemake(work, "--cores", str(threads), "--until", "train", *config)
    results = []
    for history_file in sorted((work / "results/speedrun/runs").rglob("history.csv")):
        with open(history_file, newline="") as handle:
            history = list(csv.DictReader(handle))
        seconds = sum(float(row["epoch_seconds"]) for row in history)
        results.append(
            {
                "run": str(history_file.parent.relative_to(work / "results/speedrun/runs")),
                "time_to_target": time_to(history, TARGET),
                "final_test_acc": float(history[-1]["test_acc"]),
                "epochs": len(history),
                "images_per_second": _train_count(work) * len(history) / seconds,
            }
        )
    return results


def _train_count(work: Path) -> int:
    checks = json.loads((work / "resources/data/fashion-mnist/checks.json").read_text())
    return round(checks["counts"]["train"] * (1 - _speedrun_config()["data"]["val_fraction"]))


def _speedrun_config() -> dict[str, Any]:
    from reprogrid.config import resolve as configuration
    from reprogrid.config import schema as config_schema

    schema = config_schema.load_schema(REPO / "workflow/schemas/config.schema.yaml")
    return configuration.resolve(
        schema,
        REPO / "config/config.yaml",
        REPO / "config/experiments",
        (),
        {"experiment": "speedrun"},
    )


def baseline(raw_dir: str, threads: int, cap: float, scratch: Path) -> dict[str, Any]:
    """The pytorch/examples recipe until 90% test accuracy or `cap` training seconds."""
    import examples_recipe

    history = examples_recipe.run(
        raw_dir, scratch, threads=threads, stop_at=TARGET, time_cap=cap, on_epoch=_progress
    )
    seconds = sum(row["epoch_seconds"] for row in history)
    reached = time_to(history, TARGET)
    return {
        "time_to_target": reached,
        "capped": reached is None,
        "epochs": len(history),
        "final_test_acc": history[-1]["test_acc"],
        "seconds_trained": seconds,
        "images_per_second": sum(row["images"] for row in history) / seconds,
    }


def _progress(row: dict[str, Any]) -> None:
    print(
        f"  examples recipe epoch {row['epoch']}: test_acc {row['test_acc']:.4f} "
        f"in {row['epoch_seconds']:.1f} s",
        file=sys.stderr,
        flush=True,
    )


def grid_efficiency(work: Path, raw_dir: str, cores: int) -> dict[str, Any]:
    """Train the default grid on `cores` cores; how much of cores x wall went into training."""
    from reprogrid.record import provenance

    config = ["--config", f"data={{dataset: fashion-mnist, raw_dir: {raw_dir}}}"]
    snakemake(work, "--cores", str(cores), "--until", "prepare_data", *config)
    timing = snakemake(work, "--cores", str(cores), "--until", "train", *config)
    busy, jobs = 0.0, 0
    for metrics_file in (work / "results/default/runs").rglob("metrics.json"):
        metrics = json.loads(metrics_file.read_text())
        busy += metrics["train_seconds"] * provenance.read_run(metrics_file.parent).threads
        jobs += 1
    return {
        "jobs": jobs,
        "cores": cores,
        "train_seconds": busy,
        "wall": timing["wall"],
        "efficiency": busy / (timing["wall"] * cores),
    }


def planning(work: Path, runs: int) -> dict[str, Any]:
    """Dry-run a `runs`-run grid of the built-in task and of a task file (the example
    regression on its CSV), and both bare Snakefiles with as many jobs; times and ratios."""
    seeds = runs // 4
    work.mkdir(parents=True)
    grid = work / "grid.json"
    axes = {"seed": list(range(seeds)), "arch": ["mlp", "cnn"], "lr": [0.001, 0.003]}
    grid.write_text(json.dumps({"experiment": "plan", "grid": axes}))
    user = work / "task.json"
    user.write_text(
        json.dumps(
            {
                "experiment": "plantask",
                "task": str(REPO / "tasks/regression_csv.py"),
                "data": {"raw_dir": str(REPO / "tasks/data/friedman1.csv")},
                "grid": {**axes, "arch": ["linear", "mlp"]},
                "train": {"target": "y"},
                "analysis": {"criterion": None},
            }
        )
    )
    results: dict[str, Any] = {"runs": 4 * seeds}
    results["reprogrid"] = snakemake(work / "real", "-n", "-q", "--configfile", str(grid))
    results["task_file"] = snakemake(work / "task", "-n", "-q", "--configfile", str(user))
    for name in ("bare", "bare_directives"):
        snakefile = REPO / "benchmarks" / name / "Snakefile"
        timing = snakemake(
            work / name, "-n", "-q", "--config", f"runs={4 * seeds}", snakefile=snakefile
        )
        results[name] = {
            **timing,
            "wall_ratio": results["reprogrid"]["wall"] / timing["wall"],
            "cpu_ratio": results["reprogrid"]["cpu"] / timing["cpu"],
            "peak_mb_ratio": results["reprogrid"]["peak_mb"] / timing["peak_mb"],
            **{
                f"task_file_{key}_ratio": results["task_file"][key] / timing[key]
                for key in ("wall", "cpu", "peak_mb")
            },
        }
    return results


def machine() -> dict[str, Any]:
    """What the numbers were measured on, and how busy it was."""
    import torch

    cpu = platform.processor()
    cpuinfo = Path("/proc/cpuinfo")
    if cpuinfo.is_file():
        for line in cpuinfo.read_text().splitlines():
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    return {
        "cpu": cpu,
        "cores": os.cpu_count(),
        "torch": torch.__version__,
        "python": platform.python_version(),
        "gpu": torch.cuda.get_device_name(0) if torch.cuda.is_available() else None,
        "load_average": os.getloadavg(),
    }


def table(results: dict[str, Any]) -> str:
    """The results as the Markdown table docs/benchmarks.md shows."""
    lines = ["| measure | reprogrid | yardstick | ratio |", "|---|---|---|---|"]
    if "speedrun" in results and "baseline" in results:
        runs, base = results["speedrun"], results["baseline"]
        times = [run["time_to_target"] for run in runs]
        worst = None if None in times else max(times)
        base_time = base["time_to_target"]
        bound = "≥ " if base["capped"] else ""
        base_text = f"{bound}{base_time or base['seconds_trained']:.1f} s"
        ratio = f"{bound}{(base_time or base['seconds_trained']) / worst:.1f}x" if worst else "n/a"
        worst_text = f"{worst:.1f} s (slowest of {len(runs)} seeds)" if worst else "not reached"
        lines.append(f"| time to 90% FMNIST test acc | {worst_text} | {base_text} | {ratio} |")
        speed = min(run["images_per_second"] for run in runs)
        lines.append(
            f"| training images/s | {speed:.0f} | {base['images_per_second']:.0f} | "
            f"{speed / base['images_per_second']:.1f}x |"
        )
    if "grid" in results:
        grid = results["grid"]
        lines.append(
            f"| grid efficiency ({grid['jobs']} jobs, {grid['cores']} cores) | "
            f"{grid['efficiency']:.2f} | 1.00 | |"
        )
    if "planning" in results:
        plan = results["planning"]
        real = plan["reprogrid"]
        for name in ("bare", "bare_directives"):
            for key, unit in (("wall", "s"), ("cpu", "s"), ("peak_mb", "MB")):
                lines.append(
                    f"| dry run of {plan['runs']} runs vs benchmarks/{name} ({key} {unit}) | "
                    f"{real[key]:.1f} | {plan[name][key]:.1f} | {plan[name][f'{key}_ratio']:.2f}x |"
                )
                lines.append(
                    f"| the same, a task file's runs ({key} {unit}) | "
                    f"{plan['task_file'][key]:.1f} | {plan[name][key]:.1f} | "
                    f"{plan[name][f'task_file_{key}_ratio']:.2f}x |"
                )
    return "\n".join(lines)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--raw-dir", default="/usr/share/datasets/fashion-mnist")
    parser.add_argument("--threads", type=int, default=2, help="threads of both recipes")
    parser.add_argument("--cores", type=int, default=2, help="cores of the grid run")
    parser.add_argument(
        "--cap", type=float, default=900.0, help="training-seconds cap of the baseline"
    )
    parser.add_argument("--runs", type=int, default=10_000, help="runs of the planning grid")
    parser.add_argument(
        "--only",
        nargs="+",
        choices=("speed", "grid", "planning"),
        default=("speed", "grid", "planning"),
    )
    parser.add_argument("--json", type=Path, help="also write the results here")
    args = parser.parse_args()

    results: dict[str, Any] = {"machine": machine(), "started": time.strftime("%Y-%m-%d %H:%M:%S")}
    with tempfile.TemporaryDirectory(prefix="reprogrid-bench-") as scratch:
        scratch = Path(scratch)
        if "speed" in args.only:
            results["speedrun"] = speedrun(scratch / "speedrun", args.raw_dir, args.threads)
            results["baseline"] = baseline(args.raw_dir, args.threads, args.cap, scratch / "tv")
        if "grid" in args.only:
            results["grid"] = grid_efficiency(scratch / "grid", args.raw_dir, args.cores)
        if "planning" in args.only:
            results["planning"] = planning(scratch / "planning", args.runs)
    results["machine"]["load_average_after"] = os.getloadavg()
    print(table(results))
    print(json.dumps(results, indent=1))
    if args.json:
        args.json.write_text(json.dumps(results, indent=1))


if __name__ == "__main__":
    main()
