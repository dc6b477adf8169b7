"""Checks: what the definition of done is made of.

`session.check(...)` records a `Check`; it never raises. `session.done()`
renders them as the definition-of-done table and raises when one failed.
A check that cannot be made on this target (no fail2ban on the loopback
sandbox) is "not available": it is shown as such and never counted as passed.

Example::

    >>> c = Check("Liveness", expected="200 OK", actual="200 OK", passed=True)
    >>> c.status
    'passed'
    >>> Check("fail2ban", expected="jail active", actual="not available on this target",
    ...       passed=None).status
    'not available'
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, field
from datetime import datetime
from typing import Any

from runbook.clock import iso, utc_now

PASSED, FAILED, NOT_AVAILABLE = "passed", "failed", "not available"


@dataclass(frozen=True)
class Check:
    name: str
    expected: Any
    actual: Any
    passed: bool | None
    note: str = ""
    step: str | None = None
    at: datetime = field(default_factory=utc_now)

    @property
    def status(self) -> str:
        if self.passed is None:
            return NOT_AVAILABLE
        return PASSED if self.passed else FAILED

    def to_dict(self) -> dict[str, Any]:
        data = asdict(self)
        data["status"] = self.status
        data["at"] = iso(self.at)
        data["expected"] = _plain(self.expected)
        data["actual"] = _plain(self.actual)
        return data


def _plain(value: Any) -> Any:
    if isinstance(value, (str, int, float, bool)) or value is None:
        return value
    return str(value)


def checks_frame(checks: list[Check]):  # -> pandas.DataFrame
    """The definition-of-done table."""
    import pandas as pd

    rows = [
        {
            "check": c.name,
            "expected": str(c.expected),
            "actual": str(c.actual),
            "status": c.status,
            "note": c.note,
        }
        for c in checks
    ]
    return pd.DataFrame(rows, columns=["check", "expected", "actual", "status", "note"])
