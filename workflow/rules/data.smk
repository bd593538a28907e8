# Run the task's load once (for the IDX task: fetch and check the data set first); every
# training job reads the prepared file.


localrules:
    prepare_data,


rule prepare_data:
    input:
        RAW.inputs,
    output:
        prepared=paths.prepared_data(DATA_NAME, RAW.key),
        checks=paths.data_checks(DATA_NAME, RAW.key),
    log:
        paths.data_log(DATA_NAME, RAW.key),
    conda:
        "../../envs/train.yaml"
    params:
        task=TASK.name,
        dataset=DATASET,
        raw_dir=config["data"]["raw_dir"],
        verify=config["data"]["verify"],
        key=RAW.key,
        download_dir=download_dir,
        code=CODE["prepare_data"],
    message:
        "Preparing the data of task {params.task}"
    script:
        "../../scripts/prepare_data.py"
