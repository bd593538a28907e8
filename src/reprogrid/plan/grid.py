"""The grid: every run a configuration asks for, its id, and what summaries group runs by.

A run id names a run by its axis values (`paths.run_id`); `expand_grid` gives each id the
run's complete training parameters, the schema's defaults filled in by resolution, and the
points a search samples (`reprogrid.plan.search`) as axes beside the grid's. This
module imports nothing heavy: Snakemake expands the grid while it plans.
"""

from __future__ import annotations

import itertools
import json
from collections.abc import Mapping
from pathlib import Path
from typing import Any, Protocol

from reprogrid.plan import paths, search

# The most runs one config may ask for: the grid docs/benchmarks.md plans (2.5 minutes and
# 3 GB for `snakemake -n`, growing linearly); a config beyond it is refused before expanding.
MAX_RUNS = 100_000


class Sourced(Protocol):
    """A resolved config that knows which layer set each value (`config.resolve.Resolution`,
    which the plan sits below and so does not import)."""

    config: Mapping[str, Any]

    def source(self, *key: str) -> str: ...


def unknown_run(
    run: str,
    resolution: Sourced,
    schema: Mapping[str, Any],
    kept: Mapping[str, Any] | None = None,
) -> str:
    """Why `run` is no run of the grid, and how to add it: a one-line message for the user.

    `kept` is the experiment's record of the values its run ids leave out (`read_id_defaults`).
    """
    config = resolution.config
    grid = config["grid"]
    sampled = sampled_values(config, schema)
    listed = {**grid, **sampled}
    defaults = id_defaults(schema, kept or {})
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


class RunNamesError(ValueError):
    """An experiment's record of the values its run ids leave out cannot be read."""


def id_defaults(schema: Mapping[str, Any], kept: Mapping[str, Any]) -> dict[str, Any]:
    """The value of each training parameter that a run id leaves out: the one the experiment
    recorded when its runs were first trained with that key as an axis (`kept`), else the
    schema's default. A default edited later renames no run folder."""
    defaults = train_defaults(schema)
    return {**defaults, **{key: value for key, value in kept.items() if key in defaults}}


def read_id_defaults(experiment: str) -> dict[str, Any]:
    """The experiment's record of the values its run ids leave out; {} before its first run."""
    return read_run_names(Path(paths.id_defaults_file(experiment)), experiment)


def read_run_names(path: Path, experiment: str) -> dict[str, Any]:
    """The record at `path` (`paths.RUN_NAMES`) of the values the run ids of `experiment`
    leave out; {} where there is none."""
    try:
        kept = json.loads(path.read_text(encoding="utf-8"))
    except FileNotFoundError:
        return {}
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as error:
        raise RunNamesError(
            f"{path} cannot be read ({error}); it records the values the run folders of "
            f"experiment {experiment!r} leave out of their names: restore it from a copy of "
            "results/, or delete it if no run folder names an axis beyond arch, lr and seed"
        ) from error
    if not isinstance(kept, dict):
        raise RunNamesError(
            f"{path} holds no JSON object; restore it from a copy of results/, or delete it "
            "if no run folder names an axis beyond arch, lr and seed"
        )
    return kept


def id_defaults_to_keep(
    config: Mapping[str, Any], schema: Mapping[str, Any], kept: Mapping
) -> dict[str, Any] | None:
    """The experiment's record of the values its run ids leave out, with the value each axis
    of this config leaves out added for every axis the record lacks, to be written before
    runs are trained under those names (`paths.id_defaults_file`); None when the record
    already holds them all."""
    defaults = id_defaults(schema, kept)
    axes = [axis for axis in run_axes(config) if axis not in paths.CORE_AXES]
    new = {axis: defaults[axis] for axis in axes if axis not in kept}
    return {**kept, **new} if new else None


def sampled_values(config: Mapping[str, Any], schema: Mapping[str, Any]) -> dict[str, list]:
    """Each sampled key's values, in the order the points draw them (none without a search)."""
    points = search.points(config, schema)
    return {key: list(dict.fromkeys(point[key] for point in points)) for key in points[0]}


def expand_grid(
    config: Mapping[str, Any], schema: Mapping[str, Any], kept: Mapping[str, Any] | None = None
) -> dict[str, dict]:
    """One entry per run: run id -> that run's complete training parameters.

    The runs are every combination of the grid's lists with every sampled point
    (`reprogrid.plan.search`); a sampled key is an axis like a listed one. An axis beyond arch,
    lr and seed shows in a run id only where its value differs from the value ids leave out
    (`id_defaults`: the schema's default, or the one `kept` recorded), so a run id is a
    function of the run's axis values alone, and listing an axis at its default moves and
    reruns nothing.
    """
    defaults = id_defaults(schema, kept or {})
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
