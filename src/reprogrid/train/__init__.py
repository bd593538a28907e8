"""Training: the loop reprogrid owns around a task, and what keeps a run honest.

`training` (one run's story: set up, restore or start, epochs, finish), `recipe` (seeding,
determinism, the epoch's order, optimisers and schedules), `splits` (the data a run sees, on
its device), `state` (what a checkpoint holds), `outputs` (what a finished run writes),
`checkpoint` (files that cannot run code), `devices` (threads and GPUs), `models` (the
built-in task's architectures), `eager` (the train job without the compiler), `claim` (one
writer per run folder), `lifeline` (a local job dies with its Snakemake). May import
`datasets`, `record`, `plan` and `tasks`.
"""
