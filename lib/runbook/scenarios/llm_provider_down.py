"""Scenario 4 (LLM provider down): confirm it is the provider, decide, fail over, recover.

1. Confirm: each provider's status page and a direct, minimal call to the
   provider with its key (masked everywhere). Anthropic and OpenAI run
   Atlassian Statuspage (`/api/v2/summary.json`); Google Cloud's page is not
   one: its `/incidents.json` lists incidents, an ongoing one has no `end`.
2. Measure: breaker states and DLQ depths read twice a short interval apart,
   so the growth rate is a number, not an impression.
3. Decide (`decide`, pure, unit-tested): "no incident found", "breaker is
   protecting us, no action", "failover" (primary down longer than
   `failover_after_minutes`, counted from the status page incident's
   `created_at`), or "provider is back: recover".
4. Failover: `LLM_PROVIDER_PRIORITY` only (backup first, masked diff), restart.
5. Recover: wait for the breaker to close, drain OUTBOUND_DLQ and
   ENRICHMENT_DLQ in batches of the runbook's limit until empty.

Example::

    >>> from datetime import datetime, UTC
    >>> now = datetime(2026, 11, 27, 12, 0, tzinfo=UTC)
    >>> d = decide(priority=["anthropic", "openai", "google"],
    ...            down={"anthropic": True, "openai": False, "google": False},
    ...            down_since={"anthropic": datetime(2026, 11, 27, 11, 0, tzinfo=UTC)},
    ...            breakers={"anthropic": "open"}, growth_per_min=12.0, dlq_depth=40,
    ...            now=now, failover_after_minutes=30)
    >>> d.name, d.new_order
    ('failover', ['openai', 'google', 'anthropic'])
"""

from __future__ import annotations

import re
import time
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import TYPE_CHECKING, Any

from runbook.clock import parse_time
from runbook.ops.http import HttpClient
from runbook.scenarios._base import Scenario, show

if TYPE_CHECKING:
    import pandas as pd

    from runbook.session import Session

PROVIDERS = ("anthropic", "openai", "google")
LLM_QUEUES = {"outbound": "OUTBOUND_DLQ", "enrichment": "ENRICHMENT_DLQ"}

NO_INCIDENT = "no incident found"
PROTECTING = "breaker is protecting us, no action"
FAILOVER = "failover"
RECOVER = "provider is back: recover"

MODELS = {
    "anthropic": "claude-3-5-haiku-latest",
    "openai": "gpt-4o-mini",
    "google": "gemini-1.5-flash",
}


@dataclass(frozen=True)
class Decision:
    """What to do and why; `new_order` only for a failover."""

    name: str
    reason: str
    new_order: list[str] | None = None
    minutes_down: float | None = None
    extra: dict[str, Any] = field(default_factory=dict)

    def _repr_markdown_(self) -> str:
        order = (
            f"  \nnew LLM_PROVIDER_PRIORITY: `{','.join(self.new_order)}`" if self.new_order else ""
        )
        return f"**Decision: {self.name}**  \n{self.reason}{order}"


# --------------------------------------------------------------------------- decide (pure)


