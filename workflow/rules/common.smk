# Configuration, the grid and every path of this experiment; rules below only declare.
import json
import os
import shlex
import sys
from pathlib import Path

# reprogrid's checkout: this file's, also where reprogrid runs as a module of another
# workflow (whose own folder is then workflow.basedir).
ROOT = Path(workflow.current_basedir).parents[1]
SRC = str(ROOT / "src")
sys.path[:0] = [SRC, str(ROOT / "workflow")]
import glue
from reprogrid.analysis import audit as auditing
from reprogrid.commands import remote
from reprogrid.config import checks
from reprogrid.config import data as config_data
from reprogrid.config import resolve as configuration
from reprogrid.config import schema as config_schema
from reprogrid.config.errors import ConfigError
from reprogrid.datasets import catalog, rawfiles
from reprogrid.plan import fingerprint, grid, halving, paths
from reprogrid.record import atomic

glue.export_pythonpath(SRC)
glue.export_controller()

# The interpreter of the train command ($REPROGRID_PYTHON): inside a conda env or container,
# that env's `python`; otherwise the one running Snakemake, which has torch.
glue.export_interpreter(
    "python"
    if {"CONDA", "APPTAINER"}
    & {method.name for method in workflow.deployment_settings.deployment_method}
    else sys.executable
)

# The configuration's layers: the working directory's config/ where it has one (a repository
# using reprogrid as a module, with its own config/ and tasks/), else reprogrid's own.
CONFIG_DIR = Path("config") if Path("config/config.yaml").is_file() else ROOT / "config"
try:
    RESOLUTION = configuration.resolve_with_sources(
        config_schema.load_schema(ROOT / "workflow/schemas/config.schema.yaml"),
        CONFIG_DIR / "config.yaml",
        CONFIG_DIR / "experiments",
        workflow.config_settings.configfiles,
        workflow.config_settings.config,
    )
except ConfigError as error:
    sys.exit(f"reprogrid: {error}")
config.clear()
config.update(RESOLUTION.config)
# The task the runs answer, and the schema made for it (its PARAMS are keys of `train`).
TASK = RESOLUTION.task
SCHEMA = RESOLUTION.schema

# The image every rule runs in under --software-deployment-method apptainer (key `container`).
glue.export_container(
    config["container"]
    if "APPTAINER"
    in {method.name for method in workflow.deployment_settings.deployment_method}
    else None
)


class JsonParam(dict):
    """A mapping param that a shell command writes as JSON, which its job parses.

    Snakemake's params trigger compares a param's repr, a dict's as before, so runs planned
    when the command carried Python literals are not planned again; the command formats it
    with str(), so the printed plan reads like the config.
    """

    def __str__(self):
        return json.dumps(self)


EXPERIMENT = config["experiment"]
# The IDX data set of the built-in IDX task, whose files are checked against it; None for
# any other task, whose load reads data.raw_dir as it is.
DATASET = config["data"]["dataset"] if config_data.is_idx_task(RESOLUTION) else None
# Where the prepared data of this task and data go: per data set, or per task.
DATA_NAME = DATASET or TASK.slug
# The raw files checked as the data job checks them, and the key of their prepared data.
try:
    if DATASET is not None:
        RAW = rawfiles.plan(
            DATASET,
            config["data"]["raw_dir"],
            config["data"]["verify"],
            paths.raw_digests(),
        )
    else:
        RAW = rawfiles.plan_task(
            TASK.name, config["data"]["raw_dir"], paths.raw_digests()
        )
except rawfiles.DataError as error:
    sys.exit(f"reprogrid: {error}")
# What every job reading the task's metrics is given: their names and directions (a plain
# dict: a script's params are pickled, and a class of this file would not unpickle).
METRICS = dict(TASK.metrics.directions)
# The value each axis leaves out of run ids, as this experiment first trained with it: a
# default edited since renames no run folder (config/README.md, "Run identity").
try:
    KEPT_IDS = grid.read_id_defaults(EXPERIMENT)
