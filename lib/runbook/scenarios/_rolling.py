"""What the rolling deploy and the fleet rollback share (runbook scenarios 1 and 2 on a
fleet; notebooks rolling_deploy and fleet_rollback): the roll over the API hosts.

The hosts are reached through one OpsContext each (`ctx_of(name)`: the
session's host view, `s.at(name)`, once the session fans out; any object with
probe/run/read_file/write_file/poll works), the load balancer through its own.
Batches are runbook.core.fanout's (`serial=[1, "50%"]`: a canary first).

Rolling deploy (`Roller.deploy(target_sha)`):

1. the fleet's SHA: every API host healthy (its own /health) on one SHA, else
   refused naming the hosts and SHAs; that SHA is the fleet-wide last good SHA,
   written to every API host's `.last_good_sha` once, before the first batch;
2. migrations once, on the first API host, before the first batch: the new
   commit's migrations not yet applied are read (`git show`, no checkout) and
   refused by the expand/contract check (runbook.ops.alembic.rolling_refusals)
   when one drops or renames what the old code reads;
3. per batch: drain from the lb (runbook.ops.lb), wait for in-flight, pull,
   install, restart, health gate on the host (its own nginx: /health answers the
   new SHA) and through the lb (/health/deep green), put it back;
4. a failed batch stops the roll: the failed host stays drained, `sha_by_host`
   says which host runs what, and `rollback_command` is the exact fleet rollback;
5. finally (always): `drained` lists every host still out of rotation.

Fleet rollback (`Roller.rollback(to_sha)`): to the fleet-wide last good
SHA, never "the previous release on each host"; the database downgrade first,
once, with the bad code still checked out, one step (the guard's rule); then
the same batches and gates.

Example::

    >>> sha_table({"api1": "a" * 40, "api2": "b" * 40})
    'api1 aaaaaaaaaaaa, api2 bbbbbbbbbbbb'
"""

from __future__ import annotations

import json
import shlex
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from runbook.core.fanout import FanOut, Serial
from runbook.errors import Forbidden, ParameterError, RunbookError
from runbook.ops.alembic import Alembic, rolling_refusals
from runbook.ops.git import Git
from runbook.ops.lb import LoadBalancer
from runbook.ops.services import Services
from runbook.scenarios._base import Scenario
from runbook.scenarios._release import MIGRATIONS_DIR, deep_green, migration_chain, parse_migration

if TYPE_CHECKING:
    from runbook.session import Session

DEFAULT_SERIAL: Serial = [1, "50%"]
# (step, hosts, fn(host name), serial) -> the FanOut that ran
FanOutFn = Callable[[str, list[str], Callable[[str], Any], Serial], FanOut]
HEALTH_WAIT_S = 30.0
LB_PROBES = 4


# a host of a batch that did not come up: a RunbookError (errors.py holds the library's
# error classes); the fan-out fails that host and stops the roll after its batch
RollFailed = RunbookError


def sha_table(shas: dict[str, str | None]) -> str:
    return ", ".join(f"{h} {(s or 'no answer')[:12]}" for h, s in shas.items())


def fleet_rollback_command(env: str, to_sha: str, reason: str) -> str:
    """The exact fleet rollback command line.

    >>> fleet_rollback_command("production-fleet", "a" * 40, "api2 red")  # doctest: +ELLIPSIS
    "runbook run fleet_rollback --env production-fleet -p to_sha aaaa... -p reason 'api2 red' --confirm production-fleet"
    """
    q = shlex.quote
    return (
        f"runbook run fleet_rollback --env {q(env)} -p to_sha {to_sha} -p reason {q(reason)} "
        f"--confirm {q(env)}"
    )


@dataclass
class RollReport:
    kind: str
    target_sha: str
    last_good: str | None = None
    migrated: list[str] = field(default_factory=list)
    fan: FanOut | None = None
    sha_by_host: dict[str, str | None] = field(default_factory=dict)
    drained: list[str] = field(default_factory=list)
    rollback_command: str | None = None
    seconds: float = 0.0
    log: list[str] = field(default_factory=list)


