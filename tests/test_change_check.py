"""The change check (runbook.safety.change) on its own: no sandbox, no session.

A dry run refuses every change and records it as what would run; off the
sandbox a real change needs the operator's confirmation, typed or as the
`confirm` parameter naming this environment, once per run; the preview
records only in a dry run. tests/test_safety.py runs the same rules end to
end through a session against the sandbox.
"""

from __future__ import annotations

import json
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

from runbook.core.redact import Redactor
from runbook.errors import ConfirmationInterrupted, NotConfirmed, RunbookError, outcome_of
from runbook.evidence.writer import Evidence
from runbook.safety.change import ChangeCheck, ask_operator


class Operator:
    """Answers the confirmation prompt with `answer` (None: nobody to ask) and counts questions."""

    def __init__(self, answer: str | None):
        self.answer = answer
        self.prompts: list[str] = []

    def __call__(self, prompt: str) -> str | None:
        self.prompts.append(prompt)
        return self.answer


def make(
    tmp_path: Path,
    *,
    env: str = "staging",
    dry_run: bool = False,
    confirm: str | None = None,
    answer: str | None = None,
    redactor: Redactor | None = None,
) -> tuple[ChangeCheck, Operator, list[dict[str, Any]]]:
    suggested: list[dict[str, Any]] = []
    operator = Operator(answer)
    check = ChangeCheck(
        env,
        sandbox=env == "sandbox",
        host=f"{env}.example",
        dry_run=dry_run,
        confirm=confirm,
        evidence=Evidence(tmp_path, redactor or Redactor()),
        ask=operator,
        suggest=suggested.append,
    )
    return check, operator, suggested


def events(tmp_path: Path, kind: str | None = None) -> list[dict[str, Any]]:
    path = tmp_path / "commands.jsonl"
    lines = path.read_text().splitlines() if path.exists() else []
    found = [json.loads(line) for line in lines]
    return [e for e in found if kind is None or e["kind"] == kind]


def test_a_dry_run_refuses_the_change_and_records_it_as_would_run(tmp_path: Path) -> None:
    check, operator, _ = make(tmp_path, dry_run=True)
    assert check.allow("systemctl restart dealix-api", kind="command", step="4. Restart") is False
    assert [(c.kind, c.what, c.step, c.done) for c in check.would_change] == [
        ("command", "systemctl restart dealix-api", "4. Restart", False)
    ]
    [event] = events(tmp_path, "command")
    assert event["would_run"] == "systemctl restart dealix-api" and event["dry_run"] is True
    # a dry run asks nobody and confirms nothing, even off the sandbox
    assert operator.prompts == [] and check.confirmed is False


def test_a_real_change_headless_without_confirm_is_refused_with_the_parameter(
    tmp_path: Path,
) -> None:
    check, operator, suggested = make(tmp_path, answer=None)
    with pytest.raises(NotConfirmed) as caught:
        check.allow("systemctl restart dealix-api", kind="command", step=None)
    message = str(caught.value)
    assert "-p confirm staging" in message and "--confirm staging" in message
    assert "no one to ask: headless run" in message and "Nothing was changed" in message
    assert caught.value.details().get("environment") == "staging"
    assert suggested == [{"confirm": "staging"}]
    assert len(operator.prompts) == 1 and "STAGING (staging.example)" in operator.prompts[0]
    assert check.confirmed is False and events(tmp_path, "confirmation") == []
    assert check.would_change == []


def test_a_wrong_typed_answer_says_what_was_typed_and_that_rerunning_asks_again(
    tmp_path: Path,
) -> None:
    check, _, suggested = make(tmp_path, answer="yes")
    with pytest.raises(NotConfirmed) as caught:
        check.require_confirmation("write .env")
    message = str(caught.value)
    assert "You typed 'yes', not 'staging'" in message
    assert "nothing was changed" in message and "Re-run the cell to be asked again" in message
    # someone is at the notebook: no command-line `next:`, no papermill flag
    assert suggested == [] and "--confirm" not in message and "-p confirm" not in message
    assert check.confirmed is False
    assert events(tmp_path, "confirmation") == []  # a "confirmation" event means confirmed
    assert [e["why"] for e in events(tmp_path, "confirmation-refused")] == ["wrong answer"]


class Interrupting:
    """An operator who presses Interrupt (the kernel's KeyboardInterrupt) at the question."""

    def __init__(self) -> None:
        self.prompts: list[str] = []

    def __call__(self, prompt: str) -> str | None:
        self.prompts.append(prompt)
        raise KeyboardInterrupt


def test_an_interrupt_at_the_question_says_one_plain_line_and_changes_nothing(
    tmp_path: Path, capsys
) -> None:
    operator = Interrupting()
    suggested: list[dict[str, Any]] = []
    check = ChangeCheck(
        "staging",
        sandbox=False,
        host="staging.example",
        dry_run=False,
        confirm=None,
        evidence=Evidence(tmp_path, Redactor()),
        ask=operator,
        suggest=suggested.append,
    )
    with pytest.raises(ConfirmationInterrupted) as caught:
        check.allow("systemctl restart dealix-api", kind="command", step=None)
    # a RunbookError: the kernel's hook shows it as one line, not ipykernel's raw_input frames
    assert isinstance(caught.value, RunbookError) and caught.value.__cause__ is None
    assert outcome_of(caught.value) == "interrupted"
    out = capsys.readouterr().out.strip().splitlines()
    assert out == [
        "Interrupted at the question: nothing was confirmed and nothing was changed on staging. "
        "A box left above is not read; re-run the cell to be asked again."
    ]
    assert check.confirmed is False and suggested == [] and len(operator.prompts) == 1
    assert events(tmp_path, "confirmation") == []
    assert [e["why"] for e in events(tmp_path, "confirmation-refused")] == ["interrupted"]
    # the next cell asks again: an interrupt confirmed nothing
    check.ask = Operator("staging")
    assert check.allow("systemctl restart dealix-api", kind="command", step=None) is True


