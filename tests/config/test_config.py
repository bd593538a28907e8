"""Configuration: loading, layering, typing, validation and refusals before any job starts.

These tests call the package; tests/workflow/test_planning.py proves the same through Snakemake.
"""

from __future__ import annotations

import gzip
import os
import re
import shutil
import subprocess
import sys

import jsonschema
import pytest
import yaml

from conftest import REPO, resolve_layers, write_config
from reprogrid.config import checks
from reprogrid.config import layers as config_layers
from reprogrid.config import resolve as configuration
from reprogrid.config import schema as config_schema
from reprogrid.config.errors import ConfigError
from reprogrid.datasets import catalog
from reprogrid.plan import grid, paths

# --- schema ---------------------------------------------------------------------------------


def test_schema_takes_its_names_from_the_task_and_the_registries(schema):
    props = schema["properties"]
    assert props["train"]["properties"]["arch"]["enum"] == list(catalog.ARCHITECTURES)
    assert props["data"]["properties"]["dataset"]["enum"] == sorted(catalog.DATASETS)


def test_every_train_key_may_be_a_grid_axis(schema):
    grid = schema["properties"]["grid"]["properties"]
    assert set(grid) == set(schema["properties"]["train"]["properties"])
    assert all(spec["uniqueItems"] and spec["minItems"] == 1 for spec in grid.values())


def test_every_schema_key_has_a_description_and_every_optional_key_a_default(schema):
    required = {"grid", "analysis.criterion.better", "analysis.criterion.worse"}
    for path, spec in _schema_keys(schema):
        assert spec.get("description"), path
        if path not in required and not path.startswith(("grid.", "search.space.")):
            assert "default" in spec, path


def test_the_shipped_config_is_valid_and_complete(schema):
    config = configuration.resolve(schema, REPO / "config/config.yaml", REPO / "config/experiments")
    assert config["experiment"] == "default"
    assert config["train"]["epochs"] == 3
    assert len(grid.expand_grid(config, schema)) == 12


def test_planning_imports_nothing_heavy():
    """common.smk imports these while Snakemake plans, and again in every cluster job."""
    code = (
        "import sys, glue; from reprogrid.analysis import audit; "
        "from reprogrid.commands import remote; from reprogrid.config import errors, resolve; "
        "from reprogrid.datasets import catalog, rawfiles; "
        "from reprogrid.plan import fingerprint, grid, halving, paths, split; "
        "print(sorted({'torch', 'pandas', 'numpy'} & set(sys.modules)))"
    )
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(REPO / "src"), str(REPO / "workflow")])}
    result = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, env=env, check=True
    )
    assert result.stdout.strip() == "[]"


# --- typing ---------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("key", "value", "expected"),
    [
        ("lr", "1e-3", 0.001),  # YAML 1.1 leaves this a string
        ("lr", "5E-4", 0.0005),
        ("lr", 1, 1.0),
        ("epochs", 2.0, 2),
        ("epochs", "1e1", 10),
        ("epochs", 1.5, 1.5),  # left for validation to refuse
        ("seed", "3", "3"),  # a quoted number stays a string
        ("lr", "abc", "abc"),
        ("lr", True, True),
        ("lr", float("inf"), "inf"),
        ("max_batches", 5.0, 5),
    ],
)
def test_coerce_turns_only_unambiguous_spellings_into_numbers(schema, key, value, expected):
    spec = schema["properties"]["train"]["properties"][key]
    result = config_schema.coerce(value, spec)
    assert result == expected
    assert type(result) is type(expected)


def test_coerce_reads_a_numeric_experiment_name_as_text(schema):
    assert config_schema.coerce({"experiment": 2024}, schema) == {"experiment": "2024"}


def test_retype_cli_gives_nested_command_line_values_their_yaml_types():
    # What Snakemake's parser makes of --config train='{epochs: 2, lr: 1e-3, deterministic: false}'
    parsed = {"train": {"epochs": "2", "lr": "1e-3", "deterministic": "false", "optimizer": "sgd"}}
    assert config_schema.retype_cli(parsed) == {
        "train": {"epochs": 2, "lr": "1e-3", "deterministic": False, "optimizer": "sgd"}
    }
    assert config_schema.retype_cli({"grid": {"seed": ["0", "1"]}}) == {"grid": {"seed": [0, 1]}}
    assert config_schema.retype_cli({"data": {"raw_dir": "null"}}) == {"data": {"raw_dir": None}}


