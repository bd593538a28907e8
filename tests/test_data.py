"""The raw-data checks refuse every malformed input by file name; preparation is faithful."""

from __future__ import annotations

import gzip
import hashlib

import numpy as np
import pytest
import torch

import idxdata
from reprogrid import data


@pytest.fixture
def raw(tmp_path):
    return idxdata.write_dataset(tmp_path / "raw", n_train=200, n_test=50)


def test_prepare_keeps_every_image_and_label(raw, tmp_path):
    record = data.prepare("mnist", raw, tmp_path / "prepared.pt")
    prepared = data.load_prepared(tmp_path / "prepared.pt")
    assert prepared["train_images"].shape == (200, 28, 28)
    assert prepared["train_images"].dtype == torch.uint8
    assert prepared["test_labels"].shape == (50,)
    with gzip.open(raw / "t10k-labels-idx1-ubyte.gz") as handle:
        labels = np.frombuffer(handle.read(), dtype=np.uint8, offset=8)
    assert prepared["test_labels"].tolist() == labels.tolist()
    assert record["counts"] == {"train": 200, "test": 50}
    assert record["canonical_counts"] is False
    expected = hashlib.sha256((raw / "train-images-idx3-ubyte.gz").read_bytes()).hexdigest()
    assert record["raw_sha256"]["train-images-idx3-ubyte.gz"] == expected
    assert record["prepared_sha256"] == data.sha256(tmp_path / "prepared.pt")
    assert 0 < record["std"] < 1


def test_prepare_reads_plain_files_too(raw, tmp_path):
    plain = tmp_path / "plain"
    plain.mkdir()
    for path in raw.iterdir():
        (plain / path.name.removesuffix(".gz")).write_bytes(gzip.decompress(path.read_bytes()))
    first = data.prepare("mnist", raw, tmp_path / "a.pt")
    second = data.prepare("mnist", plain, tmp_path / "b.pt")
    assert first["prepared_sha256"] == second["prepared_sha256"]


def test_prepared_bytes_depend_only_on_content(raw, tmp_path):
    a = data.prepare("kmnist", raw, tmp_path / "one" / "prepared.pt")
    b = data.prepare("kmnist", raw, tmp_path / "two" / "other-name.pt")
    assert a["prepared_sha256"] == b["prepared_sha256"]


def _rewrite(path, payload: bytes) -> None:
    path.write_bytes(gzip.compress(payload))


def test_wrong_magic_number_is_refused_by_name(raw, tmp_path):
    target = raw / "train-labels-idx1-ubyte.gz"
    content = bytearray(gzip.decompress(target.read_bytes()))
    content[3] = 0x03
    _rewrite(target, bytes(content))
    with pytest.raises(data.DataError, match=r"train-labels-idx1-ubyte\.gz: magic number"):
        data.prepare("mnist", raw, tmp_path / "p.pt")


def test_truncated_gzip_is_refused_by_name(raw, tmp_path):
    target = raw / "train-images-idx3-ubyte.gz"
    target.write_bytes(target.read_bytes()[: len(target.read_bytes()) // 2])
    with pytest.raises(data.DataError, match=r"train-images-idx3-ubyte\.gz: cannot be read"):
        data.prepare("mnist", raw, tmp_path / "p.pt")
    assert not (tmp_path / "p.pt").exists()


def test_truncated_payload_is_refused_by_name(raw, tmp_path):
    target = raw / "t10k-images-idx3-ubyte.gz"
    _rewrite(target, gzip.decompress(target.read_bytes())[:-100])
    with pytest.raises(data.DataError, match=r"t10k-images-idx3-ubyte\.gz: .*truncated"):
        data.prepare("mnist", raw, tmp_path / "p.pt")


def test_wrong_image_size_is_refused(tmp_path):
    folder = idxdata.write_dataset(tmp_path / "raw", n_train=20, n_test=10)
    images = np.zeros((20, 32, 32), dtype=np.uint8)
    _rewrite(folder / "train-images-idx3-ubyte.gz", idxdata.idx_bytes(images))
    with pytest.raises(data.DataError, match=r"images are \(32, 32\), expected \(28, 28\)"):
        data.prepare("mnist", folder, tmp_path / "p.pt")


def test_label_out_of_range_is_refused(raw, tmp_path):
    labels = np.full(50, 10, dtype=np.uint8)
    _rewrite(raw / "t10k-labels-idx1-ubyte.gz", idxdata.idx_bytes(labels))
    with pytest.raises(data.DataError, match=r"label 10 outside 0..9"):
        data.prepare("mnist", raw, tmp_path / "p.pt")


def test_count_mismatch_is_refused(raw, tmp_path):
    labels = np.zeros(49, dtype=np.uint8)
    _rewrite(raw / "t10k-labels-idx1-ubyte.gz", idxdata.idx_bytes(labels))
    with pytest.raises(data.DataError, match=r"49 labels for 50 images"):
        data.prepare("mnist", raw, tmp_path / "p.pt")


def test_missing_file_is_refused(raw, tmp_path):
    (raw / "t10k-images-idx3-ubyte.gz").unlink()
    with pytest.raises(data.DataError, match=r"no t10k-images-idx3-ubyte"):
        data.prepare("mnist", raw, tmp_path / "p.pt")


def test_validation_split_is_seeded_disjoint_and_complete():
    train, val = data.split_train_val(1000, 0.1, split_seed=0)
    again_train, again_val = data.split_train_val(1000, 0.1, split_seed=0)
    _, other_val = data.split_train_val(1000, 0.1, split_seed=1)
    assert len(val) == 100 and len(train) == 900
    assert torch.equal(val, again_val) and torch.equal(train, again_train)
    assert not torch.equal(val, other_val)
    assert sorted(torch.cat([train, val]).tolist()) == list(range(1000))
