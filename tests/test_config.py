"""Configuration: layering, typing, validation, the grid, and refusals before any job starts."""

from __future__ import annotations

import gzip
import os
import re
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import pandas as pd
import pytest
import yaml

from conftest import REPO, copy_project, snakemake, tiny_grid, write_config
from reprogrid import catalog, paths
from reprogrid import config as configuration
from reprogrid.config import ConfigError

SCHEMA_FILE = REPO / "workflow/schemas/config.schema.yaml"


@pytest.fixture(scope="module")
def schema():
    return configuration.load_schema(SCHEMA_FILE)


@pytest.fixture
def layers(tmp_path, raw_dir):
    """A base config file and an empty experiments folder, as in a project's config/."""
    base = write_config(tmp_path, tiny_grid(raw_dir, experiment="default"), "config.yaml")
    experiments = tmp_path / "experiments"
    experiments.mkdir()
    return base, experiments


def small_grid(raw_dir, **grid) -> dict:
    """tiny_grid with the axes given, and no success criterion (it needs both archs)."""
    return tiny_grid(raw_dir, grid=grid, analysis={"criterion": None})


def resolve(schema, layers, files=(), values=None):
    base, experiments = layers
    return configuration.resolve(schema, base, experiments, files, values)


# --- schema ---------------------------------------------------------------------------------


def test_schema_takes_its_names_from_the_registries(schema):
    props = schema["properties"]
    assert props["train"]["properties"]["arch"]["enum"] == sorted(catalog.ARCHITECTURES)
    assert props["data"]["properties"]["dataset"]["enum"] == sorted(catalog.DATASETS)


def test_every_train_key_may_be_a_grid_axis(schema):
    grid = schema["properties"]["grid"]["properties"]
    assert set(grid) == set(schema["properties"]["train"]["properties"])
    assert all(spec["uniqueItems"] and spec["minItems"] == 1 for spec in grid.values())


def test_every_schema_key_has_a_description_and_every_optional_key_a_default(schema):
    required = {"grid", "analysis.criterion.better", "analysis.criterion.worse"}
    for path, spec in _schema_keys(schema):
        assert spec.get("description"), path
        if path not in required and not path.startswith("grid."):
            assert "default" in spec, path


def test_the_shipped_config_is_valid_and_complete(schema):
    config = configuration.resolve(schema, REPO / "config/config.yaml", REPO / "config/experiments")
    assert config["experiment"] == "default"
    assert config["train"]["epochs"] == 3
    assert len(configuration.expand_grid(config, schema)) == 12


def test_planning_imports_nothing_heavy():
    """common.smk imports these while Snakemake plans, and again in every cluster job."""
    code = (
        "import sys; import reprogrid.config, reprogrid.catalog, reprogrid.paths; "
        "print(sorted({'torch', 'pandas', 'numpy'} & set(sys.modules)))"
    )
    env = {**os.environ, "PYTHONPATH": str(REPO / "src")}
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
    result = configuration._coerce(value, spec)
    assert result == expected
    assert type(result) is type(expected)


def test_coerce_reads_a_numeric_experiment_name_as_text(schema):
    assert configuration._coerce({"experiment": 2024}, schema) == {"experiment": "2024"}


def test_retype_cli_gives_nested_command_line_values_their_yaml_types():
    # What Snakemake's parser makes of --config train='{epochs: 2, lr: 1e-3, deterministic: false}'
    parsed = {"train": {"epochs": "2", "lr": "1e-3", "deterministic": "false", "optimizer": "sgd"}}
    assert configuration.retype_cli(parsed) == {
        "train": {"epochs": 2, "lr": "1e-3", "deterministic": False, "optimizer": "sgd"}
    }
    assert configuration.retype_cli({"grid": {"seed": ["0", "1"]}}) == {"grid": {"seed": [0, 1]}}
    assert configuration.retype_cli({"data": {"raw_dir": "null"}}) == {"data": {"raw_dir": None}}


def test_nested_cli_epochs_resolve_to_the_integer(schema, layers):
    config = resolve(schema, layers, values={"train": {"epochs": "2", "lr": "1e-3"}})
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
    config = resolve(schema, layers, files=[first, second], values={"train": {"momentum": "0.7"}})
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
    config = resolve(schema, layers, values={"experiment": "fast"})
    assert config["experiment"] == "fast"
    assert config["grid"]["lr"] == [0.01]
    assert config["grid"]["seed"] == [0, 1]  # the rest comes from config.yaml


def test_lists_replace_and_mappings_merge():
    base = {"grid": {"seed": [0, 1, 2], "arch": ["mlp"]}, "train": {"epochs": 3}}
    merged = configuration.merge(base, {"grid": {"seed": [5]}, "train": {"lr": 0.1}})
    assert merged == {"grid": {"seed": [5], "arch": ["mlp"]}, "train": {"epochs": 3, "lr": 0.1}}
    assert base["grid"]["seed"] == [0, 1, 2]


def test_resolution_is_stable_for_cluster_jobs(schema, layers, tmp_path):
    """A cluster job re-resolves from the same files and --config values: same result."""
    extra = write_config(tmp_path, {"grid": {"batch_size": [64, 32]}}, "extra.yaml")
    values = {"train": {"epochs": "2"}, "debug": False}
    first = resolve(schema, layers, [extra], values)
    again = resolve(schema, layers, [extra], values)
    assert first == again
    assert configuration.expand_grid(first, schema) == configuration.expand_grid(again, schema)
    # The resolved config is a fixed point: read back as the only layer, it changes nothing.
    dumped = write_config(tmp_path, first, "resolved.yaml")
    assert resolve(schema, (dumped, layers[1])) == first
    # So is a debug run's (the reproduction guide hands it back as a --configfile).
    debug = resolve(schema, layers, values={"debug": "True"})
    dumped = write_config(tmp_path, debug, "debug.yaml")
    assert resolve(schema, layers, files=[dumped]) == debug


# --- refusals (unit level; the workflow tests below prove the same through Snakemake) --------


