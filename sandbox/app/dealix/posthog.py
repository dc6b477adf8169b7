"""PostHog capture over its public HTTP API (`POST {host}/capture/`)."""

from __future__ import annotations

import socket
from datetime import UTC, datetime
from typing import Any

import httpx


class PostHogError(Exception):
    pass


class PostHogClient:
    def __init__(self, api_key: str, host: str, release: str) -> None:
        self._api_key = api_key
        self.host = host.rstrip("/")
        self.release = release
        self.distinct_id = f"dealix-api@{socket.gethostname()}"
        self._http = httpx.Client()

    @property
    def enabled(self) -> bool:
        return bool(self._api_key and self.host)

    def capture(
        self, event: str, properties: dict[str, Any] | None = None, timeout: float = 3.0
    ) -> None:
        if not self.enabled:
            raise PostHogError("POSTHOG_API_KEY or POSTHOG_HOST is not set")
        body = {
            "api_key": self._api_key,
            "event": event,
            "distinct_id": self.distinct_id,
            "properties": {"$lib": "dealix-standin", "release": self.release, **(properties or {})},
            "timestamp": datetime.now(UTC).isoformat().replace("+00:00", "Z"),
        }
        try:
            response = self._http.post(f"{self.host}/capture/", json=body, timeout=timeout)
        except httpx.HTTPError as exc:
            raise PostHogError(f"{type(exc).__name__}: {exc}") from exc
        if response.status_code >= 300:
            raise PostHogError(f"HTTP {response.status_code}: {response.text[:200]}")
