"""Evidence (a layer above core, below safety): run history and postmortem drafts, read from the
run records; the review scenario reads the runs through `history.load`.

Sealing and verifying a run folder is runbook.core.seal: the session seals what a dead run left.
"""
