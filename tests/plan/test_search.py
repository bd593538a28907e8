"""Sampled axes (`search`): the points drawn, the runs they make, and every bad space refused.

Units first (reprogrid.plan.search, the grid it expands to, the refusals of resolution), then
Snakemake for real in a copy of the project: a sampled search trained end to end.
"""

from __future__ import annotations

import math
import re
import time

import numpy as np
import pandas as pd
import pytest
from scipy.stats import qmc

from conftest import (
    SCHEMA,
    assert_refused,
    copy_project,
    job_counts,
    snakemake,
    tiny_grid,
    write_config,
)
from reprogrid.config import layers as config_layers
from reprogrid.config import resolve as configuration
from reprogrid.config.errors import ConfigError
from reprogrid.plan import grid, paths, search

SPACE = {
    "lr": {"loguniform": [1e-4, 1e-1]},
    "batch_size": {"choice": [32, 64, 128]},
    "weight_decay": {"uniform": [0.0, 0.01]},
}


def search_config(raw_dir, space=None, **search_keys) -> dict:
    """tiny_grid's config with lr sampled instead of listed, one arch, two seeds."""
    config = tiny_grid(raw_dir, analysis={"criterion": None})
    config["grid"] = {"seed": [0, 1], "arch": ["mlp"]}
    config["search"] = {"method": "random", "samples": 3, "space": space or SPACE, **search_keys}
    return config


def resolve(tmp_path, config, values=None) -> config_layers.Resolution:
    base = write_config(tmp_path, config, "config.yaml")
    return configuration.resolve_with_sources(SCHEMA, base, tmp_path / "experiments", (), values)


def points_of(raw_dir, tmp_path, **search_keys) -> list[dict]:
    config = resolve(tmp_path, search_config(raw_dir, **search_keys)).config
    return search.points(config, SCHEMA)


# --- the points --------------------------------------------------------------------------------


@pytest.mark.parametrize("method", ["random", "sobol"])
def test_the_same_config_gives_the_same_points_whatever_the_key_order(raw_dir, tmp_path, method):
    first = points_of(raw_dir, tmp_path, method=method)
    reordered = dict(reversed(SPACE.items()))
    again = points_of(raw_dir, tmp_path, method=method, space=reordered)
    assert first == again
    assert len(first) == 3 and all(list(point) == sorted(SPACE) for point in first)
    other_seed = points_of(raw_dir, tmp_path, method=method, seed=1)
    assert other_seed != first


@pytest.mark.parametrize("method", ["random", "sobol"])
def test_raising_samples_keeps_every_earlier_point(raw_dir, tmp_path, method):
    few = points_of(raw_dir, tmp_path, method=method, samples=3)
    many = points_of(raw_dir, tmp_path, method=method, samples=20)
    assert many[:3] == few
    assert len({tuple(point.values()) for point in many}) == 20


def unit_value(kind, values, u):
    """The documented mapping of a unit draw `u` onto one distribution."""
    if kind == "choice":
        return values[math.floor(u * len(values))]
    low, high = values
    if kind == "int":
        return min(math.floor(low + u * (high - low + 1)), high)
    if kind == "uniform":
        return float(f"{low + u * (high - low):.3g}")
    return float(f"{math.exp(math.log(low) + u * (math.log(high) - math.log(low))):.3g}")


SPACE_OF_EVERY_KIND = {
    "lr": {"loguniform": [1e-4, 1e-1]},
    "momentum": {"uniform": [0.5, 0.95]},
    "epochs": {"int": [1, 4]},
    "optimizer": {"choice": ["adam", "sgd", "adamw"]},
}


def test_random_draws_point_i_from_its_own_generator(raw_dir, tmp_path):
    points = points_of(raw_dir, tmp_path, space=SPACE_OF_EVERY_KIND, samples=5, seed=7)
    keys = sorted(SPACE_OF_EVERY_KIND)
    for i, point in enumerate(points):
        u = np.random.default_rng([7, i]).random(len(keys))
        for key, x in zip(keys, u, strict=True):
            kind, values = next(iter(SPACE_OF_EVERY_KIND[key].items()))
            assert point[key] == unit_value(kind, values, x), (i, key)


