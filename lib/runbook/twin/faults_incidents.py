"""Twin faults of the incident scenarios (database_down, restore_incident, security_incident),
done the production way on the systemd-booted server, with the sandbox's names where the
meaning is the same (lib/runbook/sandbox/faults/).

- `pool-exhausted`: real idle connections as the app's role (its DATABASE_URL), held by a
  process inside dealix-api.service's own cgroup, opened until Postgres refuses more
  (Debian's max_connections 100, 3 reserved): the API's connections are refused while the
  superuser's psql still works. `systemctl restart dealix-api` ends them, as it ends a
  leaking app's, because systemd kills the whole control group.
- `disk-full`: /var/backups/postgres becomes a size-limited tmpfs holding the real backups
  plus old filler backups up to the last byte: writes really fail with ENOSPC.
- `db-corrupt`: garbage over the first page of the dealix database's pg_class file, so
  every connection to dealix fails ("invalid page in block 0") while the cluster runs.
  The data dir is copied aside first (cluster stopped); heal puts it back.
- `cluster-corrupt`: the cluster's pg_control is overwritten: postgresql@15-main will not
  start ("incorrect checksum in control file"), the hand-off to restore. Heal as above.
- `intrusion`: real failed password logins (admin, deploy, root) from a third address of
  this machine on the bridge (.66, not the lockdown proof's .9) until the real fail2ban
  (sshd jail, /var/log/auth.log) bans it. Heal: unban every address and
  put the firewall back to the server's baseline (22, 80, 443 open), which also undoes
  a security_incident lockdown.

Example::

    >>> from runbook.twin import faults
    >>> {"pool-exhausted", "disk-full", "db-corrupt", "intrusion"} <= {
    ...     f.name for f in faults.registry()}
    True
"""

from __future__ import annotations

import shlex
import subprocess
import time
from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING

from runbook.sandbox.faults import _fill
from runbook.twin._registry import Fault, register
from runbook.twin.common import TwinError

if TYPE_CHECKING:
    from runbook.twin.instance import Twin

CLUSTER = "postgresql@15-main"
DATA = "/var/lib/postgresql/15/main"
ASIDE = "/var/lib/postgresql/15/main.runbook-fault"
BACKUPS = "/var/backups/postgres"
BACKUPS_ASIDE = "/var/tmp/runbook-fault-disk-full"
HOG_COUNT = "/run/runbook-fault-pool.count"
HEADROOM = 16 * 1024 * 1024


def _wait(t: Twin, what: str, probe: str, timeout: float = 60) -> str:
    """Poll a shell probe on the twin until it exits 0; its output."""
    deadline = time.monotonic() + timeout
    last = ""
    while time.monotonic() < deadline:
        r = t.ssh(probe, check=False, timeout=30)
        if r.returncode == 0:
            return r.stdout
        last = (r.stdout + r.stderr).strip()[-300:]
        time.sleep(0.5)
    raise TwinError("fault", f"{what}: not reached within {timeout:.0f} s (last: {last})")


def _deep(t: Twin, want: str, timeout: float = 60) -> None:
    # On the box itself, as production's `curl https://api.dealix.me/health/deep | jq`.
    _wait(
        t,
        f"deep health postgres {want}",
        "curl -s https://api.dealix.me/health/deep | jq -e "
        + shlex.quote(f'.postgres.status == "{want}"'),
        timeout,
    )


# ------------------------------------------------------------------ pool-exhausted

_HOG = r"""
import os, subprocess, sys, time, psycopg
cg = subprocess.run(["systemctl", "show", "-P", "ControlGroup", "dealix-api"],
                    capture_output=True, text=True, check=True).stdout.strip()
if not cg:
    sys.exit("dealix-api has no control group: is it running?")
# Inside the API's own cgroup: its restart ends these connections, as a leaking app's.
with open(f"/sys/fs/cgroup{cg}/cgroup.procs", "w") as fh:
    fh.write(str(os.getpid()))
url = next(l.split("=", 1)[1].strip() for l in open("/opt/dealix/.env")
           if l.startswith("DATABASE_URL="))
held = []
while True:
    try:
        held.append(psycopg.connect(url, connect_timeout=5))
    except psycopg.OperationalError:
        break
with open(sys.argv[1], "w") as fh:
    fh.write(str(len(held)))
while True:
    time.sleep(3600)
"""