def test_unknown_key_is_named_with_its_layer_and_a_hint(schema, layers, tmp_path):
    typo = write_config(tmp_path, {"trian": {"epochs": 2}}, "typo.yaml")
    with pytest.raises(ConfigError, match=r"unknown config key 'trian' in .*typo.yaml"):
        resolve(schema, layers, files=[typo])
    with pytest.raises(
        ConfigError, match=r"'train.epoch' in --config \(did you mean 'train.epochs'"
    ):
        resolve(schema, layers, values={"train": {"epoch": 2}})


def test_a_config_without_a_grid_is_refused(schema, tmp_path):
    base = write_config(tmp_path, {"train": {"epochs": 1}}, "config.yaml")
    with pytest.raises(ConfigError, match="the config: 'grid' is a required property; add it"):
        configuration.resolve(schema, base, tmp_path)


def test_a_grid_without_a_core_axis_is_refused(schema, tmp_path):
    base = write_config(tmp_path, {"grid": {"seed": [0], "arch": ["mlp"]}}, "config.yaml")
    with pytest.raises(ConfigError, match="config key grid: 'lr' is a required property"):
        configuration.resolve(schema, base, tmp_path)


def test_a_key_given_twice_in_a_file_is_refused(schema, layers, tmp_path):
    twice = tmp_path / "twice.yaml"
    twice.write_text("train: {epochs: 2}\ntrain: {lr: 0.1}\n", encoding="utf-8")
    with pytest.raises(ConfigError, match=r"twice.yaml at line 2: key 'train' is given twice"):
        resolve(schema, layers, files=[twice])


def test_broken_yaml_names_the_file_and_line(tmp_path):
    broken = tmp_path / "broken.yaml"
    broken.write_text("grid:\n  seed: [0, 1\n  arch: [mlp]\n", encoding="utf-8")
    with pytest.raises(ConfigError, match=r"broken.yaml at line \d+, column \d+ is not valid YAML"):
        configuration.load_yaml(broken)


def test_a_file_that_is_not_a_mapping_is_refused(tmp_path):
    listing = tmp_path / "list.yaml"
    listing.write_text("- 1\n- 2\n", encoding="utf-8")
    with pytest.raises(ConfigError, match="must hold a mapping of keys, not a list"):
        configuration.load_yaml(listing)


def test_experiment_names_are_checked_before_any_file_is_looked_up(schema, layers):
    with pytest.raises(ConfigError, match="not a valid experiment name"):
        resolve(schema, layers, values={"experiment": "../config"})
    with pytest.raises(ConfigError, match="reserved for debug runs"):
        resolve(schema, layers, values={"experiment": "debug"})
    with pytest.raises(ConfigError, match=r"no file .*nosuch.yaml.*known experiments: default"):
        resolve(schema, layers, values={"experiment": "nosuch"})


def test_an_experiment_file_may_not_rename_its_experiment(schema, layers):
    write_config(layers[1], {"experiment": "other"}, "exp.yaml")
    with pytest.raises(ConfigError, match=r"exp\.yaml sets experiment 'other'"):
        resolve(schema, layers, values={"experiment": "exp"})


def test_raw_dir_must_hold_all_four_files(schema, layers, tmp_path, raw_dir):
    partial = tmp_path / "partial"
    shutil.copytree(raw_dir, partial)
    (partial / "t10k-labels-idx1-ubyte.gz").unlink()
    with pytest.raises(
        ConfigError, match=r"data\.raw_dir \(set by --config\): .*partial lacks t10k-labels"
    ):
        resolve(schema, layers, values={"data": {"raw_dir": str(partial)}})


def test_criterion_must_name_architectures_of_the_grid(schema, layers):
    criterion = {"better": "cnn", "worse": "speedcnn"}
    with pytest.raises(
        ConfigError, match=r"analysis.criterion.worse \(set by --config\): 'speedcnn' is not in"
    ):
        resolve(schema, layers, values={"analysis": {"criterion": criterion}})
    same = {"better": "cnn", "worse": "cnn"}
    with pytest.raises(ConfigError, match="better and worse must differ"):
        resolve(schema, layers, values={"analysis": {"criterion": same}})


def test_an_undecodable_byte_is_refused_naming_the_file_line_and_byte(schema, layers, tmp_path):
    latin = tmp_path / "latin.yaml"
    latin.write_bytes(b"train:\n  epochs: 2\n  optimizer: sgd # caf\xe9\n")
    with pytest.raises(
        ConfigError, match=r"latin.yaml at line 3, column 23: byte 0xe9 is not UTF-8"
    ):
        configuration.load_yaml(latin)
    with pytest.raises(ConfigError, match=r"latin.yaml at line 3"):
        resolve(schema, layers, files=[latin])


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
        configuration.load_yaml(path)


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
    config = resolve(schema, layers, files=[merged])
    assert config["train"]["epochs"] == 2  # from the merged mapping
    assert config["train"]["optimizer"] == "sgd"
    assert config["train"]["batch_size"] == 16  # the mapping's own key wins over the merge
    assert config["grid"]["seed"] == [4, 5]
    twice = tmp_path / "twice.yaml"
    twice.write_text("train:\n  <<: {epochs: 2}\n  lr: 0.1\n  lr: 0.2\n", encoding="utf-8")
    with pytest.raises(ConfigError, match=r"twice.yaml at line 4: key 'lr' is given twice"):
        configuration.load_yaml(twice)


def test_an_experiment_close_to_a_known_one_is_refused_in_a_config_file(schema, layers, tmp_path):
    _, experiments = layers
    write_config(experiments, {"train": {"epochs": 2}}, "fashion.yaml")
    for typo in ("fashon", "Fashion", "fasion2", "defualt"):
        own = write_config(tmp_path, {"experiment": typo}, "typo.yaml")
        with pytest.raises(
            ConfigError, match=r"\(set by .*typo.yaml\): '.+' has no file .*did you mean"
        ):
            resolve(schema, layers, files=[own])
    with pytest.raises(ConfigError, match=r"\(set by --config\): no file .*did you mean 'fashion'"):
        resolve(schema, layers, values={"experiment": "fashon"})
    # A name of its own, further from every known one, defines an experiment of its own.
    for name in ("fashion-large", "mnist-wide", "tiny"):
        own = write_config(tmp_path, {"experiment": name}, "own.yaml")
        assert resolve(schema, layers, files=[own])["experiment"] == name