def test_sobol_takes_the_first_points_of_the_scrambled_sequence(raw_dir, tmp_path):
    points = points_of(raw_dir, tmp_path, space=SPACE_OF_EVERY_KIND, method="sobol", samples=5)
    keys = sorted(SPACE_OF_EVERY_KIND)
    sampler = qmc.Sobol(len(keys), scramble=True, seed=np.random.default_rng(0))
    with pytest.warns(UserWarning, match="balance properties"):
        draws = sampler.random(5)
    for point, u in zip(points, draws, strict=True):
        for key, x in zip(keys, u, strict=True):
            kind, values = next(iter(SPACE_OF_EVERY_KIND[key].items()))
            assert point[key] == unit_value(kind, values, x), key


def test_sobol_raises_no_warning(raw_dir, tmp_path, recwarn):
    points_of(raw_dir, tmp_path, method="sobol", samples=5)
    assert not [w for w in recwarn if "balance" in str(w.message)]


def test_values_are_rounded_in_range_and_typed_as_their_train_key(raw_dir, tmp_path):
    space = {
        "lr": {"loguniform": [1e-4, 1e-1]},
        "weight_decay": {"int": [0, 2]},  # a number key: floats
        "label_smoothing": {"choice": [0, 0.1]},  # a YAML int on a number key: a float
        "epochs": {"int": [1, 3]},
        "batch_size": {"choice": [32, 64]},
    }
    points = points_of(raw_dir, tmp_path, space=space, samples=10)
    for point in points:
        assert 1e-4 <= point["lr"] <= 1e-1 and point["lr"] == float(f"{point['lr']:.3g}")
        assert type(point["weight_decay"]) is float and point["weight_decay"] in (0, 1, 2)
        assert type(point["label_smoothing"]) is float
        assert type(point["epochs"]) is int and 1 <= point["epochs"] <= 3
        assert type(point["batch_size"]) is int
    assert {point["epochs"] for point in points} == {1, 2, 3}


def test_equal_points_after_rounding_count_once(raw_dir, tmp_path):
    space = {
        "lr": {"choice": [0.01]},
        "batch_size": {"choice": [32, 64]},
        "optimizer": {"choice": ["adam", "sgd"]},
    }
    points = points_of(raw_dir, tmp_path, space=space, samples=4)
    assert sorted((p["batch_size"], p["optimizer"]) for p in points) == [
        (32, "adam"),
        (32, "sgd"),
        (64, "adam"),
        (64, "sgd"),
    ]


def test_the_grid_method_samples_nothing(raw_dir, tmp_path):
    config = resolve(tmp_path, tiny_grid(raw_dir)).config
    assert config["search"] == {"method": "grid", "samples": 1, "seed": 0, "space": {}}
    assert search.points(config, SCHEMA) == [{}]
    assert grid.grid_axes(config) == ["arch", "lr"]


# --- the runs ------------------------------------------------------------------------------------


def test_every_sampled_point_runs_with_every_grid_combination(raw_dir, tmp_path):
    config = search_config(raw_dir)
    config["grid"]["arch"] = ["mlp", "cnn"]
    config = resolve(tmp_path, config).config
    points = search.points(config, SCHEMA)
    runs = grid.expand_grid(config, SCHEMA)
    assert len(runs) == 3 * 2 * 2
    defaults = grid.train_defaults(SCHEMA)
    for seed in (0, 1):
        for arch in ("mlp", "cnn"):
            for point in points:
                run = paths.run_id({"seed": seed, "arch": arch, **point}, defaults)
                assert runs[run] == {**config["train"], "seed": seed, "arch": arch, **point}
                assert re.fullmatch(paths.RUN_ID_REGEX, run)
                assert f"lr={paths.format_value(point['lr'])}/" in run
    assert grid.grid_axes(config) == ["arch", "batch_size", "lr", "weight_decay"]
    assert grid.run_axes(config) == [*config["grid"], "batch_size", "lr", "weight_decay"]


