"""Data sets: raw files, their digests, and the prepared tensors training memory-maps.

`catalog` (the published IDX data sets and their digests), `rawfiles` (reading and checking a
raw folder while planning), `data` (running a task's `load` once and storing its tensors as
safetensors, then loading them), `loading` (a task's Datasets read batch by batch through
seeded DataLoaders, for data that do not fit in memory). May import `record`, `plan` and
`tasks`.
"""
