# Fetch, check and prepare the data set once; every training job reads the prepared file.


localrules:
    prepare_data,


rule prepare_data:
    input:
        raw_inputs(),
    output:
        prepared=paths.prepared_data(DATASET),
        checks=paths.data_checks(DATASET),
    log:
        paths.data_log(DATASET),
    conda:
        "../../envs/train.yaml"
    params:
        dataset=DATASET,
        raw_dir=config["data"]["raw_dir"],
    message:
        "Checking and preparing the {params.dataset} data set"
    script:
        "../../scripts/prepare_data.py"