def decide(
    *,
    priority: list[str],
    down: dict[str, bool],
    down_since: dict[str, datetime | None],
    breakers: dict[str, str],
    growth_per_min: float,
    dlq_depth: int,
    now: datetime,
    failover_after_minutes: float,
) -> Decision:
    """The runbook's steps 2-4 as a function of what was measured.

    >>> now = datetime(2026, 11, 27, 12, 0, tzinfo=UTC)
    >>> decide(priority=["anthropic", "openai"], down={"anthropic": True, "openai": False},
    ...        down_since={"anthropic": datetime(2026, 11, 27, 11, 50, tzinfo=UTC)},
    ...        breakers={"anthropic": "open"}, growth_per_min=10, dlq_depth=5, now=now,
    ...        failover_after_minutes=30).name
    'breaker is protecting us, no action'
    """
    primary = priority[0]
    if not down.get(primary):
        states = {p: s for p, s in breakers.items() if s != "closed"}
        if breakers.get(primary, "closed") != "closed" or dlq_depth > 0:
            return Decision(
                RECOVER,
                f"{primary} answers and its status page is operational; breaker "
                f"{breakers.get(primary, 'closed')}, {dlq_depth} jobs waiting in the LLM DLQs: "
                "wait for the breaker to close, then drain",
            )
        others = [p for p in priority[1:] if down.get(p)]
        note = f" ({', '.join(others)} down, but not the primary)" if others else ""
        extra = f"; breakers not closed: {states}" if states else ""
        return Decision(NO_INCIDENT, f"the primary {primary} answers{note}{extra}: nothing to do")
    since = down_since.get(primary)
    minutes = (now - since).total_seconds() / 60 if since else None
    healthy = [p for p in priority if not down.get(p)]
    rate = f"DLQs growing at {growth_per_min:.1f} jobs/min ({dlq_depth} waiting)"
    if minutes is not None and minutes > failover_after_minutes:
        if not healthy:
            return Decision(
                PROTECTING,
                f"{primary} down for {minutes:.0f} min, but no other provider is healthy to "
                f"fail over to; {rate}",
                minutes_down=minutes,
            )
        new_order = healthy + [p for p in priority if p not in healthy]
        return Decision(
            FAILOVER,
            f"the primary {primary} has been down for {minutes:.0f} min "
            f"(> {failover_after_minutes:g} min); {healthy[0]} is healthy; {rate}",
            new_order=new_order,
            minutes_down=minutes,
        )
    how_long = f"{minutes:.0f} min" if minutes is not None else "an unknown time"
    return Decision(
        PROTECTING,
        f"the primary {primary} is down for {how_long} (failover only after "
        f"{failover_after_minutes:g} min); its breaker is {breakers.get(primary, '?')} and the "
        f"{rate}: the work waits in the DLQ, nothing is lost",
        minutes_down=minutes,
    )


# --------------------------------------------------------------------------- status pages


def _no_answer(provider: str) -> dict[str, Any]:
    """The row of a status page that did not answer: nothing known, not "up"."""
    return {
        "provider": provider,
        "status page": "no answer",
        "down": None,
        "incident": "",
        "since": None,
    }


def summarize_status(provider: str, body: dict[str, Any] | None) -> dict[str, Any]:
    """One row from a Statuspage summary.json (pure).

    >>> summarize_status("openai", {"status": {"indicator": "none",
    ...     "description": "All Systems Operational"}, "incidents": []})["down"]
    False
    """
    if not isinstance(body, dict) or "status" not in body:
        return _no_answer(provider)
    status = body.get("status") or {}
    open_incidents = [i for i in body.get("incidents") or [] if not i.get("resolved_at")]
    since = min(
        (t for t in (parse_time(i.get("created_at")) for i in open_incidents) if t), default=None
    )
    indicator = status.get("indicator", "none")
    return {
        "provider": provider,
        "status page": f"{status.get('description', '?')} ({indicator})",
        "down": indicator in ("major", "critical") or bool(open_incidents),
        "incident": "; ".join(str(i.get("name")) for i in open_incidents),
        "since": since,
    }


# Google Cloud's incidents that concern the Gemini API (by product or service name).
GOOGLE_PRODUCTS = re.compile(r"gemini|vertex ai|generative ?language|ai studio", re.IGNORECASE)
# status_impact values that mean the product does not work (SERVICE_INFORMATION does)
GOOGLE_DOWN = ("SERVICE_OUTAGE", "SERVICE_DISRUPTION")


def _google_products(incident: dict[str, Any]) -> list[str]:
    names = [str(p.get("title") or "") for p in incident.get("affected_products") or []]
    return [n for n in [str(incident.get("service_name") or ""), *names] if n]


def summarize_google(provider: str, body: Any) -> dict[str, Any]:
    """One row from status.cloud.google.com/incidents.json (pure).

    Only ongoing incidents (no "end") of the Gemini products count; the page
    lists every Google Cloud product's incidents, past ones included.

    >>> ongoing = {"begin": "2026-11-27T11:00:00+00:00", "external_desc": "Gemini 503s",
    ...            "status_impact": "SERVICE_DISRUPTION", "service_name": "Vertex Gemini API",
    ...            "affected_products": [{"title": "Vertex Gemini API", "id": "x"}]}
    >>> other = {**ongoing, "service_name": "Cloud Build", "affected_products": []}
    >>> over = {**ongoing, "end": "2026-11-27T12:00:00+00:00"}
    >>> row = summarize_google("google", [ongoing, other, over])
    >>> row["down"], row["incident"], row["since"].hour
    (True, 'Gemini 503s', 11)
    >>> summarize_google("google", [other, over])["down"]
    False
    """
    if not isinstance(body, list):
        return _no_answer(provider)
    ongoing = [
        i
        for i in body
        if isinstance(i, dict)
        and not i.get("end")
        and any(GOOGLE_PRODUCTS.search(n) for n in _google_products(i))
    ]
    impacts = sorted({str(i.get("status_impact") or "?") for i in ongoing})
    down = any(i.get("status_impact") in GOOGLE_DOWN for i in ongoing)
    since = min((t for t in (parse_time(i.get("begin")) for i in ongoing) if t), default=None)
    if ongoing:
        page = f"{len(ongoing)} ongoing Gemini incident(s) ({', '.join(impacts)})"
    else:
        page = f"no ongoing Gemini incident ({len(body)} incidents listed, other products or over)"
    return {
        "provider": provider,
        "status page": page,
        "down": down,
        "incident": "; ".join(str(i.get("external_desc") or "").strip() for i in ongoing),
        "since": since,
    }