def test_nested_cli_epochs_resolve_to_the_integer(schema, layers):
    config = resolve_layers(schema, layers, values={"train": {"epochs": "2", "lr": "1e-3"}})
    assert config["train"]["epochs"] == 2
    assert type(config["train"]["epochs"]) is int
    assert config["train"]["lr"] == 0.001


# --- precedence -----------------------------------------------------------------------------


def test_each_layer_wins_over_the_ones_below(schema, layers, tmp_path):
    _, experiments = layers
    # config.yaml sets epochs 1 and batch 64; each layer above overrides one more key.
    write_config(
        experiments,
        {"train": {"epochs": 2, "weight_decay": 0.1, "optimizer": "adamw", "momentum": 0.5}},
        "exp.yaml",
    )
    first = write_config(
        tmp_path,
        {"experiment": "exp", "train": {"weight_decay": 0.2, "optimizer": "sgd"}},
        "a.yaml",
    )
    second = write_config(tmp_path, {"train": {"optimizer": "adadelta"}}, "b.yaml")
    config = resolve_layers(
        schema, layers, files=[first, second], values={"train": {"momentum": "0.7"}}
    )
    train = config["train"]
    assert train["label_smoothing"] == 0.0  # schema default
    assert train["batch_size"] == 64  # config.yaml over the default 128
    assert train["epochs"] == 2  # experiment file over config.yaml
    assert train["weight_decay"] == 0.2  # --configfile over the experiment file
    assert train["optimizer"] == "adadelta"  # a later --configfile over an earlier one
    assert train["momentum"] == 0.7  # --config over everything
    assert config["experiment"] == "exp"


def test_the_experiment_named_on_the_command_line_is_layered_in(schema, layers):
    _, experiments = layers
    write_config(experiments, {"grid": {"lr": [0.01]}}, "fast.yaml")
    config = resolve_layers(schema, layers, values={"experiment": "fast"})
    assert config["experiment"] == "fast"
    assert config["grid"]["lr"] == [0.01]
    assert config["grid"]["seed"] == [0, 1]  # the rest comes from config.yaml


def test_lists_replace_and_mappings_merge():
    base = {"grid": {"seed": [0, 1, 2], "arch": ["mlp"]}, "train": {"epochs": 3}}
    merged = config_layers.merge(base, {"grid": {"seed": [5]}, "train": {"lr": 0.1}})
    assert merged == {"grid": {"seed": [5], "arch": ["mlp"]}, "train": {"epochs": 3, "lr": 0.1}}
    assert base["grid"]["seed"] == [0, 1, 2]


def test_resolution_is_stable_for_cluster_jobs(schema, layers, tmp_path):
    """A cluster job re-resolves from the same files and --config values: same result."""
    extra = write_config(tmp_path, {"grid": {"batch_size": [64, 32]}}, "extra.yaml")
    values = {"train": {"epochs": "2"}, "debug": False}
    first = resolve_layers(schema, layers, [extra], values)
    again = resolve_layers(schema, layers, [extra], values)
    assert first == again
    assert grid.expand_grid(first, schema) == grid.expand_grid(again, schema)
    # The resolved config is a fixed point: read back as the only layer, it changes nothing.
    dumped = write_config(tmp_path, first, "resolved.yaml")
    assert resolve_layers(schema, (dumped, layers[1])) == first
    # So is a debug run's (the reproduction guide hands it back as a --configfile).
    debug = resolve_layers(schema, layers, values={"debug": "True"})
    dumped = write_config(tmp_path, debug, "debug.yaml")
    assert resolve_layers(schema, layers, files=[dumped]) == debug


# --- refusals (unit level; the workflow tests below prove the same through Snakemake) --------


def test_unknown_key_is_named_with_its_layer_and_a_hint(schema, layers, tmp_path):
    typo = write_config(tmp_path, {"trian": {"epochs": 2}}, "typo.yaml")
    with pytest.raises(ConfigError, match=r"unknown config key 'trian' in .*typo.yaml"):
        resolve_layers(schema, layers, files=[typo])
    with pytest.raises(
        ConfigError, match=r"'train.epoch' in --config \(did you mean 'train.epochs'"
    ):
        resolve_layers(schema, layers, values={"train": {"epoch": 2}})


