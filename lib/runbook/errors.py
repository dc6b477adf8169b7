"""One exception tree for everything the runbook library refuses or fails at.

Every error carries its evidence (the `Result`, the checks, the HTTP
response, the rule), and every message has already passed through the
session's redactor, so it is safe to show in a notebook or a record::

    RunbookError
    ├── Refusal (marker)                   a security refusal: fatal to the whole run
    ├── ParameterError (also ValueError)   bad parameter, profile or secret; nothing ran
    ├── ConnectionFailed                   cannot reach or log in to the target
    │   ├── HostKeyUnknown (Refusal)       the target's key is not pinned
    │   └── HostKeyMismatch (Refusal)      the target's key differs from the pinned one
    ├── CommandError                       a command ran and did not end well
    │   ├── CommandFailed                  non-zero exit (or killed by a signal)
    │   ├── CommandTimedOut                stopped after its timeout; the remote process was killed
    │   └── CommandInterrupted             the connection died while it ran; it is NOT re-run
    ├── HTTPFailed                         an HTTP call failed or answered with an error status
    ├── RestoreFailed                      a restore did not complete (says what is left, how to go back)
    ├── NotConfirmed (Refusal)             a changing call without the operator's confirmation
    ├── Forbidden (Refusal)                a runbook rule refused the action (names the rule)
    ├── Tripped (Refusal)                  a protected object changed after a command (tripwire)
    └── DefinitionOfDoneNotMet             `session.done()` found failed checks

A `Refusal` is never turned into a red check or a "not available" value: the
scenarios and ops catch errors only through `runbook.safety.attempt`
(`s.attempt(...)`), which lets every refusal through (elsewhere a function
that catches errors says `except Refusal: raise` first), so the run ends with
outcome "refused" (exit 4). A host-key refusal
also latches the session: every later command, SQL query, file access and HTTP
call raises it again without going out.

`details()` gives plain key -> value strings about the error, safe to print
(the runner's terminal summary and record.json's `error.details` use it).

Each error maps to one outcome of the run (record.json's "outcome") and each
outcome to one exit code of `runbook run`; `OUTCOMES` and `outcome_of` are the
only table, read by the session and the runner alike::

    outcome       exit  raised as
    ok               0  (no error)
    failed           1  any other error
    parameters       2  ParameterError
    dod_not_met      3  DefinitionOfDoneNotMet
    refused          4  a Refusal: Forbidden, NotConfirmed, HostKeyUnknown, HostKeyMismatch
    interrupted      5  CommandInterrupted, KeyboardInterrupt
    timed_out        6  CommandTimedOut
    kernel_died      7  (the runner: the kernel died)
    abandoned        8  (the next session or runner: a run that died without a verdict)
    tripped          9  Tripped: a protected object changed under a changing command

Example::

    >>> from runbook.errors import Forbidden, RunbookError
    >>> err = Forbidden("no-push-to-main", "git push to main", source="Appendix B")
    >>> isinstance(err, RunbookError), err.rule
    (True, 'no-push-to-main')
    >>> outcome_of(err), OUTCOMES[outcome_of(err)]
    ('refused', 4)
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from runbook.checks import Check
    from runbook.result import Result


class RunbookError(Exception):
    """Root of every error the library raises on purpose.

    `details()` gives the facts an operator needs at the terminal (the flag
    to add, the key to fix, who holds a lock), one short string each; the
    session writes them to record.json as `error.details` and `runbook run`
    prints them::

        >>> NotConfirmed("no", environment="staging").details()
        {'environment': 'staging', 'flag': '--confirm staging'}
    """

    def details(self) -> dict[str, str]:
        """Facts about this error for the terminal and the record; none by default."""
        return {}


class Refusal(RunbookError):
    """Marker: a security refusal. It ends the run; nothing may catch it and carry on.

    >>> issubclass(HostKeyMismatch, Refusal), issubclass(Forbidden, Refusal)
    (True, True)
    """


class ParameterError(RunbookError, ValueError):
    """A parameter, profile value or secret is wrong or missing.

    Raised before anything is changed. `key` names the offending key and
    `source` the file or notebook it came from, when known.
    """

    def __init__(
        self,
        message: str,
        *,
        key: str | None = None,
        source: str | None = None,
        fix: str | None = None,
    ):
        self.key = key
        self.source = source
        self.fix = fix
        super().__init__(message)

    def details(self) -> dict[str, str]:
        """The offending key, where it came from and how to fix it, when known.

        >>> ParameterError("bad", key="reason", fix="-p reason WHY").details()
        {'key': 'reason', 'fix': '-p reason WHY'}
        """
        found = {"key": self.key, "source": self.source, "fix": self.fix}
        return {k: str(v) for k, v in found.items() if v}


class ConnectionFailed(RunbookError):
    """The target cannot be reached or refused the login."""

    def __init__(self, message: str, *, target: str | None = None):
        self.target = target
        super().__init__(message)


class HostKeyUnknown(ConnectionFailed, Refusal):
    """The server presented a key that is not pinned in the profile."""

    def __init__(self, message: str, *, target: str, presented: str, fix: str = "", pin: str = ""):
        self.presented = presented
        self.fix = fix
        # the commands that fetch the key to check and pin: the run's next step
        self.pin = pin
        super().__init__(message, target=target)

    def details(self) -> dict[str, str]:
        """The host, the presented fingerprint, the fix and the pinning commands.

        >>> HostKeyUnknown("m", target="root@h:22", presented="SHA256:x").details()["presented"]
        'SHA256:x'
        """
        out = {
            "host": self.target or "",
            "expected": "(no key pinned for this host)",
            "presented": self.presented,
        }
        if self.fix:
            out["fix"] = self.fix
        if self.pin:
            out["pin"] = self.pin
        return out


class HostKeyMismatch(ConnectionFailed, Refusal):
    """The server's key differs from the pinned one: possible interception."""

    def __init__(
        self,
        message: str,
        *,
        target: str,
        expected: str,
        presented: str,
        fix: str = "",
        pin: str = "",
    ):
        self.expected = expected
        self.presented = presented
        self.fix = fix
        self.pin = pin
        super().__init__(message, target=target)

    def details(self) -> dict[str, str]:
        """Both fingerprints, the host and the fix.

        >>> HostKeyMismatch("m", target="h", expected="SHA256:a", presented="SHA256:b").details()
        {'host': 'h', 'expected': 'SHA256:a', 'presented': 'SHA256:b'}
        """
        out = {"host": self.target or "", "expected": self.expected, "presented": self.presented}
        if self.fix:
            out["fix"] = self.fix
        if self.pin:
            out["pin"] = self.pin
        return out


