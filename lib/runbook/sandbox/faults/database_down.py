"""Faults of scenario 3, database down (notebooks/database_down.ipynb).

- `postgres-down`: Postgres stopped; a restart fixes it.
- `pool-exhausted`: the API leaks connections until Postgres refuses more.

- `postgres-crash`: Postgres crashed and will not start until healed: a bad
  setting stays in its config, so the service manager gives up (supervisord
  FATAL, systemd's "failed") and the runbook's restart fails too. The plain
  "service failed, a restart fixes it" case is `postgres-down`.
- `disk-full`: the backups directory becomes a small size-limited tmpfs
  holding the real backups plus old filler backups up to the last byte, so
  writes really fail with ENOSPC. Needs root (mount).
- `db-corrupt`: the dealix database's `pg_class` file gets a garbage first
  page, so every connection to dealix fails with "invalid page in block 0".
  Heal puts back the data dir copied before the damage.
- `webhooks-during-outage`: Postgres stopped and signed webhooks sent, so they
  land in WEBHOOKS_DLQ; the event_ids are written to `webhooks-during-outage.json`
  in the state dir so a test can prove none is lost.
- `dlq-poison`: an item no replay can take (a JSON array, not an object) at the
  head of OUTBOUND_DLQ: each drain batch puts it back, so the runbook's drain
  stops with it left and its "0 left" check fails. Heal removes it (what an
  operator does with a malformed item: it can never be replayed).

Each is registered in the fault registry and healed by `runbook sandbox heal`.
"""

from __future__ import annotations

import contextlib
import hashlib
import hmac
import json
import os
import secrets
import shutil
import subprocess
import time
import urllib.request
import uuid
from pathlib import Path
from typing import TYPE_CHECKING

from runbook.sandbox.faults._fill import fill
from runbook.sandbox.faults._registry import Fault, register, start_and_wait

if TYPE_CHECKING:
    from runbook.sandbox.manager import Sandbox

CRASH_MARK = "# runbook-fault postgres-crash"
DISK_FULL_BYTES = 8 * 1024 * 1024
WEBHOOK_EVENTS = 12


def _pg_conf(sb: Sandbox) -> Path:
    return sb.layout.pgdata / "sandbox.conf"


def _chown_like(path: Path, ref: Path) -> None:
    st = ref.stat()
    os.chown(path, st.st_uid, st.st_gid)


# --------------------------------------------------------------------------- postgres-crash


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
                raise RuntimeError("postgres did not end FATAL after the bad setting")
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


# --------------------------------------------------------------------------- disk-full


def _aside(sb: Sandbox) -> Path:
    return sb.state_dir / "disk-full-backups"


def _disk_full(sb: Sandbox, _: str | None) -> None:
    if os.geteuid() != 0:
        raise RuntimeError("disk-full needs root (it mounts a size-limited tmpfs)")
    backups = sb.layout.backups_dir
    aside = _aside(sb)
    if aside.exists():
        shutil.rmtree(aside)
    shutil.copytree(backups, aside, copy_function=shutil.copy2)
    subprocess.run(
        ["mount", "-t", "tmpfs", "-o", f"size={DISK_FULL_BYTES},mode=0755", "tmpfs", str(backups)],
        check=True,
    )
    try:
        _fill(backups, aside)
    except BaseException:
        _disk_heal(sb, None)
        raise


def _fill(backups: Path, aside: Path) -> None:
    for f in sorted(aside.iterdir()):
        if f.is_file():  # the armor's evidence/ dumps stay where they are, under the tmpfs
            shutil.copy2(f, backups / f.name)
    fill(backups)


def _disk_heal(sb: Sandbox, _: str | None) -> None:
    backups = sb.layout.backups_dir
    subprocess.run(["umount", str(backups)], check=False)
    aside = _aside(sb)
    if aside.exists():
        for f in aside.iterdir():
            if f.is_file() and not (backups / f.name).exists():
                shutil.copy2(f, backups / f.name)
        shutil.rmtree(aside)


# --------------------------------------------------------------------------- db-corrupt


def _copy_dir(sb: Sandbox) -> Path:
    return sb.state_dir / "db-corrupt-pgdata"


