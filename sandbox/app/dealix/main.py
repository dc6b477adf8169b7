"""The stand-in Dealix API: `uvicorn dealix.main:app`, working dir = the app dir."""

from __future__ import annotations

import asyncio
import hashlib
import hmac
import json
import logging
import subprocess
import sys
import time
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from dataclasses import dataclass
from http import HTTPStatus
from pathlib import Path
from typing import Any

import psycopg
import redis
from starlette.applications import Starlette
from starlette.concurrency import run_in_threadpool
from starlette.datastructures import Headers
from starlette.exceptions import HTTPException
from starlette.middleware import Middleware
from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import Route
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from . import db, worker
from .config import Settings, load_settings
from .llm import Providers
from .posthog import PostHogClient, PostHogError
from .sentry import SentryClient, SentryError

log = logging.getLogger("dealix")
access_log = logging.getLogger("dealix.access")

MAX_BODY_BYTES = 1024 * 1024
LEAK_CAP = 10_000

# Held on purpose until the process exits: the sandbox's pool-exhausted fault.
_LEAKED_CONNECTIONS: list[psycopg.Connection[Any]] = []


class OneLineFormatter(logging.Formatter):
    """supervisord keeps the log line-oriented: fold tracebacks onto one line."""

    def format(self, record: logging.LogRecord) -> str:
        return super().format(record).replace("\n", " | ")


def _configure_logging() -> None:
    if log.handlers:
        return
    handler = logging.StreamHandler(sys.stdout)
    handler.setFormatter(
        OneLineFormatter("%(asctime)s %(levelname)s %(name)s %(message)s", "%Y-%m-%dT%H:%M:%S%z")
    )
    log.addHandler(handler)
    log.setLevel(logging.INFO)
    log.propagate = False


def read_git_sha(cwd: Path) -> str:
    try:
        out = subprocess.run(
            ["git", "-c", f"safe.directory={cwd}", "rev-parse", "HEAD"],
            cwd=cwd,
            capture_output=True,
            text=True,
            timeout=5,
            check=True,
        )
    except (OSError, subprocess.SubprocessError):
        return "unknown"
    sha = out.stdout.strip()
    return sha or "unknown"


@dataclass
class AppState:
    settings: Settings
    sha: str
    providers: Providers
    redis: redis.Redis
    sentry: SentryClient
    posthog: PostHogClient
    workload: worker.Workload

    def key_state(self, supplied: str | None) -> str:
        if supplied is None:
            return "absent"
        expected = self.settings.admin_key
        # An empty ADMIN_KEY must lock the admin API, not open it.
        if expected and hmac.compare_digest(supplied.encode(), expected.encode()):
            return "present"
        return "invalid"


def _json_error(status: int, error: str, detail: str | None = None, **extra: Any) -> JSONResponse:
    body: dict[str, Any] = {"error": error}
    if detail is not None:
        body["detail"] = detail
    body.update(extra)
    return JSONResponse(body, status_code=status)


def _log_safe(text: str, limit: int = 300) -> str:
    # Paths are percent-decoded and headers are client-controlled: escape
    # quotes and control characters so no one can forge an access-log line.
    return "".join(
        ch if ch.isprintable() and ch != '"' else f"\\x{ord(ch):02x}" for ch in text[:limit]
    )


def _client_ip(scope: Scope, headers: Headers) -> str:
    peer = scope.get("client")
    ip = peer[0] if peer else "-"
    # Only trust forwarding headers from nginx on the same host.
    if ip in ("127.0.0.1", "::1"):
        real = headers.get("x-real-ip")
        if real:
            return real.strip()
        forwarded = headers.get("x-forwarded-for")
        if forwarded:
            return forwarded.split(",")[-1].strip()
    return ip


