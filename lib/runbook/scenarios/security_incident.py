"""Scenario 6, security incident: contain, prove, investigate, preserve, document.

The runbook's steps, each made provable:

1. **Rotate all secrets** with the app's own `scripts/rotate_secrets.sh`, restart
   the API, then prove it: the new admin key is read from the server's `.env`
   (never shown: registered with the redactor the moment it is read), the API
   accepts it and refuses the old one.
2. **Lock down SSH** to the operator's address: the address is the one the
   server sees this very SSH connection come from (`$SSH_CONNECTION`), and
   locking down to any other address is refused unless explicitly overridden
   (no self-lockout). Rules are saved first; a revert timer on the server
   undoes the lockdown unless a NEW connection from the operator succeeds.
   A target without a host firewall (the loopback sandbox) reports every
   firewall step as "not available on this target", never as passed.
3. **Investigate**: the auth log and fail2ban's state as tables (accepted and
   failed logins by address and user, first and last seen, banned
   addresses), and admin API calls from unexpected addresses or with a bad key.
4. **Preserve evidence**: a tarball of the nginx, auth and app logs on the
   server, its SHA-256 recorded, a copy downloaded into the evidence folder
   and its hash checked.
5. **Document**: an incident document and a GitHub security advisory draft.

The logs are read and parsed by runbook.ops.logs; what this module makes of them is pure::

    >>> ssh_client_address("198.51.100.7 52144 10.0.0.2 22")
    '198.51.100.7'
"""

from __future__ import annotations

import hashlib
import ipaddress
import json
import re
import shlex
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any, ClassVar

import pandas as pd

from runbook.clock import wait_for
from runbook.core import postmortem
from runbook.core.evidence import utc_now
from runbook.core.resume import refusal as resume_refusal
from runbook.core.secrets import parse_env_text
from runbook.errors import Forbidden, RunbookError
from runbook.ops import logs
from runbook.ops.firewall import fail2ban_status
from runbook.scenarios._base import Scenario

if TYPE_CHECKING:
    from runbook.session import Session

NOT_AVAILABLE = "not available on this target"
SOURCE = "Scenario 6 step 2 (restrict SSH to your IP)"
ADMIN_PREFIX = "/api/v1/admin"
# Scenario 6 step 5 "Notify Sami": the runbook's owner (section 0 / the document's header).
NOTIFY_WHO = "Sami Assiri (runbook owner)"
PROBE_PATH = "/api/v1/admin/dlq/stats"  # read-only admin endpoint used to test a key
# The app's .env keys rotate_secrets.sh changes → the operator's secret variable names.
ROTATED = {"ADMIN_KEY": None, "WEBHOOK_SECRET": "DEALIX_WEBHOOK_SECRET"}
# Values of .env keys like these are registered with the redactor when the file is read.
_SECRET_NAME = re.compile(r"KEY|SECRET|TOKEN|PASSWORD|DSN|DATABASE_URL|REDIS_URL", re.I)

# ----------------------------------------------------------------- findings


def login_summary(logins: pd.DataFrame, known: set[str]) -> pd.DataFrame:
    """Accepted and failed logins by address and user, first and last seen.

    >>> from runbook.ops.logs import parse_auth_log
    >>> df = parse_auth_log("Accepted publickey for root from 127.0.0.1 port 1 ssh2\\n" * 2)
    >>> login_summary(df, {"127.0.0.1"})[["address", "user", "accepted", "failed", "known"]]
         address  user  accepted  failed  known
    0  127.0.0.1  root         2       0   True
    """
    cols = ["address", "user", "accepted", "failed", "first_seen", "last_seen", "known"]
    if logins.empty:
        return pd.DataFrame(columns=cols)
    g = logins.groupby(["address", "user"], sort=True)
    out = pd.DataFrame(
        {
            "accepted": g["result"].apply(lambda r: int((r == "accepted").sum())),
            "failed": g["result"].apply(lambda r: int((r == "failed").sum())),
            "first_seen": g["time"].min(),
            "last_seen": g["time"].max(),
        }
    ).reset_index()
    out["known"] = out["address"].isin(known)
    out = out[cols].sort_values(["known", "accepted", "failed"], ascending=[True, False, False])
    return out.reset_index(drop=True)


def unexpected_admin_calls(requests: pd.DataFrame, known: set[str]) -> pd.DataFrame:
    """Admin API calls from addresses not known (the operator's and `known`), grouped.

    `granted` counts the calls the API answered below 400: from an unknown
    address that means a working admin key is in someone else's hands.
    """
    cols = ["address", "path", "calls", "granted", "refused", "first_seen", "last_seen", "why"]
    admin = requests[requests["path"].str.startswith(ADMIN_PREFIX)] if len(requests) else requests
    if admin.empty:
        return pd.DataFrame(columns=cols)
    admin = admin.assign(
        unknown=~admin["address"].isin(known), badkey=admin["key"].isin(["invalid"])
    )
    # An invalid key from a known address is the operator (this run proves the old
    # key is refused that way); from an unknown one it is probing.
    odd = admin[admin["unknown"]]
    if odd.empty:
        return pd.DataFrame(columns=cols)
    g = odd.groupby(["address", "path"], sort=True)
    out = pd.DataFrame(
        {
            "calls": g.size(),
            "granted": g["status"].apply(lambda st: int((st < 400).sum())),
            "refused": g["status"].apply(lambda st: int((st >= 400).sum())),
            "first_seen": g["time"].min(),
            "last_seen": g["time"].max(),
            "unknown": g["unknown"].any(),
            "badkey": g["badkey"].any(),
        }
    ).reset_index()
    out["why"] = [
        ", ".join(
            w
            for w, on in (("unknown address", u), ("invalid admin key", b), ("key worked", g > 0))
            if on
        )
        for u, b, g in zip(out["unknown"], out["badkey"], out["granted"], strict=True)
    ]
    return out[cols].sort_values(["granted", "calls"], ascending=False).reset_index(drop=True)


