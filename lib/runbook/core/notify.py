"""Runs nobody watches reach a person: notifications (Apprise) and dead-man's pings.

`runbook run ... --notify URL` (repeatable) and the profile's `notify:`
section send one message when a run ends with an outcome the plan names
(`when`: "failure", any outcome but ok, by default; "always"; or a list of
outcomes). The message is the run's story: scenario, environment, host,
outcome and exit code, the failed step, the failed checks with actual against
expected, the next command, the evidence folder and its digest. Every string
passes through the redactor first, which knows the profile's secrets and the
secret parts of every notification URL.

`--ping URL` speaks the healthchecks.io protocol, so a run that never
happened is reported by the ping service itself: `URL/start` when the run
starts, `URL` when it ends ok, `URL/<exit code>` otherwise, each a POST with
a short body. A Cronitor telemetry URL (host cronitor.link, or any URL written
`cronitor+https://...`) gets Cronitor's `?state=run|complete|fail` instead.

Delivery never changes a run's outcome: each URL is tried `attempts` times
with a doubling backoff, and what happened is written to `notifications.json`
in the run folder (sealed with the rest: see `runbook.evidence.seal`) and printed.

Example::

    >>> mask_url("json://hook:pa55word-xyz@alerts.internal:8080/runbook/notify?token=abcdef123")
    'json://hook:[redacted]@alerts.internal:8080/runbook/notify?token=****'
    >>> Plan(when=("failure",)).due("ok"), Plan(when=("failure",)).due("dod_not_met")
    (False, True)
    >>> Plan(when=("always",)).due("ok"), Plan(when=("refused", "abandoned")).due("failed")
    (True, False)
    >>> ping_url("https://hc-ping.com/5f1e0b6c-0000-4000-8000-000000000000", "exit", 3)
    'https://hc-ping.com/5f1e0b6c-0000-4000-8000-000000000000/3'
"""

from __future__ import annotations

import contextlib
import functools
import logging
import time
import urllib.parse
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

from runbook.clock import iso, utc_now
from runbook.core.redact import Redactor
from runbook.errors import OUTCOMES, ParameterError

if TYPE_CHECKING:
    from runbook.core.profile import Profile

# the file in the run folder that says what was sent, sealed by the manifest
NOTIFICATIONS = "notifications.json"
WHEN_FAILURE = "failure"
WHEN_ALWAYS = "always"
# a path segment or query value at least this long is treated as a token
_TOKEN_LEN = 8
# bounded message parts: a chat message, not a log
_MAX_CHECKS = 10
_MAX_FIELD = 300
_PING_BODY = 1000


# ------------------------------------------------------------------ URLs
def mask_url(url: str) -> str:
    """The URL with its secret parts hidden: a password, long path segments, query values.

    What is left (scheme, host, port, short path words, the start of each
    token) is enough to tell two URLs apart in a message or a record.

    >>> mask_url("https://hc-ping.com/5f1e0b6c-0000-4000-8000-000000000000")
    'https://hc-ping.com/5f1…'
    >>> mask_url("slack://T1JJ3T3L2/B1JJ3T3L2/abcdefghijklmnop")
    'slack://T1J…/B1J…/abc…'
    >>> mask_url("json://:pa55word-xyz@")
    'json://:[redacted]@'
    >>> mask_url("not a url at all, secret123")
    'not…'
    """
    try:
        parts = urllib.parse.urlsplit(url)
    except ValueError:
        return url[:3] + "…"
    if not parts.scheme or "://" not in url:
        return url[:3] + "…"
    host = parts.netloc.rpartition("@")[2]
    # a service's token in the host place (slack://TokenA/...) has no dot; a host has
    netloc = _mask_word(host) if _tokenish(host) and "." not in host else host
    if "@" in parts.netloc:
        user = parts.username or ""
        user = user if len(user) < _TOKEN_LEN else user[:3] + "…"
        # the redactor's own mark: it leaves it as it is
        netloc = f"{user}:[redacted]@{netloc}" if parts.password is not None else f"{user}@{netloc}"
    path = "/".join(_mask_word(w) for w in parts.path.split("/"))
    query = "&".join(f"{k}=****" if v else k for k, v in urllib.parse.parse_qsl(parts.query, True))
    return f"{parts.scheme}://{netloc}{path}" + (f"?{query}" if query else "")


