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
import re
import shutil
from collections.abc import Hashable, Iterable, Mapping
from pathlib import Path
from typing import Any

import jsonschema
import yaml

from reprogrid import catalog, paths

DEBUG_EXPERIMENT = "debug"
DEBUG_MAX_BATCHES = 5


class ConfigError(ValueError):
    """A configuration a run must not start with; the message is meant for the user as is."""


class _DuplicateKey(Exception):
    def __init__(self, key: Any, line: int) -> None:
        super().__init__(key, line)
        self.key, self.line = key, line


class _UniqueKeyLoader(yaml.SafeLoader):
    """YAML's safe loader, except that a key given twice in one mapping is an error.

    Plain YAML keeps the last value silently, so `train:` written twice would drop half
    of what the user wrote.
    """

    def construct_mapping(self, node, deep=False):
        seen = set()
        for key_node, _ in node.value:
            key = self.construct_object(key_node, deep=True)
            if not isinstance(key, Hashable):
                continue  # the safe loader refuses it with its own message
            if key in seen:
                raise _DuplicateKey(key, key_node.start_mark.line + 1)
            seen.add(key)
        return super().construct_mapping(node, deep=deep)


def load_yaml(path: str | Path) -> dict[str, Any]:
    """Read a YAML mapping, refusing a broken or non-mapping file by name."""
    path = Path(path)
    try:
        text = path.read_text(encoding="utf-8")
    except OSError as err:
        raise ConfigError(f"cannot read config file {_shown(str(path))}: {err.strerror}") from None
    try:
        data = yaml.load(text, Loader=_UniqueKeyLoader)
    except _DuplicateKey as err:
        raise ConfigError(
            f"{_shown(str(path))} at line {err.line}: key {err.key!r} is given twice; keep one"
        ) from None
    except yaml.YAMLError as err:
        mark = getattr(err, "problem_mark", None)
        where = f" at line {mark.line + 1}, column {mark.column + 1}" if mark else ""
        problem = getattr(err, "problem", None) or str(err).splitlines()[0]
        raise ConfigError(
            f"{_shown(str(path))}{where} is not valid YAML ({problem}); fix the file"
        ) from None
    if data is None:
        return {}
    if not isinstance(data, dict):
        raise ConfigError(
            f"{_shown(str(path))} must hold a mapping of keys, not a {type(data).__name__}"
        )
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
    """Build, type and validate the configuration from its layers (see the module docstring).

    Each layer is checked on its own first, so a message names the file (or `--config`)
    that set a bad key; the merged result is then checked whole. The result depends only
    on the arguments and the files they name: a cluster job, given the same `--configfiles`
    and `--config` again, resolves the same configuration.
    """
    base = (str(base_file), load_yaml(base_file))
    files = [(str(path), load_yaml(path)) for path in cli_files]
    overrides = ("--config", retype_cli(dict(cli_values or {})))

    experiment = _experiment_name([base, *files, overrides], schema)
    schema_default = schema["properties"]["experiment"]["default"]
    layers = [base]
    experiment_file = Path(experiments_dir) / f"{experiment}.yaml"
    if experiment_file.is_file():
        layers.append((str(experiment_file), load_yaml(experiment_file)))
        _check_experiment_file(experiment, _shown(str(experiment_file)), layers[-1][1])
    elif "experiment" in overrides[1] and experiment != schema_default:
        known = sorted(path.stem for path in Path(experiments_dir).glob("*.yaml"))
        raise ConfigError(
            f"config key experiment: no file {_shown(str(experiment_file))} for experiment "
            f"{experiment!r}; "
            f"known experiments: {', '.join(sorted({schema_default, *known}))}"
        )
    layers += [*files, overrides]

    config: dict[str, Any] = {}
    for source, layer in layers:
        layer = _coerce(layer, schema)
        check_layer(layer, schema, source)
        config = merge(config, layer)
    validate(config, schema)
    config = fill_defaults(config, schema)
    if config["debug"]:
        config = _debug_version(config)
    check_semantics(config)
    return config


def _experiment_name(layers: list[tuple[str, Mapping[str, Any]]], schema: Mapping[str, Any]) -> str:
    """The experiment the layers name, checked before it is used to find a file."""
    spec = schema["properties"]["experiment"]
    source, name = "the schema's default", spec["default"]
    for where, layer in layers:
        if "experiment" in layer:
            source, name = where, _coerce(layer["experiment"], spec)
    if not isinstance(name, str) or not re.search(spec["pattern"], name):
        raise ConfigError(
            f"config key experiment: {name!r} (set by {source}) is not a valid experiment name; "
            "use letters, digits, '_', '.' and '-'"
        )
    debug = [layer["debug"] for _, layer in layers if "debug" in layer]
    # A debug run's own resolved config (debug: true) names it; nothing else may.
    if name == DEBUG_EXPERIMENT and not (debug and debug[-1] is True):
        raise ConfigError(
            f"config key experiment: {name!r} (set by {source}) is reserved for debug runs; "
            "use --config debug=True"
        )
    return name


