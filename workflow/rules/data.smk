# Fetch, check and prepare the data set once; every training job reads the prepared file.


localrules:
    prepare_data,


rule prepare_data:
    input:
        RAW.inputs,
    output:
        prepared=paths.prepared_data(DATASET, RAW.key),
        checks=paths.data_checks(DATASET, RAW.key),
    log:
        paths.data_log(DATASET, RAW.key),
    conda:
        "../../envs/train.yaml"
    params:
        dataset=DATASET,
        raw_dir=config["data"]["raw_dir"],
        verify=config["data"]["verify"],
        key=RAW.key,
        download_dir=download_dir,
        code=CODE["prepare_data"],
    message:
        "Checking and preparing the {params.dataset} data set"
    script:
        "../../scripts/prepare_data.py"