def test_between_short_names_fewer_edits_count_as_a_typo():
    assert configuration._edits("fashon", "fashion") == 1
    assert configuration._edits("FASHION", "fashion") == 0
    assert configuration._typo_edits("fashon", "fashion") == 2
    assert configuration._typo_edits("abcd", "abce") == 1
    assert configuration._typo_edits("ab", "ac") == 0


@pytest.mark.parametrize(
    ("values", "key"),
    [
        ({"grid": {"seed": [0, 2**32]}}, "grid.seed[1]"),
        ({"train": {"seed": 2**32}}, "train.seed"),
        ({"data": {"split_seed": 2**40}}, "data.split_seed"),
    ],
)
def test_a_seed_must_fit_32_bits(schema, layers, tmp_path, values, key):
    assert resolve(schema, layers, values={"grid": {"seed": [2**32 - 1]}})
    path = write_config(tmp_path, values, "seeds.yaml")
    with pytest.raises(
        ConfigError, match=rf"{re.escape(key)} \(set by .*seeds.yaml\): .* at most 4294967295"
    ):
        resolve(schema, layers, files=[path])


def test_batch_size_must_fit_the_training_split(schema, layers, tmp_path, raw_dir):
    # The generated set has 1200 training images; val_fraction 0.1 keeps 1080 for training.
    assert resolve(schema, layers, values={"train": {"batch_size": 1080}})
    big = write_config(tmp_path, {"train": {"batch_size": 1081}}, "big.yaml")
    with pytest.raises(
        ConfigError,
        match=r"train.batch_size \(set by .*big.yaml\): 1081 is larger than the training split "
        r"\(1080 images: 1200 in .*train-images-idx3-ubyte.gz less 120",
    ):
        resolve(schema, layers, files=[big])
    grid = {"grid": {"batch_size": ["64", "2000"]}}
    with pytest.raises(ConfigError, match=r"grid.batch_size\[1\] \(set by --config\): 2000"):
        resolve(schema, layers, values=grid)
    # Downloaded, the count is the data set's own: MNIST keeps 54,000 of 60,000.
    download = {"data": {"raw_dir": None}, "train": {"batch_size": 54001}}
    with pytest.raises(ConfigError, match=r"training split \(54000 images: 60000 in the mnist"):
        resolve(schema, layers, values=download)


def test_the_split_count_is_read_from_a_plain_idx_header(schema, layers, tmp_path, raw_dir):
    plain = tmp_path / "plain"
    plain.mkdir()
    for path in raw_dir.iterdir():
        (plain / path.stem).write_bytes(gzip.decompress(path.read_bytes()))
    values = {"data": {"raw_dir": str(plain)}, "train": {"batch_size": 1081}}
    with pytest.raises(ConfigError, match=r"1200 in .*plain/train-images-idx3-ubyte less 120"):
        resolve(schema, layers, values=values)


def test_val_fraction_must_leave_training_and_validation_images(schema, layers):
    with pytest.raises(
        ConfigError, match=r"data.val_fraction \(set by --config\): 0.9999 leaves no"
    ):
        resolve(schema, layers, values={"data": {"val_fraction": "0.9999"}})
    with pytest.raises(
        ConfigError,
        match=r"0.005 holds out 6 of 1200 images .* fewer than one per class \(10\); "
        r"raise it to at least 0.0084",
    ):
        resolve(schema, layers, values={"data": {"val_fraction": "0.005"}})
    assert resolve(schema, layers, values={"data": {"val_fraction": "0.0084"}})


@pytest.mark.parametrize(
    ("count", "fraction"), [(1200, 0.1), (1200, 0.0001), (77, 0.33), (60000, 0.5)]
)
def test_planning_counts_the_validation_split_as_training_carves_it(count, fraction):
    from reprogrid import data

    _, validation = data.split_train_val(count, fraction, split_seed=0)
    assert configuration.validation_count(count, fraction) == len(validation)


def test_idx_count_reads_the_header_or_gives_up(tmp_path, raw_dir):
    images = raw_dir / "train-images-idx3-ubyte.gz"
    assert configuration.idx_count(images) == 1200
    plain = tmp_path / "train-images-idx3-ubyte"
    plain.write_bytes(gzip.decompress(images.read_bytes()))
    assert configuration.idx_count(plain) == 1200
    for broken in (b"", b"\x00\x00\x08", b"not idx at all", images.read_bytes()[:20]):
        path = tmp_path / "broken.gz"
        path.write_bytes(broken)
        assert configuration.idx_count(path) is None
        assert configuration.idx_count(tmp_path / "broken") is None


def test_raw_dir_naming_a_file_is_refused_as_such(schema, layers, raw_dir):
    file = raw_dir / "train-images-idx3-ubyte.gz"
    with pytest.raises(
        ConfigError,
        match=rf"data.raw_dir \(set by --config\): {re.escape(str(file))} is a file, not a folder; "
        rf".*lies in {re.escape(str(raw_dir))}",
    ):
        resolve(schema, layers, values={"data": {"raw_dir": str(file)}})


def test_messages_name_the_layer_that_set_the_key(schema, layers, tmp_path):
    _, experiments = layers
    write_config(
        experiments, {"analysis": {"criterion": {"better": "cnn", "worse": "x"}}}, "e.yaml"
    )
    with pytest.raises(ConfigError, match=r"criterion.worse \(set by .*experiments/e.yaml\)"):
        resolve(schema, layers, values={"experiment": "e"})
    resolution = configuration.resolve_with_sources(
        schema, layers[0], experiments, (), {"train": {"epochs": "2"}, "debug": "true"}
    )
    assert resolution.source("train", "batch_size") == str(layers[0])
    assert resolution.source("train", "optimizer") == "the schema's default"
    assert resolution.source("train", "epochs") == "debug mode"
    assert resolution.source("grid", "seed") == str(layers[0])


def test_check_local_gpus_refuses_gpus_torch_cannot_see():
    torch = pytest.importorskip("torch")
    configuration.check_local_gpus(0, "config key resources.gpu", "--config resources='{gpu: 0}'")
    if torch.cuda.is_available():
        configuration.check_local_gpus(1, "config key resources.gpu", "gpu 0")
        return
    with pytest.raises(
        ConfigError, match=r"resources.gpu asks 1 GPU\(s\) .* torch sees no GPU .*with gpu 0"
    ):
        configuration.check_local_gpus(1, "config key resources.gpu", "gpu 0")


