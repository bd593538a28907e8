"""Raw-data checks refuse every malformed or misnamed input by name; preparation is faithful."""

from __future__ import annotations

import gzip
import hashlib
import json
import os
import re
import shutil
import socket
import struct
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch

import idxdata
from conftest import copy_project, prepare_idx, snakemake, tiny_grid, write_config
from reprogrid.datasets import data, rawfiles
from reprogrid.jobs.data import prepare_data_job
from reprogrid.plan import paths
from reprogrid.record import provenance


@pytest.fixture
def raw(tmp_path):
    return idxdata.write_dataset(tmp_path / "raw", n_train=200, n_test=50)


def test_prepare_keeps_every_image_and_label(raw, tmp_path):
    record = prepare_idx(raw, tmp_path / "prepared.pt", "mnist", verify=False)
    prepared = data.load_prepared(tmp_path / "prepared.pt")
    assert prepared["train_x"].shape == (200, 28, 28)
    assert prepared["train_x"].dtype == torch.uint8
    assert prepared["test_y"].shape == (50,)
    with gzip.open(raw / "t10k-labels-idx1-ubyte.gz") as handle:
        labels = np.frombuffer(handle.read(), dtype=np.uint8, offset=8)
    assert prepared["test_y"].tolist() == labels.tolist()
    assert record["counts"] == {"train": 200, "test": 50}
    assert record["canonical_counts"] is False
    expected = hashlib.sha256((raw / "train-images-idx3-ubyte.gz").read_bytes()).hexdigest()
    assert record["raw_sha256"]["train-images-idx3-ubyte.gz"] == expected
    assert record["prepared_sha256"] == data.sha256(tmp_path / "prepared.pt")
    assert 0 < record["facts"]["std"] < 1


def test_prepare_reads_plain_files_too(raw, tmp_path):
    plain = tmp_path / "plain"
    plain.mkdir()
    for path in raw.iterdir():
        (plain / path.name.removesuffix(".gz")).write_bytes(gzip.decompress(path.read_bytes()))
    first = prepare_idx(raw, tmp_path / "a.pt", "mnist", verify=False)
    second = prepare_idx(plain, tmp_path / "b.pt", "mnist", verify=False)
    assert first["prepared_sha256"] == second["prepared_sha256"]


def test_prepared_bytes_depend_only_on_content(raw, tmp_path):
    a = prepare_idx(raw, tmp_path / "one" / "prepared.pt", "kmnist", verify=False)
    b = prepare_idx(raw, tmp_path / "two" / "other-name.pt", "kmnist", verify=False)
    assert a["prepared_sha256"] == b["prepared_sha256"]


def _rewrite(path, payload: bytes) -> None:
    path.write_bytes(gzip.compress(payload))


def test_wrong_magic_number_is_refused_by_name(raw, tmp_path):
    target = raw / "train-labels-idx1-ubyte.gz"
    content = bytearray(gzip.decompress(target.read_bytes()))
    content[3] = 0x03
    _rewrite(target, bytes(content))
    with pytest.raises(data.DataError, match=r"train-labels-idx1-ubyte\.gz: magic number"):
        prepare_idx(raw, tmp_path / "p.pt", "mnist", verify=False)