except grid.RunNamesError as error:
    sys.exit(f"reprogrid: {error}")
RUNS = grid.expand_grid(config, SCHEMA, KEPT_IDS)
TASK_SEARCH = fingerprint.task_search(TASK.path)
TRAIN = config["resources"]
# Successive halving (key `halving`): the epochs each rung trains to, the last one every
# run's end; None trains every run to its end at once.
HALVING = config["halving"]
RUNGS = halving.rungs(HALVING)

# The code each kind of job runs, fingerprinted once per planning. A rule passes its own as the
# `code` param, so that Snakemake's params trigger plans the job again when that code changes
# (docs/reproducibility.md, "Code changes").
SCRIPTS = ROOT / "scripts"
try:
    CODE = {"train": fingerprint.of_job("reprogrid.jobs.train", TASK.path)}
    # The jobs that run the task's code: its file and its imports are part of theirs.
    CODE.update(
        (rule, fingerprint.of_files([SCRIPTS / f"{rule}.py", TASK.path], TASK_SEARCH))
        for rule in ("prepare_data", "audit")
    )
except SyntaxError as error:
    sys.exit(
        f"reprogrid: {error.filename}, which task {TASK.name} imports, does not parse "
        f"(line {error.lineno}: {error.msg}); fix it"
    )
CODE.update(
    (rule, fingerprint.of_files([SCRIPTS / f"{rule}.py"]))
    for rule in ("aggregate", "figures", "tables", "halve", "rung_figure")
)


wildcard_constraints:
    run=paths.RUN_ID_REGEX,


# The claim on the debug folders, held open until this process ends (see debug_scratch).
DEBUG_CLAIM = []


def debug_scratch(wildcards):
    """Input function of `all` that adds nothing: in a debug run about to execute, it first
    deletes the outputs of earlier debug runs, so every debug run starts from nothing.

    It runs while Snakemake builds the DAG, the first moment it knows whether jobs will
    really run: never in a dry run, --touch, --report, --lint, or a cluster job. Snakemake
    takes its own lock only after building the DAG, and deleting later would leave that DAG
    wrong, so the run first claims the debug folders itself and holds the claim until it
    ends: a second debug run started meanwhile is refused and deletes nothing.
    """
    executing = workflow.executor_plugin is not None and not (
        workflow.dryrun or workflow.touch
    )
    if config["debug"] and executing and workflow.is_main_process and not DEBUG_CLAIM:
        lock = Path(workflow.persistence.path) / "reprogrid-debug.lock"
        try:
            DEBUG_CLAIM.append(glue.claim_debug_outputs(lock))
        except ConfigError as error:
            sys.exit(f"reprogrid: {error}")
        glue.clear_debug_outputs()
    return []


# Rules whose jobs train, on the GPU when the config asks for one.
GPU_RULES = ("train", "audit_retrain")


def check_gpus_here():
    """Before the first job of a run on this machine, refuse GPUs torch cannot see.

    Only now does Snakemake know where jobs run (a dry run cannot tell); cluster jobs and
    --touch never get here, and torch is imported only when a training job asks for a GPU.
    """
    if not workflow.local_exec or workflow.touch:
        return
    job = next(
        (job for job in workflow.dag.needrun_jobs() if job.rule.name in GPU_RULES), None
    )
    if job is None:
        return
    gpus = job.resources.get("gpu", 0)
    overrides = workflow.resource_settings.overwrite_resources or {}
    if "gpu" in overrides.get(job.rule.name, {}):
        asked = f"--set-resources {job.rule.name}:gpu={gpus}"
        fix = f"--set-resources {job.rule.name}:gpu=0"
    else:
        asked = (
            f"config key resources.gpu (set by {RESOLUTION.source('resources', 'gpu')})"
        )
        fix = "--config resources='{gpu: 0}'"
    try:
        checks.check_local_gpus(gpus, asked, fix)
    except ConfigError as error:
        sys.exit(f"reprogrid: {error}")


