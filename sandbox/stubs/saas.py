"""Stand-in for the SaaS the sandbox cannot reach.

One Starlette app serves GitHub Actions, Sentry (ingestion and query API),
PostHog (capture and the legacy events API), the three LLM providers and
their Atlassian Statuspage pages, each under its own path prefix and with
the real API's request and response shapes, error bodies included.

Faults are driven through the loopback-only ``/_stub/...`` control
endpoints. All mutable state lives in one JSON file that is rewritten
atomically on every change, so a fault set before a restart of the stub is
still active after it. The state never holds a credential.

Run::

    python sandbox/stubs/saas.py --host 127.0.0.1 --port P \\
        --config CONFIG.json --state STATE.json
"""

from __future__ import annotations

import argparse
import base64
import contextlib
import hashlib
import heapq
import hmac
import ipaddress
import itertools
import json
import logging
import os
import random
import re
import secrets
import shlex
import sys
import tempfile
import time
import uuid
import zlib
from collections.abc import Awaitable, Callable, Iterable, Iterator, Mapping
from datetime import UTC, datetime
from fnmatch import fnmatchcase
from pathlib import Path
from typing import Any
from urllib.parse import parse_qsl, quote, urlsplit

import uvicorn
from starlette.applications import Starlette
from starlette.middleware import Middleware
from starlette.requests import Request
from starlette.responses import JSONResponse, PlainTextResponse, Response
from starlette.routing import Route
from starlette.types import ASGIApp, Message, Receive, Scope, Send

try:  # sentry-python compresses with brotli when the sender has it installed
    import brotli  # type: ignore[import-not-found]
except ImportError:  # pragma: no cover - depends on the environment
    brotli = None

log = logging.getLogger("saas-stubs")

PROVIDERS = ("anthropic", "openai", "google")
MAX_SENTRY_EVENTS = 10_000
MAX_POSTHOG_EVENTS = 10_000
MAX_COMMENTS = 1_000
MAX_SPIKES = 100
MAX_BODY_BYTES = 20 * 1024 * 1024
SENTRY_RESOLUTIONS = {"10s": 10, "1h": 3_600, "1d": 86_400}
MAX_STATS_BUCKETS = 10_000
STATE_VERSION = 1

# Settings the orchestrator always writes; the non-secret ones have the
# sandbox's usual values so the app can be built in-process with fewer keys.
CONFIG_DEFAULTS = {
    "github_repo": "VoXc2/dealix",
    "sentry_project_id": "1",
    "sentry_org": "dealix",
    "sentry_project": "dealix-api",
    "posthog_project_id": "1",
}
SECRET_CONFIG_KEYS = (
    "github_token",
    "sentry_auth_token",
    "sentry_public_key",
    "posthog_project_api_key",
    "posthog_personal_api_key",
    "anthropic_api_key",
    "openai_api_key",
    "google_api_key",
)
# Query parameters that carry credentials in the real APIs; the access log
# masks them because uvicorn's own access log would print them verbatim.
SECRET_QUERY_PARAMS = frozenset(
    {"key", "api_key", "token", "sentry_key", "sentry_secret", "personal_api_key", "access_token"}
)

Handler = Callable[[Request], Awaitable[Response]]


# --------------------------------------------------------------------------
# Time


def now_ms() -> int:
    return int(time.time() * 1000)


def _dt(ms: int) -> datetime:
    return datetime.fromtimestamp(ms / 1000, tz=UTC)


def iso_seconds(ms: int) -> str:
    """GitHub's timestamps: whole seconds, Z."""
    return _dt(ms).strftime("%Y-%m-%dT%H:%M:%SZ")


def iso_millis(ms: int) -> str:
    """Statuspage's timestamps: milliseconds, Z."""
    return _dt(ms).isoformat(timespec="milliseconds").replace("+00:00", "Z")


def iso_micros(ms: int) -> str:
    """Sentry's timestamps: microseconds, Z."""
    return _dt(ms).strftime("%Y-%m-%dT%H:%M:%S.%fZ")


def iso_offset(ms: int) -> str:
    """PostHog's timestamps: microseconds, +00:00."""
    return _dt(ms).isoformat(timespec="microseconds")


_FRACTION_TOO_LONG = re.compile(r"(\.\d{6})\d+")


def parse_time(value: object) -> int | None:
    """Milliseconds since the epoch from an ISO 8601 string or a number of seconds."""
    if value is None or isinstance(value, bool):
        return None
    if isinstance(value, int | float):
        return int(value * 1000)
    if not isinstance(value, str) or not value.strip():
        return None
    text = value.strip()
    with contextlib.suppress(ValueError):
        return int(float(text) * 1000)
    # Go and JS SDKs send nanoseconds, which fromisoformat refuses.
    text = _FRACTION_TOO_LONG.sub(r"\1", text)
    if text[-1] in "Zz":
        text = text[:-1] + "+00:00"
    try:
        parsed = datetime.fromisoformat(text)
    except ValueError:
        return None
    if parsed.tzinfo is None:
        parsed = parsed.replace(tzinfo=UTC)
    return int(parsed.timestamp() * 1000)


_PERIOD = re.compile(r"^\s*(\d+)\s*([smhdw])\s*$")
_PERIOD_MS = {"s": 1_000, "m": 60_000, "h": 3_600_000, "d": 86_400_000, "w": 604_800_000}


def parse_period(text: str) -> int | None:
    """Length in ms of a Sentry-style period such as ``14d`` or ``90m``."""
    match = _PERIOD.match(text)
    if not match:
        return None
    return int(match.group(1)) * _PERIOD_MS[match.group(2)]


def parse_time_or_relative(text: str, now: int) -> int | None:
    """An absolute time, or PostHog's relative form such as ``-1h`` or ``-7d``."""
    if text.startswith("-"):
        span = parse_period(text[1:])
        if span is not None:
            return now - span
    return parse_time(text)


