"""One exception tree for everything the runbook library refuses or fails at.

Every error carries its evidence (the `Result`, the checks, the HTTP
response, the rule), and every message has already passed through the
session's redactor, so it is safe to show in a notebook or a record::

    RunbookError
    ├── ParameterError (also ValueError)   bad parameter, profile or secret; nothing ran
    ├── ConnectionFailed                   cannot reach or log in to the target
    │   ├── HostKeyUnknown                 the target's key is not pinned
    │   └── HostKeyMismatch                the target's key differs from the pinned one
    ├── CommandError                       a command ran and did not end well
    │   ├── CommandFailed                  non-zero exit (or killed by a signal)
    │   ├── CommandTimedOut                stopped after its timeout; the remote process was killed
    │   └── CommandInterrupted             the connection died while it ran; it is NOT re-run
    ├── HTTPFailed                         an HTTP call failed or answered with an error status
    ├── NotConfirmed                       a changing call without the operator's confirmation
    ├── Forbidden                          a runbook rule refused the action (names the rule)
    └── DefinitionOfDoneNotMet             `session.done()` found failed checks

Example::

    >>> from runbook.errors import Forbidden, RunbookError
    >>> err = Forbidden("no-push-to-main", "git push to main", source="Appendix B")
    >>> isinstance(err, RunbookError), err.rule
    (True, 'no-push-to-main')
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


class HostKeyUnknown(ConnectionFailed):
    """The server presented a key that is not pinned in the profile."""

    def __init__(self, message: str, *, target: str, presented: str):
        self.presented = presented
        super().__init__(message, target=target)


class HostKeyMismatch(ConnectionFailed):
    """The server's key differs from the pinned one: possible interception."""

    def __init__(self, message: str, *, target: str, expected: str, presented: str):
        self.expected = expected
        self.presented = presented
        super().__init__(message, target=target)


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


class NotConfirmed(RunbookError):
    """A changing call on a non-sandbox environment lacks confirmation."""

    def __init__(self, message: str, *, environment: str):
        self.environment = environment
        super().__init__(message)

    def details(self) -> dict[str, str]:
        return {"environment": self.environment, "flag": f"--confirm {self.environment}"}


class Forbidden(RunbookError):
    """A runbook rule refused the action.

    `rule` is the guard's name, `action` what was refused, `source` the
    runbook line the rule comes from.
    """

    def __init__(self, rule: str, action: str, *, source: str = "", why: str = ""):
        self.rule = rule
        self.action = action
        self.source = source
        message = f"refused by rule {rule!r}: {action}"
        if why:
            message += f" ({why})"
        if source:
            message += f" [runbook: {source}]"
        super().__init__(message)


class DefinitionOfDoneNotMet(RunbookError):
    """`session.done()` found checks that did not pass."""

    def __init__(self, checks: Sequence[Check], *, extra: Any = None):
        self.checks = list(checks)
        failed = [c for c in self.checks if c.status == "failed"]
        names = ", ".join(c.name for c in failed) or "(none)"
        super().__init__(f"definition of done not met: {len(failed)} check(s) failed: {names}")