def _mask_word(word: str) -> str:
    return word if len(word) < _TOKEN_LEN else word[:3] + "…"


def url_secrets(url: str) -> list[str]:
    """The parts of `url` that `mask_url` hides, for the redactor (long enough to mask).

    >>> url_secrets("json://u:pa55word-xyz@h/notify/hook-t0ken-99?k=abcdef123")
    ['pa55word-xyz', 'hook-t0ken-99', 'abcdef123']
    """
    found: list[str] = []
    with contextlib.suppress(ValueError):
        parts = urllib.parse.urlsplit(url)
        if parts.password:
            found.append(urllib.parse.unquote(parts.password))
        host = parts.netloc.rpartition("@")[2]
        if _tokenish(host) and "." not in host:
            found.append(host)
        found += [w for w in parts.path.split("/") if _tokenish(w)]
        found += [v for _, v in urllib.parse.parse_qsl(parts.query) if _tokenish(v)]
    return found


def _tokenish(word: str) -> bool:
    """A path word that is a token, not a name: masking `restore_drill` everywhere would
    garble every message about that scenario.

    >>> _tokenish("restore_drill"), _tokenish("5f1e0b6c-0000"), _tokenish("B0002")
    (False, True, False)
    """
    has_digit = any(c.isdigit() for c in word)
    has_alpha = any(c.isalpha() for c in word)
    return len(word) >= 20 or (len(word) >= _TOKEN_LEN and has_digit and has_alpha)


def check_notify_url(url: str, where: str) -> None:
    """Refuse a URL Apprise cannot send to, naming it masked and the fix."""
    import apprise

    if apprise.Apprise.instantiate(url) is None:
        raise ParameterError(
            f"{where} {mask_url(url)}: not a notification URL Apprise can send to (a scheme "
            "it knows, a host, the service's required parts). Examples: "
            "json://host:port/path (a JSON webhook), jsons:// (the same over HTTPS), "
            "form://host/path, slack://TokenA/TokenB/TokenC, mailtos://user:pass@host; "
            "the list: https://github.com/caronc/apprise/wiki",
            key="notify",
        )


def check_ping_url(url: str, where: str) -> None:
    """Refuse a ping URL that is not http(s) with a host."""
    parts = urllib.parse.urlsplit(ping_style(url)[1])
    if parts.scheme not in ("http", "https") or not parts.hostname:
        raise ParameterError(
            f"{where} {mask_url(url)}: a ping URL is http(s)://host/..., e.g. "
            "https://hc-ping.com/<uuid> (healthchecks.io), https://<your healthchecks>/ping/<uuid>, "
            "https://cronitor.link/p/<key>/<monitor>",
            key="ping",
        )


def ping_style(url: str) -> tuple[str, str]:
    """("healthchecks" or "cronitor", the URL to request).

    >>> ping_style("cronitor+http://127.0.0.1:9/p/k/job")
    ('cronitor', 'http://127.0.0.1:9/p/k/job')
    >>> ping_style("https://cronitor.link/p/k/job")[0], ping_style("https://hc-ping.com/x")[0]
    ('cronitor', 'healthchecks')
    """
    if url.startswith("cronitor+"):
        return "cronitor", url.removeprefix("cronitor+")
    host = urllib.parse.urlsplit(url).hostname or ""
    return ("cronitor" if host == "cronitor.link" else "healthchecks"), url


