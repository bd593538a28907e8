"""What a task declares, read from its file without importing it.

A task file holds three literals (`ARCHS`, `PARAMS`, `METRICS`) and four functions (`load`,
`build`, `loss`, `evaluate`), docs/tasks.md says how. Snakemake plans with the literals
alone, so this module parses the file's syntax tree and evaluates nothing: planning stays
free of torch and of the task's own imports, and a task that fails to import fails its job,
not the plan. This module imports nothing heavy.
"""

from __future__ import annotations

import ast
import re
from dataclasses import dataclass
from pathlib import Path
from typing import Any

BUILTIN_DIR = Path(__file__).resolve().parent / "builtin"
# The task a config that names none runs: today's 28x28 grey IDX classification.
DEFAULT = "idx_classification"

REQUIRED = ("load", "build", "loss", "evaluate")
OPTIONAL = ("augment", "inputs", "describe")
DIRECTIONS = ("min", "max")
# The splits a task's metrics are reported on; `train_loss` is the training objective.
SPLITS = ("val", "test")
# Names of metrics and parameters: they become CSV columns, config keys and run folder names.
NAME = re.compile(r"[a-z][a-z0-9_]*")
ARCH_NAME = re.compile(r"[A-Za-z0-9][A-Za-z0-9_.-]*")
ARCH_LENGTH = 64
PARAM_TYPES = {bool: "boolean", int: "integer", float: "number", str: "string"}


class TaskError(ValueError):
    """A task file reprogrid cannot plan or run with; the message names the file and the fix."""


@dataclass(frozen=True)
class Metrics:
    """A task's metrics in declared order, each with the way it is better (`min`, `max`).

    The one table every stage asks about a metric: its direction, which of two values is
    better, and its name per split (`val_acc`). The first metric is the task's headline: it
    picks the best epoch, ranks a search and decides the criterion unless the config names
    another.
    """

    directions: dict[str, str]

    @property
    def names(self) -> list[str]:
        return list(self.directions)

    @property
    def primary(self) -> str:
        return self.names[0]

    def column(self, split: str, metric: str | None = None) -> str:
        """A metric's name on a split: `column("val")` is the headline's, `val_acc`."""
        return f"{split}_{metric or self.primary}"

    def columns(self, *splits: str) -> list[str]:
        """The metrics' names on `splits`, split by split, each in declared order."""
        return [self.column(split, metric) for split in splits for metric in self.names]

    def run_keys(self) -> list[str]:
        """What a run's metrics.json reports of its kept epoch, in name order."""
        return sorted(self.columns(*SPLITS))

    def metric_of(self, column: str) -> str:
        """The metric a split's column names: `val_acc` -> `acc`; `train_loss` is a loss."""
        split, _, metric = column.partition("_")
        if column == "train_loss":
            return "loss"
        if split not in SPLITS or metric not in self.directions:
            raise KeyError(f"{column} is no metric of this task ({', '.join(self.names)})")
        return metric

    def direction(self, column: str) -> str:
        """`min` or `max`: which way `column` (`val_acc`, `test_loss`, `train_loss`) is better."""
        if column == "train_loss":
            return "min"
        return self.directions[self.metric_of(column)]

    def sign(self, column: str) -> int:
        """+1 where higher is better, -1 where lower is: `sign * value` ranks high to low."""
        return 1 if self.direction(column) == "max" else -1

    def better(self, value: float, than: float | None, column: str) -> bool:
        """Whether `value` is strictly better than `than` (None: nothing yet) on `column`."""
        return than is None or self.sign(column) * (value - than) > 0

    def best_row(self, rows, column: str):
        """The row whose `column` is best, the first of equals (None for no rows): the
        rule that picks a run's kept epoch, in training and at a search's rungs alike."""
        best = None
        for row in rows:
            if self.better(row[column], None if best is None else best[column], column):
                best = row
        return best

    def label(self, column: str) -> str:
        """How figures and tables name a column: `val_acc (higher is better)`."""
        return f"{column} ({'higher' if self.direction(column) == 'max' else 'lower'} is better)"


@dataclass(frozen=True)
class TaskSpec:
    """A task as planning knows it: where its file is and what its literals declare.

    `name` is as the config gives it (`idx_classification`, `tasks/diabetes.py`); `archs` is
    None where the task leaves architecture names open; `hooks` are the optional functions
    it defines.
    """

    name: str
    path: Path
    archs: tuple[str, ...] | None
    params: dict[str, Any]
    metrics: Metrics
    hooks: frozenset[str]
    builtin: bool

    @property
    def slug(self) -> str:
        """The task's name as a folder name: the built-in's name, or the file's stem."""
        return self.name if self.builtin else self.path.stem


def builtin_names() -> list[str]:
    """The built-in tasks, by name."""
    return sorted(path.stem for path in BUILTIN_DIR.glob("*.py") if path.stem != "__init__")


def locate(task: str, root: str | Path = ".") -> tuple[Path, bool]:
    """The file of `task` and whether it is built in: a bare name picks a built-in task,
    anything else is a path to a `.py` file, relative to `root` unless absolute."""
    if NAME.fullmatch(task):
        path = BUILTIN_DIR / f"{task}.py"
        if not path.is_file():
            raise TaskError(
                f"{task!r} is no built-in task (built in: {', '.join(builtin_names())}); "
                "name one, or give the path of a task file such as tasks/mine.py"
            )
        return path, True
    path = Path(task)
    if not path.is_absolute():
        path = Path(root) / path
    if path.suffix != ".py":
        raise TaskError(f"{task} is not a Python file; a task file's name ends in .py")
    if not path.is_file():
        hint = " ('~' is not expanded: write the full path)" if task.startswith("~") else ""
        raise TaskError(
            f"task file {task} does not exist{hint}; write one with `reprogrid task new NAME` "
            "(docs/tasks.md)"
        )
    return path.resolve(), False