def test_unknown_run_says_what_the_grid_holds(schema, layers):
    resolution = configuration.resolve_with_sources(schema, *layers)
    message = configuration.unknown_run("arch=mlp/lr=0.01/seed=0", resolution, schema)
    assert "no run arch=mlp/lr=0.01/seed=0 in the grid of experiment 'default'" in message
    assert f"grid.lr (set by {layers[0]}) lists 0.001, 0.003, not 0.01" in message
    assert "its runs combine arch mlp, cnn; lr 0.001, 0.003; seed 0, 1;" in message
    message = configuration.unknown_run("arch=mlp/lr=0.001/batch_size=8/seed=0", resolution, schema)
    assert "batch_size is no grid axis" in message


def test_a_debug_claim_excludes_a_second_one(tmp_path):
    lock = tmp_path / ".snakemake/reprogrid-debug.lock"
    held = configuration.claim_debug_outputs(lock)
    # flock claims belong to an open file, so a second open in this process counts as another run.
    with pytest.raises(ConfigError, match="another debug run is running"):
        configuration.claim_debug_outputs(lock)
    held.close()
    configuration.claim_debug_outputs(lock).close()


# --- the grid and run ids -------------------------------------------------------------------


def test_expand_grid_gives_one_run_per_combination(schema, layers):
    config = resolve(schema, layers)
    runs = configuration.expand_grid(config, schema)
    assert len(runs) == 8
    assert "arch=cnn/lr=0.003/seed=1" in runs
    run = runs["arch=cnn/lr=0.003/seed=1"]
    assert (run["arch"], run["lr"], run["seed"], run["epochs"]) == ("cnn", 0.003, 1, 1)


def test_extra_axes_show_only_where_they_differ_from_the_schema_default(schema, layers):
    values = {"grid": {"batch_size": ["128", "32"], "optimizer": ["adam", "sgd"]}}
    config = resolve(schema, layers, values=values)
    runs = configuration.expand_grid(config, schema)
    assert len(runs) == 8 * 4
    assert runs["arch=mlp/lr=0.001/seed=0"]["batch_size"] == 128
    assert runs["arch=mlp/lr=0.001/batch_size=32/optimizer=sgd/seed=0"]["optimizer"] == "sgd"
    assert "arch=mlp/lr=0.001/optimizer=sgd/seed=0" in runs
    for run in runs:
        assert re.fullmatch(paths.RUN_ID_REGEX, run)
    assert configuration.grid_axes(config) == ["arch", "lr", "batch_size", "optimizer"]


def test_an_axis_at_its_default_changes_no_run(schema, layers):
    before = configuration.expand_grid(resolve(schema, layers), schema)
    same = {
        "grid": {
            "weight_decay": ["0"],
            "optimizer": ["adam"],
            "max_batches": ["null"],
            "deterministic": ["true"],
        }
    }
    config = resolve(schema, layers, values=same)
    after = configuration.expand_grid(config, schema)
    assert after == before
    # Same keys in the same order: Snakemake's params rerun-trigger compares them as written.
    assert [list(run) for run in after.values()] == [list(run) for run in before.values()]
    assert configuration.grid_axes(config) == ["arch", "lr"]


def test_debug_version_is_tiny_and_separate(schema, layers):
    values = {"debug": "True", "grid": {"epochs": ["4", "8"], "batch_size": ["32", "16"]}}
    config = resolve(schema, layers, values=values)
    assert config["experiment"] == "debug"
    assert config["grid"]["seed"] == [0]
    assert config["grid"]["batch_size"] == [32]
    assert "epochs" not in config["grid"]
    assert config["train"]["epochs"] == 1
    assert config["train"]["max_batches"] == configuration.DEBUG_MAX_BATCHES
    runs = configuration.expand_grid(config, schema)
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
    required_axes = schema["properties"]["grid"]["required"]
    expected = {
        path
        for path, _ in _schema_keys(schema)
        if not path.startswith("grid.") or path.split(".")[1] in required_axes
    }
    assert expected - set(documented) == set(), "keys missing from config/README.md"
    assert set(documented) - expected == {"grid.<key>"}, "config/README.md documents unknown keys"


def test_config_readme_states_the_schema_defaults(schema):
    specs = dict(_schema_keys(schema))
    for key, default in readme_keys().items():
        if default:
            assert yaml.safe_load(default) == specs[key]["default"], key


# --- through Snakemake: refused before any job, in one line -----------------------------------

SNAKEMAKE_CHATTER = ("Using workflow specific profile", "Using profile")


def assert_refused(result, *fragments):
    """Refused with exit status 1 and one `reprogrid:` line holding every fragment."""
    output = result.stdout + result.stderr
    assert result.returncode == 1, output
    assert "Traceback" not in output
    lines = [line for line in output.splitlines() if line.strip()]
    message = [line for line in lines if not line.startswith(SNAKEMAKE_CHATTER)]
    assert len(message) == 1, output
    assert message[0].startswith("reprogrid: "), output
    for fragment in fragments:
        assert fragment in message[0], output


@pytest.fixture(scope="module")
def planning_project(tmp_path_factory, raw_dir):
    """A project copy whose config.yaml reads the generated data; only dry runs happen here."""
    folder = copy_project(tmp_path_factory.mktemp("plan") / "project")
    config = yaml.safe_load((folder / "config/config.yaml").read_text(encoding="utf-8"))
    config["data"].update(raw_dir=str(raw_dir), verify=False)
    write_config(folder / "config", config, "config.yaml")
    return folder


def nothing_written(folder: Path) -> bool:
    return not any((folder / part).exists() for part in ("results", "reports", "resources"))


