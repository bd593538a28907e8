"""JSON read into typed dataclasses: every field checked against its annotation, so that a
record from anyone is refused, naming the field, before a reader trusts a value of it."""

from __future__ import annotations

import dataclasses
import types
import typing
from pathlib import Path
from typing import Any

JSON_KINDS = {
    dict: "an object",
    list: "a list",
    str: "a string",
    int: "an integer",
    float: "a number",
    bool: "true or false",
    type(None): "null",
}


class ProvenanceError(ValueError):
    """A provenance.json that is not a well-formed record; the message names the field."""

    def __init__(self, path: str | Path, problem: str, field: str = "") -> None:
        self.path, self.problem, self.field = str(path), problem, field
        where = f"field `{field}` " if field else ""
        super().__init__(f"{path}: {where}{problem}")


def shown(value: Any) -> str:
    """A value as an error message shows it: its repr, cut to 60 characters."""
    text = repr(value)
    return text if len(text) <= 60 else text[:57] + "..."


def typed_value(path: str | Path, kind: Any, value: Any, field: str) -> Any:
    """`value` read as `kind` (a dataclass, a built-in, a union, list[...] or dict[str, ...])."""
    if kind is Any:
        return value
    origin, args = typing.get_origin(kind), typing.get_args(kind)
    if origin in (typing.Union, types.UnionType):
        for option in args:
            if _is(value, _json_kind(option)):
                return typed_value(path, option, value, field)
        names = " or ".join(JSON_KINDS[_json_kind(option)] for option in args)
        raise ProvenanceError(path, f"must be {names}, not {shown(value)}", field)
    if not _is(value, _json_kind(kind)):
        raise ProvenanceError(
            path, f"must be {JSON_KINDS[_json_kind(kind)]}, not {shown(value)}", field
        )
    if dataclasses.is_dataclass(kind):
        hints = typing.get_type_hints(kind)
        for key in value:
            if key not in hints:
                raise ProvenanceError(path, "is not a field of this record", _join(field, key))
        names = [f.name for f in dataclasses.fields(kind)]
        for name in names:
            if name not in value:
                raise ProvenanceError(path, "is missing", _join(field, name))
        return kind(**{n: typed_value(path, hints[n], value[n], _join(field, n)) for n in names})
    if origin is list:
        return [typed_value(path, args[0], item, f"{field}[{i}]") for i, item in enumerate(value)]
    if origin is dict:
        return {
            key: typed_value(path, args[1], item, _join(field, key)) for key, item in value.items()
        }
    return value


def _json_kind(kind: Any) -> type:
    """The Python type a JSON value of `kind` parses to: a dataclass is read from an object."""
    base = typing.get_origin(kind) or kind
    return dict if dataclasses.is_dataclass(base) else base


def _join(field: str, key: str) -> str:
    return f"{field}.{key}" if field else key


def _is(value: Any, kind: type) -> bool:
    """Whether a JSON value is of `kind`: true is no integer, and an integer is a number."""
    if isinstance(value, bool):
        return kind is bool
    if kind is float:
        return isinstance(value, int | float)
    return isinstance(value, kind)
