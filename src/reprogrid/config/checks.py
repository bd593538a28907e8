"""What a schema cannot say: checks across keys, against the task, the data and the machine.

Each check raises a `ConfigError` with one line naming the key, the layer that set it and
what to do: names that become paths, the grid's size, sampled axes, schedules, halving, the
raw data folder and its split, and the GPUs a local run asks for.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from typing import Any

import jsonschema

from reprogrid.config.data import check_data
from reprogrid.config.errors import (
    ConfigError,
    describe,
    first_error,
    shown,
    unsafe_name,
)
from reprogrid.config.layers import Resolution
from reprogrid.config.schema import without_default
from reprogrid.plan import paths
from reprogrid.plan.grid import MAX_RUNS, sampled_values
from reprogrid.plan.search import KINDS, SIGNIFICANT, SearchError


def check_layer(
    layer: Mapping[str, Any],
    schema: Mapping[str, Any],
    source: str,
    replaced: set[tuple[Any, ...]] = frozenset(),
) -> None:
    """Refuse a bad key or value in one layer, naming the layer (`source`) that set it.

    Layers are partial, so keys the schema requires are checked only on the merged config,
    and so is a value a later layer replaces (`replaced`, key paths): config/config.yaml's
    architectures need not be those of the task an experiment file names, when the file
    lists its own.
    """
    validator = jsonschema.Draft202012Validator(schema)
    errors = [
        error
        for error in validator.iter_errors(layer)
        if error.validator != "required"
        and not any(tuple(error.absolute_path)[: len(path)] == path for path in replaced)
    ]
    if errors:
        raise ConfigError(describe(first_error(errors), shown(source)))


def check_search(resolution: Resolution, schema: Mapping[str, Any]) -> None:
    """The search block draws points every run can train with: a method that fits the space,
    a distribution per key that suits the `train` key it samples and stays in its range,
    and enough distinct points; and every run has a learning rate, listed or sampled."""
    config = resolution.config
    search, grid = config["search"], config["grid"]
    space = search["space"]
    if search["method"] == "grid" and space:
        raise ConfigError(
            f"{_named(resolution, 'search', 'space')}: search.method is grid, which samples "
            "nothing; set search.method to random or sobol, or remove search.space"
        )
    if search["method"] != "grid" and not space:
        raise ConfigError(
            f"{_named(resolution, 'search', 'method')}: {search['method']} draws from "
            "search.space, which is empty; give a distribution per key there, or set "
            "search.method to grid"
        )
    if "lr" not in grid and "lr" not in space:
        raise ConfigError(
            "config key grid.lr: list learning rates under grid.lr or sample lr under search.space"
        )
    train = schema["properties"]["train"]["properties"]
    for key in sorted(space):
        _check_distribution(resolution, key, train[key])
    try:
        drawn = sampled_values(config, schema)
    except SearchError as error:
        raise ConfigError(f"{_named(resolution, *error.key)}: {error.problem}") from None
    for key in sorted(space):
        for value in drawn[key]:
            problem = _train_value_problem(value, train[key])
            if problem:
                raise ConfigError(
                    f"{_named(resolution, 'search', 'space', key)}: draws {value!r} (rounded "
                    f"to {SIGNIFICANT} significant digits), which train.{key} refuses "
                    f"({problem}); narrow the range"
                )


def check_grid_size(resolution: Resolution) -> None:
    """The runs a config asks for, counted before any is expanded or any point drawn, are at
    most MAX_RUNS: the product of the grid's list lengths and the points a search draws."""
    config = resolution.config
    counts = {("grid", key): len(values) for key, values in config["grid"].items()}
    if config["search"]["method"] != "grid":
        counts["search", "samples"] = config["search"]["samples"]
    runs = math.prod(counts.values())
    if runs <= MAX_RUNS:
        return
    largest = max(counts, key=counts.__getitem__)
    factors = " x ".join(f"{'.'.join(key)} {count:,}" for key, count in counts.items())
    raise ConfigError(
        f"{_named(resolution, *largest)}: the config asks for {runs:,} runs ({factors}), more "
        f"than the {MAX_RUNS:,} a grid may hold (config/README.md, Grid axes); list fewer "
        "values, or split the grid into experiments"
    )


