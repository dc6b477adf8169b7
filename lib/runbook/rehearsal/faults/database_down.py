"""Faults of scenario 3, database down (notebooks/database_down.ipynb), and the
hand-off to restore (`cluster-corrupt`).

Written once against the Target (runbook.rehearsal.target), for the sandbox and the twin:

- `postgres-down`: Postgres stopped; a restart fixes it.
- `disk-full`: the backups directory becomes a size-limited tmpfs holding the real
  backups plus old filler backups up to the last byte, so writes really fail with
  ENOSPC. Needs root (mount): the twin's server, a sandbox run as root.
- `db-corrupt`: the dealix database's `pg_class` file gets a garbage first page, so
  every connection to dealix fails with "invalid page in block 0" while the cluster
  runs. Heal puts back the data dir copied before the damage.
- `pool-exhausted`: the API's connections are refused while the superuser's psql
  works. The heal is one (restart the API); the apply has two adapters (below).

A target's own, each a meaning of its own:

- `postgres-crash` (sandbox): a bad setting stays in the config, so the service
  manager gives up (supervisord FATAL, systemd's "failed") and the runbook's restart
  fails too.
- `postgres-killed` (twin): SIGKILL of the postmaster: postgresql@15-main fails while
  the wrapper postgresql.service still says active (a Debian finding, TWIN_NOTES §1.6);
  supervisord has no such wrapper, so the sandbox cannot show it.
- `cluster-corrupt` (twin): pg_control overwritten, the cluster will not start.
- `webhooks-during-outage` (sandbox): Postgres stopped and signed webhooks sent to the
  sandbox's API, so they land in WEBHOOKS_DLQ; the event_ids are written to
  `webhooks-during-outage.json` in the state dir so a test can prove none is lost.
- `dlq-poison` (sandbox): an item no replay can take (a JSON array, not an object) at
  the head of OUTBOUND_DLQ: each drain batch puts it back, so the runbook's drain
  stops with it left and its "0 left" check fails. Heal removes it (what an
  operator does with a malformed item: it can never be replayed).
"""

from __future__ import annotations

import contextlib
import hashlib
import hmac
import json
import shlex
import subprocess
import time
import urllib.request
import uuid
from pathlib import Path
from typing import TYPE_CHECKING

from runbook.rehearsal.faults import _fill
from runbook.rehearsal.faults.registry import Fault, by_target, register
from runbook.rehearsal.target import RehearsalError, Target

if TYPE_CHECKING:
    from runbook.sandbox.manager import Sandbox
    from runbook.twin.instance import Twin

CRASH_MARK = "# runbook-fault postgres-crash"
HEADROOM = 16 * 1024 * 1024
WEBHOOK_EVENTS = 12
CLUSTER = "postgresql@15-main"
# the sandbox's API leaks its own connections up to max_connections 40
HOG_COUNT = "/run/runbook-fault-pool.count"

q = shlex.quote


def _postgres_down(t: Target, _: str | None) -> None:
    t.service_stop("postgres")


def _postgres_up(t: Target, _: str | None) -> None:
    t.service_start("postgres")
    t.wait_deep("postgres", "green")


register(
    Fault(
        "postgres-down",
        "Stop PostgreSQL (supervisorctl stop postgresql; on the twin systemctl stop "
        "postgresql): the API answers 500 OperationalError, webhooks go to WEBHOOKS_DLQ, "
        "/health/deep shows postgres red. Heal: start it and wait for SELECT 1 and deep "
        "health postgres green.",
        _postgres_down,
        _postgres_up,
    )
)


# --------------------------------------------------------------------------- pool-exhausted


def _leak_connections(sb: Sandbox, _: str | None) -> str:
    # The sandbox's stand-in API has a leak switch: it leaks its own connections.
    status, body = sb.api(
        "/api/v1/admin/_sandbox/leak-connections", method="POST", admin=True, timeout=60
    )
    if status >= 300:
        raise RehearsalError("pool-exhausted", f"leak-connections answered {status}: {body}")
    sb.wait_deep("postgres", "red")
    return "the API leaks its connections until Postgres refuses more"


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


def _hog_connections(t: Twin, _: str | None) -> str:
    # The twin runs the real app, which has no leak switch: a process inside
    # dealix-api.service's cgroup holds real connections as the app's role, so that
    # `systemctl restart dealix-api` ends them as it ends a leaking app's.
    t.sh(
        # every fd off the SSH channel, or the session waits for the hog to end
        f"rm -f {HOG_COUNT}; (cd /opt/dealix && exec setsid .venv/bin/python -c "
        f"{q(_HOG)} {HOG_COUNT}) >/dev/null 2>&1 < /dev/null &"
    )
    held = t.wait_sh("connections held", f"cat {HOG_COUNT}", 90).strip()
    t.wait_deep("postgres", "red")
    return f"{held} idle connections as dealix held inside dealix-api.service's cgroup"


