"""One module per kind of pipeline job; each is what a rule script calls."""