def ssh_client_address(ssh_connection: str) -> str | None:
    """The client address from `$SSH_CONNECTION` ("client port server port")."""
    parts = ssh_connection.split()
    if len(parts) != 4:
        return None
    try:
        return str(ipaddress.ip_address(parts[0]))
    except ValueError:
        return None


# ------------------------------------------------------- 1. rotate and prove


@dataclass
class Rotation:
    """What the rotation did and proved (never the keys themselves)."""

    rotated: bool
    output: str
    old_accepted_before: int | None
    new_status: int | None
    old_status: int | None
    changed: bool
    operator_secrets_updated: str
    # per rotated .env key: "replaced", "added", "unchanged" or "missing" (never a value)
    keys: dict[str, str] = field(default_factory=dict)


def rotation_states(before: dict[str, str], after: dict[str, str]) -> dict[str, str]:
    """Each key the rotation must change, compared before/after; the values never leave here.

    >>> rotation_states({"ADMIN_KEY": "a", "WEBHOOK_SECRET": "w"},
    ...                 {"ADMIN_KEY": "b", "WEBHOOK_SECRET": "w"})
    {'ADMIN_KEY': 'replaced', 'WEBHOOK_SECRET': 'unchanged'}
    >>> rotation_states({}, {"ADMIN_KEY": "b"})
    {'ADMIN_KEY': 'added', 'WEBHOOK_SECRET': 'missing'}
    """
    out: dict[str, str] = {}
    for key in ROTATED:
        old, new = before.get(key), after.get(key)
        if not new:
            out[key] = "missing"
        elif old is None:
            out[key] = "added"
        else:
            out[key] = "replaced" if new != old else "unchanged"
    return out


def _key_status(s: Session, key: str) -> int | None:
    resp = s.api.get(PROBE_PATH, headers={"X-API-Key": key}, accept=tuple(range(100, 600)))
    return resp.status


def _read_env(s: Session) -> dict[str, str]:
    values = parse_env_text(s.read_file(s.profile.app.env_file).decode("utf-8", "replace"))
    # Register before anything else touches the values: nothing can print them after this.
    for name, value in values.items():
        if _SECRET_NAME.search(name) and len(value) >= 8:
            s.redactor.register(name, value)
    return values


def rotate_secrets(s: Session, *, update_operator_secrets: bool = True) -> Rotation:
    """Rotate with the app's script, restart the API, prove new key in and old key out.

    Records four checks. The old key is the operator's current admin key
    (from the secrets file or environment). Afterwards, the operator's
    secrets file gets the new values (or the run says where to put them),
    otherwise every later notebook would hold a dead key.
    """
    var = s.profile.secrets.admin_key
    old = s.secrets.get(var)
    assert old is not None
    before = _key_status(s, old)
    s.check(
        "Old admin key worked before rotation",
        expected="200 (so that its refusal afterwards means something)",
        actual=before,
        passed=before == 200,
        note="the operator's key did not match the server's already" if before != 200 else "",
    )
    # every key the script must change, read (and registered with the redactor) first,
    # so the proof compares each one and not only the admin key
    before_env = {} if s.dry_run else _read_env(s)
    # the rotation rewrites these .env keys: the tripwire lets exactly them change
    with s.tripwire_allows(list(ROTATED), "Scenario 6 step 1: rotate all secrets"):
        r = s.run(
            ["bash", "scripts/rotate_secrets.sh"], cwd=s.profile.app.dir, label="rotate-secrets"
        )
    if r.dry_run:
        # key names only: the values are what the rotation replaces
        s.preview_change(".env keys", [f"{k}: new value (rotated)" for k in ROTATED])
        s.preview_change(
            "services to restart",
            [f"{s.services.unit('api')} ({s.profile.services.manager} restart)"],
        )
        if update_operator_secrets:
            s.preview_change(
                "operator's secrets file",
                [f"{v}: new value" for v in [var, *(v for v in ROTATED.values() if v)]],
            )
        for name in ("Secrets rotated", "New admin key accepted", "Old admin key refused"):
            s.judge(name, expected="proved", result=r)
        return Rotation(False, "", before, None, None, False, "dry run")
    s.services.restart("api")
    wait_api(s)
    values = _read_env(s)
    new = values.get("ADMIN_KEY", "")
    changed = bool(new) and new != old
    states = rotation_states(before_env, values)
    s.check(
        "Secrets rotated",
        expected=f"{' and '.join(ROTATED)} replaced in .env (each compared before/after)",
        actual=", ".join(f"{k} {v}" for k, v in states.items()),
        passed=all(v in ("replaced", "added") for v in states.values()),
        note=r.stdout.splitlines()[0] if r.stdout else "",
    )
    new_status = _key_status(s, new) if new else None
    s.check("New admin key accepted", expected=200, actual=new_status, passed=new_status == 200)
    old_status = _key_status(s, old)
    s.check(
        "Old admin key refused",
        expected=401,
        actual=old_status,
        passed=old_status == 401,
        note="the leaked key no longer opens the admin API" if old_status == 401 else "",
    )
    updated = "not asked"
    if update_operator_secrets and changed:
        updated = _update_operator_secrets(
            s, {var: new, **{v: values[k] for k, v in ROTATED.items() if v and k in values}}
        )
    return Rotation(True, r.stdout, before, new_status, old_status, changed, updated, states)


