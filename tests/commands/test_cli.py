"""`reprogrid reproduce`: the printed steps rebuild the run, `--execute` proves it bit for bit,
and mistakes end in one line."""

from __future__ import annotations

import importlib.metadata
import json
import re
import shlex
import shutil
from pathlib import Path

import pytest
import yaml

from conftest import (
    RECORD_RUN,
    SCHEMA,
    assert_one_line_error,
    git,
    git_project,
    reprogrid,
    small_disk,
    snakemake,
    tiny_grid,
    valid_record,
    write_config,
)
from reprogrid.commands import reproduce
from reprogrid.record import provenance

RUN = RECORD_RUN


def test_a_missing_run_folder_is_one_line(tmp_path):
    assert_one_line_error(reprogrid("reproduce", str(tmp_path / "nowhere")), "no run folder")


def test_a_folder_without_provenance_is_one_line(tmp_path):
    assert_one_line_error(reprogrid("reproduce", str(tmp_path)), "holds no provenance.json")


def test_a_run_without_a_commit_is_one_line(tmp_path):
    folder = run_folder(tmp_path, altered("code.commit", None))
    assert_one_line_error(reprogrid("reproduce", str(folder)), "records no git commit")


def test_a_record_of_an_older_reprogrid_is_one_line(tmp_path):
    old = {"run": RUN, "experiment": "tiny", "commit": "0" * 40, "dirty": False, "git": {}}
    folder = run_folder(tmp_path, old)
    result = reprogrid("reproduce", str(folder))
    assert_one_line_error(result, f"no `format`, not of format {provenance.FORMAT}")
    assert "train the run again" in result.stderr


def run_folder(base: Path, record) -> Path:
    """A run folder at results/tiny/runs/RUN under `base`, holding `record` and a patch."""
    folder = base / "results/tiny/runs" / RUN
    folder.mkdir(parents=True)
    text = record if isinstance(record, str | bytes) else json.dumps(record)
    getattr(folder / "provenance.json", "write_bytes" if isinstance(text, bytes) else "write_text")(
        text
    )
    (folder / "uncommitted.patch").write_text("")
    return folder


def altered(path: str, value) -> dict:
    """The valid record with the dotted field `path` set to `value`, or removed for DELETE."""
    record = valid_record()
    *parents, last = path.split(".")
    holder = record
    for part in parents:
        holder = holder[part]
    if value is DELETE:
        del holder[last]
    else:
        holder[last] = value
    return record


DELETE = object()
HOSTILE = [
    ("code.commit", "$(touch pwned)", "field `code.commit`"),
    ("code.commit", "abc", "field `code.commit`"),
    ("run", "arch=mlp/../../lr=0.003/seed=0", "field `run`"),
    ("run", "arch=../lr=0.003/seed=0", "field `run`"),
    ("run", "arch=cnn/lr=0.003/seed=0", "field `run`"),
    ("experiment", "../../etc", "field `experiment`"),
    ("code.patch", "../../etc/passwd", "field `code.patch`"),
    ("code.patch", "/etc/passwd", "field `code.patch`"),
    ("packages.torch", "1; rm -rf /", "field `packages.torch`"),
    ("packages.torch", DELETE, "field `packages.torch`"),
    ("machine.python", "3.11 && curl evil", "field `machine.python`"),
    ("code.remote", "--upload-pack=touch pwned", "field `code.remote`"),
    ("code.remote", "ext::sh -c touch% pwned", "field `code.remote`"),
    ("code.remote", "https://example.org/x\nrm -rf ~", "field `code.remote`"),
    ("code.untracked_sources", ["a.py\nrm -rf ~"], "field `code.untracked_sources[0]`"),
    ("code.untracked_sources", [3], "field `code.untracked_sources[0]`"),
    ("config.data.raw_dir", "/data\nEOF\nrm -rf ~", "field `config.data.raw_dir`"),
    ("config.resources.threads", "1; rm -rf /", "field `config.resources.threads`"),
    ("config.resources.threads", True, "field `config.resources.threads`"),
    ("config.resources.threads", 0, "field `config.resources.threads`"),
    ("config.resources.gpu", 1000, "field `config.resources.gpu`"),
    ("code.dirty", "yes", "field `code.dirty`"),
    ("code.dirty", None, "field `code.dirty`"),
    ("code", "not a mapping", "field `code`"),
    ("config.data", [], "field `config.data`"),
    ("config.train", DELETE, "field `config.train`"),
    ("machine", DELETE, "field `machine`"),
]


