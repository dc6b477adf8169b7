"""Settings from `.env` in the working directory, overridden by the environment.

Production keeps its configuration in `/opt/dealix/.env` and the runbook edits
that file (provider failover, secret rotation) and then restarts the service,
so settings are read once at startup and never reloaded behind the operator's
back.
"""

from __future__ import annotations

import os
import re
from dataclasses import dataclass, field
from pathlib import Path

KNOWN_PROVIDERS = ("anthropic", "openai", "google")
DEFAULT_PRIORITY = KNOWN_PROVIDERS

DEFAULT_BASE_URLS = {
    "anthropic": "https://api.anthropic.com",
    "openai": "https://api.openai.com",
    "google": "https://generativelanguage.googleapis.com",
}

_KEY_RE = re.compile(r"^[A-Za-z_][A-Za-z0-9_]*$")


def parse_env_text(text: str) -> dict[str, str]:
    """Parse KEY=VALUE lines the way shells and python-dotenv read `.env` files.

    Handles `export KEY=...`, single quotes (literal), double quotes (with
    backslash escapes) and `#` comments, which start a comment only at the
    start of a line or after whitespace in an unquoted value, so a `#` inside
    a secret does not truncate it.
    """
    result: dict[str, str] = {}
    for raw in text.splitlines():
        line = raw.strip()
        if not line or line.startswith("#"):
            continue
        if line.startswith("export "):
            line = line[len("export ") :].lstrip()
        key, sep, rest = line.partition("=")
        key = key.strip()
        if not sep or not _KEY_RE.match(key):
            continue
        result[key] = _parse_value(rest.strip())
    return result


def _parse_value(rest: str) -> str:
    if rest[:1] == "'":
        end = rest.find("'", 1)
        return rest[1:end] if end != -1 else rest[1:]
    if rest[:1] == '"':
        out: list[str] = []
        i = 1
        escapes = {"n": "\n", "t": "\t", '"': '"', "\\": "\\", "$": "$"}
        while i < len(rest):
            ch = rest[i]
            if ch == "\\" and i + 1 < len(rest):
                nxt = rest[i + 1]
                out.append(escapes.get(nxt, "\\" + nxt))
                i += 2
                continue
            if ch == '"':
                break
            out.append(ch)
            i += 1
        return "".join(out)
    match = re.search(r"\s#", rest)
    if match:
        rest = rest[: match.start()]
    return rest.strip()


def read_env_file(path: Path) -> dict[str, str]:
    try:
        return parse_env_text(path.read_text(encoding="utf-8"))
    except FileNotFoundError:
        return {}


def _int(values: dict[str, str], key: str, default: int, minimum: int) -> int:
    raw = values.get(key, "").strip()
    if not raw:
        return default
    try:
        number = int(raw)
    except ValueError:
        raise ValueError(f"{key} must be an integer, got {raw!r}") from None
    if number < minimum:
        raise ValueError(f"{key} must be >= {minimum}, got {number}")
    return number


def _float(values: dict[str, str], key: str, default: float, minimum: float) -> float:
    raw = values.get(key, "").strip()
    if not raw:
        return default
    try:
        number = float(raw)
    except ValueError:
        raise ValueError(f"{key} must be a number, got {raw!r}") from None
    if number < minimum:
        raise ValueError(f"{key} must be >= {minimum}, got {number}")
    return number


def parse_priority(raw: str) -> tuple[str, ...]:
    names: list[str] = []
    for part in raw.split(","):
        name = part.strip().lower()
        if name in KNOWN_PROVIDERS and name not in names:
            names.append(name)
    return tuple(names) or DEFAULT_PRIORITY


@dataclass(frozen=True)
class Settings:
    app_env: str = "production"
    database_url: str = ""
    redis_url: str = "redis://127.0.0.1:6379/0"
    admin_key: str = field(default="", repr=False)
    webhook_secret: str = field(default="", repr=False)
    provider_keys: dict[str, str] = field(default_factory=dict, repr=False)
    provider_base_urls: dict[str, str] = field(default_factory=dict)
    llm_provider_priority: tuple[str, ...] = DEFAULT_PRIORITY
    breaker_failure_threshold: int = 3
    breaker_reset_seconds: float = 60.0
    workload_interval_seconds: float = 0.0
    sentry_dsn: str = field(default="", repr=False)
    posthog_api_key: str = field(default="", repr=False)
    posthog_host: str = ""

    @property
    def primary_provider(self) -> str:
        return self.llm_provider_priority[0]

    @property
    def is_sandbox(self) -> bool:
        return self.app_env == "sandbox"


def load_settings(env_file: Path | str | None = None) -> Settings:
    path = Path(env_file) if env_file is not None else Path.cwd() / ".env"
    values = read_env_file(path)
    # The process environment wins so supervisord or a test can override one
    # key without rewriting the file.
    for key, value in os.environ.items():
        if _KEY_RE.match(key):
            values[key] = value
    return Settings(
        app_env=values.get("APP_ENV", "production").strip() or "production",
        database_url=values.get("DATABASE_URL", "").strip(),
        redis_url=values.get("REDIS_URL", "").strip() or "redis://127.0.0.1:6379/0",
        admin_key=values.get("ADMIN_KEY", ""),
        webhook_secret=values.get("WEBHOOK_SECRET", ""),
        provider_keys={name: values.get(f"{name.upper()}_API_KEY", "") for name in KNOWN_PROVIDERS},
        provider_base_urls={
            name: (values.get(f"{name.upper()}_BASE_URL", "").strip() or DEFAULT_BASE_URLS[name])
            for name in KNOWN_PROVIDERS
        },
        llm_provider_priority=parse_priority(values.get("LLM_PROVIDER_PRIORITY", "")),
        breaker_failure_threshold=_int(values, "BREAKER_FAILURE_THRESHOLD", 3, 1),
        breaker_reset_seconds=_float(values, "BREAKER_RESET_SECONDS", 60.0, 0.0),
        workload_interval_seconds=_float(values, "WORKLOAD_INTERVAL_SECONDS", 0.0, 0.0),
        sentry_dsn=values.get("SENTRY_DSN", "").strip(),
        posthog_api_key=values.get("POSTHOG_API_KEY", "").strip(),
        posthog_host=values.get("POSTHOG_HOST", "").strip(),
    )
