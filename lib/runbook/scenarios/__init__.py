"""Scenarios (layer 5): one module per notebook, with the notebook's name.

notebooks/deploy.ipynb -> runbook.scenarios.deploy, notebooks/restore_drill.ipynb ->
runbook.scenarios.restore_drill, and so on."""