def test_a_config_without_a_grid_is_refused(schema, tmp_path):
    base = write_config(tmp_path, {"train": {"epochs": 1}}, "config.yaml")
    with pytest.raises(ConfigError, match="the config: 'grid' is a required property; add it"):
        configuration.resolve(schema, base, tmp_path)


def test_a_grid_without_a_core_axis_is_refused(schema, tmp_path):
    base = write_config(tmp_path, {"grid": {"seed": [0], "lr": [0.1]}}, "config.yaml")
    with pytest.raises(ConfigError, match="config key grid: 'arch' is a required property"):
        configuration.resolve(schema, base, tmp_path)
    base = write_config(tmp_path, {"grid": {"seed": [0], "arch": ["mlp"]}}, "config.yaml")
    with pytest.raises(ConfigError) as refused:
        configuration.resolve(schema, base, tmp_path)
    assert str(refused.value) == (
        "config key grid.lr: list learning rates under grid.lr or sample lr under search.space"
    )


def test_a_key_given_twice_in_a_file_is_refused(schema, layers, tmp_path):
    twice = tmp_path / "twice.yaml"
    twice.write_text("train: {epochs: 2}\ntrain: {lr: 0.1}\n", encoding="utf-8")
    with pytest.raises(ConfigError, match=r"twice.yaml at line 2: key 'train' is given twice"):
        resolve_layers(schema, layers, files=[twice])


def test_broken_yaml_names_the_file_and_line(tmp_path):
    broken = tmp_path / "broken.yaml"
    broken.write_text("grid:\n  seed: [0, 1\n  arch: [mlp]\n", encoding="utf-8")
    with pytest.raises(ConfigError, match=r"broken.yaml at line \d+, column \d+ is not valid YAML"):
        config_layers.load_yaml(broken)


def test_a_file_that_is_not_a_mapping_is_refused(tmp_path):
    listing = tmp_path / "list.yaml"
    listing.write_text("- 1\n- 2\n", encoding="utf-8")
    with pytest.raises(ConfigError, match="must hold a mapping of keys, not a list"):
        config_layers.load_yaml(listing)


def test_experiment_names_are_checked_before_any_file_is_looked_up(schema, layers):
    with pytest.raises(ConfigError, match="not a valid experiment name"):
        resolve_layers(schema, layers, values={"experiment": "../config"})
    with pytest.raises(ConfigError, match="reserved for debug runs"):
        resolve_layers(schema, layers, values={"experiment": "debug"})
    with pytest.raises(ConfigError, match=r"no file .*nosuch.yaml.*known experiments: default"):
        resolve_layers(schema, layers, values={"experiment": "nosuch"})


def test_an_experiment_file_may_not_rename_its_experiment(schema, layers):
    write_config(layers[1], {"experiment": "other"}, "exp.yaml")
    with pytest.raises(ConfigError, match=r"exp\.yaml sets experiment 'other'"):
        resolve_layers(schema, layers, values={"experiment": "exp"})


def test_raw_dir_must_hold_all_four_files(schema, layers, tmp_path, raw_dir):
    partial = tmp_path / "partial"
    shutil.copytree(raw_dir, partial)
    (partial / "t10k-labels-idx1-ubyte.gz").unlink()
    with pytest.raises(
        ConfigError, match=r"data\.raw_dir \(set by --config\): .*partial lacks t10k-labels"
    ):
        resolve_layers(schema, layers, values={"data": {"raw_dir": str(partial)}})


def test_criterion_must_name_architectures_of_the_grid(schema, layers):
    criterion = {"better": "cnn", "worse": "speedcnn"}
    with pytest.raises(
        ConfigError, match=r"analysis.criterion.worse \(set by --config\): 'speedcnn' is not in"
    ):
        resolve_layers(schema, layers, values={"analysis": {"criterion": criterion}})
    same = {"better": "cnn", "worse": "cnn"}
    with pytest.raises(ConfigError, match="better and worse must differ"):
        resolve_layers(schema, layers, values={"analysis": {"criterion": same}})


