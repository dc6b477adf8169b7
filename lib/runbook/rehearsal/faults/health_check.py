"""Faults of the health check (notebooks/health_check.ipynb): a red part of deep health.

- `redis-down`: Redis stopped (supervisorctl stop redis; on the twin systemctl stop
  redis-server); /health/deep shows redis red.
"""

from __future__ import annotations

from runbook.rehearsal.faults.registry import Fault, register
from runbook.rehearsal.target import Target


def _redis_down(t: Target, _: str | None) -> None:
    t.service_stop("redis")


def _redis_up(t: Target, _: str | None) -> None:
    t.service_start("redis")
    t.wait_deep("redis", "green")


register(
    Fault(
        "redis-down",
        "Stop Redis: /health/deep shows redis red. Heal: start it and wait for PING and "
        "deep health redis green.",
        _redis_down,
        _redis_up,
    )
)
