# Tables across the grid: one row per run, and statistics over seeds per setting.

# The test metric the architectures are compared on: the criterion's, else the task's
# first (stats.compared_metric, without importing scipy while planning).
COMPARED_METRIC = (config["analysis"]["criterion"] or {}).get(
    "metric", TASK.metrics.column("test")
)


localrules:
    aggregate,


rule aggregate:
    input:
        metrics=when_decided(run_outputs, "metrics.json"),
        provenance=when_decided(run_outputs, "provenance.json"),
        history=when_decided(run_outputs, "history.csv"),
        # Read for its sha256 alone: a model.pt cut short is a damaged run, never summarised.
        model=when_decided(run_outputs, "model.pt"),
        rungs=search_outputs("rungs.csv"),
    output:
        runs=paths.summary_file(EXPERIMENT, "runs.csv"),
        histories=paths.summary_file(EXPERIMENT, "histories.csv"),
        summary=paths.summary_file(EXPERIMENT, "summary.csv"),
        best=paths.summary_file(EXPERIMENT, "best.csv"),
        comparisons=paths.summary_file(EXPERIMENT, "comparisons.csv"),
        conclusion=paths.summary_file(EXPERIMENT, "conclusion.json"),
    log:
        paths.log_file(EXPERIMENT, "aggregate"),
    conda:
        "../../envs/analysis.yaml"
    params:
        experiment=EXPERIMENT,
        runs=when_decided(finished_runs),
        axes=grid.grid_axes(config),
        metrics=METRICS,
        select_metric=config["train"]["select_metric"],
        analysis=config["analysis"],
        code=CODE["aggregate"],
        # The checkout whose commit runs are compared with when they are summarised.
        repo=str(ROOT),
    message:
        "Summarising the runs of {params.experiment}"
    script:
        "../../scripts/aggregate.py"
