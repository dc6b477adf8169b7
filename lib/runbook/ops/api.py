"""The Dealix API: health, pricing, DLQs, approvals, admin probes.

The admin key comes from the session's secrets (never a parameter) and is
sent only on `/api/v1/admin/*` calls.

Example (in a notebook)::

    s.api.deep_health()["postgres"]["status"]       # 'green'
    s.api.dlq_stats()["queues"]                      # {'WEBHOOKS_DLQ': 0, ...}
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from runbook.clock import wait_for
from runbook.core.output import Progress
from runbook.errors import RunbookError
from runbook.ops.http import HttpClient, HttpResponse
from runbook.safety.attempt import attempt

if TYPE_CHECKING:
    import pandas as pd

    from runbook.core.context import OpsContext

# a read-only admin endpoint: what a key opens is tested on it
KEY_PROBE_PATH = "/api/v1/admin/dlq/stats"
QUEUES = {"webhooks": "WEBHOOKS_DLQ", "outbound": "OUTBOUND_DLQ", "enrichment": "ENRICHMENT_DLQ"}


class DealixAPI(HttpClient):
    def __init__(self, ctx: OpsContext):
        p = ctx.profile.api
        super().__init__(ctx, "dealix-api", p.base_url, verify=p.verify_tls, timeout=p.timeout)

    def _admin_headers(self) -> dict[str, str]:
        key = self.ctx.secrets.get(self.ctx.profile.secrets.admin_key)
        assert key is not None
        return {"X-API-Key": key}

    def admin_get(self, path: str, **kw: Any) -> HttpResponse:
        return self.get(path, headers=self._admin_headers(), **kw)

    def admin_post(self, path: str, **kw: Any) -> HttpResponse:
        return self.post(path, headers=self._admin_headers(), **kw)

    # -- read-only ----------------------------------------------------------
    def health(self) -> HttpResponse:
        """`GET /health` (any status: the caller judges it)."""
        return self.get("/health", accept=tuple(range(100, 600)))

    def deep_health(self) -> dict[str, Any]:
        """`GET /health/deep` as a dict, with `http_status` added (503 when not green)."""
        resp = self.get("/health/deep", accept=tuple(range(100, 600)))
        body = resp.json() if isinstance(resp.json(), dict) else {"status": "red", "raw": resp.text}
        body["http_status"] = resp.status
        return body

    def wait_green(self, part: str, timeout: float, interval: float = 1.0) -> dict[str, Any]:
        """Poll `/health/deep` until `part` (postgres, redis, llm_providers, ...) is green
        or `timeout` passes; returns the last answer, whole.

        An unreachable API counts as not green and its error stands in the answer
        (`{"status": "unreachable", part: {"status": None, "detail": ...}}`); a refusal
        (a changed host key) ends the wait, never a red check.
        """
        last: dict[str, Any] = {}

        def green() -> bool:
            nonlocal last
            with attempt() as a:
                last = self.deep_health()
            if a.error is not None:
                detail = str(a.error)[:200]
                last = {"status": "unreachable", part: {"status": None, "detail": detail}}
            return (last.get(part) or {}).get("status") == "green"

        progress = Progress(f"waiting for deep health {part} green", seconds=timeout)

        def said(ok: bool, waited: float) -> None:
            status = (last.get(part) or {}).get("status") or last.get("status") or "no answer"
            progress.say(f"{part} {status}", waited=waited, final=ok and progress.lines > 0)

        wait_for(green, timeout, interval, on_poll=said)
        return last

    def wait_healthy(self, timeout: float = 30.0) -> None:
        """Wait until `GET /health` answers 200 (after a restart); `RunbookError` naming the
        last answer when it does not within `timeout`. A refusal ends the wait at once."""
        last: Any = None

        def up() -> bool:
            nonlocal last
            with attempt() as a:
                last = self.health().status
            if a.error is not None:
                last = type(a.error).__name__
            return last == 200

        if not wait_for(up, timeout, 0.3)[0]:
            raise RunbookError(
                f"the API did not answer /health with 200 within {timeout:.0f}s: {last}"
            )

    def key_status(self, key: str) -> int | None:
        """The status a read-only admin call answers when made with `key` (not the
        operator's key: a rotation proves the new key is accepted and the old refused)."""
        resp = self.get(KEY_PROBE_PATH, headers={"X-API-Key": key}, accept=tuple(range(100, 600)))
        return resp.status

    def pricing_plans(self) -> list[dict[str, Any]]:
        return self.get("/api/v1/pricing/plans").json()["plans"]

    def dlq_stats(self) -> dict[str, Any]:
        return self.admin_get("/api/v1/admin/dlq/stats").json()

    def pending_approvals(self) -> dict[str, Any]:
        return self.admin_get("/api/v1/admin/approvals/pending").json()

    # -- changing -------------------------------------------------------------
    def sentry_check(self) -> HttpResponse:
        """Trigger the Sentry and PostHog probes (sends real events: a changing call)."""
        return self.admin_get("/api/v1/admin/sentry-check", changing=True)

    def drain(self, queue: str, limit: int) -> HttpResponse:
        """`POST /api/v1/admin/dlq/{queue}/drain?limit=N`."""
        if queue not in QUEUES:
            from runbook.errors import ParameterError

            raise ParameterError(
                f"unknown queue {queue!r}: one of {', '.join(QUEUES)}", key="queue"
            )
        return self.admin_post(
            f"/api/v1/admin/dlq/{queue}/drain", params={"limit": limit}, changing=True
        )

    def drain_all(self, queue: str, limit: int, max_batches: int = 200) -> pd.DataFrame:
        """Drain one DLQ in batches of `limit` until it is empty or a batch makes no progress."""
        import pandas as pd

        rows = []
        for n in range(1, max_batches + 1):
            resp = self.drain(queue, limit)
            if resp.dry_run:
                break
            body = resp.json() or {}
            rows.append(
                {
                    "batch": n,
                    "drained": body.get("drained", 0),
                    "failed": body.get("failed", 0),
                    "remaining": body.get("remaining"),
                }
            )
            if not body.get("remaining") or not body.get("drained"):
                break
        return pd.DataFrame(rows, columns=["batch", "drained", "failed", "remaining"])

    def dlq_depths(self) -> dict[str, int]:
        """Depth of every DLQ now."""
        return {k: int(v) for k, v in self.dlq_stats()["queues"].items()}


def on_host(ctx: OpsContext, path: str, *, timeout: float = 10) -> tuple[int | None, Any]:
    """`GET path` of the API on the host `ctx` reaches, through that host's own nginx.

    For one server of a fleet, bypassing the load balancer: a probe (`curl` on
    the host, with the API's name resolved to 127.0.0.1 so TLS is verified
    against the name the certificate holds). Returns (HTTP status or None when
    curl could not connect, the body as JSON or text). No admin key is sent:
    only the public endpoints (/health, /health/deep) are read this way.
    """
    from urllib.parse import urlsplit

    if path.startswith("/api/v1/admin"):
        raise RunbookError(f"{path}: an admin endpoint is read through the load balancer")
    url = urlsplit(ctx.profile.api.base_url)
    host, port = url.hostname or "localhost", url.port or (443 if url.scheme == "https" else 80)
    marker = "\n__runbook_http_status="
    r = ctx.probe(
        [
            "curl", "-s", "--max-time", str(int(timeout)),
            "--resolve", f"{host}:{port}:127.0.0.1",
            "-w", marker + "%{http_code}",
            f"{url.scheme}://{host}:{port}{path}",
        ],
        warn=True, label="api-on-host", echo=False,
    )  # fmt: skip
    body, _, code = r.stdout.rpartition(marker.strip("\n"))
    status = int(code) if code.strip().isdigit() and int(code) > 0 else None
    import json

    try:
        parsed: Any = json.loads(body) if body.strip() else None
    except ValueError:
        parsed = body.strip()
    return status, parsed