def ping_url(url: str, event: str, code: int | None = None) -> str:
    """The URL to request for `event` ("start" or "exit" with the exit code).

    >>> ping_url("https://hc.example/ping/abc/", "start")
    'https://hc.example/ping/abc/start'
    >>> ping_url("https://hc.example/ping/abc", "exit", 0)
    'https://hc.example/ping/abc'
    >>> ping_url("https://hc.example/ping/abc", "exit", None)
    'https://hc.example/ping/abc/fail'
    >>> ping_url("cronitor+https://c.example/p/k/job", "exit", 3)
    'https://c.example/p/k/job?state=fail&status_code=3'
    """
    style, plain = ping_style(url)
    if style == "cronitor":
        state = "run" if event == "start" else ("complete" if code == 0 else "fail")
        extra = f"&status_code={code}" if event == "exit" and code is not None else ""
        sep = "&" if "?" in plain else "?"
        return f"{plain}{sep}state={state}{extra}"
    parts = urllib.parse.urlsplit(plain)
    base = parts.path.rstrip("/")
    if event == "start":
        path = f"{base}/start"
    else:
        # no exit code known (the run left no record): the plain failure signal
        path = base if code == 0 else f"{base}/{'fail' if code is None else code}"
    return urllib.parse.urlunsplit(parts._replace(path=path))


# ------------------------------------------------------------------ plan
@dataclass(frozen=True)
class Plan:
    """Where to send, when, and how hard to try. URLs are secrets: never store them."""

    urls: tuple[str, ...] = ()
    pings: tuple[str, ...] = ()
    when: tuple[str, ...] = (WHEN_FAILURE,)
    attempts: int = 3
    backoff_s: float = 2.0
    timeout_s: float = 10.0
    redactor: Redactor = field(default_factory=Redactor, compare=False, repr=False)

    def due(self, outcome: str) -> bool:
        if WHEN_ALWAYS in self.when:
            return True
        if WHEN_FAILURE in self.when and outcome != "ok":
            return True
        return outcome in self.when

    @property
    def empty(self) -> bool:
        return not self.urls and not self.pings

    def describe(self) -> dict[str, Any]:
        """The plan as the record keeps it: URLs masked."""
        return {
            "when": list(self.when),
            "targets": [mask_url(u) for u in self.urls],
            "pings": [mask_url(u) for u in self.pings],
            "attempts": self.attempts,
            "log": NOTIFICATIONS,
        }


def check_when(when: Iterable[str], where: str) -> tuple[str, ...]:
    """`when` as a tuple, each word "failure", "always" or an outcome name."""
    words = tuple(w.strip() for item in when for w in str(item).split(",") if w.strip())
    allowed = [WHEN_FAILURE, WHEN_ALWAYS, *OUTCOMES]
    for word in words:
        if word not in allowed:
            raise ParameterError(
                f"{where} {word!r} is not a notification condition: use failure (any outcome "
                f"but ok, the default), always, or outcome names: {', '.join(OUTCOMES)}",
                key="notify.when",
            )
    return words or (WHEN_FAILURE,)


def build_plan(
    profile: Profile,
    *,
    urls: Sequence[str] = (),
    pings: Sequence[str] = (),
    when: Sequence[str] = (),
    secret: Callable[[str], str | None] | None = None,
    redactor: Redactor | None = None,
) -> Plan:
    """The profile's `notify:` section plus the command line's URLs; refused when malformed.

    `secret(name)` reads a secret by name (the environment, then the profile's
    secrets file) for the profile's `url_secrets` and `ping_secret`. Every URL's
    secret parts are registered with `redactor`, so no message, record or
    error shows them.
    """
    section = profile.notify
    redactor = redactor or Redactor()
    found_urls: list[tuple[str, str]] = [(u, "--notify") for u in urls]
    found_urls += [(u, f"notify.urls in {profile.source}") for u in section.urls]
    found_pings: list[tuple[str, str]] = [(u, "--ping") for u in pings]
    if section.ping:
        found_pings.append((section.ping, f"notify.ping in {profile.source}"))
    names = [(n, "url") for n in section.url_secrets]
    names += [(section.ping_secret, "ping")] if section.ping_secret else []
    for name, kind in names:
        value = secret(name) if secret else None
        if not value:
            raise ParameterError(
                f"notify: the secret {name} (a {kind} URL, named in {profile.source}) is not "
                "set: export it or put NAME=value in the profile's secrets file",
                key="notify",
            )
        (found_urls if kind == "url" else found_pings).append((value, f"the secret {name}"))
    for url, _ in found_urls + found_pings:
        for part in url_secrets(url):
            with contextlib.suppress(ValueError):  # a part too short to mask is not a token
                redactor.register("notify-url", part)
    for url, where in found_urls:
        check_notify_url(url, where)
    for url, where in found_pings:
        check_ping_url(url, where)
    if section.attempts < 1 or section.backoff_s < 0 or section.timeout_s <= 0:
        raise ParameterError(
            f"notify: attempts must be at least 1, backoff_s at least 0 and timeout_s above 0 "
            f"in {profile.source}",
            key="notify",
        )
    return Plan(
        urls=tuple(u for u, _ in found_urls),
        pings=tuple(u for u, _ in found_pings),
        when=check_when(when or section.when, "--notify-when" if when else "notify.when"),
        attempts=section.attempts,
        backoff_s=section.backoff_s,
        timeout_s=section.timeout_s,
        redactor=redactor,
    )


