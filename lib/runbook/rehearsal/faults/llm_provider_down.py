"""Faults of scenario 4, LLM provider down (notebooks/llm_provider_down.ipynb).

- `llm-down:PROVIDER`: one provider's API fails and its status page shows an incident.
- `llm-recover:PROVIDER`: the provider answers again (the end of `llm-down`).

A provider is a SaaS: on both targets, the stubs behind it (the twin's behind its
"internet" container) are switched through their control endpoint.
"""

from __future__ import annotations

from runbook.rehearsal.faults.registry import Fault, nothing, register
from runbook.rehearsal.target import Target

PROVIDERS = ("anthropic", "openai", "google")


def _llm_down(t: Target, provider: str | None) -> str:
    t.stub_control(f"/_stub/llm/{provider}", {"down": True})
    return f"{provider} down"


def _llm_up(t: Target, provider: str | None) -> str:
    t.stub_control(f"/_stub/llm/{provider}", {"down": False})
    return f"{provider} answers again"


register(
    Fault(
        "llm-down",
        "Make one LLM provider's API fail (5xx; its status page shows an incident): "
        "the API's breaker for it opens after BREAKER_FAILURE_THRESHOLD failures. "
        "Heal: the provider answers again (the breaker closes on its next half-open success).",
        _llm_down,
        _llm_up,
        param="PROVIDER",
        choices=PROVIDERS,
    )
)
register(
    Fault(
        "llm-recover",
        "The provider answers again and its status page is operational (ends llm-down); "
        "the breaker closes on its next half-open success. Heal: nothing to undo.",
        _llm_up,
        nothing,
        param="PROVIDER",
        choices=PROVIDERS,
    )
)
