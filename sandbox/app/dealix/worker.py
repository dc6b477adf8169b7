"""Background workload and DLQ replay.

Every tick the worker adds one lead (so the database grows like production's
and backups have fresh rows to check against the RPO) and runs one enrichment
and one outbound LLM job on the primary provider. Work that cannot be done or
recorded goes to a Redis DLQ, which the admin drain endpoint replays; this is
what scenarios 3 and 4 of the runbook watch and drain.
"""

from __future__ import annotations

import json
import logging
import random
import threading
import uuid
from datetime import UTC, datetime
from typing import Any

import psycopg
import redis
from psycopg.types.json import Jsonb

from . import db
from .breaker import CircuitOpenError
from .config import Settings
from .llm import ProviderError, Providers
from .sentry import SentryClient

log = logging.getLogger("dealix.worker")

WEBHOOKS_DLQ = "WEBHOOKS_DLQ"
OUTBOUND_DLQ = "OUTBOUND_DLQ"
ENRICHMENT_DLQ = "ENRICHMENT_DLQ"
QUEUES = {"webhooks": WEBHOOKS_DLQ, "outbound": OUTBOUND_DLQ, "enrichment": ENRICHMENT_DLQ}
QUEUE_BY_KIND = {"enrichment": ENRICHMENT_DLQ, "outbound": OUTBOUND_DLQ}
KINDS = ("enrichment", "outbound")

_COMPANIES = (
    "Al Noor Logistics",
    "Riyadh Smart Retail",
    "Najd Foods",
    "Jeddah Marine Services",
    "Tabuk Solar",
    "Qassim Dates Co",
    "Eastern Province Steel",
    "Hejaz Health Clinics",
    "Asir Coffee Roasters",
    "Madinah Hospitality",
    "Red Sea Tech",
    "Dammam Auto Parts",
    "Khobar Fintech",
    "Al Ula Tours",
    "Yanbu Petrochem Supplies",
    "Makkah Print House",
)
_FIRST = (
    "Abdullah",
    "Mohammed",
    "Fahad",
    "Sara",
    "Noura",
    "Khalid",
    "Reem",
    "Faisal",
    "Lama",
    "Omar",
    "Hessa",
    "Turki",
    "Maha",
    "Saud",
    "Aljohara",
    "Yousef",
)
_LAST = (
    "Al-Qahtani",
    "Al-Otaibi",
    "Al-Ghamdi",
    "Al-Harbi",
    "Al-Zahrani",
    "Al-Shehri",
    "Al-Dosari",
    "Al-Mutairi",
    "Al-Anazi",
    "Asiri",
)
_SOURCES = ("website", "linkedin", "referral", "whatsapp", "event", "cold_outbound")


def now_iso() -> str:
    return datetime.now(UTC).isoformat()


def fake_lead() -> dict[str, Any]:
    company = random.choice(_COMPANIES)
    first, last = random.choice(_FIRST), random.choice(_LAST)
    domain = "".join(ch for ch in company.lower() if ch.isalnum())[:20]
    return {
        "company": company,
        "contact_name": f"{first} {last}",
        "email": f"{first.lower()}.{last.lower().replace('-', '')}{random.randint(1, 999)}"
        f"@{domain}.sa",
        "phone": f"+9665{random.randint(0, 99_999_999):08d}",
        "source": random.choice(_SOURCES),
        "status": "new",
        "score": random.randint(0, 100),
    }


def insert_lead(conn: psycopg.Connection[Any], lead: dict[str, Any]) -> dict[str, Any]:
    row = conn.execute(
        """
        INSERT INTO leads (user_id, company, contact_name, email, phone, source, status, score)
        VALUES (%(user_id)s, %(company)s, %(contact_name)s, %(email)s, %(phone)s,
                %(source)s, %(status)s, %(score)s)
        RETURNING id, user_id, company, contact_name, email, phone, source, status, score,
                  created_at
        """,
        {"user_id": None, "score": None, **lead},
    ).fetchone()
    assert row is not None
    return row


