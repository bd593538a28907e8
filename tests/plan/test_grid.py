"""The grid: one run per combination of axis values, run ids, and runs outside the grid."""

from __future__ import annotations

import re

from conftest import resolve_layers
from reprogrid.config import resolve as configuration
from reprogrid.plan import grid, paths


def test_unknown_run_says_what_the_grid_holds(schema, layers):
    resolution = configuration.resolve_with_sources(schema, *layers)
    message = grid.unknown_run("arch=mlp/lr=0.01/seed=0", resolution, schema)
    assert "no run arch=mlp/lr=0.01/seed=0 in the grid of experiment 'default'" in message
    assert f"grid.lr (set by {layers[0]}) lists 0.001, 0.003, not 0.01" in message
    assert "its runs combine arch mlp, cnn; lr 0.001, 0.003; seed 0, 1;" in message
    message = grid.unknown_run("arch=mlp/lr=0.001/batch_size=8/seed=0", resolution, schema)
    assert "batch_size is no grid axis" in message


# --- the grid and run ids -------------------------------------------------------------------


def test_expand_grid_gives_one_run_per_combination(schema, layers):
    config = resolve_layers(schema, layers)
    runs = grid.expand_grid(config, schema)
    assert len(runs) == 8
    assert "arch=cnn/lr=0.003/seed=1" in runs
    run = runs["arch=cnn/lr=0.003/seed=1"]
    assert (run["arch"], run["lr"], run["seed"], run["epochs"]) == ("cnn", 0.003, 1, 1)


def test_extra_axes_show_only_where_they_differ_from_the_schema_default(schema, layers):
    values = {"grid": {"batch_size": ["128", "32"], "optimizer": ["adam", "sgd"]}}
    config = resolve_layers(schema, layers, values=values)
    runs = grid.expand_grid(config, schema)
    assert len(runs) == 8 * 4
    assert runs["arch=mlp/lr=0.001/seed=0"]["batch_size"] == 128
    assert runs["arch=mlp/lr=0.001/batch_size=32/optimizer=sgd/seed=0"]["optimizer"] == "sgd"
    assert "arch=mlp/lr=0.001/optimizer=sgd/seed=0" in runs
    for run in runs:
        assert re.fullmatch(paths.RUN_ID_REGEX, run)
    assert grid.grid_axes(config) == ["arch", "lr", "batch_size", "optimizer"]


def test_an_axis_at_its_default_changes_no_run(schema, layers):
    before = grid.expand_grid(resolve_layers(schema, layers), schema)
    same = {
        "grid": {
            "weight_decay": ["0"],
            "optimizer": ["adam"],
            "max_batches": ["null"],
            "deterministic": ["true"],
        }
    }
    config = resolve_layers(schema, layers, values=same)
    after = grid.expand_grid(config, schema)
    assert after == before
    # Same keys in the same order: Snakemake's params rerun-trigger compares them as written.
    assert [list(run) for run in after.values()] == [list(run) for run in before.values()]
    assert grid.grid_axes(config) == ["arch", "lr"]
