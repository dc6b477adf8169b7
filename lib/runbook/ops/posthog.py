"""PostHog's events API: did an event arrive after a time, with these properties?

Example (in a notebook)::

    PostHog(s).has_event("runbook_probe", after=started, probe_id=probe)

An empty `posthog.project_id` in the profile means the key's current project
(`/api/projects/@current/events/`).
"""

from __future__ import annotations

import json
from datetime import datetime
from typing import TYPE_CHECKING, Any

from runbook.clock import iso
from runbook.ops.http import HttpClient

if TYPE_CHECKING:
    from runbook.core.context import OpsContext


class PostHog(HttpClient):
    """PostHog's events API with the personal API key from the secrets."""

    def __init__(self, ctx: OpsContext):
        p = ctx.profile.posthog
        super().__init__(ctx, "posthog", p.api_url)
        # production.yaml and staging.yaml leave project_id empty, which made the URL
        # /api/projects//events/ (a 404 that failed every deploy's probe step on the
        # twin); PostHog's API takes `@current` for the key's current project
        self.project_id = p.project_id or "@current"

    def has_event(self, event: str, after: datetime, **props: str) -> bool:
        key = self.ctx.secrets.get(self.ctx.profile.secrets.posthog_key)
        params: dict[str, Any] = {"event": event, "after": iso(after)}
        if props:
            params["properties"] = json.dumps(
                [{"key": k, "value": v, "type": "event"} for k, v in props.items()]
            )
        body = self.get(
            f"/api/projects/{self.project_id}/events/",
            params=params,
            headers={"Authorization": f"Bearer {key}"},
        ).json()
        return bool(isinstance(body, dict) and body.get("results"))
