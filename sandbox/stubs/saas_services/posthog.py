"""The PostHog stub: event capture (every path the SDKs use) and the legacy events API.

Capture (``/posthog/capture/``, ``batch/``, ``i/v0/e/``, ``e/``, ``track/``)
takes the project API key in the body or the query and keeps the events
without it; ``/posthog/api/projects/{id}/events/`` lists them for a personal
API key.
"""

from __future__ import annotations

import base64
import json
import uuid
from typing import Any
from urllib.parse import parse_qsl

from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import Route

from .common import (
    EVERY_METHOD,
    BodyError,
    Service,
    as_dict,
    both_slashes,
    gunzip,
    int_param,
    iso_offset,
    now_ms,
    parse_period,
    parse_time,
    read_body,
    secret_eq,
)

MAX_POSTHOG_EVENTS = 10_000


def default_section() -> dict[str, Any]:
    """No events."""
    return {"events": []}


def parse_time_or_relative(text: str, now: int) -> int | None:
    """An absolute time, or PostHog's relative form such as ``-1h`` or ``-7d``."""
    if text.startswith("-"):
        span = parse_period(text[1:])
        if span is not None:
            return now - span
    return parse_time(text)


class PostHog(Service):
    """``/posthog/...``."""

    def routes(self) -> list[Route]:
        return [
            *both_slashes("/posthog/capture/", self.posthog_capture, ["POST"]),
            *both_slashes("/posthog/batch/", self.posthog_capture, ["POST"]),
            *both_slashes("/posthog/i/v0/e/", self.posthog_capture, ["POST"]),
            *both_slashes("/posthog/e/", self.posthog_capture, ["POST"]),
            *both_slashes("/posthog/track/", self.posthog_capture, ["POST"]),
            *both_slashes(
                "/posthog/api/projects/{project_id}/events/", self.posthog_events, ["GET"]
            ),
        ]

    def fallbacks(self) -> list[Route]:
        return [Route("/posthog/{rest:path}", self.posthog_not_found, methods=EVERY_METHOD)]

    @staticmethod
    def posthog_error(
        status: int, kind: str, code: str, detail: str, attr: str | None = None
    ) -> Response:
        return JSONResponse({"type": kind, "code": code, "detail": detail, "attr": attr}, status)

    @staticmethod
    def decode_posthog(raw: bytes, request: Request) -> Any:
        """JSON out of any of the encodings PostHog's SDKs use."""
        if raw[:2] == b"\x1f\x8b":  # posthog-js gzips without a Content-Encoding header
            raw = gunzip(raw)
        content_type = request.headers.get("content-type", "")
        if "application/x-www-form-urlencoded" in content_type:
            form = dict(parse_qsl(raw.decode("utf-8", "replace"), keep_blank_values=True))
            data = form.get("data", "")
            try:
                return json.loads(data)
            except json.JSONDecodeError:
                return json.loads(base64.b64decode(data + "=" * (-len(data) % 4)))
        return json.loads(raw)

    async def posthog_capture(self, request: Request) -> Response:
        try:
            raw = await read_body(request)
            payload = self.decode_posthog(raw, request)
        except (BodyError, ValueError, UnicodeDecodeError) as exc:
            return self.posthog_error(
                400, "validation_error", "invalid_payload", f"Malformed request data: {exc}"
            )
        key: object = None
        if isinstance(payload, dict) and "batch" in payload:
            events = payload["batch"]
            key = payload.get("api_key") or payload.get("token")
        elif isinstance(payload, list):
            events = payload
        else:
            events = [payload]
            key = as_dict(payload).get("api_key") or as_dict(payload).get("token")
        if not isinstance(events, list) or not all(isinstance(e, dict) for e in events):
            return self.posthog_error(
                400,
                "validation_error",
                "invalid_payload",
                "Malformed request data: events must be objects",
            )
        if not key:
            for event in events:
                key = (
                    event.get("api_key")
                    or event.get("token")
                    or as_dict(event.get("properties")).get("token")
                )
                if key:
                    break
        key = key or request.query_params.get("api_key") or request.query_params.get("token")
        if not key:
            return self.posthog_error(
                401,
                "authentication_error",
                "missing_api_key",
                "API key not provided. You can find your project API key in PostHog project "
                "settings.",
            )
        if not secret_eq(str(key), self.cfg["posthog_project_api_key"]):
            return self.posthog_error(
                401,
                "authentication_error",
                "invalid_api_key",
                "Project API key invalid. You can find your project API key in PostHog project "
                "settings.",
            )
        now = now_ms()
        stored = []
        for event in events:
            properties = dict(as_dict(event.get("properties")))
            # The project key is a credential; the state must not keep it.
            properties.pop("token", None)
            properties.pop("api_key", None)
            name = event.get("event")
            distinct_id = event.get("distinct_id") or properties.get("distinct_id")
            if not isinstance(name, str) or not name:
                return self.posthog_error(
                    400,
                    "validation_error",
                    "invalid_payload",
                    'Invalid payload: All events must have the event name field "event"!',
                )
            if distinct_id is None or distinct_id == "":
                return self.posthog_error(
                    400,
                    "validation_error",
                    "invalid_payload",
                    'Invalid payload: All events must have the event field "distinct_id"!',
                )
            timestamp = parse_time(event.get("timestamp"))
            if timestamp is None:
                offset = event.get("offset")
                timestamp = now - (int(offset) if isinstance(offset, int | float) else 0)
            event_uuid = event.get("uuid")
            stored.append(
                {
                    "id": str(event_uuid) if event_uuid else str(uuid.uuid4()),
                    "event": name,
                    "distinct_id": str(distinct_id),
                    "properties": properties,
                    "ts_ms": timestamp,
                    "rx_ms": now,
                }
            )
        kept = self.state["posthog"]["events"]
        kept.extend(stored)
        del kept[:-MAX_POSTHOG_EVENTS]
        self.store.save()
        return JSONResponse({"status": 1})

    async def posthog_events(self, request: Request) -> Response:
        q = request.query_params
        header = request.headers.get("authorization", "").strip()
        scheme, _, token = header.partition(" ")
        given = token.strip() if scheme.lower() == "bearer" else None
        given = given or q.get("personal_api_key")
        if not header and not given:
            return self.posthog_error(
                401,
                "authentication_error",
                "not_authenticated",
                "Authentication credentials were not provided.",
            )
        if not secret_eq(given, self.cfg["posthog_personal_api_key"]):
            return self.posthog_error(
                401,
                "authentication_error",
                "authentication_failed",
                "Personal API key found in request Authorization header is invalid.",
            )
        if request.path_params["project_id"] not in (self.cfg["posthog_project_id"], "@current"):
            return self.posthog_error(404, "invalid_request", "not_found", "Not found.")
        now = now_ms()
        events = self.state["posthog"]["events"]
        if q.get("event"):
            events = [e for e in events if e["event"] == q["event"]]
        if q.get("distinct_id"):
            events = [e for e in events if e["distinct_id"] == q["distinct_id"]]
        for name, keep in (("after", lambda t, b: t > b), ("before", lambda t, b: t < b)):
            if q.get(name):
                bound = parse_time_or_relative(q[name], now)
                if bound is None:
                    return self.posthog_error(
                        400, "validation_error", "invalid_input", f"Invalid {name} timestamp.", name
                    )
                events = [e for e in events if keep(e["ts_ms"], bound)]
        if q.get("properties"):
            try:
                filters = json.loads(q["properties"])
            except json.JSONDecodeError:
                return self.posthog_error(
                    400,
                    "validation_error",
                    "invalid_input",
                    "Properties are unparsable!",
                    "properties",
                )
            for flt in filters if isinstance(filters, list) else []:
                if isinstance(flt, dict) and "key" in flt:
                    values = flt.get("value")
                    values = values if isinstance(values, list) else [values]
                    events = [e for e in events if e["properties"].get(flt["key"]) in values]
        limit = min(max(int_param(q, "limit", 100), 1), 1_000)
        offset = max(int_param(q, "offset", 0), 0)
        # Stable for equal timestamps (one batch shares one), newest first.
        ordered = sorted(events, key=lambda e: e["ts_ms"], reverse=True)
        page = ordered[offset : offset + limit]
        next_url = None
        if len(ordered) > offset + limit:
            # An offset rather than PostHog's before=<last timestamp>, which would skip
            # the rest of a batch whose events share that timestamp.
            next_url = str(request.url.include_query_params(offset=offset + limit))
        return JSONResponse(
            {
                "next": next_url,
                "results": [
                    {
                        "id": e["id"],
                        "distinct_id": e["distinct_id"],
                        "properties": e["properties"],
                        "event": e["event"],
                        "timestamp": iso_offset(e["ts_ms"]),
                        "person": None,
                        "elements": [],
                        "elements_chain": "",
                    }
                    for e in page
                ],
            }
        )

    async def posthog_not_found(self, request: Request) -> Response:
        return self.posthog_error(404, "invalid_request", "not_found", "Not found.")