# How each provider's status page is read: path under its base URL, parser.
STATUS_FORMATS: dict[str, tuple[str, Any]] = {
    "anthropic": ("/api/v2/summary.json", summarize_status),
    "openai": ("/api/v2/summary.json", summarize_status),
    "google": ("/incidents.json", summarize_google),
}


def status_pages(s: Session) -> pd.DataFrame:
    """Every provider's status page (read-only), each in its own format."""
    import pandas as pd

    rows = []
    for provider in PROVIDERS:
        base = s.profile.llm.status_pages.get(provider)
        path, parse = STATUS_FORMATS[provider]
        body = None
        if base:
            client = HttpClient(s, f"status-{provider}", base, timeout=10)
            try:
                # an unreadable page says nothing (body None); a refusal still ends the run
                with s.attempt(also=(ValueError,)):
                    r = client.get(path, accept=tuple(range(100, 600)))
                    body = r.json() if r.ok else None
            finally:
                client.close()
        rows.append(parse(provider, body))
    return pd.DataFrame(rows)


# --------------------------------------------------------------------------- direct call


def _key(s: Session, provider: str) -> str | None:
    name = getattr(s.profile.secrets, f"{provider}_key")
    return s.secrets.get(name, required=False)


def direct_call(s: Session, provider: str) -> dict[str, Any]:
    """A minimal request straight to the provider's API with its key (the key is masked)."""
    base = s.profile.llm.api_urls.get(provider)
    key = _key(s, provider)
    if not base or not key:
        return {
            "provider": provider,
            "direct call": "not available (no URL or key)",
            "answers": None,
        }
    prompt = [{"role": "user", "content": "ping"}]
    if provider == "anthropic":
        headers = {"x-api-key": key, "anthropic-version": "2023-06-01"}
        path, params = "/v1/messages", None
        body: dict[str, Any] = {"model": MODELS[provider], "max_tokens": 1, "messages": prompt}
    elif provider == "openai":
        headers = {"Authorization": f"Bearer {key}"}
        path, params = "/v1/chat/completions", None
        body = {"model": MODELS[provider], "max_tokens": 1, "messages": prompt}
    else:
        headers, params = {}, {"key": key}
        path = f"/v1beta/models/{MODELS[provider]}:generateContent"
        body = {
            "contents": [{"role": "user", "parts": [{"text": "ping"}]}],
            "generationConfig": {"maxOutputTokens": 1},
        }
    client = HttpClient(s, provider, base, timeout=10)
    try:
        with s.attempt() as a:
            # A probe: one token, read-only for the runbook (no dry-run skip, no lock).
            r = client.post(
                path,
                json=body,
                params=params,
                headers=headers,
                accept=tuple(range(100, 600)),
                changing=False,
            )
    finally:
        client.close()
    if a.error is not None:
        return {
            "provider": provider,
            "direct call": f"no answer: {str(a.error)[:120]}",
            "answers": False,
        }
    ok = r.ok
    shown = f"HTTP {r.status}" + ("" if ok else f": {r.text[:120]}")
    return {
        "provider": provider,
        "direct call": shown,
        "answers": ok,
        "latency_ms": round(r.duration * 1000),
    }


def confirm_provider(s: Session) -> pd.DataFrame:
    """Status pages and direct calls side by side: one row per provider."""
    import pandas as pd

    pages = status_pages(s)
    calls = pd.DataFrame([direct_call(s, p) for p in PROVIDERS])
    table = pages.merge(calls, on="provider", how="left")
    table["what it means"] = [
        meaning(d, a) for d, a in zip(table["down"], table["answers"], strict=True)
    ]
    table["down"] = [
        bool(d) or a is False for d, a in zip(table["down"], table["answers"], strict=True)
    ]
    return table


