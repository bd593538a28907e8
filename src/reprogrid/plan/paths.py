"""Where every file of the pipeline lives. The one place that spells a path.

All paths are relative to the working directory Snakemake runs in. A run is named by its
axis values, `arch=cnn/lr=0.01/seed=3`: the core axes always, in that order, and any other
grid axis (batch_size, optimizer, ...) only where its value differs from the default it had
when the experiment first trained with that axis (`id_defaults_file`), so adding an axis
that keeps yesterday's value moves no existing run, and a default edited later renames none.
"""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path
from typing import Any, NamedTuple

RESULTS = "results"
RESOURCES = "resources"
REPORTS = "reports"

# The axes every grid has; `seed` comes last so that one folder holds all seeds of a setting.
CORE_AXES = ("arch", "lr", "seed")

CHECKPOINT = "checkpoint.pt"
# The lock a training job holds on its run folder, naming the job (reprogrid.train.claim).
CLAIM = "claim.lock"
TRAIN_LOG = "train.log"
DIFF_PATCH = "uncommitted.patch"
PROVENANCE = "provenance.json"

# Figures (PNG for the report, PDF for a thesis) and tables, under reports/<experiment>/.
REPORT_FIGURES = {
    "curves": "learning_curves",
    "heatmap": "accuracy_heatmap",
    "spread": "seed_spread",
}
# The figure of a search's rungs, drawn only under successive halving.
RUNGS_FIGURE = "search_rungs"
REPORT_TABLES = {
    "summary_html": "summary.html",
    "comparisons_html": "comparisons.html",
    "provenance_html": "provenance.html",
    "reproduction_html": "reproduction.html",
    "labbook_html": "labbook.html",
    "summary_tex": "summary.tex",
    "comparisons_tex": "comparisons.tex",
    "summary_md": "summary.md",
}
RUN_FIGURES = "runs"

# A run id is a chain of `key=value` folders; the regex lets Snakemake match it as one wildcard.
RUN_ID_REGEX = r"arch=[^/]+/lr=[^/]+(?:/[a-z_][a-z0-9_]*=[^/]+)*/seed=[0-9]+"


# The most characters of a name that becomes one folder (an experiment, a value in a run id):
# with its `key=` a folder stays far below the 255 bytes a file system allows a name, and a
# run's deepest file, with one such value per `train` key, far below the 4,096 of a path.
NAME_MAX = 64
# What such a name holds besides ASCII letters and digits: an experiment's punctuation, and a
# run id's value's, which adds the `+` of a float's exponent (1e+16).
EXPERIMENT_PUNCTUATION = "_.-"
VALUE_PUNCTUATION = "_.+-"


def name_problem(name: str, punctuation: str = VALUE_PUNCTUATION) -> str | None:
    """Why `name` cannot be one folder of a path the pipeline writes, or None when it can.

    A safe name is ASCII letters, digits and `punctuation`, starts with a letter or digit
    (never `.`, so no hidden folder, nor `-`, so no command reads it as an option), holds no
    `..` and has at most NAME_MAX characters. The reason is worded to follow "it".
    """
    for char in name:
        if char.isascii() and (char.isalnum() or char in punctuation):
            continue
        if not char.isprintable():
            return "holds a control character (a newline, say)"
        if char in "/\\":
            return f"holds the path separator {char!r}"
        return f"holds {char!r}"
    if not name:
        return "is empty"
    if not name[0].isalnum():
        return f"starts with {name[0]!r}"
    if ".." in name:
        return "holds '..'"
    if len(name) > NAME_MAX:
        return f"has {len(name)} characters, more than {NAME_MAX}"
    return None


def format_value(value: Any) -> str:
    """Spell an axis value the way it appears in a run folder name."""
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, float):
        return repr(value)
    return str(value)


def run_id(axes: Mapping[str, Any], defaults: Mapping[str, Any]) -> str:
    """The folder name of one run, from its axis values (`axes`) and the training defaults."""
    extra = sorted(
        key
        for key in axes
        if key not in CORE_AXES and format_value(axes[key]) != format_value(defaults.get(key))
    )
    order = ["arch", "lr", *extra, "seed"]
    return "/".join(f"{key}={format_value(axes[key])}" for key in order)