def test_an_undecodable_byte_is_refused_naming_the_file_line_and_byte(schema, layers, tmp_path):
    latin = tmp_path / "latin.yaml"
    latin.write_bytes(b"train:\n  epochs: 2\n  optimizer: sgd # caf\xe9\n")
    with pytest.raises(
        ConfigError, match=r"latin.yaml at line 3, column 23: byte 0xe9 is not UTF-8"
    ):
        config_layers.load_yaml(latin)
    with pytest.raises(ConfigError, match=r"latin.yaml at line 3"):
        resolve_layers(schema, layers, files=[latin])


@pytest.mark.parametrize(
    ("text", "line", "key", "kind"),
    [
        ("1: x\n", 1, "1", "a number"),
        ("train:\n  epochs: 2\n  1: x\n", 3, "1", "a number"),
        ("train:\n  yes: 2\n", 2, "yes", "a boolean"),
        ("data:\n  null: 2\n", 2, "null", "null"),
        ("grid:\n  2.5: [1]\n", 2, "2.5", "a number"),
        ("? [1, 2]\n: x\n", 1, "[1, 2]", "a list"),
    ],
)
def test_a_key_that_is_not_a_name_is_refused_naming_file_line_and_key(
    tmp_path, text, line, key, kind
):
    path = tmp_path / "keys.yaml"
    path.write_text(text, encoding="utf-8")
    expected = f"keys.yaml at line {line}: key {key} is read as {kind}, not a key name"
    with pytest.raises(ConfigError, match=re.escape(expected)):
        config_layers.load_yaml(path)


def test_yaml_merge_keys_bring_their_values(schema, layers, tmp_path):
    merged = tmp_path / "merged.yaml"
    merged.write_text(
        "grid:\n"
        "  seed: &seeds [4, 5]\n"
        "  arch: [mlp]\n"
        "  lr: [0.01]\n"
        "analysis:\n"
        "  criterion: null\n"
        "train:\n"
        "  <<: [{epochs: 2, batch_size: 32}, {optimizer: sgd}]\n"
        "  batch_size: 16\n"
        "  seed: 0\n",
        encoding="utf-8",
    )
    config = resolve_layers(schema, layers, files=[merged])
    assert config["train"]["epochs"] == 2  # from the merged mapping
    assert config["train"]["optimizer"] == "sgd"
    assert config["train"]["batch_size"] == 16  # the mapping's own key wins over the merge
    assert config["grid"]["seed"] == [4, 5]
    twice = tmp_path / "twice.yaml"
    twice.write_text("train:\n  <<: {epochs: 2}\n  lr: 0.1\n  lr: 0.2\n", encoding="utf-8")
    with pytest.raises(ConfigError, match=r"twice.yaml at line 4: key 'lr' is given twice"):
        config_layers.load_yaml(twice)


def test_an_experiment_close_to_a_known_one_is_refused_in_a_config_file(schema, layers, tmp_path):
    _, experiments = layers
    write_config(experiments, {"train": {"epochs": 2}}, "fashion.yaml")
    for typo in ("fashon", "Fashion", "fasion2", "defualt"):
        own = write_config(tmp_path, {"experiment": typo}, "typo.yaml")
        with pytest.raises(
            ConfigError, match=r"\(set by .*typo.yaml\): '.+' has no file .*did you mean"
        ):
            resolve_layers(schema, layers, files=[own])
    with pytest.raises(ConfigError, match=r"\(set by --config\): no file .*did you mean 'fashion'"):
        resolve_layers(schema, layers, values={"experiment": "fashon"})
    # A name of its own, further from every known one, defines an experiment of its own.
    for name in ("fashion-large", "mnist-wide", "tiny"):
        own = write_config(tmp_path, {"experiment": name}, "own.yaml")
        assert resolve_layers(schema, layers, files=[own])["experiment"] == name


@pytest.mark.parametrize(
    ("values", "key"),
    [
        ({"grid": {"seed": [0, 2**32]}}, "grid.seed[1]"),
        ({"train": {"seed": 2**32}}, "train.seed"),
        ({"data": {"split_seed": 2**40}}, "data.split_seed"),
    ],
)
def test_a_seed_must_fit_32_bits(schema, layers, tmp_path, values, key):
    assert resolve_layers(schema, layers, values={"grid": {"seed": [2**32 - 1]}})
    path = write_config(tmp_path, values, "seeds.yaml")
    with pytest.raises(
        ConfigError, match=rf"{re.escape(key)} \(set by .*seeds.yaml\): .* at most 4294967295"
    ):
        resolve_layers(schema, layers, files=[path])


