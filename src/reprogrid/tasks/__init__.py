"""Tasks: the contract a research question plugs into, and the built-in tasks.

`spec` reads what a task file declares without running it (planning) and owns the metric
table (names, directions, the best-epoch rule); `runtime` imports a task file for a job and
checks every call. The ground floor: imports nothing of reprogrid. `builtin/` holds the tasks
reprogrid ships, loaded by file like a user's; they may import `datasets` and `train.models`.
"""
