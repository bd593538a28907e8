"""Layered configuration: load, merge, type and validate it, and check it against the data.

Precedence, lowest first: the schema's defaults < `config/config.yaml` <
`config/experiments/<name>.yaml` < files given with `--configfile` < `--config` values.
Everything a user can get wrong is refused here, before any job starts, with a
`ConfigError` whose one-line message names the key, file or value and what to do
(worded by `reprogrid.config_errors`); `reprogrid.grid` expands the result into runs.

This module knows nothing about Snakemake and imports nothing heavy.
"""

from __future__ import annotations

import copy
import math
import re
from collections.abc import Iterable, Mapping
from pathlib import Path
from typing import Any, NamedTuple

import jsonschema
import yaml

from reprogrid import catalog, paths, provenance, rawfiles
from reprogrid.config_errors import (
    ConfigError,
    describe,
    did_you_mean,
    first_error,
    shown,
    typos_of,
    unsafe_name,
)
from reprogrid.grid import MAX_RUNS, sampled_values
from reprogrid.search import KINDS, SIGNIFICANT, SearchError
from reprogrid.split import validation_count
from reprogrid.tasks import spec as taskspec

# The axes every point runs with, each value: listed under grid, never sampled.
GRID_ONLY = {
    "seed": "seeds stay a grid axis (every sampled point runs with every seed)",
    "arch": "architectures stay a grid axis (every sampled point runs with each, so they "
    "compare over the same points)",
}

DEBUG_EXPERIMENT = "debug"
DEBUG_MAX_BATCHES = 5
_DEBUG_FORCED = {"epochs": 1, "max_batches": DEBUG_MAX_BATCHES}


class _KeyError(Exception):
    """A key YAML reads but a config must not have, found at `line`."""

    def __init__(self, key: Any, line: int, problem: str) -> None:
        super().__init__(key, line, problem)
        self.key, self.line, self.problem = key, line, problem


_MERGE_TAG = "tag:yaml.org,2002:merge"
_YAML_KINDS = {
    int: "a number",
    float: "a number",
    bool: "a boolean",
    type(None): "null",
    list: "a list",
    dict: "a mapping",
}


class _UniqueKeyLoader(yaml.SafeLoader):
    """YAML's safe loader, except that every key must be a name, given once per mapping.

    Plain YAML keeps the last value of a repeated key silently, so `train:` written twice
    would drop half of what the user wrote; and it reads `1:` or `yes:` as a number or a
    boolean, which no config key is. Merge keys (`<<: *base`) are YAML and stay allowed:
    the keys they bring in may be overridden by the mapping's own.
    """

    def construct_mapping(self, node, deep=False):
        seen = set()
        for key_node, _ in node.value:
            if key_node.tag == _MERGE_TAG:
                continue
            key = self.construct_object(key_node, deep=True)
            line = key_node.start_mark.line + 1
            if not isinstance(key, str):
                written = key_node.value if isinstance(key_node.value, str) else key
                kind = _YAML_KINDS.get(type(key), type(key).__name__)
                raise _KeyError(
                    written,
                    line,
                    f"is read as {kind}, not a key name; config/README.md lists the names",
                )
            if key in seen:
                raise _KeyError(repr(key), line, "is given twice; keep one")
            seen.add(key)
        return super().construct_mapping(node, deep=deep)


def load_yaml(path: str | Path) -> dict[str, Any]:
    """Read a YAML mapping, refusing a broken or non-mapping file by name."""
    path = Path(path)
    name = shown(str(path))
    try:
        raw = path.read_bytes()
    except OSError as err:
        raise ConfigError(f"cannot read config file {name}: {err.strerror}") from None
    try:
        text = raw.decode("utf-8")
    except UnicodeDecodeError as err:
        line = raw[: err.start].count(b"\n") + 1
        column = err.start - raw.rfind(b"\n", 0, err.start)
        raise ConfigError(
            f"{name} at line {line}, column {column}: byte 0x{raw[err.start]:02x} is not "
            "UTF-8; save the file as UTF-8"
        ) from None
    try:
        data = yaml.load(text, Loader=_UniqueKeyLoader)
    except _KeyError as err:
        raise ConfigError(f"{name} at line {err.line}: key {err.key} {err.problem}") from None
    except yaml.YAMLError as err:
        mark = getattr(err, "problem_mark", None)
        where = f" at line {mark.line + 1}, column {mark.column + 1}" if mark else ""
        problem = getattr(err, "problem", None) or str(err).splitlines()[0]
        raise ConfigError(f"{name}{where} is not valid YAML ({problem}); fix the file") from None
    if data is None:
        return {}
    if not isinstance(data, dict):
        raise ConfigError(f"{name} must hold a mapping of keys, not a {type(data).__name__}")
    return data


