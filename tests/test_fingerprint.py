"""Code fingerprints: what a job runs, by syntax, through every import of the package."""

from __future__ import annotations

from pathlib import Path

import pytest

from reprogrid import fingerprint

REPO = Path(__file__).resolve().parents[1]
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


def test_the_train_job_covers_every_module_it_imports_and_no_plotting():
    covered = names(fingerprint.closure([PACKAGE / "jobs/train.py"]))
    for module in ("training", "models", "checkpoint", "data", "catalog", "atomic", "provenance"):
        assert f"src/reprogrid/{module}.py" in covered
    assert "src/reprogrid/plots.py" not in covered
    assert "src/reprogrid/stats.py" not in covered


def test_a_script_covers_imports_made_inside_functions():
    # jobs/analysis.py imports plots only inside figures_job.
    covered = names(fingerprint.closure([REPO / "scripts/figures.py"]))
    assert {"scripts/figures.py", "src/reprogrid/jobs/analysis.py"} <= covered
    assert "src/reprogrid/plots.py" in covered
    assert "src/reprogrid/models.py" not in covered


def test_running_a_module_covers_the_packages_above_it():
    covered = names(fingerprint.closure([fingerprint.module_file("reprogrid.jobs")]))
    assert "src/reprogrid/jobs/__init__.py" in covered
    assert fingerprint.of_modules("reprogrid.jobs.train") != fingerprint.of_files(
        [PACKAGE / "jobs/train.py"]
    )
    with pytest.raises(ValueError, match="not a module of reprogrid"):
        fingerprint.of_modules("torch.nn")
