"""Runbook scenario 1 on a fleet (notebooks/rolling_deploy.ipynb): the rolling deploy.

The API hosts move to the commit on main one batch at a time behind the nginx
load balancer (`serial`, default [1, "50%"]: a canary first); the roll itself is
runbook.scenarios._rolling.Roller, over the session's fan-out (`s.on`), so
record.json's `hosts`/`batches` and the recap show each host. docs/fleet.md says
what happens on failure and how to recover.

Example (in a notebook)::

    s, dep = open_scenario("rolling_deploy")   # env: a fleet profile (production-fleet)
    dep.ci_gate(); dep.snapshot(); dep.migrate(); dep.roll()
    dep.drained()                              # always: hosts still out of rotation
    dep.watch(); dep.advice()
"""

from __future__ import annotations

import time
from typing import TYPE_CHECKING

from runbook.errors import Forbidden, ParameterError
from runbook.evidence.story import Summary, Text
from runbook.scenarios._base import show
from runbook.scenarios._rolling import FleetRelease, RollFailed, RollReport, sha_table

if TYPE_CHECKING:
    from runbook.core.fanout import Serial
    from runbook.session import Session


class RollingDeploy(FleetRelease):
    """Runbook scenario 1 on a fleet, one method per step; checks land in the session."""

    def __init__(
        self,
        session: Session,
        *,
        serial: Serial = None,
        watch_minutes: float | None = None,
        health_wait: float | None = None,
    ):
        super().__init__(session, serial=serial, health_wait=health_wait)
        targets = session.profile.targets
        self.watch_minutes = float(
            targets.watch_minutes if watch_minutes is None else watch_minutes
        )
        if self.watch_minutes < 0:
            raise ParameterError("watch_minutes must be >= 0", key="watch_minutes")
        self.target_sha: str | None = None
        self.report: RollReport | None = None

    # -- 1 -----------------------------------------------------------------
    def ci_gate(self) -> Summary:
        """CI green on main (the last three runs, one on the commit to deploy); else abort."""
        s = self.s
        with s.step("1. Verify CI green on main"):
            branch = s.profile.github.branch
            self.target_sha = s.at(self.roller.api_hosts[0]).git.origin_sha(branch)
            green, runs = s.github.ci_green(3)
            covered = bool(self.target_sha) and self.target_sha in set(runs["head_sha"])
            s.check("CI green on main", expected="last 3 runs completed / success",
                    actual=", ".join(f"{a}/{b}" for a, b in zip(runs["status"],
                                     runs["conclusion"], strict=True)) or "no runs",
                    passed=green)  # fmt: skip
            s.check(
                "CI ran on the commit to deploy",
                expected=f"a run on {(self.target_sha or '?')[:12]} (origin/{branch})",
                actual="yes" if covered else "no run on it among the last 3",
                passed=covered,
            )
            if not (green and covered):
                show(runs)
                raise Forbidden(
                    "ci-green-before-deploy",
                    f"deploy {(self.target_sha or '?')[:12]} to {s.env}",
                    source="Scenario 1 step 1: all three latest must be completed/success.",
                    why="CI is not green for the commit on main; nothing was changed",
                )
            return Summary(f"CI green; deploying {(self.target_sha or '?')[:12]}", runs=runs)

    # -- 2 -----------------------------------------------------------------
    def snapshot(self) -> Summary:
        """No host left drained; every API host healthy on one SHA, recorded as the fleet's
        last good SHA on each, once, before the first batch."""
        s = self.s
        with s.step("2. Snapshot the fleet"):
            assert self.target_sha, "run ci_gate() first"
            self.report = RollReport("deploy", self.target_sha)
            self.roller.refuse_drained()
            sha = self.report.last_good = self.roller.fleet_sha()
            self.roller.record_last_good(sha)
            s.judge(
                "Fleet-wide last good SHA recorded",
                expected="every API host healthy on one SHA",
                ran=not s.dry_run,
                actual=f"{sha[:12]} on {', '.join(self.roller.api_hosts)}",
                passed=True,
            )
            return Summary(f"the fleet runs {sha[:12]}: recorded as last good", last_good=sha)

    # -- 3 -----------------------------------------------------------------
    def migrate(self) -> Summary:
        """Migrations once, on the first API host, refused when they drop or rename what the
        old code reads (expand/contract: runbook.ops.alembic.rolling_refusals)."""
        s = self.s
        with s.step("3. Migrate once (expand only)"):
            assert self.report is not None, "run snapshot() first"
            report = self.report
            fan = s.once(
                self.roller.api_hosts,
                lambda h: self.roller.migrate_once(report.target_sha, report),
                step="migrate",
            )
            if not fan.ok:
                # nothing rolled yet: every host still runs the old code
                raise RollFailed(f"migrations failed, no host was moved: {fan.hosts}")
            s.check(
                "Migrations applied once, before the first batch",
                expected="alembic upgrade head on one API host",
                actual=report.log[-1] if report.log else "not run",
                passed=bool(report.log),
            )
            return Summary(report.log[-1] if report.log else "no migration ran")

    # -- 4 -----------------------------------------------------------------
    def roll(self) -> Summary:
        """Per batch: drain, pull, install, restart, health on the host and through the lb,
        put back. A failed batch stops the roll (recorded; the next steps still run)."""
        s = self.s
        with s.step("4. Roll the API hosts in batches"):
            assert self.report is not None, "run snapshot() first"
            t0 = time.monotonic()
            self.roller._roll("deploy", self.report.target_sha, self.report, pull=True,
                              order=self.roller.api_hosts)  # fmt: skip
            self.report.seconds = round(time.monotonic() - t0, 2)
            self.report_roll(self.report)
            if self.report.rollback_command:
                s.set_next_command(self.report.rollback_command)
            return Summary(
                f"{self.report.fan}; {sha_table(self.report.sha_by_host)}",
                sha_by_host=self.report.sha_by_host,
            )

    # -- 5 -----------------------------------------------------------------
    def drained(self) -> Summary:
        """Always: every API host still out of rotation (after a failure: the failed ones)."""
        s = self.s
        with s.step("5. Hosts still out of rotation"):
            drained = self.roller.lb.drained()
            failed = (
                set(self.report.fan.outcomes("failed"))
                if self.report and self.report.fan
                else set()
            )
            expected = {self.roller.server[h] for h in failed}
            s.check(
                "Out of rotation: only the hosts that failed",
                expected=", ".join(sorted(expected)) or "none",
                actual=", ".join(drained) or "none",
                passed=set(drained) == expected,
            )
            return Summary(f"drained: {', '.join(drained) or 'none'}", drained=drained)

    # -- 6 -----------------------------------------------------------------
    def watch(self) -> Summary:
        """The watch window after the last batch: deep health through the lb, every 10 s."""
        s = self.s
        with s.step("6. Watch window"):
            if not (self.report and self.report.fan and self.report.fan.ok):
                s.judge("Watch window", expected="after a complete roll", ran=False,
                        actual="skipped: the roll did not complete", passed=True)  # fmt: skip
                return Summary("skipped: the roll did not complete")
            end = time.monotonic() + 60 * self.watch_minutes
            polls, red = 0, None
            while True:
                ok, said = self.roller.through_lb()
                polls += 1
                if not ok:
                    red = said
                    break
                if time.monotonic() >= end:
                    break
                time.sleep(min(10.0, max(0.0, end - time.monotonic())))
            s.check(f"Deep health through the lb for {self.watch_minutes:g} min",
                    expected="green at every poll", actual=red or f"green ({polls} polls)",
                    passed=red is None)  # fmt: skip
            return Summary(f"watch: {red or 'green'} ({polls} polls)")

    def advice(self) -> Text:
        r = self.report
        if self.s.dry_run:
            return Text("Dry run: nothing was changed.")
        if r and r.rollback_command:
            print(f"ROLLING DEPLOY STOPPED: {sha_table(r.sha_by_host)}; drained: "
                  f"{', '.join(r.drained) or 'none'}")  # fmt: skip
            return Text(f"next: {r.rollback_command}")
        return Text(f"Rolling deploy of {(self.target_sha or '?')[:12]} is healthy on every host.")
