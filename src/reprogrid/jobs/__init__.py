"""Jobs: one module per kind of pipeline job, each what a rule's script or command calls.

A job reads its inputs, does the work with the rooms below and writes its outputs
atomically. May import every room but `commands`.
"""
