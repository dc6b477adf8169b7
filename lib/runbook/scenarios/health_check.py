"""Appendix A, the health check cheat sheet: every signal with its expected value.

Each signal is measured, recorded as a check (so `session.done()` fails
when one is red) and returned as one row of a table. A signal that cannot
be measured on this target (no fail2ban on the loopback sandbox) is "not
available", never "passed".

On a fleet (a profile with an inventory) every signal is measured on every
host whose role has it, all hosts at once (`s.on`, one reused connection
each), and the service-wide ones through the load balancer once; the result
is a host x signal table (`fleet_table`), and record.json's `hosts` holds
each host's checks:

    signal           lb1  api1  api2  db1   through the load balancer
    Liveness         -    ok    ok    -     ok
    Service status   -    ok    ok    -     -
    PostgreSQL       -    -     -     ok    -

Example (in a notebook)::

    table = health.check_all(s)
    table
"""

from __future__ import annotations

from collections.abc import Callable
from typing import TYPE_CHECKING, Any

from runbook.ops.api import on_host
from runbook.ops.armor import MISSING, NOT_AVAILABLE
from runbook.ops.armor import summary as armor_summary
from runbook.ops.fail2ban import jail_status
from runbook.scenarios._base import Scenario

if TYPE_CHECKING:
    import pandas as pd

    from runbook.session import Session
    from runbook.session.fleet import HostView

GREEN = "green"


