"""The raw IDX files of a data set: find them, digest them, say which published data set they are.

Planning uses this module to refuse the wrong files before any job runs and to name the
folder their prepared data go to, so it imports nothing heavy; the data job runs the same
checks again on the files it reads. Digests identify files, they do not authenticate them:
md5 is what the data sets' authors publish, sha256 is what provenance records.
"""

from __future__ import annotations

import gzip
import hashlib
import json
import zlib
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path

from reprogrid.datasets import catalog
from reprogrid.plan import paths
from reprogrid.record import atomic

GZIP_MAGIC = b"\x1f\x8b"
BLOCK = 1 << 20
DIGESTS = ("sha256", "md5", "content_md5")


class DataError(ValueError):
    """Raw data that must not be trained on; the message names the file and the fault."""


@dataclass(frozen=True)
class RawFile:
    """One raw IDX file and its digests."""

    path: Path
    sha256: str  # of the bytes as stored: provenance records it, the prepared data's key uses it
    md5: str  # of the bytes as stored, as the published .gz files' digests are
    content_md5: str  # of the IDX bytes, decompressed if gzipped: the same for .gz and plain


@dataclass(frozen=True)
class Plan:
    """What planning knows of the data before any job runs."""

    key: str  # the folder of the prepared data under resources/data/<dataset>/
    inputs: list[str]  # the raw files the data job reads, so Snakemake sees them change


def gzipped(path: Path) -> bool:
    """Whether the file starts as a gzip stream does, whatever its name."""
    with open(path, "rb") as handle:
        return handle.read(2) == GZIP_MAGIC


def unreadable(path: Path, err: BaseException) -> DataError:
    """The refusal of a file that cannot be read or decompressed."""
    hint = "copy it again"
    if isinstance(err, gzip.BadGzipFile) and not gzipped(path):
        hint = f"it is not gzipped: name it {path.stem}"
    return DataError(f"{path}: cannot be read ({err}); {hint}")


def idx_count(path: str | Path) -> int | None:
    """The item count in an IDX file's header (gzipped or plain), reading 8 bytes.

    None where the header cannot be read: the data job refuses such a file by name.
    """
    path = Path(path)
    opener = gzip.open if path.suffix == ".gz" else open
    try:
        with opener(path, "rb") as handle:
            header = handle.read(8)
    except (OSError, EOFError, zlib.error):
        return None
    if len(header) < 8 or header[:2] != b"\0\0":
        return None
    return int.from_bytes(header[4:8], "big")


def digest(path: str | Path) -> RawFile:
    """The digests of one raw file; refuses a file that cannot be read or decompressed."""
    path = Path(path)
    stored_sha256 = hashlib.sha256()
    stored_md5 = hashlib.md5(usedforsecurity=False)
    try:
        with open(path, "rb") as handle:
            for block in iter(lambda: handle.read(BLOCK), b""):
                stored_sha256.update(block)
                stored_md5.update(block)
        content_md5 = stored_md5.hexdigest()
        if path.suffix == ".gz":
            content = hashlib.md5(usedforsecurity=False)
            with gzip.open(path, "rb") as handle:
                for block in iter(lambda: handle.read(BLOCK), b""):
                    content.update(block)
            content_md5 = content.hexdigest()
    except (OSError, EOFError, zlib.error) as err:
        raise unreadable(path, err) from None
    return RawFile(path, stored_sha256.hexdigest(), stored_md5.hexdigest(), content_md5)


class DigestCache:
    """Digests of files read before, kept in a JSON file by resolved path.

    An entry holds while the file's size, modification and change times and inode stay as
    they were; the data job digests the files again in any case (see `data_key`).
    """

    def __init__(self, file: str | Path) -> None:
        self.file = Path(file)
        self.changed = False
        try:
            entries = json.loads(self.file.read_text(encoding="utf-8"))
        except (OSError, ValueError):
            entries = {}
        self.entries: dict = entries if isinstance(entries, dict) else {}

    def digest(self, path: Path) -> RawFile:
        stat = path.stat()
        status = [stat.st_size, stat.st_mtime_ns, stat.st_ctime_ns, stat.st_ino]
        name = str(path.resolve())
        entry = self.entries.get(name)
        if (
            isinstance(entry, dict)
            and entry.get("status") == status
            and all(isinstance(entry.get(field), str) for field in DIGESTS)
        ):
            return RawFile(path, *(entry[field] for field in DIGESTS))
        found = digest(path)
        self.entries[name] = {"status": status, **{f: getattr(found, f) for f in DIGESTS}}
        self.changed = True
        return found

    def save(self) -> None:
        if self.changed:
            atomic.write_json(self.file, self.entries)


def inspect(raw_dir: str | Path, cache: DigestCache | None = None) -> dict[str, RawFile]:
    """The four IDX files of `raw_dir` by role, digested.

    A role found both gzipped and plain is refused unless both hold the same IDX bytes (a
    copied torchvision download folder keeps both); then the .gz file is the one read.
    """
    folder = Path(raw_dir)
    read = cache.digest if cache else digest
    files = {}
    for role, stem in catalog.IDX_FILES.items():
        found = [read(path) for path in (folder / f"{stem}.gz", folder / stem) if path.is_file()]
        if not found:
            raise DataError(f"{folder}: no {stem}(.gz); the folder must hold all four IDX files")
        if len({file.content_md5 for file in found}) > 1:
            raise DataError(
                f"{folder}: holds {stem}.gz and {stem} with different contents; "
                "keep only the one that is your data"
            )
        files[role] = found[0]
    return files