REFUSALS = [
    # (--config values, fragments the message must hold)
    (["grid={seed: [0], arch: [resnet], lr: [0.1]}"], ["grid.arch[0]", "resnet", "choose one"]),
    (["grid={seed: [0], arch: [mlp], lr: [-0.1]}"], ["grid.lr[0]", "-0.1", "greater than 0"]),
    (["grid={seed: [0], arch: [mlp], lr: [fast]}"], ["grid.lr[0]", "'fast'", "not a valid number"]),
    (["grid={seed: [0], arch: [mlp], lr: [true]}"], ["grid.lr[0]", "not a valid number"]),
    (["train={lr: -1}"], ["train.lr", "greater than 0"]),
    (["train={epochs: 0}"], ["train.epochs", "at least 1"]),
    (["train={epochs: 1.5}"], ["train.epochs", "1.5", "not a valid integer"]),
    (["grid={seed: [], arch: [mlp], lr: [0.1]}"], ["grid.seed", "empty"]),
    (["grid={seed: [1, 1], arch: [mlp], lr: [0.1]}"], ["grid.seed", "twice"]),
    (["grid={seed: [0], arch: [mlp, mlp], lr: [0.1]}"], ["grid.arch", "twice"]),
    (["grid={seed: [0], arch: [mlp], lr: [0.1, 1e-1]}"], ["grid.lr", "twice"]),
    (["grid={seed: 0, arch: [mlp], lr: [0.1]}"], ["grid.seed", "not a valid list"]),
    (["grid={seed: [a], arch: [mlp], lr: [0.1]}"], ["grid.seed[0]", "not a valid integer"]),
    (["grid={seed: [0], arch: [mlp], lr: [0.1], batch_size: [0]}"], ["grid.batch_size[0]"]),
    (
        ["grid={seed: [0], arch: [mlp], lr: [0.1], optimiser: [sgd]}"],
        ["did you mean 'grid.optimizer'"],
    ),
    (["expriment=fashion"], ["'expriment'", "did you mean 'experiment'"]),
    (["train={epoch: 2}"], ["'train.epoch'", "did you mean 'train.epochs'"]),
    (["data={dataset: fashion}"], ["data.dataset", "did you mean 'fashion-mnist'"]),
    (["train={batch_size: 0}"], ["train.batch_size", "at least 1"]),
    (["train={optimizer: rmsprop}"], ["train.optimizer", "choose one of"]),
    (["data={raw_dir: /no/such/folder}"], ["data.raw_dir", "/no/such/folder", "does not exist"]),
    (["data={val_fraction: 1}"], ["data.val_fraction", "less than 1"]),
    (["experiment=nosuch"], ["experiment", "nosuch.yaml", "known experiments"]),
    (["experiment=debug"], ["experiment", "reserved"]),
    (["debug=maybe"], ["debug", "not a valid boolean"]),
    (["train=3"], ["train", "not a valid mapping"]),
    (["train={lr: .inf}"], ["train.lr", "not a valid number"]),
    (["analysis={criterion: {better: cnn, worse: speedcnn}}"], ["analysis.criterion.worse"]),
    (["resources={threads: 0}"], ["resources.threads", "at least 1"]),
    (["data={dataset: MNIST}"], ["data.dataset", "did you mean 'mnist'"]),
    (["grid={seed: [0], arch: [mlp], lr: [0.1], foo: [1]}"], ["'grid.foo'", "allowed here"]),
    (["train={epochs: 2"], ["train", "'{epochs: 2'", "not a valid mapping"]),
    (["grid={seed: [-1], arch: [mlp], lr: [0.1]}"], ["grid.seed[0]", "at least 0"]),
    (["grid={seed: [0], arch: [cnn], lr: [0.1]}"], ["analysis.criterion.worse", "null"]),
    (["grid={seed: [4294967296], arch: [mlp], lr: [0.1]}"], ["grid.seed[0]", "at most 4294967295"]),
    (["train={seed: 4294967296}"], ["train.seed (set by --config)", "32-bit"]),
    (["data={split_seed: 4294967296}"], ["data.split_seed (set by --config)", "at most"]),
    (["train={epochs: 100000}"], ["train.epochs (set by --config)", "at most 10000"]),
    (["train={eval_batch_size: 10000000}"], ["train.eval_batch_size", "at most 1000000"]),
    (["train={batch_size: 1081}"], ["train.batch_size (set by --config)", "training split (1080"]),
    (
        ["grid={seed: [0], arch: [mlp], lr: [0.1], batch_size: [64, 5000]}"],
        ["grid.batch_size[1] (set by --config)", "5000 is larger than the training split"],
    ),
    (["data={val_fraction: 0.9999}"], ["data.val_fraction (set by --config)", "no training"]),
    (["data={val_fraction: 0.001}"], ["data.val_fraction", "fewer than one per class"]),
    (["resources={gpu: 2}"], ["resources.gpu (set by --config)", "at most 1", "one device"]),
    (["resources={gpu: -1}"], ["resources.gpu", "at least 0"]),
    (["train={epochs: true}"], ["train.epochs", "True is not a valid integer"]),
    (["train={batch_size: -64}"], ["train.batch_size", "at least 1"]),
    (["train=null"], ["config key train (set by --config) has no value"]),
    (["grid={seed: [0], arch: [mlp], lr: [0]}"], ["grid.lr[0]", "greater than 0"]),
    (
        ["grid={seed: [0], arch: [mlp], lr: [0.1], epochs: [2, 0]}"],
        ["grid.epochs[1]", "at least 1"],
    ),
    (["grid={seed: [0], arch: [], lr: [0.1]}"], ["grid.arch", "empty"]),
    (["experiment=fashon"], ["experiment (set by --config)", "did you mean 'fashion'"]),
    (["analysis={criterion: {better: cnn, worse: mlp, min_diff: 2}}"], ["min_diff", "at most 1"]),
    (["data={raw_dir: '~/mnist'}"], ["data.raw_dir", "'~' is not expanded"]),
]


@pytest.mark.workflow
@pytest.mark.parametrize(("values", "fragments"), REFUSALS, ids=lambda v: str(v)[:40])
def test_bad_config_is_refused_before_any_job(planning_project, values, fragments):
    result = snakemake(planning_project, "-n", "--config", *values, check=False)
    assert_refused(result, *fragments)
    assert nothing_written(planning_project)


@pytest.mark.workflow
def test_bad_configfile_values_are_refused_naming_the_file(planning_project, tmp_path):
    quoted = tmp_path / "quoted.yaml"
    quoted.write_text("grid:\n  seed: ['0']\n  arch: [mlp]\n  lr: [1e-3]\n", encoding="utf-8")
    result = snakemake(planning_project, "-n", "--configfile", str(quoted), check=False)
    assert_refused(result, "grid.seed[0]", "quoted.yaml", "not a valid integer")


