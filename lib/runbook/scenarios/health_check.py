"""Appendix A, the health check cheat sheet: every signal with its expected value.

Each signal is measured, recorded as a check (so `session.done()` fails
when one is red) and returned as one row of a table. A signal that cannot
be measured on this target (no fail2ban on the loopback sandbox) is "not
available", never "passed".

On a fleet (a profile with an inventory) every signal is measured on every
host whose role has it, all hosts at once (`s.on`, one reused connection
each), and the service-wide ones through the load balancer once, beside
them; the result is a signal x host table (`fleet_table`), and record.json's
`hosts` holds each host's checks:

    signal           lb1     api1    api2    db1     through the load balancer
    Liveness         -       passed  passed  -       passed
    Service status   -       passed  passed  -       -
    PostgreSQL       -       -       -       passed  -

Example (in a notebook)::

    s, health = open_scenario("health_check")
    table = health.check_all()
"""

from __future__ import annotations

from collections.abc import Callable
from typing import TYPE_CHECKING, Any

from runbook.ops.api import on_host
from runbook.ops.armor import MISSING, NOT_AVAILABLE, Piece
from runbook.ops.armor import summary as armor_summary
from runbook.ops.fail2ban import jail_status
from runbook.scenarios._base import Scenario

if TYPE_CHECKING:
    import pandas as pd

    from runbook.session import Session
    from runbook.session.fleet import HostView


GREEN = "green"


def pairs(values: dict[str, Any]) -> str:
    """A mapping on one line, for a check's `actual` (pure).

    >>> pairs({"postgres": "green", "redis": "red"})
    'postgres green, redis red'
    """
    return ", ".join(f"{k} {v}" for k, v in values.items())


def armor_verdict(pieces: list[Piece]) -> tuple[bool | None, str]:
    """(passed, note) of the armor signal: a missing piece is red, one the platform does not
    allow makes the signal "not available", never passed (pure).

    >>> armor_verdict([Piece("hooks", MISSING, "gone")])
    (False, 'hooks: gone')
    >>> armor_verdict([Piece("chattr", NOT_AVAILABLE, "no +i here")])
    (None, 'chattr: no +i here')
    """
    missing = [p for p in pieces if p.status == MISSING]
    unavailable = [p for p in pieces if p.status == NOT_AVAILABLE]
    passed: bool | None = False if missing else (None if unavailable else True)
    note = "; ".join(f"{p.name}: {p.detail}" for p in missing + unavailable)
    return passed, note or f"{len(pieces)} pieces holding"


#: appendix A's signals in its order: the step's name and the method that measures it
SIGNALS: list[tuple[str, str]] = [
    ("Liveness", "liveness"),
    ("Deep health", "deep_health"),
    ("CI status", "ci_status"),
    ("DLQ depth", "dlq_depth"),
    ("Pending approvals", "pending_approvals"),
    ("Service status", "service_status"),
    ("fail2ban", "fail2ban"),
    ("Nginx", "nginx"),
    ("Armor", "armor"),
]


