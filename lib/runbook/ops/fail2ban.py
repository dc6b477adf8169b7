"""fail2ban on the server: the jail's status (health check, incident) and bans (incident).

The host firewall's SSH rules are runbook.ops.firewall; fail2ban is apart
because a target may have one without the other (the loopback sandbox has a
stand-in status file and no firewall).

Example (in a notebook)::

    r, status = jail_status(s)          # `fail2ban-client status <jail>`, the profile's jail
    status["banned"] if status else r.tail(3)
    ban(s, "203.0.113.66")              # `fail2ban-client set <jail> banip ...` (a change)
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from runbook.core.context import OpsContext
    from runbook.result import Result


def parse_fail2ban_status(text: str) -> dict[str, Any]:
    """`fail2ban-client status <jail>` output → jail, counts, banned addresses.

    >>> out = ("Status for the jail: sshd\\n|- Filter\\n|  |- Currently failed:\\t3\\n"
    ...        "|  |- Total failed:\\t12\\n`- Actions\\n   |- Currently banned:\\t2\\n"
    ...        "   |- Total banned:\\t4\\n   `- Banned IP list:\\t198.51.100.4 127.0.0.1\\n")
    >>> parse_fail2ban_status(out)["banned"]
    ['198.51.100.4', '127.0.0.1']
    """
    info: dict[str, Any] = {"jail": None, "banned": []}
    for line in text.splitlines():
        if "Status for the jail:" in line:
            info["jail"] = line.split(":", 1)[1].strip()
            continue
        key, sep, value = line.partition(":")
        if not sep:
            continue
        name = key.strip(" |`-\t").lower().replace(" ", "_")
        if name == "banned_ip_list":
            info["banned"] = value.split()
        elif name in ("currently_failed", "total_failed", "currently_banned", "total_banned"):
            info[name] = int(value.strip() or 0)
    return info


def jail_status(ctx: OpsContext) -> tuple[Result, dict[str, Any] | None]:
    """`fail2ban-client status <jail>` for the profile's jail (read-only): the result, and the
    parsed status when fail2ban answered for that jail."""
    jail = ctx.profile.security.fail2ban_jail
    r = ctx.probe(
        ["fail2ban-client", "status", jail], warn=True, sudo=ctx.profile.target.user != "root"
    )
    status = parse_fail2ban_status(r.stdout) if r.ok else None
    return r, (status if status and status["jail"] == jail else None)


def fail2ban_status(ctx: OpsContext) -> dict[str, Any] | None:
    """fail2ban's jail state (None when this target has no fail2ban).

    A target without fail2ban may still name a status file its stand-in writes
    (the sandbox's `security.fail2ban_status_file`).
    """
    sec = ctx.profile.security
    if ctx.profile.services.fail2ban:
        return jail_status(ctx)[1]
    if sec.fail2ban_status_file:
        r = ctx.probe(["cat", sec.fail2ban_status_file], warn=True, label="fail2ban-status-file")
        return parse_fail2ban_status(r.stdout) if r.ok and r.stdout.strip() else None
    return None


def _set(ctx: OpsContext, action: str, address: str) -> Result:
    jail = ctx.profile.security.fail2ban_jail
    return ctx.run(
        ["fail2ban-client", "set", jail, action, address],
        sudo=ctx.profile.target.user != "root",
        label=action,
    )


def ban(ctx: OpsContext, address: str) -> Result:
    """Ban `address` in the profile's jail (a change: dry run, confirmation and lock apply)."""
    return _set(ctx, "banip", address)


def unban(ctx: OpsContext, address: str) -> Result:
    """Lift a ban on `address` in the profile's jail (an authorized address fail2ban caught)."""
    return _set(ctx, "unbanip", address)