def wait_api(s: Session, timeout: float = 30.0) -> None:
    """Wait until `GET /health` answers 200 after a restart."""
    last: Any = None

    def up() -> bool:
        nonlocal last
        with s.attempt() as a:
            last = s.api.health().status
        if a.error is not None:
            last = type(a.error).__name__
        return last == 200

    if not wait_for(up, timeout, 0.3)[0]:
        raise RunbookError(f"the API did not answer /health with 200 within {timeout:.0f}s: {last}")


def _update_operator_secrets(s: Session, values: dict[str, str]) -> str:
    """Write the new values into the operator's 0600 secrets file (local, atomic)."""
    import os

    path = s.secrets.file
    if path is None or not path.exists():
        return (
            f"no secrets file: set {', '.join(values)} in your environment from the server's .env"
        )
    lines = path.read_text().splitlines()
    done: set[str] = set()
    for i, line in enumerate(lines):
        name = line.split("=", 1)[0].removeprefix("export ").strip()
        if name in values and "=" in line and not line.lstrip().startswith("#"):
            lines[i] = f"{name}={values[name]}"
            done.add(name)
    lines += [f"{k}={v}" for k, v in values.items() if k not in done]
    tmp = path.with_name(path.name + ".tmp")
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "w") as fh:
        fh.write("\n".join(lines) + "\n")
    os.replace(tmp, path)
    s.evidence.append(
        {"kind": "secrets-file", "op": "update", "path": str(path), "names": sorted(values)}
    )
    return f"updated {', '.join(sorted(values))} in {path}"


# ------------------------------------------------------------ 2. lockdown


def operator_address(s: Session) -> str | None:
    """The address the server sees this very SSH connection come from."""
    r = s.probe('echo "$SSH_CONNECTION"', shell=True, warn=True, label="ssh-connection")
    return ssh_client_address(r.stdout.strip())


def lockdown_address(
    s: Session, seen: str | None, requested: str | None = None, *, override: bool = False
) -> str:
    """The address SSH may be restricted to; refuses one that would lock the operator out.

    `requested` defaults to `seen`. Another address is refused (rule
    `no-self-lockout`) unless `override` is True; the override is recorded.
    """
    if requested:
        try:
            requested = str(ipaddress.ip_address(requested.strip()))
        except ValueError:
            raise Forbidden(
                "no-self-lockout",
                f"restrict SSH to {requested!r}",
                source=SOURCE,
                why="not an IP address",
            ) from None
    if seen is None and not override:
        raise Forbidden(
            "no-self-lockout",
            f"restrict SSH to {requested or '(unknown)'}",
            source=SOURCE,
            why="cannot tell which address this connection comes from ($SSH_CONNECTION is "
            "empty: not an SSH session?); pass override_lockout_check=True only if you are sure",
        )
    target = requested or seen
    assert target is not None
    if target != seen:
        if not override:
            raise Forbidden(
                "no-self-lockout",
                f"restrict SSH to {target}",
                source=SOURCE,
                why=f"the server sees this connection coming from {seen}; locking SSH to "
                f"another address would lock you out. Pass override_lockout_check=True to do "
                "it anyway (you keep only this connection and the revert timer)",
            )
        s.evidence.append(
            {"kind": "override", "rule": "no-self-lockout", "seen": seen, "target": target}
        )
    return target


@dataclass
class Lockdown:
    available: bool
    target: str
    saved: str | None = None
    new_connection: str = ""
    outside_before: bool | None = None
    steps: list[dict[str, Any]] = field(default_factory=list)

    def table(self) -> pd.DataFrame:
        return pd.DataFrame(self.steps, columns=["step", "command", "result"])


def _new_connection(s: Session) -> tuple[bool, str]:
    """Open a NEW SSH connection (as the operator) and run `true` on it."""
    import paramiko

    if s.profile.target.transport != "ssh":
        return False, "not an SSH target"
    # any failure to connect is the answer; a refusal is not (the gate latches it)
    with s.attempt(also=(OSError, EOFError, paramiko.SSHException)) as a:
        with s.gate.new_connection() as conn:
            out = conn.execute("true", timeout=20)
    if a.error is not None:
        why = f"{type(a.error).__name__}: {a.error}"
        return False, s.redactor.redact(f"new connection failed: {why}")
    return out.exit_code == 0, f"new connection: exit {out.exit_code}"


def _fw_commands(kind: str, port: int, target: str, saved: str) -> dict[str, str]:
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


