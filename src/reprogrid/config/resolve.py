"""Layered configuration: load, merge, type and validate it, and check it against the data.

Precedence, lowest first: the schema's defaults < `config/config.yaml` <
`config/experiments/<name>.yaml` < files given with `--configfile` < `--config` values.
Everything a user can get wrong is refused here, before any job starts, with a
`ConfigError` whose one-line message names the key, file or value and what to do
(worded by `reprogrid.config.errors`); `reprogrid.plan.grid` expands the result into runs.

This module knows nothing about Snakemake and imports nothing heavy.
"""

from __future__ import annotations

import copy
from collections.abc import Iterable, Mapping
from pathlib import Path
from typing import Any

from reprogrid.config.checks import (
    GRID_ONLY,
    check_grid_size,
    check_layer,
    check_path_names,
    check_search,
    check_semantics,
)
from reprogrid.config.errors import (
    ConfigError,
    did_you_mean,
    shown,
    typos_of,
    unsafe_name,
)
from reprogrid.config.layers import YAML_KINDS, Resolution, load_yaml, merge
from reprogrid.config.schema import coerce, fill_defaults, for_task, leaves, retype_cli, validate
from reprogrid.plan import paths
from reprogrid.tasks import spec as taskspec

DEBUG_EXPERIMENT = "debug"
DEBUG_MAX_BATCHES = 5
_DEBUG_FORCED = {"epochs": 1, "max_batches": DEBUG_MAX_BATCHES}


def resolve(
    schema: Mapping[str, Any],
    base_file: str | Path,
    experiments_dir: str | Path,
    cli_files: Iterable[str | Path] = (),
    cli_values: Mapping[str, Any] | None = None,
) -> dict[str, Any]:
    """Build, type and validate the configuration from its layers (see the module docstring).

    Each layer is checked on its own first, so a message names the file (or `--config`)
    that set a bad key; the merged result is then checked whole. The result depends only
    on the arguments and the files they name: a cluster job, given the same `--configfiles`
    and `--config` again, resolves the same configuration.
    """
    return resolve_with_sources(schema, base_file, experiments_dir, cli_files, cli_values).config


def resolve_with_sources(
    schema: Mapping[str, Any],
    base_file: str | Path,
    experiments_dir: str | Path,
    cli_files: Iterable[str | Path] = (),
    cli_values: Mapping[str, Any] | None = None,
) -> Resolution:
    """`resolve`, keeping for each key the layer that set it, for checks made later."""
    base = (str(base_file), load_yaml(base_file))
    files = [(str(path), load_yaml(path)) for path in cli_files]
    overrides = ("--config", retype_cli(dict(cli_values or {})))

    experiment, named_by = _experiment_name([base, *files, overrides], schema)
    task = _task([base, *files, overrides], experiments_dir, experiment)
    if task.name != taskspec.DEFAULT:
        schema = for_task(schema, task)
    layers = [base]
    experiment_file = Path(experiments_dir) / f"{experiment}.yaml"
    if experiment_file.is_file():
        layers.append((str(experiment_file), load_yaml(experiment_file)))
        _check_experiment_file(experiment, shown(str(experiment_file)), layers[-1][1])
    else:
        _check_new_experiment(experiment, named_by, experiments_dir, schema)
    layers += [*files, overrides]

    config: dict[str, Any] = {}
    sources: dict[tuple[str, ...], str] = {}
    for index, (source, layer) in enumerate(layers):
        layer = coerce(layer, schema)
        check_layer(layer, schema, source, leaves(layers[index + 1 :]))
        config = merge(_without_replaced(config, sources, layer), layer)
        _record_sources(layer, shown(source), sources)
    validate(config, schema)
    config = fill_defaults(config, schema)
    if config["debug"]:
        config = _debug_version(config)
        for key in _DEBUG_FORCED:
            sources["train", key] = "debug mode"
    resolution = _with_task_metrics(Resolution(config, sources, task, schema))
    check_grid_size(resolution)
    check_search(resolution, schema)
    check_path_names(resolution)
    check_semantics(resolution)
    return _with_halving_horizon(resolution)


def _task(
    layers: list[tuple[str, Mapping[str, Any]]], experiments_dir: str | Path, experiment: str
) -> taskspec.TaskSpec:
    """The task the layers name (the experiment's file among them), its file read."""
    source, name = "the schema's default", taskspec.DEFAULT
    experiment_file = Path(experiments_dir) / f"{experiment}.yaml"
    named = [*layers[:1]]
    if experiment_file.is_file():
        named.append((str(experiment_file), load_yaml(experiment_file)))
    for where, layer in [*named, *layers[1:]]:
        if "task" in layer:
            source, name = shown(where), layer["task"]
    if not isinstance(name, str) or not name:
        raise ConfigError(
            f"config key task (set by {source}): {name!r} is no task; name a built-in task "
            f"({', '.join(taskspec.builtin_names())}) or a task file such as tasks/mine.py"
        )
    try:
        return taskspec.read(name)
    except taskspec.TaskError as error:
        raise ConfigError(f"config key task (set by {source}): {error}") from None


def _with_task_metrics(resolution: Resolution) -> Resolution:
    """The metric keys left null set to the task's first metric, on the split each reads."""
    config, sources = copy.deepcopy(resolution.config), dict(resolution.sources)
    metrics = resolution.task.metrics
    origin = f"the first of the METRICS of task {resolution.task.name}"
    slots = [(config["train"], ("train", "select_metric"), "val")]
    slots.append((config["halving"], ("halving", "metric"), "val"))
    if config["analysis"]["criterion"]:
        slots.append((config["analysis"]["criterion"], ("analysis", "criterion", "metric"), "test"))
    for holder, key, split in slots:
        if holder.get(key[-1]) is None:
            holder[key[-1]] = metrics.column(split)
            sources[key] = origin
    return resolution._replace(config=config, sources=sources)


