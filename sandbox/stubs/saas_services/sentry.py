"""The Sentry stub: event ingestion from the DSN and the project's events and stats API.

Ingestion (``/sentry/api/{project_id}/envelope/`` and ``store/``) checks the
DSN's public key and keeps a normalised record per event; the API
(``/sentry/api/0/projects/{org}/{project}/events/`` and ``stats/``) answers
from those records plus the synthetic errors of the spike that
``/_stub/sentry/spike`` switches on and off.
"""

from __future__ import annotations

import base64
import hashlib
import heapq
import itertools
import json
import re
import shlex
import uuid
import zlib
from collections.abc import Callable, Iterable, Iterator, Mapping
from fnmatch import fnmatchcase
from typing import Any
from urllib.parse import urlsplit

from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import Route

from .common import (
    EVERY_METHOD,
    BodyError,
    Service,
    as_dict,
    both_slashes,
    ceil_div,
    inflate,
    int_param,
    iso_micros,
    iso_millis,
    now_ms,
    parse_period,
    parse_time,
    read_body,
    secret_eq,
    stable_int,
)
from .control import control_body, control_error, local

MAX_SENTRY_EVENTS = 10_000
MAX_SPIKES = 100
SENTRY_RESOLUTIONS = {"10s": 10, "1h": 3_600, "1d": 86_400}
MAX_STATS_BUCKETS = 10_000


def default_section() -> dict[str, Any]:
    """No events, no spike."""
    return {"events": [], "spikes": []}


def truthy(value: str | None) -> bool:
    return (value or "").strip().lower() in {"1", "true", "yes", "on"}


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


class Sentry(Service):
    """``/sentry/...`` and the spike's control endpoint."""

    def routes(self) -> list[Route]:
        sentry_project = "/sentry/api/0/projects/{org}/{project}"
        return [
            *both_slashes("/sentry/api/{project_id}/envelope/", self.sentry_envelope, ["POST"]),
            *both_slashes("/sentry/api/{project_id}/store/", self.sentry_store, ["POST"]),
            *both_slashes(f"{sentry_project}/events/", self.sentry_events, ["GET"]),
            *both_slashes(f"{sentry_project}/stats/", self.sentry_stats, ["GET"]),
            Route("/_stub/sentry/spike", local(self.control_spike), methods=["POST"]),
        ]

    def fallbacks(self) -> list[Route]:
        return [Route("/sentry/{rest:path}", self.sentry_not_found, methods=EVERY_METHOD)]

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
                event = json.loads(inflate(base64.b64decode(raw, validate=False), zlib.MAX_WBITS))
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

    # -- Control ----------------------------------------------------------

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
        body = await control_body(request)
        on = body.get("on")
        rate = body.get("errors_per_minute", 120)
        if not isinstance(on, bool):
            return control_error("on must be true or false")
        if isinstance(rate, bool) or not isinstance(rate, int) or not 1 <= rate <= 60_000:
            return control_error("errors_per_minute must be an integer from 1 to 60000")
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
