"""HTTP with evidence: every call logged (redacted) to commands.jsonl, errors as `HTTPFailed`.

Example (in a notebook)::

    api = HttpClient(session, "dealix-api", "https://api.dealix.me")
    resp = api.get("/health")
    resp.status, resp.json()
"""

from __future__ import annotations

import json as jsonlib
import time
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import httpx

from runbook.core.context import HttpCall
from runbook.errors import HTTPFailed

if TYPE_CHECKING:
    from runbook.core.context import OpsContext

BODY_SNIPPET = 500
READ_ONLY_METHODS = frozenset({"GET", "HEAD", "OPTIONS"})


@dataclass(frozen=True)
class HttpResponse:
    method: str
    url: str
    status: int | None
    text: str
    headers: dict[str, str]
    duration: float
    dry_run: bool = False

    @property
    def ran(self) -> bool:
        """False for a changing call skipped by a dry run (it was never sent)."""
        return not self.dry_run

    @property
    def ok(self) -> bool:
        """A 2xx answer; never True for a call that was not sent (dry run)."""
        return self.status is not None and 200 <= self.status < 300

    def json(self) -> Any:
        try:
            return jsonlib.loads(self.text) if self.text else None
        except ValueError:
            return None


class HttpClient:
    """A named HTTP endpoint (the Dealix API, GitHub, Sentry, …) with default headers.

    `secret_headers` are added to each request but never logged; their
    values are secrets already registered with the redactor.
    """

    def __init__(
        self,
        ctx: OpsContext,
        name: str,
        base_url: str,
        *,
        headers: dict[str, str] | None = None,
        verify: bool = True,
        timeout: float = 10.0,
    ):
        self.ctx = ctx
        self.name = name
        self.base_url = base_url.rstrip("/")
        self._client = httpx.Client(
            base_url=self.base_url,
            headers=headers or {},
            verify=verify,
            timeout=httpx.Timeout(timeout, connect=min(timeout, 5.0)),
            follow_redirects=False,
        )

    def request(
        self,
        method: str,
        path: str,
        *,
        params: dict[str, Any] | None = None,
        json: Any = None,
        content: bytes | None = None,
        headers: dict[str, str] | None = None,
        accept: tuple[int, ...] | None = None,
        changing: bool | None = None,
        timeout: float | None = None,
    ) -> HttpResponse:
        """Send one request. Raises `HTTPFailed` on a network error or an
        unaccepted status (default: any 2xx). A changing call follows the
        session's dry-run and confirmation rules.

        `changing` defaults to True for every method but GET, HEAD and OPTIONS:
        a POST that only reads (a search API, a provider ping) says
        `changing=False` where it is made, so nothing changes by omission."""
        s = self.ctx
        # a server showing the wrong SSH host key gets no HTTP call either
        s.verify_target()
        if changing is None:
            changing = method.upper() not in READ_ONLY_METHODS
        url = self.base_url + path
        shown = s.redactor.redact(
            f"{method} {url}" + (f"?{httpx.QueryParams(params)}" if params else "")
        )
        if changing and not s.allow_change(f"HTTP {shown}", kind="http"):
            return HttpResponse(method, url, None, "", {}, 0.0, dry_run=True)
        started = time.monotonic()
        kwargs: dict[str, Any] = {"params": params, "headers": headers}
        if json is not None:
            kwargs["json"] = json
        if content is not None:
            kwargs["content"] = content
        if timeout is not None:
            kwargs["timeout"] = timeout
        try:
            resp = self._client.request(method, path, **kwargs)
        except httpx.HTTPError as exc:
            duration = time.monotonic() - started
            message = s.redactor.redact(f"{self.name}: {shown} failed: {type(exc).__name__}: {exc}")
            s.log_http(HttpCall(self.name, shown, None, duration, 0, changing, error=message))
            raise HTTPFailed(message, method=method, url=s.redactor.redact(url)) from None
        duration = time.monotonic() - started
        text = s.redactor.redact(resp.text)
        s.log_http(
            HttpCall(self.name, shown, resp.status_code, duration, len(resp.content), changing)
        )
        result = HttpResponse(
            method,
            s.redactor.redact(url),
            resp.status_code,
            text,
            {k.lower(): s.redactor.redact(v) for k, v in resp.headers.items()},
            duration,
        )
        ok = resp.status_code in accept if accept is not None else 200 <= resp.status_code < 300
        if not ok:
            raise HTTPFailed(
                f"{self.name}: {shown} answered {resp.status_code}: {text[:BODY_SNIPPET]}",
                method=method,
                url=result.url,
                status=resp.status_code,
                body=text[:BODY_SNIPPET],
            )
        return result

    def get(self, path: str, **kw: Any) -> HttpResponse:
        return self.request("GET", path, **kw)

    def post(self, path: str, **kw: Any) -> HttpResponse:
        return self.request("POST", path, **kw)

    def close(self) -> None:
        self._client.close()