def _restart_api(t: Target, _: str | None) -> None:
    t.service_restart("api")
    t.wait_deep("postgres", "green")


register(
    Fault(
        "pool-exhausted",
        "The API's connections to Postgres are used up (the sandbox's API leaks its own "
        "up to max_connections 40; on the twin, idle connections as dealix held inside "
        "dealix-api.service's cgroup): the API and Postgres are up, superuser psql works, "
        "/health/deep shows postgres red. Heal: restart dealix-api, which drops them.",
        by_target(sandbox=_leak_connections, twin=_hog_connections),
        _restart_api,
    )
)


# --------------------------------------------------------------------------- disk-full


def _disk_aside(t: Target) -> str:
    return str(t.scratch / "disk-full-backups")


def _disk_evidence(t: Target) -> tuple[str, str]:
    """The armor's evidence folder under the backups dir, and where it is held meanwhile."""
    return str(t.backups_dir / "evidence"), str(t.scratch / "disk-full-evidence")


def _disk_full(t: Target, _: str | None) -> str:
    backups, aside = str(t.backups_dir), _disk_aside(t)
    evidence, held = _disk_evidence(t)
    if t.sh(f"mountpoint -q {q(backups)}", check=False).returncode == 0:
        raise RehearsalError("disk-full", f"{backups} is already a mount point (heal first)")
    if t.sh('test "$(id -u)" = 0', check=False).returncode != 0:
        raise RehearsalError("disk-full", "needs root (it mounts a size-limited tmpfs)")
    size = int(t.sh(f"du -sb {q(backups)} | cut -f1").stdout.strip()) + HEADROOM
    t.sh(
        f"mkdir -p {q(str(t.scratch))} && rm -rf {q(aside)} && cp -a {q(backups)} {q(aside)} && "
        # A full disk hides no file: the armor's evidence dumps (immutable, which a tmpfs
        # copy is not) stay the real ones, bound back over the tmpfs. Hidden by it, every
        # later changing run's armor check found them missing (CI, after test_armor's dumps).
        f"rm -rf {q(aside)}/evidence && "
        f"if [ -d {q(evidence)} ]; then mkdir -p {q(held)} && "
        f"mount --bind {q(evidence)} {q(held)}; fi && "
        f"mount -t tmpfs -o size={size},mode=0755 runbook-fault-disk-full {q(backups)} && "
        f"chown --reference={q(aside)} {q(backups)} && "
        f"cp -a {q(aside)}/. {q(backups)}/ && "
        f"if mountpoint -q {q(held)}; then mkdir -p {q(evidence)} && "
        f"mount --bind {q(held)} {q(evidence)}; fi && "
        # the filling is stdlib only: one script for both targets, run on the server
        f"python3 -c {q(Path(_fill.__file__).read_text())} {q(backups)} {_fill.FILLER_BYTES}",
        timeout=300,
    )
    used = t.sh(f"df -P {q(backups)} | tail -1").stdout.split()
    return f"{backups} is a {size // 2**20} MiB tmpfs, {used[4]} used"


def _disk_heal(t: Target, _: str | None) -> None:
    backups, aside = q(str(t.backups_dir)), q(_disk_aside(t))
    evidence, held = (q(p) for p in _disk_evidence(t))
    t.sh(
        f"if mountpoint -q {evidence}; then umount {evidence}; fi; "
        f"if mountpoint -q {backups}; then umount {backups}; fi; "
        f"if mountpoint -q {held}; then umount {held} && rmdir {held}; fi; "
        # no clobber: what the scenario left (its rotation) stays as it is
        f"if [ -d {aside} ]; then cp -an {aside}/. {backups}/ && rm -rf {aside}; fi",
        timeout=300,
    )


register(
    Fault(
        "disk-full",
        "The backups dir becomes a small tmpfs (its size plus 16 MiB) holding the real "
        "backups plus old filler backups up to the last byte: writes fail with ENOSPC "
        "(root only). Heal: unmount it; the real backups are back as before.",
        _disk_full,
        _disk_heal,
    )
)


# --------------------------------------------------------------------------- db-corrupt


def _pg_aside(t: Target) -> str:
    return str(t.scratch / "db-corrupt-pgdata")


