"""The validation split's size, as planning checks it and training carves it."""

from __future__ import annotations

import pytest

from reprogrid.plan.split import validation_count


@pytest.mark.parametrize(
    ("count", "fraction", "expected"),
    [(1200, 0.1, 120), (1200, 0.0001, 1), (77, 0.33, 25), (60000, 0.5, 30000), (10, 0.25, 2)],
)
def test_the_validation_split_rounds_and_holds_at_least_one_image(count, fraction, expected):
    assert validation_count(count, fraction) == expected