class RequestMiddleware:
    """Admin auth, the access log, and errors turned into JSON 500s/503s.

    Catching errors here rather than letting Starlette's ServerErrorMiddleware
    re-raise them keeps uvicorn from printing multi-line tracebacks and lets
    every OperationalError reach Sentry.
    """

    def __init__(self, app: ASGIApp, state: AppState) -> None:
        self.app = app
        self.state = state

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        started_at = time.perf_counter()
        headers = Headers(scope=scope)
        key = self.state.key_state(headers.get("x-api-key"))
        path: str = scope["path"]
        status = 500
        response_started = False

        async def send_wrapper(message: Message) -> None:
            nonlocal status, response_started
            if message["type"] == "http.response.start":
                status = message["status"]
                response_started = True
            await send(message)

        try:
            if (path == "/api/v1/admin" or path.startswith("/api/v1/admin/")) and key != "present":
                await _json_error(401, "unauthorized")(scope, receive, send_wrapper)
            else:
                await self.app(scope, receive, send_wrapper)
        except Exception as exc:
            response = self._error_response(exc, scope)
            if response_started:
                log.error(
                    "error after response started on %s: %s", _log_safe(path), db.error_text(exc)
                )
            else:
                await response(scope, receive, send_wrapper)
        finally:
            elapsed_ms = (time.perf_counter() - started_at) * 1000
            access_log.info(
                '%s "%s %s" %d %.1fms key=%s',
                _log_safe(_client_ip(scope, headers), 64),
                _log_safe(scope["method"], 16),
                _log_safe(path),
                status,
                elapsed_ms,
                key,
            )

    def _error_response(self, exc: Exception, scope: Scope) -> Response:
        method, path = _log_safe(scope["method"], 16), _log_safe(scope["path"])
        tags = {"method": method, "path": path}
        if isinstance(exc, psycopg.OperationalError):
            detail = db.error_text(exc)
            log.error("%s %s: OperationalError: %s", method, path, detail)
            self.state.sentry.capture(level="error", exc=exc, tags=tags)
            return _json_error(500, "OperationalError", detail)
        if isinstance(exc, redis.RedisError):
            detail = db.error_text(exc)
            log.error("%s %s: %s: %s", method, path, type(exc).__name__, detail)
            self.state.sentry.capture(level="error", exc=exc, tags=tags)
            return _json_error(503, type(exc).__name__, detail)
        log.exception("%s %s: unhandled %s", method, path, type(exc).__name__)
        self.state.sentry.capture(level="error", exc=exc, tags=tags)
        return _json_error(500, type(exc).__name__, "internal error")


async def _http_exception(request: Request, exc: Exception) -> Response:
    assert isinstance(exc, HTTPException)
    if exc.status_code in (204, 304):
        return Response(status_code=exc.status_code, headers=exc.headers)
    error = HTTPStatus(exc.status_code).phrase.lower().replace(" ", "_").replace("-", "_")
    return JSONResponse({"error": error}, status_code=exc.status_code, headers=exc.headers)


def _int_param(request: Request, name: str, default: int, low: int, high: int) -> int:
    raw = request.query_params.get(name)
    if raw is None or raw == "":
        return default
    try:
        value = int(raw)
    except ValueError:
        raise _Invalid(f"{name} must be an integer") from None
    if not low <= value <= high:
        raise _Invalid(f"{name} must be between {low} and {high}")
    return value


class _Invalid(Exception):
    """A request the client has to fix: answered 422 with the reason."""


class _TooLarge(Exception):
    pass


async def _read_body(request: Request) -> bytes:
    # Streamed with a cap so a huge POST cannot exhaust memory; Starlette's
    # own max_body_size only exists from 1.0 on and requirements allow older.
    chunks: list[bytes] = []
    size = 0
    async for chunk in request.stream():
        size += len(chunk)
        if size > MAX_BODY_BYTES:
            raise _TooLarge
        chunks.append(chunk)
    return b"".join(chunks)


class _BadJson(Exception):
    pass


async def _json_body(request: Request) -> Any:
    try:
        return json.loads(await _read_body(request))
    except ValueError:
        raise _BadJson from None


LEAD_COLUMNS = "id, user_id, company, contact_name, email, phone, source, status, score, created_at"
LEAD_TEXT_FIELDS = ("contact_name", "email", "phone", "source", "status")


