"""Scenario 6 faults: `intrusion` (both targets), and on the sandbox `leaked-admin-key`,
`partial-rotation` and `evidence-dir-blocked`.

`intrusion` has two adapters, because the targets truly differ: the loopback sandbox
has no fail2ban and no second address, so it writes the signals (below); the twin
has a real sshd, fail2ban and ufw, so real failed password logins come from a third
address of this machine on its bridge (.66, not the lockdown proof's .9) until the
real fail2ban bans it; its heal unbans every address and puts the firewall back to
the server's baseline (22, 80, 443 open), which also undoes a lockdown.

On the sandbox:

The signals are the runbook's: failed then accepted SSH logins from an
unknown address in the auth log, unexpected admin API calls, fail2ban
banning an authorized address, an admin key used from outside.

- Auth-log lines are written in Debian 12's rsyslog format (ISO time, host,
  `sshd[pid]:`), appended to the file sshd itself logs to.
- API calls are real requests to the API (on its own port, with `X-Real-IP`,
  which the API trusts from loopback as it does from nginx), so the API
  writes the access lines itself.
- fail2ban does not run on loopback: a status file with exactly the output of
  `fail2ban-client status sshd` stands in for it (profile key
  `security.fail2ban_status_file`).

The addresses are from the documentation ranges (RFC 5737): they only ever
appear in log text, nothing is sent to them.

Heal removes exactly the injected lines, the status file, and makes the
operator's secrets file agree with the app's `.env` again (a rotation during
the scenario changes ADMIN_KEY and WEBHOOK_SECRET; every other test reads the
admin key from `secrets.env`).
"""

from __future__ import annotations

import json
import os
import subprocess
import time
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import TYPE_CHECKING

from runbook.rehearsal.faults.registry import Fault, by_target, register
from runbook.rehearsal.target import RehearsalError
from runbook.sandbox.build.app import read_app_env
from runbook.sandbox.build.envfiles import read_env_file, write_env_file
from runbook.sandbox.procs import http_get

if TYPE_CHECKING:
    from runbook.sandbox.manager import Sandbox
    from runbook.twin.instance import Twin

ATTACKER = "203.0.113.66"  # got in: failed, then accepted logins; admin calls
SCANNER = "198.51.100.23"  # failed logins only; banned by fail2ban
OPERATOR = "127.0.0.1"  # the operator's address as the loopback server sees it
# Isolated mode: banning the operator's own address would cut the scenario's SSH
# off; a colleague's (authorized, passed as known_addresses) is banned instead.
COLLEAGUE = "192.0.2.10"
HOST = "dealix"
ADMIN_PATHS = ("/api/v1/admin/dlq/stats", "/api/v1/admin/approvals/pending")


def _side_file(sb: Sandbox) -> Path:
    return sb.state_dir / "faults-security.json"


def _remember(sb: Sandbox, **items: object) -> None:
    path = _side_file(sb)
    data = json.loads(path.read_text()) if path.exists() else {}
    data.update(items)
    path.write_text(json.dumps(data, indent=1))


def _recall(sb: Sandbox) -> dict:
    path = _side_file(sb)
    return json.loads(path.read_text()) if path.exists() else {}


def fail2ban_status_file(sb: Sandbox) -> Path:
    """Where the profile reads the stand-in for `fail2ban-client status sshd`."""
    return Path(sb.state["log_dir"]).parent / "lib" / "fail2ban" / "sshd.status"


def api_log(sb: Sandbox) -> Path:
    return sb.layout.program_log("dealix-api")