def parse_run_id(run: str) -> dict[str, str]:
    """The `key -> value` strings a run id is made of."""
    return dict(part.split("=", 1) for part in run.split("/"))


def experiment_dir(experiment: str) -> str:
    return f"{RESULTS}/{experiment}"


RUN_NAMES = "run-names.json"


def id_defaults_file(experiment: str) -> str:
    """The value of each axis that the experiment's run ids leave out, kept from its first run."""
    return f"{RESULTS}/{experiment}/{RUN_NAMES}"


def run_dir(experiment: str, run: str) -> str:
    return f"{RESULTS}/{experiment}/runs/{run}"


def link_below(root: str | Path, path: str | Path) -> Path | None:
    """The first folder of `path` below `root` (`root` itself not counted) that is a
    symbolic link, or None: what a job writing into `path` would write through."""
    root, path = Path(root), Path(path)
    current = root
    for part in path.relative_to(root).parts:
        current = current / part
        if current.is_symlink():
            return current
    return None


def run_file(experiment: str, run: str, name: str) -> str:
    return f"{run_dir(experiment, run)}/{name}"


class RunFiles(NamedTuple):
    """The files of one run that a job reads, as its rule declares them."""

    metrics: str
    history: str
    provenance: str
    model: str | None = None  # only the audit compares weights


def files_in(folder: str | Path) -> RunFiles:
    """The files of a run written into `folder` (a run folder, or an audit's scratch copy)."""
    names = ("metrics.json", "history.csv", "provenance.json", "model.pt")
    return RunFiles(*(f"{folder}/{name}" for name in names))


def rung_file(experiment: str, run: str, epochs: int | str) -> str:
    """What a run reached at a rung of a search: its metrics after `epochs` epochs."""
    return f"{run_dir(experiment, run)}/rungs/{epochs}.json"


def rung_log(experiment: str, run: str, epochs: int | str) -> str:
    return f"{run_dir(experiment, run)}/rungs/{epochs}.log"


def search_file(experiment: str, name: str) -> str:
    """A file of the search's decisions, under results/<experiment>/search/."""
    return f"{RESULTS}/{experiment}/search/{name}"


def summary_file(experiment: str, name: str) -> str:
    return f"{RESULTS}/{experiment}/summary/{name}"


def audit_file(experiment: str, name: str) -> str:
    return f"{RESULTS}/{experiment}/audit/{name}"


def audit_scratch(experiment: str) -> str:
    return f"{RESULTS}/{experiment}/audit/scratch"


def data_dir(dataset: str) -> str:
    return f"{RESOURCES}/data/{dataset}"


# The key of the data torchvision downloads; data from `data.raw_dir` are keyed by content.
DOWNLOADED = "download"


def prepared_dir(dataset: str, key: str) -> str:
    """The folder of one prepared copy of `dataset`: `key` is DOWNLOADED or names its raw files."""
    return f"{data_dir(dataset)}/{key}"


def prepared_data(dataset: str, key: str) -> str:
    return f"{prepared_dir(dataset, key)}/prepared.safetensors"


def data_checks(dataset: str, key: str) -> str:
    return f"{prepared_dir(dataset, key)}/checks.json"


def data_log(dataset: str, key: str) -> str:
    return f"{prepared_dir(dataset, key)}/prepare.log"


def raw_digests() -> str:
    """The digests of raw files already read while planning, by path and file status.

    A planning cache, kept beside Snakemake's own metadata: a refused or dry run leaves
    `results/`, `resources/` and `reports/` as they were.
    """
    return ".snakemake/reprogrid/raw-digests.json"


def report_dir(experiment: str) -> str:
    return f"{REPORTS}/{experiment}"


def report_file(experiment: str, name: str) -> str:
    return f"{REPORTS}/{experiment}/{name}"


def log_file(experiment: str, name: str) -> str:
    return f"logs/{experiment}/{name}.log"