def test_a_debug_run_keeps_the_first_point(raw_dir, tmp_path):
    config = resolve(tmp_path, search_config(raw_dir)).config
    debug = resolve(tmp_path, {**search_config(raw_dir), "debug": True}).config
    first = search.points(config, SCHEMA)[0]
    assert search.points(debug, SCHEMA) == [first]
    assert len(grid.expand_grid(debug, SCHEMA)) == 1  # the first seed of one arch


def test_a_run_outside_the_sampled_points_is_explained(raw_dir, tmp_path):
    resolution = resolve(tmp_path, search_config(raw_dir))
    drawn = grid.sampled_values(resolution.config, SCHEMA)["lr"]
    message = grid.unknown_run("arch=mlp/lr=0.5/seed=0", resolution, SCHEMA)
    assert "search.space.lr (set by" in message
    assert f"draws {', '.join(map(paths.format_value, drawn))}, not 0.5" in message
    assert message.endswith(
        "or draw more points with search.samples (config/README.md, Sampled axes)"
    )


def test_choices_given_on_the_command_line_get_their_key_types(raw_dir, tmp_path):
    values = {"search": "{space: {lr: {choice: [1e-3, 1e-2]}, epochs: {choice: [1.0, 2]}}}"}
    config = resolve(tmp_path, search_config(raw_dir, samples=2), values).config
    assert config["search"]["space"]["lr"]["choice"] == [0.001, 0.01]
    assert all(type(point["epochs"]) is int for point in search.points(config, SCHEMA))


def test_a_later_layer_samples_what_an_earlier_one_lists(raw_dir, tmp_path):
    """Layers replace whole what they sample or list: the later one wins, key by key."""
    listed = tiny_grid(raw_dir, analysis={"criterion": None})
    base = write_config(tmp_path, listed, "config.yaml")
    sampled = {
        "search": {"method": "random", "samples": 2, "space": {"lr": {"uniform": [0.1, 0.2]}}}
    }
    layer = write_config(tmp_path, sampled, "sample.yaml")
    resolution = configuration.resolve_with_sources(SCHEMA, base, tmp_path, [layer])
    assert "lr" not in resolution.config["grid"]
    assert resolution.config["search"]["space"] == {"lr": {"uniform": [0.1, 0.2]}}
    assert ("grid", "lr") not in resolution.sources

    values = {"search": {"space": {"lr": {"loguniform": [0.01, 0.1]}}}}
    config = configuration.resolve(SCHEMA, base, tmp_path, [layer], values)
    assert config["search"]["space"] == {"lr": {"loguniform": [0.01, 0.1]}}

    values = {"grid": {"lr": [0.5]}, "search": {"method": "grid"}}
    config = configuration.resolve(SCHEMA, base, tmp_path, [layer], values)
    assert config["grid"]["lr"] == [0.5] and config["search"]["space"] == {}


# --- refused before any job, in one line naming the key --------------------------------------