def auth_lines(now: datetime) -> list[str]:
    """Failed then accepted logins from ATTACKER, a scanner's failures.

    >>> lines = auth_lines(datetime(2026, 11, 27, 8, 0, tzinfo=UTC))
    >>> lines[0].split()[0], "Accepted password for deploy from 203.0.113.66" in lines[-2]
    ('2026-11-27T07:55:00.000000+00:00', True)
    """
    # recent enough for fail2ban's findtime (10 min) in isolated mode
    t0 = now - timedelta(minutes=5)
    out: list[str] = []

    def line(sec: int, pid: int, text: str) -> None:
        ts = (t0 + timedelta(seconds=sec)).isoformat(timespec="microseconds")
        out.append(f"{ts} {HOST} sshd[{pid}]: {text}")

    for i, user in enumerate(["admin", "ubuntu", "oracle", "root", "root"]):
        port = 40110 + i * 7
        line(
            i * 4,
            51200 + i,
            f"Failed password for invalid user {user} from {SCANNER} port {port} ssh2"
            if user not in ("root",)
            else f"Failed password for root from {SCANNER} port {port} ssh2",
        )
    for i in range(6):
        user = "deploy"
        line(
            60 + i * 3,
            51300 + i,
            f"Failed password for {user} from {ATTACKER} port {51234 + i} ssh2",
        )
    line(90, 51310, f"Accepted password for deploy from {ATTACKER} port 51302 ssh2")
    line(91, 51310, "pam_unix(sshd:session): session opened for user deploy(uid=1001) by (uid=0)")
    return out


def fail2ban_status_text(banned: list[str], failed: int = 11) -> str:
    """Exactly what `fail2ban-client status sshd` prints."""
    return (
        "Status for the jail: sshd\n"
        "|- Filter\n"
        f"|  |- Currently failed:\t{failed}\n"
        f"|  |- Total failed:\t{failed + 40}\n"
        "|  `- File list:\t/var/log/auth.log\n"
        "`- Actions\n"
        f"   |- Currently banned:\t{len(banned)}\n"
        f"   |- Total banned:\t{len(banned) + 3}\n"
        f"   `- Banned IP list:\t{' '.join(banned)}\n"
    )


def _call_api(sb: Sandbox, path: str, key: str, address: str) -> int:
    url = f"http://127.0.0.1:{sb.state['api_port']}{path}"
    ns = (sb.state.get("isolated") or {}).get("services_ns")
    if ns:  # isolated mode: the API listens on the server namespace's loopback
        from runbook.sandbox import isolated

        return isolated.http_status_in_ns(ns, url, {"X-API-Key": key, "X-Real-IP": address})
    status, _ = http_get(url, headers={"X-API-Key": key, "X-Real-IP": address}, timeout=10)
    return status


def _append(path: Path, lines: list[str]) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    with path.open("a", encoding="utf-8") as fh:
        fh.write("".join(f"{ln}\n" for ln in lines))


def _remove_lines(
    path: Path, drop: set[str] | None = None, containing: tuple[str, ...] = ()
) -> int:
    """Remove lines in place (same inode: the writer's O_APPEND fd keeps working)."""
    if not path.exists():
        return 0
    with path.open("r+", encoding="utf-8", errors="surrogateescape") as fh:
        lines = fh.read().splitlines(keepends=True)
        keep = [
            ln
            for ln in lines
            if ln.rstrip("\n") not in (drop or set()) and not any(c in ln for c in containing)
        ]
        if len(keep) == len(lines):
            return 0
        fh.seek(0)
        fh.write("".join(keep))
        fh.truncate()
    return len(lines) - len(keep)


def sync_operator_secrets(sb: Sandbox) -> list[str]:
    """Make secrets.env hold the app's current ADMIN_KEY and WEBHOOK_SECRET."""
    app = read_app_env(sb.layout)
    sec = read_env_file(sb.layout.secrets_file)
    want = {
        "DEALIX_ADMIN_KEY": app.get("ADMIN_KEY", ""),
        "DEALIX_WEBHOOK_SECRET": app.get("WEBHOOK_SECRET", ""),
    }
    changed = [k for k, v in want.items() if v and sec.get(k) != v]
    if changed:
        sec.update({k: want[k] for k in changed})
        tmp = sb.layout.secrets_file.with_name(sb.layout.secrets_file.name + ".tmp")
        write_env_file(
            tmp, sec, header="The operator's secrets for the Dealix sandbox. Never commit."
        )
        os.chmod(tmp, 0o600)
        os.replace(tmp, sb.layout.secrets_file)
    return changed


# ------------------------------------------------------------------ intrusion


