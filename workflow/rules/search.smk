# Successive halving (key `halving`): rungs train runs part of the way, each decision (a
# checkpoint) keeps the best settings, and the DAG grows with every decision.


localrules:
    halve,
    rungs,
    rung_figure,


# A rung trains a run as the train rule does (the same command, env, resources and params),
# to a rung's epoch, writing what the run reached there.
use rule train as train_rung with:
    input:
        data=paths.prepared_data(DATA_NAME, RAW.key),
        checks=paths.data_checks(DATA_NAME, RAW.key),
        previous=previous_rung,
    output:
        rung=paths.rung_file(EXPERIMENT, "{run}", "{epochs}"),
    log:
        paths.rung_log(EXPERIMENT, "{run}", "{epochs}"),
    wildcard_constraints:
        # Only the rungs before the last: the last is the train rule's run to the end.
        epochs="|".join(map(str, RUNGS[:-1])) or "(?!)",
    message:
        "Training {wildcards.run} to epoch {wildcards.epochs} of a search"


checkpoint halve:
    input:
        rung_results,
    output:
        decision=paths.search_file(EXPERIMENT, "rung-{rung}.csv"),
    log:
        paths.log_file(EXPERIMENT, "halve_{rung}"),
    wildcard_constraints:
        rung="[0-9]+",
    conda:
        "../../envs/analysis.yaml"
    params:
        epochs=lambda wildcards: RUNGS[int(wildcards.rung)],
        eta=HALVING["eta"],
        metrics=METRICS,
        metric=HALVING["metric"],
        code=CODE["halve"],
    message:
        "Deciding rung {wildcards.rung} of the search ({params.epochs} epochs)"
    script:
        "../../scripts/halve.py"


rule rungs:
    input:
        decisions=[
            paths.search_file(EXPERIMENT, f"rung-{rung}.csv")
            for rung in range(len(RUNGS) - 1)
        ],
    output:
        rungs=paths.search_file(EXPERIMENT, "rungs.csv"),
    log:
        paths.log_file(EXPERIMENT, "rungs"),
    conda:
        "../../envs/analysis.yaml"
    message:
        "Writing every decision of the search"
    script:
        "../../scripts/rungs.py"


rule rung_figure:
    input:
        rungs=paths.search_file(EXPERIMENT, "rungs.csv"),
        runs=paths.summary_file(EXPERIMENT, "runs.csv"),
    output:
        png=report(
            paths.report_file(EXPERIMENT, f"{paths.RUNGS_FIGURE}.png"),
            caption=f"../report/{paths.RUNGS_FIGURE}.rst",
            category="Results",
            labels={"figure": "search rungs"},
        ),
        pdf=paths.report_file(EXPERIMENT, f"{paths.RUNGS_FIGURE}.pdf"),
    log:
        paths.log_file(EXPERIMENT, "rung_figure"),
    conda:
        "../../envs/analysis.yaml"
    params:
        metrics=METRICS,
        metric=HALVING["metric"],
        max_epochs=HALVING["max_epochs"],
        code=CODE["rung_figure"],
    message:
        "Drawing the rungs of the search"
    script:
        "../../scripts/rung_figure.py"
