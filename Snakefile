from snakemake.utils import min_version

min_version("9.0")


report: "workflow/report/workflow.rst"


include: "workflow/rules/common.smk"


# With --software-deployment-method apptainer every rule runs in this image (key `container`).
container: config["container"]


include: "workflow/rules/data.smk"
include: "workflow/rules/train.smk"


# Successive halving's rules exist only when the config asks for it: every rule more is one
# more output pattern for Snakemake to try on every file of a large grid.
if RUNGS:

    include: "workflow/rules/search.smk"


include: "workflow/rules/aggregate.smk"
include: "workflow/rules/report.smk"
include: "workflow/rules/audit.smk"
include: "workflow/rules/track.smk"
include: "workflow/rules/sync.smk"


rule all:
    default_target: True
    input:
        debug_scratch,
        summary_targets(),
        report_targets(),
        search_outputs("rungs.csv"),
        search_report_targets(),
        TRACKING_TARGETS,