def _intrusion(sb: Sandbox, _: str | None) -> None:
    lines = auth_lines(datetime.now(UTC))
    _append(Path(sb.state["auth_log"]), lines)
    _remember(sb, auth_lines=lines)
    # Probing the admin API with guessed keys: the API answers 401 and logs key=invalid.
    for path in ADMIN_PATHS:
        for guess in ("admin", "dealix-admin-2026"):
            status = _call_api(sb, path, guess, ATTACKER)
            if status != 401:
                raise RehearsalError("intrusion", f"{path} with a wrong key answered {status}")
    if sb.state.get("isolated"):
        from runbook.sandbox import isolated

        # The real fail2ban reads the lines above and bans on its own; it also
        # (wrongly) holds an authorized address.
        isolated.fail2ban(sb, "set", "sshd", "banip", COLLEAGUE)
        return
    status_file = fail2ban_status_file(sb)
    status_file.parent.mkdir(parents=True, exist_ok=True)
    # fail2ban banned the scanner and, wrongly, the operator's own address.
    status_file.write_text(fail2ban_status_text([SCANNER, OPERATOR]))


def _intrusion_heal(sb: Sandbox, _: str | None) -> None:
    _remove_lines(Path(sb.state["auth_log"]), drop=set(_recall(sb).get("auth_lines", [])))
    _remove_lines(api_log(sb), containing=(f" {ATTACKER} ",))
    fail2ban_status_file(sb).unlink(missing_ok=True)
    if sb.state.get("isolated"):
        from runbook.sandbox import isolated

        # and the scenario's lockdown: back to a fresh server's firewall
        isolated.fail2ban(sb, "unban", "--all")
        isolated.reset_firewall(sb)
    sync_operator_secrets(sb)


# ------------------------------------------------------------ leaked admin key


def _leaked_key(sb: Sandbox, _: str | None) -> None:
    # Someone outside holds the real key and uses it: the API grants the calls.
    key = sb.admin_key
    for path in ADMIN_PATHS:
        status = _call_api(sb, path, key, ATTACKER)
        if status != 200:
            raise RehearsalError("leaked-admin-key", f"{path} with the admin key answered {status}")


def _leaked_key_heal(sb: Sandbox, _: str | None) -> None:
    _remove_lines(api_log(sb), containing=(f" {ATTACKER} ",))
    sync_operator_secrets(sb)


def attacker_ip(st: dict) -> str:
    """The twin's intruder: a third address of this machine on the twin's bridge (.66),
    neither the operator's (.1) nor the outside vantage point of the lockdown proof (.9)."""
    return st["operator_ip"].rsplit(".", 1)[0] + ".66"


def _failed_password(host: str, source: str, user: str) -> None:
    """One password login that fails, from `source`: sshd logs "Failed password for ...
    from <source>", as a brute force does."""
    import socket

    import paramiko

    sock = socket.create_connection((host, 22), timeout=10, source_address=(source, 0))
    tr = paramiko.Transport(sock)
    try:
        tr.start_client(timeout=10)
        try:
            tr.auth_password(user, "Winter2026!")
        except paramiko.SSHException:
            pass  # the point: a refused login
    finally:
        tr.close()


def _twin_intrusion(t: Twin, _: str | None) -> str:
    st = t.state
    attacker = attacker_ip(st)
    dev = st["bridge"]
    have = subprocess.run(["ip", "-o", "addr", "show", "dev", dev], capture_output=True, text=True)
    if f" {attacker}/" not in have.stdout:
        subprocess.run(["ip", "addr", "add", f"{attacker}/24", "dev", dev], check=True)
    deadline = time.monotonic() + 120
    attempts = 0
    while time.monotonic() < deadline:
        for user in ("admin", "deploy", "root"):
            try:
                _failed_password(st["host"], attacker, user)
            except OSError:
                pass  # refused: the ban is in place
            attempts += 1
        banned = t.sh("fail2ban-client status sshd", check=False).stdout
        if attacker in banned:
            return f"{attempts} failed password logins from {attacker}; fail2ban banned it"
        time.sleep(1)
    raise RehearsalError("intrusion", f"fail2ban did not ban {attacker} after {attempts} logins")


def _twin_intrusion_heal(t: Twin, _: str | None) -> None:
    st = t.state
    t.sh(
        "fail2ban-client unban --all >/dev/null; "
        # back to the server's baseline firewall (a lockdown may have replaced 22/tcp)
        "ufw --force reset >/dev/null && for p in 22/tcp 80/tcp 443/tcp; do "
        "ufw allow $p >/dev/null; done && ufw --force enable >/dev/null"
    )
    subprocess.run(
        ["ip", "addr", "del", f"{attacker_ip(st)}/24", "dev", st["bridge"]],
        capture_output=True,
        check=False,
    )


