"""Named experiments: each one resolves, and each has a lab book with the sections it needs."""

from __future__ import annotations

import re

import pytest

from conftest import REPO
from reprogrid.config import layers as config_layers
from reprogrid.config import resolve as configuration
from reprogrid.config import schema as config_schema
from reprogrid.plan import grid

EXPERIMENTS = REPO / "config/experiments"
NAMES = sorted({"default", *(path.stem for path in EXPERIMENTS.glob("*.yaml"))})
SECTIONS = ("hypothesis", "goal", "how to run", "success criterion", "notes on results")


@pytest.fixture(scope="module")
def schema():
    return config_schema.load_schema(REPO / "workflow/schemas/config.schema.yaml")


@pytest.mark.parametrize("name", NAMES)
def test_each_experiment_resolves_to_its_own_outputs(schema, name):
    config = configuration.resolve(
        schema, REPO / "config/config.yaml", EXPERIMENTS, (), {"experiment": name}
    )
    assert config["experiment"] == name
    assert grid.expand_grid(config, schema)


@pytest.mark.parametrize("name", NAMES)
def test_each_experiment_has_a_lab_book_with_every_section(name):
    book = EXPERIMENTS / f"{name}.md"
    assert book.is_file(), f"write the lab book {book.relative_to(REPO)}"
    headings = [
        heading.lower() for heading in re.findall(r"^#+\s+(.+)$", book.read_text(), re.MULTILINE)
    ]
    for section in SECTIONS:
        assert any(section in heading for heading in headings), f"{name}.md lacks '{section}'"


def test_the_default_experiment_needs_no_file_of_its_own(schema):
    assert not (EXPERIMENTS / "default.yaml").exists()
    base = config_layers.load_yaml(REPO / "config/config.yaml")
    assert base["experiment"] == "default"


def test_fashion_runs_the_default_grid_on_fashion_mnist(schema):
    def resolve(values):
        return configuration.resolve(schema, REPO / "config/config.yaml", EXPERIMENTS, (), values)

    default, fashion = resolve({}), resolve({"experiment": "fashion"})
    assert fashion["data"]["dataset"] == "fashion-mnist"
    assert fashion["grid"] == default["grid"]
    assert fashion["train"]["epochs"] > default["train"]["epochs"]