# --------------------------------------------------------------- message
def _clip(value: Any) -> str:
    text = " ".join(str(value).split())
    return text if len(text) <= _MAX_FIELD else text[: _MAX_FIELD - 1] + "…"


def message(
    record: Mapping[str, Any], run_dir: Path | None, digest: str | None, *, why: str | None = None
) -> tuple[str, str]:
    """(title, body) of the notification for one run's record.

    >>> t, b = message({"scenario": "health_check", "environment": "staging",
    ...     "target": "10.0.0.5", "outcome": "dod_not_met", "exit_code": 3,
    ...     "checks": [{"name": "Deep health", "expected": "green", "actual": "postgres red",
    ...                 "status": "failed", "step": "2. Deep health"}],
    ...     "next_command": "runbook run database_down --env staging"}, Path("/o/r"), "ab" * 32)
    >>> t
    'runbook: health_check on staging: dod_not_met (exit 3)'
    >>> print(b)
    scenario:     health_check
    environment:  staging
    host:         10.0.0.5
    outcome:      dod_not_met (exit 3)
    failed step:  2. Deep health
    check failed: Deep health: expected green, actual postgres red
    next:         runbook run database_down --env staging
    evidence:     /o/r
    digest:       sha256 abababababababababababababababababababababababababababababababab
    verify:       runbook verify /o/r
    """
    outcome = record.get("outcome")
    title = (
        f"runbook: {record.get('scenario')} on {record.get('environment')}: "
        f"{outcome} (exit {record.get('exit_code')})"
    )

    def line(label: str, value: Any) -> str:
        return f"{label + ':':<13} {value}"

    hosts = record.get("hosts")
    # a fleet run names its hosts; a single-host run's `hosts` is empty: its target
    host = (
        ", ".join(map(str, hosts))
        if isinstance(hosts, (list, dict)) and hosts
        else record.get("target")
    )
    lines = [
        line("scenario", record.get("scenario")),
        line("environment", record.get("environment")),
        line("host", host or "unknown (the run never reached its target)"),
        line("outcome", f"{outcome} (exit {record.get('exit_code')})"),
    ]
    if record.get("dry_run"):
        lines.append(line("mode", "dry run: nothing was changed"))
    failed = [c for c in record.get("checks") or [] if c.get("status") == "failed"]
    step = record.get("failed_step") or next((c["step"] for c in failed if c.get("step")), None)
    if step:
        lines.append(line("failed step", _clip(step)))
    for check in failed[:_MAX_CHECKS]:
        lines.append(
            line(
                "check failed",
                _clip(
                    f"{check.get('name')}: expected {check.get('expected')}, "
                    f"actual {check.get('actual')}"
                ),
            )
        )
    if len(failed) > _MAX_CHECKS:
        lines.append(f"  ... {len(failed) - _MAX_CHECKS} more failed checks in record.json")
    error = record.get("error") or {}
    if error and not failed:
        first = (str(error.get("message") or "").strip().splitlines() or [""])[0]
        lines.append(line("error", _clip(f"{error.get('type')}: {first}")))
    if why:
        lines.append(line("note", _clip(why)))
    nxt = record.get("next_command")
    lines.append(line("next", nxt or "none: read the evidence"))
    if run_dir is not None:
        lines.append(line("evidence", run_dir))
        if digest:
            lines.append(line("digest", f"sha256 {digest}"))
            lines.append(line("verify", f"runbook verify {run_dir}"))
        else:
            lines.append(
                line("digest", f"none: the folder was not sealed (runbook seal {run_dir})")
            )
    return title, "\n".join(lines)