class Roller:
    """The rolling deploy and the fleet rollback over the API group (see the module)."""

    def __init__(
        self,
        env: str,
        ctx_of: Callable[[str], Any],
        api_hosts: list[str],
        lb_host: str,
        addresses: dict[str, str],
        *,
        serial: Serial = DEFAULT_SERIAL,
        upstream_port: int = 443,
        health_wait: float = HEALTH_WAIT_S,
        branch: str = "main",
        fan_out: FanOutFn | None = None,
    ):
        self.env = env
        self.ctx_of = ctx_of
        self.api_hosts = list(api_hosts)
        self.lb = LoadBalancer(ctx_of(lb_host))
        self.lb_ctx = ctx_of(lb_host)
        self.server = {h: f"{addresses[h]}:{upstream_port}" for h in self.api_hosts}
        self.serial = serial
        self.health_wait = health_wait
        self.branch = branch
        # how a step goes over hosts: the session's `s.on` (recap, record.json), or a
        # bare FanOut
        self.fan_out: FanOutFn = fan_out or (
            lambda step, hosts, fn, serial: FanOut(step, hosts, serial=serial).run(fn)
        )

    # ------------------------------------------------------------ reads
    def _curl(self, ctx: Any, path: str) -> tuple[int | None, dict[str, Any]]:
        """GET https://api.dealix.me<path> from the host itself: on an API host its own
        nginx, on the lb through the upstream (each host's /etc/hosts: 127.0.0.1)."""
        r = ctx.probe(
            [
                "curl",
                "-s",
                "--max-time",
                "5",
                "-w",
                "\\n%{http_code}",
                f"https://api.dealix.me{path}",
            ],
            warn=True,
            label="health",
            echo=False,
        )
        body, _, code = r.stdout.rpartition("\n")
        try:
            parsed = json.loads(body) if body.strip() else {}
        except ValueError:
            parsed = {}
        return (int(code) if code.strip().isdigit() else None), parsed

    def running_sha(self, host: str) -> str | None:
        code, body = self._curl(self.ctx_of(host), "/health")
        return body.get("sha") if code == 200 else None

    def sha_by_host(self) -> dict[str, str | None]:
        return {h: self.running_sha(h) for h in self.api_hosts}

    def fleet_sha(self) -> str:
        """The one SHA every API host runs, healthy; else Forbidden naming hosts and SHAs."""
        shas = self.sha_by_host()
        distinct = set(shas.values())
        if None in distinct or len(distinct) != 1:
            raise Forbidden(
                "one-sha-before-a-roll",
                f"record a fleet-wide last good SHA for {self.env}",
                source="Scenario 1 step 3 on a fleet: the snapshot is the SHA every API host runs",
                why=f"the API hosts do not all run one SHA healthily: {sha_table(shas)}",
            )
        return next(iter(distinct))  # type: ignore[return-value]

    def refuse_drained(self) -> None:
        """A roll starts with every API host in rotation: one left drained by an earlier
        run is put back (or taken out of the inventory) by a person first."""
        drained = self.lb.drained()
        if drained:
            names = [h for h in self.api_hosts if self.server[h] in drained]
            raise Forbidden(
                "no-drained-host-before-a-roll",
                f"roll {self.env} with {', '.join(names or drained)} out of rotation",
                source="docs/fleet.md: a roll starts with every API host in the lb",
                why=f"drained in the load balancer's upstream: {', '.join(drained)}; check the "
                "host, then put it back (LoadBalancer.undrain) or roll it back first",
            )

    def through_lb(self) -> tuple[bool, str]:
        """/health/deep through the lb, several times (each may reach another server)."""
        seen = []
        for _ in range(LB_PROBES):
            code, body = self._curl(self.lb_ctx, "/health/deep")
            ok, summary = deep_green(body)
            seen.append(f"{code} {summary}")
            if code != 200 or not ok:
                return False, seen[-1]
        return True, seen[-1]

    # ------------------------------------------------------------ steps
    def record_last_good(self, sha: str) -> None:
        for h in self.api_hosts:
            app = self.ctx_of(h).profile.app
            self.ctx_of(h).write_file(app.last_good_sha_file, (sha + "\n").encode())

    def migrate_once(self, target: str, report: RollReport) -> None:
        host = self.api_hosts[0]
        ctx = self.ctx_of(host)
        git, alembic = Git(ctx), Alembic(ctx)
        git.fetch()
        current = alembic.current()
        files: dict[str, str] = {}
        revisions: dict[str, str | None] = {}
        for name in git.ls_tree(target, MIGRATIONS_DIR):
            if name.endswith(".py"):
                text = git.show(target, f"{MIGRATIONS_DIR}/{name}")
                rev, down = parse_migration(text)
                if rev:
                    revisions[rev] = down
                    files[rev] = (name, text)  # type: ignore[assignment]
        heads = [r for r in revisions if r not in set(revisions.values())]
        new = migration_chain(revisions, heads[0], current) if heads else []
        refused = rolling_refusals({files[r][0]: files[r][1] for r in new})
        if refused:
            raise Forbidden(
                "expand-contract-in-a-rolling-deploy",
                f"migrate {self.env} to {target[:12]} while old code still serves",
                source="docs/fleet.md: migrations of a rolling deploy only expand",
                why="; ".join(refused)
                + ' (mark a contract-phase migration runbook_phase = "contract")',
            )
        if new:
            # the new commit's migrations, from its checkout; then the host's checkout goes
            # back to its branch (the old code it runs): it moves in its own batch
            git.checkout(target)
            try:
                alembic.upgrade("head")
            finally:
                git.checkout(self.branch)
        report.migrated = list(reversed(new))
        report.log.append(f"migrations on {host}: {', '.join(report.migrated) or 'none new'}")

    def _move(self, host: str, sha: str, *, pull: bool) -> None:
        """One host of a batch: drain, move to `sha`, gates, put back."""
        ctx = self.ctx_of(host)
        server = self.server[host]
        self.lb.drain(server)
        git = Git(ctx)
        if pull:
            git.fetch()
            git.checkout(self.branch)
            git.pull_ff_only("origin", self.branch)
        else:
            git.checkout(sha)
        app = ctx.profile.app
        ctx.run([f"{app.venv}/bin/pip", "install", "-q", "-r", "requirements.txt"],
                cwd=app.dir, label="pip-install")  # fmt: skip
        services = Services(ctx)
        if ctx.profile.services.manager == "systemd":
            # a host whose last start failed (a deploy's bad code) crash-loops under
            # Restart=on-failure until systemd's start limit refuses any restart ("start
            # request repeated too quickly"): clear that first, or the rollback fails there
            ctx.run(["systemctl", "reset-failed", services.unit("api") or "dealix-api"],
                    label="reset-failed")  # fmt: skip
        services.restart("api")
        deadline = time.monotonic() + self.health_wait
        running = None
        while time.monotonic() < deadline:
            running = self.running_sha(host)
            if running == sha:
                break
            time.sleep(0.5)
        if running != sha:
            raise RollFailed(f"{host}: /health on the host runs {(running or 'nothing')[:12]}, "
                             f"not {sha[:12]}, after {self.health_wait:.0f} s")  # fmt: skip
        code, deep = self._curl(ctx, "/health/deep")
        ok, summary = deep_green(deep)
        if code != 200 or not ok:
            raise RollFailed(f"{host}: /health/deep on the host {code}: {summary}")
        self.lb.undrain(server)
        ok, said = self.through_lb()
        if not ok:
            raise RollFailed(f"{host}: through the lb /health/deep {said}")

    def _roll(
        self, kind: str, sha: str, report: RollReport, *, pull: bool, order: list[str]
    ) -> RollReport:
        fan: FanOut | None = None
        try:
            fan = self.fan_out(
                f"{kind}: move to {sha[:12]}", order, lambda h: self._move(h, sha, pull=pull),
                self.serial,
            )  # fmt: skip
            report.fan = fan
        finally:
            # always: which host runs what, and every host still out of rotation
            report.sha_by_host = self.sha_by_host()
            report.drained = self.lb.drained()
        if fan is not None and not fan.ok:
            failed = fan.outcomes("failed")
            reason = f"{kind} of {sha[:12]} failed on {', '.join(failed)}"
            if report.last_good:
                report.rollback_command = fleet_rollback_command(self.env, report.last_good, reason)
        return report

    # ------------------------------------------------------------ scenarios
    def deploy(self, target_sha: str) -> RollReport:
        t0 = time.monotonic()
        report = RollReport("deploy", target_sha)
        self.refuse_drained()
        report.last_good = self.fleet_sha()
        self.record_last_good(report.last_good)
        report.log.append(f"last good SHA {report.last_good[:12]} on every API host")
        self.migrate_once(target_sha, report)
        self._roll("deploy", target_sha, report, pull=True, order=self.api_hosts)
        report.seconds = round(time.monotonic() - t0, 2)
        return report

    def rollback(self, to_sha: str, *, approved_by: str | None = None) -> RollReport:
        t0 = time.monotonic()
        report = RollReport("rollback", to_sha, last_good=to_sha)
        self.downgrade_once(to_sha, report)
        # the hosts out of rotation first (a deploy's failed host): they serve nothing, so
        # moving them costs no capacity, and the lb never has to drain its last server
        out = {h for h in self.api_hosts if self.server[h] in self.lb.drained()}
        order = [h for h in self.api_hosts if h in out] + [
            h for h in self.api_hosts if h not in out
        ]
        report.log.append(f"order: {', '.join(order)}")
        self._roll("rollback", to_sha, report, pull=False, order=order)
        report.seconds = round(time.monotonic() - t0, 2)
        return report

    def _revisions(self, git: Git, rev: str) -> dict[str, str | None]:
        out: dict[str, str | None] = {}
        for n in git.ls_tree(rev, MIGRATIONS_DIR):
            if n.endswith(".py"):
                r, down = parse_migration(git.show(rev, f"{MIGRATIONS_DIR}/{n}"))
                if r:
                    out[r] = down
        return out

    def downgrade_plan(self, to_sha: str) -> tuple[str | None, str | None, list[str]]:
        """(host, database revision, revisions to undo newest first) to bring the database
        back to `to_sha`'s head: read on an API host whose checkout still has the newer
        code (only it holds the migrations being undone); (None, rev, []) when `to_sha`
        already knows the database's revision."""
        first = Git(self.ctx_of(self.api_hosts[0]))
        current = Alembic(self.ctx_of(self.api_hosts[0])).current()
        old = self._revisions(first, to_sha)
        if current is None or current in old:
            return None, current, []
        target = next(iter(r for r in old if r not in set(old.values())), None)
        for host in self.api_hosts:
            git = Git(self.ctx_of(host))
            head = git.head()
            if head != to_sha and git.is_ancestor(to_sha, head):
                try:
                    return (
                        host,
                        current,
                        migration_chain(self._revisions(git, head), current, target),
                    )
                except ValueError:
                    continue
        raise RollFailed(
            f"the database is at {current}, which {to_sha[:12]} does not know, and no API "
            "host has the newer code (its migrations) checked out to downgrade it"
        )

    def downgrade_once(self, to_sha: str, report: RollReport) -> None:
        """The database back to `to_sha`'s head, once for the fleet, first, with the newer
        code still checked out; more than one step needs approved_by (the guard)."""
        host, current, chain = self.downgrade_plan(to_sha)
        if host is None:
            report.log.append(f"database at {current}: known to {to_sha[:12]}, no downgrade")
            return
        alembic = Alembic(self.ctx_of(host))
        alembic.downgrade(len(chain))
        report.migrated = [f"downgraded {', '.join(chain)} on {host}"]
        report.log.append(f"downgraded {current} -> {alembic.current()} on {host}")