def lock_down_ssh(s: Session, target: str, *, revert_after_s: int = 300) -> Lockdown:
    """Save the rules, restrict SSH to `target`, prove a new connection still works.

    A revert timer on the server restores the saved rules after
    `revert_after_s` unless the new connection succeeds (then it is cancelled).
    """
    kind = s.profile.security.firewall
    port = s.profile.security.ssh_port
    lock = Lockdown(available=bool(kind), target=target)
    names = (
        "Firewall rules saved",
        f"SSH restricted to {target}",
        "New SSH connection from the operator works",
    )
    if not kind:
        ok, how = _new_connection(s)
        lock.new_connection = how
        for name in names:
            s.check(
                name,
                expected="done and proved",
                actual=NOT_AVAILABLE,
                passed=None,
                note=f"no host firewall on {s.env} (security.firewall is empty)"
                + (f"; {how}" if name.startswith("New SSH") else ""),
            )
        return lock
    stamp = utc_now().strftime("%Y%m%dT%H%M%SZ")
    saved = f"{s.profile.security.evidence_dir}/firewall.before.{stamp}"
    cmds = _fw_commands(kind, port, target, saved)
    r = s.run(
        f"mkdir -p {shlex.quote(s.profile.security.evidence_dir)} && umask 077 && {cmds['save']}",
        shell=True,
        label="firewall-save",
    )
    lock.saved = saved
    lock.steps.append({"step": "save", "command": r.command, "result": r.status})
    s.judge(names[0], expected="saved", result=r, actual=lambda r: saved if r.ok else r.status)
    if not r.ran:
        for name in names[1:]:
            s.judge(name, expected="done and proved", result=r)
        return lock
    lock.outside_before, what = outside_reachable(s)
    if lock.outside_before is not None:
        s.check(
            "Outside reaches SSH before lockdown",
            expected="reachable (otherwise the proof after means nothing)",
            actual=what,
            passed=lock.outside_before,
        )
    timer = s.run(
        f"setsid sh -c {shlex.quote(f'sleep {int(revert_after_s)}; ' + cmds['restore'])} "
        "</dev/null >/dev/null 2>&1 & echo $!",
        shell=True,
        label="firewall-revert-timer",
    )
    pid = timer.stdout.strip()
    r = s.run(cmds["lock"], shell=True, label="firewall-lock")
    lock.steps.append({"step": "lock", "command": r.command, "result": r.status})
    shown = s.probe(cmds["show"], shell=True, warn=True, label="firewall-show")
    s.check(
        names[1],
        expected=f"only {target} may reach port {port}",
        actual=f"rules applied ({r.status})",
        passed=r.ok and target in shown.stdout,
        note=shown.tail(5),
    )
    ok, how = _new_connection(s)
    lock.new_connection = how
    if ok and pid.isdigit():
        s.run(["kill", pid], warn=True, label="cancel-revert-timer")
        how += "; revert timer cancelled"
    elif not ok:
        how += f"; the revert timer restores {saved} in {revert_after_s}s"
    s.check(names[2], expected="exit 0", actual=how, passed=ok)
    return lock


def outside_reachable(s: Session) -> tuple[bool | None, str]:
    """Is SSH reachable from outside the allowed address? None: no vantage point.

    Runs the profile's `security.outside_probe` on this machine (read-only:
    it only opens a TCP connection and reads sshd's banner).
    """
    import subprocess

    sec = s.profile.security
    if not sec.outside_probe:
        return None, NOT_AVAILABLE
    host = sec.outside_host or s.profile.target.host
    cmd = sec.outside_probe.format(host=shlex.quote(host), port=int(sec.ssh_port))
    try:
        # the profile's own command (like services.control): a shell is intended
        proc = subprocess.run(cmd, shell=True, capture_output=True, timeout=30)  # noqa: S602
        code: int | None = proc.returncode
    except subprocess.TimeoutExpired:
        code = None
    reachable = code == 0
    s.evidence.append(
        {
            "kind": "local-probe",
            "step": s.current_step,
            "command": s.redactor.redact(cmd),
            "exit_code": code,
            "reachable": reachable,
        }
    )
    return reachable, f"{host}:{sec.ssh_port} {'reachable' if reachable else 'not reachable'}"


def prove_from_outside(s: Session, lock: Lockdown) -> None:
    """The DoD's "firewall locked, proved from outside": a connection from another
    address must fail now (and must have worked before, or the proof is empty)."""
    name = "Firewall locked (proved from outside)"
    how = (
        "no outside vantage point on this target: check from another network "
        f"(`nc -vz -w5 {s.profile.target.host} {s.profile.security.ssh_port}` must time out)"
    )
    if not lock.available:
        s.check(
            name,
            expected="SSH refused from another address",
            actual=NOT_AVAILABLE,
            passed=None,
            note=how,
        )
        return
    if s.dry_run:
        s.judge(name, expected="SSH refused from another address", ran=False)
        return
    reachable, what = outside_reachable(s)
    if reachable is None:
        s.check(
            name, expected="SSH refused from another address", actual=what, passed=None, note=how
        )
        return
    s.check(
        name,
        expected="reachable before, not after",
        actual=f"before: {'reachable' if lock.outside_before else 'not reachable'}; after: {what}",
        passed=bool(lock.outside_before) and not reachable,
    )


# --------------------------------------------------------- 3. investigate


@dataclass
class Findings:
    logins: pd.DataFrame
    summary: pd.DataFrame
    fail2ban: dict[str, Any] | None
    banned: pd.DataFrame
    admin_calls: pd.DataFrame
    known: set[str]

    @property
    def attackers(self) -> list[str]:
        """Unknown addresses that logged in, failed to, or called the admin API."""
        found = (
            set(self.summary.loc[~self.summary["known"], "address"]) if len(self.summary) else set()
        )
        if len(self.admin_calls):
            found |= set(self.admin_calls["address"]) - self.known
        return sorted(found)

    @property
    def authorized_banned(self) -> list[str]:
        return (
            sorted(set(self.banned.loc[self.banned["authorized"], "address"]))
            if len(self.banned)
            else []
        )


