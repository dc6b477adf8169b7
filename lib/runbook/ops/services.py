"""Services through the profile's manager: systemd on production, supervisord in the sandbox.

Example (in a notebook)::

    s.services.status("api")          # ServiceState(name='dealix-api', active=True, ...)
    s.services.restart("api")         # changing: dry-run and confirmation apply
    s.services.logs("postgres", 200)  # the last lines of its log
"""

from __future__ import annotations

import re
import shlex
from dataclasses import dataclass
from typing import TYPE_CHECKING

from runbook.errors import ParameterError
from runbook.result import Result

if TYPE_CHECKING:
    from runbook.core.context import OpsContext


@dataclass(frozen=True)
class ServiceState:
    name: str
    active: bool
    state: str
    pid: int | None
    detail: str

    @property
    def words(self) -> str:
        """systemd's words: 'active (running)', 'inactive (dead)', 'failed (failed)'."""
        return self.state


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
            r = s.probe(
                self._control(
                    "show",
                    name,
                    "--no-pager",
                    "--property=ActiveState,SubState,MainPID,ActiveEnterTimestamp",
                ),
                shell=True,
                warn=True,
            )
            props = dict(line.split("=", 1) for line in r.stdout.splitlines() if "=" in line)
            active = props.get("ActiveState", "unknown")
            sub = props.get("SubState", "unknown")
            pid = int(props.get("MainPID", "0") or 0) or None
            return ServiceState(
                name,
                active == "active" and sub == "running",
                f"{active} ({sub})",
                pid,
                props.get("ActiveEnterTimestamp", ""),
            )
        r = s.probe(self._control("status", name), shell=True, warn=True)
        line = r.stdout.strip().splitlines()[0] if r.stdout.strip() else r.stderr.strip()
        m = re.match(r"^(\S+)\s+([A-Z]+)\s*(.*)$", line)
        if not m:
            return ServiceState(name, False, "unknown", None, line)
        sv_state, detail = m.group(2), m.group(3)
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

    def logs(self, role: str, lines: int = 200) -> Result:
        """The last `lines` lines of the service's log (journalctl / supervisorctl tail)."""
        name = self._name(role)
        if self.profile.manager == "systemd":
            cmd = f"journalctl -u {shlex.quote(name)} -n {int(lines)} --no-pager"
            return self.ctx.probe(cmd, shell=True, warn=True)
        # supervisorctl tails bytes, not lines: take enough bytes, then cut
        cmd = self._control("tail", f"-{int(lines) * 200}", name) + f" | tail -n {int(lines)}"
        return self.ctx.probe(cmd, shell=True, warn=True)

    def _act(self, action: str, role: str) -> Result:
        name = self._name(role)
        return self.ctx.run(self._control(action, name), shell=True, label=f"{action}-{name}")

    def restart(self, role: str) -> Result:
        return self._act("restart", role)

    def stop(self, role: str) -> Result:
        return self._act("stop", role)

    def start(self, role: str) -> Result:
        return self._act("start", role)
