"""The providers' status pages, whose state is the LLM stubs' up/down switch.

Anthropic and OpenAI: Atlassian Statuspage (``/status/{provider}/api/v2/
status.json`` and ``summary.json``). Google: Google Cloud's own
``/status/google/incidents.json``, with no Statuspage paths, as the real site.
"""

from __future__ import annotations

import hashlib
from collections.abc import Mapping
from typing import Any

from starlette.requests import Request
from starlette.responses import JSONResponse, PlainTextResponse, Response
from starlette.routing import Route

from .common import Service, google_time, now_ms, parse_time, stable_int


def stable_id(text: str, length: int = 12) -> str:
    """A stable lowercase alphanumeric id, shaped like Statuspage's."""
    alphabet = "0123456789abcdefghijklmnopqrstuvwxyz"
    value = int(hashlib.sha256(text.encode()).hexdigest(), 16)
    chars = []
    for _ in range(length):
        value, rem = divmod(value, len(alphabet))
        chars.append(alphabet[rem])
    return "".join(chars)


STATUS_PAGES: dict[str, dict[str, Any]] = {
    "anthropic": {
        "name": "Anthropic",
        "url": "https://status.anthropic.com",
        "components": ["claude.ai", "Claude API (api.anthropic.com)", "Claude Code"],
        "api_component": 1,
        "incident": "Elevated errors on the Claude API",
    },
    "openai": {
        "name": "OpenAI",
        "url": "https://status.openai.com",
        "components": ["APIs", "ChatGPT", "Sora", "Playground"],
        "api_component": 0,
        "incident": "Increased error rates for API requests",
    },
    "google": {
        "name": "Google Cloud",
        "url": "https://status.cloud.google.com",
        "components": [
            "Gemini API (generativelanguage.googleapis.com)",
            "Vertex Gemini API",
            "Google AI Studio",
        ],
        "api_component": 0,
        "incident": "Gemini API requests failing with 503 UNAVAILABLE",
    },
}


# Google Cloud's status page (status.cloud.google.com/incidents.json): not a
# Statuspage. The product whose incidents are about the provider's API, and one
# that is not (its incidents must not count).
GOOGLE_STATUS: dict[str, dict[str, str]] = {
    "google": {"title": "Vertex Gemini API", "id": "Z0FZJAMvEB4j3NbCJs6B"},
}
GOOGLE_OTHER_PRODUCT = {"title": "Cloud Build", "id": "fw8GzBdZdqy4THau7e1y"}


def google_incident(
    product: Mapping[str, str], begin_ms: int, end_ms: int | None, desc: str, update: str
) -> dict[str, Any]:
    """One incident as in status.cloud.google.com/incidents.json ("end" only once over)."""
    incident_id = stable_id(f"gcp:{product['id']}:{begin_ms}", 20)
    impact = "SERVICE_DISRUPTION"
    last = end_ms if end_ms is not None else begin_ms
    status = "AVAILABLE" if end_ms is not None else impact
    where = [{"title": "Global", "id": "global"}]
    latest = {
        "created": google_time(last),
        "modified": google_time(last),
        "when": google_time(last),
        "text": update,
        "status": status,
        "affected_locations": where,
    }
    body: dict[str, Any] = {
        "id": incident_id,
        "number": str(stable_int(incident_id, 20)),
        "begin": google_time(begin_ms),
        "created": google_time(begin_ms),
        "modified": google_time(last),
        "external_desc": desc,
        "updates": [latest],
        "most_recent_update": latest,
        "status_impact": impact,
        "severity": "high" if end_ms is None else "medium",
        "service_key": product["id"],
        "service_name": product["title"],
        "affected_products": [dict(product)],
        "uri": f"incidents/{incident_id}",
        "currently_affected_locations": [] if end_ms is not None else where,
        "previously_affected_locations": where if end_ms is not None else [],
    }
    if end_ms is not None:
        body["end"] = google_time(end_ms)
    return body


