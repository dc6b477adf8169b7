"""The `runbook` command (layer 7): main (the entry point), run (the notebook runner), evidence."""