@pytest.mark.workflow
def test_broken_yaml_in_a_configfile_is_refused_by_snakemake(planning_project, tmp_path):
    # Snakemake reads --configfile files itself before the workflow, in its own words.
    broken = tmp_path / "broken.yaml"
    broken.write_text("grid:\n  seed: [0, 1\n  arch: [mlp]\n", encoding="utf-8")
    result = snakemake(planning_project, "-n", "--configfile", str(broken), check=False)
    output = result.stdout + result.stderr
    assert result.returncode == 1
    assert "Traceback" not in output
    assert "Config file is not valid JSON or YAML" in output
    assert nothing_written(planning_project)


@pytest.mark.workflow
def test_broken_yaml_in_config_yaml_is_refused_naming_the_file(tmp_path):
    folder = copy_project(tmp_path / "project")
    with open(folder / "config/config.yaml", "a", encoding="utf-8") as handle:
        handle.write("train:\n  epochs: 2\n bad: [\n")
    result = snakemake(folder, "-n", check=False)
    assert_refused(result, "config/config.yaml at line", "is not valid YAML")
    assert nothing_written(folder)


@pytest.mark.workflow
def test_broken_yaml_in_an_experiment_file_is_refused_naming_it(planning_project):
    (planning_project / "config/experiments/broken.yaml").write_text("grid: [\n")
    try:
        result = snakemake(planning_project, "-n", "--config", "experiment=broken", check=False)
    finally:
        (planning_project / "config/experiments/broken.yaml").unlink()
    assert_refused(result, "config/experiments/broken.yaml at line", "is not valid YAML")


@pytest.mark.workflow
def test_an_undecodable_byte_in_config_yaml_is_refused_naming_the_file(tmp_path):
    folder = copy_project(tmp_path / "project")
    with open(folder / "config/config.yaml", "ab") as handle:
        handle.write(b"# r\xe9sum\xe9\n")
    result = snakemake(folder, "-n", check=False)
    assert_refused(result, "config/config.yaml at line", "is not UTF-8")
    assert nothing_written(folder)


@pytest.mark.workflow
def test_an_undecodable_byte_in_an_experiment_file_is_refused_naming_it(planning_project):
    (planning_project / "config/experiments/latin.yaml").write_bytes(b"train: {epochs: 2} # \xff\n")
    try:
        result = snakemake(planning_project, "-n", "--config", "experiment=latin", check=False)
    finally:
        (planning_project / "config/experiments/latin.yaml").unlink()
    assert_refused(result, "config/experiments/latin.yaml at line 1, column 22", "is not UTF-8")


@pytest.mark.workflow
def test_a_key_that_is_not_a_name_is_refused_in_any_layer(planning_project, tmp_path):
    keys = tmp_path / "keys.yaml"
    keys.write_text("train:\n  epochs: 2\n  1: x\n", encoding="utf-8")
    result = snakemake(planning_project, "-n", "--configfile", str(keys), check=False)
    assert_refused(result, "keys.yaml at line 3: key 1 is read as a number")
    (planning_project / "config/experiments/keys.yaml").write_text("1: x\nfoo: y\n")
    try:
        result = snakemake(planning_project, "-n", "--config", "experiment=keys", check=False)
    finally:
        (planning_project / "config/experiments/keys.yaml").unlink()
    assert_refused(result, "config/experiments/keys.yaml at line 1: key 1 is read as a number")


@pytest.mark.workflow
def test_merge_keys_in_a_configfile_reach_the_plan(planning_project, tmp_path):
    merged = tmp_path / "merged.yaml"
    merged.write_text(
        "experiment: merged\n"
        "grid:\n  <<: {seed: [3], arch: [mlp]}\n  lr: [0.5]\n"
        "analysis: {criterion: null}\n",
        encoding="utf-8",
    )
    result = snakemake(planning_project, "-n", "--configfile", str(merged))
    assert planned_runs(result) == {"arch=mlp/lr=0.5/seed=3"}


@pytest.mark.workflow
def test_an_experiment_typo_in_a_configfile_is_refused(planning_project, tmp_path):
    typo = write_config(tmp_path, {"experiment": "fashon"}, "typo.yaml")
    result = snakemake(planning_project, "-n", "--configfile", str(typo), check=False)
    assert_refused(result, "experiment (set by ", "typo.yaml", "did you mean 'fashion'")
    assert nothing_written(planning_project)
    # An experiment of its own, named apart from the known ones, plans into its own folder.
    own = write_config(
        tmp_path,
        {"experiment": "wide", "grid": {"seed": [0], "arch": ["mlp"], "lr": [0.2]}},
        "own.yaml",
    )
    result = snakemake(planning_project, "-n", "--configfile", str(own), "--config",
                       "analysis={criterion: null}")  # fmt: skip
    assert "results/wide/runs/arch=mlp/lr=0.2/seed=0/metrics.json" in result.stdout


@pytest.mark.workflow
def test_raw_dir_naming_a_file_is_refused_before_any_job(planning_project, raw_dir):
    file = raw_dir / "train-labels-idx1-ubyte.gz"
    result = snakemake(planning_project, "-n", "--config", f"data={{raw_dir: {file}}}", check=False)
    assert_refused(result, "data.raw_dir (set by --config)", "is a file, not a folder")


def assert_refused_while_planning(result, *fragments):
    """Refused in one `reprogrid:` line once Snakemake builds its plan, after its own header."""
    output = result.stdout + result.stderr
    assert result.returncode == 1, output
    assert "Traceback" not in output and "Error" not in output, output
    ours = [line for line in output.splitlines() if line.startswith("reprogrid:")]
    assert len(ours) == 1, output
    assert output.strip().splitlines()[-1] == ours[0], output
    for fragment in fragments:
        assert fragment in ours[0], output


