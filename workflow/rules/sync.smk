# `snakemake sync`: copy the experiment's results and reports to sync.remote with rclone.
# Never part of the default target; it runs once the experiment is complete.


# Where Snakemake runs (a login node reaches the storage; compute nodes often cannot).
localrules:
    sync,


rule sync:
    input:
        sync_inputs,
    log:
        paths.log_file(EXPERIMENT, "sync"),
    conda:
        "../../envs/sync.yaml"
    params:
        remote=config["sync"]["remote"],
        delete=config["sync"]["delete"],
        folders=[paths.experiment_dir(EXPERIMENT), paths.report_dir(EXPERIMENT)],
    message:
        "Copying {params.folders} to {params.remote}"
    script:
        "../../scripts/sync.py"