def _row(
    s: Session | HostView,
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


def service_status(s: Session | HostView) -> dict[str, Any]:
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


def fail2ban(s: Session | HostView) -> dict[str, Any]:
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


def nginx(s: Session | HostView) -> dict[str, Any]:
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


def armor(s: Session | HostView) -> dict[str, Any]:
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


# ------------------------------------------------------------------ a fleet
# the load balancer's name for a check measured through it, in the host x signal table
THROUGH_LB = "through the load balancer"


def _unit(role: str, signal: str) -> Callable[[HostView], dict[str, Any]]:
    """A service's systemd status on the host (PostgreSQL on db hosts, Redis on redis)."""

    def measure(h: HostView) -> dict[str, Any]:
        st = h.services.status(role)
        return _row(h, signal, f"systemctl status {st.name}", "active (running)", st.words,
                    st.active)  # fmt: skip

    return measure


def _liveness_on(h: HostView) -> dict[str, Any]:
    status, body = on_host(h, "/health")
    sha = body.get("sha", "?") if isinstance(body, dict) else "?"
    return _row(h, "Liveness", "curl -sf --resolve <api>:443:127.0.0.1 .../health", "200 OK",
                f"{status}", status == 200, f"sha {sha}")  # fmt: skip


def _deep_health_on(h: HostView) -> dict[str, Any]:
    status, body = on_host(h, "/health/deep")
    body = body if isinstance(body, dict) else {}
    parts = {
        k: (body.get(k) or {}).get("status", "missing")
        for k in ("postgres", "redis", "llm_providers")
    }
    red = {k: v for k, v in parts.items() if v != GREEN}
    note = "; ".join(f"{k}: {(body.get(k) or {}).get('detail', '')}" for k in red)
    return _row(h, "Deep health", "curl -sf --resolve <api>:443:127.0.0.1 .../health/deep",
                "postgres + redis + llm_providers green", _pairs(parts), not red and status == 200,
                note)  # fmt: skip


def _fail2ban_if_any(h: HostView) -> dict[str, Any] | None:
    return fail2ban(h) if h.profile.services.fail2ban else None


# the signals measured on each host, by the role groups that have them (in table order)
HOST_SIGNALS: list[tuple[str, tuple[str, ...], Callable[[HostView], dict[str, Any] | None]]] = [
    ("Liveness", ("api",), _liveness_on),
    ("Deep health", ("api",), _deep_health_on),
    ("Service status", ("api",), service_status),
    ("fail2ban", ("lb", "api", "db", "redis"), _fail2ban_if_any),
    ("Nginx", ("lb", "api"), nginx),
    ("Armor", ("api",), armor),
    ("PostgreSQL", ("db",), _unit("postgres", "PostgreSQL")),
    ("Redis", ("redis",), _unit("redis", "Redis")),
]
# measured once, through the load balancer (the service as its users see it)
LB_SIGNALS: list[tuple[str, Callable[[Session], dict[str, Any]]]] = [
    ("Liveness", liveness),
    ("Deep health", deep_health),
    ("CI status", ci_status),
    ("DLQ depth", dlq_depth),
    ("Pending approvals", pending_approvals),
]


def _on_host(h: HostView) -> list[dict[str, Any]]:
    """Every signal of this host's roles, one after the other on its connection."""
    rows = []
    groups = set(h.host.groups)
    for name, roles, fn in HOST_SIGNALS:
        if not groups & set(roles):
            continue
        row = None
        # refusals pass through and stop the run; any other error is this signal's
        with h.s.attempt() as a:
            row = fn(h)
        if a.error is not None:
            # a signal we could not even measure is red, with the reason
            row = _row(h, name, "", "measurable", "error", False, str(a.error)[:300])
        if row is not None:
            rows.append({"host": h.name, **row})
    return rows


def _through_lb(s: Session) -> list[dict[str, Any]]:
    rows = []
    for name, fn in LB_SIGNALS:
        with s.attempt() as a:
            row = fn(_Through(s))
            rows.append({"host": THROUGH_LB, **row})
        if a.error is not None:
            row = _row(_Through(s), name, "", "measurable", "error", False, str(a.error)[:300])
            rows.append({"host": THROUGH_LB, **row})
    return rows


class _Through:
    """The session, with each check named "<signal> @ through the load balancer"."""

    def __init__(self, s: Session):
        self._s = s

    def __getattr__(self, name: str) -> Any:
        return getattr(self._s, name)

    def check(self, name: str, **kw: Any) -> Any:
        return self._s.check(f"{name} @ {THROUGH_LB}", **kw)


def check_fleet(s: Session) -> pd.DataFrame:
    """Every signal on every host at once, plus through the load balancer: a host x signal table.

    The hosts' signals run concurrently (one fan-out over every host, each on
    its own connection) beside the load balancer's; a host that could not be
    reached is red in every signal of its role.
    """
    from concurrent.futures import ThreadPoolExecutor

    rows: list[dict[str, Any]] = []
    with s.step("Signals on every host"):
        s.verify_target()
        # HTTP through the load balancer in one thread, SSH to every host in the fan-out's
        with ThreadPoolExecutor(1, thread_name_prefix="runbook-health-lb") as pool:
            through = pool.submit(_through_lb, s)
            fan = s.on(list(s.fleet.hosts), lambda h: rows.extend(_on_host(h)))
            lb_rows = through.result()  # its error, if any, is raised here
        for host, run in fan.hosts.items():
            if run.outcome != "ok":
                # the host could not be measured at all (SSH down): red, with the reason
                rows.append({"host": host, **_row(s.at(host), "Reachable", "ssh", "answers",
                             "error", False, run.error or run.outcome)})  # fmt: skip
    return fleet_table(rows + lb_rows, list(s.fleet.hosts))


def fleet_table(rows: list[dict[str, Any]], hosts: list[str]) -> pd.DataFrame:
    """The host x signal table: one row per signal, one column per host and the load balancer;
    each cell the check's status, "-" where the host's role has no such signal."""
    import pandas as pd

    order = [n for n, _r, _f in HOST_SIGNALS] + [n for n, _f in LB_SIGNALS] + ["Reachable"]
    signals = [n for n in dict.fromkeys(order) if any(r["signal"] == n for r in rows)]
    cols = [*hosts, THROUGH_LB]
    cells = {(r["signal"], r["host"]): r["status"] for r in rows}
    data = [[cells.get((sig, h), "-") for h in cols] for sig in signals]
    return pd.DataFrame(data, index=pd.Index(signals, name="signal"), columns=cols)


class HealthCheck(Scenario):
    """Appendix A, the health check: every signal in one table. Read-only.

    Example (in a notebook)::

        s, health = open_scenario("health_check")
        health.check_all()
        s.done()
    """

    def check_all(self) -> pd.DataFrame:
        """Every signal of appendix A, each in a step of its own; on a fleet, the host x
        signal table (every host at once, and through the load balancer)."""
        if self.s.is_fleet:
            return check_fleet(self.s)
        return check_all(self.s)