def random_lead_id(conn: psycopg.Connection[Any]) -> int | None:
    # min/max come from the primary key index: O(1), unlike ORDER BY random()
    # on a table that keeps growing.
    row = conn.execute(
        """
        SELECT id FROM leads
        WHERE id >= (SELECT min(id) + floor(random() * (max(id) - min(id) + 1))::bigint
                     FROM leads)
        ORDER BY id LIMIT 1
        """
    ).fetchone()
    return None if row is None else int(row["id"])


def record_llm_call(
    conn: psycopg.Connection[Any], job_id: str, kind: str, provider: str, lead_id: int | None
) -> None:
    # job_id is unique, so replaying a job that was already recorded is a no-op.
    conn.execute(
        """
        INSERT INTO llm_calls (job_id, kind, provider, lead_id)
        VALUES (%s, %s, %s, %s)
        ON CONFLICT (job_id) DO NOTHING
        """,
        (job_id, kind, provider, lead_id),
    )


def store_webhook(
    conn: psycopg.Connection[Any],
    source: str,
    event_id: str,
    payload: Any,
    received_at: str | None = None,
) -> bool:
    """Insert a webhook event; return False if the event_id was already stored."""
    row = conn.execute(
        """
        INSERT INTO webhook_events (event_id, source, payload, received_at, processed_at)
        VALUES (%s, %s, %s, COALESCE(%s::timestamptz, now()), now())
        ON CONFLICT (event_id) DO NOTHING
        RETURNING id
        """,
        (event_id, source, Jsonb(payload), received_at),
    ).fetchone()
    return row is not None


def prompt_for(kind: str, lead_id: int | None) -> str:
    if kind == "enrichment":
        return f"Enrich lead {lead_id}: industry, company size and city, one line."
    return f"Write a one-line outreach opener for lead {lead_id}, in Arabic and English."


class Workload:
    def __init__(
        self,
        settings: Settings,
        providers: Providers,
        redis_client: redis.Redis,
        sentry: SentryClient,
    ) -> None:
        self.settings = settings
        self.providers = providers
        self.redis = redis_client
        self.sentry = sentry
        self.interval = settings.workload_interval_seconds
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        self._db_ok = True

    def start(self) -> None:
        if self.interval <= 0 or self._thread is not None:
            return
        self._thread = threading.Thread(target=self._run, name="workload", daemon=True)
        self._thread.start()
        log.info(
            "workload started: every %.1fs, primary provider %s",
            self.interval,
            self.providers.primary,
        )

    def stop(self, timeout: float = 5.0) -> None:
        self._stop.set()
        if self._thread is not None:
            self._thread.join(timeout)

    def _run(self) -> None:
        while not self._stop.wait(self.interval):
            try:
                self.tick()
            except Exception:
                # The worker must outlive any single bad tick.
                log.exception("workload tick failed")

    def _note_db_error(self, exc: psycopg.Error) -> None:
        # One Sentry event and one log line per outage, not one per tick.
        if self._db_ok:
            self.sentry.capture(level="error", exc=exc, tags={"component": "worker"})
            log.warning(
                "workload: database unavailable, skipping DB work until it is back: %s",
                db.error_text(exc),
            )
        self._db_ok = False

    def tick(self) -> None:
        conn: psycopg.Connection[Any] | None = None
        lead_id: int | None = None
        try:
            try:
                conn = db.connect(self.settings.database_url)
                insert_lead(conn, fake_lead())
                lead_id = random_lead_id(conn)
                if not self._db_ok:
                    log.info("workload: database reachable again")
                self._db_ok = True
            except psycopg.Error as exc:
                self._note_db_error(exc)
                if conn is not None and conn.broken:
                    conn.close()
                    conn = None
            for kind in KINDS:
                self._run_job(kind, lead_id, conn)
        finally:
            if conn is not None:
                conn.close()

    def _run_job(
        self, kind: str, lead_id: int | None, conn: psycopg.Connection[Any] | None
    ) -> None:
        job_id = uuid.uuid4().hex
        provider = self.providers.primary
        try:
            self.providers.complete_primary(prompt_for(kind, lead_id))
        except CircuitOpenError as exc:
            self._dead_letter(job_id, kind, lead_id, provider, f"CircuitOpenError: {exc}")
            return
        except ProviderError as exc:
            self.sentry.capture(
                level="error", exc=exc, tags={"component": "worker", "provider": provider}
            )
            log.warning("workload: %s job %s failed: %s", kind, job_id, exc)
            self._dead_letter(job_id, kind, lead_id, provider, f"ProviderError: {exc}")
            return
        if conn is None:
            self._dead_letter(
                job_id, kind, lead_id, provider, "OperationalError: database unavailable"
            )
            return
        try:
            record_llm_call(conn, job_id, kind, provider, lead_id)
        except psycopg.Error as exc:
            self._dead_letter(
                job_id, kind, lead_id, provider, f"{type(exc).__name__}: {db.error_text(exc)}"
            )

    def _dead_letter(
        self, job_id: str, kind: str, lead_id: int | None, provider: str, error: str
    ) -> None:
        job = {
            "job_id": job_id,
            "kind": kind,
            "lead_id": lead_id,
            "provider": provider,
            "failed_at": now_iso(),
            "error": error,
        }
        try:
            self.redis.rpush(QUEUE_BY_KIND[kind], json.dumps(job))
        except redis.RedisError as exc:
            log.error("workload: job %s lost, DLQ unreachable: %s", job_id, exc)


