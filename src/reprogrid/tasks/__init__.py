"""Tasks: the contract a research question plugs into, and the built-in tasks.

`spec` reads what a task file declares without running it (planning); `runtime` imports it
for a job and checks every call; `builtin/` holds the tasks reprogrid ships, written to the
same contract as a user's. May import `reprogrid.data`, `reprogrid.models` and the ground
floor (`atomic`, `paths`); nothing here imports the training loop or the analysis.
"""
