"""Faults of the health check (notebooks/health_check.ipynb): a red part of deep health.

- `redis-down`: Redis stopped; /health/deep shows redis red.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from runbook.sandbox.faults._registry import Fault, register, start_and_wait

if TYPE_CHECKING:
    from runbook.sandbox.manager import Sandbox


def _redis_down(sb: Sandbox, _: str | None) -> None:
    sb.stop("redis")


def _redis_up(sb: Sandbox, _: str | None) -> None:
    start_and_wait(sb, "redis", sb.wait_redis, "redis")


register(
    Fault(
        "redis-down",
        "Stop Redis (supervisorctl stop redis): /health/deep shows redis red. "
        "Heal: start it and wait for PING.",
        _redis_down,
        _redis_up,
    )
)