def test_truncated_gzip_is_refused_by_name(raw, tmp_path):
    target = raw / "train-images-idx3-ubyte.gz"
    target.write_bytes(target.read_bytes()[: len(target.read_bytes()) // 2])
    with pytest.raises(data.DataError, match=r"train-images-idx3-ubyte\.gz: cannot be read"):
        prepare_idx(raw, tmp_path / "p.pt", "mnist", verify=False)
    assert not (tmp_path / "p.pt").exists()


def test_truncated_payload_is_refused_by_name(raw, tmp_path):
    target = raw / "t10k-images-idx3-ubyte.gz"
    _rewrite(target, gzip.decompress(target.read_bytes())[:-100])
    with pytest.raises(data.DataError, match=r"t10k-images-idx3-ubyte\.gz: .*truncated"):
        prepare_idx(raw, tmp_path / "p.pt", "mnist", verify=False)


def test_wrong_image_size_is_refused(tmp_path):
    folder = idxdata.write_dataset(tmp_path / "raw", n_train=20, n_test=10)
    images = np.zeros((20, 32, 32), dtype=np.uint8)
    _rewrite(folder / "train-images-idx3-ubyte.gz", idxdata.idx_bytes(images))
    with pytest.raises(data.DataError, match=r"images are \(32, 32\), expected \(28, 28\)"):
        prepare_idx(folder, tmp_path / "p.pt", "mnist", verify=False)


def test_label_out_of_range_is_refused(raw, tmp_path):
    labels = np.full(50, 10, dtype=np.uint8)
    _rewrite(raw / "t10k-labels-idx1-ubyte.gz", idxdata.idx_bytes(labels))
    with pytest.raises(data.DataError, match=r"label 10 outside 0..9"):
        prepare_idx(raw, tmp_path / "p.pt", "mnist", verify=False)


def test_count_mismatch_is_refused(raw, tmp_path):
    labels = np.zeros(49, dtype=np.uint8)
    _rewrite(raw / "t10k-labels-idx1-ubyte.gz", idxdata.idx_bytes(labels))
    with pytest.raises(data.DataError, match=r"49 labels for 50 images"):
        prepare_idx(raw, tmp_path / "p.pt", "mnist", verify=False)


def test_missing_file_is_refused(raw, tmp_path):
    (raw / "t10k-images-idx3-ubyte.gz").unlink()
    with pytest.raises(data.DataError, match=r"no t10k-images-idx3-ubyte"):
        prepare_idx(raw, tmp_path / "p.pt", "mnist", verify=False)


def test_validation_split_is_seeded_disjoint_and_complete():
    train, val = data.split_train_val(1000, 0.1, split_seed=0)
    again_train, again_val = data.split_train_val(1000, 0.1, split_seed=0)
    _, other_val = data.split_train_val(1000, 0.1, split_seed=1)
    assert len(val) == 100 and len(train) == 900
    assert torch.equal(val, again_val) and torch.equal(train, again_train)
    assert not torch.equal(val, other_val)
    assert sorted(torch.cat([train, val]).tolist()) == list(range(1000))


# --- which data set the files are ---------------------------------------------------------------

FASHION = Path("/usr/share/datasets/fashion-mnist")
needs_fashion = pytest.mark.skipif(
    not FASHION.is_dir(), reason="needs the real Fashion-MNIST files in /usr/share/datasets"
)


def _plain_copy(source: Path, dest: Path) -> Path:
    """The IDX files of `source`, decompressed into `dest`."""
    dest.mkdir(parents=True)
    for path in source.glob("*.gz"):
        (dest / path.stem).write_bytes(gzip.decompress(path.read_bytes()))
    return dest


@needs_fashion
def test_real_fashion_mnist_is_recognised_gzipped_or_plain(tmp_path):
    plain = _plain_copy(FASHION, tmp_path / "plain")
    for folder in (FASHION, plain):
        files = rawfiles.inspect(folder)
        assert rawfiles.check("fashion-mnist", files, verify=True) is True
        for wrong in ("kmnist", "mnist"):
            for verify in (True, False):
                with pytest.raises(
                    data.DataError,
                    match=rf"data\.dataset: {folder} holds the published fashion-mnist files, "
                    rf"not {wrong}'s; set data\.dataset: fashion-mnist",
                ):
                    rawfiles.check(wrong, files, verify)


@needs_fashion
def test_published_files_under_other_names_are_refused(tmp_path, raw):
    swapped = tmp_path / "swapped"
    swapped.mkdir()
    for name in idxdata.FILES.values():
        other = name.replace("train", "X").replace("t10k", "train").replace("X", "t10k")
        shutil.copy(FASHION / other, swapped / name)
    with pytest.raises(
        data.DataError,
        match=r"train-images-idx3-ubyte\.gz is the published t10k-images-idx3-ubyte of "
        r"fashion-mnist, not the train-images-idx3-ubyte of fashion-mnist",
    ):
        rawfiles.check("fashion-mnist", rawfiles.inspect(swapped), verify=False)
    # Half Fashion-MNIST, half data of one's own, named kmnist: the Fashion-MNIST half is named.
    mixed = tmp_path / "mixed"
    shutil.copytree(raw, mixed)
    shutil.copy(FASHION / "t10k-labels-idx1-ubyte.gz", mixed)
    with pytest.raises(
        data.DataError,
        match=r"t10k-labels-idx1-ubyte\.gz is the published .* of fashion-mnist, not .* of kmnist",
    ):
        rawfiles.check("kmnist", rawfiles.inspect(mixed), verify=False)


def test_unknown_files_are_refused_unless_verify_is_off(raw, tmp_path):
    files = rawfiles.inspect(raw)
    with pytest.raises(
        data.DataError,
        match=r"data\.verify: .*train-images-idx3-ubyte\.gz is not mnist's published "
        r"train-images-idx3-ubyte .*set data\.verify: false",
    ):
        rawfiles.check("mnist", files, verify=True)
    assert rawfiles.check("mnist", files, verify=False) is False
    with pytest.raises(data.DataError, match=r"data\.verify: "):
        prepare_idx(raw, tmp_path / "p.pt", "mnist", verify=True)
    assert not (tmp_path / "p.pt").exists()
    plain = _plain_copy(raw, tmp_path / "plain")
    with pytest.raises(
        data.DataError, match=r"kmnist's authors publish digests of its \.gz files only"
    ):
        rawfiles.check("kmnist", rawfiles.inspect(plain), verify=True)


def test_a_file_given_gzipped_and_plain_must_hold_the_same_data(raw, tmp_path):
    name = "train-labels-idx1-ubyte"
    (raw / name).write_bytes(gzip.decompress((raw / f"{name}.gz").read_bytes()))
    assert rawfiles.inspect(raw)["train_labels"].path == raw / f"{name}.gz"
    (raw / name).write_bytes(idxdata.idx_bytes(np.zeros(200, dtype=np.uint8)))
    with pytest.raises(
        data.DataError, match=rf"{raw}: holds {name}\.gz and {name} with different contents"
    ):
        prepare_idx(raw, tmp_path / "p.pt", "mnist", verify=False)


def test_test_images_equal_to_the_training_images_are_refused(raw, tmp_path):
    shutil.copy(raw / "train-images-idx3-ubyte.gz", raw / "t10k-images-idx3-ubyte.gz")
    with pytest.raises(data.DataError, match=r"holds the same images as .*train-images"):
        prepare_idx(raw, tmp_path / "p.pt", "mnist", verify=False)


def test_misnamed_compression_is_refused_with_the_fix(raw, tmp_path):
    plain = _plain_copy(raw, tmp_path / "plain")
    target = plain / "train-images-idx3-ubyte"
    target.rename(plain / "train-images-idx3-ubyte.gz")
    with pytest.raises(data.DataError, match=r"not gzipped: name it train-images-idx3-ubyte$"):
        prepare_idx(plain, tmp_path / "p.pt", "mnist", verify=False)
    gz = raw / "t10k-labels-idx1-ubyte.gz"
    gz.rename(raw / "t10k-labels-idx1-ubyte")
    with pytest.raises(data.DataError, match=r"it is gzipped: name it t10k-labels-idx1-ubyte\.gz"):
        prepare_idx(raw, tmp_path / "p.pt", "mnist", verify=False)


@pytest.mark.parametrize("where", [0.0, 0.5])  # zlib's "invalid code lengths", a failed CRC
def test_a_corrupt_gzip_stream_is_refused_by_name(raw, tmp_path, where):
    target = raw / "train-images-idx3-ubyte.gz"
    content = bytearray(target.read_bytes())
    content[11 + int(where * (len(content) - 11))] ^= 0xFF
    target.write_bytes(bytes(content))
    with pytest.raises(data.DataError, match=r"train-images-idx3-ubyte\.gz: cannot be read"):
        prepare_idx(raw, tmp_path / "p.pt", "mnist", verify=False)


def test_a_header_promising_more_than_it_holds_is_refused(raw, tmp_path):
    header = struct.pack(">IIII", 0x803, 2**32 - 1, 2**32 - 1, 2**32 - 1)
    _rewrite(raw / "train-images-idx3-ubyte.gz", header + bytes(784))
    with pytest.raises(
        data.DataError, match=r"train-images-idx3-ubyte\.gz: .*truncated or corrupt"
    ):
        prepare_idx(raw, tmp_path / "p.pt", "mnist", verify=False)


# --- the prepared data's key ----------------------------------------------------------------


def test_the_key_follows_the_folder_and_the_bytes_and_planning_caches_digests(raw, tmp_path):
    cache = tmp_path / "digests.json"
    first = rawfiles.plan("mnist", str(raw), False, cache)
    assert first.key.startswith("raw-") and len(first.key) == 16
    assert sorted(first.inputs) == sorted(str(raw / name) for name in idxdata.FILES.values())
    assert json.loads(cache.read_text()).keys() == {str(Path(p).resolve()) for p in first.inputs}
    assert rawfiles.plan("mnist", str(raw), False, cache) == first
    copy = shutil.copytree(raw, tmp_path / "copy")
    assert rawfiles.plan("mnist", str(copy), False, cache).key != first.key
    idxdata.write_dataset(raw, n_train=200, n_test=50, seed=1)
    assert rawfiles.plan("mnist", str(raw), False, cache).key != first.key
    assert rawfiles.plan("mnist", None, True, cache) == rawfiles.Plan(paths.DOWNLOADED, [])


def test_planning_refuses_an_unreadable_file_naming_the_key(raw, tmp_path):
    target = raw / "t10k-labels-idx1-ubyte.gz"
    target.write_bytes(target.read_bytes()[:-20])
    with pytest.raises(
        data.DataError,
        match=r"^config key data\.raw_dir: .*t10k-labels-idx1-ubyte\.gz: cannot be read",
    ):
        rawfiles.plan("mnist", str(raw), False, tmp_path / "digests.json")
    assert not (tmp_path / "digests.json").exists()


# --- the data job ------------------------------------------------------------------------------


def _job(raw_dir: Path, folder: Path, key: str | None = None, **overrides) -> int:
    """Run the data job as rule prepare_data does, its outputs in `folder`."""
    planned = key or rawfiles.data_key(
        str(raw_dir), {path.name: data.sha256(path) for path in raw_dir.iterdir()}
    )
    arguments = {
        "task": "idx_classification",
        "dataset": "mnist",
        "raw_dir": str(raw_dir),
        "verify": False,
        "key": planned,
        "download_dir": str(folder / "download"),
        "prepared_path": str(folder / "prepared.pt"),
        "checks_path": str(folder / "checks.json"),
        "log_path": str(folder / "prepare.log"),
        **overrides,
    }
    return prepare_data_job(**arguments)


def _gz_stream_cut(path: Path) -> None:
    path.write_bytes(path.read_bytes()[:-20])


def _empty(path: Path) -> None:
    path.write_bytes(b"")


def _empty_plain(path: Path) -> None:
    path.unlink()
    path.with_suffix("").write_bytes(b"")


def _payload_cut(path: Path) -> None:
    path.unlink()
    idx = idxdata.idx_bytes(np.zeros(200, dtype=np.uint8))
    path.with_suffix("").write_bytes(idx[:-1])


@pytest.mark.parametrize(
    ("damage", "fault"),
    [
        (_gz_stream_cut, r"idx1-ubyte\.gz: cannot be read \(Compressed file ended"),
        (_empty, r"idx1-ubyte\.gz: too short to be an IDX file \(0 bytes\)"),
        (_empty_plain, r"idx1-ubyte: too short to be an IDX file \(0 bytes\)"),
        (_payload_cut, r"idx1-ubyte: 207 bytes where the header \(200,\) promises 208"),
    ],
)
def test_the_data_job_refuses_a_damaged_file_by_name_in_its_log(raw, tmp_path, damage, fault):
    damage(raw / "train-labels-idx1-ubyte.gz")
    assert _job(raw, tmp_path / "out") == 1
    log = (tmp_path / "out/prepare.log").read_text(encoding="utf-8")
    errors = [line for line in log.splitlines() if " ERROR " in line]
    assert len(errors) == 1 and re.search(
        rf"{re.escape(str(raw))}/train-labels-{fault}", errors[0]
    ), log
    assert "Traceback" not in log
    assert not (tmp_path / "out/prepared.pt").exists()
    assert not (tmp_path / "out/checks.json").exists()


def test_the_data_job_refuses_files_changed_since_planning(raw, tmp_path):
    key = rawfiles.data_key(str(raw), {"other": "0" * 64})
    assert _job(raw, tmp_path / "out", key=key) == 1
    log = (tmp_path / "out/prepare.log").read_text(encoding="utf-8")
    assert "the files changed after planning (key raw-" in log and "run snakemake again" in log
    assert not (tmp_path / "out/prepared.pt").exists()


def test_an_unexpected_failure_leaves_its_traceback_in_the_log(raw, tmp_path):
    (tmp_path / "out").mkdir()
    (tmp_path / "out/blocker").write_text("a file where a folder should be")
    code = _job(raw, tmp_path / "out", prepared_path=str(tmp_path / "out/blocker/prepared.pt"))
    assert code == 1
    log = (tmp_path / "out/prepare.log").read_text(encoding="utf-8")
    assert "ERROR preparing the data of task idx_classification failed" in log
    assert "Traceback (most recent call last)" in log and "blocker" in log


def test_the_data_job_records_what_it_checked(raw, tmp_path):
    assert _job(raw, tmp_path / "out") == 0
    checks = json.loads((tmp_path / "out/checks.json").read_text())
    assert checks["raw_dir"] == str(raw)
    assert (checks["verify"], checks["verified"]) == (False, False)
    assert checks["raw_sha256"] == {path.name: data.sha256(path) for path in raw.iterdir()}
    log = (tmp_path / "out/prepare.log").read_text(encoding="utf-8")
    assert "files are not its published ones (data.verify is off)" in log


# --- through Snakemake -------------------------------------------------------------------------


def _snakemake(folder: Path, *args: str, env: dict | None = None) -> subprocess.CompletedProcess:
    """Snakemake in `folder`, given at most five minutes, with `env` added to the environment."""
    return subprocess.run(
        [sys.executable, "-m", "snakemake", *args],
        cwd=folder,
        capture_output=True,
        text=True,
        timeout=300,
        env={**os.environ, **(env or {})},
    )


def _one_run(raw_dir: Path, experiment: str) -> dict:
    return tiny_grid(
        raw_dir,
        experiment=experiment,
        grid={"seed": [0], "arch": ["mlp"], "lr": [0.003]},
        analysis={"criterion": None},
    )


RUN = "arch=mlp/lr=0.003/seed=0"


@pytest.mark.workflow
def test_experiments_reading_other_files_keep_their_own_prepared_data(tmp_path, raw_dir):
    folder = copy_project(tmp_path / "project")
    other = idxdata.write_dataset(tmp_path / "other", n_train=1200, n_test=300, seed=1)
    for experiment, raw in (("first", raw_dir), ("second", other)):
        config = write_config(folder, _one_run(raw, experiment), f"{experiment}.yaml")
        target = paths.run_file(experiment, RUN, "metrics.json")
        snakemake(folder, target, "--cores", "1", "--configfile", str(config))
    prepared = sorted((folder / paths.data_dir("mnist")).glob("raw-*/prepared.safetensors"))
    assert len(prepared) == 2, "each experiment's files get their own prepared data"
    assert data.sha256(prepared[0]) != data.sha256(prepared[1])
    for experiment, raw in (("first", raw_dir), ("second", other)):
        record = provenance.read_run(folder / paths.run_dir(experiment, RUN))
        raw_sha256 = {path.name: data.sha256(path) for path in raw.iterdir()}
        assert record.data.raw_sha256 == raw_sha256
        assert record.data.prepared_sha256 in {data.sha256(path) for path in prepared}
        assert record.config.data.raw_dir == str(raw)
        assert record.config.data.verify is False
    again = snakemake(
        folder, paths.run_file("first", RUN, "metrics.json"), "-n", "--configfile",
        str(folder / "first.yaml"),
    )  # fmt: skip
    assert "Nothing to be done" in again.stdout + again.stderr


@needs_fashion
@pytest.mark.workflow
def test_fashion_mnist_named_kmnist_is_refused_before_any_job(project):
    for verify in ("true", "false"):
        result = _snakemake(
            project,
            "-n",
            "--config",
            f"data={{dataset: kmnist, raw_dir: {FASHION}, verify: {verify}}}",
        )
        output = result.stdout + result.stderr
        assert result.returncode == 1, output
        assert "Traceback" not in output
        (line,) = [line for line in output.splitlines() if line.startswith("reprogrid:")]
        assert line == (
            f"reprogrid: config key data.dataset: {FASHION} holds the published fashion-mnist "
            "files, not kmnist's; set data.dataset: fashion-mnist"
        )
    assert not (project / "resources").exists()
    accepted = _snakemake(
        project, "-n", "--config", f"data={{dataset: fashion-mnist, raw_dir: {FASHION}}}"
    )
    assert accepted.returncode == 0, accepted.stdout + accepted.stderr
    assert "resources/data/fashion-mnist/raw-" in accepted.stdout


@pytest.mark.workflow
def test_data_of_ones_own_needs_verify_off(project, raw_dir):
    result = _snakemake(project, "-n", "--config", f"data={{raw_dir: {raw_dir}}}")
    output = result.stdout + result.stderr
    assert result.returncode == 1, output
    (line,) = [line for line in output.splitlines() if line.startswith("reprogrid:")]
    assert line.startswith("reprogrid: config key data.verify: ")
    assert "is not mnist's published" in line and "set data.verify: false" in line


def _unused_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


@pytest.mark.workflow
def test_a_download_without_network_ends_in_one_line_naming_raw_dir(project):
    # Every request goes to a proxy port nobody listens on: refused at once, nothing fetched.
    proxy = f"http://127.0.0.1:{_unused_port()}"
    offline = {"http_proxy": proxy, "https_proxy": proxy, "HTTP_PROXY": proxy,
               "HTTPS_PROXY": proxy, "no_proxy": "", "NO_PROXY": ""}  # fmt: skip
    target = paths.prepared_data("mnist", paths.DOWNLOADED)
    result = _snakemake(project, target, "--cores", "1", "--show-failed-logs", env=offline)
    output = result.stdout + result.stderr
    assert result.returncode != 0, output
    log = (project / paths.data_log("mnist", paths.DOWNLOADED)).read_text(encoding="utf-8")
    lines = log.splitlines()
    assert len(lines) == 1 and " ERROR cannot download mnist " in lines[0], log
    assert "data.raw_dir" in lines[0]
    for name in idxdata.FILES.values():
        assert name in lines[0]
    assert lines[0].split(" ERROR ", 1)[1] in output
    assert "Traceback" not in output
    assert not list((project / paths.prepared_dir("mnist", paths.DOWNLOADED)).rglob("*.gz"))
    assert not (project / target).exists()


@pytest.mark.workflow
def test_an_empty_file_stops_the_data_step_and_its_log_says_which(tmp_path, raw_dir):
    broken = shutil.copytree(raw_dir, tmp_path / "raw")
    (broken / "train-labels-idx1-ubyte.gz").unlink()
    (broken / "train-labels-idx1-ubyte").write_bytes(b"")
    folder = copy_project(tmp_path / "project")
    config = write_config(folder, tiny_grid(broken))
    result = _snakemake(
        folder, "--cores", "1", "--configfile", str(config), "--until", "prepare_data",
        "--show-failed-logs",
    )  # fmt: skip
    output = result.stdout + result.stderr
    assert result.returncode != 0, output
    message = f"{broken}/train-labels-idx1-ubyte: too short to be an IDX file (0 bytes)"
    (log,) = (folder / paths.data_dir("mnist")).glob("raw-*/prepare.log")
    assert message in log.read_text(encoding="utf-8")
    assert message in output
    assert not list((folder / paths.data_dir("mnist")).glob("*/prepared.safetensors"))


def test_idx_count_reads_the_header_or_gives_up(tmp_path, raw_dir):
    images = raw_dir / "train-images-idx3-ubyte.gz"
    assert rawfiles.idx_count(images) == 1200
    plain = tmp_path / "train-images-idx3-ubyte"
    plain.write_bytes(gzip.decompress(images.read_bytes()))
    assert rawfiles.idx_count(plain) == 1200
    for broken in (b"", b"\x00\x00\x08", b"not idx at all", images.read_bytes()[:20]):
        path = tmp_path / "broken.gz"
        path.write_bytes(broken)
        assert rawfiles.idx_count(path) is None
        assert rawfiles.idx_count(tmp_path / "broken") is None