def load_schema(path: str | Path, task: taskspec.TaskSpec | None = None) -> dict[str, Any]:
    """The config schema for `task` (default: the built-in default task), with what depends
    on the task filled in (`for_task`) and the data sets' names, and `grid` and
    `search.space` derived from `train`."""
    schema = load_yaml(path)
    schema["x-file"] = str(path)
    task = task or taskspec.read(taskspec.DEFAULT)
    _fill_task(schema, task)
    train = schema["properties"]["train"]["properties"]
    schema["properties"]["data"]["properties"]["dataset"]["enum"] = sorted(catalog.DATASETS)
    grid = schema["properties"]["grid"]
    grid["additionalProperties"] = False
    grid["properties"] = {
        key: {
            "type": "array",
            "minItems": 1,
            "uniqueItems": True,
            "items": _without_default(spec),
            "description": f"Values of train.{key} to run.",
        }
        for key, spec in train.items()
    }
    space = schema["properties"]["search"]["properties"]["space"]
    distribution = space.pop("x-distribution")
    space["additionalProperties"] = False
    space["properties"] = {
        key: merge(
            distribution,
            {
                "properties": {"choice": {"items": _without_default(spec)}},
                "description": f"How train.{key} is sampled: one of the kinds below.",
            },
        )
        for key, spec in train.items()
    }
    return schema


def for_task(schema: Mapping[str, Any], task: taskspec.TaskSpec) -> dict[str, Any]:
    """The schema `load_schema` made, made again for `task`."""
    return load_schema(schema["x-file"], task)


def _fill_task(schema: dict[str, Any], task: taskspec.TaskSpec) -> None:
    """Give the schema the task's parameters (as `train` keys typed by their defaults), its
    architecture names and its metrics as the values of the metric keys."""
    properties = schema["properties"]
    train = properties["train"]["properties"]
    for key, default in task.params.items():
        if key in train:
            raise ConfigError(
                f"config key task: task file {task.name} declares PARAMS key {key!r}, which is "
                f"reprogrid's train.{key}; rename the parameter"
            )
        train[key] = {
            "type": taskspec.PARAM_TYPES[type(default)],
            "default": default,
            "description": f"A parameter of task {task.name} (its PARAMS).",
        }
    if task.archs is not None:
        train["arch"]["enum"] = list(task.archs)
    else:
        train["arch"]["pattern"] = rf"^{taskspec.ARCH_NAME.pattern}\Z"
        train["arch"]["maxLength"] = taskspec.ARCH_LENGTH
    # null (the schema file's default) stands for the task's first metric: the schema made
    # for the task says which, so every default a job or a notebook reads is concrete.
    slots = [
        (train["select_metric"], "val"),
        (properties["halving"]["properties"]["metric"], "val"),
        (properties["analysis"]["properties"]["criterion"]["properties"]["metric"], "test"),
    ]
    for spec, split in slots:
        spec["enum"] = [None, *task.metrics.columns(split)]
        spec["default"] = task.metrics.column(split)


def _without_default(spec: Mapping[str, Any]) -> dict[str, Any]:
    return {key: value for key, value in spec.items() if key not in ("default", "description")}


def merge(base: Mapping[str, Any], override: Mapping[str, Any]) -> dict[str, Any]:
    """Recursive merge; mappings merge key by key, anything else in `override` wins whole."""
    merged = copy.deepcopy(dict(base))
    for key, value in override.items():
        if isinstance(value, Mapping) and isinstance(merged.get(key), Mapping):
            merged[key] = merge(merged[key], value)
        else:
            merged[key] = copy.deepcopy(value)
    return merged


def retype_cli(values: Any) -> Any:
    """Give `--config` values the types YAML would give them in a file.

    Snakemake parses nested `--config` values with YAML's base loader, so every leaf arrives
    as a string (`train='{epochs: 2}'` gives "2"); reading each leaf again as YAML restores
    integers, floats, booleans and nulls.
    """
    if isinstance(values, Mapping):
        return {key: retype_cli(value) for key, value in values.items()}
    if isinstance(values, list):
        return [retype_cli(value) for value in values]
    if isinstance(values, str):
        try:
            parsed = yaml.safe_load(values)
        except yaml.YAMLError:
            return values
        return (
            parsed if isinstance(parsed, int | float | bool | type(None) | list | dict) else values
        )
    return values


class Resolution(NamedTuple):
    """A resolved configuration, which layer set each key it holds, the task it runs and
    the schema made for that task (`load_schema`)."""

    config: dict[str, Any]
    sources: dict[tuple[str, ...], str]
    task: taskspec.TaskSpec | None = None
    schema: dict[str, Any] | None = None

    def source(self, *key: str) -> str:
        """The layer that set `key` (a path such as ("train", "epochs")), for messages."""
        return source_of(self.sources, key)


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
        layer = _coerce(layer, schema)
        check_layer(layer, schema, source, _leaves(layers[index + 1 :]))
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


