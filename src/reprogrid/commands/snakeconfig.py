"""A config resolved as Snakemake resolves it from the same command line: `--configfile`
files and `--config` values read as Snakemake reads them (`snakemake.cli.parse_config`,
written again here because nothing in the package imports Snakemake), then
`config.resolve`. `status` and `compare` see the grid Snakemake would build."""

from __future__ import annotations

import re
from collections.abc import Iterable, Mapping, Sequence
from pathlib import Path
from typing import Any

import yaml

from reprogrid.config import resolve as configuration
from reprogrid.config import schema as config_schema
from reprogrid.config.errors import ConfigError

SCHEMA = Path("workflow/schemas/config.schema.yaml")
BASE_CONFIG = Path("config/config.yaml")
EXPERIMENTS = Path("config/experiments")


class StatusError(RuntimeError):
    """Input `status` cannot read; the message is one line for the user."""


def parse_config_values(entries: Iterable[str]) -> dict[str, Any]:
    """`--config key=value ...` read as Snakemake reads them (`snakemake.cli.parse_config`).

    Each value is tried as an int, a float, True/False, then YAML's base loader (nested
    values arrive as strings; `config.resolve` types them as a file would), else a string.
    """
    values: dict[str, Any] = {}
    for entry in entries:
        key, sep, value = entry.partition("=")
        if not sep or not re.fullmatch(r"[a-zA-Z_][\w-]*\w", key):
            raise StatusError(f"--config {entry!r} is not key=value; write e.g. train.epochs=2")
        values[key] = None if value == "" else _snakemake_value(value.strip("'\""))
    return values


def _snakemake_value(text: str) -> Any:
    for parse in (int, float):
        try:
            return parse(text)
        except ValueError:
            pass
    if text in ("True", "False"):
        return text == "True"
    try:
        return yaml.load(text, Loader=yaml.BaseLoader)
    except yaml.YAMLError:
        return text


def resolve_config(
    configfiles: Sequence[str], values: Mapping[str, Any], experiment: str | None
) -> tuple[dict[str, Any], dict[str, Any]]:
    """The configuration Snakemake would resolve in this folder, and the schema made for
    its task."""
    if not BASE_CONFIG.is_file() or not SCHEMA.is_file():
        raise StatusError(
            f"no {BASE_CONFIG} or {SCHEMA} here; run reprogrid status in the workflow folder "
            "(the one holding the Snakefile)"
        )
    for path in configfiles:
        if not Path(path).is_file():
            raise StatusError(f"--configfile {path}: no such file")
    values = dict(values)
    if experiment is not None:
        values["experiment"] = experiment
    schema = config_schema.load_schema(SCHEMA)
    try:
        resolution = configuration.resolve_with_sources(
            schema, BASE_CONFIG, EXPERIMENTS, configfiles, values
        )
    except ConfigError as err:
        raise StatusError(str(err)) from None
    # The schema made for the config's task: its PARAMS are train keys, as Snakemake sees them.
    return resolution.config, resolution.schema