def published(file: RawFile) -> tuple[str, str] | None:
    """The (data set, role) whose published file `file` is, or None."""
    for name, spec in catalog.DATASETS.items():
        for role in catalog.IDX_FILES:
            if file.md5 == spec.gz_md5.get(role) or file.content_md5 == spec.idx_md5.get(role):
                return name, role
    return None


def check(dataset: str, files: Mapping[str, RawFile], verify: bool) -> bool:
    """Refuse files that are not what `dataset` names; True when they are its published files.

    Always refused: another registered data set's published files, a published file under
    another file's name, test images identical to the training images. With `verify`, also
    any file that is not `dataset`'s published one (data of your own needs verify off).
    """
    found = {role: published(file) for role, file in files.items()}
    others = {hit[0] for hit in found.values() if hit and hit[0] != dataset}
    if len(others) == 1:
        other = others.pop()
        if all(found[role] == (other, role) for role in files):
            folder = files["train_images"].path.parent
            raise DataError(
                f"config key data.dataset: {folder} holds the published {other} files, "
                f"not {dataset}'s; set data.dataset: {other}"
            )
    for role, file in files.items():
        hit = found[role]
        if hit and hit != (dataset, role):
            raise DataError(
                f"config key data.raw_dir: {file.path} is the published "
                f"{catalog.IDX_FILES[hit[1]]} of {hit[0]}, not the "
                f"{catalog.IDX_FILES[role]} of {dataset}; data.raw_dir must hold the four "
                "files of the data set data.dataset names, each under its own name"
            )
    train, test = files["train_images"], files["test_images"]
    if train.content_md5 == test.content_md5:
        raise DataError(
            f"config key data.raw_dir: {test.path} holds the same images as {train.path}; "
            "the test split must be images that training never sees"
        )
    unknown = [file for role, file in files.items() if found[role] is None]
    if verify and unknown:
        file = unknown[0]
        spec = catalog.DATASETS[dataset]
        only_gz = ""
        if not spec.idx_md5 and file.path.suffix != ".gz":
            only_gz = f", and {dataset}'s authors publish digests of its .gz files only"
        raise DataError(
            f"config key data.verify: {file.path} is not {dataset}'s published "
            f"{file.path.name.removesuffix('.gz')} (md5 of its IDX bytes {file.content_md5}"
            f"{only_gz}); point data.raw_dir at {dataset}'s published files, or set "
            "data.verify: false to train on data of your own"
        )
    return not unknown


def data_key(raw_dir: str | None, sha256: Mapping[str, str], task: str | None = None) -> str:
    """The key of data prepared from `raw_dir` whose files have these sha256 (by file name).

    A digest of the folder as the config spells it and of each file's name and sha256: other
    files, or the same files in another folder, never share prepared data, so each run's
    provenance names the very folder and bytes it was trained on. A task other than the
    built-in IDX one salts it with its name: two tasks never share what their `load` made.
    """
    listing = [raw_dir, *sorted(sha256.items())]
    if task is not None:
        listing.append(task)
    return "raw-" + hashlib.sha256(json.dumps(listing).encode()).hexdigest()[:12]


def folder_files(raw: str | Path) -> list[Path]:
    """The files a task's `load` may read from `raw`: the file itself, or every file below
    the folder (hidden ones left out), in name order."""
    raw = Path(raw)
    if raw.is_file():
        return [raw]
    return sorted(
        path
        for path in raw.rglob("*")
        if path.is_file() and not any(part.startswith(".") for part in path.relative_to(raw).parts)
    )


def digests_of(raw: str | Path, files: list[Path], read=digest) -> dict[str, str]:
    """The sha256 of each of `files`, by its path relative to `raw` (its name for a file)."""
    raw = Path(raw)
    base = raw.parent if raw.is_file() else raw
    return {str(path.relative_to(base)): read(path).sha256 for path in files}


def plan_task(task: str, raw: str | None, cache_file: str | Path) -> Plan:
    """Digest the files under `raw` that a task's `load` reads, and key their prepared data.

    Without raw files (`raw` None), `load` makes its data itself: the key is the task's. The
    digests are kept in `cache_file`, as `plan` keeps them.
    """
    if raw is None:
        return Plan(data_key(None, {}, task), [])
    cache = DigestCache(cache_file)
    files = folder_files(raw)
    sha256 = digests_of(raw, files, cache.digest)
    cache.save()
    return Plan(data_key(raw, sha256, task), [str(path) for path in files])


def plan(dataset: str, raw_dir: str | None, verify: bool, cache_file: str | Path) -> Plan:
    """Check the files of `data.raw_dir` as the data job will, and key their prepared data.

    Downloaded data are keyed `paths.DOWNLOADED` and checked by the data job alone. Reading
    and decompressing the four Fashion-MNIST .gz files takes about 0.3 s; their digests are
    kept in `cache_file`, so planning again (as every cluster job does) only stats them.
    """
    if raw_dir is None:
        return Plan(paths.DOWNLOADED, [])
    cache = DigestCache(cache_file)
    try:
        files = inspect(raw_dir, cache)
    except DataError as err:
        raise DataError(f"config key data.raw_dir: {err}") from None
    check(dataset, files, verify)
    cache.save()
    key = data_key(raw_dir, {file.path.name: file.sha256 for file in files.values()})
    return Plan(key, [str(file.path) for file in files.values()])