@pytest.mark.parametrize(("field", "value", "named"), HOSTILE, ids=lambda v: str(v)[:30])
def test_a_hostile_provenance_is_refused_naming_the_field(tmp_path, field, value, named):
    folder = run_folder(tmp_path, altered(field, value))
    result = reprogrid("reproduce", str(folder), cwd=tmp_path)
    assert_one_line_error(result, named)
    assert "refusing" in result.stderr
    assert not (tmp_path / "pwned").exists()


def test_the_experiment_pattern_is_the_schemas():
    assert reproduce.EXPERIMENT.pattern == SCHEMA["properties"]["experiment"]["pattern"]


def test_a_patch_that_is_a_symlink_out_of_the_run_folder_is_refused(tmp_path):
    folder = run_folder(tmp_path, valid_record())
    (folder / "uncommitted.patch").unlink()
    (folder / "uncommitted.patch").symlink_to(tmp_path / "outside.patch")
    (tmp_path / "outside.patch").write_text("")
    assert_one_line_error(reprogrid("reproduce", str(folder)), "field `code.patch`")


def test_a_run_id_that_is_not_its_folder_is_refused(tmp_path):
    folder = tmp_path / "some/other/folder"
    folder.mkdir(parents=True)
    (folder / "provenance.json").write_text(json.dumps(valid_record()))
    (folder / "uncommitted.patch").write_text("")
    assert_one_line_error(reprogrid("reproduce", str(folder)), "keep a run in the folder")


@pytest.mark.parametrize(
    ("content", "named"),
    [
        ("{not json", "cannot be read"),
        (b"\xff\xfe{}", "cannot be read"),
        ("[1, 2]", "holds a JSON list, not an object"),
        ("[" * 100000 + "]" * 100000, "cannot be read"),
        (json.dumps({"format": provenance.FORMAT, "run": RUN}), "field `experiment` is missing"),
    ],
    ids=["not-json", "not-utf8", "list", "deep", "missing-keys"],
)
def test_a_malformed_provenance_is_one_line(tmp_path, content, named):
    folder = run_folder(tmp_path, content)
    assert_one_line_error(reprogrid("reproduce", str(folder)), named)


def test_the_printed_steps_quote_paths_with_spaces_and_quotes(tmp_path):
    base = tmp_path / 'it\'s a "lab" $HOME; folder'
    remote = str(tmp_path / "the lab's repo")
    folder = run_folder(base, valid_record(remote=remote))
    workdir = "my copy; $(date)"
    result = reprogrid("reproduce", str(folder), "--workdir", workdir)
    assert result.returncode == 0, result.stderr
    lines = result.stdout.splitlines()
    commands = [shlex.split(line) for line in lines if not line.startswith("#")]
    assert ["git", "clone", "--", remote, workdir] in commands
    assert ["cd", "--", workdir] in commands
    assert ["git", "apply", str(folder.resolve() / "uncommitted.patch")] in commands
    cmp = next(command for command in commands if command[0] == "cmp")
    assert cmp[:3] == ["cmp", f"results/tiny/runs/{RUN}/model.pt", str(folder / "model.pt")]
    install = next(command for command in commands if "install" in command)
    assert install[-4:] == ["torch==2.14.1+cpu", "torchvision==0.29.1", "-e", "."]


def test_the_steps_keep_the_values_the_experiments_run_ids_leave_out(tmp_path):
    # A run whose id names batch_size=64 because its experiment recorded 128 as the value
    # ids leave out: the reproduction names it the same, whatever its checkout's default.
    run = "arch=mlp/lr=0.003/batch_size=64/seed=0"
    record = valid_record()
    record["run"] = run
    record["config"]["train"]["batch_size"] = 64
    folder = tmp_path / "results/tiny/runs" / run
    folder.mkdir(parents=True)
    (folder / "provenance.json").write_text(json.dumps(record))
    (folder / "uncommitted.patch").write_text("")
    (tmp_path / "results/tiny/run-names.json").write_text(
        '{"batch_size": 128, "optimizer": "adam"}'
    )
    result = reprogrid("reproduce", str(folder), "--workdir", "copy")
    assert result.returncode == 0, result.stderr
    steps = result.stdout.split("cat > results/tiny/run-names.json <<'EOF'\n", 1)[1]
    assert steps.startswith('{"batch_size": 128}\nEOF\n')
    assert steps.index("EOF") < steps.index("snakemake ")