def check_run_folders():
    """Before the first job, refuse a run folder (or a folder above it, below the
    experiment's) that is a symbolic link: its job would write wherever the link leads.
    """
    for job in workflow.dag.needrun_jobs():
        if "run" in job.wildcards.keys():
            folder = paths.run_dir(EXPERIMENT, job.wildcards.run)
            link = paths.link_below(paths.experiment_dir(EXPERIMENT), folder)
            if link is not None:
                sys.exit(
                    f"reprogrid: {link} is a symbolic link (to {os.readlink(link)}); the jobs "
                    f"of run {job.wildcards.run} write only into folders of the project: "
                    "remove the link (move what it leads to into its place if it is yours) "
                    "and run Snakemake again"
                )


def keep_id_defaults():
    """Write the experiment's record of the values its run ids leave out, before any run
    is trained under those names, where this config adds an axis it lacks."""
    record = grid.id_defaults_to_keep(config, SCHEMA, KEPT_IDS)
    if record is not None:
        path = Path(paths.id_defaults_file(EXPERIMENT))
        path.parent.mkdir(parents=True, exist_ok=True)
        atomic.write_json(path, record)


onstart:
    check_gpus_here()
    check_run_folders()
    keep_id_defaults()


def runs_entering(rung):
    """The runs that train to rung `rung`: every run at the first, then the runs whose
    setting the rung before kept (its decision, a checkpoint, is waited for)."""
    if rung == 0:
        return list(RUNS)
    decision = checkpoints.halve.get(rung=rung - 1).output.decision
    return halving.kept_runs(halving.read_decision(Path(decision).read_text()), RUNS)


def finished_runs():
    """The runs trained to their end, which the summaries read: every run of the grid, or
    under halving those its last rung trains (an input function: it may wait for it)."""
    return list(RUNS) if RUNGS is None else runs_entering(len(RUNGS) - 1)


def run_outputs(name):
    """One file of every run trained to its end."""
    return [paths.run_file(EXPERIMENT, run, name) for run in finished_runs()]


def when_decided(function, *args):
    """`function(*args)` for a rule's input or params: computed now, or under halving an
    input function that Snakemake calls once the decisions it reads are made. (A value,
    where it can be, keeps the planning of a large grid cheap.)"""
    if RUNGS is None:
        return function(*args)
    return lambda wildcards: function(*args)


def previous_rung(wildcards):
    """The rung a run reached before this job: its checkpoint is where the job resumes."""
    epochs = int(wildcards.get("epochs", HALVING["max_epochs"]))
    if RUNGS is None or RUNGS.index(epochs) == 0:
        return []
    return paths.rung_file(EXPERIMENT, wildcards.run, RUNGS[RUNGS.index(epochs) - 1])


def run_params(wildcards):
    """The run's training parameters, as the train command passes them (JSON); a run outside
    the grid stops Snakemake in one line."""
    if wildcards.run not in RUNS:
        why = grid.unknown_run(wildcards.run, RESOLUTION, SCHEMA, KEPT_IDS)
        sys.exit(f"reprogrid: {why}")
    return JsonParam(RUNS[wildcards.run])


def train_device():
    """The kind of device the runs train on: "cuda" where the train job asks for a GPU
    (config key resources.gpu, or --set-resources train:gpu=N), else "cpu". The same for
    every job, so read once, and a value, so that Snakemake's params trigger compares it (a
    param reading the job's resources does not count)."""
    overrides = (workflow.resource_settings.overwrite_resources or {}).get("train", {})
    gpus = overrides["gpu"] if "gpu" in overrides else TRAIN["gpu"]
    return "cuda" if int(getattr(gpus, "value", gpus)) > 0 else "cpu"