# -------------------------------------------------------------- delivery
def _attempt_apprise(url: str, title: str, body: str, ok_run: bool, timeout: float) -> str | None:
    """One try: None when delivered, else why not (Apprise's own words)."""
    import apprise

    obj = apprise.Apprise()
    plugin = apprise.Apprise.instantiate(url)
    if plugin is None:
        return "not a URL Apprise can send to"
    # Apprise's own timeouts are per request; keep them within ours
    with contextlib.suppress(AttributeError):
        plugin.socket_connect_timeout = min(plugin.socket_connect_timeout, timeout)
        plugin.socket_read_timeout = min(plugin.socket_read_timeout, timeout)
    obj.add(plugin)
    kind = apprise.NotifyType.SUCCESS if ok_run else apprise.NotifyType.FAILURE
    with apprise.LogCapture(level=logging.WARNING) as captured:
        delivered = bool(obj.notify(body=body, title=title, notify_type=kind))
        logs = captured.getvalue() if hasattr(captured, "getvalue") else ""
    if delivered:
        return None
    reasons = [ln.split(" - ", 2)[-1] for ln in str(logs).splitlines() if ln.strip()]
    return "; ".join(reasons[-3:]) or "Apprise reported a failure without a reason"


def _attempt_ping(url: str, body: str, timeout: float) -> str | None:
    import httpx

    try:
        response = httpx.post(
            url,
            content=body.encode(),
            headers={"Content-Type": "text/plain; charset=utf-8"},
            timeout=timeout,
            follow_redirects=True,
        )
    except httpx.HTTPError as exc:
        return f"{type(exc).__name__}: {exc}"
    if response.status_code >= 300:
        return f"HTTP {response.status_code}: {response.text[:200]}"
    return None


def _with_retries(
    plan: Plan, attempt: Callable[[], str | None], sleep: Callable[[float], None]
) -> dict[str, Any]:
    errors: list[str] = []
    started = time.monotonic()
    for n in range(1, plan.attempts + 1):
        why = attempt()
        if why is None:
            return {
                "delivered": True,
                "attempts": n,
                "errors": errors,
                "seconds": round(time.monotonic() - started, 3),
            }
        errors.append(plan.redactor.redact(why)[:500])
        if n < plan.attempts:
            sleep(plan.backoff_s * 2 ** (n - 1))
    return {
        "delivered": False,
        "attempts": plan.attempts,
        "errors": errors,
        "seconds": round(time.monotonic() - started, 3),
    }


def send(
    plan: Plan,
    title: str,
    body: str,
    *,
    ok_run: bool,
    sleep: Callable[[float], None] = time.sleep,
) -> list[dict[str, Any]]:
    """Send one message to every URL of the plan; what happened to each, secrets masked."""
    title, body = plan.redactor.redact(title), plan.redactor.redact(body)
    results = []
    for url in plan.urls:
        attempt = functools.partial(_attempt_apprise, url, title, body, ok_run, plan.timeout_s)
        result = _with_retries(plan, attempt, sleep)
        results.append({"target": mask_url(url), "at": iso(utc_now()), **result})
    return results


