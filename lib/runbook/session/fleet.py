"""A run over many hosts: one gate per host, a step over a group, the recap.

A fleet profile (an `inventory:`, runbook.core.inventory) gives the session one
gate per host (`s.gates`, keyed by the inventory's host names), each with its
own pinned transport (`transport_for_host`), reused connection, host lock and
tripwire, connected on first use. A single-host profile is a fleet of one: its
one gate serves every group, so a scenario written for a fleet runs unchanged
on today's server.

A step over a group is runbook.core.fanout's `FanOut` calling each host's
view (`s.at(name)`: the session's operations bound to that host's gate)::

    with s.step("3. Restart"):
        fan = s.on("api", lambda h: h.services.restart("api"), serial=[1, "50%"])
    fan.ok, fan.hosts["api2"].outcome       # "ok" / "failed" / "not_started" / "refused"

    with s.step("2. Migrate"):
        s.once("api", lambda h: h.run(["alembic", "upgrade", "head"]))  # on api1 only

`on` takes a group name ("api") or a list of host names; `serial`,
`max_fail_percentage` and `throttle` are FanOut's (docs/fleet.md). A host's
`RunbookError` fails that host only; a refusal (host key, guard, tripwire,
confirmation) stops the whole run, as on one host. Every command event in
commands.jsonl names its `host`; checks made through a view (`h.check`) are
named "<check> @ <host>" and counted on that host. record.json gets `hosts`
(per host: outcome, steps, checks) and `batches` (per step).

Locks: each gate takes its own host lock before its host's first change;
before the first change on any host of a fleet, the session takes the
environment lock on one designated host (`environment_lock_host`: the first
host of group `db`, the one machine a rolling deploy never restarts; else the
first host), released with the others when the run ends.
"""

from __future__ import annotations

import threading
from collections.abc import Callable, Sequence
from functools import cached_property
from typing import TYPE_CHECKING, Any

from runbook.core.fanout import FanOut, Recap, Serial, run_once
from runbook.errors import ParameterError
from runbook.ops.alembic import Alembic
from runbook.ops.armor import Armor
from runbook.ops.git import Git
from runbook.ops.postgres import Postgres
from runbook.ops.services import Services

if TYPE_CHECKING:
    from runbook.checks import Check
    from runbook.core.command import Command
    from runbook.core.context import HttpCall
    from runbook.core.inventory import Host
    from runbook.result import Result
    from runbook.session import Session
    from runbook.session.gate import Gate, Polled

HostSpec = str | Sequence[str]
# the scenarios written for a fleet (each step names its hosts); any other refuses a fleet
# profile before anything runs (Profile.require_one_host), as it would reach one server
FLEET_SCENARIOS = frozenset({"health_check", "rolling_deploy", "fleet_rollback"})
# the suffix naming a host in a check made through its view
AT = " @ "


def environment_lock_host(hosts: dict[str, Host], groups: dict[str, list[str]]) -> str:
    """The host that holds the environment lock: the first `db` host, else the first.

    >>> from runbook.core.inventory import Fleet
    >>> f = Fleet.of_one(name="h", address="h", port=22, user="root", key=None, host_key=[])
    >>> environment_lock_host(f.hosts, f.groups)
    'h'
    """
    db = groups.get("db") or []
    return db[0] if db else next(iter(hosts))


class HostView:
    """The session's way out, bound to one host's gate (an OpsContext).

    Everything a scenario does on one host of a fleet: `probe`, `run`,
    `read_file`, `write_file`, `poll`, and the operations built on them
    (`services`, `db`, `git`, `alembic`, `armor`). Steps, checks and the
    record stay the session's.
    """

    def __init__(self, session: Session, gate: Gate):
        self.s = session
        self.gate = gate
        self.name = gate.name
        # the OpsContext's plain attributes: the session's
        self.env, self.scenario, self.dry_run = session.env, session.scenario, session.dry_run
        self.profile, self.redactor, self.secrets = (
            session.profile,
            session.redactor,
            session.secrets,
        )
        self.guards, self.evidence = session.guards, session.evidence
        self.operator, self.operator_host = session.operator, session.operator_host

    def __repr__(self) -> str:
        return f"<host {self.name} ({self.gate.target})>"

    @property
    def host(self) -> Host:
        """The inventory's entry for this host (groups, vars, rank)."""
        return self.s.fleet.hosts[self.name]

    @property
    def vars(self) -> dict[str, Any]:
        return self.host.vars

    @property
    def process(self) -> dict[str, Any] | None:
        return self.s.process

    @property
    def method(self) -> str | None:
        """The scenario method running now (the session's: a view runs inside it)."""
        return self.s.method

    def attempt(self, *a: Any, **kw: Any) -> Any:
        """The session's `attempt` (refusals pass through, other errors wait in `a.error`)."""
        return self.s.attempt(*a, **kw)

    @property
    def current_step(self) -> str | None:
        return self.s.current_step

    def probe(self, command: Command, **kw: Any) -> Result:
        return self.gate.probe(command, **kw)

    def run(self, command: Command, **kw: Any) -> Result:
        return self.gate.run(command, **kw)

    def read_file(self, path: str) -> bytes:
        return self.gate.read_file(path)

    def write_file(self, path: str, data: bytes, *, mode: int | None = None) -> bool:
        return self.gate.write_file(path, data, mode=mode)

    def poll(self, command: str, *, kind: str) -> Polled:
        return self.gate.poll(command, kind=kind)

    def verify_target(self) -> None:
        self.gate.verify_target()

    def allow_change(self, what: str, *, kind: str) -> bool:
        return self.gate.allow_change(what, kind=kind)

    def log_http(self, call: HttpCall) -> None:
        self.s.log_http(call)

    def check(self, name: str, **kw: Any) -> Check:
        """A check on this host: recorded as "<name> @ <host>" and counted in its `hosts` entry."""
        c = self.s.check(f"{name}{AT}{self.name}", **kw)
        self.s.fleet_run.host_checks.setdefault(self.name, []).append(c)
        return c

    services = cached_property(Services)
    db = cached_property(Postgres)
    git = cached_property(Git)
    alembic = cached_property(Alembic)
    armor = cached_property(Armor)