REFUSALS = [
    # (search keys, fragments of the message)
    ({"samples": 0}, ["config key search.samples", "0 must be at least 1"]),
    (
        {"space": {"lr": {"uniform": [0.1, 0.01]}}},
        ["search.space.lr (set by", "range [0.1, 0.01] is empty"],
    ),
    (
        {"space": {"lr": {"loguniform": [0.01, 0.01]}}},
        ["search.space.lr", "is empty"],
    ),
    ({"space": {"lr": {"choice": [0.1]}, "epochs": {"int": [3, 2]}}}, ["search.space.epochs"]),
    ({"space": {"lr": {"choice": []}}}, ["search.space.lr.choice", "empty"]),
    (
        {"space": {"lr": {"loguniform": [0, 0.1]}}},
        ["search.space.lr", "loguniform range needs bounds above 0"],
    ),
    (
        {"space": {"lr": {"loguniform": [-1, 0.1]}}},
        ["search.space.lr", "above 0, not -1.0"],
    ),
    (
        {"space": {"lr": {"choice": [0.1]}, "batch_size": {"uniform": [16, 64]}}},
        ["search.space.batch_size", "use int or choice"],
    ),
    (
        {"space": {"lr": {"choice": [0.1]}, "optimizer": {"int": [1, 2]}}},
        ["search.space.optimizer", "use choice"],
    ),
    (
        {"space": {"lr": {"choice": [0.1]}, "weight_decai": {"uniform": [0, 1]}}},
        ["'search.space.weight_decai'", "did you mean 'search.space.weight_decay'"],
    ),
    (
        {"space": {"lr": {"choice": [0.1]}, "seed": {"int": [0, 9]}}},
        ["search.space.seed", "seeds stay a grid axis", "grid.seed"],
    ),
    (
        {"space": {"lr": {"choice": [0.1]}, "arch": {"choice": ["cnn"]}}},
        ["search.space.arch", "architectures stay a grid axis", "grid.arch"],
    ),
    (
        {"method": "grid", "space": {"lr": {"choice": [0.1]}}},
        ["search.space (set by", "search.method is grid", "random or sobol"],
    ),
    ({"space": {}}, ["config key search.method", "search.space, which is empty"]),
    (
        {"space": {"lr": {"choice": [0.1]}, "weight_decay": {"uniform": [-1, 1]}}},
        ["search.space.weight_decay", "bound -1.0 is no valid train.weight_decay"],
    ),
    (
        {"space": {"lr": {"choice": [0.1]}, "momentum": {"uniform": [0.5, 1.0]}}},
        ["search.space.momentum", "bound 1.0", "maximum of 1"],
    ),
    (
        {
            "samples": 3,  # 0.998, 0.999 and 1.0 once rounded: three draws give all three
            "space": {"lr": {"choice": [0.1]}, "momentum": {"uniform": [0.998, 0.9999]}},
        },
        ["search.space.momentum", "draws 1.0 (rounded to 3 significant digits)", "narrow"],
    ),
    (
        {"space": {"lr": {"choice": [0.1]}, "arch": {"choice": ["mlp", "nope"]}}},
        ["search.space.arch.choice[1]", "'nope'", "choose one of"],
    ),
    (
        {"space": {"lr": {"choice": [0.1, "fast"]}}},
        ["search.space.lr.choice[1]", "not a valid number"],
    ),
    ({"space": {"lr": {"choice": [0.1, 0.1]}}}, ["search.space.lr.choice", "twice"]),
    (
        {"space": {"lr": {"loguniform": [0.001]}}},
        ["search.space.lr.loguniform", "lists 1", "give at least 2 values", "[low, high]"],
    ),
    (
        {"space": {"lr": {"loguniform": [0.001, 0.1], "uniform": [0.001, 0.1]}}},
        ["search.space.lr", "exactly one of loguniform, uniform, int, choice"],
    ),
    (
        {"samples": 3, "space": {"lr": {"choice": [0.1, 0.01]}}},
        ["config key search.samples", "3 distinct points asked", "holds only 2"],
    ),
    (
        {"samples": 2, "space": {"lr": {"uniform": [0.1, 0.1001]}}},
        ["config key search.samples", "holds only 1", "3 significant digits"],
    ),
    (
        {"space": {"lr": {"choice": [0.1]}, "batch_size": {"int": [16, 5000]}}},
        ["search.space.batch_size", "5000 is larger than the training split"],
    ),
    (
        {
            "space": {
                "lr": {"choice": [0.1]},
                "optimizer": {"choice": ["adam", "adadelta"]},
                "schedule": {"choice": ["constant", "onecycle"]},
            }
        },
        ["search.space.optimizer", "search.space.schedule", "onecycle"],
    ),
]


