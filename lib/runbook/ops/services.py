"""Services through the profile's manager: systemd on production, supervisord in the sandbox.

Example (in a notebook)::

    s.services.status("api")          # ServiceState(name='dealix-api', active=True, ...)
    s.services.restart("api")         # changing: dry-run and confirmation apply
    s.services.logs("postgres", 200)  # the last lines of its log

A systemd unit that only groups others (Debian's `postgresql.service` is
`ExecStart=/bin/true`, "active (exited)", and `postgresql@15-main.service`
is `PartOf=` it) says nothing about the server: after the cluster is
SIGKILLed the wrapper still says "active" and its journal is empty. So
`status` follows the wrapper's `ConsistsOf=` to the units that run, and
`logs("postgres")` reads their journal and, on Debian, the cluster's own log
file that `pg_lsclusters` names (Postgres writes there, not to journald): the
readers are in runbook.ops.logs.
"""

from __future__ import annotations

import re
import shlex
from dataclasses import dataclass
from typing import TYPE_CHECKING

from runbook.errors import ParameterError
from runbook.ops import logs
from runbook.result import Result

if TYPE_CHECKING:
    from runbook.core.context import OpsContext


@dataclass(frozen=True)
class ServiceState:
    """One unit's state. For a wrapper unit (`postgresql`), `name` is the member that
    runs the server (`postgresql@15-main`) and `wrapper` says what the wrapper says.

    >>> ServiceState("postgresql@15-main", False, "failed (failed)", None, "",
    ...              wrapper="postgresql: active (exited)").label
    'postgresql@15-main failed (failed) (wrapper postgresql: active (exited))'
    """

    name: str
    active: bool
    state: str
    pid: int | None
    detail: str
    wrapper: str = ""

    @property
    def words(self) -> str:
        """systemd's words: 'active (running)', 'inactive (dead)', 'failed (failed)'."""
        return self.state

    @property
    def label(self) -> str:
        """Unit and state in one phrase, for records and reasons."""
        return f"{self.name} {self.state}" + (f" (wrapper {self.wrapper})" if self.wrapper else "")


def parse_show(stdout: str) -> list[dict[str, str]]:
    """`systemctl show A B --property=...` → one dict per unit (blocks split by blank lines).

    >>> parse_show("Id=a.service\\nActiveState=active\\n\\nId=b.service\\nActiveState=failed\\n")
    [{'Id': 'a.service', 'ActiveState': 'active'}, {'Id': 'b.service', 'ActiveState': 'failed'}]
    """
    blocks: list[dict[str, str]] = []
    for chunk in stdout.strip().split("\n\n"):
        props = dict(ln.split("=", 1) for ln in chunk.splitlines() if "=" in ln)
        if props:
            blocks.append(props)
    return blocks


def _state(name: str, props: dict[str, str], wrapper: str = "") -> ServiceState:
    active = props.get("ActiveState", "unknown")
    sub = props.get("SubState", "unknown")
    return ServiceState(
        name,
        active == "active" and sub == "running",
        f"{active} ({sub})",
        int(props.get("MainPID", "0") or 0) or None,
        props.get("ActiveEnterTimestamp", ""),
        wrapper,
    )


def worst_member(members: list[dict[str, str]]) -> dict[str, str]:
    """The member to report: the first that is not active (running), else the first.

    >>> worst_member([{"Id": "a", "ActiveState": "active", "SubState": "running"},
    ...               {"Id": "b", "ActiveState": "failed", "SubState": "failed"}])["Id"]
    'b'
    """
    for m in members:
        if (m.get("ActiveState"), m.get("SubState")) != ("active", "running"):
            return m
    return members[0]


