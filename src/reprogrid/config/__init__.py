"""The configuration: layers read, merged, typed and checked before anything runs.

`layers` (files read strictly, merged, the `Resolution`), `schema` (the JSON schema,
specialised for a task), `checks` (everything a schema cannot say), `data` (the raw data a
config names), `resolve` (the precedence of layers) and `errors` (each refusal worded as one
line). May import `datasets`, `record`, `plan` and `tasks`.
"""