def parse_addresses(value: Any) -> list[str]:
    """`known_addresses` as a list, from a list or a string (`-p` passes strings).

    >>> parse_addresses('["192.0.2.10"]'), parse_addresses("192.0.2.1, 192.0.2.2"), parse_addresses(None)
    (['192.0.2.10'], ['192.0.2.1', '192.0.2.2'], [])
    """
    if value is None or value == "":
        return []
    if isinstance(value, str):
        words = re.split(r"[\s,\[\]\"']+", value)
    else:
        words = [str(v) for v in value]
    out = []
    for w in words:
        if w.strip():
            out.append(str(ipaddress.ip_address(w.strip())))
    return out


def _is_loopback(address: str) -> bool:
    try:
        return ipaddress.ip_address(address).is_loopback
    except ValueError:
        return False


def investigate(s: Session, operator: str | None, known: Any = None) -> Findings:
    """Auth log, fail2ban, API access log → tables; nothing on the server changes.

    Known (never flagged, never banned): the operator's address, `known`, and
    loopback (the server itself: nginx in front of the API, local health checks).
    """
    known_set = {a for a in [operator, *parse_addresses(known)] if a}
    logins = logs.auth_log(s)
    seen = set(logins["address"])
    known_set |= {a for a in seen if _is_loopback(a)}
    summary = login_summary(logins, known_set)
    f2b = fail2ban_status(s)
    banned = pd.DataFrame(
        [{"address": a, "authorized": a in known_set} for a in (f2b or {}).get("banned", [])],
        columns=["address", "authorized"],
    )
    requests = logs.access_log(s)
    known_set |= {a for a in set(requests["address"]) if _is_loopback(a)}
    calls = unexpected_admin_calls(requests, known_set)
    return Findings(logins, summary, f2b, banned, calls, known_set)


def ban_attackers(s: Session, findings: Findings) -> None:
    """Ban the attackers and unban authorized addresses in fail2ban; check the result."""
    jail = s.profile.security.fail2ban_jail
    attackers = findings.attackers
    if not s.profile.services.fail2ban:
        s.check(
            "Attacker addresses banned",
            expected=", ".join(attackers) or "none found",
            actual=NOT_AVAILABLE,
            passed=None,
            note=f"no fail2ban on {s.env}: ban {', '.join(attackers) or 'nothing'} by hand",
        )
        if findings.authorized_banned:
            s.check(
                "Authorized addresses unbanned",
                expected="none banned",
                actual=NOT_AVAILABLE,
                passed=None,
                note=f"banned: {', '.join(findings.authorized_banned)}",
            )
        return
    sudo = s.profile.target.user != "root"
    for addr in attackers:
        s.run(["fail2ban-client", "set", jail, "banip", addr], sudo=sudo, label="banip")
    for addr in findings.authorized_banned:
        s.run(["fail2ban-client", "set", jail, "unbanip", addr], sudo=sudo, label="unbanip")
    after = fail2ban_status(s) or {"banned": []}
    missing = sorted(set(attackers) - set(after["banned"]))
    s.judge(
        "Attacker addresses banned",
        expected=", ".join(attackers) or "none found",
        actual=", ".join(sorted(set(attackers) & set(after["banned"]))) or "none",
        passed=not missing,
        ran=not s.dry_run,
        note=f"not banned: {', '.join(missing)}" if missing else "",
    )
    still = sorted(set(findings.authorized_banned) & set(after["banned"]))
    if findings.authorized_banned:
        s.judge(
            "Authorized addresses unbanned",
            expected="none banned",
            ran=not s.dry_run,
            actual=", ".join(still) or "none banned",
            passed=not still,
        )


# ------------------------------------------------------ 4. preserve evidence


@dataclass
class Preserved:
    remote: str | None
    sha256: str | None
    local: Path | None
    local_sha256: str | None
    size: int = 0


def preserve_evidence(s: Session) -> Preserved:
    """Tar the nginx, auth and app logs on the server, hash it, download and re-hash."""
    sec = s.profile.security
    stamp = utc_now().strftime("%Y%m%dT%H%M%SZ")
    remote = f"{sec.evidence_dir}/incident-{stamp}.tgz"
    shown = logs.preserved_paths(sec)
    r = s.run(
        f"mkdir -p {shlex.quote(sec.evidence_dir)} && umask 077 && "
        f"tar --ignore-failed-read --warning=no-file-changed -czf {shlex.quote(remote)} {shown}",
        shell=True,
        accept=(0, 1),  # 1: a log grew while tar read it; the copy is still good
        label="evidence-tarball",
    )
    if not r.ran:
        s.judge("Evidence preserved", expected="tarball hashed", result=r)
        return Preserved(None, None, None, None)
    h = s.probe(["sha256sum", remote], label="sha256")
    digest = h.stdout.split()[0]
    data = s.read_file(remote)
    local = s.run_dir / "evidence" / Path(remote).name
    local.parent.mkdir(parents=True, exist_ok=True)
    # Byte-exact copy (not redacted): the hash must match the server's.
    local.write_bytes(data)
    local_digest = hashlib.sha256(local.read_bytes()).hexdigest()
    (local.parent / (local.name + ".sha256")).write_text(f"{digest}  {local.name}\n")
    s.check(
        "Evidence tarball hash matches",
        expected=digest,
        actual=local_digest,
        passed=local_digest == digest,
        note=f"{remote} on the server, {len(data)} bytes; copy in evidence/{local.name}",
    )
    s.evidence.append({"kind": "evidence", "remote": remote, "sha256": digest, "bytes": len(data)})
    return Preserved(remote, digest, local, local_digest, len(data))


