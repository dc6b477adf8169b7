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
from typing import TYPE_CHECKING, Any, ClassVar

from runbook.clock import parse_time
from runbook.core.output import Progress
from runbook.evidence.story import Summary
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

    def __repr__(self) -> str:
        # one line where no markdown is shown (the saved notebook's text, a terminal):
        # the dataclass repr showed minutes_down=0.21902058333333332 and extra={}
        order = f"; new LLM_PROVIDER_PRIORITY {','.join(self.new_order)}" if self.new_order else ""
        return f"decision: {self.name}: {self.reason}{order}"


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


def provider_request(provider: str, key: str) -> tuple[str, dict[str, str], Any, dict[str, Any]]:
    """The minimal request (path, headers, query, body) that asks `provider` for one token (pure).

    >>> provider_request("openai", "sk-x")[0]
    '/v1/chat/completions'
    """
    prompt = [{"role": "user", "content": "ping"}]
    if provider == "anthropic":
        headers = {"x-api-key": key, "anthropic-version": "2023-06-01"}
        return (
            "/v1/messages",
            headers,
            None,
            {
                "model": MODELS[provider],
                "max_tokens": 1,
                "messages": prompt,
            },
        )
    if provider == "openai":
        headers = {"Authorization": f"Bearer {key}"}
        return (
            "/v1/chat/completions",
            headers,
            None,
            {
                "model": MODELS[provider],
                "max_tokens": 1,
                "messages": prompt,
            },
        )
    return (
        f"/v1beta/models/{MODELS[provider]}:generateContent",
        {},
        {"key": key},
        {
            "contents": [{"role": "user", "parts": [{"text": "ping"}]}],
            "generationConfig": {"maxOutputTokens": 1},
        },
    )


def merge_confirmation(pages: pd.DataFrame, calls: pd.DataFrame) -> pd.DataFrame:
    """Status pages and direct calls side by side, one row per provider, in words (pure)."""
    table = pages.merge(calls, on="provider", how="left")
    table["what it means"] = [
        meaning(d, a) for d, a in zip(table["down"], table["answers"], strict=True)
    ]
    table["down"] = [
        bool(d) or a is False for d, a in zip(table["down"], table["answers"], strict=True)
    ]
    return table


def priority_from_env(text: str) -> list[str]:
    """LLM_PROVIDER_PRIORITY from a .env's text (only that line is read; pure).

    >>> priority_from_env('A=1\\nLLM_PROVIDER_PRIORITY="openai,google"\\n')
    ['openai', 'google']
    >>> priority_from_env("") == list(PROVIDERS)
    True
    """
    m = re.search(r"^\s*(?:export\s+)?LLM_PROVIDER_PRIORITY\s*=\s*['\"]?([^'\"\n]*)", text, re.M)
    order = [p.strip() for p in (m.group(1) if m else "").split(",") if p.strip()]
    return order or list(PROVIDERS)


def growth(first: dict[str, Any], second: dict[str, Any], seconds: float) -> dict[str, Any]:
    """Two DLQ stats readings `seconds` apart as depths, breakers and the LLM DLQs' growth (pure).

    >>> g = growth({"queues": {"OUTBOUND_DLQ": 2}}, {"queues": {"OUTBOUND_DLQ": 4},
    ...            "breakers": {"anthropic": {"state": "open"}}, "primary": "anthropic"}, 60)
    >>> g["growth_per_min"], g["dlq_depth"], g["breakers"].iloc[0]["state"]
    (2.0, 4, 'open')
    """
    import pandas as pd

    dt = max(seconds, 1e-6)
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


def decision_inputs(
    providers: pd.DataFrame, measured: dict[str, Any], priority: list[str]
) -> dict[str, Any]:
    """What `decide` needs, read from the confirmation table and the DLQ sample (pure).

    A primary that is down with no incident on its status page yet is dated by
    its breaker's opening: the best we know.
    """
    snap = measured["breakers"]
    breakers = (
        {str(r["provider"]): str(r["state"]) for _, r in snap.iterrows()} if len(snap) else {}
    )
    down = {str(r["provider"]): bool(r["down"]) for _, r in providers.iterrows()}
    since: dict[str, datetime | None] = {}
    for _, r in providers.iterrows():
        ts = r["since"]
        since[str(r["provider"])] = ts.to_pydatetime() if hasattr(ts, "to_pydatetime") else ts
    primary = priority[0]
    if down.get(primary) and since.get(primary) is None:
        row = snap[snap["provider"] == primary] if len(snap) else snap
        if len(row):
            since[primary] = parse_time(row.iloc[0].get("opened_at"))
    return {
        "priority": priority,
        "down": down,
        "down_since": since,
        "breakers": breakers,
        "growth_per_min": measured["growth_per_min"],
        "dlq_depth": measured["dlq_depth"],
    }


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