def _copy_aside(t: Target) -> None:
    """Stop the cluster and copy its data dir aside (the heal puts it back)."""
    t.service_stop("postgres")
    aside = q(_pg_aside(t))
    t.sh(
        f"mkdir -p {q(str(t.scratch))} && rm -rf {aside} && cp -a {q(str(t.pgdata))} {aside}",
        timeout=300,
    )


def _db_corrupt(t: Target, _: str | None) -> str:
    rel = str(t.sql("SELECT pg_relation_filepath('pg_class')")[0][0])
    if not rel.startswith("base/"):
        raise RehearsalError("db-corrupt", f"unexpected pg_class path {rel!r}")
    _copy_aside(t)
    pgdata = q(str(t.pgdata))
    t.sh(
        f"head -c 8192 /dev/urandom | dd of={pgdata}/{rel} bs=8192 count=1 conv=notrunc "
        # without the relcache init files the backend must read pg_class itself
        f"status=none && rm -f {pgdata}/base/*/pg_internal.init"
    )
    t.service_start("postgres")  # the cluster runs; only the dealix database is damaged
    t.wait_deep("postgres", "red")
    return f"garbage over the first page of dealix's pg_class ({rel}); the cluster runs"


def _corrupt_heal(t: Target, _: str | None) -> None:
    aside, pgdata = q(_pg_aside(t)), q(str(t.pgdata))
    if t.sh(f"test -d {aside}", check=False).returncode == 0:
        t.service_stop("postgres")
        t.sh(f"rm -rf {pgdata} && mv {aside} {pgdata}", timeout=300)
    _postgres_up(t, None)


register(
    Fault(
        "db-corrupt",
        "Garbage over the first page of the dealix database's pg_class file: every "
        "connection to dealix fails with 'invalid page in block 0'; the cluster runs. "
        "Heal: put back the data dir copied just before the damage.",
        _db_corrupt,
        _corrupt_heal,
    )
)


def _cluster_corrupt(t: Twin, _: str | None) -> str:
    _copy_aside(t)
    t.sh(f"head -c 8192 /dev/urandom | dd of={t.pgdata}/global/pg_control conv=notrunc status=none")
    t.sh(f"systemctl start {CLUSTER}", check=False)
    state = t.sh(f"systemctl is-active {CLUSTER}", check=False).stdout.strip()
    if state == "active":
        raise RehearsalError("cluster-corrupt", "the cluster still started")
    return f"pg_control overwritten: {CLUSTER} will not start ({state})"


register(
    Fault(
        "cluster-corrupt",
        f"The cluster's pg_control is overwritten: {CLUSTER} will not start (the hand-off "
        "to restore). Heal: the data dir copied aside before the damage is put back.",
        _cluster_corrupt,
        _corrupt_heal,
        targets=("twin",),
    )
)


# --------------------------------------------------------------------------- postgres-killed


def _killed(t: Twin, _: str | None) -> str:
    t.sh(f"kill -KILL $(head -1 {t.pgdata}/postmaster.pid)")
    return f"postmaster SIGKILLed; {CLUSTER} is failed, postgresql still 'active'"


register(
    Fault(
        "postgres-killed",
        "SIGKILL the cluster's postmaster: postgresql@15-main fails while the wrapper "
        "postgresql.service still says active (a Debian fidelity finding, TWIN_NOTES §1.6). "
        "Heal: reset-failed and start it, wait for deep health postgres green.",
        _killed,
        _postgres_up,
        targets=("twin",),
    )
)


# --------------------------------------------------------------------------- postgres-crash


def _pg_conf(sb: Sandbox) -> Path:
    return sb.layout.pgdata / "sandbox.conf"


def _crash(sb: Sandbox, _: str | None) -> None:
    conf = _pg_conf(sb)
    original = conf.read_text()
    sb.stop("postgresql")
    # The bad setting stays until heal: every start fails, the runbook's restart included.
    conf.write_text(original + f"\n{CRASH_MARK}\nshared_buffers = 'runbook-fault'\n")
    try:
        # The failed start is the point: supervisord answers with a fault.
        with contextlib.suppress(Exception):
            sb.rpc(timeout=60).supervisor.startProcess("postgresql", True)
        deadline = time.monotonic() + 30
        while sb.programs()["postgresql"]["statename"] != "FATAL":
            if time.monotonic() > deadline:
                raise RehearsalError("postgres-crash", "postgres did not end FATAL")
            time.sleep(0.2)
    except BaseException:
        conf.write_text(original)  # the fault did not take: leave no bad config behind
        raise


