"""Short fingerprints of the code a job runs, so that changing it plans the job again.

A fingerprint covers a root (a module of this package, a rule's script or a task file) and
every module of this package it imports, directly or through others, found by reading the
source: any `import` statement anywhere in a file counts, also one inside a function. A
task file's imports of modules of the user's own repository (found under the task's folder
or the working directory, as the job imports them) are covered too. Third-party packages
are not covered (their versions are in each run's provenance).

Each file counts by its syntax tree, not its bytes: comments, blank lines, line breaks,
quote style, redundant parentheses and docstrings change nothing (Python run with -OO does
not see docstrings either), while any change to what the code does gives another
fingerprint. The fingerprint follows the code, not where it lives: files count by their
content alone, an import from this package counts by the names it binds (so moving a
module to another room of the package and importing it from there changes nothing), and a
module with no code (a docstring) counts as nothing. Reading a dozen files takes a few
milliseconds; nothing is imported.

This module imports nothing heavy: Snakemake reads it while it plans.
"""

from __future__ import annotations

import ast
import hashlib
from collections.abc import Iterable
from functools import cache
from pathlib import Path

PACKAGE = "reprogrid"
PACKAGE_DIR = Path(__file__).resolve().parents[1]

# Hex digits kept: collisions among the versions of one project are not a concern.
LENGTH = 16


def module_file(name: str, search: Iterable[Path] = ()) -> Path | None:
    """The source file of module `name` of this package, or of a module found under one of
    the folders `search` (a user's own modules), or None for anything else."""
    parts = name.split(".")
    if parts[0] == PACKAGE:
        bases = [PACKAGE_DIR.joinpath(*parts[1:])]
    else:
        bases = [Path(folder).joinpath(*parts) for folder in search]
    for base in bases:
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


def _ours(node: ast.ImportFrom) -> bool:
    """Whether an import statement imports from this package (absolutely or relatively)."""
    module = node.module or ""
    return bool(node.level) or module == PACKAGE or module.startswith(f"{PACKAGE}.")


def _without_locations(tree: ast.AST) -> ast.AST:
    """The tree with each run of consecutive imports from this package reduced to one
    statement binding the same names, sorted: a module moved within the package, imported
    from its new place (on a line of its own, in the order a formatter sorts it), reads the
    same."""
    for node in ast.walk(tree):
        for field in ("body", "orelse", "finalbody", "handlers"):
            statements = getattr(node, field, None)
            if isinstance(statements, list):
                setattr(node, field, _imports_as_names(statements))
    return tree


def _imports_as_names(statements: list[ast.AST]) -> list[ast.AST]:
    reduced: list[ast.AST] = []
    bound: set[str] = set()
    for statement in [*statements, None]:
        if isinstance(statement, ast.ImportFrom) and _ours(statement):
            bound.update(alias.asname or alias.name for alias in statement.names)
            continue
        if bound:
            reduced.append(ast.Import(names=[ast.alias(name=name) for name in sorted(bound)]))
            bound = set()
        if statement is not None:
            reduced.append(statement)
    return reduced


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
    code = _without_locations(_strip_docstrings(tree))
    digest = "" if _is_empty(code) else hashlib.sha256(_canonical(code).encode()).hexdigest()
    return digest, imports


def _is_empty(tree: ast.AST) -> bool:
    """A module that runs nothing: a docstring at most (stripped, it is a lone `pass`)."""
    body = getattr(tree, "body", [])
    return all(isinstance(statement, ast.Pass) for statement in body)


def _file_digest(path: Path) -> tuple[str, frozenset[str]]:
    stat = path.stat()
    return _read(path.resolve(), stat.st_mtime_ns, stat.st_size)


def closure(roots: Iterable[Path], search: Iterable[Path] = ()) -> list[Path]:
    """`roots` and every file of this package they import, transitively, sorted; with
    `search`, also the modules found under those folders (`module_file`)."""
    search = tuple(search)
    seen: set[Path] = set()
    pending = [Path(root).resolve() for root in roots]
    while pending:
        path = pending.pop()
        if path in seen:
            continue
        seen.add(path)
        for name in _file_digest(path)[1]:
            for module in _with_parents(name):
                found = module_file(module, search)
                if found is not None and found.resolve() not in seen:
                    pending.append(found.resolve())
    return sorted(seen)


def of_files(roots: Iterable[str | Path], search: Iterable[Path] = ()) -> str:
    """The fingerprint of the code that running `roots` (Python files) can execute: the
    digests of the files' code, in digest order, whatever the files' names and places."""
    digests = sorted(_file_digest(path)[0] for path in closure((Path(r) for r in roots), search))
    digest = hashlib.sha256()
    for code in digests:
        if code:
            digest.update(f"{code}\n".encode())
    return digest.hexdigest()[:LENGTH]


def task_search(task_file: Path) -> tuple[Path, Path]:
    """Where a task's own imports are looked for, as the job imports it: the working
    directory, then the task file's folder."""
    return Path.cwd(), Path(task_file).resolve().parent


def of_job(job: str, task_file: str | Path) -> str:
    """The fingerprint of a job module (`reprogrid.jobs.train`) running a task file: the
    module, the packages above it, the task and everything either imports."""
    return of_files([*_module_files(job), Path(task_file)], task_search(Path(task_file)))


def of_task(spec) -> str:
    """The fingerprint of a task (`tasks.spec.TaskSpec`): its file and all it imports."""
    return of_files([spec.path], task_search(spec.path))


def _module_files(*names: str) -> list[Path]:
    files = []
    for name in names:
        if module_file(name) is None:
            raise ValueError(f"{name} is not a module of {PACKAGE}")
        # `python -m a.b.c` runs the `__init__` of `a` and of `a.b` first.
        files.extend(module_file(module) for module in _with_parents(name))
    return [path for path in files if path is not None]


def of_modules(*names: str) -> str:
    """The fingerprint of modules of this package (`reprogrid.jobs.train`) and their imports."""
    return of_files(_module_files(*names))
