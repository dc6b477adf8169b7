"""The Dealix runbook library: sessions, safe remote execution, checks and evidence.

This module is the public surface (`__all__`, tested): open a session or a
scenario, the result and check types, and the error tree with its outcome
table. Everything else is reached through its package, layer by layer:
`runbook.core`, `runbook.safety`, `runbook.ops`, `runbook.session`,
`runbook.scenarios.<notebook name>`, `runbook.evidence`, `runbook.cli`,
`runbook.sandbox`.

Example::

    from runbook import open_scenario
    s, check = open_scenario("health_check")   # in a notebook, after its parameters cell
    check.check_all()
    s.done()
"""

from runbook.checks import Check
from runbook.errors import (
    OUTCOMES,
    CommandError,
    CommandFailed,
    CommandInterrupted,
    CommandTimedOut,
    ConfirmationInterrupted,
    ConnectionFailed,
    DefinitionOfDoneNotMet,
    Forbidden,
    HostKeyMismatch,
    HostKeyUnknown,
    HTTPFailed,
    NotConfirmed,
    ParameterError,
    Refusal,
    RestoreFailed,
    RunbookError,
    Tripped,
    outcome_of,
)
from runbook.result import Result
from runbook.scenarios._base import open_scenario
from runbook.session import Session, open_session

__all__ = [
    "OUTCOMES",
    "Check",
    "CommandError",
    "CommandFailed",
    "CommandInterrupted",
    "CommandTimedOut",
    "ConfirmationInterrupted",
    "ConnectionFailed",
    "DefinitionOfDoneNotMet",
    "Forbidden",
    "HTTPFailed",
    "HostKeyMismatch",
    "HostKeyUnknown",
    "NotConfirmed",
    "ParameterError",
    "Refusal",
    "RestoreFailed",
    "Result",
    "RunbookError",
    "Session",
    "Tripped",
    "open_scenario",
    "open_session",
    "outcome_of",
]