def check_path_names(resolution: Resolution) -> None:
    """Every value a run id can spell (`paths.run_id`) is a safe folder name
    (`paths.name_problem`): each value listed under grid, each choice of search.space, and
    each bound of its ranges (a number drawn between them spells no worse than they do)."""
    config = resolution.config
    listed = [(f"grid.{key}", ("grid", key), values) for key, values in config["grid"].items()]
    listed += [
        (f"search.space.{key}.{kind}", ("search", "space", key), values)
        for key, distribution in config["search"]["space"].items()
        for kind, values in distribution.items()
    ]
    for name, key, values in listed:
        for i, value in enumerate(values):
            problem = paths.name_problem(paths.format_value(value))
            if problem:
                raise ConfigError(
                    unsafe_name(
                        f"{name}[{i}]",
                        resolution.source(*key),
                        value,
                        "value of a run folder's name",
                        problem,
                        paths.VALUE_PUNCTUATION,
                    )
                )


def _named(resolution: Resolution, *key: str) -> str:
    return f"config key {'.'.join(key)} (set by {resolution.source(*key)})"


def _check_distribution(resolution: Resolution, key: str, spec: Mapping[str, Any]) -> None:
    """One key's distribution: one kind, suited to the key's type, a range that is not
    empty and lies within what the key takes (choices the schema has checked already)."""
    config = resolution.config
    where = _named(resolution, "search", "space", key)
    if key in GRID_ONLY:
        raise ConfigError(f"{where}: {GRID_ONLY[key]}; list them under grid.{key}")
    if key in config["grid"]:
        raise ConfigError(
            f"{where}: {key} is also listed under grid.{key} (set by "
            f"{resolution.source('grid', key)}); sample it or list it, not both"
        )
    distribution = config["search"]["space"][key]
    if len(distribution) != 1:
        given = ", ".join(distribution) or "none"
        raise ConfigError(f"{where}: give exactly one of {', '.join(KINDS)} (given: {given})")
    (kind, values), *_ = distribution.items()
    if kind == "choice":
        return
    types = spec["type"] if isinstance(spec["type"], list) else [spec["type"]]
    if "number" not in types and not (kind == "int" and "integer" in types):
        instead = "use int or choice" if "integer" in types else "use choice"
        raise ConfigError(
            f"{where}: train.{key} takes {' or '.join(types)} values, which {kind} ranges do "
            f"not give; {instead}"
        )
    low, high = values
    if low > high or (low == high and kind != "int"):
        wanted = "low <= high" if kind == "int" else "low < high"
        raise ConfigError(f"{where}: the {kind} range [{low}, {high}] is empty; give {wanted}")
    if kind == "loguniform" and low <= 0:
        raise ConfigError(
            f"{where}: a loguniform range needs bounds above 0, not {low}; raise it, or use uniform"
        )
    for bound in (low, high):
        value = float(bound) if "number" in types else bound
        problem = _train_value_problem(value, spec)
        if problem:
            raise ConfigError(
                f"{where}: the {kind} bound {value!r} is no valid train.{key} ({problem}); "
                f"keep the range within train.{key}'s (config/README.md)"
            )


def _train_value_problem(value: Any, spec: Mapping[str, Any]) -> str | None:
    """Why `value` is no valid value of the train key `spec` describes, or None."""
    error = jsonschema.exceptions.best_match(
        jsonschema.Draft202012Validator(without_default(spec)).iter_errors(value)
    )
    return None if error is None else error.message