def meaning(page_down: bool | None, answers: bool | None) -> str:
    """One provider's row in words (pure).

    >>> meaning(True, False)
    'down: its status page reports an incident and our call fails'
    """
    if page_down and answers is False:
        return "down: its status page reports an incident and our call fails"
    if answers is False:
        return "our call fails but its status page is calm: maybe our key, quota or network"
    if page_down:
        return "its status page reports an incident, yet our call works: degraded, watch it"
    if answers is None:
        return "not checked (no key or URL for it here)"
    return "up: status page operational and our call works"


# --------------------------------------------------------------------------- breaker and DLQs


def sample(s: Session, interval: float) -> dict[str, Any]:
    """Breaker states and DLQ depths read twice, `interval` seconds apart."""
    first = s.api.dlq_stats()
    t0 = time.monotonic()
    time.sleep(interval)
    second = s.api.dlq_stats()
    dt = max(time.monotonic() - t0, 1e-6)
    import pandas as pd

    rows = []
    for q in ("OUTBOUND_DLQ", "ENRICHMENT_DLQ", "WEBHOOKS_DLQ"):
        a, b = int(first["queues"].get(q, 0)), int(second["queues"].get(q, 0))
        rows.append(
            {"queue": q, "first": a, "second": b, "growth per min": round((b - a) * 60 / dt, 1)}
        )
    depths = pd.DataFrame(rows)
    breakers = pd.DataFrame(
        [{"provider": p, **snap} for p, snap in (second.get("breakers") or {}).items()]
    )
    llm = depths[depths["queue"].isin(LLM_QUEUES.values())]
    return {
        "depths": depths,
        "breakers": breakers,
        "primary": second.get("primary"),
        "growth_per_min": float(llm["growth per min"].sum()),
        "dlq_depth": int(llm["second"].sum()),
        "interval": dt,
    }


def current_priority(s: Session) -> list[str]:
    """LLM_PROVIDER_PRIORITY from the server's .env (only that line is kept)."""
    text = s.read_file(s.profile.app.env_file).decode(errors="replace")
    m = re.search(r"^\s*(?:export\s+)?LLM_PROVIDER_PRIORITY\s*=\s*['\"]?([^'\"\n]*)", text, re.M)
    order = [p.strip() for p in (m.group(1) if m else "").split(",") if p.strip()]
    return order or list(PROVIDERS)


def assess(s: Session, interval: float, failover_after_minutes: float) -> dict[str, Any]:
    """Everything the decision needs, measured; the decision recorded as a check."""
    providers = confirm_provider(s)
    measured = sample(s, interval)
    priority = current_priority(s)
    breakers = (
        {str(r["provider"]): str(r["state"]) for _, r in measured["breakers"].iterrows()}
        if len(measured["breakers"])
        else {}
    )
    down = {str(r["provider"]): bool(r["down"]) for _, r in providers.iterrows()}
    since: dict[str, datetime | None] = {}
    for _, r in providers.iterrows():
        ts = r["since"]
        since[str(r["provider"])] = ts.to_pydatetime() if hasattr(ts, "to_pydatetime") else ts
    primary = priority[0]
    if down.get(primary) and since.get(primary) is None:
        # No incident on the status page yet: the breaker's opening is the best we know.
        snap = measured["breakers"]
        row = snap[snap["provider"] == primary] if len(snap) else snap
        if len(row):
            since[primary] = parse_time(row.iloc[0].get("opened_at"))
    decision = decide(
        priority=priority,
        down=down,
        down_since=since,
        breakers=breakers,
        growth_per_min=measured["growth_per_min"],
        dlq_depth=measured["dlq_depth"],
        now=datetime.now(UTC),
        failover_after_minutes=failover_after_minutes,
    )
    s.decide("Decision", decision.name, decision.reason)
    return {"providers": providers, "priority": priority, "decision": decision, **measured}


def changes_server(decision: Decision) -> bool:
    """Whether the decision leads to changes (failover edit and restart, DLQ drains).

    >>> changes_server(Decision(NO_INCIDENT, "")), changes_server(Decision(FAILOVER, ""))
    (False, True)
    """
    return decision.name != NO_INCIDENT


def readable(providers: pd.DataFrame) -> pd.DataFrame:
    """The confirmation table for people."""
    cols = ["provider", "status page", "incident", "since", "direct call", "what it means"]
    return providers[[c for c in cols if c in providers.columns]].set_index("provider")