class CommandError(RunbookError):
    """A command ran and did not end well; `result` holds its evidence."""

    def __init__(self, message: str, result: Result):
        self.result = result
        super().__init__(message)


class CommandFailed(CommandError):
    """A command exited non-zero (or was killed by a signal)."""


class CommandTimedOut(CommandError):
    """A command outlived its timeout and was stopped on the target."""


class CommandInterrupted(CommandError):
    """The connection died while the command ran.

    The command may or may not have finished on the server; it is never
    re-run automatically. Check the server's state before retrying.
    """


class HTTPFailed(RunbookError):
    """An HTTP call failed (network) or answered with an unexpected status."""

    def __init__(
        self,
        message: str,
        *,
        method: str,
        url: str,
        status: int | None = None,
        body: str | None = None,
    ):
        self.method = method
        self.url = url
        self.status = status
        self.body = body
        super().__init__(message)


class RestoreFailed(RunbookError):
    """A restore did not complete; the message says what is left and how to go back."""


class NotConfirmed(Refusal):
    """A changing call on a non-sandbox environment lacks confirmation."""

    def __init__(self, message: str, *, environment: str):
        self.environment = environment
        super().__init__(message)

    def details(self) -> dict[str, str]:
        return {"environment": self.environment, "flag": f"--confirm {self.environment}"}


class ConfirmationInterrupted(RunbookError):
    """The operator interrupted the confirmation question: nothing was confirmed or changed."""

    def __init__(self, message: str, *, environment: str):
        self.environment = environment
        super().__init__(message)

    def details(self) -> dict[str, str]:
        return {"environment": self.environment}


class Forbidden(Refusal):
    """A runbook rule refused the action.

    `rule` is the guard's name, `action` what was refused, `source` the
    runbook line the rule comes from; `extra` more plain facts for `details()`
    (the host lock puts its holder there).
    """

    def __init__(
        self,
        rule: str,
        action: str,
        *,
        source: str = "",
        why: str = "",
        extra: dict[str, str] | None = None,
    ):
        self.rule = rule
        self.action = action
        self.source = source
        self.extra = dict(extra or {})
        message = f"refused by rule {rule!r}: {action}"
        if why:
            message += f" ({why})"
        if source:
            message += f" [runbook: {source}]"
        super().__init__(message)

    def details(self) -> dict[str, str]:
        """The rule, the action and the rule's source, plus `extra`.

        >>> Forbidden("no-push-to-main", "git push", source="Appendix B").details()["rule"]
        'no-push-to-main'
        """
        out = {"rule": self.rule, "action": self.action}
        if self.source:
            out["source"] = self.source
        return {**out, **{k: str(v) for k, v in self.extra.items()}}