def check_semantics(resolution: Resolution) -> None:
    """Checks a schema cannot express: files that must exist, names that must agree, and
    sizes that must fit the data set."""
    config = resolution.config
    check_data(resolution)
    _check_schedule_fits_optimizer(resolution)
    _check_halving(resolution)
    criterion = config["analysis"]["criterion"]
    if criterion:
        archs = config["grid"]["arch"]
        for role in ("better", "worse"):
            if criterion[role] not in archs:
                raise ConfigError(
                    f"config key analysis.criterion.{role} "
                    f"(set by {resolution.source('analysis', 'criterion', role)}): "
                    f"{criterion[role]!r} is not in grid.arch ({', '.join(archs)}); add it there "
                    "or set analysis.criterion to null"
                )
        if criterion["better"] == criterion["worse"]:
            source = resolution.source("analysis", "criterion")
            raise ConfigError(
                f"config key analysis.criterion (set by {source}): better and worse must differ"
            )


def _check_schedule_fits_optimizer(resolution: Resolution) -> None:
    """The one-cycle schedule cycles momentum too, which Adadelta has none of: torch refuses
    the pair when the optimiser is built, in every job, so refuse it here once."""
    config = resolution.config

    def values(key: str) -> tuple[list[Any], str]:
        if key in config["grid"]:
            return config["grid"][key], f"grid.{key} (set by {resolution.source('grid', key)})"
        if key in config["search"]["space"]:
            # A string key is sampled by choice alone: any two choices may meet in a point.
            source = resolution.source("search", "space", key)
            return config["search"]["space"][key]["choice"], f"search.space.{key} (set by {source})"
        return [config["train"][key]], f"train.{key} (set by {resolution.source('train', key)})"

    optimizers, optimizer_key = values("optimizer")
    schedules, schedule_key = values("schedule")
    if "adadelta" in optimizers and "onecycle" in schedules:
        raise ConfigError(
            f"config keys {optimizer_key} and {schedule_key}: the onecycle schedule cycles "
            "momentum, which adadelta has none of; use another optimizer or schedule"
        )


def _check_halving(resolution: Resolution) -> None:
    """The rungs must grow from min_epochs to max_epochs, and the epochs be halving's own."""
    config = resolution.config
    halving = config["halving"]
    if not halving["enabled"]:
        return
    if halving["min_epochs"] > halving["max_epochs"]:
        raise ConfigError(
            f"config key halving.min_epochs (set by {resolution.source('halving', 'min_epochs')}): "
            f"{halving['min_epochs']} is above halving.max_epochs ({halving['max_epochs']}, set "
            f"by {resolution.source('halving', 'max_epochs')}); the first rung must stop "
            "runs before the last one"
        )
    if "epochs" in config["grid"]:
        raise ConfigError(
            f"config key grid.epochs (set by {resolution.source('grid', 'epochs')}): with "
            "halving every run trains for halving.max_epochs; remove grid.epochs, or set "
            "halving.enabled to false"
        )


def check_local_gpus(gpus: int, asked: str, fix: str) -> None:
    """Refuse a run on this machine that asks `gpus` GPUs of each job where torch sees fewer.

    `asked` names what asked for them, `fix` the setting that trains on the CPU instead.
    Imports torch only when `gpus` is above 0: planning a CPU run stays light.
    """
    if gpus <= 0:
        return
    import torch

    visible = torch.cuda.device_count() if torch.cuda.is_available() else 0
    if visible < gpus:
        seen = "no GPU" if visible == 0 else f"only {visible} GPU(s)"
        raise ConfigError(
            f"{asked} asks {gpus} GPU(s) of each training job, but torch sees {seen} on this "
            f"machine; train on the CPU with {fix}, or run where the GPUs are "
            "(--profile profiles/slurm on a cluster)"
        )


# The axes every point runs with, each value: listed under grid, never sampled.
GRID_ONLY = {
    "seed": "seeds stay a grid axis (every sampled point runs with every seed)",
    "arch": "architectures stay a grid axis (every sampled point runs with each, so they "
    "compare over the same points)",
}