@pytest.mark.parametrize(("keys", "fragments"), REFUSALS, ids=[str(r[1][0]) for r in REFUSALS])
def test_a_bad_search_is_refused_naming_the_key(raw_dir, tmp_path, keys, fragments):
    config = search_config(raw_dir, samples=keys.get("samples", 1))
    config["search"].update(keys)
    with pytest.raises(ConfigError) as refused:
        resolve(tmp_path, config)
    message = str(refused.value)
    assert "\n" not in message
    for fragment in fragments:
        assert fragment in message, message


@pytest.mark.parametrize(
    ("space", "size"),
    [
        ({"lr": {"uniform": [0.1, 0.1001]}}, 1),
        # 1.00e-3 to 9.99e-3, and 1.00e-2: 901 rounded values, times 2 choices.
        ({"lr": {"loguniform": [1e-3, 1e-2]}, "batch_size": {"choice": [32, 64]}}, 1802),
        # 9.95 to 9.99 and 10.0 to 10.4 across a power of ten, times 3 integers.
        ({"lr": {"uniform": [9.95, 10.4]}, "epochs": {"int": [1, 3]}}, 30),
    ],
)
def test_a_space_too_small_is_refused_before_drawing_a_point(raw_dir, tmp_path, space, size):
    """The distinct values a range can round to are counted, not drawn: 100,000 points asked
    of a range that rounds to one value took 208 s to refuse when every draw was made."""
    config = resolve(tmp_path, search_config(raw_dir, space=space, samples=1)).config
    config["search"]["samples"] = size + 1
    started = time.perf_counter()
    with pytest.raises(search.SearchError) as refused:
        search.points(config, SCHEMA)
    assert time.perf_counter() - started < 0.5
    assert refused.value.key == ("search", "samples")
    assert f"holds only {size} (numbers are rounded to 3 significant digits)" in str(refused.value)


def test_a_key_listed_and_sampled_by_one_layer_is_refused(raw_dir, tmp_path):
    config = search_config(raw_dir)
    config["grid"]["lr"] = [0.1]
    with pytest.raises(ConfigError, match=r"search.space.lr \(set by .*also listed under grid.lr"):
        resolve(tmp_path, config)


def test_architectures_sampled_over_a_listing_layer_are_refused_as_such(raw_dir, tmp_path):
    base = write_config(tmp_path, tiny_grid(raw_dir), "config.yaml")
    values = {"search": {"method": "random", "space": {"arch": {"choice": ["mlp", "cnn"]}}}}
    with pytest.raises(ConfigError, match=r"search.space.arch \(set by --config\): architectures"):
        configuration.resolve(SCHEMA, base, tmp_path, [], values)


# --- through Snakemake -------------------------------------------------------------------------


@pytest.mark.workflow
def test_a_bad_search_is_refused_by_snakemake_before_any_job(tmp_path, raw_dir):
    folder = copy_project(tmp_path / "project")
    write_config(folder, search_config(raw_dir))
    result = snakemake(
        folder, "-n", "--configfile", "test.yaml", "--config", "search={samples: 0}", check=False
    )
    assert_refused(result, "config key search.samples (set by --config)", "at least 1")
    bad = "search={space: {lr: {loguniform: [-1, 0.1]}}}"
    result = snakemake(folder, "-n", "--configfile", "test.yaml", "--config", bad, check=False)
    assert_refused(result, "config key search.space.lr (set by --config)", "above 0")
    assert not (folder / "results").exists()


def planned_runs(result) -> list[str]:
    return sorted(re.findall(r"Training (\S+)", result.stdout + result.stderr))