@pytest.mark.workflow
@pytest.mark.parametrize(
    ("target", "fragments"),
    [
        (
            "results/default/runs/arch=mlp/lr=0.01/seed=0/metrics.json",
            ["no run arch=mlp/lr=0.01/seed=0 in the grid", "grid.lr (set by config/config.yaml)"],
        ),
        (
            "results/default/runs/arch=mlp/lr=0.001/batch_size=32/seed=0/model.pt",
            ["batch_size is no grid axis", "list the value under grid"],
        ),
        (
            "results/default/runs/arch=mlp/lr=0.001/seed=7/history.csv",
            ["grid.seed (set by config/config.yaml) lists 0, 1, 2, not 7"],
        ),
    ],
)
def test_a_run_outside_the_grid_is_refused_in_one_line(planning_project, target, fragments):
    for args in (["-n"], ["--cores", "1"]):
        result = snakemake(planning_project, *args, target, check=False)
        assert_refused_while_planning(result, *fragments)
        assert nothing_written(planning_project)


@pytest.mark.workflow
def test_a_local_run_asking_for_a_gpu_torch_cannot_see_is_refused(planning_project):
    import torch

    if torch.cuda.is_available():
        pytest.skip("torch sees a GPU here")
    grid = ["grid={seed: [0], arch: [mlp], lr: [0.1]}", "analysis={criterion: null}"]
    # A dry run cannot tell where the jobs will run (--profile profiles/slurm -n looks the
    # same), so it plans; a real local run is refused before its first job.
    snakemake(planning_project, "-n", "--config", *grid, "resources={gpu: 1}")
    result = snakemake(
        planning_project, "--cores", "1", "--config", *grid, "resources={gpu: 1}", check=False
    )
    assert_refused_while_planning(
        result, "config key resources.gpu (set by --config)", "torch sees no GPU",
        "--config resources='{gpu: 0}'",
    )  # fmt: skip
    assert nothing_written(planning_project)
    result = snakemake(
        planning_project, "--cores", "1", "--config", *grid, "--set-resources", "train:gpu=1",
        check=False,
    )  # fmt: skip
    assert_refused_while_planning(result, "--set-resources train:gpu=1", "train:gpu=0")
    assert nothing_written(planning_project)


@pytest.mark.workflow
def test_missing_raw_file_is_refused_before_any_job(planning_project, tmp_path, raw_dir):
    partial = tmp_path / "partial"
    shutil.copytree(raw_dir, partial)
    (partial / "train-images-idx3-ubyte.gz").unlink()
    result = snakemake(
        planning_project, "-n", "--config", f"data={{raw_dir: {partial}}}", check=False
    )
    assert_refused(result, "data.raw_dir", "train-images-idx3-ubyte")


def planned_runs(result) -> set[str]:
    return set(re.findall(r"Training (\S+)", result.stdout + result.stderr))


@pytest.mark.workflow
def test_precedence_through_snakemake(planning_project, tmp_path):
    """config.yaml < experiment file < --configfile < --config, seen in the planned runs."""
    write_config(
        planning_project / "config/experiments",
        {"grid": {"seed": [7], "arch": ["mlp"], "lr": [0.5]}, "train": {"epochs": 1}},
        "layered.yaml",
    )
    arch = write_config(
        tmp_path,
        {"grid": {"arch": ["cnn"], "lr": [0.25]}, "analysis": {"criterion": None}},
        "arch.yaml",
    )
    result = snakemake(
        planning_project, "-n", "--configfile", str(arch),
        "--config", "experiment=layered", "grid={lr: [1e-2]}",
    )  # fmt: skip
    assert planned_runs(result) == {"arch=cnn/lr=0.01/seed=7"}
    assert "results/layered/runs/arch=cnn/lr=0.01/seed=7/metrics.json" in result.stdout


@pytest.mark.workflow
def test_fashion_experiment_plans_into_its_own_folder(planning_project):
    result = snakemake(planning_project, "-n", "--config", "experiment=fashion")
    output = result.stdout
    assert paths.prepared_data("fashion-mnist", paths.DOWNLOADED) in output
    assert "results/fashion/summary/runs.csv" in output
    assert "reports/fashion/labbook.html" in output
    assert len(planned_runs(result)) == 12
    assert "results/default" not in output


