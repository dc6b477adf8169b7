"""The Dealix runbook library: sessions, safe remote execution, checks and evidence.

Example::

    from runbook import open_session
    s = open_session("health_check", env="sandbox")
    s.probe(["uptime"]).stdout
    s.done()
"""

from runbook.errors import (
    CommandFailed,
    CommandInterrupted,
    CommandTimedOut,
    ConnectionFailed,
    DefinitionOfDoneNotMet,
    Forbidden,
    HostKeyMismatch,
    HostKeyUnknown,
    HTTPFailed,
    NotConfirmed,
    ParameterError,
    RunbookError,
)
from runbook.result import Result
from runbook.session import Session, open_session

__all__ = [
    "CommandFailed",
    "CommandInterrupted",
    "CommandTimedOut",
    "ConnectionFailed",
    "DefinitionOfDoneNotMet",
    "Forbidden",
    "HTTPFailed",
    "HostKeyMismatch",
    "HostKeyUnknown",
    "NotConfirmed",
    "ParameterError",
    "Result",
    "RunbookError",
    "Session",
    "open_session",
]