def _db_corrupt(sb: Sandbox, _: str | None) -> None:
    rows = sb.query("SELECT pg_relation_filepath('pg_class')")
    relpath = rows[0][0]
    pgdata = sb.layout.pgdata
    sb.stop("postgresql")
    copy = _copy_dir(sb)
    if copy.exists():
        shutil.rmtree(copy)
    subprocess.run(["cp", "-a", str(pgdata), str(copy)], check=True)
    target = pgdata / relpath
    with target.open("r+b") as fh:
        fh.write(secrets.token_bytes(8192))
    # Without the relcache init files the backend must read pg_class itself.
    for init in pgdata.glob("base/*/pg_internal.init"):
        init.unlink()
    sb.start("postgresql")
    sb.wait_postgres()  # the cluster runs; only the dealix database is damaged
    sb.wait_deep("postgres", "red")


def _db_corrupt_heal(sb: Sandbox, _: str | None) -> None:
    copy = _copy_dir(sb)
    pgdata = sb.layout.pgdata
    if copy.exists():
        sb.stop("postgresql")
        shutil.rmtree(pgdata)
        subprocess.run(["cp", "-a", str(copy), str(pgdata)], check=True)
        shutil.rmtree(copy)
    _postgres_up(sb, None)


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
            raise RuntimeError(f"webhook {event_id} answered {status}, expected 202 (queued)")
        sent.append(event_id)
    webhook_events_file(sb).write_text(json.dumps({"event_ids": sent}, indent=2) + "\n")


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


def _postgres_down(sb: Sandbox, _: str | None) -> None:
    sb.stop("postgresql")


def _postgres_up(sb: Sandbox, _: str | None) -> None:
    start_and_wait(sb, "postgresql", sb.wait_postgres, "postgres")


def _leak_connections(sb: Sandbox, _: str | None) -> None:
    status, body = sb.api(
        "/api/v1/admin/_sandbox/leak-connections", method="POST", admin=True, timeout=60
    )
    if status >= 300:
        raise RuntimeError(f"leak-connections answered {status}: {body}")
    sb.wait_deep("postgres", "red")


def _restart_api(sb: Sandbox, _: str | None) -> None:
    sb.restart("dealix-api")
    sb.wait_api()
    sb.wait_deep("postgres", "green")


register(
    Fault(
        "postgres-down",
        "Stop PostgreSQL (supervisorctl stop postgresql): the API answers 500 OperationalError, "
        "webhooks go to WEBHOOKS_DLQ, /health/deep shows postgres red. "
        "Heal: start it and wait for SELECT 1 and deep health postgres green.",
        _postgres_down,
        _postgres_up,
    )
)

register(
    Fault(
        "pool-exhausted",
        "Make the API leak database connections until Postgres refuses more "
        "(max_connections 40, 3 reserved for the superuser): the API and Postgres are up, "
        "superuser psql works, but /health/deep shows postgres red. "
        "Heal: restart dealix-api, which drops the connections.",
        _leak_connections,
        _restart_api,
    )
)
register(
    Fault(
        "postgres-crash",
        "Postgres crashes and will not start until healed (supervisord FATAL = systemd "
        "'failed'): a bad setting stays in its config, so the runbook's restart fails too. "
        "Heal: remove the setting, start it and wait for deep health postgres green.",
        _crash,
        _crash_heal,
    )
)
register(
    Fault(
        "disk-full",
        "The backups dir becomes an 8 MB tmpfs holding the real backups plus old filler "
        "backups up to the last byte: writes fail with ENOSPC (root only). "
        "Heal: unmount it; the real backups are back as before.",
        _disk_full,
        _disk_heal,
    )
)
register(
    Fault(
        "db-corrupt",
        "Garbage over the first page of the dealix database's pg_class file: every "
        "connection to dealix fails with 'invalid page in block 0'. "
        "Heal: put back the data dir copied just before the damage.",
        _db_corrupt,
        _db_corrupt_heal,
    )
)
register(
    Fault(
        "webhooks-during-outage",
        f"Stop Postgres and send {WEBHOOK_EVENTS} signed webhooks: each is answered 202 and "
        "queued in WEBHOOKS_DLQ; their event_ids are listed in webhooks-during-outage.json "
        "in the state dir. Heal: start Postgres (the heal's settle drains the DLQ).",
        _webhooks_outage,
        _postgres_up,
    )
)
register(
    Fault(
        "dlq-poison",
        f"Put an item no replay can take (a JSON array) at the head of {POISON_QUEUE}: every "
        "drain batch pushes it back, so a drain stops with 1 left and the runbook's "
        "'0 left' check fails. Heal: remove it (LREM), as an operator removes a malformed item.",
        _poison,
        _poison_heal,
    )
)