register(
    Fault(
        "intrusion",
        f"An intrusion the runbook must see. Sandbox: auth log lines, failed logins from "
        f"{SCANNER}, failed then ACCEPTED logins for deploy from {ATTACKER}; admin API "
        f"probed from {ATTACKER} with wrong keys (401); fail2ban (a status file on loopback) "
        f"bans {SCANNER} and the operator's own {OPERATOR}. Twin: real failed password "
        "logins from a third address on the bridge (.66) until fail2ban's sshd jail bans it. "
        "Heal: those lines and the status file removed (sandbox), every address unbanned and "
        "the firewall back to 22/80/443 open (twin, isolated sandbox); secrets.env follows a "
        "rotation.",
        by_target(sandbox=_intrusion, twin=_twin_intrusion),
        by_target(sandbox=_intrusion_heal, twin=_twin_intrusion_heal),
    )
)

register(
    Fault(
        "leaked-admin-key",
        f"The admin key is used from {ATTACKER}: real admin API calls the API grants (200). "
        "Heal: removes those access lines; secrets.env follows a rotation (the notebook's "
        "rotation makes the leaked key useless, which is the point).",
        _leaked_key,
        _leaked_key_heal,
        targets=("sandbox",),
    )
)


# ------------------------------------------------------------ partial rotation

# The awk line of the app's rotate_secrets.sh that replaces WEBHOOK_SECRET.
_WEBHOOK_WANT = 'want["WEBHOOK_SECRET"] = ENVIRON["NEW_WEBHOOK_SECRET"]'


def _partial_rotation(sb: Sandbox, _: str | None) -> None:
    # A regression in the app's script: WEBHOOK_SECRET is no longer replaced, yet
    # the script still prints "rotated: ADMIN_KEY WEBHOOK_SECRET". Only a
    # before/after comparison of every key catches it.
    script = sb.layout.app_dir / "scripts" / "rotate_secrets.sh"
    text = script.read_text()
    if _WEBHOOK_WANT not in text:
        raise RehearsalError("partial-rotation", f"{script} no longer has the line to break")
    _remember(sb, rotate_script=text)
    script.write_text(text.replace(f"; {_WEBHOOK_WANT}", ""))


def _partial_rotation_heal(sb: Sandbox, _: str | None) -> None:
    original = _recall(sb).get("rotate_script")
    if original:
        (sb.layout.app_dir / "scripts" / "rotate_secrets.sh").write_text(original)
    sync_operator_secrets(sb)


register(
    Fault(
        "partial-rotation",
        "The app's scripts/rotate_secrets.sh stops replacing WEBHOOK_SECRET (ADMIN_KEY still "
        "rotates) while still printing that it rotated both. Heal: the original script; "
        "secrets.env follows the rotation.",
        _partial_rotation,
        _partial_rotation_heal,
        targets=("sandbox",),
    )
)


# ------------------------------------------------------------ evidence dir blocked


# The profile's security.evidence_dir on the sandbox (parameters/sandbox.yaml).
def _evidence_dir(sb: Sandbox) -> Path:
    return (sb.layout.log_dir / ".." / ".." / "root").resolve()


def _evidence_blocked(sb: Sandbox, _: str | None) -> None:
    # A full or read-only disk where the evidence goes, fixed later by hand: the
    # response fails after its rotation, at the first step that writes there.
    d = _evidence_dir(sb)
    if d.is_dir():
        d.rename(d.with_name("root.fault-aside"))
    d.write_text("not a directory (fault evidence-dir-blocked)\n")


def _evidence_blocked_heal(sb: Sandbox, _: str | None) -> None:
    d = _evidence_dir(sb)
    if d.is_file():
        d.unlink()
    aside = d.with_name("root.fault-aside")
    if aside.is_dir() and not d.exists():
        aside.rename(d)
    # the rotation before the failure changed the keys: secrets.env follows
    sync_operator_secrets(sb)


register(
    Fault(
        "evidence-dir-blocked",
        "The server's evidence folder (security.evidence_dir) is a file, so saving the "
        "firewall rules and the evidence tarball fail: a security response fails after its "
        "rotation. Heal: the folder back.",
        _evidence_blocked,
        _evidence_blocked_heal,
        targets=("sandbox",),
    )
)