ENV_EXAMPLE_REMINDER = (
    "Reminder: .env on the server now differs from the repository. Put the same "
    "LLM_PROVIDER_PRIORITY into .env.example through a PR (no secrets) on the next business "
    "day, and switch back the same way once the provider has been healthy for a while."
)


# --------------------------------------------------------------------------- the scenario

ASSESS_STEP = "1-3. Confirm the provider, measure breaker and DLQs, decide"
FAILOVER_STEP = "4. Failover: LLM_PROVIDER_PRIORITY, restart the API"
RECOVERY_STEP = "5. Recovery: breaker closed, drain OUTBOUND_DLQ and ENRICHMENT_DLQ"
VERIFY_STEP = "6. No new failed work after recovery"
#: the decision that names the order a failover wrote (a resume's postcondition reads it)
ORDER_DECISION = "Failover order"


class LlmProviderDown(Scenario):
    """Runbook scenario 4, one method per step: assess, lock (if changing), failover, recover.

    Example (in a notebook)::

        s, llm = open_scenario("llm_provider_down")
        llm.assess(); llm.take_lock(); llm.failover(); llm.recover(); llm.no_new_failures()
        s.done()
    """

    # a resume (runbook.evidence.resume): the failover edits .env (a backup of the edited file
    # would pass for the original) and restarts the API; the recovery replays the DLQs' jobs
    # (outbound messages and enrichments, sent again if replayed twice). Neither runs twice.
    # The assessment is read-only and sets the decision: it runs again, and measures the
    # server as the parent left it. A failed failover or recovery first checks whether its
    # effect is there (the order in .env and served; the LLM DLQs empty, the breaker closed).
    resume_once = (FAILOVER_STEP, RECOVERY_STEP)
    resume_reruns = (ASSESS_STEP,)
    resume_postconditions: ClassVar[dict[str, str]] = {
        FAILOVER_STEP: "_failed_over_already",
        RECOVERY_STEP: "_drained_already",
    }
    # nothing the completed steps did depends on the app's HEAD or the database's revision
    resume_relies_on = ()
    resumable = True

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

    # ------------------------------------------------------------------ steps 1-3

    def assess(self) -> Decision:
        """Steps 1-3: confirm the provider, measure breaker and DLQs, decide (recorded)."""
        s = self.s
        with s.step(ASSESS_STEP):
            providers = self.confirm_provider()
            measured = self._sample(self.sample_seconds)
            priority = self._current_priority()
            decision = decide(
                **decision_inputs(providers, measured, priority),
                now=datetime.now(UTC),
                failover_after_minutes=self.threshold,
            )
            s.decide("Decision", decision.name, decision.reason)
        self.assessment = {
            "providers": providers,
            "priority": priority,
            "decision": decision,
            **measured,
        }
        self.decision = decision
        show(readable(providers))
        print("circuit breakers, as the API sees them:")
        show(measured["breakers"])
        print(f"dead-letter queues, read twice {measured['interval']:.0f} s apart:")
        show(measured["depths"])
        print(
            f"LLM_PROVIDER_PRIORITY now: {','.join(priority)}   "
            f"failover after: {self.threshold:g} min"
        )
        return decision

    def status_pages(self) -> pd.DataFrame:
        """Every provider's status page (read-only), each in its own format."""
        import pandas as pd

        s = self.s
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

    def direct_call(self, provider: str) -> dict[str, Any]:
        """A minimal request straight to the provider's API with its key (the key is masked)."""
        s = self.s
        base = s.profile.llm.api_urls.get(provider)
        key = s.secrets.get(getattr(s.profile.secrets, f"{provider}_key"), required=False)
        if not base or not key:
            return {
                "provider": provider,
                "direct call": "not available (no URL or key)",
                "answers": None,
            }
        path, headers, params, body = provider_request(provider, key)
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
        return {
            "provider": provider,
            "direct call": f"HTTP {r.status}" + ("" if r.ok else f": {r.text[:120]}"),
            "answers": r.ok,
            "latency_ms": round(r.duration * 1000),
        }

    def confirm_provider(self) -> pd.DataFrame:
        """Status pages and direct calls side by side: one row per provider."""
        import pandas as pd

        calls = pd.DataFrame([self.direct_call(p) for p in PROVIDERS])
        return merge_confirmation(self.status_pages(), calls)

    def _sample(self, interval: float) -> dict[str, Any]:
        """Breaker states and DLQ depths read twice, `interval` seconds apart."""
        first = self.s.api.dlq_stats()
        t0 = time.monotonic()
        if interval >= 3:
            # a silent cell for `interval` seconds looks hung: say what it waits for
            Progress("breakers and DLQs").say(
                f"read once, reading again in {interval:.0f} s to measure growth", final=True
            )
        time.sleep(interval)
        second = self.s.api.dlq_stats()
        return growth(first, second, time.monotonic() - t0)

    def _current_priority(self) -> list[str]:
        """LLM_PROVIDER_PRIORITY from the server's .env (only that line is kept)."""
        text = self.s.read_file(self.s.profile.app.env_file).decode(errors="replace")
        return priority_from_env(text)

    # ------------------------------------------------------------------ step 4

    # `take_lock()`: a step of its own before the first change, only when the decision
    # changes something
    lock_step, lock_once = "4. Take the host lock", True

    def no_lock_needed(self) -> str | None:
        assert self.decision is not None, "run assess() first"
        if self._order() is not None or changes_server(self.decision):
            return None
        return f"{self.decision.name}: nothing will change, no lock needed"

    def change_summary(self) -> list[str]:
        """What this decision will change, for the confirmation question (after `assess`)."""
        s = self.s
        d = self.decision
        if d is None:
            return ["run assess() first: the decision says what changes"]
        drain = "drain the LLM dead-letter queues (admin API), in batches"
        order = self._order()
        if order:
            before = ",".join((self.assessment or {}).get("priority") or []) or "?"
            return [
                f"LLM_PROVIDER_PRIORITY in .env: {before} -> {','.join(order)} "
                "(.env backed up first; the only .env edit allowed)",
                f"restart {s.services.unit('api')} ({s.profile.services.manager})",
                f"once the provider is back: {drain}",
            ]
        return [f"decision {d.name!r}: {drain}"]

    def _order(self) -> list[str] | None:
        """The order a failover writes: this run's decision's, or, resuming a failover that
        failed before its effect was there, the parent's (this run's assessment reads the
        half-done state)."""
        assert self.decision is not None, "run assess() first"
        if self.decision.name == FAILOVER:
            return self.decision.new_order
        plan = self.s.resume
        if plan is not None and plan.failed_step == FAILOVER_STEP:
            choice = ((plan.record.get("decisions") or {}).get(ORDER_DECISION) or {}).get("choice")
            return str(choice).split(",") if choice else None
        return None

    def failover(self) -> Summary | None:
        """Step 4: LLM_PROVIDER_PRIORITY to the new order, restart the API (only on FAILOVER)."""
        s = self.s
        order = self._order()
        if order is None:
            assert self.decision is not None
            print(f"no failover: {self.decision.name}")
            return None
        with s.step(FAILOVER_STEP):
            s.decide(ORDER_DECISION, ",".join(order), "LLM_PROVIDER_PRIORITY the failover writes")
            diff = s.edit_env_var("LLM_PROVIDER_PRIORITY", ",".join(order))
            r = s.services.restart("api")
            if r.dry_run:
                # provider names, not secrets: the one .env key scenario 4 may change
                s.preview_change(
                    ".env keys", [f"{diff['key']}: {diff['before']} -> {diff['after']}"]
                )
                s.preview_change(
                    "services to restart",
                    [f"{s.services.unit('api')} ({s.profile.services.manager} restart)"],
                )
                fo: dict[str, Any] = {"diff": diff, "restarted": False}
            else:
                primary = self._wait_primary(order[0], 60)
                s.check(
                    "API serves from the new primary",
                    expected=order[0],
                    actual=primary,
                    passed=primary == order[0],
                    note=f"LLM_PROVIDER_PRIORITY={','.join(order)}",
                )
                fo = {"diff": diff, "restarted": True, "primary": primary}
        print(ENV_EXAMPLE_REMINDER)
        was = str(diff["before"]).strip("'\"")  # the .env value as written, maybe quoted
        change = f"{diff['key']} {was} → {diff['after']} (backup: {diff['backup']})"
        if not fo["restarted"]:
            return Summary(f"failover (dry run, nothing changed): would set {change}", **fo)
        return Summary(f"failover: {change}; the API serves from {fo['primary']}", **fo)

    def _wait_primary(self, wanted: str, seconds: float) -> str | None:
        """The primary the API serves from, polled until it is `wanted` or `seconds` pass."""
        deadline = time.monotonic() + seconds
        primary = None
        while time.monotonic() < deadline:
            primary = None
            with self.s.attempt():
                primary = self.s.api.dlq_stats().get("primary")
            if primary == wanted:
                break
            time.sleep(1)
        return primary

    def _failed_over_already(self) -> tuple[bool, str]:
        """Step 4's postcondition: .env holds the parent's order and the API serves from it."""
        plan = self.s.resume
        assert plan is not None
        wanted = ((plan.record.get("decisions") or {}).get(ORDER_DECISION) or {}).get("choice")
        now = ",".join(self._current_priority())
        primary = None
        with self.s.attempt():
            primary = self.s.api.dlq_stats().get("primary")
        held = bool(wanted) and now == wanted and primary == str(wanted).split(",")[0]
        return (
            held,
            f".env LLM_PROVIDER_PRIORITY={now} (failover wrote: {wanted}), API serves {primary}",
        )

    # ------------------------------------------------------------------ step 5

    def recover(self) -> Summary:
        """Step 5: breaker closed, drain OUTBOUND_DLQ and ENRICHMENT_DLQ to zero."""
        import pandas as pd

        assert self.decision is not None, "run assess() first"
        s = self.s
        limit = s.profile.targets.outbound_drain_limit
        wait = recovery_wait_seconds(self.decision, self.recovery_wait_minutes, s.dry_run)
        with s.step(RECOVERY_STEP):
            # The breaker is closed when deep health says llm_providers green.
            llm = s.api.wait_green("llm_providers", wait, interval=2.0).get("llm_providers") or {}
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
        self.recovery = {"llm": llm, "before": before, "after": after, "batches": table}
        queues = ", ".join(f"{q} {before.get(q)} → {after.get(q)}" for q in LLM_QUEUES.values())
        drained = f", drained in {len(table)} batch(es)" if len(table) else ""
        return Summary(
            f"recovery: llm_providers {llm.get('status')}; {queues}{drained}", **self.recovery
        )

    def _drained_already(self) -> tuple[bool, str]:
        """Step 5's postcondition: the breaker closed and both LLM DLQs empty."""
        llm = self.s.api.deep_health().get("llm_providers") or {}
        depths = self.s.api.dlq_depths()
        left = {q: depths.get(q) for q in LLM_QUEUES.values()}
        held = llm.get("status") == "green" and not any(left.values())
        return held, f"llm_providers {llm.get('status')}, LLM DLQs {left}"

    # ------------------------------------------------------------------ step 6

    def no_new_failures(self) -> Summary | None:
        """Step 6: no new failed work after recovery (the provider back, not in a dry run).

        The runbook's "no workflow failures", measured on the queues that record
        them: the LLM DLQs must not grow.
        """
        s = self.s
        if self.recovery is not None:
            llm = self.recovery["llm"]
        else:
            # a resume that skipped the recovery (done in the parent): ask deep health
            assert self.decision is not None, "run assess() first"
            llm = s.api.deep_health().get("llm_providers") or {}
        if llm.get("status") != "green" or s.dry_run:
            why = "dry run" if s.dry_run else f"llm_providers {llm.get('status')}"
            print(f"skipped: {why}, no new failures to measure")
            return None
        with s.step(VERIFY_STEP):
            measured = self._sample(self.sample_seconds)
            rate = measured["growth_per_min"]
            s.check(
                "No new failed LLM work",
                expected="LLM DLQs not growing",
                actual=f"{rate:+.1f} jobs/min over {measured['interval']:.0f} s",
                passed=rate <= 0,
            )
        depths = ", ".join(
            f"{r['queue']} {r['second']}" for r in measured["depths"].to_dict("records")
        )
        return Summary(
            f"no new failures: LLM DLQs {rate:+.1f} jobs/min over "
            f"{measured['interval']:.0f} s ({depths})",
            **measured,
        )
