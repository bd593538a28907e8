"""Export finished runs to Weights & Biases: one W&B run per grid run, offline by default.

Offline, each run is written under results/<experiment>/tracking/wandb/ for `reprogrid sync`
(or `wandb sync`) to upload later from a machine with internet. The W&B run id is derived
from the experiment and the run id, so exporting again resumes the same W&B run; the earlier
local copy of that run is removed first, so one folder per grid run waits to be synced.
"""

from __future__ import annotations

import logging
import os
import shutil
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from reprogrid.plan import paths
from reprogrid.tracking import TrackedRun, tracking_dir, wandb_run_id

log = logging.getLogger("reprogrid")

# Where W&B keeps its cache, settings and staged artifacts, unless the environment says.
STATE_VARIABLES = {
    "WANDB_CACHE_DIR": "cache",
    "WANDB_CONFIG_DIR": "config",
    "WANDB_DATA_DIR": "data",
    "WANDB_ARTIFACT_DIR": "artifacts",
}


def _settings(mode: str):
    import wandb

    # Nothing about the machine or the checkout running the export: the run's own facts
    # (from its provenance) say where and from which commit it came.
    return wandb.Settings(
        mode=mode,
        silent=True,
        console="off",
        disable_git=True,
        save_code=False,
        x_disable_stats=True,
        x_disable_meta=True,
        x_disable_machine_info=True,
    )


def _forget(folder: Path, run_id: str) -> None:
    """Remove the local copies of an earlier export of this W&B run."""
    for earlier in folder.glob(f"*run-*-{run_id}"):
        shutil.rmtree(earlier)


def config(run: TrackedRun, axes: Sequence[str]) -> dict[str, Any]:
    """The W&B config: every grid axis at the top, the full resolved config, the run's facts."""
    facts = run.facts
    return {
        **facts.axes(axes),
        "config": facts.config,
        "reprogrid": {
            "run": facts.run,
            "experiment": facts.experiment,
            "setting": facts.setting,
            "commit": facts.commit,
            "dirty": facts.dirty,
            "remote": facts.remote,
            "host": facts.host,
            "data_sha256": facts.data_sha256,
        },
    }


def export_run(
    run: TrackedRun,
    *,
    settings: dict[str, Any],
    axes: Sequence[str],
    with_model: bool,
    folder: Path,
) -> str:
    """Write (offline) or send (online) one run; its W&B run id."""
    import wandb

    facts = run.facts
    run_id = wandb_run_id(facts.experiment, facts.run)
    _forget(folder / "wandb", run_id)
    axis_tags = [f"{name}={paths.format_value(value)}" for name, value in facts.axes(axes).items()]
    tracker = wandb.init(
        id=run_id,
        resume="allow",
        project=settings["project"],
        entity=settings["entity"],
        group=facts.setting,
        job_type="train",
        name=facts.run,
        tags=[*axis_tags, *settings["tags"]],
        config=config(run, axes),
        dir=str(folder),
        settings=_settings(settings["mode"]),
        reinit="create_new",
    )
    for row in run.history:
        tracker.log({column: row[column] for column in run.columns}, step=int(row["epoch"]))
    tracker.summary.update(
        {"status": run.status, **{f"final/{k}": v for k, v in run.final_metrics().items()}}
    )
    code = wandb.Artifact(f"code-{run_id}", type="code", metadata={"commit": facts.commit})
    with code.new_file("commit.txt", encoding="utf-8") as handle:
        handle.write(f"{facts.commit}\n")
    if facts.patch is not None and facts.patch.is_file():
        code.add_file(str(facts.patch), name=paths.DIFF_PATCH)
    tracker.log_artifact(code)
    results = wandb.Artifact(f"run-{run_id}", type="model" if with_model else "results")
    for path in run.files(with_model):
        if path.name != paths.DIFF_PATCH:
            results.add_file(str(path), name=path.name)
    tracker.log_artifact(results)
    tracker.finish(exit_code=0 if run.status == "ok" else 1)
    return run_id


def export_runs(
    runs: Sequence[TrackedRun],
    *,
    experiment: str,
    settings: dict[str, Any],
    axes: Sequence[str],
    with_model: bool,
) -> dict[str, Any]:
    """Export every run; the record the export job writes (no credentials in it)."""
    # W&B writes its runs into <folder>/wandb/ (WANDB_DIR is <folder>).
    folder = Path(tracking_dir(experiment)).resolve()
    for variable, name in STATE_VARIABLES.items():
        os.environ.setdefault(variable, str(folder / "wandb-state" / name))
    exported = {
        run.facts.run: export_run(
            run, settings=settings, axes=axes, with_model=with_model, folder=folder
        )
        for run in runs
    }
    log.info("wandb (%s): %d run(s) exported", settings["mode"], len(exported))
    return {
        "tracker": "wandb",
        "mode": settings["mode"],
        "project": settings["project"],
        "entity": settings["entity"],
        "runs": exported,
    }
