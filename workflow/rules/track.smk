# Export of finished runs to W&B and MLflow (config key `tracking`); no job when none is enabled.
import os

from reprogrid import tracking

try:
    TRACKERS = tracking.check(
        config["tracking"],
        {**tracking.read_dotenv(tracking.DOTENV), **os.environ},
        packages=not workflow.deployment_settings.deployment_method,
    )
except tracking.TrackingError as error:
    sys.exit(f"reprogrid: {error}")

# What the default target adds: one export record per enabled tracker, nothing when none is.
TRACKING_TARGETS = [tracking.record_path(EXPERIMENT, name) for name in TRACKERS]


# On the machine running Snakemake: compute nodes often cannot reach a tracker.
localrules:
    track,


rule track:
    input:
        metrics=lambda wildcards: run_outputs("metrics.json"),
        history=lambda wildcards: run_outputs("history.csv"),
        provenance=lambda wildcards: run_outputs("provenance.json"),
        models=lambda wildcards: (
            run_outputs("model.pt") if config["tracking"]["log_model"] else []
        ),
    output:
        record=tracking.record_path(EXPERIMENT, "{tracker}"),
    log:
        paths.log_file(EXPERIMENT, "track_{tracker}"),
    wildcard_constraints:
        tracker="|".join(tracking.TRACKERS),
    conda:
        "../../envs/track.yaml"
    params:
        experiment=EXPERIMENT,
        settings=config["tracking"],
        axes=grid.run_axes(config),
    message:
        "Exporting the runs of {params.experiment} to {wildcards.tracker}"
    script:
        "../../scripts/track.py"
