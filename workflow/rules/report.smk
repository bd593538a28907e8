# Figures, report tables and thesis outputs; every file the HTML report shows is flagged here.


localrules:
    figures,
    tables,


rule figures:
    input:
        histories=paths.summary_file(EXPERIMENT, "histories.csv"),
        runs=paths.summary_file(EXPERIMENT, "runs.csv"),
        summary=paths.summary_file(EXPERIMENT, "summary.csv"),
    output:
        curves_png=report_figure("curves"),
        curves_pdf=figure_pdf("curves"),
        heatmap_png=report_figure("heatmap"),
        heatmap_pdf=figure_pdf("heatmap"),
        spread_png=report_figure("spread"),
        spread_pdf=figure_pdf("spread"),
        run_figures=report(
            directory(paths.report_file(EXPERIMENT, paths.RUN_FIGURES)),
            # A run figure is named after its run id, commas for slashes; axes beyond
            # arch, lr and seed stay in `other`, so every run gets one page.
            patterns=[
                "arch={arch,[^,]+},lr={lr,[^,]+}{other,(,[a-z_]+=[^,]+)*},seed={seed,[0-9]+}.png"
            ],
            caption="../report/run_curve.rst",
            category="Runs",
            subcategory="{arch}",
            labels={
                "arch": "{arch}",
                "lr": "{lr}",
                "seed": "{seed}",
                "other axes": "{other}",
            },
        ),
    log:
        paths.log_file(EXPERIMENT, "figures"),
    conda:
        "../../envs/analysis.yaml"
    params:
        axes=grid.grid_axes(config),
        metrics=METRICS,
        metric=COMPARED_METRIC,
        code=CODE["figures"],
    message:
        f"Drawing the figures of {EXPERIMENT}"
    script:
        "../../scripts/figures.py"


rule tables:
    input:
        summary=paths.summary_file(EXPERIMENT, "summary.csv"),
        comparisons=paths.summary_file(EXPERIMENT, "comparisons.csv"),
        best=paths.summary_file(EXPERIMENT, "best.csv"),
        runs=paths.summary_file(EXPERIMENT, "runs.csv"),
        conclusion=paths.summary_file(EXPERIMENT, "conclusion.json"),
        provenance=when_decided(run_outputs, "provenance.json"),
        labbook=labbook(),
    output:
        summary_html=report_table("summary_html", "Results", "summary"),
        comparisons_html=report_table("comparisons_html", "Results", "comparisons"),
        provenance_html=report_table("provenance_html", "Provenance", "provenance"),
        reproduction_html=report_table(
            "reproduction_html", "Reproduction", "reproduction"
        ),
        labbook_html=report_table("labbook_html", "Lab book", "labbook"),
        summary_tex=thesis_file("summary_tex"),
        comparisons_tex=thesis_file("comparisons_tex"),
        summary_md=thesis_file("summary_md"),
    log:
        paths.log_file(EXPERIMENT, "tables"),
    conda:
        "../../envs/analysis.yaml"
    params:
        experiment=EXPERIMENT,
        runs=when_decided(finished_runs),
        axes=grid.grid_axes(config),
        metrics=METRICS,
        metric=COMPARED_METRIC,
        config=config,
        code=CODE["tables"],
    message:
        f"Writing the tables and texts of {EXPERIMENT}"
    script:
        "../../scripts/tables.py"
