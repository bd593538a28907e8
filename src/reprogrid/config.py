"""Layered configuration: resolve, type, validate, expand into runs.

Precedence, lowest first: the schema's defaults < `config/config.yaml` <
`config/experiments/<name>.yaml` < files given with `--configfile` < `--config` values.
Everything a user can get wrong is refused here, before any job starts, with a
`ConfigError` whose one-line message names the key, file or value and what to do.

This module knows nothing about Snakemake and imports nothing heavy.
"""

from __future__ import annotations

import copy
import difflib
import itertools
import math
from collections.abc import Iterable, Mapping
from pathlib import Path
from typing import Any

import jsonschema
import yaml

from reprogrid import catalog, paths

CORE_AXES = paths.CORE_AXES
DEBUG_EXPERIMENT = "debug"
DEBUG_MAX_BATCHES = 5


class ConfigError(ValueError):
    """A configuration a run must not start with; the message is meant for the user as is."""


def load_yaml(path: str | Path) -> dict[str, Any]:
    """Read a YAML mapping, refusing a broken or non-mapping file by name."""
    path = Path(path)
    try:
        text = path.read_text(encoding="utf-8")
    except OSError as err:
        raise ConfigError(f"cannot read config file {path}: {err.strerror}") from None
    try:
        data = yaml.safe_load(text)
    except yaml.YAMLError as err:
        mark = getattr(err, "problem_mark", None)
        where = f" at line {mark.line + 1}, column {mark.column + 1}" if mark else ""
        problem = getattr(err, "problem", None) or str(err).splitlines()[0]
        raise ConfigError(f"{path}{where} is not valid YAML ({problem}); fix the file") from None
    if data is None:
        return {}
    if not isinstance(data, dict):
        raise ConfigError(f"{path} must hold a mapping of keys, not a {type(data).__name__}")
    return data


def load_schema(path: str | Path) -> dict[str, Any]:
    """The config schema, with the registries' names filled in and `grid` derived from `train`."""
    schema = load_yaml(path)
    train = schema["properties"]["train"]["properties"]
    train["arch"]["enum"] = sorted(catalog.ARCHITECTURES)
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
    return schema


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


def resolve(
    schema: Mapping[str, Any],
    base_file: str | Path,
    experiments_dir: str | Path,
    cli_files: Iterable[str | Path] = (),
    cli_values: Mapping[str, Any] | None = None,
) -> dict[str, Any]:
    """Build, type and validate the configuration from its layers (see the module docstring)."""
    base = load_yaml(base_file)
    files = [load_yaml(path) for path in cli_files]
    overrides = retype_cli(dict(cli_values or {}))

    top = base
    for layer in [*files, overrides]:
        top = merge(top, layer)
    experiment = top.get("experiment", "default")
    layers = [base]
    if isinstance(experiment, str | int | float) and not isinstance(experiment, bool):
        experiment_file = Path(experiments_dir) / f"{experiment}.yaml"
        if experiment_file.is_file():
            layers.append(load_yaml(experiment_file))
        elif "experiment" in overrides and str(experiment) != "default":
            known = sorted(path.stem for path in Path(experiments_dir).glob("*.yaml"))
            raise ConfigError(
                f"experiment={experiment}: no file {experiment_file}; "
                f"known experiments: {', '.join(known) or 'none'}"
            )
    layers += [*files, overrides]

    config: dict[str, Any] = {}
    for layer in layers:
        config = merge(config, layer)
    config = _coerce(config, schema)
    validate(config, schema)
    config = fill_defaults(config, schema)
    if config["debug"]:
        config = _debug_version(config)
    check_semantics(config)
    return config


