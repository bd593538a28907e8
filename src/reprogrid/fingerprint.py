"""Short fingerprints of the code a job runs, so that changing it plans the job again.

A fingerprint covers a root (a module of this package, or a rule's script) and every module
of this package it imports, directly or through others, found by reading the source: any
`import` statement anywhere in a file counts, also one inside a function. Third-party
packages are not covered (their versions are in each run's provenance).

Each file counts by its syntax tree, not its bytes: comments, blank lines, line breaks,
quote style, redundant parentheses and docstrings change nothing (Python run with -OO does
not see docstrings either), while any change to what the code does gives another
fingerprint. A renamed or moved module counts as a change. Reading a dozen files takes a
few milliseconds; nothing is imported.

This module imports nothing heavy: Snakemake reads it while it plans.
"""

from __future__ import annotations

import ast
import hashlib
from collections.abc import Iterable
from functools import cache
from pathlib import Path

PACKAGE = "reprogrid"
PACKAGE_DIR = Path(__file__).resolve().parent

# Hex digits kept: collisions among the versions of one project are not a concern.
LENGTH = 16


def module_file(name: str) -> Path | None:
    """The source file of module `name` of this package, or None for anything else."""
    parts = name.split(".")
    if parts[0] != PACKAGE:
        return None
    base = PACKAGE_DIR.joinpath(*parts[1:])
    for candidate in (base / "__init__.py", base.with_suffix(".py")):
        if candidate.is_file():
            return candidate
    return None


def _module_name(path: Path) -> str | None:
    """The dotted name of a file inside this package, or None for a file outside it."""
    try:
        relative = path.resolve().relative_to(PACKAGE_DIR)
    except ValueError:
        return None
    parts = [PACKAGE, *relative.with_suffix("").parts]
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def _with_parents(name: str) -> list[str]:
    """`a.b.c` and the packages whose `__init__` importing it runs: `a`, `a.b`."""
    parts = name.split(".")
    return [".".join(parts[: i + 1]) for i in range(len(parts))]


def _imported(tree: ast.AST, current: str | None, is_package: bool) -> set[str]:
    """Dotted names of the modules (and possible submodules) a syntax tree imports."""
    found: set[str] = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            found.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:
                if current is None:
                    continue
                anchor = current.split(".")
                anchor = anchor[: len(anchor) - node.level + (1 if is_package else 0)]
                base = ".".join([*anchor, base] if base else anchor)
            found.add(base)
            # `from reprogrid import models`: the name may be a submodule.
            found.update(f"{base}.{alias.name}" for alias in node.names)
    return found


def _strip_docstrings(tree: ast.AST) -> ast.AST:
    for node in ast.walk(tree):
        if isinstance(node, ast.Module | ast.ClassDef | ast.FunctionDef | ast.AsyncFunctionDef):
            body = node.body
            if (
                body
                and isinstance(body[0], ast.Expr)
                and isinstance(body[0].value, ast.Constant)
                and isinstance(body[0].value.value, str)
            ):
                node.body = body[1:] or [ast.Pass()]
    return tree


def _canonical(node: object) -> str:
    """A syntax tree as text, leaving out empty fields, so that a newer Python that adds
    an (empty) field to a node gives the same text for the same code."""
    if isinstance(node, ast.AST):
        fields = []
        for name, value in ast.iter_fields(node):
            if value is None or value == []:
                continue
            fields.append(f"{name}={_canonical(value)}")
        return f"{type(node).__name__}({','.join(fields)})"
    if isinstance(node, list):
        return "[" + ",".join(_canonical(item) for item in node) + "]"
    return repr(node)


@cache
def _read(path: Path, mtime_ns: int, size: int) -> tuple[str, frozenset[str]]:
    """The digest of a file's syntax tree and the modules it imports (cached per version)."""
    tree = ast.parse(path.read_bytes(), filename=str(path))
    name = _module_name(path)
    imports = frozenset(_imported(tree, name, path.name == "__init__.py"))
    digest = hashlib.sha256(_canonical(_strip_docstrings(tree)).encode()).hexdigest()
    return digest, imports


def _file_digest(path: Path) -> tuple[str, frozenset[str]]:
    stat = path.stat()
    return _read(path.resolve(), stat.st_mtime_ns, stat.st_size)


def closure(roots: Iterable[Path]) -> list[Path]:
    """`roots` and every file of this package they import, transitively, sorted."""
    seen: set[Path] = set()
    pending = [Path(root).resolve() for root in roots]
    while pending:
        path = pending.pop()
        if path in seen:
            continue
        seen.add(path)
        for name in _file_digest(path)[1]:
            for module in _with_parents(name):
                found = module_file(module)
                if found is not None and found.resolve() not in seen:
                    pending.append(found.resolve())
    return sorted(seen)


def _label(path: Path) -> str:
    """How a file is named inside a fingerprint: its module name, or its file name."""
    return _module_name(path) or path.name


def of_files(roots: Iterable[str | Path]) -> str:
    """The fingerprint of the code that running `roots` (Python files) can execute."""
    digest = hashlib.sha256()
    for path in closure(Path(root) for root in roots):
        digest.update(f"{_label(path)}\0{_file_digest(path)[0]}\n".encode())
    return digest.hexdigest()[:LENGTH]


def of_modules(*names: str) -> str:
    """The fingerprint of modules of this package (`reprogrid.jobs.train`) and their imports."""
    files = []
    for name in names:
        if module_file(name) is None:
            raise ValueError(f"{name} is not a module of {PACKAGE}")
        # `python -m a.b.c` runs the `__init__` of `a` and of `a.b` first.
        files.extend(module_file(module) for module in _with_parents(name))
    return of_files(path for path in files if path is not None)