def train_outputs(wildcards, output):
    """The train command's flags for what its job writes: each output the rule declares as
    `--<name> <path>`, and, for a rung of a search, `--until <epochs>`."""
    flags = [f"--{name} {shlex.quote(path)}" for name, path in output.items()]
    if "epochs" in wildcards.keys():
        flags.insert(0, f"--until {int(wildcards.epochs)}")
    return " ".join(flags)


def train_priority(wildcards):
    """Longest runs first: a grid should not end with one long run on one core, the rest idle."""
    run = run_params(wildcards)
    return run["epochs"] * catalog.TRAINING_COST.get(run["arch"], 1)


def download_dir(wildcards, output):
    """Where torchvision downloads to: the folder of the prepared data (key `download`)."""
    return str(Path(output.prepared).parent)


def summary_targets():
    return [
        paths.summary_file(EXPERIMENT, name)
        for name in ("runs.csv", "summary.csv", "best.csv", "comparisons.csv")
    ]


def report_targets():
    figures = [
        paths.report_file(EXPERIMENT, f"{stem}.{suffix}")
        for stem in paths.REPORT_FIGURES.values()
        for suffix in ("png", "pdf")
    ]
    return figures + [
        paths.report_file(EXPERIMENT, name) for name in paths.REPORT_TABLES.values()
    ]


def report_figure(key):
    """A figure's PNG, flagged for the HTML report with its caption."""
    stem = paths.REPORT_FIGURES[key]
    return report(
        paths.report_file(EXPERIMENT, f"{stem}.png"),
        caption=f"../report/{stem}.rst",
        category="Results",
        labels={"figure": stem.replace("_", " ")},
    )


def figure_pdf(key):
    return paths.report_file(EXPERIMENT, f"{paths.REPORT_FIGURES[key]}.pdf")


def report_table(key, category, caption):
    """A report page, flagged for the HTML report in `category` with its caption."""
    return report(
        paths.report_file(EXPERIMENT, paths.REPORT_TABLES[key]),
        caption=f"../report/{caption}.rst",
        category=category,
        labels={"table": caption},
    )


def thesis_file(key):
    return paths.report_file(EXPERIMENT, paths.REPORT_TABLES[key])


def labbook():
    """The experiment's lab book, when it has one."""
    path = CONFIG_DIR / "experiments" / f"{EXPERIMENT}.md"
    return [str(path)] if path.is_file() else []


def search_outputs(name):
    """A file of the search, under halving; nothing otherwise."""
    return [paths.search_file(EXPERIMENT, name)] if RUNGS is not None else []


def search_report_targets():
    """The figure of the rungs, under halving; nothing otherwise."""
    if RUNGS is None:
        return []
    return [
        paths.report_file(EXPERIMENT, f"{paths.RUNGS_FIGURE}.{suffix}")
        for suffix in ("png", "pdf")
    ]


def rung_results(wildcards):
    """What the runs entering a rung reached there."""
    rung = int(wildcards.rung)
    return [
        paths.rung_file(EXPERIMENT, run, RUNGS[rung]) for run in runs_entering(rung)
    ]


def audit_sample():
    """The runs `snakemake audit` retrains: a fixed sample of analysis.audit_runs of the
    runs trained to their end."""
    return auditing.sample_runs(finished_runs(), config["analysis"]["audit_runs"])


def audit_outputs(name):
    """One stored file of every audited run, so altering it re-runs the audit."""
    return [paths.run_file(EXPERIMENT, run, name) for run in audit_sample()]


def sync_inputs(wildcards):
    """What `snakemake sync` copies (the experiment's finished tables and report), once rclone
    knows and reaches sync.remote: a remote it cannot use stops Snakemake in one line while it
    plans, before any job runs or anything in results/ changes."""
    try:
        remote.check(
            config["sync"]["remote"],
            f"config key sync.remote (set by {RESOLUTION.source('sync', 'remote')})",
        )
    except remote.RemoteError as error:
        sys.exit(f"reprogrid: {error}")
    return summary_targets() + report_targets()