class FleetRun:
    """The session's fan-out: host views, steps over groups, the recap (see the module)."""

    def __init__(self, session: Session):
        self.s = session
        self.recap = Recap()
        self.host_checks: dict[str, list[Check]] = {}
        self._views: dict[str, HostView] = {}
        self._views_lock = threading.Lock()

    # ----------------------------------------------------------------- hosts
    def gate_of(self, name: str) -> Gate:
        gate = next((g for g in self.s.gates.values() if g.name == name), None)
        if gate is None:
            raise ParameterError(
                f"no host {name!r} in {self.s.env} (hosts: {', '.join(self.s.fleet.hosts)})",
                key="hosts",
                source=self.s.profile.source,
                fix="name a host of the profile's inventory, or a group "
                f"({', '.join(g for g, h in self.s.fleet.groups.items() if h)})",
            )
        return gate

    def at(self, name: str) -> HostView:
        with self._views_lock:
            view = self._views.get(name)
            if view is None:
                view = self._views[name] = HostView(self.s, self.gate_of(name))
            return view

    def hosts_of(self, spec: HostSpec) -> list[str]:
        """A group's hosts in rank order, or the named hosts (each checked)."""
        fleet = self.s.fleet
        if isinstance(spec, str):
            if spec in fleet.hosts:
                return [spec]
            names = fleet.names(spec)
            if not names:
                fleet.require_groups(spec, scenario=self.s.scenario)
            return names
        names = list(spec)
        for n in names:
            self.gate_of(n)
        return names

    # ----------------------------------------------------------------- steps
    def _step_name(self, step: str | None, fn: Callable[..., Any]) -> str:
        base = str(step or self.s.current_step or getattr(fn, "__name__", "step"))
        taken = {f.step for f in self.recap.steps}
        name, n = base, 2
        while name in taken:
            name, n = f"{base} ({n})", n + 1
        return name

    def on(
        self,
        spec: HostSpec,
        fn: Callable[[HostView], Any],
        *,
        step: str | None = None,
        serial: Serial = None,
        max_fail_percentage: float = 0,
        throttle: int | None = None,
    ) -> FanOut:
        hosts = self.hosts_of(spec)
        fan = FanOut(
            self._step_name(step, fn),
            hosts,
            serial=serial,
            max_fail_percentage=max_fail_percentage,
            throttle=throttle,
        )
        return self._record(fan, lambda: fan.run(lambda h: fn(self.at(h))))

    def once(
        self,
        spec: HostSpec,
        fn: Callable[[HostView], Any],
        *,
        step: str | None = None,
        delegate_to: str | None = None,
    ) -> FanOut:
        hosts = self.hosts_of(spec)
        name = self._step_name(step, fn)
        holder: list[FanOut] = []

        def go() -> FanOut:
            fan = run_once(name, lambda h: fn(self.at(h)), hosts, delegate_to=delegate_to)
            holder.append(fan)
            return fan

        try:
            return go()
        finally:
            if holder:
                self.recap.add(holder[0])
                self.s.evidence.append(
                    {"kind": "fanout", "step": self.s.current_step, **holder[0].record()}
                )
                self.s.write_record()

    def _record(self, fan: FanOut, go: Callable[[], FanOut]) -> FanOut:
        try:
            go()
        finally:
            self.recap.add(fan)
            self.s.evidence.append({"kind": "fanout", "step": self.s.current_step, **fan.record()})
            self.s.write_record()
        return fan

    # ---------------------------------------------------------------- record
    def hosts_record(self) -> dict[str, Any]:
        """record.json's `hosts`: per host, the worst outcome, each step's, its checks."""
        out: dict[str, Any] = self.recap.record()
        for h, checks in self.host_checks.items():
            entry = out.setdefault(h, {"outcome": "ok", "steps": {}})
            entry["checks"] = {c.name.rsplit(AT, 1)[0]: c.status for c in checks}
            if any(c.status == "failed" for c in checks) and entry["outcome"] == "ok":
                entry["outcome"] = "failed"
        for entry in out.values():
            entry.setdefault("checks", {})
        return out

    def failed_hosts(self) -> dict[str, str]:
        """Hosts whose outcome is not ok, with it (for the run's verdict)."""
        return {h: e["outcome"] for h, e in self.hosts_record().items() if e["outcome"] != "ok"}

    def recap_rows(self) -> list[dict[str, str]]:
        """The host x step table, with a column per host check when there are any."""
        rows = {r["host"]: dict(r) for r in self.recap.rows()}
        for h, checks in self.host_checks.items():
            row = rows.setdefault(h, {"host": h})
            for c in checks:
                row[c.name.rsplit(AT, 1)[0]] = c.status
        return list(rows.values())

    def recap_frame(self) -> Any:
        import pandas as pd

        rows = self.recap_rows()
        if not rows:
            return pd.DataFrame()
        return pd.DataFrame(rows).set_index("host").fillna("-")