def _coerce(value: Any, schema: Mapping[str, Any]) -> Any:
    """Turn what YAML leaves as strings or floats into the number the schema asks for.

    PyYAML reads `1e-3` as a string (YAML 1.1 wants `1.0e-3`) and `2.0` as a float;
    users mean the numbers 0.001 and 2. Anything that does not convert cleanly is left
    for validation to refuse.
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
    if "integer" in types:
        number = _as_number(value)
        if number is not None and math.isfinite(number) and float(number).is_integer():
            return int(number)
    if "number" in types:
        number = _as_number(value)
        if number is not None and math.isfinite(number):
            return float(number)
    return value


def _as_number(value: Any) -> float | None:
    if isinstance(value, int | float):
        return value
    if isinstance(value, str):
        try:
            return float(value.strip())
        except ValueError:
            return None
    return None


def validate(config: Mapping[str, Any], schema: Mapping[str, Any]) -> None:
    """Refuse a config that breaks the schema, naming the first offending key."""
    validator = jsonschema.Draft202012Validator(schema)
    errors = sorted(validator.iter_errors(config), key=_error_rank)
    if errors:
        raise ConfigError(_describe(errors[0]))


def _error_rank(error: jsonschema.ValidationError) -> tuple:
    # Unknown keys first: a typo explains the other errors it causes.
    return (error.validator != "additionalProperties", len(error.absolute_path), str(error.path))


def _key(path: Iterable[Any]) -> str:
    text = ""
    for part in path:
        text += f"[{part}]" if isinstance(part, int) else (f".{part}" if text else str(part))
    return text or "the top level"


def _describe(error: jsonschema.ValidationError) -> str:
    key = _key(error.absolute_path)
    schema = error.schema
    if error.validator == "additionalProperties":
        allowed = sorted(schema.get("properties", {}))
        unknown = sorted(set(error.instance) - set(allowed))
        parts = []
        for name in unknown:
            close = difflib.get_close_matches(str(name), allowed, n=1)
            hint = f" (did you mean '{close[0]}'?)" if close else ""
            where = f"{key}.{name}" if error.absolute_path else str(name)
            parts.append(f"unknown config key '{where}'{hint}")
        return "; ".join(parts) + f"; allowed here: {', '.join(allowed)}"
    if error.validator == "enum":
        close = difflib.get_close_matches(str(error.instance), map(str, error.validator_value), 1)
        hint = f" (did you mean '{close[0]}'?)" if close else ""
        choices = ", ".join(map(str, error.validator_value))
        return f"config key {key}: unknown value {error.instance!r}{hint}; choose one of: {choices}"
    if error.validator == "uniqueItems":
        return f"config key {key}: {error.instance} lists a value twice; list each value once"
    if error.validator == "minItems":
        return f"config key {key}: the list is empty; give at least one value"
    if error.validator == "required":
        return f"config key {key}: {error.message}; add it"
    if error.validator == "type":
        wanted = error.validator_value
        wanted = " or ".join(wanted) if isinstance(wanted, list) else wanted
        return f"config key {key}: {error.instance!r} is not a valid {wanted}"
    if error.validator in ("minimum", "exclusiveMinimum", "maximum", "exclusiveMaximum"):
        bound = {
            "minimum": "at least",
            "exclusiveMinimum": "greater than",
            "maximum": "at most",
            "exclusiveMaximum": "less than",
        }[error.validator]
        return f"config key {key}: {error.instance!r} must be {bound} {error.validator_value}"
    if error.validator == "pattern":
        return (
            f"config key {key}: {error.instance!r} is not allowed here; use letters, digits, "
            "'_', '.' and '-'"
        )
    return f"config key {key}: {error.message}"


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
    config = copy.deepcopy(config)
    config["experiment"] = DEBUG_EXPERIMENT
    config["grid"]["seed"] = config["grid"]["seed"][:1]
    for key, values in config["grid"].items():
        if key not in CORE_AXES:
            config["grid"][key] = values[:1]
    config["train"]["epochs"] = 1
    config["train"]["max_batches"] = DEBUG_MAX_BATCHES
    return config


def check_semantics(config: Mapping[str, Any]) -> None:
    """Checks a schema cannot express: files that must exist, names that must agree."""
    raw_dir = config["data"]["raw_dir"]
    if raw_dir is not None:
        folder = Path(raw_dir)
        if not folder.is_dir():
            raise ConfigError(
                f"config key data.raw_dir: folder {raw_dir} does not exist; "
                "point it at the folder holding the four IDX files"
            )
        missing = [
            name
            for name in catalog.IDX_FILES.values()
            if catalog.find_idx_file(folder, name) is None
        ]
        if missing:
            raise ConfigError(
                f"config key data.raw_dir: {raw_dir} lacks {', '.join(missing)} (.gz or plain); "
                "copy the four IDX files there"
            )
    criterion = config["analysis"]["criterion"]
    if criterion:
        archs = config["grid"]["arch"]
        for role in ("better", "worse"):
            if criterion[role] not in archs:
                raise ConfigError(
                    f"config key analysis.criterion.{role}: {criterion[role]!r} is not in "
                    f"grid.arch ({', '.join(archs)})"
                )
        if criterion["better"] == criterion["worse"]:
            raise ConfigError("config key analysis.criterion: better and worse must differ")


def expand_grid(config: Mapping[str, Any], schema: Mapping[str, Any]) -> dict[str, dict]:
    """One entry per run: run id -> that run's complete training parameters."""
    train_defaults = {
        key: spec.get("default")
        for key, spec in schema["properties"]["train"]["properties"].items()
    }
    grid = config["grid"]
    axes = list(grid)
    runs: dict[str, dict] = {}
    for values in itertools.product(*(grid[axis] for axis in axes)):
        point = dict(zip(axes, values, strict=True))
        run = paths.run_id(point, train_defaults)
        runs[run] = {**config["train"], **point}
    return runs


def grid_axes(config: Mapping[str, Any]) -> list[str]:
    """The grid's axes other than the seed: what a summary groups runs by."""
    return [axis for axis in config["grid"] if axis != "seed"]
