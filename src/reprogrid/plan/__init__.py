"""The plan: which runs a config asks for, where each lives, and what code each is keyed by.

`paths` (the folder layout), `grid` and `search` (the runs), `halving` (successive halving's
rungs), `split` (the validation split's size), `fingerprint` (the code a job depends on).
Torch-free, read while Snakemake plans. May import `tasks.spec` only.
"""