@pytest.mark.workflow
def test_truncated_dataset_stops_the_data_step_naming_the_file(tmp_path, raw_dir):
    broken = tmp_path / "raw"
    shutil.copytree(raw_dir, broken)
    images = broken / "train-images-idx3-ubyte.gz"
    whole = gzip.decompress(images.read_bytes())
    images.write_bytes(gzip.compress(whole[: len(whole) // 2], mtime=0))
    folder = copy_project(tmp_path / "project")
    config = write_config(folder, tiny_grid(broken))
    result = snakemake(folder, "--cores", "1", "--configfile", str(config), check=False)
    output = result.stdout + result.stderr
    assert result.returncode != 0
    assert "train-images-idx3-ubyte.gz" in output
    assert "truncated" in output
    (log_file,) = (folder / paths.data_dir("mnist")).glob("*/prepare.log")
    log = log_file.read_text(encoding="utf-8")
    assert f"{images}: " in log and "truncated" in log
    assert not list((folder / paths.data_dir("mnist")).glob("*/prepared.pt"))
    assert not (folder / "results").exists()


# --- through Snakemake: real tiny runs ---------------------------------------------------------


@pytest.mark.workflow
def test_nested_cli_override_trains_that_many_epochs(tmp_path, raw_dir):
    folder = copy_project(tmp_path / "project")
    grid = small_grid(raw_dir, seed=[0], arch=["mlp"], lr=[0.003])
    config = write_config(folder, grid)
    snakemake(
        folder, "results/tiny/runs/arch=mlp/lr=0.003/seed=0/metrics.json",
        "--cores", "1", "--configfile", str(config), "--config", "train={epochs: 2}",
    )  # fmt: skip
    run = folder / "results/tiny/runs/arch=mlp/lr=0.003/seed=0"
    history = pd.read_csv(run / "history.csv")
    assert list(history["epoch"]) == [1, 2]
    # A cluster job re-reads the Snakefile with the --configfiles and --config it is given;
    # run the train job the way a Slurm job runs it: it must resolve the same config and
    # so retrain the same bytes.
    model = (run / "model.pt").read_bytes()
    written = (run / "model.pt").stat().st_mtime_ns
    snakemake(
        folder, "--target-jobs", "train:run=arch=mlp/lr=0.003/seed=0", "--allowed-rules",
        "train", "--mode", "remote", "--force", "--no-hooks", "--nolock", "--cores", "1",
        "--configfiles", str(config), "--config", "train={epochs: 2}",
    )  # fmt: skip
    assert (run / "model.pt").stat().st_mtime_ns != written, "the job did not run"
    assert (run / "model.pt").read_bytes() == model
    assert list(pd.read_csv(run / "history.csv")["epoch"]) == [1, 2]


@pytest.fixture(scope="module")
def finished_small(tmp_path_factory, raw_dir):
    """One finished pipeline of 2 runs at the default batch size, to add grid axes to."""
    folder = copy_project(tmp_path_factory.mktemp("axes") / "project")
    grid = small_grid(raw_dir, seed=[0], arch=["mlp"], lr=[0.001, 0.003])
    grid["train"] = {"epochs": 1, "max_batches": 4}
    write_config(folder, grid)
    (folder / "config/experiments/tiny.md").write_text(
        "# Lab book: tiny\n\n## Hypothesis\nSmall grids finish in seconds.\n", encoding="utf-8"
    )
    snakemake(folder, "--cores", "2", "--configfile", "test.yaml")
    return folder, grid


def planned_jobs(result) -> set[str]:
    """The rules a dry run plans jobs of, from its job stats table (empty: nothing to do)."""
    table = result.stdout.split("Job stats:", 1)[-1] if "Job stats:" in result.stdout else ""
    rows = re.findall(r"^(\w+)\s+\d+$", table.split("\n\n", 1)[0], flags=re.MULTILINE)
    return set(rows) - {"total"}


@pytest.mark.workflow
def test_the_lab_book_is_in_the_report(finished_small):
    folder, _ = finished_small
    page = (folder / "reports/tiny/labbook.html").read_text(encoding="utf-8")
    assert "Small grids finish in seconds." in page


@pytest.mark.workflow
def test_an_axis_at_its_default_plans_nothing(finished_small):
    folder, grid = finished_small
    same = write_config(
        folder, {**grid, "grid": {**grid["grid"], "batch_size": [128]}}, "same.yaml"
    )
    result = snakemake(folder, "-n", "--configfile", str(same))
    # No run moves or retrains, and the summary stands; only the report's tables page,
    # which quotes the resolved config (now with the new axis), is written again.
    assert planned_jobs(result) <= {"tables", "all"}, result.stdout
    result = snakemake(folder, "-n", "--rerun-triggers", "mtime", "--configfile", str(same))
    assert "Nothing to be done" in result.stdout + result.stderr


@pytest.mark.workflow
def test_new_axis_values_plan_exactly_the_new_runs(finished_small):
    folder, grid = finished_small
    more = write_config(
        folder, {**grid, "grid": {**grid["grid"], "batch_size": [128, 256]}}, "more.yaml"
    )
    result = snakemake(folder, "-n", "--configfile", str(more))
    assert planned_runs(result) == {
        "arch=mlp/lr=0.001/batch_size=256/seed=0",
        "arch=mlp/lr=0.003/batch_size=256/seed=0",
    }
    assert planned_jobs(result) == {"train", "aggregate", "figures", "tables", "all"}


@pytest.mark.workflow
def test_debug_run_writes_only_under_debug_folders(tmp_path, raw_dir):
    folder = copy_project(tmp_path / "project")
    grid = small_grid(raw_dir, seed=[3, 4], arch=["mlp"], lr=[0.001])
    config = write_config(folder, grid)
    stale = folder / "results/debug/runs/arch=cnn/lr=0.5/seed=9"
    stale.mkdir(parents=True)
    snakemake(folder, "-n", "--configfile", str(config), "--config", "debug=True")
    assert stale.is_dir(), "a dry run must not delete anything"

    snakemake(folder, "--cores", "2", "--configfile", str(config), "--config", "debug=True")
    assert not stale.exists(), "a debug run starts from nothing"
    top = {path.relative_to(folder).parts[:2] for path in folder.rglob("*") if path.is_file()}
    written = {parts for parts in top if parts[0] in ("results", "reports", "logs")}
    assert written == {("results", "debug"), ("reports", "debug"), ("logs", "debug")}
    runs = sorted((folder / "results/debug/runs").glob("arch=*/lr=*/seed=*"))
    assert [run.relative_to(folder / "results/debug/runs").as_posix() for run in runs] == [
        "arch=mlp/lr=0.001/seed=3"
    ]
    history = pd.read_csv(runs[0] / "history.csv")
    assert len(history) == 1
    assert "reports/debug/summary.html" in {
        path.relative_to(folder).as_posix() for path in (folder / "reports").rglob("*.html")
    }


@pytest.mark.workflow
def test_a_debug_run_never_deletes_a_running_debug_run(tmp_path, raw_dir):
    """A second debug run, started while one runs, is refused and deletes nothing."""
    folder = copy_project(tmp_path / "project")
    config = write_config(folder, small_grid(raw_dir, seed=[0], arch=["mlp", "cnn"], lr=[0.1]))
    command = [sys.executable, "-m", "snakemake", "--cores", "1", "--configfile", str(config),
               "--config", "debug=True"]  # fmt: skip
    first = subprocess.Popen(
        command, cwd=folder, start_new_session=True, stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT, text=True,
    )  # fmt: skip
    runs = folder / "results/debug/runs"
    try:
        deadline = time.monotonic() + 300
        while not list(runs.glob("*/*/*/metrics.json")):
            assert first.poll() is None, first.communicate()[0]
            assert time.monotonic() < deadline, "the first debug run trained nothing"
            time.sleep(0.05)
        # Hold the first run mid-grid, its claim and Snakemake's lock held, while the second starts.
        os.killpg(first.pid, signal.SIGSTOP)
        written = sorted(path for path in folder.glob("*/debug/**/*") if path.is_file())
        second = snakemake(folder, *command[3:], check=False)
        assert_refused_while_planning(second, "another debug run is running")
        assert sorted(path for path in folder.glob("*/debug/**/*") if path.is_file()) == written
    finally:
        os.killpg(first.pid, signal.SIGCONT)
    output = first.communicate(timeout=600)[0]
    assert first.returncode == 0, output
    assert (folder / "results/debug/summary/runs.csv").is_file()
    assert len(list(runs.glob("*/*/*/metrics.json"))) == 2
