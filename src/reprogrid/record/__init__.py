"""The record: what every run says of itself, and how files reach the disk.

`atomic` (writes that honour the umask and leave nothing half-written), `logs` (the log
lines `status` reads back), `provenance` (the record's shape, reading it back, checking that
a run's files come from one job), `capture` (the machine, checkout and packages a record
names) and `damage` (whether a finished run's files are whole and its job's). May import
`plan`.
"""