def _with_halving_horizon(resolution: Resolution) -> Resolution:
    """Under successive halving every run trains (and schedules its rate) for max_epochs;
    rungs only stop runs early."""
    halving = resolution.config["halving"]
    if not halving["enabled"]:
        return resolution
    config = copy.deepcopy(resolution.config)
    config["train"]["epochs"] = halving["max_epochs"]
    origin = f"halving.max_epochs (set by {resolution.source('halving', 'max_epochs')})"
    return resolution._replace(
        config=config, sources={**resolution.sources, ("train", "epochs"): origin}
    )


def _without_replaced(
    config: dict[str, Any], sources: dict[tuple[str, ...], str], layer: Mapping[str, Any]
) -> dict[str, Any]:
    """`config` less what `layer` replaces whole rather than merges into, with its sources.

    A distribution under search.space is one value, like a list: a layer giving `uniform`
    replaces a `loguniform` below it. A key a layer samples leaves the grid of the layers
    below, and a key it lists under grid leaves their space, so an experiment file can
    sample the lr that config/config.yaml lists.
    """
    sampled = set(layer.get("search", {}).get("space", {}))
    listed = set(layer.get("grid", {}))
    replaced = [("search", "space", key) for key in sampled | listed]
    replaced += [("grid", key) for key in sampled - set(GRID_ONLY)]
    config = copy.deepcopy(config)
    for path in replaced:
        *parents, key = path
        holder = config
        for parent in parents:
            holder = holder.get(parent, {})
        holder.pop(key, None)
        for known in [known for known in sources if known[: len(path)] == path]:
            del sources[known]
    return config


def _record_sources(
    layer: Mapping[str, Any], source: str, sources: dict[tuple[str, ...], str], path=()
) -> None:
    for key, value in layer.items():
        sources[(*path, key)] = source
        if isinstance(value, Mapping):
            _record_sources(value, source, sources, (*path, key))


def _experiment_name(
    layers: list[tuple[str, Mapping[str, Any]]], schema: Mapping[str, Any]
) -> tuple[str, str]:
    """The experiment the layers name and the layer naming it, checked before any file lookup."""
    spec = schema["properties"]["experiment"]
    source, name = "the schema's default", spec["default"]
    for where, layer in layers:
        if "experiment" in layer:
            source, name = shown(where), coerce(layer["experiment"], spec)
    problem = (
        paths.name_problem(name, paths.EXPERIMENT_PUNCTUATION)
        if isinstance(name, str)
        else f"is {YAML_KINDS.get(type(name), type(name).__name__)}, not a string"
    )
    if problem:
        raise ConfigError(
            unsafe_name(
                "experiment", source, name, "experiment name", problem, paths.EXPERIMENT_PUNCTUATION
            )
        )
    debug = [layer["debug"] for _, layer in layers if "debug" in layer]
    # A debug run's own resolved config (debug: true) names it; nothing else may.
    if name == DEBUG_EXPERIMENT and not (debug and debug[-1] is True):
        raise ConfigError(
            f"config key experiment: {name!r} (set by {source}) is reserved for debug runs; "
            "use --config debug=True"
        )
    return name, source


def _check_experiment_file(experiment: str, source: str, layer: Mapping[str, Any]) -> None:
    named = layer.get("experiment", experiment)
    if named != experiment:
        raise ConfigError(
            f"config key experiment: {source} sets experiment {named!r}; the file's name "
            "names the experiment, so remove the key"
        )


def _check_new_experiment(
    name: str, source: str, experiments_dir: str | Path, schema: Mapping[str, Any]
) -> None:
    """Refuse an experiment without a file where it is most likely a typo of one with a file.

    On the command line a name must have a file. A config file may define an experiment of
    its own (its grid is in the file), unless the name is one or two edits from a known one.
    """
    default = schema["properties"]["experiment"]["default"]
    if name in (default, DEBUG_EXPERIMENT):
        return
    known = sorted({default, *(path.stem for path in Path(experiments_dir).glob("*.yaml"))})
    missing = shown(str(Path(experiments_dir) / f"{name}.yaml"))
    if source == "--config":
        raise ConfigError(
            f"config key experiment (set by --config): no file {missing} for experiment "
            f"{name!r}{did_you_mean(name, known)}; known experiments: {', '.join(known)}"
        )
    close = typos_of(name, known)
    if close:
        raise ConfigError(
            f"config key experiment (set by {source}): {name!r} has no file {missing} and is "
            f"close to the experiment {close[0]!r} (did you mean '{close[0]}'?); fix the name, "
            "or give a new experiment a name further from the known ones "
            f"({', '.join(known)})"
        )


def _debug_version(config: dict[str, Any]) -> dict[str, Any]:
    """The tiny version of `config` a debug run trains: first seed, one epoch, a few batches.

    Every architecture and learning rate stays, so each code path still runs once; every
    other axis keeps its first value, a search its first point, and the forced keys leave
    the grid altogether.
    """
    config = copy.deepcopy(config)
    config["experiment"] = DEBUG_EXPERIMENT
    grid = {key: values for key, values in config["grid"].items() if key not in _DEBUG_FORCED}
    config["grid"] = {
        key: values if key in ("arch", "lr") else values[:1] for key, values in grid.items()
    }
    config["train"].update(_DEBUG_FORCED)
    config["halving"]["enabled"] = False
    config["search"]["samples"] = 1
    return config