def test_batch_size_must_fit_the_training_split(schema, layers, tmp_path, raw_dir):
    # The generated set has 1200 training images; val_fraction 0.1 keeps 1080 for training.
    assert resolve_layers(schema, layers, values={"train": {"batch_size": 1080}})
    big = write_config(tmp_path, {"train": {"batch_size": 1081}}, "big.yaml")
    with pytest.raises(
        ConfigError,
        match=r"train.batch_size \(set by .*big.yaml\): 1081 is larger than the training split "
        r"\(1080 images: 1200 in .*train-images-idx3-ubyte.gz less 120",
    ):
        resolve_layers(schema, layers, files=[big])
    grid = {"grid": {"batch_size": ["64", "2000"]}}
    with pytest.raises(ConfigError, match=r"grid.batch_size\[1\] \(set by --config\): 2000"):
        resolve_layers(schema, layers, values=grid)
    # Downloaded, the count is the data set's own: MNIST keeps 54,000 of 60,000.
    download = {"data": {"raw_dir": None}, "train": {"batch_size": 54001}}
    with pytest.raises(ConfigError, match=r"training split \(54000 images: 60000 in the mnist"):
        resolve_layers(schema, layers, values=download)


def test_the_split_count_is_read_from_a_plain_idx_header(schema, layers, tmp_path, raw_dir):
    plain = tmp_path / "plain"
    plain.mkdir()
    for path in raw_dir.iterdir():
        (plain / path.stem).write_bytes(gzip.decompress(path.read_bytes()))
    values = {"data": {"raw_dir": str(plain)}, "train": {"batch_size": 1081}}
    with pytest.raises(ConfigError, match=r"1200 in .*plain/train-images-idx3-ubyte less 120"):
        resolve_layers(schema, layers, values=values)


def test_val_fraction_must_leave_training_and_validation_images(schema, layers):
    with pytest.raises(
        ConfigError, match=r"data.val_fraction \(set by --config\): 0.9999 leaves no"
    ):
        resolve_layers(schema, layers, values={"data": {"val_fraction": "0.9999"}})
    with pytest.raises(
        ConfigError,
        match=r"0.005 holds out 6 of 1200 images .* fewer than one per class \(10\); "
        r"raise it to at least 0.0084",
    ):
        resolve_layers(schema, layers, values={"data": {"val_fraction": "0.005"}})
    assert resolve_layers(schema, layers, values={"data": {"val_fraction": "0.0084"}})


def test_raw_dir_naming_a_file_is_refused_as_such(schema, layers, raw_dir):
    file = raw_dir / "train-images-idx3-ubyte.gz"
    with pytest.raises(
        ConfigError,
        match=rf"data.raw_dir \(set by --config\): {re.escape(str(file))} is a file, not a folder; "
        rf".*lies in {re.escape(str(raw_dir))}",
    ):
        resolve_layers(schema, layers, values={"data": {"raw_dir": str(file)}})


@pytest.mark.parametrize(
    ("name", "problem"),
    [
        ("tiny\n", "holds a control character (a newline, say)"),
        ("a/b", "holds the path separator '/'"),
        ("a\\b", "holds the path separator '\\\\'"),
        ("a..b", "holds '..'"),
        (".hidden", "starts with '.'"),
        ("-rf", "starts with '-'"),
        ("x" * 65, "has 65 characters, more than 64"),
        ("caf\u00e9", "holds '\u00e9'"),
    ],
    ids=repr,
)
def test_an_experiment_name_that_is_no_safe_folder_is_refused(
    schema, layers, tmp_path, name, problem
):
    named = write_config(tmp_path, {"experiment": name}, "named.yaml")
    with pytest.raises(ConfigError) as refused:
        resolve_layers(schema, layers, files=[named])
    message = str(refused.value)
    assert "\n" not in message
    assert re.match(r"config key experiment \(set by .*named\.yaml\): ", message), message
    assert f"is not a valid experiment name: it {problem}; it names a folder" in message
    # The schema says the same: its pattern matches no newline after the name ($ would).
    validator = jsonschema.Draft202012Validator(schema["properties"]["experiment"])
    assert not validator.is_valid(name)
    longest = write_config(tmp_path, {"experiment": "x" * 64}, "longest.yaml")
    assert resolve_layers(schema, layers, files=[longest])["experiment"] == "x" * 64
    assert validator.is_valid("x" * 64)