class Tripped(Refusal):
    """A changing command changed what a runbook rule protects; the run stopped.

    Raised by the tripwire (runbook.safety.tripwire), which read the protected
    objects again after the command. A `Refusal`: nothing may catch it and carry
    on, and every later change of the run raises it again.

    `command` is the command after which it was seen, `violations` one dict per
    object (object, rule, what), `restored` what was put back, `not_restored`
    what could not be (and why).

    >>> t = Tripped("rm x", [{"object": "file /a", "rule": "keep-protected-files",
    ...                       "what": "gone"}], ["file /a"], [])
    >>> t.details()["objects"], str(t).startswith("tripwire:")
    ('file /a', True)
    """

    def __init__(
        self,
        command: str,
        violations: list[dict[str, str]],
        restored: list[str],
        not_restored: list[str],
    ):
        self.command = command
        self.violations = violations
        self.restored = restored
        self.not_restored = not_restored
        what = "; ".join(f"{v['object']}: {v['what']} (rule {v['rule']})" for v in violations)
        message = f"tripwire: after `{command}` a protected object changed: {what}."
        if restored:
            message += f" Put back: {', '.join(restored)}."
        if not_restored:
            message += f" Could NOT put back: {'; '.join(not_restored)}."
        message += " The run stopped; no further change goes out."
        super().__init__(message)

    def details(self) -> dict[str, str]:
        out = {
            "command": self.command,
            "objects": ", ".join(v["object"] for v in self.violations),
            "rules": ", ".join(sorted({v["rule"] for v in self.violations})),
        }
        if self.restored:
            out["put_back"] = ", ".join(self.restored)
        if self.not_restored:
            out["not_put_back"] = "; ".join(self.not_restored)
        return out


class DefinitionOfDoneNotMet(RunbookError):
    """`session.done()` found checks that did not pass."""

    def __init__(self, checks: Sequence[Check], *, extra: Any = None):
        self.checks = list(checks)
        failed = [c for c in self.checks if c.status == "failed"]
        names = ", ".join(c.name for c in failed) or "(none)"
        super().__init__(f"definition of done not met: {len(failed)} check(s) failed: {names}")


# outcome -> exit code of `runbook run`
# never turned into a failed check or a failed host: they stop the whole run
# (safety/attempt.py for one step, core/fanout.py for a step over many hosts)
STOPS_THE_RUN: tuple[type[RunbookError], ...] = (Refusal, CommandInterrupted)

OUTCOMES: dict[str, int] = {
    "ok": 0,
    "failed": 1,
    "parameters": 2,
    "dod_not_met": 3,
    "refused": 4,
    "interrupted": 5,
    "timed_out": 6,
    "kernel_died": 7,
    "abandoned": 8,
    "tripped": 9,
}

# checked in order: the first class the error is an instance of names the outcome
_OUTCOME_OF: tuple[tuple[tuple[type[BaseException], ...], str], ...] = (
    ((DefinitionOfDoneNotMet,), "dod_not_met"),
    ((Tripped,), "tripped"),
    ((Refusal,), "refused"),
    ((ParameterError,), "parameters"),
    ((CommandTimedOut,), "timed_out"),
    ((CommandInterrupted, ConfirmationInterrupted, KeyboardInterrupt), "interrupted"),
)


def outcome_of(error: BaseException | type[BaseException] | str) -> str:
    """The run's outcome for an error, its class, or its class's name.

    The name is what the runner has when the error was raised in the kernel
    (papermill's `ename`); a name outside this tree gives "failed".

    >>> outcome_of(ParameterError("bad")), outcome_of("CommandTimedOut"), outcome_of(OSError)
    ('parameters', 'timed_out', 'failed')
    >>> outcome_of(KeyboardInterrupt()), outcome_of("HostKeyMismatch"), outcome_of("Refusal")
    ('interrupted', 'refused', 'refused')
    """
    if isinstance(error, str):
        known = {c.__name__: c for classes, _ in _OUTCOME_OF for c in classes}
        known.update({c.__name__: c for c in _subclasses(RunbookError)})
        known["RunbookError"] = RunbookError
        cls: type[BaseException] | None = known.get(error)
        if cls is None:
            return "failed"
    else:
        cls = error if isinstance(error, type) else type(error)
    for classes, outcome in _OUTCOME_OF:
        if issubclass(cls, classes):
            return outcome
    return "failed"


def _subclasses(cls: type) -> list[type]:
    out: list[type] = []
    subs: list[type] = cls.__subclasses__()
    for sub in subs:
        out += [sub, *_subclasses(sub)]
    return out
