"""The tasks reprogrid ships, each one file written to the contract of docs/tasks.md."""
