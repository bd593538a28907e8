# Successive halving (key `halving`): rungs train runs part of the way, each decision (a
# checkpoint) keeps the best settings, and the DAG grows with every decision.


localrules:
    halve,
    rungs,
    rung_figure,


rule train_rung:
    input:
        data=paths.prepared_data(DATASET, RAW.key),
        checks=paths.data_checks(DATASET, RAW.key),
        previous=previous_rung,
    output:
        rung=paths.rung_file(EXPERIMENT, "{run}", "{epochs}"),
    log:
        paths.rung_log(EXPERIMENT, "{run}", "{epochs}"),
    wildcard_constraints:
        # Only the rungs before the last: the last is the train rule's run to the end.
        epochs="|".join(map(str, RUNGS[:-1])) or "(?!)",
    priority: train_priority
    conda:
        "../../envs/train.yaml"
    threads: TRAIN["threads"]
    resources:
        mem_mb=lambda wildcards, attempt: TRAIN["mem_mb"] * attempt,
        runtime=lambda wildcards, attempt: TRAIN["runtime"] * attempt,
        gpu=TRAIN["gpu"],
    params:
        train=run_params,
        experiment=EXPERIMENT,
        split=JsonParam(
            val_fraction=config["data"]["val_fraction"],
            split_seed=config["data"]["split_seed"],
        ),
        code=CODE["train"],
    message:
        "Training {wildcards.run} to epoch {wildcards.epochs} of a search"
    shell:
        '"$REPROGRID_PYTHON" -m reprogrid.jobs.train --run {wildcards.run:q}'
        " --params {params.train:q} --experiment {params.experiment:q} --split {params.split:q}"
        " --data {input.data:q} --checks {input.checks:q} --log {log:q}"
        " --until {wildcards.epochs} --rung {output.rung:q}"
        " --threads {threads} --gpus {resources.gpu} --code {params.code:q}"


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
        metric=HALVING["metric"],
        max_epochs=HALVING["max_epochs"],
        code=CODE["rung_figure"],
    message:
        "Drawing the rungs of the search"
    script:
        "../../scripts/rung_figure.py"