def read(task: str, root: str | Path = ".") -> TaskSpec:
    """The declarations of `task` (a built-in name or a task file), checked for the shapes
    docs/tasks.md documents; refuses a file that is missing, does not parse, lacks a
    function or declares something else in one `TaskError` line."""
    path, builtin = locate(task, root)
    try:
        tree = ast.parse(path.read_bytes(), filename=str(path))
    except SyntaxError as error:
        raise TaskError(
            f"task file {task} does not parse (line {error.lineno}: {error.msg}); fix it"
        ) from None
    except (OSError, ValueError) as error:
        raise TaskError(f"task file {task} cannot be read ({error}); fix it") from None
    literals, bound = _module_level(tree, task)
    missing = [name for name in REQUIRED if name not in bound]
    if missing:
        raise TaskError(
            f"task file {task} lacks {', '.join(missing)}; define "
            f"{' and '.join(f'def {name}(...)' for name in missing)} as docs/tasks.md shows"
        )
    if "METRICS" not in literals:
        raise TaskError(
            f"task file {task} lacks METRICS; declare what evaluate returns and which way "
            'each is better, e.g. METRICS = {"mse": "min", "r2": "max"}'
        )
    return TaskSpec(
        name=task,
        path=path,
        archs=_archs(literals.get("ARCHS"), task),
        params=_params(literals.get("PARAMS", {}), task),
        metrics=Metrics(_metrics(literals["METRICS"], task)),
        hooks=frozenset(name for name in OPTIONAL if name in bound),
        builtin=builtin,
    )


def _module_level(tree: ast.Module, task: str) -> tuple[dict[str, Any], set[str]]:
    """The literal values of ARCHS, PARAMS and METRICS, and every name the module binds."""
    literals: dict[str, Any] = {}
    bound: set[str] = set()
    for node in tree.body:
        if isinstance(node, ast.FunctionDef | ast.AsyncFunctionDef | ast.ClassDef):
            bound.add(node.name)
        elif isinstance(node, ast.Import | ast.ImportFrom):
            bound.update((alias.asname or alias.name).split(".")[0] for alias in node.names)
        elif isinstance(node, ast.Assign | ast.AnnAssign):
            targets = node.targets if isinstance(node, ast.Assign) else [node.target]
            for target in targets:
                if not isinstance(target, ast.Name):
                    continue
                bound.add(target.id)
                if target.id in ("ARCHS", "PARAMS", "METRICS") and node.value is not None:
                    literals[target.id] = _literal(node.value, target.id, task)
    return literals, bound


def _literal(node: ast.expr, name: str, task: str) -> Any:
    try:
        return ast.literal_eval(node)
    except ValueError:
        raise TaskError(
            f"task file {task} line {node.lineno}: {name} must be a literal (numbers, strings, "
            "lists, tuples, dicts), which reprogrid reads without running the file; write "
            "its value out"
        ) from None


def _archs(value: Any, task: str) -> tuple[str, ...] | None:
    if value is None:
        return None
    if not isinstance(value, list | tuple) or not value:
        raise TaskError(
            f'task file {task}: ARCHS must be a non-empty tuple of names, e.g. ("linear", "mlp")'
        )
    for arch in value:
        if not (isinstance(arch, str) and ARCH_NAME.fullmatch(arch) and len(arch) <= ARCH_LENGTH):
            raise TaskError(
                f"task file {task}: ARCHS holds {arch!r}; an architecture is a name of letters, "
                f"digits, '_', '.' and '-' (at most {ARCH_LENGTH}), not starting with '.' or '-'"
            )
    if len(set(value)) != len(value):
        raise TaskError(f"task file {task}: ARCHS names an architecture twice; keep one")
    return tuple(value)


def _params(value: Any, task: str) -> dict[str, Any]:
    if not isinstance(value, dict):
        raise TaskError(
            f'task file {task}: PARAMS must be a dict of names and defaults, e.g. {{"hidden": 32}}'
        )
    for key, default in value.items():
        if not (isinstance(key, str) and NAME.fullmatch(key)):
            raise TaskError(
                f"task file {task}: PARAMS key {key!r} is no parameter name; use lower-case "
                "letters, digits and '_', starting with a letter"
            )
        if type(default) not in PARAM_TYPES:
            raise TaskError(
                f"task file {task}: PARAMS[{key!r}] defaults to {default!r}; a default is a "
                "number, a string or a boolean, whose type the parameter keeps"
            )
    return dict(value)


def _metrics(value: Any, task: str) -> dict[str, str]:
    if not isinstance(value, dict) or not value:
        raise TaskError(
            f"task file {task}: METRICS must be a non-empty dict of names and directions, "
            'e.g. {"mse": "min", "r2": "max"}'
        )
    for name, direction in value.items():
        if not (isinstance(name, str) and NAME.fullmatch(name)):
            raise TaskError(
                f"task file {task}: METRICS key {name!r} is no metric name; use lower-case "
                "letters, digits and '_', starting with a letter"
            )
        if direction not in DIRECTIONS:
            raise TaskError(
                f"task file {task}: METRICS[{name!r}] is {direction!r}; a direction is "
                '"min" (lower is better) or "max" (higher is better)'
            )
    return dict(value)
