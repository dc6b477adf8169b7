"""The loopback-only ``/_stub/...`` control API that tests and faults drive.

This module has the guard, the body rules and the endpoints that concern the
whole stub (health, state, reset); each service adds its own fault switches
(``/_stub/github/...`` in github.py, ``/_stub/sentry/spike`` in sentry.py,
``/_stub/llm/{provider}`` in llm.py) with the helpers here.
"""

from __future__ import annotations

import ipaddress
import json
from typing import Any

from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import Route

from .common import BodyError, Handler, Service


def is_loopback(host: str | None) -> bool:
    if host is None:
        return True
    if host == "testclient":  # Starlette's in-process TestClient, never a socket peer
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return host == "localhost"


def local(handler: Handler) -> Handler:
    """`handler`, refused to any client that is not on this machine; a body that
    `control_body` refuses is a 400 with its reason."""

    async def guarded(request: Request) -> Response:
        host = request.client.host if request.client else None
        if not is_loopback(host):
            return JSONResponse({"error": "control endpoints are loopback only"}, 403)
        try:
            return await handler(request)
        except BodyError as exc:
            return control_error(str(exc))

    return guarded


async def control_body(request: Request) -> dict[str, Any]:
    raw = await request.body()
    if not raw.strip():
        return {}
    try:
        payload = json.loads(raw)
    except (UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise BodyError(f"invalid JSON: {exc}") from exc
    if not isinstance(payload, dict):
        raise BodyError("body must be a JSON object")
    return payload


def control_error(message: str, status: int = 400) -> Response:
    return JSONResponse({"error": message}, status)


class Control(Service):
    """Health, the whole state, and a reset to the healthy world."""

    def routes(self) -> list[Route]:
        return [
            Route("/_stub/health", local(self.control_health), methods=["GET"]),
            Route("/_stub/state", local(self.control_state), methods=["GET"]),
            Route("/_stub/reset", local(self.control_reset), methods=["POST"]),
        ]

    async def control_health(self, request: Request) -> Response:
        return JSONResponse({"ok": True})

    async def control_state(self, request: Request) -> Response:
        return JSONResponse(self.state)

    async def control_reset(self, request: Request) -> Response:
        self.store.reset()
        return JSONResponse({"ok": True})
