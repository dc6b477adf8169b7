"""Evidence tools (layer 6): run history and postmortem drafts, read from the run records.

Sealing and verifying a run folder is runbook.core.seal: the session seals what a dead run left.
"""