def _crash_heal(sb: Sandbox, _: str | None) -> None:
    conf = _pg_conf(sb)
    text = conf.read_text()
    if CRASH_MARK in text:
        conf.write_text(text.split(f"\n{CRASH_MARK}")[0] + "\n")
    _postgres_up(sb, None)


register(
    Fault(
        "postgres-crash",
        "Postgres crashes and will not start until healed (supervisord FATAL = systemd "
        "'failed'): a bad setting stays in its config, so the runbook's restart fails too. "
        "Heal: remove the setting, start it and wait for deep health postgres green.",
        _crash,
        _crash_heal,
        targets=("sandbox",),
    )
)


# --------------------------------------------------------------------------- webhooks


def webhook_events_file(sb: Sandbox) -> Path:
    """Where webhooks-during-outage lists the event_ids it sent (read by the tests)."""
    return sb.state_dir / "webhooks-during-outage.json"


def send_webhook(sb: Sandbox, source: str, payload: dict[str, object]) -> int:
    """POST one signed webhook to the sandbox API (202: queued in WEBHOOKS_DLQ while Postgres is down)."""
    secret = sb.secrets()["DEALIX_WEBHOOK_SECRET"]
    raw = json.dumps(payload).encode()
    sig = "sha256=" + hmac.new(secret.encode(), raw, hashlib.sha256).hexdigest()
    req = urllib.request.Request(  # noqa: S310 - the local sandbox URL
        sb.state["base_url"] + f"/api/v1/webhooks/{source}",
        data=raw,
        method="POST",
        headers={"Content-Type": "application/json", "X-Dealix-Signature": sig},
    )
    with urllib.request.urlopen(req, timeout=10) as resp:  # noqa: S310 - local sandbox URL
        return int(resp.status)


def _webhooks_outage(sb: Sandbox, _: str | None) -> None:
    sb.stop("postgresql")
    sent: list[str] = []
    for n in range(WEBHOOK_EVENTS):
        event_id = f"evt_outage_{uuid.uuid4().hex[:16]}"
        source = ("stripe", "hubspot", "whatsapp")[n % 3]
        status = send_webhook(sb, source, {"event_id": event_id, "type": "lead.updated", "n": n})
        if status != 202:
            raise RehearsalError(
                "webhooks-during-outage", f"{event_id} answered {status}, expected 202 (queued)"
            )
        sent.append(event_id)
    webhook_events_file(sb).write_text(json.dumps({"event_ids": sent}, indent=2) + "\n")


register(
    Fault(
        "webhooks-during-outage",
        f"Stop Postgres and send {WEBHOOK_EVENTS} signed webhooks: each is answered 202 and "
        "queued in WEBHOOKS_DLQ; their event_ids are listed in webhooks-during-outage.json "
        "in the state dir. Heal: start Postgres (the heal's settle drains the DLQ).",
        _webhooks_outage,
        _postgres_up,
        targets=("sandbox",),
    )
)


# --------------------------------------------------------------------------- dlq-poison

POISON = json.dumps(["runbook-fault dlq-poison: not a DLQ item"])
POISON_QUEUE = "OUTBOUND_DLQ"


def _redis(sb: Sandbox, *args: str) -> str:
    """One redis-cli command where the sandbox's Redis listens (a namespace when isolated)."""
    ns = (sb.state.get("isolated") or {}).get("services_ns")
    cmd = ["redis-cli", "-h", "127.0.0.1", "-p", str(sb.state["redis_port"]), *args]
    out = subprocess.run(
        ["ip", "netns", "exec", ns, *cmd] if ns else cmd,
        capture_output=True,
        text=True,
        timeout=30,
        check=True,
    )
    return out.stdout.strip()


def _poison(sb: Sandbox, _: str | None) -> None:
    _redis(sb, "LPUSH", POISON_QUEUE, POISON)


def _poison_heal(sb: Sandbox, _: str | None) -> None:
    _redis(sb, "LREM", POISON_QUEUE, "0", POISON)


register(
    Fault(
        "dlq-poison",
        f"Put an item no replay can take (a JSON array) at the head of {POISON_QUEUE}: every "
        "drain batch pushes it back, so a drain stops with 1 left and the runbook's "
        "'0 left' check fails. Heal: remove it (LREM), as an operator removes a malformed item.",
        _poison,
        _poison_heal,
        # not yet rehearsed on the twin (its Redis is reached over SSH, not in a namespace)
        targets=("sandbox",),
    )
)