# -------------------------------------------------------------- 5. document


def draft_documents(
    s: Session,
    rotation: Rotation | None,
    lockdown: Lockdown | None,
    findings: Findings,
    preserved: Preserved | None,
) -> tuple[Path, Path]:
    """Write the incident document and a GitHub security advisory draft (text only)."""
    day = s.started.strftime("%Y-%m-%d")
    attackers = ", ".join(findings.attackers) or "none identified"
    granted = (
        findings.admin_calls[findings.admin_calls["granted"] > 0]
        if len(findings.admin_calls)
        else findings.admin_calls
    )
    proved = (
        rotation is not None
        and rotation.rotated
        and rotation.old_status == 401
        and rotation.new_status == 200
    )
    per_key = ", ".join(f"{k} {v}" for k, v in (rotation.keys if rotation else {}).items())
    record = s.record()
    summary = postmortem.Summary(
        what_happened=f"Suspected breach on `{s.profile.target.host}`; attacker addresses: "
        f"{attackers}. TODO: how the key leaked.",
        impact=f"admin API calls granted to unknown addresses: {len(granted)} (below). "
        "TODO: whether user data (leads) was read, established from the access log.",
        detection=postmortem.summary_from_record(record).detection,
        resolution="Secrets rotated: "
        + ("yes, proved (new key accepted, old refused)" if proved else "NOT proved")
        + f"; per key: {per_key or '-'}. SSH locked to: "
        f"{lockdown.target if lockdown else '-'} "
        f"({'firewall applied' if lockdown and lockdown.available else NOT_AVAILABLE}). "
        f"Evidence: `{preserved.remote if preserved else '-'}` sha256 "
        f"`{preserved.sha256 if preserved else '-'}`.",
        follow_up="the list under Follow-up below; owner and date for each. Postmortem: how "
        "the key leaked, why it was not noticed sooner, what changes.",
    )
    follow_up = "\n".join(
        [
            f"- Notify {NOTIFY_WHO}: the message is drafted in `notify-sami.md` beside this "
            "file; send it.",
            "- Rotate the provider keys (Anthropic, OpenAI, Google) in their consoles: the "
            "script cannot.",
            "- Revert the temporary SSH lockdown once the incident is closed (rules saved in "
            f"`{lockdown.saved if lockdown and lockdown.saved else '-'}`).",
            "- File the GitHub security advisory if user data was touched (draft beside this "
            "file).",
        ]
    )
    incident = postmortem.draft(
        record,
        subject="security incident",
        by=f"written by the security_incident notebook at {utc_now():%Y-%m-%d %H:%M} UTC, "
        f"{s.elapsed / 60:.1f} min after the run started (evidence folder: `{s.run_dir}`); "
        "commit it through a PR (never on the server)",
        summary=summary,
        sections=[
            ("Logins (auth log)", postmortem.frame_table(findings.summary)),
            ("Banned by fail2ban", postmortem.frame_table(findings.banned)),
            ("Unexpected admin API calls", postmortem.frame_table(findings.admin_calls)),
            ("Follow-up", follow_up),
        ],
        files=postmortem.run_files(
            record,
            ("notify-sami.md", "the notification to send"),
            ("security-advisory-draft.md", "the GitHub security advisory draft"),
            *(
                [
                    (
                        f"evidence/{preserved.local.name}",
                        f"the log tarball, sha256 {preserved.sha256}",
                    )
                ]
                if preserved and preserved.local
                else []
            ),
        ),
    )
    advisory = f"""# GitHub security advisory (DRAFT, text only: not filed)

Repository: {s.profile.github.repo}
Title: Dealix admin API key exposure ({day})
Severity: {"High" if len(granted) else "Moderate"} (to be assessed)
Affected: Dealix API deployment {s.profile.api.base_url}

## Summary

An administrative API key of the Dealix API was {"used" if len(granted) else "probed"} from
addresses outside the operators' ({attackers}). The key and the webhook secret
were rotated on {day}; the old key is refused by the API.

## Impact

Admin endpoints reachable with the key: DLQ statistics and drains, pending
approvals, Sentry/PostHog probes. Whether user data (leads) was read must be
established from the access log before filing: calls granted to unknown
addresses: {len(granted)}.

## Patches / workarounds

No code change is needed for the rotation itself. Operators must use the new
key from the server's `.env`; integrations holding the old webhook secret must be
updated.

## Timeline

Detected and contained on {day}; see the incident document.
"""
    doc = s.evidence.write_text(f"incident-{day}.md", incident)
    adv = s.evidence.write_text("security-advisory-draft.md", advisory)
    s.check(
        "Incident document drafted",
        expected="incident document and advisory draft in the evidence folder",
        actual=f"{doc.name}, {adv.name}",
        passed=doc.stat().st_size > 0 and adv.stat().st_size > 0,
    )
    return doc, adv


def elapsed_check(s: Session) -> None:
    """The DoD's 1-hour target, measured from the session's start."""
    target = s.profile.targets.incident_doc_minutes
    minutes = s.elapsed / 60
    s.judge(
        f"Contained and documented within {target:.0f} min",
        expected=f"<= {target:.0f} min",
        ran=not s.dry_run,  # a dry run contained nothing: its speed proves nothing
        actual=f"{minutes:.1f} min",
        passed=minutes <= target,
    )