def test_the_question_names_the_scenario_and_what_will_change_not_the_command(
    tmp_path: Path,
) -> None:
    operator = Operator("staging")
    check = ChangeCheck(
        "staging",
        sandbox=False,
        host="staging.example",
        dry_run=False,
        confirm=None,
        evidence=Evidence(tmp_path, Redactor()),
        ask=operator,
        scenario="deploy",
        summarize=lambda: ["deploy 1a2b3c4 -> 5d6e7f8 (origin/main)", "restart dealix-api"],
    )
    lock = "mkdir -p /var/lock && mkdir /var/lock/dealix-runbook.lock"
    assert check.allow(lock, kind="command", step=None) is True
    [prompt] = operator.prompts
    assert prompt == (
        "deploy is about to change STAGING (staging.example):\n"
        "  - deploy 1a2b3c4 -> 5d6e7f8 (origin/main)\n"
        "  - restart dealix-api\n"
        "Type the environment name (staging) to confirm: "
    )
    assert "mkdir" not in prompt
    [asked] = events(tmp_path, "confirmation-question")
    assert asked["summary"] == ["deploy 1a2b3c4 -> 5d6e7f8 (origin/main)", "restart dealix-api"]
    [confirmed] = events(tmp_path, "confirmation")
    assert confirmed["how"] == "typed" and confirmed["summary"] == asked["summary"]


def test_headless_the_parameter_confirms_the_same_summary_and_a_summary_error_is_said(
    tmp_path: Path, capsys
) -> None:
    def broken() -> list[str]:
        raise OSError("git not found")

    check = ChangeCheck(
        "staging",
        sandbox=False,
        host="staging.example",
        dry_run=False,
        confirm="staging",
        evidence=Evidence(tmp_path, Redactor()),
        ask=Operator(None),
        scenario="deploy",
        summarize=broken,
    )
    assert check.allow("systemctl restart dealix-api", kind="command", step=None) is True
    [confirmed] = events(tmp_path, "confirmation")
    assert confirmed["how"] == "parameter"
    assert confirmed["summary"] == ["(could not read what will change: OSError: git not found)"]
    assert "confirmed by confirm='staging':" in capsys.readouterr().out


def test_the_environment_typed_confirms_once_per_run(tmp_path: Path) -> None:
    check, operator, suggested = make(tmp_path, answer=" staging\n")
    assert check.allow("write .env", kind="file", step=None) is True
    assert check.allow("systemctl restart dealix-api", kind="command", step=None) is True
    assert len(operator.prompts) == 1 and suggested == []
    assert [e["how"] for e in events(tmp_path, "confirmation")] == ["typed"]


def test_the_confirm_parameter_naming_this_environment_confirms(tmp_path: Path) -> None:
    check, operator, _ = make(tmp_path, confirm="staging")
    assert check.allow("systemctl restart dealix-api", kind="command", step=None) is True
    check.require_confirmation()
    assert operator.prompts == []  # the parameter answers: nobody is asked
    confirmations = events(tmp_path, "confirmation")
    assert [(e["environment"], e["how"]) for e in confirmations] == [("staging", "parameter")]


def test_a_confirmation_for_another_environment_never_counts(tmp_path: Path) -> None:
    # not even when the operator would type the right name: the parameter is what was meant
    check, operator, suggested = make(tmp_path, confirm="production", answer="staging")
    with pytest.raises(NotConfirmed, match="confirm='production' does not match"):
        check.allow("systemctl restart dealix-api", kind="command", step=None)
    assert operator.prompts == [] and suggested == [{"confirm": "staging"}]
    assert check.confirmed is False


def test_the_sandbox_needs_no_confirmation(tmp_path: Path) -> None:
    check, operator, _ = make(tmp_path, env="sandbox", answer=None)
    assert check.allow("systemctl restart dealix-api", kind="command", step=None) is True
    assert operator.prompts == [] and events(tmp_path) == []


def test_the_preview_records_only_in_a_dry_run_and_is_redacted(tmp_path: Path) -> None:
    redactor = Redactor()
    redactor.register("DEALIX_ADMIN_KEY", "adm-0123456789abcdef")
    real, _, _ = make(tmp_path / "real", redactor=redactor)
    assert real.preview_section(".env keys", ["A"], step=None) == [] and real.preview == {}
    dry, _, _ = make(tmp_path / "dry", dry_run=True, redactor=redactor)
    lines = dry.preview_section("commits", ["abc123 key adm-0123456789abcdef"], step="2. Pull")
    assert lines == dry.preview["commits"] and "adm-0123456789abcdef" not in lines[0]
    assert dry.preview_section("services to restart", [], step=None) == ["none"]
    [first, _] = events(tmp_path / "dry", "preview")
    assert first["section"] == "commits" and first["step"] == "2. Pull"


@pytest.mark.parametrize(
    ("reader", "expected"),
    [
        (lambda prompt: "staging", "staging"),
        (lambda prompt: (_ for _ in ()).throw(EOFError()), None),
    ],
)
def test_ask_operator_reads_input_and_gives_none_when_nobody_answers(
    monkeypatch: pytest.MonkeyPatch, reader: Callable[[str], str], expected: str | None
) -> None:
    monkeypatch.setattr("builtins.input", reader)
    assert ask_operator("confirm: ") == expected
    assert ask_operator("confirm: ", interactive=False) is None
