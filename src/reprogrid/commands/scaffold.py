"""`reprogrid task new NAME`: a task file, its experiment config and its lab book, ready to run.

The task file fills in the contract of docs/tasks.md with a small working example (a line
fitted to made-up points, so the experiment runs before anything is changed) and says in
comments what each part is for; the experiment config runs it as is with
`snakemake --config experiment=NAME`. Nothing existing is overwritten.
"""

from __future__ import annotations

from pathlib import Path

from reprogrid.record import atomic
from reprogrid.tasks.spec import NAME


class ScaffoldError(ValueError):
    """A task that cannot be written as asked; the message is meant for the user as is."""


TASK = '''"""{name}: the question this task answers, in one line.

Written by `reprogrid task new`; docs/tasks.md explains every part. As written it fits a
line to made-up points, so `snakemake --config experiment={name}` runs before anything is
changed: replace load, build, loss and evaluate with your own, keeping their shapes.
"""

import torch
from torch import nn

# The values grid.arch may take; build() makes a model of each.
ARCHS = ("linear", "mlp")
# Your own hyperparameters and their defaults: each is a train key, and may be a grid axis
# (grid: {{hidden: [16, 64]}}) or a sampled search axis. A default's type is the key's type.
PARAMS = {{"hidden": 32}}
# What evaluate() returns, each with the way it is better ("min" or "max"). The first is the
# headline: it picks each run's best epoch and decides the criterion unless the config says.
METRICS = {{"mse": "min", "mae": "min"}}


def load(raw_dir):
    """Read the raw data once, in the data job: data.raw_dir, or None when it is null.

    Return tensors train_x, train_y, test_x, test_y (reprogrid carves the validation split
    from train); other entries, numbers, strings or tensors, reach build() as facts. For
    data that does not fit in memory, return {{"train": Dataset, "test": Dataset}} instead,
    each item an (x, y) pair of tensors; evaluate then takes (model, batches) (docs/tasks.md,
    "Data that does not fit in memory").
    """
    generator = torch.Generator().manual_seed(0)
    x = torch.rand(1200, 1, generator=generator) * 4 - 2
    y = 3 * x[:, 0] + 0.5 + 0.2 * torch.randn(1200, generator=generator)
    return {{"train_x": x[:1000], "train_y": y[:1000], "test_x": x[1000:], "test_y": y[1000:]}}


def build(params, data):
    """A freshly initialised model: params hold arch, the PARAMS values and the train keys."""
    if params["arch"] == "linear":
        return nn.Linear(1, 1)
    return nn.Sequential(nn.Linear(1, params["hidden"]), nn.ReLU(), nn.Linear(params["hidden"], 1))


def loss(model, x, y):
    """The mean loss of one training batch, as a scalar tensor."""
    return torch.mean((model(x).squeeze(1) - y) ** 2)


def evaluate(model, x, y):
    """Every METRICS value on one whole split (no gradients; the model is in eval mode)."""
    error = model(x).squeeze(1) - y
    return {{"mse": torch.mean(error**2).item(), "mae": torch.mean(error.abs()).item()}}
'''

EXPERIMENT = """# Experiment {name}: the runs of tasks/{name}.py.
# Lab book: config/experiments/{name}.md. Layered over config/config.yaml (only what differs).
# Run: snakemake --cores 2 --config experiment={name}   (results/{name}/, reports/{name}/)
task: tasks/{name}.py

data:
  # What load() reads: a folder or a file; null calls load(None).
  raw_dir: null

grid:
  seed: [0, 1, 2]
  arch: [linear, mlp]
  lr: [0.01]

train:
  epochs: 5
  batch_size: 64

analysis:
  # Fix it before the runs, e.g. {{better: mlp, worse: linear, metric: test_mse, min_diff: 0.01}}.
  criterion: null
"""

LABBOOK = """# Lab book: {name}

## Question
What does this experiment ask? (One sentence a colleague understands.)

## Hypothesis
What do you expect, and why?

## Goal
What will be measured: the metrics of tasks/{name}.py (mse, mae) of each architecture,
over three seeds, with intervals and a Holm-adjusted comparison.

## How to run
```
snakemake --cores 2 --config experiment={name} debug=True   # a tiny version first
snakemake --cores 2 --config experiment={name}
snakemake --config experiment={name} --report reports/{name}.html
```

## Success criterion (fixed before the runs)
Set `analysis.criterion` in config/experiments/{name}.yaml before the runs, and say it
here in words.

## Notes on results
"""


# Experiment names a task's experiment cannot take.
RESERVED = {
    "default": "the experiment of config/config.yaml",
    "debug": "the debug runs (--config debug=True)",
}


def new_task(name: str, root: str | Path = ".") -> list[Path]:
    """Write tasks/NAME.py, config/experiments/NAME.yaml and its lab book under `root`;
    the files written. Refuses a name that is no valid task name, or any file that exists."""
    if name in RESERVED:
        raise ScaffoldError(
            f"{name!r} names {RESERVED[name]}; choose another name for the task and its experiment"
        )
    if not NAME.fullmatch(name):
        raise ScaffoldError(
            f"{name!r} is no task name; use lower-case letters, digits and '_', starting "
            "with a letter (it names tasks/NAME.py and the experiment NAME)"
        )
    root = Path(root)
    files = {
        root / "tasks" / f"{name}.py": TASK,
        root / "config" / "experiments" / f"{name}.yaml": EXPERIMENT,
        root / "config" / "experiments" / f"{name}.md": LABBOOK,
    }
    existing = [str(path) for path in files if path.exists()]
    if existing:
        raise ScaffoldError(
            f"{', '.join(existing)} exists already; choose another name, or move it away"
        )
    for path, template in files.items():
        path.parent.mkdir(parents=True, exist_ok=True)
        atomic.write_text(path, template.format(name=name))
    return list(files)
