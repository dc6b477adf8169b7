"""What the SaaS stubs share: time formats, request bodies, the state file, the access log.

Every service is a `Service` over the one config and the one `StateStore`;
its routes are its own, and the state file has one section per service.
"""

from __future__ import annotations

import contextlib
import hashlib
import hmac
import json
import logging
import os
import re
import tempfile
import time
import zlib
from collections.abc import Awaitable, Callable, Mapping
from datetime import UTC, datetime
from pathlib import Path
from typing import Any
from urllib.parse import parse_qsl, quote

from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import Route
from starlette.types import ASGIApp, Message, Receive, Scope, Send

try:  # sentry-python compresses with brotli when the sender has it installed
    import brotli  # type: ignore[import-not-found]
except ImportError:  # pragma: no cover - depends on the environment
    brotli = None

log = logging.getLogger("saas-stubs")

MAX_BODY_BYTES = 20 * 1024 * 1024

# Query parameters that carry credentials in the real APIs; the access log
# masks them because uvicorn's own access log would print them verbatim.
SECRET_QUERY_PARAMS = frozenset(
    {"key", "api_key", "token", "sentry_key", "sentry_secret", "personal_api_key", "access_token"}
)

Handler = Callable[[Request], Awaitable[Response]]
# The methods a service's catch-all takes: an unknown path is a 404 in the service's shape.
EVERY_METHOD = ["GET", "POST", "PUT", "PATCH", "DELETE", "HEAD", "OPTIONS"]


# --------------------------------------------------------------------------
# Time


def now_ms() -> int:
    return int(time.time() * 1000)


def _dt(ms: int) -> datetime:
    return datetime.fromtimestamp(ms / 1000, tz=UTC)


def iso_seconds(ms: int) -> str:
    """GitHub's timestamps: whole seconds, Z."""
    return _dt(ms).strftime("%Y-%m-%dT%H:%M:%SZ")


def iso_millis(ms: int) -> str:
    """Statuspage's timestamps: milliseconds, Z."""
    return _dt(ms).isoformat(timespec="milliseconds").replace("+00:00", "Z")


def iso_micros(ms: int) -> str:
    """Sentry's timestamps: microseconds, Z."""
    return _dt(ms).strftime("%Y-%m-%dT%H:%M:%S.%fZ")


def iso_offset(ms: int) -> str:
    """PostHog's timestamps: microseconds, +00:00."""
    return _dt(ms).isoformat(timespec="microseconds")


_FRACTION_TOO_LONG = re.compile(r"(\.\d{6})\d+")


def parse_time(value: object) -> int | None:
    """Milliseconds since the epoch from an ISO 8601 string or a number of seconds."""
    if value is None or isinstance(value, bool):
        return None
    if isinstance(value, int | float):
        return int(value * 1000)
    if not isinstance(value, str) or not value.strip():
        return None
    text = value.strip()
    with contextlib.suppress(ValueError):
        return int(float(text) * 1000)
    # Go and JS SDKs send nanoseconds, which fromisoformat refuses.
    text = _FRACTION_TOO_LONG.sub(r"\1", text)
    if text[-1] in "Zz":
        text = text[:-1] + "+00:00"
    try:
        parsed = datetime.fromisoformat(text)
    except ValueError:
        return None
    if parsed.tzinfo is None:
        parsed = parsed.replace(tzinfo=UTC)
    return int(parsed.timestamp() * 1000)


_PERIOD = re.compile(r"^\s*(\d+)\s*([smhdw])\s*$")
_PERIOD_MS = {"s": 1_000, "m": 60_000, "h": 3_600_000, "d": 86_400_000, "w": 604_800_000}


def parse_period(text: str) -> int | None:
    """Length in ms of a Sentry-style period such as ``14d`` or ``90m``."""
    match = _PERIOD.match(text)
    if not match:
        return None
    return int(match.group(1)) * _PERIOD_MS[match.group(2)]