@pytest.fixture
def schema_with_text(tmp_path) -> dict:
    """The schema with a `train` key of free text: no key of today's takes any, every string
    key being an enum, but a value a run folder spells is checked whatever its key."""
    spec = yaml.safe_load((REPO / "workflow/schemas/config.schema.yaml").read_text())
    spec["properties"]["train"]["properties"]["note"] = {
        "type": "string",
        "default": "plain",
        "description": "Free text.",
    }
    path = tmp_path / "schema.yaml"
    path.write_text(yaml.safe_dump(spec), encoding="utf-8")
    return config_schema.load_schema(path)


@pytest.mark.parametrize("value", ["a/b", "..", "-x", ".x", "x\n", "y" * 65])
def test_a_value_a_run_folder_would_spell_unsafely_is_refused(
    schema_with_text, layers, tmp_path, value
):
    listed = write_config(tmp_path, {"grid": {"note": ["plain", value]}}, "listed.yaml")
    with pytest.raises(ConfigError) as refused:
        resolve_layers(schema_with_text, layers, files=[listed])
    assert re.match(
        r"config key grid\.note\[1\] \(set by .*listed\.yaml\): .+ is not a valid value of a "
        r"run folder's name: it [^;]+; it names a folder, so use at most 64 letters, digits, "
        r"'_', '\.', '\+' and '-'",
        str(refused.value),
    ), refused.value
    sampled = {"search": {"method": "random", "space": {"note": {"choice": ["plain", value]}}}}
    sampled = write_config(tmp_path, sampled, "sampled.yaml")
    with pytest.raises(
        ConfigError, match=r"^config key search\.space\.note\.choice\[1\] \(set by "
    ):
        resolve_layers(schema_with_text, layers, files=[sampled])


def test_every_value_an_enum_offers_is_a_safe_folder_name(schema):
    """Architectures, optimisers, schedules...: each may name a run folder."""
    for key, spec in schema["properties"]["train"]["properties"].items():
        for value in spec.get("enum", []):
            assert paths.name_problem(paths.format_value(value)) is None, (key, value)


def test_a_raw_dir_too_long_to_look_up_is_refused_in_one_line(schema, layers):
    with pytest.raises(ConfigError) as refused:
        resolve_layers(schema, layers, values={"data": {"raw_dir": "/" + "a" * 5000}})
    assert re.fullmatch(
        r"config key data\.raw_dir \(set by --config\): '/a+\.\.\. cannot be looked up "
        r"\(File name too long\); point it at the folder holding the four IDX files",
        str(refused.value),
    ), refused.value


def test_a_grid_beyond_its_bound_is_refused_naming_its_axes(schema, layers):
    million = {
        "seed": list(range(1000)),
        "arch": ["mlp", "cnn"],
        "lr": [k / 1000 for k in range(1, 501)],
    }
    with pytest.raises(ConfigError) as refused:
        resolve_layers(schema, layers, values={"grid": million})
    assert str(refused.value).startswith(
        "config key grid.seed (set by --config): the config asks for 1,000,000 runs (grid.arch "
        "2 x grid.lr 500 x grid.seed 1,000), more than the 100,000 a grid may hold"
    )
    points = {"method": "random", "samples": 100_000, "space": {"lr": {"loguniform": [1e-4, 1]}}}
    with pytest.raises(ConfigError) as refused:
        resolve_layers(schema, layers, values={"search": points})
    assert str(refused.value).startswith(
        "config key search.samples (set by --config): the config asks for 400,000 runs "
        "(grid.arch 2 x grid.seed 2 x search.samples 100,000)"
    )
    # At the bound (the grid docs/benchmarks.md plans) nothing is refused.
    at_bound = {"grid": {"seed": list(range(25_000)), "arch": ["a", "b"], "lr": [1, 2]}}
    checks.check_grid_size(
        config_layers.Resolution({**at_bound, "search": {"method": "grid", "samples": 7}}, {})
    )


