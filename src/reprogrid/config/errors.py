"""How a refused configuration is worded: one line that names the key, its layer and the fix.

Resolution (`reprogrid.config.resolve`) decides what is wrong; this module says it: it turns a
jsonschema error into the words config/README.md uses, shows a layer's file relative to
the working directory, and suggests the name closest to a misspelt one.
"""

from __future__ import annotations

import difflib
from collections.abc import Iterable
from pathlib import Path
from typing import Any

import jsonschema

from reprogrid.plan import paths
from reprogrid.record import provenance


class ConfigError(ValueError):
    """A configuration a run must not start with; the message is meant for the user as is."""


# Schema types in the words config/README.md uses.
_TYPE_WORDS = {"object": "mapping", "array": "list"}

_BOUNDS = {
    "minimum": "at least",
    "exclusiveMinimum": "greater than",
    "maximum": "at most",
    "exclusiveMaximum": "less than",
}


def shown(source: str) -> str:
    """A layer's name for messages: a path relative to the working directory when inside it."""
    path = Path(source)
    if path.is_absolute() and path.is_relative_to(Path.cwd()):
        return str(path.relative_to(Path.cwd()))
    return source


def unsafe_name(
    key: str, source: str, value: Any, what: str, problem: str, punctuation: str
) -> str:
    """A value that names a folder but cannot (`paths.name_problem` says why), in one line."""
    allowed = ", ".join(f"'{char}'" for char in punctuation[:-1]) + f" and '{punctuation[-1]}'"
    return (
        f"config key {key} (set by {source}): {provenance.shown(value)} is not a valid {what}: it "
        f"{problem}; it names a folder, so use at most {paths.NAME_MAX} letters, digits, "
        f"{allowed}, starting with a letter or digit"
    )


def did_you_mean(value: Any, choices: Iterable[Any], prefix: str = "") -> str:
    """A hint naming the choice closest to `value`, ignoring case, or nothing."""
    by_lower = {str(choice).lower(): str(choice) for choice in choices}
    close = difflib.get_close_matches(str(value).lower(), list(by_lower), n=1)
    return f" (did you mean '{prefix}{by_lower[close[0]]}'?)" if close else ""


def typo_edits(name: str, other: str) -> int:
    """How many edits from a known name count as a typo of it.

    Two for names of five characters or more, one for three or four, none below: between
    very short names one edit is already a different word.
    """
    return min(2, (min(len(name), len(other)) - 1) // 2)


def edits(first: str, second: str) -> int:
    """Levenshtein distance, ignoring case: insertions, deletions and substitutions."""
    first, second = first.lower(), second.lower()
    previous = list(range(len(second) + 1))
    for i, char in enumerate(first, 1):
        current = [i]
        for j, other in enumerate(second, 1):
            current.append(
                min(previous[j] + 1, current[j - 1] + 1, previous[j - 1] + (char != other))
            )
        previous = current
    return previous[-1]


def typos_of(name: str, known: Iterable[str]) -> list[str]:
    """The names in `known` that `name` is most likely a typo of (see `typo_edits`)."""
    return [other for other in known if edits(name, other) <= typo_edits(name, other)]


def first_error(errors: Iterable[jsonschema.ValidationError]) -> jsonschema.ValidationError:
    """The error to report of several: unknown keys first, since a typo explains the rest."""
    return min(
        errors,
        key=lambda error: (
            error.validator != "additionalProperties",
            len(error.absolute_path),
            str(error.path),
        ),
    )


def _key(path: Iterable[Any]) -> str:
    text = ""
    for part in path:
        text += f"[{part}]" if isinstance(part, int) else (f".{part}" if text else str(part))
    return text or "the top level"


def describe(error: jsonschema.ValidationError, source: str = "") -> str:
    """A schema error in one line: the key, the layer `source` that set it, and what to do."""
    origin = f" (set by {source})" if source else ""
    key = _key(error.absolute_path) + origin
    why = f" ({error.schema['x-why']})" if "x-why" in error.schema else ""
    if error.validator == "additionalProperties":
        return _unknown_keys(error, source)
    if error.validator == "enum":
        hint = did_you_mean(error.instance, error.validator_value)
        choices = ", ".join(map(str, error.validator_value))
        return (
            f"config key {key}: unknown value {error.instance!r}{hint}; "
            f"choose one of: {choices}{why}"
        )
    if error.validator == "uniqueItems":
        return f"config key {key}: {error.instance} lists a value twice; list each value once"
    if error.validator in ("minItems", "maxItems"):
        bound = "at least" if error.validator == "minItems" else "at most"
        count = error.validator_value
        wanted = f"{bound} {'one value' if count == 1 else f'{count} values'}"
        why = f" ({error.schema['x-why']})" if "x-why" in error.schema else ""
        listed = (
            f"{error.instance} lists {len(error.instance)}"
            if error.instance
            else "the list is empty"
        )
        return f"config key {key}: {listed}; give {wanted}{why}"
    if error.validator == "required":
        where = f"config key {key}" if error.absolute_path else f"the config{origin}"
        return f"{where}: {error.message}; add it"
    if error.validator == "type":
        wanted = error.validator_value
        wanted = [wanted] if isinstance(wanted, str) else wanted
        wanted = " or ".join(_TYPE_WORDS.get(name, name) for name in wanted)
        if error.instance is None:
            return f"config key {key} has no value (null); give it a {wanted} or delete the key"
        return f"config key {key}: {error.instance!r} is not a valid {wanted}"
    if error.validator in _BOUNDS:
        bound = _BOUNDS[error.validator]
        return f"config key {key}: {error.instance!r} must be {bound} {error.validator_value}{why}"
    if error.validator == "pattern":
        return (
            f"config key {key}: {error.instance!r} is not allowed here; use letters, digits, "
            "'_', '.' and '-'"
        )
    return f"config key {key}: {error.message}"


def _unknown_keys(error: jsonschema.ValidationError, source: str) -> str:
    allowed = sorted(error.schema.get("properties", {}))
    unknown = sorted(set(error.instance) - set(allowed))
    prefix = f"{_key(error.absolute_path)}." if error.absolute_path else ""
    within = f" in {source}" if source else ""
    parts = [
        f"unknown config key '{prefix}{name}'{within}{did_you_mean(name, allowed, prefix)}"
        for name in unknown
    ]
    return "; ".join(parts) + f"; allowed here: {', '.join(allowed)}"