def ceil_div(a: int, b: int) -> int:
    return -((-a) // b)


def google_time(ms: int) -> str:
    """Google Cloud status timestamps: seconds, +00:00."""
    return _dt(ms).isoformat(timespec="seconds")


# --------------------------------------------------------------------------
# Small helpers


def secret_eq(given: str | None, expected: str) -> bool:
    """Constant-time comparison; an unset expected secret never matches."""
    if not given or not expected:
        return False
    return hmac.compare_digest(given.encode(), expected.encode())


def stable_int(text: str, digits: int = 10) -> int:
    """A stable positive integer derived from ``text`` (ids that survive restarts)."""
    value = int(hashlib.sha256(text.encode()).hexdigest()[:15], 16)
    low = 10 ** (digits - 1)
    return low + value % (9 * low)


def int_param(params: Mapping[str, str], name: str, default: int) -> int:
    try:
        return int(params.get(name, default))
    except (TypeError, ValueError):
        return default


def redact_query(query: str) -> str:
    if not query:
        return ""
    parts = []
    for key, value in parse_qsl(query, keep_blank_values=True):
        shown = "***" if key.lower() in SECRET_QUERY_PARAMS else quote(value, safe="/:,@")
        parts.append(f"{quote(key)}={shown}")
    return "?" + "&".join(parts)


class BodyError(ValueError):
    """A request body that cannot be decoded."""


def inflate(raw: bytes, wbits: int) -> bytes:
    decoder = zlib.decompressobj(wbits)
    try:
        out = decoder.decompress(raw, MAX_BODY_BYTES + 1)
    except zlib.error as exc:
        raise BodyError(f"bad compressed body: {exc}") from exc
    if len(out) > MAX_BODY_BYTES or decoder.unconsumed_tail:
        raise BodyError("body too large once decompressed")
    return out


def gunzip(raw: bytes) -> bytes:
    return inflate(raw, 16 + zlib.MAX_WBITS)


def decode_content(raw: bytes, content_encoding: str) -> bytes:
    """Undo a Content-Encoding (gzip, deflate, br when available)."""
    codings = [c.strip().lower() for c in content_encoding.split(",") if c.strip()]
    for coding in reversed(codings):
        if coding == "identity":
            continue
        if coding in ("gzip", "x-gzip"):
            raw = gunzip(raw)
        elif coding == "deflate":
            # Servers disagree on whether "deflate" is zlib-wrapped; accept both.
            try:
                raw = inflate(raw, zlib.MAX_WBITS)
            except BodyError:
                raw = inflate(raw, -zlib.MAX_WBITS)
        elif coding == "br" and brotli is not None:
            try:
                raw = brotli.decompress(raw)
            except Exception as exc:
                raise BodyError(f"bad brotli body: {exc}") from exc
        else:
            raise BodyError(f"unsupported content encoding: {coding}")
    return raw


async def read_body(request: Request) -> bytes:
    raw = await request.body()
    if len(raw) > MAX_BODY_BYTES:
        raise BodyError("body too large")
    return decode_content(raw, request.headers.get("content-encoding", ""))


async def read_json(request: Request) -> Any:
    raw = await read_body(request)
    try:
        return json.loads(raw)
    except (UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise BodyError(f"invalid JSON: {exc}") from exc


def as_dict(value: object) -> dict[str, Any]:
    return value if isinstance(value, dict) else {}


# --------------------------------------------------------------------------
# State and services


class StateStore:
    """The stub's mutable state and its file.

    `fresh` makes a healthy world's state; `fill` completes a loaded one with
    whatever an older or hand-edited file lacks.
    """

    def __init__(
        self,
        path: Path,
        fresh: Callable[[], dict[str, Any]],
        fill: Callable[[dict[str, Any]], dict[str, Any]],
    ) -> None:
        self.path = path
        self.fresh = fresh
        self.fill = fill
        self.data: dict[str, Any] = self._load()
        self.save()

    def _load(self) -> dict[str, Any]:
        try:
            raw = self.path.read_text(encoding="utf-8")
        except FileNotFoundError:
            return self.fresh()
        try:
            loaded = json.loads(raw)
            if not isinstance(loaded, dict):
                raise ValueError("state is not a JSON object")
        except ValueError as exc:
            # Keep the broken file for a post-mortem rather than overwrite it.
            aside = self.path.with_name(self.path.name + f".corrupt-{int(time.time())}")
            log.warning("state file %s unreadable (%s); moved to %s", self.path, exc, aside)
            with contextlib.suppress(OSError):
                os.replace(self.path, aside)
            return self.fresh()
        return self.fill(loaded)

    def save(self) -> None:
        self.path.parent.mkdir(parents=True, exist_ok=True)
        fd, tmp = tempfile.mkstemp(prefix=f".{self.path.name}.", dir=self.path.parent)
        try:
            # No fsync: the promise is surviving a restart of the stub, not of the
            # machine, and the workload saves often. dumps, not dump: json.dump streams
            # through the pure-Python encoder, twice as slow on a full event list.
            text = json.dumps(self.data, separators=(",", ":"), ensure_ascii=False)
            with os.fdopen(fd, "w", encoding="utf-8") as handle:
                handle.write(text)
            os.replace(tmp, self.path)
        except BaseException:
            with contextlib.suppress(OSError):
                os.unlink(tmp)
            raise

    def reset(self) -> None:
        self.data = self.fresh()
        self.save()


class Service:
    """One service's handlers over the shared config and state store."""

    def __init__(self, cfg: Mapping[str, str], store: StateStore) -> None:
        self.cfg = cfg
        self.store = store

    @property
    def state(self) -> dict[str, Any]:
        return self.store.data

    def routes(self) -> list[Route]:
        """The service's endpoints, its ``/_stub/...`` control endpoints included."""
        raise NotImplementedError

    def fallbacks(self) -> list[Route]:
        """Catch-alls under the service's prefixes, served after every other route."""
        return []


def both_slashes(path: str, endpoint: Handler, methods: list[str]) -> list[Route]:
    # Django (Sentry, PostHog) wants the slash; clients often drop it.
    return [
        Route(path, endpoint, methods=methods),
        Route(path.rstrip("/"), endpoint, methods=methods),
    ]


# --------------------------------------------------------------------------
# Access log


class AccessLog:
    """One line per request: client, method, path, masked query, status, time."""

    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        started = time.perf_counter()
        status = 500

        async def send_with_status(message: Message) -> None:
            nonlocal status
            if message["type"] == "http.response.start":
                status = message["status"]
            await send(message)

        try:
            await self.app(scope, receive, send_with_status)
        finally:
            client = scope.get("client")
            query = redact_query(scope.get("query_string", b"").decode("latin-1"))
            log.info(
                '%s "%s %s%s" %d %.1fms',
                client[0] if client else "-",
                scope["method"],
                scope["path"],
                query,
                status,
                (time.perf_counter() - started) * 1000,
            )
