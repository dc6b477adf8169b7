"""Dealix runbook library."""
