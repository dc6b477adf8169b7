"""A minimal Sentry client: envelopes over HTTP, as the real SDK sends them.

Request paths report errors through a single background sender with a bounded
queue, so a Sentry outage or a flood of errors (Postgres down) never slows a
response down and never grows memory without bound.
"""

from __future__ import annotations

import json
import logging
import queue
import threading
import traceback
import uuid
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any
from urllib.parse import urlsplit

import httpx

log = logging.getLogger("dealix.sentry")

CLIENT_NAME = "dealix-standin/1.0"
BACKGROUND_TIMEOUT_SECONDS = 2.0
QUEUE_SIZE = 200


class SentryError(Exception):
    pass


@dataclass(frozen=True)
class Dsn:
    scheme: str
    public_key: str
    host: str  # with the port, as it appears in the DSN
    path: str  # prefix before the project id, without trailing slash
    project_id: str
    raw: str

    @property
    def envelope_url(self) -> str:
        return f"{self.scheme}://{self.host}{self.path}/api/{self.project_id}/envelope/"


def parse_dsn(dsn: str) -> Dsn:
    """Parse `scheme://PUBLICKEY@HOST[:PORT][/PATH]/PROJECTID`."""
    parts = urlsplit(dsn.strip())
    if parts.scheme not in ("http", "https") or not parts.username or not parts.hostname:
        raise SentryError("SENTRY_DSN is not of the form scheme://key@host/project_id")
    path, _, project_id = parts.path.rstrip("/").rpartition("/")
    if not project_id:
        raise SentryError("SENTRY_DSN has no project id")
    host = parts.hostname if parts.port is None else f"{parts.hostname}:{parts.port}"
    return Dsn(parts.scheme, parts.username, host, path, project_id, dsn.strip())


def _now_iso() -> str:
    return datetime.now(UTC).isoformat().replace("+00:00", "Z")


class SentryClient:
    def __init__(self, dsn: str, environment: str, release: str) -> None:
        self.dsn = parse_dsn(dsn) if dsn else None
        self.environment = environment
        self.release = release
        self._queue: queue.Queue[dict[str, Any]] = queue.Queue(maxsize=QUEUE_SIZE)
        self._thread: threading.Thread | None = None
        self._start_lock = threading.Lock()
        self._http = httpx.Client()

    @property
    def enabled(self) -> bool:
        return self.dsn is not None

    def build_event(
        self,
        *,
        level: str,
        message: str | None = None,
        exc: BaseException | None = None,
        tags: dict[str, str] | None = None,
    ) -> dict[str, Any]:
        event: dict[str, Any] = {
            "event_id": uuid.uuid4().hex,
            "timestamp": _now_iso(),
            "level": level,
            "platform": "python",
            "environment": self.environment,
            "release": self.release,
            "tags": dict(tags or {}),
        }
        if exc is not None:
            frames = [
                {"filename": f.filename, "function": f.name, "lineno": f.lineno}
                for f in traceback.extract_tb(exc.__traceback__)
            ]
            value: dict[str, Any] = {
                "type": type(exc).__name__,
                "value": " ".join(str(exc).split()),
            }
            if frames:
                value["stacktrace"] = {"frames": frames}
            event["exception"] = {"values": [value]}
        if message is not None:
            event["message"] = message
        return event

    def _envelope(self, event: dict[str, Any]) -> bytes:
        assert self.dsn is not None
        header = {"event_id": event["event_id"], "sent_at": _now_iso(), "dsn": self.dsn.raw}
        item = {"type": "event", "content_type": "application/json"}
        lines = [json.dumps(header), json.dumps(item), json.dumps(event, default=str)]
        return ("\n".join(lines) + "\n").encode()

    def send(self, event: dict[str, Any], timeout: float = 3.0) -> str:
        """Send now; return the event id or raise SentryError."""
        if self.dsn is None:
            raise SentryError("SENTRY_DSN is not set")
        auth = (
            f"Sentry sentry_version=7, sentry_key={self.dsn.public_key}, "
            f"sentry_client={CLIENT_NAME}"
        )
        try:
            response = self._http.post(
                self.dsn.envelope_url,
                content=self._envelope(event),
                headers={
                    "X-Sentry-Auth": auth,
                    "Content-Type": "application/x-sentry-envelope",
                },
                timeout=timeout,
            )
        except httpx.HTTPError as exc:
            raise SentryError(f"{type(exc).__name__}: {exc}") from exc
        if response.status_code >= 300:
            raise SentryError(f"HTTP {response.status_code}: {response.text[:200]}")
        return str(event["event_id"])

    def capture(
        self,
        *,
        level: str = "error",
        message: str | None = None,
        exc: BaseException | None = None,
        tags: dict[str, str] | None = None,
    ) -> str | None:
        """Queue an event for the background sender; never blocks."""
        if self.dsn is None:
            return None
        event = self.build_event(level=level, message=message, exc=exc, tags=tags)
        self._ensure_thread()
        try:
            self._queue.put_nowait(event)
        except queue.Full:
            log.warning("sentry queue full; dropped event %s", event["event_id"])
            return None
        return str(event["event_id"])

    def _ensure_thread(self) -> None:
        with self._start_lock:
            if self._thread is None or not self._thread.is_alive():
                self._thread = threading.Thread(target=self._run, name="sentry-sender", daemon=True)
                self._thread.start()

    def _run(self) -> None:
        while True:
            event = self._queue.get()
            try:
                self.send(event, timeout=BACKGROUND_TIMEOUT_SECONDS)
            except SentryError as exc:
                log.warning("sentry send failed for event %s: %s", event["event_id"], exc)
            except Exception:
                log.exception("sentry sender error")
            finally:
                self._queue.task_done()

    def flush(self, timeout: float = 2.0) -> None:
        """Best effort: wait for queued events at shutdown."""
        deadline = threading.Event()
        waiter = threading.Thread(target=lambda: (self._queue.join(), deadline.set()), daemon=True)
        waiter.start()
        deadline.wait(timeout)