def _check_experiment_file(experiment: str, source: str, layer: Mapping[str, Any]) -> None:
    named = layer.get("experiment", experiment)
    if named != experiment:
        raise ConfigError(
            f"config key experiment: {source} sets experiment {named!r}; the file's name "
            "names the experiment, so remove the key"
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


def check_layer(layer: Mapping[str, Any], schema: Mapping[str, Any], source: str) -> None:
    """Refuse a bad key or value in one layer, naming the layer (`source`) that set it.

    Layers are partial, so keys the schema requires are checked only on the merged config.
    """
    validator = jsonschema.Draft202012Validator(schema)
    errors = [error for error in validator.iter_errors(layer) if error.validator != "required"]
    if errors:
        raise ConfigError(_describe(min(errors, key=_error_rank), _shown(source)))


def validate(config: Mapping[str, Any], schema: Mapping[str, Any]) -> None:
    """Refuse a config that breaks the schema, naming the first offending key."""
    validator = jsonschema.Draft202012Validator(schema)
    errors = list(validator.iter_errors(config))
    if errors:
        raise ConfigError(_describe(min(errors, key=_error_rank)))


def _error_rank(error: jsonschema.ValidationError) -> tuple:
    # Unknown keys first: a typo explains the other errors it causes.
    return (error.validator != "additionalProperties", len(error.absolute_path), str(error.path))


def _key(path: Iterable[Any]) -> str:
    text = ""
    for part in path:
        text += f"[{part}]" if isinstance(part, int) else (f".{part}" if text else str(part))
    return text or "the top level"


def _shown(source: str) -> str:
    """A layer's name for messages: a path relative to the working directory when inside it."""
    path = Path(source)
    if path.is_absolute() and path.is_relative_to(Path.cwd()):
        return str(path.relative_to(Path.cwd()))
    return source


def _did_you_mean(value: Any, choices: Iterable[Any], prefix: str = "") -> str:
    """A hint naming the choice closest to `value`, ignoring case, or nothing."""
    by_lower = {str(choice).lower(): str(choice) for choice in choices}
    close = difflib.get_close_matches(str(value).lower(), list(by_lower), n=1)
    return f" (did you mean '{prefix}{by_lower[close[0]]}'?)" if close else ""


def _describe(error: jsonschema.ValidationError, source: str = "") -> str:
    origin = f" (set by {source})" if source else ""
    key = _key(error.absolute_path) + origin
    parent = _key(error.absolute_path)
    schema = error.schema
    if error.validator == "additionalProperties":
        allowed = sorted(schema.get("properties", {}))
        unknown = sorted(set(error.instance) - set(allowed))
        parts = []
        prefix = f"{parent}." if error.absolute_path else ""
        for name in unknown:
            hint = _did_you_mean(name, allowed, prefix)
            within = f" in {source}" if source else ""
            parts.append(f"unknown config key '{prefix}{name}'{within}{hint}")
        return "; ".join(parts) + f"; allowed here: {', '.join(allowed)}"
    if error.validator == "enum":
        hint = _did_you_mean(error.instance, error.validator_value)
        choices = ", ".join(map(str, error.validator_value))
        return f"config key {key}: unknown value {error.instance!r}{hint}; choose one of: {choices}"
    if error.validator == "uniqueItems":
        return f"config key {key}: {error.instance} lists a value twice; list each value once"
    if error.validator == "minItems":
        return f"config key {key}: the list is empty; give at least one value"
    if error.validator == "required":
        where = f"config key {key}" if error.absolute_path else f"the config{origin}"
        return f"{where}: {error.message}; add it"
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
    """The tiny version of `config` a debug run trains: first seed, one epoch, a few batches.

    Every architecture and learning rate stays, so each code path still runs once; every
    other axis keeps its first value, and the forced keys leave the grid altogether.
    """
    config = copy.deepcopy(config)
    forced = {"epochs": 1, "max_batches": DEBUG_MAX_BATCHES}
    config["experiment"] = DEBUG_EXPERIMENT
    grid = {key: values for key, values in config["grid"].items() if key not in forced}
    config["grid"] = {
        key: values if key in ("arch", "lr") else values[:1] for key, values in grid.items()
    }
    config["train"].update(forced)
    return config


def clear_debug_outputs() -> None:
    """Delete every output of earlier debug runs, so the next one starts from nothing."""
    for folder in (
        paths.experiment_dir(DEBUG_EXPERIMENT),
        paths.report_dir(DEBUG_EXPERIMENT),
        str(Path(paths.log_file(DEBUG_EXPERIMENT, "any")).parent),
    ):
        shutil.rmtree(folder, ignore_errors=True)


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
                    f"grid.arch ({', '.join(archs)}); add it there or set analysis.criterion "
                    "to null"
                )
        if criterion["better"] == criterion["worse"]:
            raise ConfigError("config key analysis.criterion: better and worse must differ")


def train_defaults(schema: Mapping[str, Any]) -> dict[str, Any]:
    """Every training parameter at the schema's default."""
    return {
        key: spec.get("default")
        for key, spec in schema["properties"]["train"]["properties"].items()
    }


def expand_grid(config: Mapping[str, Any], schema: Mapping[str, Any]) -> dict[str, dict]:
    """One entry per run: run id -> that run's complete training parameters.

    An axis beyond arch, lr and seed shows in a run id only where its value differs from
    the schema's default, so a run id is a function of the run's axis values alone, and
    listing an axis at its default moves and reruns nothing.
    """
    defaults = train_defaults(schema)
    grid = config["grid"]
    axes = list(grid)
    runs: dict[str, dict] = {}
    for values in itertools.product(*(grid[axis] for axis in axes)):
        point = dict(zip(axes, values, strict=True))
        runs[paths.run_id(point, defaults)] = {**config["train"], **point}
    return runs


def grid_axes(config: Mapping[str, Any]) -> list[str]:
    """What a summary groups runs by: arch, lr, and every other axis listing several values.

    An axis with one value splits no group, so listing one changes no summary.
    """
    return [
        axis
        for axis, values in config["grid"].items()
        if axis in ("arch", "lr") or (axis != "seed" and len(values) > 1)
    ]