# --------------------------------------------------------------------------- failover


def failover(s: Session, new_order: list[str], wait_seconds: float = 60) -> dict[str, Any]:
    """Edit LLM_PROVIDER_PRIORITY only (backup first, masked diff), restart the API."""
    diff = s.edit_env_var("LLM_PROVIDER_PRIORITY", ",".join(new_order))
    r = s.services.restart("api")
    if r.dry_run:
        # provider names, not secrets: the one .env key scenario 4 may change, old -> new
        s.preview_change(".env keys", [f"{diff['key']}: {diff['before']} -> {diff['after']}"])
        s.preview_change(
            "services to restart",
            [f"{s.services.unit('api')} ({s.profile.services.manager} restart)"],
        )
        return {"diff": diff, "restarted": False}
    deadline = time.monotonic() + wait_seconds
    primary = None
    while time.monotonic() < deadline:
        primary = None
        with s.attempt():
            primary = s.api.dlq_stats().get("primary")
        if primary == new_order[0]:
            break
        time.sleep(1)
    s.check(
        "API serves from the new primary",
        expected=new_order[0],
        actual=primary,
        passed=primary == new_order[0],
        note=f"LLM_PROVIDER_PRIORITY={','.join(new_order)}",
    )
    return {"diff": diff, "restarted": True, "primary": primary}


ENV_EXAMPLE_REMINDER = (
    "Reminder: .env on the server now differs from the repository. Put the same "
    "LLM_PROVIDER_PRIORITY into .env.example through a PR (no secrets) on the next business "
    "day, and switch back the same way once the provider has been healthy for a while."
)


# --------------------------------------------------------------------------- recovery


def recover(s: Session, limit: int, wait_seconds: float) -> dict[str, Any]:
    """Wait for the breaker to close, then drain OUTBOUND_DLQ and ENRICHMENT_DLQ to zero."""
    import pandas as pd

    # The breaker is closed when deep health says llm_providers green.
    llm = s.api.wait_green("llm_providers", wait_seconds, interval=2.0).get("llm_providers") or {}
    s.check(
        "Deep health llm_providers green",
        expected="green",
        actual=f"{llm.get('status')}: {llm.get('detail')}",
        passed=llm.get("status") == "green",
    )
    before = s.api.dlq_depths()
    batches = []
    if llm.get("status") == "green":
        for name, queue in LLM_QUEUES.items():
            if before.get(queue):
                df = s.api.drain_all(name, limit)
                df.insert(0, "queue", queue)
                batches.append(df)
    after = s.api.dlq_depths()
    for queue in LLM_QUEUES.values():
        s.judge(
            f"{queue} back to zero",
            expected="0",
            ran=not (s.dry_run and before.get(queue)),  # a drain the dry run skipped
            actual=f"{before.get(queue)} before, {after.get(queue)} after",
            passed=after.get(queue) == 0,
            note=f"batches of {limit}",
        )
    table = pd.concat(batches, ignore_index=True) if batches else pd.DataFrame()
    return {"llm": llm, "before": before, "after": after, "batches": table}


def no_new_failures(s: Session, interval: float) -> dict[str, Any]:
    """After recovery no new work may fail: the LLM DLQs must not grow (the runbook's
    "no workflow failures", measured on the queues that record them)."""
    measured = sample(s, interval)
    growth = measured["growth_per_min"]
    s.check(
        "No new failed LLM work",
        expected="LLM DLQs not growing",
        actual=f"{growth:+.1f} jobs/min over {measured['interval']:.0f} s",
        passed=growth <= 0,
    )
    return measured


def recovery_wait_seconds(decision: Decision, recovery_wait_minutes: float, dry_run: bool) -> float:
    """How long step 5 waits for the breaker to close, by decision (pure).

    >>> recovery_wait_seconds(Decision(NO_INCIDENT, ""), 2, False)
    0.0
    >>> recovery_wait_seconds(Decision(PROTECTING, ""), 2, False)
    120.0
    """
    if dry_run or decision.name == NO_INCIDENT:
        return 0.0
    if decision.name == PROTECTING:
        return float(recovery_wait_minutes) * 60
    # After a failover or once the provider is back the breaker closes within
    # one reset period (60 s on production) plus a workload tick.
    return max(90.0, float(recovery_wait_minutes) * 60)


# --------------------------------------------------------------------------- the scenario