def source_of(sources: Mapping[tuple[str, ...], str], key: Iterable[str]) -> str:
    """The layer that set `key`, else the schema's default.

    Mappings merge key by key, so a key's layer is the last one that named the key itself.
    """
    return sources.get(tuple(key), "the schema's default")


def _experiment_name(
    layers: list[tuple[str, Mapping[str, Any]]], schema: Mapping[str, Any]
) -> tuple[str, str]:
    """The experiment the layers name and the layer naming it, checked before any file lookup."""
    spec = schema["properties"]["experiment"]
    source, name = "the schema's default", spec["default"]
    for where, layer in layers:
        if "experiment" in layer:
            source, name = shown(where), _coerce(layer["experiment"], spec)
    problem = (
        paths.name_problem(name, paths.EXPERIMENT_PUNCTUATION)
        if isinstance(name, str)
        else f"is {_YAML_KINDS.get(type(name), type(name).__name__)}, not a string"
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


def _coerce(value: Any, schema: Mapping[str, Any]) -> Any:
    """Turn what YAML reads differently from what users mean into the type the schema asks for.

    PyYAML reads `1e-3` as a string (YAML 1.1 wants `1.0e-3`) and `2.0` as a float; users
    mean the numbers 0.001 and 2. A number where only a string is allowed (an experiment
    named `2024`) becomes its text. Only these spellings are converted: a quoted "3" stays
    a string for validation to refuse, and so does anything else that does not fit.
    """
    types = schema.get("type")
    types = [types] if isinstance(types, str) else list(types or [])
    if isinstance(value, Mapping):
        props = schema.get("properties", {})
        return {key: _coerce(item, props.get(key, {})) for key, item in value.items()}
    if isinstance(value, list):
        return [_coerce(item, schema.get("items", {})) for item in value]
    if isinstance(value, bool):
        return value
    if isinstance(value, str) and ("number" in types or "integer" in types):
        if not _EXPONENT_NUMBER.fullmatch(value.strip()):
            return value
        value = float(value)
    if "integer" in types and isinstance(value, float) and value.is_integer():
        return int(value)
    if "number" in types and isinstance(value, int | float):
        # jsonschema counts inf and nan as numbers; as text, validation refuses them by name.
        return float(value) if math.isfinite(value) else repr(float(value))
    if types == ["string"] and isinstance(value, int):
        return str(value)
    return value


# What YAML 1.2 reads as a number but PyYAML (YAML 1.1) leaves a string: `1e-3`, `5E4`.
_EXPONENT_NUMBER = re.compile(r"[-+]?(?:[0-9]+\.?[0-9]*|\.[0-9]+)[eE][-+]?[0-9]+")


def _leaves(layers: Iterable[tuple[str, Mapping[str, Any]]]) -> set[tuple[Any, ...]]:
    """The key paths `layers` set a value at (a mapping's keys, not the mapping itself)."""
    found: set[tuple[Any, ...]] = set()

    def walk(values: Mapping[str, Any], path: tuple[Any, ...]) -> None:
        for key, value in values.items():
            if isinstance(value, Mapping) and value:
                walk(value, (*path, key))
            else:
                found.add((*path, key))

    for _, layer in layers:
        walk(layer, ())
    return found


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


def validate(config: Mapping[str, Any], schema: Mapping[str, Any]) -> None:
    """Refuse a config that breaks the schema, naming the first offending key."""
    validator = jsonschema.Draft202012Validator(schema)
    errors = list(validator.iter_errors(config))
    if errors:
        raise ConfigError(describe(first_error(errors)))


def fill_defaults(config: Mapping[str, Any], schema: Mapping[str, Any]) -> dict[str, Any]:
    """The config with every key the schema gives a default for filled in."""
    filled = copy.deepcopy(dict(config))
    for key, spec in schema.get("properties", {}).items():
        if key not in filled and "default" in spec:
            filled[key] = copy.deepcopy(spec["default"])
        if isinstance(filled.get(key), dict) and "properties" in spec:
            filled[key] = fill_defaults(filled[key], spec)
    return filled


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
        jsonschema.Draft202012Validator(_without_default(spec)).iter_errors(value)
    )
    return None if error is None else error.message


def check_semantics(resolution: Resolution) -> None:
    """Checks a schema cannot express: files that must exist, names that must agree, and
    sizes that must fit the data set."""
    config = resolution.config
    if is_idx_task(resolution):
        _check_raw_dir(config["data"]["raw_dir"], resolution.source("data", "raw_dir"))
        _check_split(resolution)
    else:
        _check_raw_path(config["data"]["raw_dir"], resolution.source("data", "raw_dir"))
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


