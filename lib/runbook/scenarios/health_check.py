"""Appendix A, the health check cheat sheet: every signal with its expected value.

Each signal is measured, recorded as a check (so `session.done()` fails
when one is red) and returned as one row of a table. A signal that cannot
be measured on this target (no fail2ban on the loopback sandbox) is "not
available", never "passed".

Example (in a notebook)::

    s, health = open_scenario("health_check")
    table = health.check_all()
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from runbook.ops.armor import MISSING, NOT_AVAILABLE, Piece
from runbook.ops.armor import summary as armor_summary
from runbook.ops.fail2ban import jail_status
from runbook.scenarios._base import Scenario

if TYPE_CHECKING:
    import pandas as pd


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
        """Measure every signal of appendix A; one failing probe never hides the others."""
        import pandas as pd

        s = self.s
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