def ceil_div(a: int, b: int) -> int:
    return -((-a) // b)


# --------------------------------------------------------------------------
# Small helpers


def secret_eq(given: str | None, expected: str) -> bool:
    """Constant-time comparison; an unset expected secret never matches."""
    if not given or not expected:
        return False
    return hmac.compare_digest(given.encode(), expected.encode())


def stable_int(text: str, digits: int = 10) -> int:
    """A stable positive integer derived from ``text`` (ids that survive restarts)."""
    value = int(hashlib.sha256(text.encode()).hexdigest()[:15], 16)
    low = 10 ** (digits - 1)
    return low + value % (9 * low)


def stable_id(text: str, length: int = 12) -> str:
    """A stable lowercase alphanumeric id, shaped like Statuspage's."""
    alphabet = "0123456789abcdefghijklmnopqrstuvwxyz"
    value = int(hashlib.sha256(text.encode()).hexdigest(), 16)
    chars = []
    for _ in range(length):
        value, rem = divmod(value, len(alphabet))
        chars.append(alphabet[rem])
    return "".join(chars)


def random_token(length: int) -> str:
    alphabet = "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789"
    return "".join(secrets.choice(alphabet) for _ in range(length))


def node_id(prefix: str, number: int) -> str:
    """GitHub-style global node id (opaque base64 after a type prefix)."""
    raw = number.to_bytes(8, "big")
    return prefix + base64.urlsafe_b64encode(raw).decode().rstrip("=")


def int_param(params: Mapping[str, str], name: str, default: int) -> int:
    try:
        return int(params.get(name, default))
    except (TypeError, ValueError):
        return default


def truthy(value: str | None) -> bool:
    return (value or "").strip().lower() in {"1", "true", "yes", "on"}


def approx_tokens(text: str) -> int:
    return max(1, len(text) // 4)


def is_loopback(host: str | None) -> bool:
    if host is None:
        return True
    if host == "testclient":  # Starlette's in-process TestClient, never a socket peer
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return host == "localhost"


def redact_query(query: str) -> str:
    if not query:
        return ""
    parts = []
    for key, value in parse_qsl(query, keep_blank_values=True):
        shown = "***" if key.lower() in SECRET_QUERY_PARAMS else quote(value, safe="/:,@")
        parts.append(f"{quote(key)}={shown}")
    return "?" + "&".join(parts)


class BodyError(ValueError):
    """A request body that cannot be decoded."""


def _inflate(raw: bytes, wbits: int) -> bytes:
    decoder = zlib.decompressobj(wbits)
    try:
        out = decoder.decompress(raw, MAX_BODY_BYTES + 1)
    except zlib.error as exc:
        raise BodyError(f"bad compressed body: {exc}") from exc
    if len(out) > MAX_BODY_BYTES or decoder.unconsumed_tail:
        raise BodyError("body too large once decompressed")
    return out


def gunzip(raw: bytes) -> bytes:
    return _inflate(raw, 16 + zlib.MAX_WBITS)


def decode_content(raw: bytes, content_encoding: str) -> bytes:
    """Undo a Content-Encoding (gzip, deflate, br when available)."""
    codings = [c.strip().lower() for c in content_encoding.split(",") if c.strip()]
    for coding in reversed(codings):
        if coding == "identity":
            continue
        if coding in ("gzip", "x-gzip"):
            raw = gunzip(raw)
        elif coding == "deflate":
            # Servers disagree on whether "deflate" is zlib-wrapped; accept both.
            try:
                raw = _inflate(raw, zlib.MAX_WBITS)
            except BodyError:
                raw = _inflate(raw, -zlib.MAX_WBITS)
        elif coding == "br" and brotli is not None:
            try:
                raw = brotli.decompress(raw)
            except Exception as exc:
                raise BodyError(f"bad brotli body: {exc}") from exc
        else:
            raise BodyError(f"unsupported content encoding: {coding}")
    return raw


async def read_body(request: Request) -> bytes:
    raw = await request.body()
    if len(raw) > MAX_BODY_BYTES:
        raise BodyError("body too large")
    return decode_content(raw, request.headers.get("content-encoding", ""))


async def read_json(request: Request) -> Any:
    raw = await read_body(request)
    try:
        return json.loads(raw)
    except (UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise BodyError(f"invalid JSON: {exc}") from exc


def as_dict(value: object) -> dict[str, Any]:
    return value if isinstance(value, dict) else {}


# --------------------------------------------------------------------------
# State


WORKFLOWS = {
    "CI": (".github/workflows/ci.yml", 98_765_401),
    "Lint": (".github/workflows/lint.yml", 98_765_402),
    "Tests": (".github/workflows/tests.yml", 98_765_403),
}
WORKFLOW_CYCLE = ("CI", "Lint", "Tests")
COMMIT_TITLES = (
    "Merge pull request #118 from VoXc2/feat/pricing-cache",
    "Merge pull request #121 from VoXc2/fix/webhook-dedupe",
    "Merge pull request #124 from VoXc2/chore/deps",
    "Merge pull request #127 from VoXc2/feat/lead-scoring",
    "Merge pull request #130 from VoXc2/fix/breaker-reset",
)


def workflow_for(name: str) -> tuple[str, int]:
    if name in WORKFLOWS:
        return WORKFLOWS[name]
    slug = re.sub(r"[^a-z0-9]+", "-", name.lower()).strip("-") or "workflow"
    return f".github/workflows/{slug}.yml", stable_int("workflow:" + name, 8)


def random_sha() -> str:
    return secrets.token_hex(20)


def new_run(
    state: dict[str, Any],
    *,
    name: str,
    head_sha: str,
    branch: str,
    status: str,
    conclusion: str | None,
    created_ms: int,
    updated_ms: int,
    display_title: str,
) -> dict[str, Any]:
    github = state["github"]
    run_id = github["next_run_id"]
    # Real run ids are sparse; a random stride keeps them looking that way.
    github["next_run_id"] = run_id + random.randint(40, 4_000)
    path, workflow_id = workflow_for(name)
    previous = [r["run_number"] for r in github["runs"] if r["name"] == name]
    return {
        "id": run_id,
        "name": name,
        "head_branch": branch,
        "head_sha": head_sha,
        "path": path,
        "display_title": display_title,
        "run_number": (max(previous) + 1) if previous else 140 + len(github["runs"]),
        "event": "push",
        "status": status,
        "conclusion": conclusion,
        "workflow_id": workflow_id,
        "check_suite_id": run_id * 3 + 11,
        "created_at": iso_seconds(created_ms),
        "updated_at": iso_seconds(updated_ms),
        "run_started_at": iso_seconds(created_ms),
    }


def default_state(now: int | None = None) -> dict[str, Any]:
    """A healthy world: green CI on main, no events, every provider up."""
    now = now_ms() if now is None else now
    stamp = iso_millis(now)
    state: dict[str, Any] = {
        "version": STATE_VERSION,
        "created_at": stamp,
        "github": {
            "runs": [],
            "comments": [],
            "next_run_id": 9_100_000_000 + random.randint(0, 99_999_999),
            "next_comment_id": 2_400_000_000 + random.randint(0, 99_999_999),
        },
        "sentry": {"events": [], "spikes": []},
        "posthog": {"events": []},
        "llm": {
            p: {
                "down": False,
                "down_since": None,
                "changed_at": stamp,
                "calls": {"ok": 0, "failed": 0, "rejected": 0},
            }
            for p in PROVIDERS
        },
    }
    # Oldest first, so that the names alternate CI, Lint, Tests in time order
    # and a run added later continues the cycle.
    for j in range(5):
        created = now - (4 - j) * 18 * 3_600_000 - 3_600_000 - random.randint(0, 900_000)
        run = new_run(
            state,
            name=WORKFLOW_CYCLE[j % 3],
            head_sha=random_sha(),
            branch="main",
            status="completed",
            conclusion="success",
            created_ms=created,
            updated_ms=created + random.randint(150_000, 420_000),
            display_title=COMMIT_TITLES[j],
        )
        state["github"]["runs"].insert(0, run)
    return state


def merge_defaults(loaded: dict[str, Any]) -> dict[str, Any]:
    """Fill whatever an older or hand-edited state file lacks."""
    defaults = default_state()
    for section, value in defaults.items():
        if section not in loaded or type(loaded[section]) is not type(value):
            loaded[section] = value
        elif isinstance(value, dict):
            for key, sub in value.items():
                loaded[section].setdefault(key, sub)
    for provider in PROVIDERS:
        entry = loaded["llm"].setdefault(provider, defaults["llm"][provider])
        for key, sub in defaults["llm"][provider].items():
            entry.setdefault(key, sub)
        for key in ("ok", "failed", "rejected"):
            entry["calls"].setdefault(key, 0)
    return loaded


class StateStore:
    """The stub's mutable state and its file."""

    def __init__(self, path: Path) -> None:
        self.path = path
        self.data: dict[str, Any] = self._load()
        self.save()

    def _load(self) -> dict[str, Any]:
        try:
            raw = self.path.read_text(encoding="utf-8")
        except FileNotFoundError:
            return default_state()
        try:
            loaded = json.loads(raw)
            if not isinstance(loaded, dict):
                raise ValueError("state is not a JSON object")
        except ValueError as exc:
            # Keep the broken file for a post-mortem rather than overwrite it.
            aside = self.path.with_name(self.path.name + f".corrupt-{int(time.time())}")
            log.warning("state file %s unreadable (%s); moved to %s", self.path, exc, aside)
            with contextlib.suppress(OSError):
                os.replace(self.path, aside)
            return default_state()
        return merge_defaults(loaded)

    def save(self) -> None:
        self.path.parent.mkdir(parents=True, exist_ok=True)
        fd, tmp = tempfile.mkstemp(prefix=f".{self.path.name}.", dir=self.path.parent)
        try:
            # No fsync: the promise is surviving a restart of the stub, not of the
            # machine, and the workload saves often. dumps, not dump: json.dump streams
            # through the pure-Python encoder, twice as slow on a full event list.
            text = json.dumps(self.data, separators=(",", ":"), ensure_ascii=False)
            with os.fdopen(fd, "w", encoding="utf-8") as handle:
                handle.write(text)
            os.replace(tmp, self.path)
        except BaseException:
            with contextlib.suppress(OSError):
                os.unlink(tmp)
            raise

    def reset(self) -> None:
        self.data = default_state()
        self.save()


# --------------------------------------------------------------------------
# Sentry helpers


def parse_envelope(raw: bytes) -> tuple[dict[str, Any], list[tuple[dict[str, Any], bytes]]]:
    """Split a Sentry envelope into its headers and (item header, payload) pairs."""

    def next_line(pos: int) -> tuple[bytes, int]:
        end = raw.find(b"\n", pos)
        if end == -1:
            return raw[pos:], len(raw)
        return raw[pos:end], end + 1

    line, pos = next_line(0)
    headers = json.loads(line) if line.strip() else {}
    if not isinstance(headers, dict):
        raise ValueError("envelope header is not an object")
    items: list[tuple[dict[str, Any], bytes]] = []
    while pos < len(raw):
        line, pos = next_line(pos)
        if not line.strip():
            continue
        item_header = json.loads(line)
        if not isinstance(item_header, dict):
            raise ValueError("item header is not an object")
        length = item_header.get("length")
        if isinstance(length, int) and not isinstance(length, bool):
            if length < 0 or pos + length > len(raw):
                raise ValueError("item length runs past the end of the envelope")
            payload = raw[pos : pos + length]
            pos += length
            if raw[pos : pos + 1] == b"\n":
                pos += 1
        else:
            payload, pos = next_line(pos)
        items.append((item_header, payload))
    return headers, items


def sentry_key_from_auth(value: str) -> str | None:
    """``sentry_key`` out of an ``X-Sentry-Auth: Sentry sentry_key=..., ...`` header."""
    text = value.strip()
    if text[:7].lower() == "sentry ":
        text = text[7:]
    for part in text.split(","):
        key, _, val = part.strip().partition("=")
        if key.strip() == "sentry_key":
            return val.strip() or None
    return None


def _message_text(event: dict[str, Any]) -> str:
    logentry = event.get("logentry")
    if isinstance(logentry, dict):
        text = logentry.get("formatted") or logentry.get("message")
        if isinstance(text, str) and text:
            return text
    message = event.get("message")
    if isinstance(message, dict):
        message = message.get("formatted") or message.get("message")
    return message if isinstance(message, str) else ""


def _exceptions(event: dict[str, Any]) -> list[dict[str, Any]]:
    exc = event.get("exception")
    values = exc.get("values") if isinstance(exc, dict) else exc
    out = []
    for value in values if isinstance(values, list) else []:
        if not isinstance(value, dict):
            continue
        mechanism = value.get("mechanism")
        out.append(
            {
                "type": str(value.get("type") or "Error"),
                "value": str(value.get("value") or ""),
                "module": value.get("module") if isinstance(value.get("module"), str) else None,
                "mechanism": {
                    "type": str(mechanism.get("type", "generic")),
                    "handled": mechanism.get("handled"),
                }
                if isinstance(mechanism, dict)
                else None,
            }
        )
    return out


def _first_line(text: str, limit: int = 100) -> str:
    line = text.strip().splitlines()[0] if text.strip() else ""
    return line if len(line) <= limit else line[: limit - 1] + "…"


def sentry_record(
    event: dict[str, Any], *, event_id: str, project_id: str, received: int
) -> dict[str, Any]:
    """Normalise an ingested event to what the query API needs to answer."""
    level = str(event.get("level") or "error").lower()  # Sentry's default level is error
    exceptions = _exceptions(event)
    message = _message_text(event)
    if exceptions:
        last = exceptions[-1]
        title = f"{last['type']}: {_first_line(last['value'])}" if last["value"] else last["type"]
        event_type = "error"
    elif message:
        title = _first_line(message)
        event_type = "default"
    else:
        title = "<unlabeled event>"
        event_type = "default"
    culprit = str(event.get("culprit") or event.get("transaction") or "")

    tags: dict[str, str] = {}
    raw_tags = event.get("tags")
    pairs: Iterable[Any] = ()
    if isinstance(raw_tags, dict):
        pairs = raw_tags.items()
    elif isinstance(raw_tags, list):  # the protocol also allows [[key, value], ...]
        pairs = raw_tags
    for pair in pairs:
        if isinstance(pair, list | tuple) and len(pair) == 2 and pair[1] is not None:
            tags.setdefault(str(pair[0]), str(pair[1])[:200])
    derived = {
        "level": level,
        "environment": event.get("environment"),
        "release": event.get("release"),
        "server_name": event.get("server_name"),
        "transaction": event.get("transaction"),
    }
    if exceptions and exceptions[-1]["mechanism"]:
        mechanism = exceptions[-1]["mechanism"]
        derived["mechanism"] = mechanism["type"]
        if mechanism["handled"] is not None:
            derived["handled"] = "yes" if mechanism["handled"] else "no"
    request = as_dict(event.get("request"))
    if isinstance(request.get("url"), str):
        derived["url"] = request["url"]
    for key, value in derived.items():
        if value is not None and value != "":
            tags.setdefault(key, str(value)[:200])

    user = as_dict(event.get("user"))
    user = {k: user[k] for k in ("id", "email", "username", "ip_address") if user.get(k)}
    sdk = as_dict(event.get("sdk"))
    fingerprint = event.get("fingerprint")
    if isinstance(fingerprint, list) and fingerprint and fingerprint != ["{{ default }}"]:
        group_key = "|".join(str(f) for f in fingerprint)
    else:
        group_key = f"{event_type}|{exceptions[-1]['type'] if exceptions else title}|{culprit}"
    timestamp = parse_time(event.get("timestamp")) or received
    return {
        "event_id": event_id,
        "project_id": project_id,
        "ts_ms": timestamp,
        "rx_ms": received,
        "level": level,
        "type": event_type,
        "title": title,
        "message": message,
        "culprit": culprit,
        "platform": str(event.get("platform") or "other"),
        "tags": sorted([k, v] for k, v in tags.items()),
        "exception": exceptions,
        "user": user or None,
        "sdk": {"name": sdk.get("name"), "version": sdk.get("version")} if sdk else None,
        "group_id": str(stable_int("group:" + group_key)),
        "synthetic": False,
    }


def is_error_record(record: Mapping[str, Any]) -> bool:
    return record["level"] in ("error", "fatal") or bool(record["exception"])


SPIKE_ERRORS = (
    (
        "OperationalError",
        'connection to server at "127.0.0.1", port 5432 failed',
        "dealix.api.leads in list_leads",
    ),
    ("TimeoutError", "upstream request timed out after 30.0s", "dealix.connectors.facade in call"),
    ("KeyError", "'price_monthly_sar'", "dealix.api.pricing in list_plans"),
)


def spike_record(window: Mapping[str, Any], k: int, project_id: str) -> dict[str, Any]:
    """The k-th synthetic error of a spike window; the same k always gives the same event."""
    start = window["start_ms"]
    ts = start + (k * 60_000) // window["errors_per_minute"]
    exc_type, value, culprit = SPIKE_ERRORS[k % len(SPIKE_ERRORS)]
    return {
        "event_id": hashlib.sha256(f"spike:{start}:{k}".encode()).hexdigest()[:32],
        "project_id": project_id,
        "ts_ms": ts,
        "rx_ms": ts,
        "level": "error",
        "type": "error",
        "title": f"{exc_type}: {value}",
        "message": "",
        "culprit": culprit,
        "platform": "python",
        "tags": [
            ["environment", "production"],
            ["handled", "no"],
            ["level", "error"],
            ["mechanism", "starlette"],
            ["synthetic", "spike"],
        ],
        "exception": [
            {
                "type": exc_type,
                "value": value,
                "module": None,
                "mechanism": {"type": "starlette", "handled": False},
            }
        ],
        "user": None,
        "sdk": {"name": "sentry.python.starlette", "version": "2.19.2"},
        "group_id": str(stable_int("group:spike|" + exc_type)),
        "synthetic": True,
    }


def spike_k_range(window: Mapping[str, Any], lo: int, hi: int, now: int) -> range:
    """Indices k of a window's synthetic events with lo <= time < hi.

    Event k happens at start + k * 60000 / rate ms (exactly, as a rational), so
    counting stays consistent between the stats and the events list.
    """
    start, rate = window["start_ms"], window["errors_per_minute"]
    end = window["end_ms"] if window["end_ms"] is not None else now
    hi = min(hi, end, now + 1)
    if hi <= start or hi <= lo:
        return range(0)
    k_lo = max(0, ceil_div((lo - start) * rate, 60_000))
    k_hi = ceil_div((hi - start) * rate, 60_000)
    return range(k_lo, max(k_lo, k_hi))


_TAG_KEY = re.compile(r"^tags\[(.+)\]$")


def compile_sentry_query(query: str) -> Callable[[Mapping[str, Any]], bool]:
    """A small subset of Sentry's search syntax: ``key:value``, ``!key:value``, free text."""
    try:
        tokens = shlex.split(query)
    except ValueError:
        tokens = query.split()
    terms: list[tuple[bool, str, str]] = []
    for token in tokens:
        negate = token.startswith("!")
        body = token[1:] if negate else token
        key, sep, value = body.partition(":")
        if sep and key and re.fullmatch(r"[\w.\[\]-]+", key):
            if key in ("is", "has"):  # issue states and field presence: not modelled
                continue
            terms.append((negate, key.lower(), value))
        else:
            terms.append((False, "", token))

    def field(record: Mapping[str, Any], key: str) -> list[str]:
        tags = {k: v for k, v in record["tags"]}
        tag = _TAG_KEY.match(key)
        if tag:
            return [tags[tag.group(1)]] if tag.group(1) in tags else []
        if key == "level":
            return [record["level"]]
        if key == "event.type":
            return [record["type"]]
        if key in ("platform", "culprit", "title"):
            return [record[key]]
        if key in ("error.type", "exception.type"):
            return [e["type"] for e in record["exception"]]
        if key in ("id", "event_id", "eventid"):
            return [record["event_id"]]
        return [tags[key]] if key in tags else []

    def matches(record: Mapping[str, Any]) -> bool:
        for negate, key, value in terms:
            if not key:
                haystack = f"{record['title']}\n{record['message']}\n{record['culprit']}".lower()
                if value.lower() not in haystack:
                    return False
                continue
            if key == "message":
                text = f"{record['title']}\n{record['message']}".lower()
                hit = value.strip("*").lower() in text
            else:
                pattern = value.lower()
                hit = any(fnmatchcase(v.lower(), pattern) for v in field(record, key))
            if hit == negate:
                return False
        return True

    return matches


def render_sentry_event(record: Mapping[str, Any], full: bool) -> dict[str, Any]:
    exceptions = record["exception"]
    metadata: dict[str, Any]
    if exceptions:
        metadata = {"type": exceptions[-1]["type"], "value": exceptions[-1]["value"]}
    else:
        metadata = {"title": record["title"]}
    out: dict[str, Any] = {
        "id": record["event_id"],
        "eventID": record["event_id"],
        "groupID": record["group_id"],
        "projectID": record["project_id"],
        "title": record["title"],
        "message": record["message"] or record["title"],
        "culprit": record["culprit"],
        "location": None,
        "dateCreated": iso_micros(record["ts_ms"]),
        "dateReceived": iso_micros(record["rx_ms"]),
        "platform": record["platform"],
        "tags": [{"key": k, "value": v} for k, v in record["tags"]],
        "type": record["type"],
        "event.type": record["type"],
        "user": record["user"],
        "crashFile": None,
        "metadata": metadata,
    }
    if full:
        entries: list[dict[str, Any]] = []
        if exceptions:
            entries.append(
                {
                    "type": "exception",
                    "data": {
                        "values": [
                            {
                                "type": e["type"],
                                "value": e["value"],
                                "module": e["module"],
                                "mechanism": e["mechanism"],
                                "stacktrace": None,
                            }
                            for e in exceptions
                        ],
                        "hasSystemFrames": False,
                    },
                }
            )
        if record["message"]:
            entries.append({"type": "message", "data": {"formatted": record["message"]}})
        out.update(
            {
                "entries": entries,
                "sdk": record["sdk"],
                "contexts": {},
                "context": {},
                "errors": [],
                "fingerprints": [hashlib.sha256(record["group_id"].encode()).hexdigest()[:32]],
                "size": 0,
            }
        )
    return out


# --------------------------------------------------------------------------
# Statuspage


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


def google_time(ms: int) -> str:
    """Google Cloud status timestamps: seconds, +00:00."""
    return _dt(ms).isoformat(timespec="seconds")


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


# --------------------------------------------------------------------------
# The app


class SaaSStub:
    """Route handlers over one config and one state store."""

    def __init__(self, config: Mapping[str, str], store: StateStore) -> None:
        merged = {**CONFIG_DEFAULTS, **{k: str(v) for k, v in config.items()}}
        self.cfg: dict[str, str] = {
            k: merged.get(k, "") for k in (*CONFIG_DEFAULTS, *SECRET_CONFIG_KEYS)
        }
        self.store = store

    @property
    def state(self) -> dict[str, Any]:
        return self.store.data

    # -- routing ----------------------------------------------------------

    def routes(self) -> list[Route]:
        def both(path: str, endpoint: Handler, methods: list[str]) -> list[Route]:
            # Django (Sentry, PostHog) wants the slash; clients often drop it.
            return [
                Route(path, endpoint, methods=methods),
                Route(path.rstrip("/"), endpoint, methods=methods),
            ]

        gh = "/github/repos/{owner}/{repo}"
        sentry_project = "/sentry/api/0/projects/{org}/{project}"
        routes = [
            Route(f"{gh}/actions/runs", self.github_runs, methods=["GET"]),
            Route(
                f"{gh}/issues/{{number:int}}/comments", self.github_create_comment, methods=["POST"]
            ),
            Route(
                f"{gh}/issues/{{number:int}}/comments", self.github_list_comments, methods=["GET"]
            ),
            *both("/sentry/api/{project_id}/envelope/", self.sentry_envelope, ["POST"]),
            *both("/sentry/api/{project_id}/store/", self.sentry_store, ["POST"]),
            *both(f"{sentry_project}/events/", self.sentry_events, ["GET"]),
            *both(f"{sentry_project}/stats/", self.sentry_stats, ["GET"]),
            *both("/posthog/capture/", self.posthog_capture, ["POST"]),
            *both("/posthog/batch/", self.posthog_capture, ["POST"]),
            *both("/posthog/i/v0/e/", self.posthog_capture, ["POST"]),
            *both("/posthog/e/", self.posthog_capture, ["POST"]),
            *both("/posthog/track/", self.posthog_capture, ["POST"]),
            *both("/posthog/api/projects/{project_id}/events/", self.posthog_events, ["GET"]),
            Route("/anthropic/v1/messages", self.anthropic_messages, methods=["POST"]),
            Route("/openai/v1/chat/completions", self.openai_chat, methods=["POST"]),
            Route(
                "/google/v1beta/models/{model}:generateContent",
                self.google_generate,
                methods=["POST"],
            ),
            Route(
                "/google/v1/models/{model}:generateContent", self.google_generate, methods=["POST"]
            ),
            Route("/status/{provider}/api/v2/status.json", self.status_json, methods=["GET"]),
            Route("/status/{provider}/api/v2/summary.json", self.summary_json, methods=["GET"]),
            Route("/status/{provider}/incidents.json", self.google_incidents, methods=["GET"]),
            Route("/_stub/health", self.local(self.control_health), methods=["GET"]),
            Route("/_stub/state", self.local(self.control_state), methods=["GET"]),
            Route("/_stub/reset", self.local(self.control_reset), methods=["POST"]),
            Route("/_stub/github/runs", self.local(self.control_github_runs), methods=["POST"]),
            Route("/_stub/github/ci", self.local(self.control_github_ci), methods=["POST"]),
            Route("/_stub/llm/{provider}", self.local(self.control_llm), methods=["POST"]),
            Route("/_stub/sentry/spike", self.local(self.control_spike), methods=["POST"]),
        ]
        # Unknown paths answer in the shape of the service they belong to.
        every = ["GET", "POST", "PUT", "PATCH", "DELETE", "HEAD", "OPTIONS"]
        for prefix, handler in (
            ("/github", self.github_not_found),
            ("/sentry", self.sentry_not_found),
            ("/posthog", self.posthog_not_found),
            ("/anthropic", self.anthropic_not_found),
            ("/openai", self.openai_not_found),
            ("/google", self.google_not_found),
        ):
            routes.append(Route(prefix + "/{rest:path}", handler, methods=every))
        return routes

    def local(self, handler: Handler) -> Handler:
        async def guarded(request: Request) -> Response:
            host = request.client.host if request.client else None
            if not is_loopback(host):
                return JSONResponse({"error": "control endpoints are loopback only"}, 403)
            return await handler(request)

        return guarded

    # -- GitHub -----------------------------------------------------------

    GITHUB_DOCS = "https://docs.github.com/rest"

    def github_error(self, status: int, message: str, docs: str | None = None) -> Response:
        return JSONResponse(
            {
                "message": message,
                "documentation_url": docs or self.GITHUB_DOCS,
                "status": str(status),
            },
            status,
        )

    def github_denied(self, request: Request) -> Response | None:
        header = request.headers.get("authorization", "").strip()
        if not header:
            return self.github_error(401, "Requires authentication")
        scheme, _, token = header.partition(" ")
        if scheme.lower() not in ("bearer", "token") or not secret_eq(
            token.strip(), self.cfg["github_token"]
        ):
            return self.github_error(401, "Bad credentials")
        return None

    def github_repo_ok(self, request: Request) -> bool:
        full = f"{request.path_params['owner']}/{request.path_params['repo']}"
        return full.lower() == self.cfg["github_repo"].lower()

    def github_user(self) -> dict[str, Any]:
        login = self.cfg["github_repo"].split("/")[0]
        return {
            "login": login,
            "id": stable_int("user:" + login, 8),
            "node_id": node_id("MDQ6VXNlcj", stable_int("user:" + login, 8)),
            "type": "User",
            "site_admin": False,
            "html_url": f"https://github.com/{login}",
        }

    def render_run(self, run: Mapping[str, Any]) -> dict[str, Any]:
        repo = self.cfg["github_repo"]
        api = f"https://api.github.com/repos/{repo}"
        run_url = f"{api}/actions/runs/{run['id']}"
        owner = self.github_user()
        repository = {
            "id": stable_int("repo:" + repo, 9),
            "node_id": node_id("R_kgDO", stable_int("repo:" + repo, 9)),
            "name": repo.split("/")[-1],
            "full_name": repo,
            "private": True,
            "owner": owner,
            "html_url": f"https://github.com/{repo}",
            "url": api,
        }
        return {
            "id": run["id"],
            "name": run["name"],
            "node_id": node_id("WFR_kwLO", run["id"]),
            "head_branch": run["head_branch"],
            "head_sha": run["head_sha"],
            "path": run["path"],
            "display_title": run["display_title"],
            "run_number": run["run_number"],
            "event": run["event"],
            "status": run["status"],
            "conclusion": run["conclusion"],
            "workflow_id": run["workflow_id"],
            "check_suite_id": run["check_suite_id"],
            "check_suite_node_id": node_id("CS_kwDO", run["check_suite_id"]),
            "url": run_url,
            "html_url": f"https://github.com/{repo}/actions/runs/{run['id']}",
            "pull_requests": [],
            "created_at": run["created_at"],
            "updated_at": run["updated_at"],
            "actor": owner,
            "run_attempt": 1,
            "referenced_workflows": [],
            "run_started_at": run["run_started_at"],
            "triggering_actor": owner,
            "jobs_url": f"{run_url}/jobs",
            "logs_url": f"{run_url}/logs",
            "check_suite_url": f"{api}/check-suites/{run['check_suite_id']}",
            "artifacts_url": f"{run_url}/artifacts",
            "cancel_url": f"{run_url}/cancel",
            "rerun_url": f"{run_url}/rerun",
            "previous_attempt_url": None,
            "workflow_url": f"{api}/actions/workflows/{run['workflow_id']}",
            "head_commit": {
                "id": run["head_sha"],
                "tree_id": hashlib.sha256(run["head_sha"].encode()).hexdigest()[:40],
                "message": run["display_title"],
                "timestamp": run["created_at"],
                "author": {
                    "name": owner["login"],
                    "email": f"{owner['login']}@users.noreply.github.com",
                },
                "committer": {"name": "GitHub", "email": "noreply@github.com"},
            },
            "repository": repository,
            "head_repository": repository,
        }

    @staticmethod
    def link_header(request: Request, page: int, last: int) -> str | None:
        if last <= 1:
            return None
        links = []
        if page > 1:
            links.append((page - 1, "prev"))
        if page < last:
            links.append((page + 1, "next"))
            links.append((last, "last"))
        if page > 1:
            links.append((1, "first"))
        return ", ".join(
            f'<{request.url.include_query_params(page=n)}>; rel="{rel}"' for n, rel in links
        )

    RUN_STATUSES = frozenset(
        {"completed", "in_progress", "queued", "requested", "waiting", "pending", "action_required"}
    )

    async def github_runs(self, request: Request) -> Response:
        denied = self.github_denied(request)
        if denied:
            return denied
        if not self.github_repo_ok(request):
            return self.github_error(
                404,
                "Not Found",
                "https://docs.github.com/rest/actions/workflow-runs"
                "#list-workflow-runs-for-a-repository",
            )
        q = request.query_params
        runs: list[dict[str, Any]] = self.state["github"]["runs"]
        if q.get("branch"):
            runs = [r for r in runs if r["head_branch"] == q["branch"]]
        if q.get("status"):
            # GitHub's status filter takes statuses and conclusions alike.
            wanted = q["status"]
            key = "status" if wanted in self.RUN_STATUSES else "conclusion"
            runs = [r for r in runs if r[key] == wanted]
        for name in ("event", "head_sha"):
            if q.get(name):
                runs = [r for r in runs if r[name] == q[name]]
        per_page = min(max(int_param(q, "per_page", 30), 1), 100)
        page = max(int_param(q, "page", 1), 1)
        total = len(runs)
        chunk = runs[(page - 1) * per_page : page * per_page]
        headers = {}
        link = self.link_header(request, page, ceil_div(total, per_page))
        if link:
            headers["Link"] = link
        return JSONResponse(
            {"total_count": total, "workflow_runs": [self.render_run(r) for r in chunk]},
            headers=headers,
        )

    def render_comment(self, comment: Mapping[str, Any]) -> dict[str, Any]:
        repo = self.cfg["github_repo"]
        api = f"https://api.github.com/repos/{repo}"
        number = comment["issue_number"]
        return {
            "id": comment["id"],
            "node_id": node_id("IC_kwDO", comment["id"]),
            "url": f"{api}/issues/comments/{comment['id']}",
            "html_url": f"https://github.com/{repo}/issues/{number}#issuecomment-{comment['id']}",
            "issue_url": f"{api}/issues/{number}",
            "body": comment["body"],
            "user": self.github_user(),
            "created_at": comment["created_at"],
            "updated_at": comment["updated_at"],
            "author_association": "OWNER",
        }

    COMMENT_DOCS = "https://docs.github.com/rest/issues/comments#create-an-issue-comment"

    async def github_create_comment(self, request: Request) -> Response:
        denied = self.github_denied(request)
        if denied:
            return denied
        if not self.github_repo_ok(request):
            return self.github_error(404, "Not Found", self.COMMENT_DOCS)
        try:
            payload = await read_json(request)
        except BodyError:
            return self.github_error(400, "Problems parsing JSON", self.COMMENT_DOCS)
        body = as_dict(payload).get("body")
        if not isinstance(body, str):
            return self.github_error(
                422, 'Invalid request.\n\n"body" wasn\'t supplied.', self.COMMENT_DOCS
            )
        github = self.state["github"]
        stamp = iso_seconds(now_ms())
        comment = {
            "id": github["next_comment_id"],
            "issue_number": request.path_params["number"],
            "body": body,
            "created_at": stamp,
            "updated_at": stamp,
        }
        github["next_comment_id"] += random.randint(1, 500)
        github["comments"].append(comment)
        del github["comments"][:-MAX_COMMENTS]
        self.store.save()
        rendered = self.render_comment(comment)
        return JSONResponse(rendered, 201, headers={"Location": rendered["url"]})

    async def github_list_comments(self, request: Request) -> Response:
        denied = self.github_denied(request)
        if denied:
            return denied
        if not self.github_repo_ok(request):
            return self.github_error(
                404,
                "Not Found",
                "https://docs.github.com/rest/issues/comments#list-issue-comments",
            )
        q = request.query_params
        number = request.path_params["number"]
        comments = [c for c in self.state["github"]["comments"] if c["issue_number"] == number]
        since = parse_time(q.get("since"))
        if since is not None:
            comments = [c for c in comments if (parse_time(c["updated_at"]) or 0) >= since]
        per_page = min(max(int_param(q, "per_page", 30), 1), 100)
        page = max(int_param(q, "page", 1), 1)
        chunk = comments[(page - 1) * per_page : page * per_page]
        headers = {}
        link = self.link_header(request, page, ceil_div(len(comments), per_page))
        if link:
            headers["Link"] = link
        return JSONResponse([self.render_comment(c) for c in chunk], headers=headers)

    async def github_not_found(self, request: Request) -> Response:
        return self.github_error(404, "Not Found")

    # -- Sentry -----------------------------------------------------------

    def sentry_ingest_denied(
        self, request: Request, project_id: str, dsn: object = None
    ) -> Response | None:
        keys: list[str] = []
        for header in (request.headers.get("x-sentry-auth"), request.headers.get("authorization")):
            if header and header.strip()[:7].lower() == "sentry ":
                key = sentry_key_from_auth(header)
                if key is None:
                    return JSONResponse({"detail": "bad x-sentry-auth header"}, 401)
                keys.append(key)
        if "sentry_key" in request.query_params:
            keys.append(request.query_params["sentry_key"])
        if len(keys) > 1:
            return JSONResponse({"detail": "multiple authorization payloads detected"}, 401)
        if not keys and isinstance(dsn, str):
            username = urlsplit(dsn).username
            if username:
                keys.append(username)
        if not keys:
            return JSONResponse({"detail": "missing authorization information"}, 401)
        if not secret_eq(keys[0], self.cfg["sentry_public_key"]) or (
            project_id != self.cfg["sentry_project_id"]
        ):
            return JSONResponse({"detail": "event submission rejected with_reason: ProjectId"}, 403)
        return None

    def sentry_keep(self, records: list[dict[str, Any]]) -> None:
        events = self.state["sentry"]["events"]
        events.extend(records)
        del events[:-MAX_SENTRY_EVENTS]
        self.store.save()

    @staticmethod
    def clean_event_id(value: object) -> str | None:
        if isinstance(value, str):
            text = value.replace("-", "").lower()
            if re.fullmatch(r"[0-9a-f]{32}", text):
                return text
        return None

    async def sentry_envelope(self, request: Request) -> Response:
        project_id = request.path_params["project_id"]
        try:
            raw = await read_body(request)
            headers, items = parse_envelope(raw)
        except (BodyError, ValueError, UnicodeDecodeError) as exc:
            return JSONResponse({"detail": "invalid envelope", "causes": [str(exc)]}, 400)
        denied = self.sentry_ingest_denied(request, project_id, headers.get("dsn"))
        if denied:
            return denied
        received = now_ms()
        envelope_id = self.clean_event_id(headers.get("event_id"))
        records = []
        for item_header, payload in items:
            if item_header.get("type") != "event":
                continue  # transactions, sessions, attachments, client reports...
            try:
                event = json.loads(payload)
            except (UnicodeDecodeError, json.JSONDecodeError) as exc:
                return JSONResponse({"detail": "invalid event payload", "causes": [str(exc)]}, 400)
            if not isinstance(event, dict):
                continue
            event_id = self.clean_event_id(event.get("event_id")) or envelope_id or uuid.uuid4().hex
            envelope_id = envelope_id or event_id
            records.append(
                sentry_record(event, event_id=event_id, project_id=project_id, received=received)
            )
        if records:
            self.sentry_keep(records)
        return JSONResponse({"id": envelope_id} if envelope_id else {})

    async def sentry_store(self, request: Request) -> Response:
        project_id = request.path_params["project_id"]
        denied = self.sentry_ingest_denied(request, project_id)
        if denied:
            return denied
        try:
            raw = await read_body(request)
        except BodyError as exc:
            return JSONResponse({"detail": "bad payload", "causes": [str(exc)]}, 400)
        try:
            event = json.loads(raw)
        except (UnicodeDecodeError, json.JSONDecodeError):
            # Older SDKs send base64 of a zlib stream.
            try:
                event = json.loads(_inflate(base64.b64decode(raw, validate=False), zlib.MAX_WBITS))
            except (ValueError, BodyError) as exc:
                return JSONResponse({"detail": "bad JSON payload", "causes": [str(exc)]}, 400)
        if not isinstance(event, dict):
            return JSONResponse({"detail": "bad JSON payload"}, 400)
        event_id = self.clean_event_id(event.get("event_id")) or uuid.uuid4().hex
        self.sentry_keep(
            [sentry_record(event, event_id=event_id, project_id=project_id, received=now_ms())]
        )
        return JSONResponse({"id": event_id})

    def sentry_api_denied(self, request: Request) -> Response | None:
        header = request.headers.get("authorization", "").strip()
        if not header:
            return JSONResponse({"detail": "Authentication credentials were not provided."}, 401)
        scheme, _, token = header.partition(" ")
        if scheme.lower() != "bearer" or not secret_eq(
            token.strip(), self.cfg["sentry_auth_token"]
        ):
            return JSONResponse({"detail": "Invalid token"}, 401)
        org, project = request.path_params["org"], request.path_params["project"]
        if org != self.cfg["sentry_org"] or project != self.cfg["sentry_project"]:
            return JSONResponse({"detail": "The requested resource does not exist"}, 404)
        return None

    def spike_windows(self) -> list[dict[str, Any]]:
        return self.state["sentry"]["spikes"]

    def synthetic_desc(
        self, lo: int, hi: int, now: int, matches: Callable[[Mapping[str, Any]], bool]
    ) -> list[Iterator[dict[str, Any]]]:
        """Per spike window, its synthetic events in [lo, hi), newest first."""
        project_id = self.cfg["sentry_project_id"]

        def walk(window: dict[str, Any]) -> Iterator[dict[str, Any]]:
            for k in reversed(spike_k_range(window, lo, hi, now)):
                record = spike_record(window, k, project_id)
                if matches(record):
                    yield record

        return [walk(w) for w in self.spike_windows()]

    async def sentry_events(self, request: Request) -> Response:
        denied = self.sentry_api_denied(request)
        if denied:
            return denied
        q = request.query_params
        now = now_ms()
        start, end = parse_time(q.get("start")), parse_time(q.get("end"))
        if start is None or end is None:
            period = parse_period(q.get("statsPeriod") or "14d")
            if period is None:
                return JSONResponse({"detail": "Invalid statsPeriod"}, 400)
            start, end = now - period, now
        matches = compile_sentry_query(q.get("query", ""))
        real = sorted(
            (
                r
                for r in self.state["sentry"]["events"]
                if start <= r["ts_ms"] <= end and matches(r)
            ),
            key=lambda r: r["ts_ms"],
            reverse=True,
        )
        merged = heapq.merge(
            real,
            *self.synthetic_desc(start, end + 1, now, matches),
            key=lambda r: r["ts_ms"],
            reverse=True,
        )
        per_page = min(max(int_param(q, "per_page", 100), 1), 100)
        offset = 0
        cursor = q.get("cursor", "")
        if cursor.count(":") == 2:
            offset = max(int_param({"o": cursor.split(":")[1]}, "o", 0), 0)
        page = list(itertools.islice(merged, offset, offset + per_page + 1))
        has_next = len(page) > per_page
        full = truthy(q.get("full"))
        body = [render_sentry_event(r, full) for r in page[:per_page]]
        prev_cursor = f"0:{max(offset - per_page, 0)}:1"
        next_cursor = f"0:{offset + per_page}:0"
        link = (
            f'<{request.url.include_query_params(cursor=prev_cursor)}>; rel="previous"; '
            f'results="{str(offset > 0).lower()}"; cursor="{prev_cursor}", '
            f'<{request.url.include_query_params(cursor=next_cursor)}>; rel="next"; '
            f'results="{str(has_next).lower()}"; cursor="{next_cursor}"'
        )
        return JSONResponse(body, headers={"Link": link})

    async def sentry_stats(self, request: Request) -> Response:
        denied = self.sentry_api_denied(request)
        if denied:
            return denied
        q = request.query_params
        stat = q.get("stat", "received")
        if stat not in ("received", "rejected", "blacklisted", "generated"):
            return JSONResponse({"detail": "Invalid stat"}, 400)
        now = now_ms()
        try:
            until = float(q["until"]) if q.get("until") else now / 1000
            since = float(q["since"]) if q.get("since") else until - 86_400
        except ValueError:
            return JSONResponse({"detail": "since and until must be unix timestamps"}, 400)
        if q.get("resolution"):
            if q["resolution"] not in SENTRY_RESOLUTIONS:
                return JSONResponse({"detail": "Invalid resolution"}, 400)
            res = SENTRY_RESOLUTIONS[q["resolution"]]
        else:
            span = until - since
            res = 10 if span <= 3_600 else 3_600 if span <= 7 * 86_400 else 86_400
        first = int(since) // res * res
        last = int(until) // res * res
        if last < first:
            return JSONResponse([])
        buckets = (last - first) // res + 1
        if buckets > MAX_STATS_BUCKETS:
            return JSONResponse(
                {
                    "detail": "Your interval and date range would create too many results. "
                    "Use a larger interval, or a smaller date range."
                },
                400,
            )
        counts = [0] * buckets
        if stat == "received":
            lo_ms, hi_ms = first * 1000, (last + res) * 1000
            for record in self.state["sentry"]["events"]:
                if lo_ms <= record["rx_ms"] < hi_ms and is_error_record(record):
                    counts[(record["rx_ms"] // 1000 - first) // res] += 1
            for window in self.spike_windows():
                w_end = window["end_ms"] if window["end_ms"] is not None else now
                i_lo = max(0, (window["start_ms"] // 1000 - first) // res)
                i_hi = min(buckets - 1, (w_end // 1000 - first) // res)
                for i in range(i_lo, i_hi + 1):
                    b_lo = (first + i * res) * 1000
                    counts[i] += len(spike_k_range(window, b_lo, b_lo + res * 1000, now))
        return JSONResponse([[first + i * res, counts[i]] for i in range(buckets)])

    async def sentry_not_found(self, request: Request) -> Response:
        return JSONResponse({"detail": "The requested resource does not exist"}, 404)

    # -- PostHog ----------------------------------------------------------

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

    # -- LLM providers ----------------------------------------------------

    def llm_count(self, provider: str, outcome: str) -> None:
        self.state["llm"][provider]["calls"][outcome] += 1
        self.store.save()

    def llm_down(self, provider: str) -> bool:
        return bool(self.state["llm"][provider]["down"])

    @staticmethod
    def reply_text(provider: str) -> str:
        name = {"anthropic": "Anthropic", "openai": "OpenAI", "google": "Gemini"}[provider]
        return f"Hello! This is a reply from the sandbox stand-in for the {name} API."

    @staticmethod
    def anthropic_error(status: int, kind: str, message: str) -> Response:
        request_id = "req_" + random_token(24)
        return JSONResponse(
            {
                "type": "error",
                "error": {"type": kind, "message": message},
                "request_id": request_id,
            },
            status,
            headers={"request-id": request_id},
        )

    async def anthropic_messages(self, request: Request) -> Response:
        key = request.headers.get("x-api-key")
        if not key:
            # Current SDKs send the API key as a bearer token instead; the API takes both.
            scheme, _, token = request.headers.get("authorization", "").strip().partition(" ")
            key = token.strip() if scheme.lower() == "bearer" else None
        if not key:
            self.llm_count("anthropic", "rejected")
            return self.anthropic_error(401, "authentication_error", "x-api-key header is required")
        if not secret_eq(key, self.cfg["anthropic_api_key"]):
            self.llm_count("anthropic", "rejected")
            return self.anthropic_error(401, "authentication_error", "invalid x-api-key")
        if not request.headers.get("anthropic-version"):
            self.llm_count("anthropic", "rejected")
            return self.anthropic_error(
                400, "invalid_request_error", "anthropic-version: header is required"
            )
        try:
            body = await read_json(request)
        except BodyError:
            self.llm_count("anthropic", "rejected")
            return self.anthropic_error(
                400, "invalid_request_error", "There was an error parsing the body of your request."
            )
        body = as_dict(body)
        for field in ("model", "max_tokens", "messages"):
            if field not in body:
                self.llm_count("anthropic", "rejected")
                return self.anthropic_error(
                    400, "invalid_request_error", f"{field}: Field required"
                )
        if body.get("stream"):
            self.llm_count("anthropic", "rejected")
            return self.anthropic_error(
                400, "invalid_request_error", "stream: not supported by the sandbox stub"
            )
        if self.llm_down("anthropic"):
            self.llm_count("anthropic", "failed")
            return self.anthropic_error(529, "overloaded_error", "Overloaded")
        prompt = json.dumps(body.get("messages")) + json.dumps(body.get("system", ""))
        text = self.reply_text("anthropic")
        self.llm_count("anthropic", "ok")
        return JSONResponse(
            {
                "id": "msg_01" + random_token(22),
                "type": "message",
                "role": "assistant",
                "model": body["model"],
                "content": [{"type": "text", "text": text}],
                "stop_reason": "end_turn",
                "stop_sequence": None,
                "usage": {
                    "input_tokens": approx_tokens(prompt),
                    "cache_creation_input_tokens": 0,
                    "cache_read_input_tokens": 0,
                    "output_tokens": approx_tokens(text),
                    "service_tier": "standard",
                },
            },
            headers={"request-id": "req_" + random_token(24)},
        )

    async def anthropic_not_found(self, request: Request) -> Response:
        return self.anthropic_error(404, "not_found_error", "Not Found")

    @staticmethod
    def openai_error(
        status: int, message: str, kind: str, param: str | None = None, code: str | None = None
    ) -> Response:
        return JSONResponse(
            {"error": {"message": message, "type": kind, "param": param, "code": code}},
            status,
            headers={"x-request-id": "req_" + secrets.token_hex(16)},
        )

    async def openai_chat(self, request: Request) -> Response:
        header = request.headers.get("authorization", "").strip()
        scheme, _, key = header.partition(" ")
        key = key.strip() if scheme.lower() == "bearer" else ""
        if not key:
            self.llm_count("openai", "rejected")
            return self.openai_error(
                401,
                "You didn't provide an API key. You need to provide your API key in an "
                "Authorization header using Bearer auth (i.e. Authorization: Bearer YOUR_KEY), "
                "or as the password field (with blank username) if you're accessing the API "
                "from your browser and are prompted for a username. You can obtain an API key "
                "from https://platform.openai.com/account/api-keys.",
                "invalid_request_error",
            )
        if not secret_eq(key, self.cfg["openai_api_key"]):
            self.llm_count("openai", "rejected")
            masked = f"{key[:3]}{'*' * 8}{key[-4:]}" if len(key) > 10 else "*" * len(key)
            return self.openai_error(
                401,
                f"Incorrect API key provided: {masked}. You can find your API key at "
                "https://platform.openai.com/account/api-keys.",
                "invalid_request_error",
                code="invalid_api_key",
            )
        try:
            body = await read_json(request)
        except BodyError:
            self.llm_count("openai", "rejected")
            return self.openai_error(
                400,
                "We could not parse the JSON body of your request. (HINT: This likely means "
                "you aren't using your HTTP library correctly. The OpenAI API expects a JSON "
                "payload, but what was sent was not valid JSON.)",
                "invalid_request_error",
            )
        body = as_dict(body)
        if not body.get("model"):
            self.llm_count("openai", "rejected")
            return self.openai_error(
                400, "you must provide a model parameter", "invalid_request_error"
            )
        if "messages" not in body:
            self.llm_count("openai", "rejected")
            return self.openai_error(
                400,
                "Missing required parameter: 'messages'.",
                "invalid_request_error",
                "messages",
                "missing_required_parameter",
            )
        if body.get("stream"):
            self.llm_count("openai", "rejected")
            return self.openai_error(
                400, "stream: not supported by the sandbox stub", "invalid_request_error", "stream"
            )
        if self.llm_down("openai"):
            self.llm_count("openai", "failed")
            return self.openai_error(
                503, "The server is overloaded or not ready yet.", "server_error"
            )
        text = self.reply_text("openai")
        prompt_tokens = approx_tokens(json.dumps(body.get("messages")))
        completion_tokens = approx_tokens(text)
        self.llm_count("openai", "ok")
        return JSONResponse(
            {
                "id": "chatcmpl-" + random_token(29),
                "object": "chat.completion",
                "created": int(time.time()),
                "model": body["model"],
                "choices": [
                    {
                        "index": 0,
                        "message": {
                            "role": "assistant",
                            "content": text,
                            "refusal": None,
                            "annotations": [],
                        },
                        "logprobs": None,
                        "finish_reason": "stop",
                    }
                ],
                "usage": {
                    "prompt_tokens": prompt_tokens,
                    "completion_tokens": completion_tokens,
                    "total_tokens": prompt_tokens + completion_tokens,
                    "prompt_tokens_details": {"cached_tokens": 0, "audio_tokens": 0},
                    "completion_tokens_details": {
                        "reasoning_tokens": 0,
                        "audio_tokens": 0,
                        "accepted_prediction_tokens": 0,
                        "rejected_prediction_tokens": 0,
                    },
                },
                "service_tier": "default",
                "system_fingerprint": "fp_" + secrets.token_hex(5),
            },
            headers={"x-request-id": "req_" + secrets.token_hex(16)},
        )

    async def openai_not_found(self, request: Request) -> Response:
        return self.openai_error(
            404,
            f"Invalid URL ({request.method} {request.url.path.removeprefix('/openai')})",
            "invalid_request_error",
        )

    @staticmethod
    def google_error(
        status: int, message: str, state: str, details: list[dict[str, Any]] | None = None
    ) -> Response:
        error: dict[str, Any] = {"code": status, "message": message, "status": state}
        if details:
            error["details"] = details
        return JSONResponse({"error": error}, status)

    async def google_generate(self, request: Request) -> Response:
        key = request.headers.get("x-goog-api-key") or request.query_params.get("key")
        if not key:
            self.llm_count("google", "rejected")
            return self.google_error(
                403,
                "Method doesn't allow unregistered callers (callers without established "
                "identity). Please use API Key or other form of API consumer identity to call "
                "this API.",
                "PERMISSION_DENIED",
            )
        if not secret_eq(key, self.cfg["google_api_key"]):
            # Gemini answers a wrong key with 400 INVALID_ARGUMENT, not 401.
            self.llm_count("google", "rejected")
            return self.google_error(
                400,
                "API key not valid. Please pass a valid API key.",
                "INVALID_ARGUMENT",
                [
                    {
                        "@type": "type.googleapis.com/google.rpc.ErrorInfo",
                        "reason": "API_KEY_INVALID",
                        "domain": "googleapis.com",
                        "metadata": {"service": "generativelanguage.googleapis.com"},
                    }
                ],
            )
        try:
            body = await read_json(request)
        except BodyError:
            self.llm_count("google", "rejected")
            return self.google_error(400, "Invalid JSON payload received.", "INVALID_ARGUMENT")
        body = as_dict(body)
        if not body.get("contents"):
            self.llm_count("google", "rejected")
            return self.google_error(
                400,
                "* GenerateContentRequest.contents: contents is not specified\n",
                "INVALID_ARGUMENT",
            )
        if self.llm_down("google"):
            self.llm_count("google", "failed")
            return self.google_error(
                503, "The model is overloaded. Please try again later.", "UNAVAILABLE"
            )
        text = self.reply_text("google")
        prompt_tokens = approx_tokens(json.dumps(body.get("contents")))
        completion_tokens = approx_tokens(text)
        self.llm_count("google", "ok")
        return JSONResponse(
            {
                "candidates": [
                    {
                        "content": {"parts": [{"text": text}], "role": "model"},
                        "finishReason": "STOP",
                        "index": 0,
                    }
                ],
                "usageMetadata": {
                    "promptTokenCount": prompt_tokens,
                    "candidatesTokenCount": completion_tokens,
                    "totalTokenCount": prompt_tokens + completion_tokens,
                    "promptTokensDetails": [{"modality": "TEXT", "tokenCount": prompt_tokens}],
                },
                "modelVersion": request.path_params["model"],
                "responseId": random_token(22),
            }
        )

    async def google_not_found(self, request: Request) -> Response:
        return self.google_error(404, "Requested entity was not found.", "NOT_FOUND")

    # -- Status pages -----------------------------------------------------

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

    # -- Control ----------------------------------------------------------

    @staticmethod
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

    @staticmethod
    def control_error(message: str, status: int = 400) -> Response:
        return JSONResponse({"error": message}, status)

    async def control_health(self, request: Request) -> Response:
        return JSONResponse({"ok": True})

    async def control_state(self, request: Request) -> Response:
        return JSONResponse(self.state)

    async def control_reset(self, request: Request) -> Response:
        self.store.reset()
        return JSONResponse({"ok": True})

    CONCLUSIONS = frozenset(
        {
            "success",
            "failure",
            "cancelled",
            "skipped",
            "timed_out",
            "neutral",
            "action_required",
            "stale",
        }
    )

    async def control_github_runs(self, request: Request) -> Response:
        try:
            body = await self.control_body(request)
        except BodyError as exc:
            return self.control_error(str(exc))
        runs = self.state["github"]["runs"]
        head_sha = body.get("head_sha") or random_sha()
        if not isinstance(head_sha, str) or not re.fullmatch(r"[0-9a-f]{40}", head_sha):
            return self.control_error("head_sha must be 40 lowercase hex characters")
        has_conclusion = "conclusion" in body
        conclusion = body.get("conclusion")
        status = body.get("status")
        if status is None:
            # An explicit null conclusion means "still running"; no conclusion at all, green.
            running = has_conclusion and conclusion is None
            status = "in_progress" if running else "completed"
        if status not in ("completed", "in_progress", "queued", "requested", "waiting", "pending"):
            return self.control_error(f"unknown status {status!r}")
        if status == "completed":
            if conclusion is None:
                if has_conclusion:
                    return self.control_error("a completed run needs a conclusion")
                conclusion = "success"
            if conclusion not in self.CONCLUSIONS:
                return self.control_error(f"unknown conclusion {conclusion!r}")
        elif conclusion is not None:
            return self.control_error("only a completed run has a conclusion")
        name = body.get("name")
        if name is None:
            newest = runs[0]["name"] if runs else WORKFLOW_CYCLE[-1]
            cycle_at = WORKFLOW_CYCLE.index(newest) if newest in WORKFLOW_CYCLE else -1
            name = WORKFLOW_CYCLE[(cycle_at + 1) % len(WORKFLOW_CYCLE)]
        branch = body.get("branch") or "main"
        title = body.get("display_title") or f"Deploy {head_sha[:7]}"
        if not all(isinstance(v, str) and v for v in (name, branch, title)):
            return self.control_error("name, branch and display_title must be strings")
        now = now_ms()
        run = new_run(
            self.state,
            name=name,
            head_sha=head_sha,
            branch=branch,
            status=status,
            conclusion=conclusion,
            created_ms=now,
            updated_ms=now,
            display_title=title,
        )
        runs.insert(0, run)
        self.store.save()
        return JSONResponse(self.render_run(run), 201)

    async def control_github_ci(self, request: Request) -> Response:
        try:
            body = await self.control_body(request)
        except BodyError as exc:
            return self.control_error(str(exc))
        conclusion = body.get("conclusion")
        if conclusion not in self.CONCLUSIONS:
            return self.control_error(
                "conclusion must be 'success' or 'failure' (or another GitHub conclusion)"
            )
        runs = self.state["github"]["runs"]
        if not runs:
            return self.control_error("there is no run to mark", 409)
        run = runs[0]
        run["status"] = "completed"
        run["conclusion"] = conclusion
        run["updated_at"] = iso_seconds(now_ms())
        self.store.save()
        return JSONResponse(self.render_run(run))

    async def control_llm(self, request: Request) -> Response:
        provider = request.path_params["provider"]
        if provider not in PROVIDERS:
            return self.control_error(f"unknown provider {provider!r}", 404)
        try:
            body = await self.control_body(request)
        except BodyError as exc:
            return self.control_error(str(exc))
        down = body.get("down")
        if not isinstance(down, bool):
            return self.control_error("down must be true or false")
        entry = self.state["llm"][provider]
        if down != entry["down"]:
            stamp = iso_millis(now_ms())
            entry["down"] = down
            entry["down_since"] = stamp if down else None
            entry["changed_at"] = stamp
            self.store.save()
        return JSONResponse({"provider": provider, **entry})

    def spike_status(self) -> dict[str, Any]:
        windows = self.spike_windows()
        current = windows[-1] if windows and windows[-1]["end_ms"] is None else None
        return {
            "on": current is not None,
            "errors_per_minute": current["errors_per_minute"] if current else None,
            "since": iso_millis(current["start_ms"]) if current else None,
            "windows": [
                {
                    "start": iso_millis(w["start_ms"]),
                    "end": iso_millis(w["end_ms"]) if w["end_ms"] is not None else None,
                    "errors_per_minute": w["errors_per_minute"],
                }
                for w in windows
            ],
        }

    async def control_spike(self, request: Request) -> Response:
        try:
            body = await self.control_body(request)
        except BodyError as exc:
            return self.control_error(str(exc))
        on = body.get("on")
        rate = body.get("errors_per_minute", 120)
        if not isinstance(on, bool):
            return self.control_error("on must be true or false")
        if isinstance(rate, bool) or not isinstance(rate, int) or not 1 <= rate <= 60_000:
            return self.control_error("errors_per_minute must be an integer from 1 to 60000")
        windows = self.spike_windows()
        current = windows[-1] if windows and windows[-1]["end_ms"] is None else None
        now = now_ms()
        if current is not None and (not on or current["errors_per_minute"] != rate):
            current["end_ms"] = now
            current = None
        if on and current is None:
            windows.append({"start_ms": now, "end_ms": None, "errors_per_minute": rate})
            del windows[:-MAX_SPIKES]
        self.store.save()
        return JSONResponse(self.spike_status())


# --------------------------------------------------------------------------
# Access log, app factory, entry point


class AccessLog:
    """One line per request: client, method, path, masked query, status, time."""

    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        started = time.perf_counter()
        status = 500

        async def send_with_status(message: Message) -> None:
            nonlocal status
            if message["type"] == "http.response.start":
                status = message["status"]
            await send(message)

        try:
            await self.app(scope, receive, send_with_status)
        finally:
            client = scope.get("client")
            query = redact_query(scope.get("query_string", b"").decode("latin-1"))
            log.info(
                '%s "%s %s%s" %d %.1fms',
                client[0] if client else "-",
                scope["method"],
                scope["path"],
                query,
                status,
                (time.perf_counter() - started) * 1000,
            )


def create_app(config: Mapping[str, str], state_path: str | Path) -> Starlette:
    """The stub app over a config mapping and a state file (created if missing)."""
    store = StateStore(Path(state_path))
    stub = SaaSStub(config, store)
    app = Starlette(routes=stub.routes(), middleware=[Middleware(AccessLog)])
    app.state.stub = stub
    return app


def load_config(path: Path) -> dict[str, str]:
    config = json.loads(path.read_text(encoding="utf-8"))
    if not isinstance(config, dict):
        raise SystemExit(f"{path}: config must be a JSON object")
    missing = [k for k in SECRET_CONFIG_KEYS if not config.get(k)]
    if missing:
        raise SystemExit(f"{path}: missing config keys: {', '.join(missing)}")
    return {str(k): str(v) for k, v in config.items()}


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description="SaaS stubs for the Dealix sandbox")
    # repeatable: isolated mode also listens on the operator's end of a veth pair
    parser.add_argument("--host", action="append")
    parser.add_argument("--port", type=int, required=True)
    parser.add_argument("--config", type=Path, required=True)
    parser.add_argument("--state", type=Path, required=True)
    args = parser.parse_args(argv)

    logging.basicConfig(
        level=logging.INFO,
        format="%(asctime)s %(name)s %(levelname)s %(message)s",
        stream=sys.stdout,
    )
    hosts = args.host or ["127.0.0.1"]
    app = create_app(load_config(args.config), args.state)
    log.info("listening on %s port %d, state in %s", ", ".join(hosts), args.port, args.state)
    # uvicorn's access log prints query strings, where some keys travel; ours masks them.
    if len(hosts) == 1:
        uvicorn.run(
            app,
            host=hosts[0],
            port=args.port,
            access_log=False,
            log_config=None,
            server_header=False,
        )
        return 0
    import socket

    socks = []
    for host in hosts:
        sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        sock.bind((host, args.port))
        socks.append(sock)
    config = uvicorn.Config(app, access_log=False, log_config=None, server_header=False)
    uvicorn.Server(config).run(sockets=socks)
    return 0


if __name__ == "__main__":
    sys.exit(main())
