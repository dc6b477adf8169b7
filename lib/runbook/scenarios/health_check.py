"""Appendix A, the health check cheat sheet: every signal with its expected value.

Each signal is measured, recorded as a check (so `session.done()` fails
when one is red) and returned as one row of a table. A signal that cannot
be measured on this target (no fail2ban on the loopback sandbox) is "not
available", never "passed".

Example (in a notebook)::

    table = health.check_all(s)
    table
"""

from __future__ import annotations

from collections.abc import Callable
from typing import TYPE_CHECKING, Any

from runbook.ops.armor import MISSING, NOT_AVAILABLE
from runbook.ops.armor import summary as armor_summary
from runbook.ops.fail2ban import jail_status
from runbook.scenarios._base import Scenario

if TYPE_CHECKING:
    import pandas as pd

    from runbook.session import Session

GREEN = "green"


def _row(
    s: Session,
    signal: str,
    command: str,
    expected: str,
    actual: Any,
    passed: bool | None,
    note: str = "",
) -> dict[str, Any]:
    c = s.check(signal, expected=expected, actual=actual, passed=passed, note=note)
    return {
        "signal": signal,
        "runbook command": command,
        "expected": expected,
        "actual": c.actual,
        "status": c.status,
        "note": c.note,
    }


def liveness(s: Session) -> dict[str, Any]:
    r = s.api.health()
    return _row(
        s,
        "Liveness",
        "curl -sf https://api.dealix.me/health",
        "200 OK",
        f"{r.status}",
        r.status == 200,
        f"sha {(r.json() or {}).get('sha', '?')}",
    )


def _pairs(values: dict[str, Any]) -> str:
    """A mapping on one line, for a check's `actual`.

    >>> _pairs({"postgres": "green", "redis": "red"})
    'postgres green, redis red'
    """
    return ", ".join(f"{k} {v}" for k, v in values.items())


def deep_health(s: Session) -> dict[str, Any]:
    body = s.api.deep_health()
    parts = {
        k: (body.get(k) or {}).get("status", "missing")
        for k in ("postgres", "redis", "llm_providers")
    }
    red = {k: v for k, v in parts.items() if v != GREEN}
    note = "; ".join(f"{k}: {(body.get(k) or {}).get('detail', '')}" for k in red)
    return _row(
        s,
        "Deep health",
        "curl -sf https://api.dealix.me/health/deep",
        "postgres + redis + llm_providers green",
        _pairs(parts),
        not red,
        note,
    )


def ci_status(s: Session) -> dict[str, Any]:
    green, runs = s.github.ci_green(3)
    actual = ", ".join(f"{r.status}/{r.conclusion}" for r in runs.itertuples()) or "no runs"
    return _row(
        s,
        "CI status",
        f"gh run list --repo {s.profile.github.repo} --limit 3",
        "success",
        actual,
        green,
    )


def dlq_depth(s: Session) -> dict[str, Any]:
    queues = s.api.dlq_stats().get("queues", {})
    total = sum(int(v) for v in queues.values())
    return _row(
        s,
        "DLQ depth",
        "GET /api/v1/admin/dlq/stats",
        "0 across all queues",
        _pairs(queues),
        total == 0 and bool(queues),
    )


def pending_approvals(s: Session) -> dict[str, Any]:
    limit = s.profile.targets.pending_approvals_max
    n = int(s.api.pending_approvals().get("count", 0))
    return _row(
        s, "Pending approvals", "GET /api/v1/admin/approvals/pending", f"< {limit}", n, n < limit
    )


def service_status(s: Session) -> dict[str, Any]:
    st = s.services.status("api")
    return _row(
        s,
        "Service status",
        f"systemctl status {st.name}",
        "active (running)",
        st.words,
        st.active,
        f"pid {st.pid}" if st.pid else st.detail,
    )


def fail2ban(s: Session) -> dict[str, Any]:
    jail = s.profile.security.fail2ban_jail
    cmd = f"fail2ban-client status {jail}"
    if not s.profile.services.fail2ban:
        return _row(
            s,
            "fail2ban",
            cmd,
            "jail active",
            "not available on this target",
            None,
            f"no fail2ban on {s.env} (services.fail2ban is empty in its profile)",
        )
    r, status = jail_status(s)
    active = status is not None
    return _row(
        s,
        "fail2ban",
        cmd,
        "jail active",
        "jail active" if active else r.status,
        active,
        f"currently banned: {status.get('currently_banned', '?')}" if status else r.tail(3),
    )


def nginx(s: Session) -> dict[str, Any]:
    if not s.profile.services.nginx:
        return _row(
            s,
            "Nginx",
            "systemctl status nginx",
            "active (running)",
            "not available on this target",
            None,
        )
    st = s.services.status("nginx")
    return _row(s, "Nginx", f"systemctl status {st.name}", "active (running)", st.words, st.active)


def armor(s: Session) -> dict[str, Any]:
    """The server's armor (runbook.ops.armor), read back: every piece holding.

    A piece the platform does not allow (no immutable attribute on this
    filesystem) makes the signal "not available", never passed; a missing piece
    makes it red (a changing scenario's preflight installs it again).
    """
    pieces = s.armor.verify()
    missing = [p for p in pieces if p.status == MISSING]
    unavailable = [p for p in pieces if p.status == NOT_AVAILABLE]
    passed: bool | None = False if missing else (None if unavailable else True)
    note = "; ".join(f"{p.name}: {p.detail}" for p in missing + unavailable)
    return _row(
        s,
        "Armor",
        "lsattr -d <do-not-touch files>; git hooks; origin protection",
        "every piece holding",
        armor_summary(pieces),
        passed,
        note or f"{len(pieces)} pieces holding",
    )


SIGNALS: list[tuple[str, Callable[[Session], dict[str, Any]]]] = [
    ("Liveness", liveness),
    ("Deep health", deep_health),
    ("CI status", ci_status),
    ("DLQ depth", dlq_depth),
    ("Pending approvals", pending_approvals),
    ("Service status", service_status),
    ("fail2ban", fail2ban),
    ("Nginx", nginx),
    ("Armor", armor),
]


def check_all(s: Session) -> pd.DataFrame:
    """Measure every signal of appendix A; one failing probe never hides the others."""
    import pandas as pd

    rows = []
    for name, fn in SIGNALS:
        with s.step(f"Signal: {name}"):
            with s.attempt() as a:
                rows.append(fn(s))
            if a.error is not None:
                # a signal we could not even measure is red, with the reason
                rows.append(_row(s, name, "", "measurable", "error", False, str(a.error)[:300]))
    return pd.DataFrame(rows)


class HealthCheck(Scenario):
    """Appendix A, the health check: every signal in one table. Read-only.

    Example (in a notebook)::

        s, health = open_scenario("health_check")
        health.check_all()
        s.done()
    """

    def check_all(self) -> pd.DataFrame:
        """Every signal of appendix A, each in a step of its own."""
        return check_all(self.s)