class HealthCheck(Scenario):
    """Appendix A, the health check: every signal in one table, one step each. Read-only.

    Example (in a notebook)::

        s, health = open_scenario("health_check")
        health.check_all()
        s.done()
    """

    def check_all(self) -> pd.DataFrame:
        """Measure every signal of appendix A; one failing probe never hides the others.

        On a fleet: the signal x host table (`fleet_table`), every host at once."""
        import pandas as pd

        s = self.s
        if s.is_fleet:
            return self._check_fleet()
        rows = []
        for name, method in SIGNALS:
            with s.step(f"Signal: {name}"):
                with s.attempt() as a:
                    rows.append(getattr(self, method)())
                if a.error is not None:
                    # a signal we could not even measure is red, with the reason
                    rows.append(
                        self._row(name, "", "measurable", "error", False, str(a.error)[:300])
                    )
        return pd.DataFrame(rows)

    def _row(
        self,
        signal: str,
        command: str,
        expected: str,
        actual: Any,
        passed: bool | None,
        note: str = "",
    ) -> dict[str, Any]:
        """Record the signal as a check; its row of the table."""
        c = self.s.check(signal, expected=expected, actual=actual, passed=passed, note=note)
        return {
            "signal": signal,
            "runbook command": command,
            "expected": expected,
            "actual": c.actual,
            "status": c.status,
            "note": c.note,
        }

    def liveness(self) -> dict[str, Any]:
        r = self.s.api.health()
        sha = (r.json() or {}).get("sha", "?")
        return self._row(
            "Liveness",
            "curl -sf https://api.dealix.me/health",
            "200 OK",
            f"{r.status}",
            r.status == 200,
            f"sha {sha}",
        )

    def deep_health(self) -> dict[str, Any]:
        body = self.s.api.deep_health()
        parts = {
            k: (body.get(k) or {}).get("status", "missing")
            for k in ("postgres", "redis", "llm_providers")
        }
        red = {k: v for k, v in parts.items() if v != GREEN}
        note = "; ".join(f"{k}: {(body.get(k) or {}).get('detail', '')}" for k in red)
        return self._row(
            "Deep health",
            "curl -sf https://api.dealix.me/health/deep",
            "postgres + redis + llm_providers green",
            pairs(parts),
            not red,
            note,
        )

    def ci_status(self) -> dict[str, Any]:
        green, runs = self.s.github.ci_green(3)
        actual = ", ".join(f"{r.status}/{r.conclusion}" for r in runs.itertuples()) or "no runs"
        return self._row(
            "CI status",
            f"gh run list --repo {self.s.profile.github.repo} --limit 3",
            "success",
            actual,
            green,
        )

    def dlq_depth(self) -> dict[str, Any]:
        queues = self.s.api.dlq_stats().get("queues", {})
        total = sum(int(v) for v in queues.values())
        return self._row(
            "DLQ depth",
            "GET /api/v1/admin/dlq/stats",
            "0 across all queues",
            pairs(queues),
            total == 0 and bool(queues),
        )

    def pending_approvals(self) -> dict[str, Any]:
        limit = self.s.profile.targets.pending_approvals_max
        n = int(self.s.api.pending_approvals().get("count", 0))
        return self._row(
            "Pending approvals", "GET /api/v1/admin/approvals/pending", f"< {limit}", n, n < limit
        )

    def service_status(self) -> dict[str, Any]:
        st = self.s.services.status("api")
        return self._row(
            "Service status",
            f"systemctl status {st.name}",
            "active (running)",
            st.words,
            st.active,
            f"pid {st.pid}" if st.pid else st.detail,
        )

    def fail2ban(self) -> dict[str, Any]:
        s = self.s
        cmd = f"fail2ban-client status {s.profile.security.fail2ban_jail}"
        if not s.profile.services.fail2ban:
            return self._row(
                "fail2ban",
                cmd,
                "jail active",
                "not available on this target",
                None,
                f"no fail2ban on {s.env} (services.fail2ban is empty in its profile)",
            )
        r, status = jail_status(s)
        active = status is not None
        return self._row(
            "fail2ban",
            cmd,
            "jail active",
            "jail active" if active else r.status,
            active,
            f"currently banned: {status.get('currently_banned', '?')}" if status else r.tail(3),
        )

    def nginx(self) -> dict[str, Any]:
        if not self.s.profile.services.nginx:
            return self._row(
                "Nginx",
                "systemctl status nginx",
                "active (running)",
                "not available on this target",
                None,
            )
        st = self.s.services.status("nginx")
        return self._row(
            "Nginx", f"systemctl status {st.name}", "active (running)", st.words, st.active
        )

    def armor(self) -> dict[str, Any]:
        """The server's armor (runbook.ops.armor), read back: every piece holding.

        A changing scenario's preflight installs a missing piece again.
        """
        pieces = self.s.armor.verify()
        passed, note = armor_verdict(pieces)
        return self._row(
            "Armor",
            "lsattr -d <do-not-touch files>; git hooks; origin protection",
            "every piece holding",
            armor_summary(pieces),
            passed,
            note,
        )

    # ------------------------------------------------------------------ a fleet
    def _check_fleet(self) -> pd.DataFrame:
        """Every signal on every host at once, plus through the load balancer.

        One fan-out over every host (each on its own connection, its role's
        signals one after the other) beside a thread measuring the service-wide
        signals through the load balancer. A host whose fan-out step itself
        failed is red in a "Reachable" row.
        """
        from concurrent.futures import ThreadPoolExecutor

        s = self.s
        rows: list[dict[str, Any]] = []
        with s.step("Signals on every host"):
            s.verify_target()
            # HTTP through the load balancer in one thread, SSH to every host in the fan-out's
            with ThreadPoolExecutor(1, thread_name_prefix="runbook-health-lb") as pool:
                lb = HealthCheck(_Through(s))  # type: ignore[arg-type]
                through = pool.submit(_measure, lb, LB_SIGNALS)
                fan = s.on(list(s.fleet.hosts), lambda h: rows.extend(_on_host(h)))
                lb_rows = through.result()  # its error, if any, is raised here
            for host, run in fan.hosts.items():
                if run.outcome != "ok":
                    row = HealthCheck(s.at(host))._row(  # type: ignore[arg-type]
                        "Reachable", "ssh", "answers", "error", False, run.error or run.outcome
                    )
                    rows.append({"host": host, **row})
        return fleet_table(rows + [{"host": THROUGH_LB, **r} for r in lb_rows], list(s.fleet.hosts))


# ------------------------------------------------------------------ a fleet
# the load balancer's name for a check measured through it, in the signal x host table
THROUGH_LB = "through the load balancer"
Signal = Callable[[HealthCheck], dict[str, Any]]


