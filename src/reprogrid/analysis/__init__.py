"""Analysis: from finished runs to a conclusion.

`collect` (runs.csv and histories from run folders, refusing damaged ones), `stats`
(summaries across seeds, tests and effect sizes), `plots` (seaborn figures), `reporting`
(Markdown, LaTeX and HTML), `audit` (retraining a sample to check its bytes). May import
`record`, `plan` and `tasks`.
"""
