# `snakemake audit`: retrain a sample of stored runs from their records and compare bit for bit.


localrules:
    audit,


rule audit_retrain:
    input:
        data=paths.prepared_data(DATA_NAME, RAW.key),
        checks=paths.data_checks(DATA_NAME, RAW.key),
        models=when_decided(audit_outputs, "model.pt"),
        metrics=when_decided(audit_outputs, "metrics.json"),
        history=when_decided(audit_outputs, "history.csv"),
        provenance=when_decided(audit_outputs, "provenance.json"),
    output:
        table=paths.audit_file(EXPERIMENT, "audit.csv"),
        html=report(
            paths.audit_file(EXPERIMENT, "audit.html"),
            caption="../report/audit.rst",
            category="Reproduction",
            labels={"table": "audit"},
        ),
    log:
        paths.log_file(EXPERIMENT, "audit"),
    conda:
        "../../envs/audit.yaml"
    threads: TRAIN["threads"]
    resources:
        mem_mb=TRAIN["mem_mb"],
        runtime=lambda wildcards, input: TRAIN["runtime"] * len(input.models),
        gpu=TRAIN["gpu"],
    params:
        runs=when_decided(audit_sample),
        task=TASK.name,
        scratch=paths.audit_scratch(EXPERIMENT),
        code=CODE["audit"],
    message:
        "Retraining {params.runs} to audit them"
    script:
        "../../scripts/audit.py"


rule audit:
    input:
        table=paths.audit_file(EXPERIMENT, "audit.csv"),
        html=paths.audit_file(EXPERIMENT, "audit.html"),
    output:
        passed=paths.audit_file(EXPERIMENT, "passed.txt"),
    log:
        paths.log_file(EXPERIMENT, "audit_verdict"),
    conda:
        "../../envs/analysis.yaml"
    message:
        f"Checking the audit of {EXPERIMENT}"
    script:
        "../../scripts/audit_verdict.py"
