"""Config layers: each file read strictly, merged key by key, and the resolved config with
the layer that set each value (`Resolution`).

A file is YAML with each key once, no merge keys and only the kinds JSON has; a file that
breaks a rule is refused in one line naming the file, the line and the key.
"""

from __future__ import annotations

import copy
from collections.abc import Iterable, Mapping
from pathlib import Path
from typing import Any, NamedTuple

import yaml

from reprogrid.config.errors import (
    ConfigError,
    shown,
)
from reprogrid.tasks import spec as taskspec


class _KeyError(Exception):
    """A key YAML reads but a config must not have, found at `line`."""

    def __init__(self, key: Any, line: int, problem: str) -> None:
        super().__init__(key, line, problem)
        self.key, self.line, self.problem = key, line, problem


_MERGE_TAG = "tag:yaml.org,2002:merge"


YAML_KINDS = {
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
                kind = YAML_KINDS.get(type(key), type(key).__name__)
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


def merge(base: Mapping[str, Any], override: Mapping[str, Any]) -> dict[str, Any]:
    """Recursive merge; mappings merge key by key, anything else in `override` wins whole."""
    merged = copy.deepcopy(dict(base))
    for key, value in override.items():
        if isinstance(value, Mapping) and isinstance(merged.get(key), Mapping):
            merged[key] = merge(merged[key], value)
        else:
            merged[key] = copy.deepcopy(value)
    return merged


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


def source_of(sources: Mapping[tuple[str, ...], str], key: Iterable[str]) -> str:
    """The layer that set `key`, else the schema's default.

    Mappings merge key by key, so a key's layer is the last one that named the key itself.
    """
    return sources.get(tuple(key), "the schema's default")