def _pool_exhausted(t: Twin) -> str:
    t.ssh(
        # every fd off the SSH channel, or the session waits for the hog to end
        f"rm -f {HOG_COUNT}; (cd /opt/dealix && exec setsid .venv/bin/python -c "
        f"{shlex.quote(_HOG)} {HOG_COUNT}) >/dev/null 2>&1 < /dev/null &"
    )
    held = _wait(t, "connections held", f"cat {HOG_COUNT}", 90).strip()
    _deep(t, "red")
    return f"{held} idle connections as dealix held inside dealix-api.service's cgroup"


def _pool_heal(t: Twin) -> None:
    t.ssh("systemctl restart dealix-api")
    _wait(t, "API up", "curl -sf http://127.0.0.1:8001/health >/dev/null")
    _deep(t, "green")


# ------------------------------------------------------------------ disk-full

# the sandbox's filling, run as a script on the server (it is stdlib only)
_FILL = Path(_fill.__file__).read_text()


def _disk_full(t: Twin) -> str:
    if t.ssh(f"mountpoint -q {BACKUPS}", check=False).returncode == 0:
        raise TwinError("fault", f"disk-full: {BACKUPS} is already a mount point (heal first)")
    real = int(t.ssh(f"du -sb {BACKUPS} | cut -f1").stdout.strip())
    size = real + HEADROOM
    t.ssh(
        f"rm -rf {BACKUPS_ASIDE} && cp -a {BACKUPS} {BACKUPS_ASIDE} && "
        f"mount -t tmpfs -o size={size},mode=0755 runbook-fault-disk-full {BACKUPS} && "
        f"cp -a {BACKUPS_ASIDE}/. {BACKUPS}/ && chown postgres:postgres {BACKUPS} && "
        f"python3 -c {shlex.quote(_FILL)} {BACKUPS} {_fill.FILLER_BYTES}"
    )
    df = t.ssh(f"df -P {BACKUPS} | tail -1").stdout.split()
    return f"{BACKUPS} is a {size // 2**20} MiB tmpfs, {df[4]} used"


def _disk_heal(t: Twin) -> None:
    t.ssh(
        f"if mountpoint -q {BACKUPS}; then umount {BACKUPS}; fi; "
        f"if [ -d {BACKUPS_ASIDE} ]; then cp -an {BACKUPS_ASIDE}/. {BACKUPS}/ && "
        f"rm -rf {BACKUPS_ASIDE}; fi"
    )


# ------------------------------------------------------------------ db-corrupt, cluster-corrupt


def _aside_copy(t: Twin) -> None:
    """Stop the cluster and copy its data dir aside (the heal puts it back)."""
    t.ssh(
        f"systemctl stop {CLUSTER} && rm -rf {ASIDE} && cp -a {DATA} {ASIDE}",
        timeout=300,
    )


def _db_corrupt(t: Twin) -> str:
    rel = t.ssh(
        "cd / && sudo -n -u postgres psql -XAtq -d dealix -c "
        "\"SELECT pg_relation_filepath('pg_class')\""
    ).stdout.strip()
    if not rel.startswith("base/"):
        raise TwinError("fault", f"db-corrupt: unexpected pg_class path {rel!r}")
    _aside_copy(t)
    t.ssh(
        f"head -c 8192 /dev/urandom | dd of={DATA}/{rel} bs=8192 count=1 conv=notrunc "
        f"status=none && rm -f {DATA}/base/*/pg_internal.init && systemctl start {CLUSTER}"
    )
    _deep(t, "red")
    return f"garbage over the first page of dealix's pg_class ({rel}); the cluster runs"


