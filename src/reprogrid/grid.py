"""The grid: every run a configuration asks for, its id, and what summaries group runs by.

A run id names a run by its axis values (`paths.run_id`); `expand_grid` gives each id the
run's complete training parameters, the schema's defaults filled in by resolution, and the
points a search samples (`reprogrid.search`) as axes beside the grid's. This
module imports nothing heavy: Snakemake expands the grid while it plans.
"""

from __future__ import annotations

import itertools
from collections.abc import Mapping
from typing import TYPE_CHECKING, Any

from reprogrid import paths, search

if TYPE_CHECKING:
    from reprogrid.config import Resolution

# The most runs one config may ask for: the grid docs/benchmarks.md plans (2.5 minutes and
# 3 GB for `snakemake -n`, growing linearly); a config beyond it is refused before expanding.
MAX_RUNS = 100_000


def unknown_run(run: str, resolution: Resolution, schema: Mapping[str, Any]) -> str:
    """Why `run` is no run of the grid, and how to add it: a one-line message for the user."""
    config = resolution.config
    grid = config["grid"]
    sampled = sampled_values(config, schema)
    listed = {**grid, **sampled}
    defaults = train_defaults(schema)
    asked = paths.parse_run_id(run)
    reasons = []
    for key, text in asked.items():
        values = [paths.format_value(value) for value in listed.get(key, [])]
        if key not in defaults:
            reasons.append(f"{key} is no key of train")
        elif key not in listed:
            reasons.append(f"{key} is no grid axis")
        elif text not in values:
            where, verb = ("grid", "lists") if key in grid else ("search.space", "draws")
            reasons.append(
                f"{where}.{key} (set by {resolution.source(*where.split('.'), key)}) {verb} "
                f"{_listed(values)}, not {text}"
            )
    for key, values in listed.items():
        default = paths.format_value(defaults.get(key))
        if key not in asked and default not in map(paths.format_value, values):
            reasons.append(f"every run of the grid names {key} (the grid has no {key}={default})")
    order = ["arch", "lr", *sorted(set(listed) - set(paths.CORE_AXES)), "seed"]
    axes = "; ".join(
        f"{key} {_listed([paths.format_value(value) for value in listed[key]])}" for key in order
    )
    fallback = (
        "no sampled point has these values together"
        if sampled
        else "its folder name is not the one the grid gives it"
    )
    why = "; ".join(reasons) or fallback
    how = (
        "list its values under grid instead of sampling them, or draw more points with "
        "search.samples (config/README.md, Sampled axes)"
        if sampled
        else "list the value under grid in the config (config/README.md, Grid axes)"
    )
    return (
        f"no run {run} in the grid of experiment {config['experiment']!r} ({why}); "
        f"its runs combine {axes}; to train it, {how}"
    )


def _listed(values: list[str], most: int = 6) -> str:
    shown = values if len(values) <= most else [*values[: most - 1], "...", values[-1]]
    return ", ".join(shown)


def train_defaults(schema: Mapping[str, Any]) -> dict[str, Any]:
    """Every training parameter at the schema's default."""
    return {
        key: spec.get("default")
        for key, spec in schema["properties"]["train"]["properties"].items()
    }


def sampled_values(config: Mapping[str, Any], schema: Mapping[str, Any]) -> dict[str, list]:
    """Each sampled key's values, in the order the points draw them (none without a search)."""
    points = search.points(config, schema)
    return {key: list(dict.fromkeys(point[key] for point in points)) for key in points[0]}


def expand_grid(config: Mapping[str, Any], schema: Mapping[str, Any]) -> dict[str, dict]:
    """One entry per run: run id -> that run's complete training parameters.

    The runs are every combination of the grid's lists with every sampled point
    (`reprogrid.search`); a sampled key is an axis like a listed one. An axis beyond arch,
    lr and seed shows in a run id only where its value differs from the schema's default,
    so a run id is a function of the run's axis values alone, and listing an axis at its
    default moves and reruns nothing.
    """
    defaults = train_defaults(schema)
    grid = config["grid"]
    axes = list(grid)
    points = search.points(config, schema)
    runs: dict[str, dict] = {}
    for values in itertools.product(*(grid[axis] for axis in axes)):
        combination = dict(zip(axes, values, strict=True))
        for point in points:
            chosen = {**combination, **point}
            runs[paths.run_id(chosen, defaults)] = {**config["train"], **chosen}
    return runs


def run_axes(config: Mapping[str, Any]) -> list[str]:
    """Every key set per run: the grid's axes, then the sampled keys by name."""
    return [*config["grid"], *sorted(config["search"]["space"])]


def grid_axes(config: Mapping[str, Any]) -> list[str]:
    """What a summary groups runs by: arch, lr, every other axis listing several values, and
    every sampled key.

    An axis with one value splits no group, so listing one changes no summary.
    """
    listed = [
        axis
        for axis, values in config["grid"].items()
        if axis in ("arch", "lr") or (axis != "seed" and len(values) > 1)
    ]
    return [*listed, *sorted(config["search"]["space"])]