def _liveness_on_host(hc: HealthCheck) -> dict[str, Any]:
    status, body = on_host(hc.s, "/health")
    sha = body.get("sha", "?") if isinstance(body, dict) else "?"
    return hc._row(
        "Liveness",
        "curl -sf --resolve <api>:443:127.0.0.1 https://api.dealix.me/health",
        "200 OK",
        f"{status}",
        status == 200,
        f"sha {sha}",
    )


def _deep_health_on_host(hc: HealthCheck) -> dict[str, Any]:
    status, body = on_host(hc.s, "/health/deep")
    body = body if isinstance(body, dict) else {}
    parts = {
        k: (body.get(k) or {}).get("status", "missing")
        for k in ("postgres", "redis", "llm_providers")
    }
    red = {k: v for k, v in parts.items() if v != GREEN}
    note = "; ".join(f"{k}: {(body.get(k) or {}).get('detail', '')}" for k in red)
    return hc._row(
        "Deep health",
        "curl -sf --resolve <api>:443:127.0.0.1 https://api.dealix.me/health/deep",
        "postgres + redis + llm_providers green",
        pairs(parts),
        not red and status == 200,
        note,
    )


def _unit(role: str, signal: str) -> Signal:
    """A service's systemd status on the host (PostgreSQL on db hosts, Redis on redis)."""

    def measure(hc: HealthCheck) -> dict[str, Any]:
        st = hc.s.services.status(role)
        return hc._row(
            signal, f"systemctl status {st.name}", "active (running)", st.words, st.active
        )

    return measure


# measured once, through the load balancer (the service as its users see it)
LB_SIGNALS: list[tuple[str, Signal]] = [
    ("Liveness", HealthCheck.liveness),
    ("Deep health", HealthCheck.deep_health),
    ("CI status", HealthCheck.ci_status),
    ("DLQ depth", HealthCheck.dlq_depth),
    ("Pending approvals", HealthCheck.pending_approvals),
]
# measured on each host, by the role groups that have them (in table order)
HOST_SIGNALS: list[tuple[str, tuple[str, ...], Signal]] = [
    ("Liveness", ("api",), _liveness_on_host),
    ("Deep health", ("api",), _deep_health_on_host),
    ("Service status", ("api",), HealthCheck.service_status),
    ("fail2ban", ("lb", "api", "db", "redis"), HealthCheck.fail2ban),
    ("Nginx", ("lb", "api"), HealthCheck.nginx),
    ("Armor", ("api",), HealthCheck.armor),
    ("PostgreSQL", ("db",), _unit("postgres", "PostgreSQL")),
    ("Redis", ("redis",), _unit("redis", "Redis")),
]


def _measure(hc: HealthCheck, signals: list[tuple[str, Signal]]) -> list[dict[str, Any]]:
    """Each signal in turn, as `hc` sees it (a host's view, or through the load balancer)."""
    rows = []
    for name, fn in signals:
        row = None
        # refusals pass through and stop the run; any other error is this signal's
        with hc.s.attempt() as a:
            row = fn(hc)
        if a.error is not None:
            # a signal we could not even measure is red, with the reason
            row = hc._row(name, "", "measurable", "error", False, str(a.error)[:300])
        rows.append(row)
    return rows


def _on_host(h: HostView) -> list[dict[str, Any]]:
    """Every signal of this host's roles, one after the other on its connection; its checks
    are named "<signal> @ <host>" (the view's `check`)."""
    groups = set(h.host.groups)
    mine = [(n, fn) for n, roles, fn in HOST_SIGNALS if groups & set(roles)]
    return [{"host": h.name, **r} for r in _measure(HealthCheck(h), mine)]  # type: ignore[arg-type]


class _Through:
    """The session, with each check named "<signal> @ through the load balancer"."""

    def __init__(self, s: Session):
        self._s = s

    def __getattr__(self, name: str) -> Any:
        return getattr(self._s, name)

    def check(self, name: str, **kw: Any) -> Any:
        return self._s.check(f"{name} @ {THROUGH_LB}", **kw)


def fleet_table(rows: list[dict[str, Any]], hosts: list[str]) -> pd.DataFrame:
    """The signal x host table: one row per signal, a column per host and one for the load
    balancer; each cell the check's status, "-" where the host's role has no such signal.

    >>> fleet_table([{"signal": "Nginx", "host": "lb1", "status": "passed"}], ["lb1", "db1"])
    ...  # doctest: +NORMALIZE_WHITESPACE
                lb1 db1 through the load balancer
    signal
    Nginx    passed   -                         -
    """
    import pandas as pd

    order = [n for n, _r, _f in HOST_SIGNALS] + [n for n, _f in LB_SIGNALS] + ["Reachable"]
    signals = [n for n in dict.fromkeys(order) if any(r["signal"] == n for r in rows)]
    cols = [*hosts, THROUGH_LB]
    cells = {(r["signal"], r["host"]): r["status"] for r in rows}
    data = [[cells.get((sig, h), "-") for h in cols] for sig in signals]
    return pd.DataFrame(data, index=pd.Index(signals, name="signal"), columns=cols)
