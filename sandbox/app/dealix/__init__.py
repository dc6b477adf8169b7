"""Stand-in for the Dealix API, deployed into the runbook's sandbox server."""

__version__ = "1.0.0"
