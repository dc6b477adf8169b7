"""The clock (layer 0): UTC now, the ISO form every record uses, and the one timestamp reader.

Every module reads times through `parse_time`, so an evidence timestamp, a
status page's, a database's and an operator's parameter mean the same thing.

Example::

    >>> iso(parse_time("2026-11-27T08:00:00Z"))
    '2026-11-27T08:00:00.000Z'
"""

from __future__ import annotations

import time
from collections.abc import Callable
from datetime import UTC, datetime
from typing import Any


def utc_now() -> datetime:
    """The current time, aware, in UTC."""
    return datetime.now(UTC)


def iso(ts: datetime | None) -> str | None:
    """A record's timestamp: ISO 8601, milliseconds, ``Z``.

    >>> iso(datetime(2026, 11, 27, 8, tzinfo=UTC))
    '2026-11-27T08:00:00.000Z'
    """
    return ts.isoformat(timespec="milliseconds").replace("+00:00", "Z") if ts else None


def parse_time(value: Any) -> datetime | None:
    """An aware UTC datetime from an ISO string (``Z`` or a space allowed) or a datetime.

    A naive time is taken as UTC; text that is not a time gives None.

    >>> parse_time("2026-11-27T08:00:00Z").isoformat()
    '2026-11-27T08:00:00+00:00'
    >>> parse_time("2026-11-27 10:00:00+02:00").isoformat()
    '2026-11-27T08:00:00+00:00'
    >>> parse_time("2026-11-27") .isoformat()
    '2026-11-27T00:00:00+00:00'
    >>> parse_time(None) is None, parse_time("soon") is None
    (True, True)
    """
    if value is None or value == "":
        return None
    if isinstance(value, datetime):
        ts = value
    else:
        try:
            ts = datetime.fromisoformat(str(value).strip().replace("Z", "+00:00"))
        except ValueError:
            return None
    return ts.replace(tzinfo=UTC) if ts.tzinfo is None else ts.astimezone(UTC)


def wait_for(
    probe: Callable[[], Any],
    seconds: float,
    interval: float = 1.0,
    *,
    give_up: Callable[[], bool] | None = None,
    on_poll: Callable[[bool, float], None] | None = None,
) -> tuple[bool, float]:
    """Call `probe()` until it is truthy, `seconds` pass, or `give_up()` says waiting is
    pointless: (ok, seconds waited).

    The one wait loop: it probes once more at the deadline, so a zero timeout still looks once.
    `on_poll(ok, waited)` is told each poll's answer, for a progress line
    (runbook.core.output.Progress): a wait of more than a few seconds is never silent.

    >>> wait_for(lambda: True, 0)[0], wait_for(lambda: False, 0)[0]
    (True, False)
    >>> wait_for(lambda: False, 60, give_up=lambda: True)[0]
    False
    >>> wait_for(lambda: False, 0, on_poll=lambda ok, s: print("polled:", ok))[0]
    polled: False
    False
    """
    t0 = time.monotonic()
    while True:
        ok = bool(probe())
        if on_poll is not None:
            on_poll(ok, time.monotonic() - t0)
        if ok:
            return True, time.monotonic() - t0
        if time.monotonic() - t0 >= seconds or (give_up is not None and give_up()):
            return False, time.monotonic() - t0
        time.sleep(interval)
