"""The package's tree: rooms by concept, every import pointing down, modules and functions
of a size a reader takes in, and tests that mirror the rooms."""

from __future__ import annotations

import ast
import re
from collections.abc import Iterator
from pathlib import Path

import pytest

from conftest import REPO

PACKAGE = REPO / "src/reprogrid"
# The rooms, lowest first: a module may import from its own room and from rooms before it.
FLOORS = (
    "tasks",
    "plan",
    "record",
    "datasets",
    "config",
    "train",
    "analysis",
    "tracking",
    "tasks.builtin",
    "jobs",
    "commands",
)
MODULE_LINES = 400
FUNCTION_LINES = 60
# What a module or function longer than the limits says at its top, and why.
REASON = re.compile(r"^Longer than \d+ lines: ", re.M)


def module_name(path: Path) -> str:
    parts = path.relative_to(PACKAGE.parent).with_suffix("").parts
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


MODULES = {module_name(path): path for path in sorted(PACKAGE.rglob("*.py"))}


def room(module: str) -> str | None:
    """The room a module of the package lives in; None for one outside every room."""
    parts = module.split(".")
    if parts[1:3] == ["tasks", "builtin"]:
        return "tasks.builtin"
    if len(parts) > 2 or (len(parts) == 2 and MODULES[module].name == "__init__.py"):
        return parts[1]
    return None


ROOMS = {name: path for name, path in MODULES.items() if name.count(".") == 1 and room(name)}


def imports(path: Path) -> Iterator[tuple[int, str]]:
    """Each module of the package `path` imports, with the line: at the top, inside a
    function or under TYPE_CHECKING alike, for an arrow is an arrow."""
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.Import):
            names = [alias.name for alias in node.names]
        elif isinstance(node, ast.ImportFrom) and (node.module or "").startswith("reprogrid"):
            names = [
                f"{node.module}.{alias.name}"
                if f"{node.module}.{alias.name}" in MODULES
                else node.module
                for alias in node.names
            ]
        else:
            continue
        yield from ((node.lineno, name) for name in names if name in MODULES)


def test_each_room_says_what_it_owns_and_may_import():
    for name, path in ROOMS.items():
        doc = ast.get_docstring(ast.parse(path.read_text())) or ""
        assert re.search(r"[Mm]ay\s+import|[Ii]mports\s+nothing\s+of\s+reprogrid", doc), name


def test_every_module_lives_in_a_room():
    assert [name for name in MODULES if room(name) is None] == ["reprogrid"]
    assert {room(name) for name in MODULES} - {None} == set(FLOORS)


def test_every_import_points_down():
    upward = []
    for name, path in MODULES.items():
        here = room(name)
        for line, target in imports(path):
            there = room(target)
            if here and there and FLOORS.index(there) > FLOORS.index(here):
                upward.append(f"{path.relative_to(REPO)}:{line} imports {target}")
    assert upward == []


def test_no_module_imports_itself_round_a_circle():
    graph = {
        name: {target for _, target in imports(path)} - {name} for name, path in MODULES.items()
    }
    done: set[str] = set()

    def visit(name: str, trail: list[str]) -> None:
        if name in trail:
            pytest.fail("import circle: " + " -> ".join([*trail[trail.index(name) :], name]))
        if name in done:
            return
        for target in sorted(graph[name]):
            visit(target, [*trail, name])
        done.add(name)

    for name in graph:
        visit(name, [])


def test_modules_and_functions_stay_small_or_say_why():
    long = []
    for name, path in MODULES.items():
        source = path.read_text()
        tree = ast.parse(source)
        lines = source.count("\n")
        if lines > MODULE_LINES and not REASON.search(ast.get_docstring(tree) or ""):
            long.append(f"{name}: {lines} lines")
        for node in ast.walk(tree):
            if isinstance(node, ast.FunctionDef | ast.AsyncFunctionDef):
                body = node.body[1:] if ast.get_docstring(node) else node.body
                if not body:
                    continue
                size = body[-1].end_lineno - body[0].lineno + 1
                if size > FUNCTION_LINES and not REASON.search(ast.get_docstring(node) or ""):
                    long.append(f"{name}.{node.name}: {size} lines")
    assert long == []


def test_tests_mirror_the_rooms():
    rooms = {name.split(".")[1] for name in ROOMS}
    folders = {path.name for path in (REPO / "tests").iterdir() if path.is_dir()}
    assert rooms - {"jobs"} <= folders
    assert folders - rooms <= {"workflow", "golden", "__pycache__"}
    assert sorted(path.name for path in (REPO / "tests").glob("test_*.py")) == ["test_layout.py"]
