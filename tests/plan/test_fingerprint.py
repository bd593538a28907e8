"""Code fingerprints: what a job runs, by syntax, through every import of the package."""

from __future__ import annotations

import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from reprogrid.plan import fingerprint

REPO = Path(__file__).resolve().parents[2]
PACKAGE = REPO / "src/reprogrid"

ORIGINAL = '''"""A module."""

import math


def area(radius):
    """The area of a circle."""
    return math.pi * radius**2
'''

SAME_CODE = {
    "a comment": ORIGINAL.replace("    return", "    # pi r squared\n    return"),
    "blank lines and spacing": ORIGINAL.replace("\n\n\n", "\n\n\n\n").replace("**", " ** "),
    "parentheses": ORIGINAL.replace("math.pi * radius**2", "(math.pi * (radius**2))"),
    "docstrings": ORIGINAL.replace("The area of a circle.", "Area, in square units."),
}

OTHER_CODE = {
    "a constant": ORIGINAL.replace("radius**2", "radius**3"),
    "a name": ORIGINAL.replace("def area", "def surface"),
    "a statement": ORIGINAL + "\nSCALE = 1\n",
}


def fingerprint_of(tmp_path: Path, source: str) -> str:
    folder = tmp_path / str(len(list(tmp_path.iterdir())))
    folder.mkdir()
    (folder / "shapes.py").write_text(source)
    return fingerprint.of_files([folder / "shapes.py"])


@pytest.mark.parametrize("change", SAME_CODE)
def test_comments_formatting_and_docstrings_leave_the_fingerprint(tmp_path, change):
    assert fingerprint_of(tmp_path, SAME_CODE[change]) == fingerprint_of(tmp_path, ORIGINAL)


@pytest.mark.parametrize("change", OTHER_CODE)
def test_any_change_to_the_code_changes_the_fingerprint(tmp_path, change):
    assert fingerprint_of(tmp_path, OTHER_CODE[change]) != fingerprint_of(tmp_path, ORIGINAL)


def names(files) -> set[str]:
    return {str(path.relative_to(REPO)) for path in files}


def test_the_train_job_covers_every_module_it_and_its_task_import_and_no_plotting():
    task = PACKAGE / "tasks/builtin/idx_classification.py"
    covered = names(fingerprint.closure([PACKAGE / "jobs/train.py", task]))
    for module in (
        "train/training",
        "train/checkpoint",
        "datasets/data",
        "datasets/catalog",
        "record/atomic",
        "record/provenance",
    ):
        assert f"src/reprogrid/{module}.py" in covered
    assert "src/reprogrid/train/models.py" in covered  # through the task
    assert "src/reprogrid/analysis/plots.py" not in covered
    assert "src/reprogrid/analysis/stats.py" not in covered


def test_a_script_covers_imports_made_inside_functions():
    # jobs/analysis.py imports plots only inside figures_job.
    covered = names(fingerprint.closure([REPO / "scripts/figures.py"]))
    assert {"scripts/figures.py", "src/reprogrid/jobs/analysis.py"} <= covered
    assert "src/reprogrid/analysis/plots.py" in covered
    assert "src/reprogrid/train/models.py" not in covered


def test_running_a_module_covers_the_packages_above_it():
    covered = names(fingerprint.closure([fingerprint.module_file("reprogrid.jobs")]))
    assert "src/reprogrid/jobs/__init__.py" in covered
    with pytest.raises(ValueError, match="not a module of reprogrid"):
        fingerprint.of_modules("torch.nn")


def test_a_module_without_code_counts_as_nothing(tmp_path):
    (tmp_path / "empty.py").write_text('"""Only a docstring."""\n')
    (tmp_path / "code.py").write_text(ORIGINAL)
    alone = fingerprint.of_files([tmp_path / "code.py"])
    assert fingerprint.of_files([tmp_path / "code.py", tmp_path / "empty.py"]) == alone


MOVE = """
import sys
from reprogrid.plan import fingerprint
print(fingerprint.of_modules("reprogrid.jobs.train"))
"""


def test_moving_a_module_within_the_package_leaves_the_fingerprint(tmp_path):
    """split.py moved into another subpackage, its importers importing it from there: the same
    code, so the same fingerprint; a change to its code still changes it."""

    def train_job_fingerprint(src: Path) -> str:
        env = {"PYTHONPATH": str(src), "PATH": str(Path(sys.executable).parent)}
        out = subprocess.run(
            [sys.executable, "-c", MOVE], env=env, capture_output=True, text=True, check=True
        )
        return out.stdout.strip()

    src = tmp_path / "src"
    shutil.copytree(
        REPO / "src/reprogrid", src / "reprogrid", ignore=shutil.ignore_patterns("__pycache__")
    )
    before = train_job_fingerprint(src)
    room = src / "reprogrid/sizes"
    room.mkdir()
    (room / "__init__.py").write_text('"""Sizes: how many samples each split holds."""\n')
    (src / "reprogrid/plan/split.py").rename(room / "split.py")
    importers = [
        path
        for path in (src / "reprogrid").rglob("*.py")
        if "from reprogrid.plan.split import" in path.read_text()
    ]
    assert importers
    for path in importers:
        path.write_text(
            path.read_text().replace(
                "from reprogrid.plan.split import", "from reprogrid.sizes.split import"
            )
        )
    assert train_job_fingerprint(src) == before
    moved = room / "split.py"
    moved.write_text(moved.read_text().replace("max(1,", "max(2,"))
    assert train_job_fingerprint(src) != before
