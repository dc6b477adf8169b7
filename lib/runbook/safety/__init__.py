"""Safety (layer 2): the shell reader, the runbook's guards, the change check and the host lock.
Imports the vocabulary and core only."""