class LlmProviderDown(Scenario):
    """Runbook scenario 4, one method per step: assess, lock (if changing), failover, recover.

    Example (in a notebook)::

        s, llm = open_scenario("llm_provider_down")
        llm.assess(); llm.take_lock(); llm.failover(); llm.recover(); llm.no_new_failures()
        s.done()
    """

    def __init__(
        self,
        s: Session,
        *,
        failover_after_minutes: float | None = None,
        sample_seconds: float = 6.0,
        recovery_wait_minutes: float = 2.0,
    ):
        super().__init__(s)
        # None: the environment's target (30 min on production)
        self.threshold = float(
            s.profile.targets.failover_after_minutes
            if failover_after_minutes is None
            else failover_after_minutes
        )
        self.sample_seconds = float(sample_seconds)
        self.recovery_wait_minutes = float(recovery_wait_minutes)
        self.assessment: dict[str, Any] | None = None
        self.decision: Decision | None = None
        self.recovery: dict[str, Any] | None = None

    def assess(self) -> Decision:
        """Steps 1-3: confirm the provider, measure breaker and DLQs, decide."""
        with self.s.step("1-3. Confirm the provider, measure breaker and DLQs, decide"):
            a = assess(self.s, self.sample_seconds, self.threshold)
        self.assessment, self.decision = a, a["decision"]
        show(readable(a["providers"]))
        show(a["breakers"])
        show(a["depths"])
        print(
            f"LLM_PROVIDER_PRIORITY now: {','.join(a['priority'])}   "
            f"failover after: {self.threshold:g} min"
        )
        return a["decision"]

    # `take_lock()`: a step of its own before the first change, only when the decision
    # changes something
    lock_step, lock_once = "4. Take the host lock", True

    def no_lock_needed(self) -> str | None:
        assert self.decision is not None, "run assess() first"
        nothing = f"{self.decision.name}: nothing will change, no lock needed"
        return None if changes_server(self.decision) else nothing

    def change_summary(self) -> list[str]:
        """What this decision will change, for the confirmation question (after `assess`)."""
        s = self.s
        d = self.decision
        if d is None:
            return ["run assess() first: the decision says what changes"]
        drain = "drain the LLM dead-letter queues (admin API), in batches"
        if d.name == FAILOVER and d.new_order:
            before = ",".join((self.assessment or {}).get("priority") or []) or "?"
            return [
                f"LLM_PROVIDER_PRIORITY in .env: {before} -> {','.join(d.new_order)} "
                "(.env backed up first; the only .env edit allowed)",
                f"restart {s.services.unit('api')} ({s.profile.services.manager})",
                f"once the provider is back: {drain}",
            ]
        return [f"decision {d.name!r}: {drain}"]

    def failover(self) -> dict[str, Any] | None:
        """Step 4: LLM_PROVIDER_PRIORITY to the new order, restart the API (only on FAILOVER)."""
        assert self.decision is not None, "run assess() first"
        if self.decision.name != FAILOVER:
            print(f"no failover: {self.decision.name}")
            return None
        with self.s.step("4. Failover: LLM_PROVIDER_PRIORITY, restart the API"):
            assert self.decision.new_order is not None, "a failover decision names the new order"
            fo = failover(self.s, self.decision.new_order)
        d = fo["diff"]
        print(f"{d['key']}: {d['before']} → {d['after']}   (backup: {d['backup']})")
        print(ENV_EXAMPLE_REMINDER)
        return fo

    def recover(self) -> pd.DataFrame:
        """Step 5: breaker closed, drain OUTBOUND_DLQ and ENRICHMENT_DLQ."""
        assert self.decision is not None, "run assess() first"
        wait = recovery_wait_seconds(self.decision, self.recovery_wait_minutes, self.s.dry_run)
        with self.s.step("5. Recovery: breaker closed, drain OUTBOUND_DLQ and ENRICHMENT_DLQ"):
            self.recovery = recover(self.s, self.s.profile.targets.outbound_drain_limit, wait)
        print(f"before: {self.recovery['before']}\nafter:  {self.recovery['after']}")
        return self.recovery["batches"]

    def no_new_failures(self) -> pd.DataFrame | None:
        """Step 6: no new failed work after recovery (when the provider is back, not in a dry run)."""
        assert self.recovery is not None, "run recover() first"
        if self.recovery["llm"].get("status") != "green" or self.s.dry_run:
            return None
        with self.s.step("6. No new failed work after recovery"):
            after = no_new_failures(self.s, self.sample_seconds)
        return after["depths"]
