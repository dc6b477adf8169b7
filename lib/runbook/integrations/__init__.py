"""Integrations (layer between the tooling and the command line): the runbook run by other engines.

`runbook.integrations.schedule` says what may be scheduled and how a run's exit
code reads as an engine's state; it needs nothing beyond the library.
`runbook.integrations.prefect_flow` is the Prefect 3 flow and its deployments
(the optional extra: `pip install .[prefect]`). Both run `runbook run` as a
subprocess and never papermill themselves, so every guarantee of the runner
(the lock, the record, the seal, the notifications) holds for a scheduled run.
"""
