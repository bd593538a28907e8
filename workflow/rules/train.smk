# One job per run of the grid; everything the run depends on is in its params.


rule train:
    input:
        # Under halving, the run's last rung: its checkpoint is where this job resumes.
        **({"previous": previous_rung} if RUNGS else {}),
        data=paths.prepared_data(DATA_NAME, RAW.key),
        checks=paths.data_checks(DATA_NAME, RAW.key),
    output:
        metrics=paths.run_file(EXPERIMENT, "{run}", "metrics.json"),
        history=paths.run_file(EXPERIMENT, "{run}", "history.csv"),
        model=paths.run_file(EXPERIMENT, "{run}", "model.pt"),
        provenance=paths.run_file(EXPERIMENT, "{run}", "provenance.json"),
    log:
        paths.run_file(EXPERIMENT, "{run}", paths.TRAIN_LOG),
    priority: train_priority
    conda:
        "../../envs/train.yaml"
    threads: TRAIN["threads"]
    resources:
        mem_mb=lambda wildcards, attempt: TRAIN["mem_mb"] * attempt,
        runtime=lambda wildcards, attempt: TRAIN["runtime"] * attempt,
        gpu=TRAIN["gpu"],
        # DataLoader workers of a task whose `load` returns Datasets: a resource, as they
        # change no result, so changing them plans nothing again (a param would).
        workers=TRAIN["workers"],
    params:
        train=run_params,
        task=TASK.name,
        experiment=EXPERIMENT,
        split=JsonParam(
            val_fraction=config["data"]["val_fraction"],
            split_seed=config["data"]["split_seed"],
        ),
        code=CODE["train"],
        # What else decides the run's arithmetic, so part of its identity: the threads torch
        # splits its sums over and the kind of device (config/README.md, "Run identity").
        threads=TRAIN["threads"],
        device=train_device(),
        # What the job writes, as its flags: a rung of a search (train_rung, which is this
        # rule with other outputs) also says the epoch it stops at.
        outputs=train_outputs,
    message:
        "Training {wildcards.run} ({threads} thread(s), {resources.gpu} GPU(s), "
        "{resources.mem_mb} MB, {resources.runtime} min)"
    shell:
        '"$REPROGRID_PYTHON" -m reprogrid.jobs.train --run {wildcards.run:q} --task {params.task:q}'
        " --params {params.train:q} --experiment {params.experiment:q} --split {params.split:q}"
        " --data {input.data:q} --checks {input.checks:q} --log {log:q} {params.outputs}"
        " --threads {params.threads} --gpus {resources.gpu} --code {params.code:q}"
        " --workers {resources.workers}"
