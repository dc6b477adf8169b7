"""The change check: may a changing call go ahead now, and what a dry run would change.

Three rules, applied to every changing call (commands, file writes, HTTP
calls that write) before it goes out:

- A dry run changes nothing: the change is recorded as what would run
  (`would_change` in record.json) and the call is skipped.
- Off the sandbox the operator confirms, once per run: by typing the
  environment's name when someone can answer, or headless with the parameter
  `confirm="<environment>"` (papermill `-p confirm staging`, `runbook run
  --confirm staging`). A confirmation for another environment never counts.
  Refused, nothing is changed and the run is told the parameter to set.
- A dry run also previews what its steps would change, by section
  ("commits", ".env keys"), for record.json's `preview`.

The session owns one `ChangeCheck` and delegates `allow_change`,
`require_confirmation` and `preview_change` to it; the secrets check and the
host lock that come before the first real change stay with the session.

Example::

    >>> from pathlib import Path
    >>> from tempfile import mkdtemp
    >>> from runbook.evidence.writer import Evidence
    >>> from runbook.core.redact import Redactor
    >>> check = ChangeCheck(
    ...     "staging", sandbox=False, host="staging.example", dry_run=False,
    ...     confirm="staging", evidence=Evidence(Path(mkdtemp()), Redactor()),
    ... )
    >>> check.allow("systemctl restart dealix-api", kind="command", step=None)
    confirmed by confirm='staging':
      - systemctl restart dealix-api
    True
    >>> check.confirmed
    True
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from functools import partial
from typing import Any

from runbook.errors import ConfirmationInterrupted, NotConfirmed, Refusal
from runbook.evidence.record import Change
from runbook.evidence.writer import Evidence

Ask = Callable[[str], "str | None"]


def ask_operator(prompt: str, interactive: bool | None = None) -> str | None:
    """Ask the operator; None when nobody can answer (papermill, cron)."""
    if interactive is False:
        return None
    try:
        return input(prompt)
    except (EOFError, OSError):
        return None
    except Exception as exc:  # ipykernel's StdinNotImplementedError under papermill
        if type(exc).__name__ == "StdinNotImplementedError":
            return None
        raise


class ChangeCheck:
    """One run's change check: dry run, confirmation, preview (see the module docstring).

    `ask` puts the confirmation question to the operator (default: `input`,
    unless `interactive` is False); `summarize` lists what the run is about to
    change, shown in the question (the session sets it to the scenario's
    `change_summary`); `suggest` is told the parameters to add
    when a change is refused for want of confirmation (the session turns them
    into the run's next command).
    """

    def __init__(
        self,
        env: str,
        *,
        sandbox: bool,
        host: str,
        dry_run: bool,
        confirm: str | None,
        evidence: Evidence,
        interactive: bool | None = None,
        ask: Ask | None = None,
        suggest: Callable[[dict[str, Any]], object] = lambda add: None,
        scenario: str = "",
        summarize: Callable[[], Sequence[str]] | None = None,
    ):
        self.env = env
        self.scenario = scenario
        # what the run is about to change, for the question (the scenario's change_summary)
        self.summarize = summarize
        self.sandbox = sandbox
        self.host = host
        self.dry_run = dry_run
        self.confirm_parameter = confirm
        self.evidence = evidence
        self.ask: Ask = ask or partial(ask_operator, interactive=interactive)
        self.suggest = suggest
        self.confirmed = False
        self.would_change: list[Change] = []
        # dry run: what would change, by section (commits, migrations, .env keys, services)
        self.preview: dict[str, list[str]] = {}

    def allow(self, what: str, *, kind: str, step: str | None) -> bool:
        """True if the change may go ahead; False in a dry run (recorded as would-run).

        Raises `NotConfirmed` off the sandbox until the operator has confirmed.
        """
        if self.dry_run:
            self.would_change.append(Change(kind, what, step, done=False))
            self.evidence.append({"kind": kind, "step": step, "would_run": what, "dry_run": True})
            print(f"[dry run] would run: {what}")
            return False
        self.require_confirmation(what)
        return True

    def require_confirmation(self, what: str = "a change") -> None:
        """Fail closed unless the operator confirmed changes on this environment.

        The question names the scenario, the environment and what the run is
        about to change (`summarize`, the scenario's `change_summary()`);
        `what`, the first change itself, is shown only when the run has no summary.
        """
        if self.sandbox or self.confirmed:
            return
        if self.confirm_parameter is not None:
            if self.confirm_parameter == self.env:
                self._confirm("parameter", self._summary(what))
                return
            raise self._refused(
                f"confirm={self.confirm_parameter!r} does not match the environment "
                f"{self.env!r}: a confirmation for one environment never counts for another. "
                "Nothing was changed."
            )
        summary = self._summary(what)
        question = self.question(summary)
        self.evidence.append(
            {"kind": "confirmation-question", "environment": self.env, "summary": summary}
        )
        try:
            answer = self.ask(question)
        except KeyboardInterrupt:
            # not a "confirmation" event: those mean confirmed
            self.evidence.append(
                {"kind": "confirmation-refused", "environment": self.env, "why": "interrupted"}
            )
            # one plain line; the error below is ours, so the kernel shows one line of it
            # too, not ipykernel's raw_input frames
            print(
                f"Interrupted at the question: nothing was confirmed and nothing was changed "
                f"on {self.env}. A box left above is not read; re-run the cell to be asked again."
            )
            raise ConfirmationInterrupted(
                f"interrupted at the confirmation question: nothing changed on {self.env!r}",
                environment=self.env,
            ) from None
        if answer is not None and answer.strip() == self.env:
            self._confirm("typed", summary)
            return
        if answer is not None:
            # someone typed: they are in front of the notebook, so the way on is the cell
            self.evidence.append(
                {"kind": "confirmation-refused", "environment": self.env, "why": "wrong answer"}
            )
            raise NotConfirmed(
                f"You typed {self.evidence.redactor.redact(answer.strip())!r}, not "
                f"{self.env!r}: nothing was confirmed and nothing was changed. "
                "Re-run the cell to be asked again.",
                environment=self.env,
            )
        raise self._refused(
            f"changes on {self.env!r} need confirmation and none was given "
            "(no one to ask: headless run). "
            f"Nothing was changed. Headless, add:  -p confirm {self.env}  (papermill) or "
            f"--confirm {self.env}  (runbook run)."
        )

    def question(self, summary: Sequence[str]) -> str:
        """The confirmation question: scenario, environment, what will change, one per line.

        >>> from pathlib import Path
        >>> from tempfile import mkdtemp
        >>> from runbook.evidence.writer import Evidence
        >>> from runbook.core.redact import Redactor
        >>> c = ChangeCheck("staging", sandbox=False, host="h", dry_run=False, confirm=None,
        ...     evidence=Evidence(Path(mkdtemp()), Redactor()), scenario="deploy")
        >>> print(c.question(["checkout 1a2b3c4 -> 5d6e7f8"]), end="")
        deploy is about to change STAGING (h):
          - checkout 1a2b3c4 -> 5d6e7f8
        Type the environment name (staging) to confirm:
        """
        who = f"{self.scenario} is about to change" if self.scenario else "About to change"
        lines = "".join(f"  - {line}\n" for line in summary)
        return (
            f"{who} {self.env.upper()} ({self.host}):\n{lines}"
            f"Type the environment name ({self.env}) to confirm: "
        )

    def _summary(self, what: str) -> list[str]:
        """What the run is about to change (the scenario's summary), redacted; else `what`."""
        lines: list[str] = []
        if self.summarize is not None:
            try:
                lines = [str(x) for x in self.summarize()]
            except Refusal:
                raise  # a refused host key, a rule: the run stops, nothing is asked
            except Exception as exc:
                lines = [f"(could not read what will change: {type(exc).__name__}: {exc})"]
        if not lines:
            lines = [what]
        return [self.evidence.redactor.redact(x) for x in lines]

    def _confirm(self, how: str, summary: Sequence[str] = ()) -> None:
        self.confirmed = True
        self.evidence.append(
            {"kind": "confirmation", "environment": self.env, "how": how, "summary": list(summary)}
        )
        if how == "parameter":
            # headless: the log says what the parameter confirmed
            print(f"confirmed by confirm={self.env!r}:")
            for line in summary:
                print(f"  - {line}")

    def _refused(self, message: str) -> NotConfirmed:
        # the run's next command is this one with `confirm` set, whatever went wrong
        self.suggest({"confirm": self.env})
        return NotConfirmed(message, environment=self.env)

    def preview_section(self, section: str, items: Sequence[str], *, step: str | None) -> list[str]:
        """Dry run: record one section of what a step would change; [] outside a dry run.

        Items are redacted one by one (the evidence's redactor); no items shows "none".
        """
        if not self.dry_run:
            return []
        lines = [self.evidence.redactor.redact(str(i)) for i in items] or ["none"]
        self.preview[section] = lines
        self.evidence.append({"kind": "preview", "step": step, "section": section, "items": lines})
        print(f"[dry run] would change: {section}")
        for line in lines:
            print(f"    {line}")
        return lines
