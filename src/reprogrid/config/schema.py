"""The schema a config is checked against: the JSON schema, specialised for a task.

`load_schema` reads workflow/schemas/config.schema.yaml and, for a task, makes its PARAMS
train keys, its ARCHS the enum of arch and its first metric the default of every metric key;
`validate`, `fill_defaults` and `retype_cli` apply it to the values of a layer.
"""

from __future__ import annotations

import copy
import functools
import math
import re
from collections.abc import Iterable, Mapping
from pathlib import Path
from typing import Any

import jsonschema
import yaml

from reprogrid.config.errors import (
    ConfigError,
    describe,
    first_error,
)
from reprogrid.config.layers import load_yaml, merge
from reprogrid.datasets import catalog
from reprogrid.tasks import spec as taskspec


def load_schema(path: str | Path, task: taskspec.TaskSpec | None = None) -> dict[str, Any]:
    """The config schema for `task` (default: the built-in default task), with what depends
    on the task filled in (`for_task`) and the data sets' names, and `grid` and
    `search.space` derived from `train`."""
    stat = Path(path).stat()
    schema = copy.deepcopy(_schema_file(str(path), stat.st_mtime_ns, stat.st_size))
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
            "items": without_default(spec),
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
                "properties": {"choice": {"items": without_default(spec)}},
                "description": f"How train.{key} is sampled: one of the kinds below.",
            },
        )
        for key, spec in train.items()
    }
    return schema


@functools.lru_cache(maxsize=4)
def _schema_file(path: str, mtime_ns: int, size: int) -> dict[str, Any]:
    """The schema file as read, once per version of it (its modification time and size are
    the rest of the key): `for_task` makes the schema again from it, and parsing the YAML is
    most of what making one costs."""
    return load_yaml(path)


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


def without_default(spec: Mapping[str, Any]) -> dict[str, Any]:
    return {key: value for key, value in spec.items() if key not in ("default", "description")}


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


def coerce(value: Any, schema: Mapping[str, Any]) -> Any:
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
        return {key: coerce(item, props.get(key, {})) for key, item in value.items()}
    if isinstance(value, list):
        return [coerce(item, schema.get("items", {})) for item in value]
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


def leaves(layers: Iterable[tuple[str, Mapping[str, Any]]]) -> set[tuple[Any, ...]]:
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