def build_app(settings: Settings | None = None, app_dir: Path | None = None) -> Starlette:
    _configure_logging()
    app_dir = app_dir or Path.cwd()
    settings = settings or load_settings(app_dir / ".env")
    sha = read_git_sha(app_dir)
    providers = Providers(settings)
    redis_client = db.make_redis(settings.redis_url)
    sentry = SentryClient(settings.sentry_dsn, environment=settings.app_env, release=sha)
    state = AppState(
        settings=settings,
        sha=sha,
        providers=providers,
        redis=redis_client,
        sentry=sentry,
        posthog=PostHogClient(settings.posthog_api_key, settings.posthog_host, release=sha),
        workload=worker.Workload(settings, providers, redis_client, sentry),
    )
    url = settings.database_url

    # ---- health -----------------------------------------------------------

    async def health(request: Request) -> Response:
        return JSONResponse({"status": "ok", "sha": state.sha})

    def check_postgres() -> dict[str, Any]:
        started = time.perf_counter()
        try:
            with db.connection(url) as conn:
                conn.execute("SELECT 1").fetchone()
            status, detail = "green", "SELECT 1 ok"
        except psycopg.Error as exc:
            status, detail = "red", db.error_text(exc)
        latency = round((time.perf_counter() - started) * 1000, 1)
        return {"status": status, "detail": detail, "latency_ms": latency}

    def check_redis() -> dict[str, Any]:
        started = time.perf_counter()
        try:
            state.redis.ping()
            status, detail = "green", "PONG"
        except redis.RedisError as exc:
            status, detail = "red", f"{type(exc).__name__}: {db.error_text(exc)}"
        latency = round((time.perf_counter() - started) * 1000, 1)
        return {"status": status, "detail": detail, "latency_ms": latency}

    async def health_deep(request: Request) -> Response:
        pg, rd = await asyncio.gather(
            run_in_threadpool(check_postgres), run_in_threadpool(check_redis)
        )
        llm = state.providers.health()
        rank = {"green": 0, "yellow": 1, "red": 2}
        worst = max((pg["status"], rd["status"], llm["status"]), key=rank.__getitem__)
        body = {
            "status": worst,
            "sha": state.sha,
            "postgres": pg,
            "redis": rd,
            "llm_providers": llm,
        }
        return JSONResponse(body, status_code=200 if worst == "green" else 503)

    # ---- public API -------------------------------------------------------

    async def pricing_plans(request: Request) -> Response:
        def query() -> list[dict[str, Any]]:
            with db.connection(url) as conn:
                return conn.execute(
                    """
                    SELECT id, code, name, price_monthly_sar, max_leads FROM pricing_plans
                    WHERE active ORDER BY price_monthly_sar, id
                    """
                ).fetchall()

        rows = await run_in_threadpool(query)
        return JSONResponse({"plans": [db.row_to_json(r) for r in rows]})

    async def list_leads(request: Request) -> Response:
        try:
            limit = _int_param(request, "limit", 50, 1, 500)
            offset = _int_param(request, "offset", 0, 0, 10**12)
        except _Invalid as exc:
            return _json_error(422, "validation_error", str(exc))

        def query() -> tuple[list[dict[str, Any]], int]:
            with db.connection(url) as conn:
                rows = conn.execute(
                    f"SELECT {LEAD_COLUMNS} FROM leads "  # noqa: S608 - constant column list
                    "ORDER BY created_at DESC, id DESC LIMIT %s OFFSET %s",
                    (limit, offset),
                ).fetchall()
                total = conn.execute("SELECT count(*) AS n FROM leads").fetchone()
                return rows, int(total["n"]) if total else 0

        rows, total = await run_in_threadpool(query)
        return JSONResponse({"leads": [db.row_to_json(r) for r in rows], "total": total})

    async def get_lead(request: Request) -> Response:
        lead_id: int = request.path_params["lead_id"]

        def query() -> dict[str, Any] | None:
            with db.connection(url) as conn:
                return conn.execute(
                    f"SELECT {LEAD_COLUMNS} FROM leads WHERE id = %s",  # noqa: S608
                    (lead_id,),
                ).fetchone()

        row = await run_in_threadpool(query)
        if row is None:
            return _json_error(404, "not_found", f"lead {lead_id} does not exist")
        return JSONResponse(db.row_to_json(row))

    def validate_lead(body: Any) -> dict[str, Any]:
        if not isinstance(body, dict):
            raise _Invalid("body must be a JSON object")
        company = body.get("company")
        if not isinstance(company, str) or not company.strip():
            raise _Invalid("company is required")
        lead: dict[str, Any] = {"company": company.strip()[:200]}
        for name in LEAD_TEXT_FIELDS:
            value = body.get(name)
            if value is not None and not isinstance(value, str):
                raise _Invalid(f"{name} must be a string")
            lead[name] = value
        lead["source"] = lead["source"] or "api"
        lead["status"] = lead["status"] or "new"
        for name in ("score", "user_id"):
            value = body.get(name)
            if value is not None and (not isinstance(value, int) or isinstance(value, bool)):
                raise _Invalid(f"{name} must be an integer")
            lead[name] = value
        return lead

    async def create_lead(request: Request) -> Response:
        try:
            lead = validate_lead(await _json_body(request))
        except _Invalid as exc:
            return _json_error(422, "validation_error", str(exc))
        except _BadJson:
            return _json_error(400, "invalid_json", "body is not valid JSON")
        except _TooLarge:
            return _json_error(413, "payload_too_large")

        def insert() -> dict[str, Any]:
            with db.connection(url) as conn:
                return worker.insert_lead(conn, lead)

        try:
            row = await run_in_threadpool(insert)
        except psycopg.errors.ForeignKeyViolation:
            return _json_error(422, "validation_error", "user_id does not exist")
        except psycopg.errors.DataError as exc:
            return _json_error(422, "validation_error", db.error_text(exc))
        return JSONResponse(db.row_to_json(row), status_code=201)

    async def webhook(request: Request) -> Response:
        source: str = request.path_params["source"]
        if not (0 < len(source) <= 64) or not all(c.isalnum() or c in "-_" for c in source):
            return _json_error(422, "validation_error", "invalid source")
        try:
            raw = await _read_body(request)
        except _TooLarge:
            return _json_error(413, "payload_too_large")
        secret = state.settings.webhook_secret
        if secret:
            expected = "sha256=" + hmac.new(secret.encode(), raw, hashlib.sha256).hexdigest()
            supplied = request.headers.get("x-dealix-signature", "")
            if not hmac.compare_digest(supplied.encode(), expected.encode()):
                log.warning("webhook %s: bad or missing signature", source)
                return _json_error(401, "invalid_signature")
        try:
            payload = json.loads(raw)
        except ValueError:
            return _json_error(400, "invalid_json", "body is not valid JSON")
        event_id = payload.get("event_id") if isinstance(payload, dict) else None
        if isinstance(event_id, int) and not isinstance(event_id, bool):
            event_id = str(event_id)
        if not isinstance(event_id, str) or not event_id:
            return _json_error(422, "validation_error", "event_id is required")

        def store() -> bool:
            with db.connection(url) as conn:
                return worker.store_webhook(conn, source, event_id, payload)

        try:
            stored_new = await run_in_threadpool(store)
        except psycopg.OperationalError as exc:
            # The sender must not retry into a dead database: accept the
            # event into the DLQ and replay it once Postgres is back.
            item = {
                "source": source,
                "event_id": event_id,
                "payload": payload,
                "received_at": worker.now_iso(),
            }
            await run_in_threadpool(state.redis.rpush, worker.WEBHOOKS_DLQ, json.dumps(item))
            log.warning(
                "webhook %s %s queued to %s: %s",
                source,
                _log_safe(event_id, 100),
                worker.WEBHOOKS_DLQ,
                db.error_text(exc),
            )
            return JSONResponse({"queued": worker.WEBHOOKS_DLQ}, status_code=202)
        except psycopg.DataError as exc:
            # Valid JSON that jsonb refuses (e.g. \u0000): the sender's problem.
            return _json_error(422, "validation_error", db.error_text(exc))
        return JSONResponse({"stored": True, "duplicate": not stored_new})

    # ---- admin (X-API-Key checked by RequestMiddleware) -------------------

    async def dlq_stats(request: Request) -> Response:
        def lengths() -> dict[str, int]:
            return {q: int(state.redis.llen(q)) for q in worker.QUEUES.values()}

        queues = await run_in_threadpool(lengths)
        return JSONResponse(
            {
                "queues": queues,
                "breakers": state.providers.snapshots(),
                "primary": state.providers.primary,
            }
        )

    async def dlq_drain(request: Request) -> Response:
        queue = worker.QUEUES.get(request.path_params["name"])
        if queue is None:
            return _json_error(
                404, "not_found", "unknown queue; use webhooks, outbound or enrichment"
            )
        try:
            limit = _int_param(request, "limit", 100, 1, 1000)
        except _Invalid as exc:
            return _json_error(422, "validation_error", str(exc))
        result = await run_in_threadpool(
            worker.drain, state.settings, state.providers, state.redis, queue, limit
        )
        return JSONResponse(result)

    async def approvals_pending(request: Request) -> Response:
        def query() -> list[dict[str, Any]]:
            with db.connection(url) as conn:
                return conn.execute(
                    """
                    SELECT id, kind, requested_by, created_at FROM approvals
                    WHERE status = 'pending' ORDER BY created_at, id
                    """
                ).fetchall()

        rows = await run_in_threadpool(query)
        return JSONResponse({"pending": [db.row_to_json(r) for r in rows], "count": len(rows)})

    async def sentry_check(request: Request) -> Response:
        event = state.sentry.build_event(
            level="info", message="sentry-check from dealix-api", tags={"check": "sentry-check"}
        )
        try:
            event_id = await run_in_threadpool(state.sentry.send, event, 3.0)
        except SentryError as exc:
            log.error("sentry-check: sentry failed: %s", exc)
            return _json_error(502, "sentry_failed", str(exc))
        try:
            await run_in_threadpool(
                state.posthog.capture, "sentry_check", {"sentry_event_id": event_id}, 3.0
            )
        except PostHogError as exc:
            log.error("sentry-check: posthog failed: %s", exc)
            return _json_error(502, "posthog_failed", str(exc), sentry_event_id=event_id)
        log.info("sentry-check: sentry event %s, posthog sent", event_id)
        return JSONResponse({"sentry_event_id": event_id, "posthog": "sent"})

    async def leak_connections(request: Request) -> Response:
        if not state.settings.is_sandbox:
            return _json_error(404, "not_found")

        def leak() -> int:
            count = 0
            while count < LEAK_CAP:
                try:
                    _LEAKED_CONNECTIONS.append(db.connect(url))
                except psycopg.OperationalError as exc:
                    log.warning("leak-connections: stopped after %d: %s", count, db.error_text(exc))
                    break
                count += 1
            return count

        leaked = await run_in_threadpool(leak)
        log.warning(
            "leak-connections: holding %d new connections (%d in total) until the process exits",
            leaked,
            len(_LEAKED_CONNECTIONS),
        )
        return JSONResponse({"leaked": leaked})

    @asynccontextmanager
    async def lifespan(app: Starlette) -> AsyncIterator[None]:
        # RequestMiddleware writes the access log (with key=...); uvicorn's
        # own would only duplicate every line.
        logging.getLogger("uvicorn.access").disabled = True
        present = [
            k
            for k, v in (
                ("ADMIN_KEY", settings.admin_key),
                ("WEBHOOK_SECRET", settings.webhook_secret),
                ("SENTRY_DSN", settings.sentry_dsn),
                ("POSTHOG_API_KEY", settings.posthog_api_key),
            )
            if v
        ]
        log.info(
            "dealix-api starting: sha=%s env=%s priority=%s breaker=%d/%.0fs workload=%.1fs "
            "configured=%s",
            state.sha,
            settings.app_env,
            ",".join(settings.llm_provider_priority),
            settings.breaker_failure_threshold,
            settings.breaker_reset_seconds,
            settings.workload_interval_seconds,
            ",".join(present) or "-",
        )
        state.workload.start()
        try:
            yield
        finally:
            state.workload.stop()
            state.sentry.flush()
            state.providers.close()
            log.info("dealix-api stopped")

    routes = [
        Route("/health", health, methods=["GET"]),
        Route("/health/deep", health_deep, methods=["GET"]),
        Route("/api/v1/pricing/plans", pricing_plans, methods=["GET"]),
        Route("/api/v1/leads", list_leads, methods=["GET"]),
        Route("/api/v1/leads", create_lead, methods=["POST"]),
        Route("/api/v1/leads/{lead_id:int}", get_lead, methods=["GET"]),
        Route("/api/v1/webhooks/{source}", webhook, methods=["POST"]),
        Route("/api/v1/admin/dlq/stats", dlq_stats, methods=["GET"]),
        Route("/api/v1/admin/dlq/{name}/drain", dlq_drain, methods=["POST"]),
        Route("/api/v1/admin/approvals/pending", approvals_pending, methods=["GET"]),
        Route("/api/v1/admin/sentry-check", sentry_check, methods=["GET"]),
        Route("/api/v1/admin/_sandbox/leak-connections", leak_connections, methods=["POST"]),
    ]
    application = Starlette(
        routes=routes,
        middleware=[Middleware(RequestMiddleware, state=state)],
        exception_handlers={HTTPException: _http_exception},
        lifespan=lifespan,
    )
    application.state.dealix = state
    return application


app = build_app()