# ------------------------------------------------------------ 5b. notify


@dataclass
class Notification:
    """The message to the runbook's owner: drafted into the evidence, sent by a person."""

    path: Path
    text: str
    sha256: str
    sent: bool = False


def draft_notification(
    s: Session,
    doc: Path,
    preserved: Preserved | None,
    findings: Findings | None = None,
    *,
    to: str = NOTIFY_WHO,
) -> Notification:
    """Scenario 6 step 5, "Notify Sami": who, what, when and the evidence hashes, in
    `notify-sami.md`; a check records that it was produced with every part present.

    Nothing is sent from here: the profiles name no notification channel, and a
    message claiming "sent" that nobody received is worse than none. The run
    says "drafted, send it now" and records that decision.
    """
    now = utc_now()
    doc_sha = hashlib.sha256(doc.read_bytes()).hexdigest() if doc.exists() else None
    statuses = {c.name: c.status for c in s.checks}
    attackers = ", ".join(findings.attackers) if findings and findings.attackers else "none found"
    tar = (
        f"`{preserved.remote}` sha256 `{preserved.sha256}` ({preserved.size} bytes)"
        if preserved and preserved.sha256
        else "not preserved (dry run or failed: see the record)"
    )
    lines = [
        f"To: {to}",
        f"Subject: [SECURITY] Dealix incident {s.started:%Y-%m-%d} on {s.env}: contained, "
        "evidence preserved",
        "",
        f"When: response started {s.started:%Y-%m-%d %H:%M} UTC; this message drafted "
        f"{now:%Y-%m-%d %H:%M} UTC ({s.elapsed / 60:.1f} min in).",
        f"What: suspected breach on {s.profile.target.host}. Attacker addresses: {attackers}.",
        "Done so far:",
        *(
            f"- {name}: {statuses[name]}"
            for name in statuses
            if name.startswith(("Secrets rotated", "Old admin key", "New admin key", "SSH "))
            or name.startswith(("Firewall locked", "Attacker addresses banned"))
        ),
        "Evidence:",
        f"- log tarball on the server: {tar}",
        f"- incident document: `{doc.name}` sha256 `{doc_sha}`",
        f"- run folder: `{s.run_dir}` (record.json, commands.jsonl)",
        "Next: rotate the provider keys in their consoles; decide on the GitHub security "
        "advisory (draft in the run folder) if user data was touched.",
        "",
    ]
    text = "\n".join(lines)
    path = s.evidence.write_text("notify-sami.md", text)
    written = path.read_text()
    parts = {
        "who": f"To: {to}" in written,
        "when": "When: " in written,
        "what": "What: " in written,
        "evidence hash": bool(doc_sha and doc_sha in written),
    }
    if preserved and preserved.sha256:
        parts["tarball hash"] = preserved.sha256 in written
    missing = [k for k, ok in parts.items() if not ok]
    s.check(
        f"Notification to {to.split(' (')[0]} drafted",
        expected="who, what, when and the evidence hashes in notify-sami.md",
        actual=(
            f"{path.name}: drafted, NOT sent: send it now"
            if not missing
            else f"{path.name}: missing {', '.join(missing)}"
        ),
        passed=not missing,
    )
    s.decide(
        "Notify the runbook owner",
        "drafted; a person sends it",
        "the profile names no notification channel, so this run cannot send it and does not "
        "claim it was sent",
    )
    print(f"DRAFTED, NOT SENT: send {path.name} to {to} now")
    return Notification(path, text, hashlib.sha256(written.encode()).hexdigest(), sent=False)


# --------------------------------------------------------------------------- the scenario


ROTATE_STEP = "1. Rotate all secrets"
LOCKDOWN_STEP = "2. Lock down SSH"
#: what the rotation and the lockdown did, secret-free, beside the record: a resume
#: that skips them still documents them (read back by `SecurityIncident._from_parent`)
ROTATION_FILE = "rotation.json"
LOCKDOWN_FILE = "lockdown.json"


