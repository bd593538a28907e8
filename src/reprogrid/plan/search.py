"""Sampled training values: the points a `search` block draws, the same for the same config.

A point gives each key of `search.space` one value. Its dimensions are the keys sorted by
name, so reordering the YAML moves nothing. A draw is a vector u in [0, 1)^d, mapped onto
each key's distribution; numbers are rounded to `SIGNIFICANT` digits, so run ids stay short
and a value printed is the value trained. Both methods are prefix-stable: draw i does not
depend on how many are asked for, so raising `search.samples` keeps every earlier point.

This module imports nothing heavy: numpy only to draw, scipy only for the Sobol' sequence.
"""

from __future__ import annotations

import itertools
import math
import warnings
from collections.abc import Iterator, Mapping
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    import numpy as np

KINDS = ("loguniform", "uniform", "int", "choice")
SIGNIFICANT = 3


class SearchError(ValueError):
    """A space that cannot give the points asked for; `key` names the config key to change."""

    def __init__(self, key: tuple[str, ...], problem: str) -> None:
        super().__init__(key, problem)
        self.key, self.problem = key, problem


def rounded(value: float) -> float:
    """`value` to `SIGNIFICANT` significant digits, the precision every sampled number has."""
    return float(f"{value:.{SIGNIFICANT}g}")


def points(config: Mapping[str, Any], schema: Mapping[str, Any]) -> list[dict[str, Any]]:
    """The sampled training values of `config`: `search.samples` distinct points, in draw
    order, each a mapping key -> value typed as the `train` key in `schema` is (a float for
    a number key, whatever the distribution). Method grid samples nothing: one empty point.

    Draws equal after rounding count once; a space that cannot give `search.samples`
    distinct points raises SearchError naming search.samples.
    """
    search = config["search"]
    if search["method"] == "grid":
        return [{}]
    space = search["space"]
    keys = sorted(space)
    train = schema["properties"]["train"]["properties"]
    number = [_is_number_key(train[key]) for key in keys]
    wanted = search["samples"]
    size = _space_size([space[key] for key in keys])
    if size is not None and size < wanted:
        rounding = (
            f" (numbers are rounded to {SIGNIFICANT} significant digits)"
            if any(kind in ("uniform", "loguniform") for key in keys for kind in space[key])
            else ""
        )
        raise SearchError(
            ("search", "samples"),
            f"{wanted} distinct points asked, but search.space holds only {size}{rounding}; "
            f"lower search.samples to {size} or widen search.space",
        )
    budget = 100 * wanted + 100
    found: dict[tuple, dict[str, Any]] = {}
    draws = _unit_draws(search["method"], search["seed"], len(keys))
    for u in itertools.islice(draws, budget):
        point = {
            key: _value(space[key], float(x), is_number)
            for key, x, is_number in zip(keys, u, number, strict=True)
        }
        found.setdefault(tuple(point.values()), point)
        if len(found) == wanted:
            return list(found.values())
    raise SearchError(
        ("search", "samples"),
        f"{wanted} distinct points asked, but {budget} draws from search.space gave only "
        f"{len(found)} (values are rounded to {SIGNIFICANT} significant digits); lower "
        f"search.samples to {len(found)} or widen search.space",
    )


def _space_size(distributions: list[Mapping[str, Any]]) -> int | None:
    """How many distinct points the distributions can give, counted without drawing any;
    None where a range of numbers reaches 0, near which rounded values are countless."""
    size = 1
    for distribution in distributions:
        (kind, values), *_ = distribution.items()
        if kind == "choice":
            size *= len(values)
        elif kind == "int":
            size *= values[1] - values[0] + 1
        else:
            count = _rounded_count(*values)
            if count is None:
                return None
            size *= count
    return size


def _rounded_count(low: float, high: float) -> int | None:
    """How many values a number drawn from [low, high] can have once `rounded`: every
    number of `SIGNIFICANT` digits from rounded(low) to rounded(high), since rounding keeps
    order and leaves such a number as it is; None where the range reaches 0."""
    if low <= 0 <= high:
        return None
    if high < 0:
        low, high = -high, -low
    return _rank(rounded(high)) - _rank(rounded(low)) + 1


def _rank(value: float) -> int:
    """The place of a positive number of `SIGNIFICANT` digits among all of them, in order:
    each power of ten holds 9 * 10^(SIGNIFICANT - 1) of them (1.00 to 9.99, 10.0 to 99.9)."""
    mantissa, exponent = f"{value:.{SIGNIFICANT - 1}e}".split("e")
    return 9 * 10 ** (SIGNIFICANT - 1) * int(exponent) + int(mantissa.replace(".", ""))


def _is_number_key(spec: Mapping[str, Any]) -> bool:
    types = spec.get("type")
    return "number" in ([types] if isinstance(types, str) else list(types or []))


def _unit_draws(method: str, seed: int, dims: int) -> Iterator[np.ndarray]:
    """Draw after draw in [0, 1)^dims; draw i is the same however many are taken."""
    return _random_draws(seed, dims) if method == "random" else _sobol_draws(seed, dims)


def _random_draws(seed: int, dims: int) -> Iterator[np.ndarray]:
    import numpy as np

    # One generator per draw, seeded by (seed, i): no draw depends on how many came before.
    for i in itertools.count():
        yield np.random.default_rng([seed, i]).random(dims)


def _sobol_draws(seed: int, dims: int) -> Iterator[np.ndarray]:
    import numpy as np
    from scipy.stats import qmc

    # A Generator, not the integer: scipy is moving from `seed` to `rng`, and an integer
    # gives different streams under the two names (scipy 1.17); a Generator, the same one.
    sampler = qmc.Sobol(dims, scramble=True, seed=np.random.default_rng(seed))
    while True:
        with warnings.catch_warnings():
            # Balance needs 2^m points at once; here a prefix of the sequence is the point.
            warnings.filterwarnings("ignore", "The balance properties", UserWarning)
            yield from sampler.random(64)


def _value(distribution: Mapping[str, Any], u: float, number: bool) -> Any:
    """The value that the unit draw `u` gives under `distribution` (one kind -> its values)."""
    (kind, values), *_ = distribution.items()
    if kind == "choice":
        return values[min(math.floor(u * len(values)), len(values) - 1)]
    low, high = values
    if kind == "int":
        value = min(math.floor(low + u * (high - low + 1)), high)
        return float(value) if number else value
    if kind == "uniform":
        return rounded(low + u * (high - low))
    return rounded(math.exp(math.log(low) + u * (math.log(high) - math.log(low))))