def _cluster_corrupt(t: Twin) -> str:
    _aside_copy(t)
    t.ssh(f"head -c 8192 /dev/urandom | dd of={DATA}/global/pg_control conv=notrunc status=none")
    t.ssh(f"systemctl start {CLUSTER}", check=False)
    state = t.ssh(f"systemctl is-active {CLUSTER}", check=False).stdout.strip()
    if state == "active":
        raise TwinError("fault", "cluster-corrupt: the cluster still started")
    return f"pg_control overwritten: {CLUSTER} will not start ({state})"


def _corrupt_heal(t: Twin) -> None:
    t.ssh(
        f"if [ -d {ASIDE} ]; then systemctl stop {CLUSTER}; rm -rf {DATA} && "
        f"mv {ASIDE} {DATA}; fi; systemctl reset-failed {CLUSTER}; systemctl restart postgresql",
        timeout=300,
    )
    _wait(t, "SELECT 1", "cd / && sudo -n -u postgres psql -XAtq -d dealix -c 'SELECT 1'")
    _deep(t, "green")


# ------------------------------------------------------------------ intrusion


def attacker_ip(st: dict) -> str:
    """The intruder's address: a third address of this machine on the twin's bridge (.66),
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


def _intrusion(t: Twin) -> str:
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
        banned = t.ssh("fail2ban-client status sshd", check=False).stdout
        if attacker in banned:
            return f"{attempts} failed password logins from {attacker}; fail2ban banned it"
        time.sleep(1)
    raise TwinError("fault", f"intrusion: fail2ban did not ban {attacker} after {attempts} logins")


def _intrusion_heal(t: Twin) -> None:
    st = t.state
    t.ssh(
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


def _or_heal(apply: Callable[[Twin], str], heal: Callable[[Twin], None]) -> Callable[[Twin], str]:
    """An apply that heals what it did when it fails half-way: a fault is recorded (and
    healed by `runbook twin heal`) only once its apply returned."""

    def go(t: Twin) -> str:
        try:
            return apply(t)
        except BaseException:
            heal(t)
            raise

    return go


def _fault(
    name: str, description: str, apply: Callable[[Twin], str], heal: Callable[[Twin], None]
) -> None:
    register(Fault(name, description, _or_heal(apply, heal), heal))


_fault(
    "pool-exhausted",
    "Idle connections as dealix (the app's DATABASE_URL) inside dealix-api.service's "
    "cgroup until Postgres refuses more: /health/deep postgres red, superuser psql works. "
    "Heal: systemctl restart dealix-api (ends them with the API's cgroup).",
    _pool_exhausted,
    _pool_heal,
)
_fault(
    "disk-full",
    f"{BACKUPS} becomes a small tmpfs holding the real backups plus old filler backups "
    "up to the last byte (ENOSPC). Heal: unmount it; the real backups are as before.",
    _disk_full,
    _disk_heal,
)
_fault(
    "db-corrupt",
    "Garbage over the first page of dealix's pg_class file: every connection to dealix "
    "fails ('invalid page in block 0'); the cluster runs. Heal: the data dir copied aside "
    "before the damage is put back.",
    _db_corrupt,
    _corrupt_heal,
)
_fault(
    "cluster-corrupt",
    f"The cluster's pg_control is overwritten: {CLUSTER} will not start. "
    "Heal: the data dir copied aside before the damage is put back.",
    _cluster_corrupt,
    _corrupt_heal,
)
_fault(
    "intrusion",
    "Real failed password logins from a third address on the bridge (.66) until "
    "fail2ban's sshd jail bans it. Heal: unban all, and the firewall back to 22/80/443 open (this also "
    "undoes a security_incident lockdown).",
    _intrusion,
    _intrusion_heal,
)
