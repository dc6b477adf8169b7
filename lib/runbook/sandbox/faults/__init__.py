"""Faults: named, reversible breakages of the sandbox, grouped by the scenario they rehearse.

The registry (`Fault`, `register`, `parse`) is `_registry`; each module here is
named after the notebook whose signals its faults produce, and registers them
on import:

    database_down       postgres-down, pool-exhausted, postgres-crash, disk-full,
                        db-corrupt, webhooks-during-outage, dlq-poison
    deploy              good-deploy, bad-deploy, sentry-spike, ci-red (deploy and rollback)
    health_check        redis-down
    llm_provider_down   llm-down, llm-recover
    restore             stale-backups, empty-backup, corrupt-backup, mass-delete
                        (restore_drill and restore_incident)
    security_incident   intrusion, leaked-admin-key, partial-rotation,
                        evidence-dir-blocked
"""

from runbook.sandbox.faults import (  # noqa: F401 - each registers its faults on import
    database_down,
    deploy,
    health_check,
    llm_provider_down,
    restore,
    security_incident,
)
from runbook.sandbox.faults._registry import FAULTS, Fault, UnknownFault, canonical, parse, register

__all__ = ["FAULTS", "Fault", "UnknownFault", "canonical", "parse", "register"]