@pytest.fixture(scope="module")
def dirty_run(tmp_path_factory, raw_dir):
    """One run made in a git checkout with an uncommitted change."""
    base = tmp_path_factory.mktemp("cli")
    folder = git_project(base / "project")
    models = folder / "src/reprogrid/train/models.py"
    models.write_text(models.read_text() + "\n# An uncommitted change the run depends on.\n")
    config = tiny_grid(
        raw_dir, grid={"seed": [0], "arch": ["mlp"], "lr": [0.003]}, analysis={"criterion": None}
    )
    configfile = write_config(base, config)
    target = f"results/tiny/runs/{RUN}/model.pt"
    snakemake(folder, "--cores", "1", target, "--configfile", str(configfile))
    return folder / "results/tiny/runs" / RUN


@pytest.mark.workflow
def test_the_printed_steps_pin_the_commit_patch_packages_config_and_target(dirty_run, raw_dir):
    result = reprogrid("reproduce", str(dirty_run), "--raw-dir", str(raw_dir))
    assert result.returncode == 0, result.stderr
    steps = result.stdout
    commit = git(dirty_run, "rev-parse", "HEAD").strip()
    assert f"git clone -- {dirty_run.parents[5]} " in steps
    assert f"git checkout {commit}\n" in steps
    assert f"git apply {dirty_run / 'uncommitted.patch'}\n" in steps
    # The run was made here, so the pins must name the versions installed here.
    torch, torchvision = (importlib.metadata.version(name) for name in ("torch", "torchvision"))
    assert f"pip install torch=={torch} torchvision=={torchvision} -e ." in steps
    assert (
        f"snakemake --cores 1 results/tiny/runs/{RUN}/model.pt --configfile reproduce.yaml" in steps
    )
    written = re.search(r"<<'EOF'\n(.*?)\nEOF\n", steps, re.DOTALL).group(1)
    config = yaml.safe_load(written)
    assert config["experiment"] == "tiny"
    assert config["grid"] == {"arch": ["mlp"], "lr": [0.003], "seed": [0]}
    assert config["train"]["epochs"] == 1
    assert config["train"]["batch_size"] == 64
    assert config["data"]["raw_dir"] == str(raw_dir)
    assert config["resources"]["threads"] == 1


@pytest.mark.workflow
def test_execute_rebuilds_the_run_with_identical_weights(dirty_run, raw_dir, tmp_path):
    result = reprogrid(
        "reproduce", str(dirty_run), "--execute", "--raw-dir", str(raw_dir),
        "--workdir", str(tmp_path / "checkout"),
    )  # fmt: skip
    assert result.returncode == 0, result.stdout + result.stderr
    assert "weights: identical" in result.stdout
    assert "metrics: identical" in result.stdout
    assert result.stdout.splitlines()[-1] == "identical"
    assert "warning: this Python has torch" not in result.stdout  # the run recorded this torch
    rebuilt = tmp_path / "checkout/src/reprogrid/train/models.py"
    assert "# An uncommitted change the run depends on." in rebuilt.read_text()


@pytest.mark.workflow
def test_execute_says_differs_when_the_stored_weights_were_altered(dirty_run, raw_dir, tmp_path):
    copy = tmp_path / "elsewhere" / RUN
    shutil.copytree(dirty_run, copy)
    model = copy / "model.pt"
    model.write_bytes(model.read_bytes() + b"\0")
    result = reprogrid(
        "reproduce", str(copy), "--execute", "--raw-dir", str(raw_dir),
        "--source", str(dirty_run.parents[5]), "--workdir", str(tmp_path / "checkout"),
    )  # fmt: skip
    assert result.returncode == 1, result.stdout + result.stderr
    assert "weights: differs" in result.stdout
    assert result.stdout.splitlines()[-1] == "differs"


def test_a_command_that_finds_its_disk_full_says_so_in_one_line(tmp_path):
    with small_disk(tmp_path / "disk", "200k") as disk:
        with pytest.raises(OSError, match="No space left"), open(disk / "other", "wb") as other:
            other.write(bytes(400_000))
        result = reprogrid("task", "new", "probe", cwd=disk)
        written = sorted(str(p.relative_to(disk)) for p in disk.rglob("*") if p.is_file())
    assert result.returncode == 1, result.stderr
    assert result.stderr.startswith("reprogrid: no space left on the disk holding ")
    assert result.stderr.count("\n") == 1 and "Traceback" not in result.stderr
    assert result.stderr.endswith("; free space and run again\n")
    assert written == ["other"]
