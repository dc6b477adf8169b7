"""LLM provider clients (Anthropic, OpenAI, Google) behind circuit breakers.

The requests have the real APIs' shapes so the same code would talk to the
real providers; in the sandbox the base URLs point at the SaaS stubs.
"""

from __future__ import annotations

from typing import Any

import httpx

from .breaker import CircuitBreaker
from .config import DEFAULT_BASE_URLS, KNOWN_PROVIDERS, Settings

# Short enough that a hung provider trips the breaker within a few ticks
# instead of stalling the worker and the drain endpoint.
PROVIDER_TIMEOUT_SECONDS = 3.0

MODELS = {
    "anthropic": "claude-3-5-haiku-latest",
    "openai": "gpt-4o-mini",
    "google": "gemini-1.5-flash",
}
ANTHROPIC_VERSION = "2023-06-01"
MAX_TOKENS = 64


class ProviderError(Exception):
    """The provider answered badly (HTTP error, malformed body) or not at all."""


class ProviderClient:
    def __init__(self, name: str, base_url: str, api_key: str) -> None:
        if name not in KNOWN_PROVIDERS:
            raise ValueError(f"unknown provider {name!r}")
        self.name = name
        self.base_url = base_url.rstrip("/")
        self._api_key = api_key
        self._http = httpx.Client(timeout=PROVIDER_TIMEOUT_SECONDS)

    def close(self) -> None:
        self._http.close()

    def complete(self, prompt: str) -> str:
        try:
            if self.name == "anthropic":
                return self._anthropic(prompt)
            if self.name == "openai":
                return self._openai(prompt)
            return self._google(prompt)
        except httpx.TimeoutException as exc:
            raise ProviderError(f"{self.name}: timeout after {PROVIDER_TIMEOUT_SECONDS}s") from exc
        except httpx.HTTPError as exc:
            raise ProviderError(self._scrub(f"{self.name}: {type(exc).__name__}: {exc}")) from exc
        except ProviderError as exc:
            raise ProviderError(self._scrub(str(exc))) from exc.__cause__

    def _scrub(self, message: str) -> str:
        # Error texts end up in DLQ items, logs and Sentry; Google's key is in
        # the URL, and a provider may echo a header back in its error body.
        return message.replace(self._api_key, "***") if self._api_key else message

    def _check(self, response: httpx.Response) -> Any:
        if response.status_code >= 400:
            snippet = response.text[:200].replace("\n", " ")
            raise ProviderError(f"{self.name}: HTTP {response.status_code}: {snippet}")
        try:
            return response.json()
        except ValueError as exc:
            raise ProviderError(f"{self.name}: response is not JSON") from exc

    def _anthropic(self, prompt: str) -> str:
        response = self._http.post(
            f"{self.base_url}/v1/messages",
            headers={
                "x-api-key": self._api_key,
                "anthropic-version": ANTHROPIC_VERSION,
                "content-type": "application/json",
            },
            json={
                "model": MODELS["anthropic"],
                "max_tokens": MAX_TOKENS,
                "messages": [{"role": "user", "content": prompt}],
            },
        )
        body = self._check(response)
        try:
            return "".join(
                block.get("text", "") for block in body["content"] if block.get("type") == "text"
            )
        except (KeyError, TypeError, AttributeError) as exc:
            raise ProviderError("anthropic: unexpected response shape") from exc

    def _openai(self, prompt: str) -> str:
        response = self._http.post(
            f"{self.base_url}/v1/chat/completions",
            headers={"Authorization": f"Bearer {self._api_key}"},
            json={
                "model": MODELS["openai"],
                "max_tokens": MAX_TOKENS,
                "messages": [{"role": "user", "content": prompt}],
            },
        )
        body = self._check(response)
        try:
            return str(body["choices"][0]["message"]["content"] or "")
        except (KeyError, IndexError, TypeError) as exc:
            raise ProviderError("openai: unexpected response shape") from exc

    def _google(self, prompt: str) -> str:
        # The key travels in the query string, as Google's REST API expects;
        # complete() scrubs it from any error text that quotes the URL.
        response = self._http.post(
            f"{self.base_url}/v1beta/models/{MODELS['google']}:generateContent",
            params={"key": self._api_key},
            json={
                "contents": [{"role": "user", "parts": [{"text": prompt}]}],
                "generationConfig": {"maxOutputTokens": MAX_TOKENS},
            },
        )
        body = self._check(response)
        try:
            parts = body["candidates"][0]["content"]["parts"]
            return "".join(str(part.get("text", "")) for part in parts)
        except (KeyError, IndexError, TypeError, AttributeError) as exc:
            raise ProviderError("google: unexpected response shape") from exc


class Providers:
    """The configured providers, each with its own breaker, in priority order."""

    def __init__(self, settings: Settings) -> None:
        self.priority = settings.llm_provider_priority
        self.primary = self.priority[0]
        self.clients = {
            name: ProviderClient(
                name,
                settings.provider_base_urls.get(name) or DEFAULT_BASE_URLS[name],
                settings.provider_keys.get(name, ""),
            )
            for name in self.priority
        }
        self.breakers = {
            name: CircuitBreaker(
                name,
                failure_threshold=settings.breaker_failure_threshold,
                reset_seconds=settings.breaker_reset_seconds,
            )
            for name in self.priority
        }

    def complete(self, provider: str, prompt: str) -> str:
        """Call one provider through its breaker (CircuitOpenError when open)."""
        return self.breakers[provider].call(self.clients[provider].complete, prompt)

    def complete_primary(self, prompt: str) -> str:
        return self.complete(self.primary, prompt)

    def snapshots(self) -> dict[str, dict[str, Any]]:
        return {name: self.breakers[name].snapshot() for name in self.priority}

    def health(self) -> dict[str, Any]:
        providers = self.snapshots()
        primary_status = providers[self.primary]["status"]
        others = [providers[name]["status"] for name in self.priority[1:]]
        if primary_status == "red":
            status = "red"
        elif primary_status == "yellow" or any(s != "green" for s in others):
            # A half-open primary is recovering, and a broken fallback only
            # matters after a failover: degraded, not down.
            status = "yellow"
        else:
            status = "green"
        unhealthy = [
            f"{name} {snap['state']} ({snap['consecutive_failures']} consecutive failures)"
            for name, snap in providers.items()
            if snap["status"] != "green"
        ]
        detail = (
            f"primary {self.primary}; " + "; ".join(unhealthy)
            if unhealthy
            else f"primary {self.primary}; all breakers closed"
        )
        return {"status": status, "detail": detail, "providers": providers}

    def close(self) -> None:
        for client in self.clients.values():
            client.close()