def test_messages_name_the_layer_that_set_the_key(schema, layers, tmp_path):
    _, experiments = layers
    write_config(
        experiments, {"analysis": {"criterion": {"better": "cnn", "worse": "x"}}}, "e.yaml"
    )
    with pytest.raises(ConfigError, match=r"criterion.worse \(set by .*experiments/e.yaml\)"):
        resolve_layers(schema, layers, values={"experiment": "e"})
    resolution = configuration.resolve_with_sources(
        schema, layers[0], experiments, (), {"train": {"epochs": "2"}, "debug": "true"}
    )
    assert resolution.source("train", "batch_size") == str(layers[0])
    assert resolution.source("train", "optimizer") == "the schema's default"
    assert resolution.source("train", "epochs") == "debug mode"
    assert resolution.source("grid", "seed") == str(layers[0])


def test_adadelta_with_the_onecycle_schedule_is_refused_naming_both_keys(schema, layers):
    with pytest.raises(
        ConfigError,
        match=r"train.optimizer \(set by --config\) and train.schedule \(set by --config\)",
    ):
        resolve_layers(
            schema, layers, values={"train": {"optimizer": "adadelta", "schedule": "onecycle"}}
        )
    with pytest.raises(ConfigError, match=r"grid.optimizer .* and train.schedule .*: the onecycle"):
        resolve_layers(
            schema,
            layers,
            values={
                "grid": {
                    "seed": [0],
                    "arch": ["mlp"],
                    "lr": [0.1],
                    "optimizer": ["adam", "adadelta"],
                },
                "train": {"schedule": "onecycle"},
            },
        )
    resolve_layers(schema, layers, values={"train": {"optimizer": "adadelta", "schedule": "step"}})


def test_check_local_gpus_refuses_gpus_torch_cannot_see():
    torch = pytest.importorskip("torch")
    checks.check_local_gpus(0, "config key resources.gpu", "--config resources='{gpu: 0}'")
    if torch.cuda.is_available():
        checks.check_local_gpus(1, "config key resources.gpu", "gpu 0")
        return
    with pytest.raises(
        ConfigError, match=r"resources.gpu asks 1 GPU\(s\) .* torch sees no GPU .*with gpu 0"
    ):
        checks.check_local_gpus(1, "config key resources.gpu", "gpu 0")


def test_debug_version_is_tiny_and_separate(schema, layers):
    values = {"debug": "True", "grid": {"epochs": ["4", "8"], "batch_size": ["32", "16"]}}
    config = resolve_layers(schema, layers, values=values)
    assert config["experiment"] == "debug"
    assert config["grid"]["seed"] == [0]
    assert config["grid"]["batch_size"] == [32]
    assert "epochs" not in config["grid"]
    assert config["train"]["epochs"] == 1
    assert config["train"]["max_batches"] == configuration.DEBUG_MAX_BATCHES
    runs = grid.expand_grid(config, schema)
    assert len(runs) == 4  # both archs, both lrs, one seed
    assert all(run["epochs"] == 1 for run in runs.values())


# --- config/README.md documents exactly the schema ---------------------------------------------


def _schema_keys(schema, prefix=""):
    for key, spec in schema.get("properties", {}).items():
        path = f"{prefix}{key}"
        yield path, spec
        yield from _schema_keys(spec, f"{path}.")


def readme_keys() -> dict[str, str]:
    """Key -> the Default cell of each row of the key table of config/README.md."""
    text = (REPO / "config/README.md").read_text(encoding="utf-8")
    table = text.split("## Every key", 1)[1]
    rows = re.findall(r"^\| `([a-z_.<>]+)` \|[^|]*\|([^|]*)\|", table, flags=re.MULTILINE)
    return {key: default.strip().strip("`") for key, default in rows}


def test_config_readme_documents_every_key_and_no_other(schema):
    documented = readme_keys()
    # The core axes have rows of their own; other axes and sampled keys one row each.
    expected = {
        path
        for path, _ in _schema_keys(schema)
        if not path.startswith(("grid.", "search.space."))
        or path in {f"grid.{axis}" for axis in paths.CORE_AXES}
    }
    assert expected - set(documented) == set(), "keys missing from config/README.md"
    assert set(documented) - expected == {"grid.<key>", "search.space.<key>"}, (
        "config/README.md documents unknown keys"
    )


def test_config_readme_states_the_schema_defaults(schema):
    specs = dict(_schema_keys(schema))
    for key, default in readme_keys().items():
        if default:
            assert yaml.safe_load(default) == specs[key]["default"], key