class SecurityIncident(Scenario):
    """Runbook scenario 6, one method per step. The host lock is taken first, before step 0.

    Example (in a notebook)::

        s, sec = open_scenario("security_incident")
        sec.preflight(); sec.rotate(); sec.lock_down(); sec.investigate(); sec.ban()
        sec.preserve(); sec.draft(); sec.notify()
        s.done()
    """

    # rotated in step 1: checked before any change
    require_secrets = ("admin_key",)

    # a resume (runbook.core.resume): a second rotation would lock out whoever took the
    # first new key, so the rotation never runs again, and a rotation that failed is
    # not resumed (nothing on the server tells whether it half happened). The operator's
    # address and the investigation are read-only and set what later steps read: they
    # run again. Locking SSH down again to the same address, banning again and drafting
    # again are safe to repeat (nothing is sent). The completed steps rely on no app
    # HEAD or revision; the host key is checked by every connection.
    resume_once = (ROTATE_STEP,)
    resume_reruns = ("0. Preflight: operator address", "3. Investigate")
    resume_postconditions: ClassVar[dict[str, str]] = {}
    resume_relies_on = ()
    resumable = True

    def __init__(
        self,
        s: Session,
        *,
        allow_ssh_from: str | None = None,
        override_lockout_check: bool = False,
        known_addresses: Any = (),
        update_operator_secrets: bool = True,
        lockdown_revert_seconds: int = 300,
    ):
        super().__init__(s)
        self.allow_ssh_from = allow_ssh_from
        self.override_lockout_check = bool(override_lockout_check)
        self.known_addresses = known_addresses
        self.update_operator_secrets = bool(update_operator_secrets)
        self.lockdown_revert_seconds = int(lockdown_revert_seconds)
        self.operator: str | None = None
        self.lock_to: str | None = None
        self.rotation: Rotation | None = None
        self.lockdown: Lockdown | None = None
        self.findings: Findings | None = None
        self.preserved: Preserved | None = None
        self.doc: Path | None = None
        self.advisory: Path | None = None
        self._from_parent()

    def _from_parent(self) -> None:
        """In a resume: what the parent's rotation and lockdown did, for the documents."""
        plan = self.s.resume
        if plan is None:
            return
        for step, name in ((ROTATE_STEP, ROTATION_FILE), (LOCKDOWN_STEP, LOCKDOWN_FILE)):
            if step not in plan.done:
                continue
            path = plan.parent / name
            if not path.exists():
                raise resume_refusal(
                    f"run {plan.parent_id} did {step!r} but left no {name} saying what it did",
                    "finish the run's remaining steps by hand (the rotation must not run "
                    "again), recorded in the incident document",
                )
            data = json.loads(path.read_text())
            if step == ROTATE_STEP:
                self.rotation = Rotation(output=f"rotated in run {plan.parent_id}", **data)
            else:
                self.lockdown = Lockdown(**data)

    def change_summary(self) -> list[str]:
        """What the response will change, for the confirmation question."""
        s = self.s
        sec = s.profile.security
        where = self.allow_ssh_from or "the address this connection comes from"
        return [
            f"rotate every app secret (the app's rotation script), restart "
            f"{s.services.unit('api')}; the old admin key stops working"
            + ("; your secrets file gets the new values" if self.update_operator_secrets else ""),
            f"lock SSH (port {sec.ssh_port}) down to {where} with {sec.firewall or 'no firewall'}"
            f", reverted after {self.lockdown_revert_seconds} s unless a new connection works",
            "ban the attacking addresses found in the logs",
        ]

    def preflight(self) -> str:
        """The host lock, then step 0: the operator's address, and the address SSH is locked to."""
        s = self.s
        self.take_lock()
        with s.step("0. Preflight: operator address"):
            self.operator = operator_address(s)
            self.lock_to = lockdown_address(
                s, self.operator, self.allow_ssh_from, override=self.override_lockout_check
            )
        print(
            f"server sees this connection from {self.operator}; SSH will be restricted to {self.lock_to}"
        )
        return self.lock_to

    def rotate(self) -> pd.DataFrame:
        """Step 1: rotate all secrets (and the operator's secrets file)."""
        with self.s.step(ROTATE_STEP):
            self.rotation = rotate_secrets(
                self.s, update_operator_secrets=self.update_operator_secrets
            )
            kept = {k: v for k, v in asdict(self.rotation).items() if k != "output"}
            self.s.evidence.write_text(ROTATION_FILE, json.dumps(kept, indent=1) + "\n")
        print(self.rotation.output)
        print("operator's secrets file:", self.rotation.operator_secrets_updated)
        return self.s.checks_table().tail(4)

    def lock_down(self) -> pd.DataFrame:
        """Step 2: lock SSH down to one address, proven from a new connection (or reverted)."""
        assert self.lock_to is not None, "run preflight() first"
        with self.s.step(LOCKDOWN_STEP):
            self.lockdown = lock_down_ssh(
                self.s, self.lock_to, revert_after_s=self.lockdown_revert_seconds
            )
            prove_from_outside(self.s, self.lockdown)
            self.s.evidence.write_text(
                LOCKDOWN_FILE, json.dumps(asdict(self.lockdown), indent=1, default=str) + "\n"
            )
        print(self.lockdown.new_connection)
        return self.lockdown.table()

    def investigate(self) -> Findings:
        """Step 3: logins, fail2ban, admin API calls; the known addresses are never flagged."""
        with self.s.step("3. Investigate"):
            self.findings = investigate(self.s, self.operator, self.known_addresses)
        return self.findings

    def ban(self) -> None:
        """Step 3b: ban the attackers found."""
        assert self.findings is not None, "run investigate() first"
        with self.s.step("3b. Ban attackers"):
            print("attackers:", self.findings.attackers or "none found")
            ban_attackers(self.s, self.findings)

    def preserve(self) -> Preserved:
        """Step 4: preserve the evidence on the server (archive, SHA-256)."""
        with self.s.step("4. Preserve evidence"):
            self.preserved = preserve_evidence(self.s)
        p = self.preserved
        print(p.remote, p.sha256, p.size, "bytes")
        return p

    def draft(self) -> None:
        """Step 5: the incident document and the advisory."""
        assert self.findings is not None, "run investigate() first"
        with self.s.step("5. Draft incident document"):
            self.doc, self.advisory = draft_documents(
                self.s, self.rotation, self.lockdown, self.findings, self.preserved
            )
        print(self.doc)
        print(self.advisory)

    def notify(self) -> Notification:
        """Step 5b: the notification to Sami, and the elapsed-time check."""
        assert self.doc is not None and self.findings is not None, "run draft() first"
        with self.s.step("5b. Notify Sami"):
            notice = draft_notification(self.s, self.doc, self.preserved, self.findings)
            elapsed_check(self.s)
        print(notice.text)
        return notice