def drain(
    settings: Settings,
    providers: Providers,
    redis_client: redis.Redis,
    queue: str,
    limit: int,
) -> dict[str, Any]:
    """Replay up to `limit` items of a DLQ; failed items go back to its tail."""
    drained = failed = 0
    # Never look at more items than were there at the start: pushed-back
    # failures must not be popped again in the same batch.
    budget = min(limit, int(redis_client.llen(queue)))
    conn: psycopg.Connection[Any] | None = None
    try:
        for _ in range(budget):
            raw = redis_client.lpop(queue)
            if raw is None:
                break
            try:
                if conn is None:
                    conn = db.connect(settings.database_url)
                _replay(conn, providers, queue, raw)
                drained += 1
            except Exception as exc:
                _push_back(redis_client, queue, raw)
                failed += 1
                fatal = isinstance(exc, psycopg.OperationalError | CircuitOpenError)
                log.warning(
                    "drain %s: item failed (%s: %s)%s",
                    queue,
                    type(exc).__name__,
                    db.error_text(exc),
                    "; stopping the batch" if fatal else "",
                )
                if conn is not None and conn.broken:
                    conn.close()
                    conn = None
                if fatal:
                    break
    finally:
        if conn is not None:
            conn.close()
    remaining = int(redis_client.llen(queue))
    log.info("drain %s: drained=%d failed=%d remaining=%d", queue, drained, failed, remaining)
    return {"queue": queue, "drained": drained, "failed": failed, "remaining": remaining}


def _push_back(redis_client: redis.Redis, queue: str, raw: str) -> None:
    try:
        redis_client.rpush(queue, raw)
    except redis.RedisError:
        # The item is only in this process now; leave a trace to recover it by hand.
        log.error("drain %s: could not push an item back, it is lost: %s", queue, raw[:500])
        raise


def _replay(conn: psycopg.Connection[Any], providers: Providers, queue: str, raw: str) -> None:
    item = json.loads(raw)
    if not isinstance(item, dict):
        raise ValueError("DLQ item is not a JSON object")
    if queue == WEBHOOKS_DLQ:
        store_webhook(
            conn,
            str(item["source"]),
            str(item["event_id"]),
            item.get("payload"),
            item.get("received_at"),
        )
        return
    kind = str(item["kind"])
    if kind not in QUEUE_BY_KIND:
        raise ValueError(f"unknown job kind {kind!r}")
    lead_id = item.get("lead_id")
    # The current primary serves the replay: after a failover that is the
    # provider now first in LLM_PROVIDER_PRIORITY, not the one that failed.
    providers.complete_primary(prompt_for(kind, lead_id))
    record_llm_call(conn, str(item["job_id"]), kind, providers.primary, lead_id)
