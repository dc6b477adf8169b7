"""The host firewall's SSH rules (ufw or iptables): saved, locked to one address, restored.

Scenario 6 locks SSH down to the operator's address in four moves, each a
change (dry run, confirmation, guards and the host lock apply), in this order:

1. `save()`: the rules as they are, in restorable form, next to the evidence
   (`security.evidence_dir`, umask 077);
2. `revert_after(seconds)`: a timer on the server restores the saved rules
   unless it is cancelled, so a lockdown that shuts the operator out undoes
   itself;
3. `lock()`: allow the operator's address BEFORE removing the general rule
   (no window where new connections fail);
4. `cancel_revert(pid)`: once a new connection proved the operator is still in.

`show()` reads the rules back (read-only). `outside_reachable(ctx)` answers
whether SSH is reachable from another address: it runs the profile's
`security.outside_probe` on the operator's machine, not on the server. It
lives here rather than in runbook.ops.http because it opens a bare TCP
connection to sshd (no HTTP) and its only meaning is whether the firewall
holds. fail2ban is runbook.ops.fail2ban.

Example::

    >>> cmds = commands("iptables", 22, "198.51.100.7", "/var/ev/firewall.before.X")
    >>> cmds["save"]
    'iptables-save > /var/ev/firewall.before.X.rules'
"""

from __future__ import annotations

import shlex
import subprocess
from typing import TYPE_CHECKING

from runbook.clock import utc_now
from runbook.errors import RunbookError

if TYPE_CHECKING:
    from runbook.core.context import OpsContext
    from runbook.result import Result

#: a step this target cannot do (no host firewall, no outside vantage point): never passed
NOT_AVAILABLE = "not available on this target"


def commands(kind: str, port: int, target: str, saved: str) -> dict[str, str]:
    """The shell commands of one lockdown: save, lock, restore and show, for `kind`.

    `saved` is the path prefix of the saved rules (ufw: the status and both
    rule files; iptables: `iptables-save`'s output).
    """
    q = shlex.quote
    if kind == "ufw":
        return {
            "save": f"ufw status numbered > {q(saved)}.status && "
            f"cp -p /etc/ufw/user.rules {q(saved)}.user.rules && "
            f"cp -p /etc/ufw/user6.rules {q(saved)}.user6.rules",
            # allow the operator BEFORE removing the general rule: no gap
            "lock": f"ufw allow from {q(target)} to any port {port} proto tcp && "
            f"(ufw delete allow {port}/tcp || true) && (ufw delete allow OpenSSH || true)",
            "restore": f"cp -p {q(saved)}.user.rules /etc/ufw/user.rules && "
            f"cp -p {q(saved)}.user6.rules /etc/ufw/user6.rules && ufw reload",
            "show": "ufw status numbered",
        }
    if kind == "iptables":
        return {
            "save": f"iptables-save > {q(saved)}.rules",
            "lock": f"iptables -I INPUT 1 -p tcp --dport {port} -s {q(target)} -j ACCEPT && "
            f"iptables -I INPUT 2 -p tcp --dport {port} -m conntrack --ctstate "
            f"ESTABLISHED,RELATED -j ACCEPT && iptables -I INPUT 3 -p tcp --dport {port} -j DROP",
            "restore": f"iptables-restore < {q(saved)}.rules",
            "show": "iptables -S INPUT",
        }
    raise RunbookError(f"unknown firewall kind {kind!r} (ufw or iptables)")


class Firewall:
    """One SSH lockdown to `target` with the profile's firewall; rules saved under `saved`."""

    def __init__(self, ctx: OpsContext, target: str, *, saved: str | None = None):
        sec = ctx.profile.security
        if not sec.firewall:
            raise RunbookError(
                f"no host firewall on {ctx.env} (security.firewall is empty): nothing to lock"
            )
        self.ctx = ctx
        self.kind = sec.firewall
        self.port = int(sec.ssh_port)
        self.target = target
        stamp = utc_now().strftime("%Y%m%dT%H%M%SZ")
        self.saved = saved or f"{sec.evidence_dir}/firewall.before.{stamp}"
        self.commands = commands(self.kind, self.port, target, self.saved)

    def save(self) -> Result:
        """Save the rules as they are, restorable, beside the evidence (owner-only)."""
        evidence_dir = shlex.quote(self.ctx.profile.security.evidence_dir)
        return self.ctx.run(
            f"mkdir -p {evidence_dir} && umask 077 && {self.commands['save']}",
            shell=True,
            label="firewall-save",
        )

    def revert_after(self, seconds: int) -> str:
        """Start the timer that restores the saved rules in `seconds`; its pid ("" if none)."""
        restore = f"sleep {int(seconds)}; " + self.commands["restore"]
        timer = self.ctx.run(
            f"setsid sh -c {shlex.quote(restore)} </dev/null >/dev/null 2>&1 & echo $!",
            shell=True,
            label="firewall-revert-timer",
        )
        return timer.stdout.strip()

    def lock(self) -> Result:
        """Restrict SSH to the target (allowed first, then the general rule removed)."""
        return self.ctx.run(self.commands["lock"], shell=True, label="firewall-lock")

    def show(self) -> Result:
        """The rules now (read-only)."""
        return self.ctx.probe(self.commands["show"], shell=True, warn=True, label="firewall-show")

    def cancel_revert(self, pid: str) -> Result:
        """Stop the revert timer: the lockdown stays."""
        return self.ctx.run(["kill", pid], warn=True, label="cancel-revert-timer")


def outside_reachable(ctx: OpsContext) -> tuple[bool | None, str]:
    """Is SSH reachable from outside the allowed address? None: no vantage point.

    Runs the profile's `security.outside_probe` on this machine (read-only:
    it only opens a TCP connection and reads sshd's banner); recorded in the
    evidence as a local probe.
    """
    sec = ctx.profile.security
    if not sec.outside_probe:
        return None, NOT_AVAILABLE
    host = sec.outside_host or ctx.profile.target.host
    cmd = sec.outside_probe.format(host=shlex.quote(host), port=int(sec.ssh_port))
    try:
        # the profile's own command (like services.control): a shell is intended
        proc = subprocess.run(cmd, shell=True, capture_output=True, timeout=30)  # noqa: S602
        code: int | None = proc.returncode
    except subprocess.TimeoutExpired:
        code = None
    reachable = code == 0
    ctx.evidence.append(
        {
            "kind": "local-probe",
            "step": ctx.current_step,
            "command": ctx.redactor.redact(cmd),
            "exit_code": code,
            "reachable": reachable,
        }
    )
    return reachable, f"{host}:{sec.ssh_port} {'reachable' if reachable else 'not reachable'}"