def is_idx_task(resolution: Resolution) -> bool:
    """Whether the runs answer the built-in IDX task, whose data set `data.dataset` names."""
    return resolution.task is None or resolution.task.name == taskspec.DEFAULT


def _check_raw_path(raw: str | None, source: str) -> None:
    """What a task's `load` reads exists: a folder or a file (or nothing, for null)."""
    if raw is None or Path(raw).exists():
        return
    hint = " ('~' is not expanded: write the full path)" if raw.startswith("~") else ""
    raise ConfigError(
        f"config key data.raw_dir (set by {source}): {raw} does not exist{hint}; point it at "
        "the folder or file the task's load reads, or set it to null"
    )


def _check_raw_dir(raw_dir: str | None, source: str) -> None:
    if raw_dir is None:
        return
    key = f"config key data.raw_dir (set by {source})"
    folder = Path(raw_dir)
    try:
        folder.stat()
    except (FileNotFoundError, NotADirectoryError):
        pass
    except OSError as err:
        # A path too long, or a folder on the way that may not be entered: is_file() and
        # is_dir() raise these rather than answer.
        raise ConfigError(
            f"{key}: {provenance.shown(raw_dir)} cannot be looked up ({err.strerror}); point "
            "it at the folder holding the four IDX files"
        ) from None
    if folder.is_file():
        raise ConfigError(
            f"{key}: {raw_dir} is a file, not a folder; point it at the folder holding the "
            f"four IDX files (this one lies in {folder.parent})"
        )
    if not folder.is_dir():
        hint = " ('~' is not expanded: write the full path)" if raw_dir.startswith("~") else ""
        raise ConfigError(
            f"{key}: folder {raw_dir} does not exist{hint}; "
            "point it at the folder holding the four IDX files"
        )
    missing = [
        name for name in catalog.IDX_FILES.values() if catalog.find_idx_file(folder, name) is None
    ]
    if missing:
        raise ConfigError(
            f"{key}: {raw_dir} lacks {', '.join(missing)} (.gz or plain); "
            "copy the four IDX files there"
        )


def _training_images(config: Mapping[str, Any]) -> tuple[int, str] | None:
    """How many images the training set has, and where that number comes from."""
    dataset = config["data"]["dataset"]
    raw_dir = config["data"]["raw_dir"]
    if raw_dir is None:
        return catalog.DATASETS[dataset].train_count, f"the {dataset} training set"
    path = catalog.find_idx_file(Path(raw_dir), catalog.IDX_FILES["train_images"])
    count = rawfiles.idx_count(path)
    return None if count is None else (count, shown(str(path)))


def _check_split(resolution: Resolution) -> None:
    """The validation split holds an image per class or more, and leaves every batch size
    at most the training images left."""
    config = resolution.config
    known = _training_images(config)
    if known is None:
        return
    count, origin = known
    fraction = config["data"]["val_fraction"]
    key = f"config key data.val_fraction (set by {resolution.source('data', 'val_fraction')})"
    n_val = validation_count(count, fraction)
    n_train = count - n_val
    classes = catalog.DATASETS[config["data"]["dataset"]].num_classes
    if n_train < 1:
        raise ConfigError(
            f"{key}: {fraction} leaves no training images ({origin} has {count}); lower it"
        )
    if n_val < classes:
        raise ConfigError(
            f"{key}: {fraction} holds out {n_val} of {count} images ({origin}) for validation, "
            f"fewer than one per class ({classes}); raise it to at least "
            f"{_round_up(classes / count)}"
        )
    for where, key_path, size in _batch_sizes(config):
        if size > n_train:
            raise ConfigError(
                f"config key {where} (set by {resolution.source(*key_path)}): {size} is larger "
                f"than the training split ({n_train} images: {count} in {origin} less {n_val} "
                f"for validation); use at most {n_train}"
            )


def _round_up(value: float) -> float:
    """`value` rounded up to two significant digits, so a bound quoted to the user holds."""
    scale = 10 ** (1 - math.floor(math.log10(value)))
    return math.ceil(value * scale) / scale


def _batch_sizes(config: Mapping[str, Any]) -> list[tuple[str, tuple[str, ...], int]]:
    """The training batch sizes the runs use, each with the key that sets it; a sampled
    batch size, every size its distribution can give at most."""
    if "batch_size" in config["grid"]:
        sizes = config["grid"]["batch_size"]
        return [(f"grid.batch_size[{i}]", ("grid", "batch_size"), n) for i, n in enumerate(sizes)]
    sampled = config["search"]["space"].get("batch_size")
    if sampled:
        key = ("search", "space", "batch_size")
        sizes = sampled.get("choice") or sampled["int"][1:]
        return [("search.space.batch_size", key, n) for n in sizes]
    return [("train.batch_size", ("train", "batch_size"), config["train"]["batch_size"])]


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
