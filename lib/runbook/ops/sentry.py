"""Sentry's REST API: recent events, error stats per bucket, the error rate.

Example (in a notebook)::

    sentry = Sentry(s)
    sentry.has_event(event_id)            # the deploy's probe arrived?
    sentry.rate(since, until)             # errors per minute, whole buckets only
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from runbook.ops.http import HttpClient

if TYPE_CHECKING:
    from runbook.core.context import OpsContext

# the resolution asked of Sentry's stats endpoint, in seconds
SENTRY_BUCKET_S = 10


def per_minute(buckets: list[list[float]], since: float, until: float) -> float | None:
    """Errors per minute over the whole Sentry stats buckets inside [since, until).

    `buckets` are `[bucket start (unix s), count]` with SENTRY_BUCKET_S
    seconds each. None when no whole bucket lies inside the window.

    >>> per_minute([[100, 5], [110, 1], [120, 7]], 100, 130)
    26.0
    >>> per_minute([[100, 5], [110, 1]], 101, 125) is None   # 110-120 is whole
    False
    >>> per_minute([[100, 5]], 101, 109) is None
    True
    """
    whole = [c for start, c in buckets if start >= since and start + SENTRY_BUCKET_S <= until]
    if not whole:
        return None
    return sum(whole) * 60.0 / (len(whole) * SENTRY_BUCKET_S)


class Sentry(HttpClient):
    """Sentry's REST API (events, stats) with the auth token from the secrets."""

    def __init__(self, ctx: OpsContext):
        p = ctx.profile.sentry
        super().__init__(ctx, "sentry", p.api_url)
        self.org, self.project = p.org, p.project

    def _auth(self) -> dict[str, str]:
        token = self.ctx.secrets.get(self.ctx.profile.secrets.sentry_token)
        return {"Authorization": f"Bearer {token}"}

    def _base(self) -> str:
        return f"/api/0/projects/{self.org}/{self.project}"

    def events(self, period: str = "15m", query: str = "") -> list[dict[str, Any]]:
        params = {"statsPeriod": period, **({"query": query} if query else {})}
        body = self.get(f"{self._base()}/events/", params=params, headers=self._auth()).json()
        return body if isinstance(body, list) else []

    def has_event(self, event_id: str) -> bool:
        want = event_id.replace("-", "")
        return any(
            str(e.get("eventID") or e.get("id")).replace("-", "") == want
            for e in self.events("15m")
        )

    def stats(self, since: float, until: float) -> list[list[float]]:
        """Received errors per 10-second bucket: `[[bucket start, count], ...]`."""
        body = self.get(
            f"{self._base()}/stats/",
            params={
                "stat": "received",
                "since": int(since),
                "until": int(until),
                "resolution": f"{SENTRY_BUCKET_S}s",
            },
            headers=self._auth(),
        ).json()
        return body if isinstance(body, list) else []

    def rate(self, since: float, until: float) -> float | None:
        return per_minute(self.stats(since, until), since, until)
