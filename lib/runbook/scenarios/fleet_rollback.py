"""Runbook scenario 2 on a fleet (notebooks/fleet_rollback.ipynb): the fleet rollback.

Back to the fleet-wide last good SHA, the one the rolling deploy recorded on
every API host before its first batch (`-p to_sha`, or read from the hosts,
which must agree): never "the previous release on each host", which after a
half-done roll is a different SHA per host. The database downgrade runs once,
first, on an API host that still has the newer code checked out (only it holds
the migrations being undone); more than one step needs `approved_by` (the
guard's one-step rule, checked in the plan before anything changes). Then the
same batches and gates as the deploy, the hosts out of rotation first. Timed
against the runbook's 5 minutes (the metric `rollback_minutes`).

Example (in a notebook)::

    s, rb = open_scenario("fleet_rollback")   # -p reason "api2 red after deploy"
    rb.announce(); rb.plan(); rb.downgrade(); rb.roll(); rb.drained(); rb.verify()
"""

from __future__ import annotations

import time
from typing import TYPE_CHECKING

from runbook.errors import Forbidden, ParameterError
from runbook.evidence.story import Summary
from runbook.scenarios._release import SHA
from runbook.scenarios._rolling import FleetRelease, RollReport, sha_table

if TYPE_CHECKING:
    from runbook.core.fanout import Serial
    from runbook.session import Session


class FleetRollback(FleetRelease):
    """Runbook scenario 2 on a fleet, one method per step; checks land in the session."""

    def __init__(
        self,
        session: Session,
        *,
        reason: str = "",
        to_sha: str | None = None,
        serial: Serial = None,
        health_wait: float | None = None,
    ):
        if not str(reason).strip():
            raise ParameterError(
                "reason is required: why we roll back (announced and recorded)",
                key="reason",
                fix="-p reason 'deep health red on api2 after the deploy of 1a2b3c4'",
            )
        if to_sha is not None and not SHA.match(str(to_sha)):
            raise ParameterError(
                f"to_sha {to_sha!r} is not a full 40-character SHA",
                key="to_sha",
                fix="pass the SHA the rolling deploy printed in its rollback command",
            )
        super().__init__(session, serial=serial, health_wait=health_wait)
        self.reason = str(reason)
        self.to_sha = to_sha
        self.t0 = time.monotonic()
        self.report: RollReport | None = None

    def announce(self) -> Summary:
        s = self.s
        with s.step("1. Announce"):
            said = f"Rolling the fleet back due to {self.reason}"
            s.evidence.append({"kind": "rollback", "event": "announce", "reason": self.reason})
            print(said)
            return Summary(said)

    def plan(self) -> Summary:
        """The fleet-wide last good SHA (every API host's `.last_good_sha` agrees, or
        `to_sha` given) and the downgrades to reach it: more than one without
        approved_by is refused here, before anything changes."""
        s = self.s
        with s.step("2. Plan: the fleet-wide last good SHA"):
            recorded = {}
            for h in self.roller.api_hosts:
                ctx = s.at(h)
                r = ctx.probe(["cat", ctx.profile.app.last_good_sha_file], warn=True,
                              label="last-good-sha")  # fmt: skip
                recorded[h] = r.stdout.strip() or None if r.ok else None
            agreed = set(recorded.values())
            if self.to_sha is None:
                if len(agreed) != 1 or None in agreed:
                    raise Forbidden(
                        "one-last-good-sha-for-the-fleet",
                        f"roll {s.env} back",
                        source="Scenario 2 on a fleet: every host goes back to one SHA",
                        why=f"the API hosts' .last_good_sha differ: {sha_table(recorded)}; "
                        "pass -p to_sha (the deploy printed it)",
                    )
                self.to_sha = next(iter(agreed))
            assert self.to_sha
            host, _current, chain = self.roller.downgrade_plan(self.to_sha)
            if chain:
                s.guards.check_downgrade(len(chain), f"alembic downgrade -{len(chain)}")
            self.report = RollReport("rollback", self.to_sha, last_good=self.to_sha)
            s.check(
                "Rollback target is one SHA for the whole fleet",
                expected="every API host to the same last good SHA",
                actual=f"{self.to_sha[:12]} (recorded: {sha_table(recorded)})",
                passed=True,
            )
            what = f"downgrade {', '.join(chain)} on {host}" if chain else "no downgrade"
            return Summary(f"back to {self.to_sha[:12]}; {what}", to_sha=self.to_sha)

    def downgrade(self) -> Summary:
        s = self.s
        with s.step("3. Downgrade first, once, with the newer code checked out"):
            assert self.report is not None and self.to_sha, "run plan() first"
            report = self.report
            s.once(
                self.roller.api_hosts,
                lambda h: self.roller.downgrade_once(report.target_sha, report),
                step="downgrade",
            )
            return Summary(report.log[-1] if report.log else "downgrade failed")

    def roll(self) -> Summary:
        s = self.s
        with s.step("4. Roll every API host to the last good SHA"):
            assert self.report is not None and self.to_sha, "run plan() first"
            drained = set(self.roller.lb.drained())
            hosts = self.roller.api_hosts
            out = [h for h in hosts if self.roller.server[h] in drained]
            order = out + [h for h in hosts if h not in out]
            self.report.log.append(f"order: {', '.join(order)}")
            self.roller._roll("rollback", self.to_sha, self.report, pull=False, order=order)
            self.report_roll(self.report)
            return Summary(f"{self.report.fan}; {sha_table(self.report.sha_by_host)}")

    def drained(self) -> Summary:
        s = self.s
        with s.step("5. Hosts still out of rotation"):
            drained = self.roller.lb.drained()
            s.check("No host out of rotation", expected="none", actual=", ".join(drained) or "none",
                    passed=not drained)  # fmt: skip
            return Summary(f"drained: {', '.join(drained) or 'none'}")

    def verify(self) -> Summary:
        """One SHA everywhere; the time against the runbook's 5 minutes."""
        s = self.s
        with s.step("6. Verify: one SHA everywhere, in time"):
            shas = self.roller.sha_by_host()
            minutes = (time.monotonic() - self.t0) / 60
            target = float(s.profile.targets.rollback_minutes)
            s.check("Every API host on the last good SHA", expected=(self.to_sha or "?")[:12],
                    actual=sha_table(shas), passed=set(shas.values()) == {self.to_sha})  # fmt: skip
            s.metric("rollback_minutes", round(minutes, 3), "min", target)
            s.check(
                f"Rolled back within {target:g} minutes",
                expected=f"< {target:g} min",
                actual=f"{minutes:.2f} min",
                passed=minutes < target,
            )
            return Summary(f"{sha_table(shas)} after {minutes:.2f} min", minutes=minutes)
