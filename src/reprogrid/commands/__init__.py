"""Commands: the `reprogrid` command line and what it runs outside Snakemake.

`cli` (parsing and dispatch), `status` (where each run of a grid stands) and `status_view`
(the screen and `--watch`), `snakeconfig` (a config resolved as Snakemake resolves it),
`compare`, `reproduce`, `remote` (rclone) and `scaffold` (`reprogrid task new`). The top
floor: may import every room but `jobs`.
"""
