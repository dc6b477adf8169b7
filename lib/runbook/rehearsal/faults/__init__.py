"""Faults: named, reversible breakages of a rehearsal target (the sandbox or the twin),
grouped by the scenario they rehearse; one registry for both (`registry`).

Each module here is named after the notebook whose signals its faults produce, and
registers them on import; a fault only one target can do says so (`targets`):

    database_down       postgres-down, pool-exhausted, disk-full, db-corrupt,
                        postgres-crash (sandbox), webhooks-during-outage (sandbox),
                        dlq-poison (sandbox),
                        postgres-killed (twin), cluster-corrupt (twin)
    deploy              good-deploy, bad-deploy, sentry-spike, ci-red,
                        origin-unreachable (sandbox)
    health_check        redis-down
    llm_provider_down   llm-down:PROVIDER, llm-recover:PROVIDER
    restore             stale-backups, empty-backup, corrupt-backup, slow-backup, mass-delete
    security_incident   intrusion, leaked-admin-key, partial-rotation,
                        evidence-dir-blocked (the last three sandbox)
"""

from runbook.rehearsal.faults import (  # noqa: F401 - each registers its faults on import
    database_down,
    deploy,
    health_check,
    llm_provider_down,
    restore,
    security_incident,
)
from runbook.rehearsal.faults.registry import (
    FAULTS,
    DuplicateFault,
    Fault,
    UnknownFault,
    by_target,
    canonical,
    listing,
    parse,
    register,
)

__all__ = [
    "FAULTS",
    "DuplicateFault",
    "Fault",
    "UnknownFault",
    "by_target",
    "canonical",
    "listing",
    "parse",
    "register",
]