class StatusPages(Service):
    """``/status/{provider}/...``."""

    def routes(self) -> list[Route]:
        return [
            Route("/status/{provider}/api/v2/status.json", self.status_json, methods=["GET"]),
            Route("/status/{provider}/api/v2/summary.json", self.summary_json, methods=["GET"]),
            Route("/status/{provider}/incidents.json", self.google_incidents, methods=["GET"]),
        ]

    def status_parts(self, provider: str) -> dict[str, Any]:
        spec = STATUS_PAGES[provider]
        entry = self.state["llm"][provider]
        page_id = stable_id("page:" + provider)
        page = {
            "id": page_id,
            "name": spec["name"],
            "url": spec["url"],
            "time_zone": "Etc/UTC",
            "updated_at": entry["changed_at"],
        }
        down = bool(entry["down"])
        status = (
            {"indicator": "major", "description": "Partial System Outage"}
            if down
            else {"indicator": "none", "description": "All Systems Operational"}
        )
        created = self.state.get("created_at") or entry["changed_at"]
        components = []
        for position, name in enumerate(spec["components"], start=1):
            is_api = position - 1 == spec["api_component"]
            components.append(
                {
                    "id": stable_id(f"component:{provider}:{name}"),
                    "name": name,
                    "status": "major_outage" if down and is_api else "operational",
                    "created_at": created,
                    "updated_at": entry["changed_at"] if is_api else created,
                    "position": position,
                    "description": None,
                    "showcase": True,
                    "start_date": None,
                    "group_id": None,
                    "page_id": page_id,
                    "group": False,
                    "only_show_if_degraded": False,
                }
            )
        incidents = []
        if down:
            since = entry["down_since"] or entry["changed_at"]
            incident_id = stable_id(f"incident:{provider}:{since}")
            api = components[spec["api_component"]]
            incidents.append(
                {
                    "id": incident_id,
                    "name": spec["incident"],
                    "status": "investigating",
                    "created_at": since,
                    "updated_at": since,
                    "monitoring_at": None,
                    "resolved_at": None,
                    "impact": "major",
                    "shortlink": f"https://stspg.io/{incident_id[:7]}",
                    "started_at": since,
                    "page_id": page_id,
                    "incident_updates": [
                        {
                            "id": stable_id(f"update:{incident_id}"),
                            "status": "investigating",
                            "body": "We are currently investigating this issue.",
                            "incident_id": incident_id,
                            "created_at": since,
                            "updated_at": since,
                            "display_at": since,
                            "affected_components": [
                                {
                                    "code": api["id"],
                                    "name": api["name"],
                                    "old_status": "operational",
                                    "new_status": "major_outage",
                                }
                            ],
                            "deliver_notifications": True,
                            "custom_tweet": None,
                            "tweet_id": None,
                        }
                    ],
                    "components": [api],
                }
            )
        return {"page": page, "status": status, "components": components, "incidents": incidents}

    async def status_json(self, request: Request) -> Response:
        provider = request.path_params["provider"]
        if provider not in STATUS_PAGES or provider in GOOGLE_STATUS:
            return PlainTextResponse("Not Found", 404)
        parts = self.status_parts(provider)
        return JSONResponse({"page": parts["page"], "status": parts["status"]})

    async def summary_json(self, request: Request) -> Response:
        provider = request.path_params["provider"]
        # Google Cloud's status page is not a Statuspage: it has no /api/v2/.
        if provider not in STATUS_PAGES or provider in GOOGLE_STATUS:
            return PlainTextResponse("Not Found", 404)
        parts = self.status_parts(provider)
        return JSONResponse(
            {
                "page": parts["page"],
                "components": parts["components"],
                "incidents": parts["incidents"],
                "scheduled_maintenances": [],
                "status": parts["status"],
            }
        )

    async def google_incidents(self, request: Request) -> Response:
        """status.cloud.google.com/incidents.json: every incident, newest first; an
        ongoing one has no "end". Other products' incidents are there too (one ongoing):
        a reader must pick the Gemini ones."""
        provider = request.path_params["provider"]
        if provider not in GOOGLE_STATUS:
            return PlainTextResponse("Not Found", 404)
        entry = self.state["llm"][provider]
        created = parse_time(self.state.get("created_at") or entry["changed_at"]) or now_ms()
        incidents = []
        if entry["down"]:
            since = parse_time(entry["down_since"] or entry["changed_at"]) or now_ms()
            incidents.append(
                google_incident(
                    GOOGLE_STATUS[provider],
                    since,
                    None,
                    STATUS_PAGES[provider]["incident"],
                    "We are investigating elevated error rates for Gemini API requests. "
                    "We will provide more information by the next update.",
                )
            )
        incidents.append(
            google_incident(
                GOOGLE_OTHER_PRODUCT,
                created - 3 * 3600 * 1000,
                None,
                "Cloud Build jobs in europe-west3 are delayed",
                "Mitigation work is underway.",
            )
        )
        incidents.append(
            google_incident(
                GOOGLE_STATUS[provider],
                created - 9 * 86400 * 1000,
                created - 9 * 86400 * 1000 + 95 * 60 * 1000,
                "Elevated latency for Vertex Gemini API in us-central1",
                "The issue with Vertex Gemini API has been resolved for all affected users.",
            )
        )
        return JSONResponse(incidents)