class FleetRelease(Scenario):
    """What the rolling deploy and the fleet rollback share as scenarios: the Roller over
    the session's fleet (its API hosts by rank, its first lb, the session's fan-out) and
    the roll's checks. A single-host profile is refused: one server has no load balancer
    to drain from (its deploy is notebooks/deploy.ipynb)."""

    def __init__(
        self, session: Session, *, serial: Serial = None, health_wait: float | None = None
    ):
        super().__init__(session)
        s = session
        fleet = s.profile.require_groups("lb", "api", scenario=s.scenario)
        if fleet.is_single or set(fleet.names("lb")) & set(fleet.names("api")):
            raise ParameterError(
                f"{s.env} is one server: {s.scenario} rolls API hosts behind a separate "
                "load balancer",
                key="env",
                source=s.profile.source,
                fix="run notebooks/deploy.ipynb (or rollback.ipynb) on a single-host profile, "
                "or name a fleet profile (production-fleet, twin-fleet)",
            )
        api = fleet.names("api")
        port = int(fleet.hosts[api[0]].vars.get("upstream_port", 443))

        def fan_out(
            step: str, hosts: list[str], fn: Callable[[str], Any], batches: Serial
        ) -> FanOut:
            return s.on(hosts, lambda h: fn(h.name), step=step, serial=batches)

        self.roller = Roller(
            s.env,
            s.at,
            api,
            fleet.names("lb")[0],
            {n: h.address for n, h in fleet.hosts.items()},
            serial=DEFAULT_SERIAL if serial is None else serial,
            upstream_port=port,
            health_wait=HEALTH_WAIT_S if health_wait is None else float(health_wait),
            branch=s.profile.github.branch,
            fan_out=fan_out,
        )

    def report_roll(self, report: RollReport) -> None:
        """The roll's checks: each host on the SHA; which hosts run what, in the evidence."""
        s = self.s
        fan = report.fan
        for host, sha in report.sha_by_host.items():
            run = fan.hosts.get(host) if fan else None
            s.check(
                f"runs {report.target_sha[:12]} @ {host}",
                expected=report.target_sha[:12],
                actual=f"{(sha or 'no answer')[:12]} ({run.outcome if run else 'not in the roll'})",
                passed=sha == report.target_sha,
            )
        s.evidence.append(
            {
                "kind": report.kind,
                "event": "fleet",
                "sha_by_host": report.sha_by_host,
                "drained": report.drained,
                "rollback": report.rollback_command,
            }
        )