def ping(
    plan: Plan,
    event: str,
    *,
    code: int | None = None,
    body: str = "",
    sleep: Callable[[float], None] = time.sleep,
) -> list[dict[str, Any]]:
    """Send the `event` ping ("start", or "exit" with the exit code) to every ping URL."""
    body = plan.redactor.redact(body)[:_PING_BODY]
    results = []
    for url in plan.pings:
        target = ping_url(url, event, code)
        result = _with_retries(
            plan, functools.partial(_attempt_ping, target, body, plan.timeout_s), sleep
        )
        event_name = (
            event if event == "start" else ("ok" if code == 0 else f"exit {code or 'fail'}")
        )
        results.append(
            {"target": mask_url(url), "event": event_name, "at": iso(utc_now()), **result}
        )
    return results


def ping_body(record: Mapping[str, Any], run_dir: Path | None) -> str:
    """The short body of the end ping: one line of verdict, the failed step, the folder.

    >>> ping_body({"scenario": "restore_drill", "environment": "staging",
    ...            "outcome": "ok", "exit_code": 0}, None)
    'restore_drill on staging: ok (exit 0)'
    """
    parts = [
        f"{record.get('scenario')} on {record.get('environment')}: "
        f"{record.get('outcome')} (exit {record.get('exit_code')})"
    ]
    if record.get("failed_step"):
        parts.append(f"failed step: {record.get('failed_step')}")
    failed = [c.get("name") for c in record.get("checks") or [] if c.get("status") == "failed"]
    if failed:
        parts.append("failed checks: " + ", ".join(map(str, failed[:_MAX_CHECKS])))
    if run_dir is not None:
        parts.append(f"evidence: {run_dir}")
    return "\n".join(parts)


def summary_lines(log: Mapping[str, Any]) -> list[str]:
    """What the terminal prints about delivery: one line per target.

    >>> summary_lines({"sent": [{"target": "json://h/x", "delivered": False, "attempts": 3,
    ...     "errors": ["HTTP 500"]}], "pings": []})
    ["notify:       json://h/x: NOT delivered after 3 attempts (HTTP 500); the run's outcome stands"]
    """
    lines = []
    for item in list(log.get("sent") or []) + list(log.get("pings") or []):
        label = item["target"] + (f" ({item['event']})" if "event" in item else "")
        if item.get("delivered"):
            n = item["attempts"]
            lines.append(f"{'notify:':<13} {label}: delivered ({n} attempt{'s' * (n > 1)})")
        else:
            last = (item.get("errors") or ["?"])[-1]
            lines.append(
                f"{'notify:':<13} {label}: NOT delivered after {item['attempts']} attempts "
                f"({last}); the run's outcome stands"
            )
    if log.get("skipped"):
        lines.append(f"{'notify:':<13} {log['skipped']}")
    return lines


def deliver_run(
    plan: Plan,
    record: Mapping[str, Any],
    run_dir: Path | None,
    digest: str | None,
    *,
    sleep: Callable[[float], None] = time.sleep,
    why: str | None = None,
) -> dict[str, Any]:
    """The message (when due) and the end ping for one finished run; the log, redacted.
    `why` is one more line for the message (what the notifier found beside the record)."""
    outcome = str(record.get("outcome"))
    log: dict[str, Any] = {
        "at": iso(utc_now()),
        "outcome": outcome,
        "evidence_digest": digest,
        "due": plan.due(outcome),
        "sent": [],
        "pings": [],
    }
    if plan.urls and log["due"]:
        title, body = message(record, run_dir, digest, why=why)
        log["sent"] = send(plan, title, body, ok_run=outcome == "ok", sleep=sleep)
    elif plan.urls:
        log["skipped"] = (
            f"no message: outcome {outcome} is not one the plan names (when: "
            f"{', '.join(plan.when)})"
        )
    if plan.pings:
        code = record.get("exit_code")
        log["pings"] = ping(
            plan,
            "exit",
            code=int(code) if isinstance(code, int) else 1,
            body=ping_body(record, run_dir),
            sleep=sleep,
        )
    return plan.redactor.redact_obj(log)