@pytest.mark.workflow
def test_a_sampled_search_trains_summarises_and_reports(tmp_path, raw_dir):
    """random, 3 points of lr (loguniform) x batch_size (choice), x arch [mlp] x 2 seeds."""
    folder = copy_project(tmp_path / "project")
    config = search_config(
        raw_dir,
        space={"lr": {"loguniform": [1e-3, 1e-1]}, "batch_size": {"choice": [16, 32, 64]}},
    )
    config["train"] = {"epochs": 1, "max_batches": 2}
    write_config(folder, config)
    plan = snakemake(folder, "-n", "--configfile", "test.yaml")
    assert planned_runs(plan) == planned_runs(snakemake(folder, "-n", "--configfile", "test.yaml"))
    assert len(planned_runs(plan)) == 6

    snakemake(folder, "--cores", "2", "--configfile", "test.yaml")
    resolved = configuration.resolve(
        SCHEMA, folder / "config/config.yaml", folder / "config/experiments", [folder / "test.yaml"]
    )
    points = search.points(resolved, SCHEMA)
    runs = sorted(
        f"arch=mlp/lr={paths.format_value(p['lr'])}"
        + (f"/batch_size={p['batch_size']}" if p["batch_size"] != 128 else "")
        + f"/seed={seed}"
        for p in points
        for seed in (0, 1)
    )
    assert planned_runs(plan) == runs
    for run in runs:
        assert (folder / paths.run_file("tiny", run, "metrics.json")).is_file()

    table = pd.read_csv(folder / paths.summary_file("tiny", "runs.csv"))
    assert {"lr", "batch_size"} <= set(table.columns) and len(table) == 6
    summary = pd.read_csv(folder / paths.summary_file("tiny", "summary.csv"))
    assert len(summary) == 3 and set(summary["n"]) == {2}
    assert sorted(zip(summary["lr"], summary["batch_size"], strict=True)) == sorted(
        (p["lr"], p["batch_size"]) for p in points
    )
    for stem in paths.REPORT_FIGURES.values():
        assert (folder / paths.report_file("tiny", f"{stem}.png")).is_file()
    for name in paths.REPORT_TABLES.values():
        assert (folder / paths.report_file("tiny", name)).is_file()
    guide = (folder / paths.report_file("tiny", "reproduction.html")).read_text(encoding="utf-8")
    assert "loguniform" in guide

    done = snakemake(folder, "-n", "--configfile", "test.yaml")
    assert "Nothing to be done" in done.stdout + done.stderr

    more = write_config(
        folder, {**config, "search": {**config["search"], "samples": 4}}, "more.yaml"
    )
    result = snakemake(folder, "-n", "--configfile", str(more))
    new = set(planned_runs(result))
    assert len(new) == 2 and not new & set(runs)
    assert job_counts(result.stdout)["train"] == 2


def test_the_heatmap_of_sampled_learning_rates_has_a_row_per_setting():
    from reprogrid.analysis import plots
    from reprogrid.tasks.spec import Metrics

    summary = pd.DataFrame(
        {
            "arch": ["cnn", "cnn", "mlp", "mlp"],
            "batch_size": [16, 32, 16, 32],
            "lr": [0.00638, 0.00346, 0.00638, 0.00346],
            "test_acc_mean": [0.9, 0.8, 0.7, 0.6],
        }
    )
    table = Metrics({"acc": "max", "loss": "min"})
    figure = plots.metric_heatmap(summary, ["arch", "batch_size", "lr"], table, "test_acc")
    ax = figure.axes[0]
    assert (ax.get_xlabel(), ax.get_ylabel()) == ("architecture", "setting")
    rows = [label.get_text() for label in ax.get_yticklabels()]
    assert rows == ["batch_size=16 lr=0.00638", "batch_size=32 lr=0.00346"]
    listed = plots.metric_heatmap(summary.assign(batch_size=16), ["arch", "lr"], table, "test_acc")
    assert listed.axes[0].get_xlabel() == "learning rate"
    # The colour bar names the metric and its direction; the cells hold its plain means.
    assert figure.axes[1].get_ylabel() == "test_acc (higher is better)"
    assert sorted(text.get_text() for text in ax.texts) == ["0.6", "0.7", "0.8", "0.9"]
