"""Faults of scenario 4, LLM provider down (notebooks/llm_provider_down.ipynb).

- `llm-down:PROVIDER`: one provider's API fails and its status page shows an incident.
- `llm-recover:PROVIDER`: the provider answers again (the end of `llm-down`).
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from runbook.sandbox.faults._registry import Fault, register

if TYPE_CHECKING:
    from runbook.sandbox.manager import Sandbox


def _llm_down(sb: Sandbox, provider: str | None) -> None:
    sb.stub_control(f"/_stub/llm/{provider}", {"down": True})


def _llm_up(sb: Sandbox, provider: str | None) -> None:
    sb.stub_control(f"/_stub/llm/{provider}", {"down": False})


register(
    Fault(
        "llm-down",
        "Make one LLM provider's API fail (stub answers 5xx; its status page shows an incident): "
        "the API's breaker for it opens after BREAKER_FAILURE_THRESHOLD failures. "
        "Heal: the provider answers again (the breaker closes on its next half-open success).",
        _llm_down,
        _llm_up,
        param="PROVIDER",
        choices=("anthropic", "openai", "google"),
    )
)
register(
    Fault(
        "llm-recover",
        "The provider answers again and its status page is operational (ends llm-down); "
        "the breaker closes on its next half-open success. Heal: nothing to undo.",
        _llm_up,
        lambda sb, p: None,
        param="PROVIDER",
        choices=("anthropic", "openai", "google"),
    )
)