class Services:
    def __init__(self, ctx: OpsContext):
        self.ctx = ctx
        self.profile = ctx.profile.services

    def unit(self, role: str) -> str | None:
        """The unit name of a role (api, postgres, redis, nginx, fail2ban) or a literal name."""
        if role in ("api", "postgres", "redis", "nginx", "fail2ban"):
            return getattr(self.profile, role)
        return role

    def _name(self, role: str) -> str:
        name = self.unit(role)
        if not name:
            raise ParameterError(
                f"service {role!r} is not available on {self.ctx.env} "
                f"(services.{role} is empty in {self.ctx.profile.source})",
                key=f"services.{role}",
            )
        return name

    def _control(self, *args: str) -> str:
        return self.profile.control + " " + " ".join(shlex.quote(a) for a in args)

    def status(self, role: str) -> ServiceState:
        name = self._name(role)
        s = self.ctx
        if self.profile.manager == "systemd":
            props = self._show([name], "ConsistsOf")[:1] or [{}]
            members = self._members(props[0])
            if not members:
                return _state(name, props[0])
            shown = self._show(members)
            if not shown:
                return _state(name, props[0])
            m = worst_member(shown)
            wrapper = _state(name, props[0])
            return _state(
                m.get("Id", members[0]).removesuffix(".service"),
                m,
                wrapper=f"{name}: {wrapper.words}",
            )
        r = s.probe(self._control("status", name), shell=True, warn=True)
        line = r.stdout.strip().splitlines()[0] if r.stdout.strip() else r.stderr.strip()
        said = re.match(r"^(\S+)\s+([A-Z]+)\s*(.*)$", line)
        if not said:
            return ServiceState(name, False, "unknown", None, line)
        sv_state, detail = said.group(2), said.group(3)
        pid_m = re.search(r"pid (\d+)", detail)
        words = {
            "RUNNING": "active (running)",
            "STARTING": "activating (start)",
            "STOPPED": "inactive (dead)",
            "STOPPING": "deactivating (stop)",
            "EXITED": "inactive (dead)",
            "FATAL": "failed (failed)",
            "BACKOFF": "activating (auto-restart)",
        }.get(sv_state, sv_state.lower())
        return ServiceState(
            name, sv_state == "RUNNING", words, int(pid_m.group(1)) if pid_m else None, detail
        )

    def _show(self, units: list[str], *extra: str) -> list[dict[str, str]]:
        props = ",".join(
            ("Id", "ActiveState", "SubState", "MainPID", "ActiveEnterTimestamp", *extra)
        )
        r = self.ctx.probe(
            self._control("show", *units, "--no-pager", f"--property={props}"),
            shell=True,
            warn=True,
        )
        return parse_show(r.stdout)

    @staticmethod
    def _members(props: dict[str, str]) -> list[str]:
        # Only instances that run something: a wrapper's members are its *.service units.
        return [u for u in props.get("ConsistsOf", "").split() if u.endswith(".service")]

    def units(self, role: str) -> list[str]:
        """The unit and, for a wrapper, the units that run under it (systemd only).

        On Debian: `units("postgres")` → ['postgresql', 'postgresql@15-main.service'].
        """
        name = self._name(role)
        if self.profile.manager != "systemd":
            return [name]
        return [name, *self._members((self._show([name], "ConsistsOf")[:1] or [{}])[0])]

    def logs(self, role: str, lines: int = 200) -> Result:
        """The last `lines` lines of the service's log (runbook.ops.logs).

        systemd: the journal of the unit and its members; for Postgres also the
        last lines of each cluster's log file named by `pg_lsclusters`.
        supervisord: the program's log through supervisorctl.
        """
        name = self._name(role)
        if self.profile.manager == "systemd":
            return logs.journal(self.ctx, self.units(role), lines, cluster_logs=role == "postgres")
        return logs.supervisor_tail(self.ctx, self.profile.control, name, lines)

    def _act(self, action: str, role: str) -> Result:
        name = self._name(role)
        return self.ctx.run(self._control(action, name), shell=True, label=f"{action}-{name}")

    def restart(self, role: str) -> Result:
        return self._act("restart", role)

    def stop(self, role: str) -> Result:
        return self._act("stop", role)

    def start(self, role: str) -> Result:
        return self._act("start", role)
