"""What an operation needs from the run it belongs to: the `OpsContext` protocol.

The operations (runbook.ops) and the host lock (runbook.safety.lock) take an
`OpsContext` instead of the session, so they never import it: the session
(layer 4) sits above them and implements this protocol. A test or a tool can
hand them any object with these members.

Example::

    >>> from runbook.core.context import OpsContext
    >>> sorted(n for n in vars(OpsContext) if not n.startswith("_"))
    ['allow_change', 'current_step', 'log_http', 'poll', 'probe', 'process', 'read_file', 'run', 'verify_target']

Nothing here hands out the connection: everything goes through the session's
gate (runbook.session.gate), the one way out to the server.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Protocol

from runbook.core.command import Command

if TYPE_CHECKING:
    from runbook.core.profile import Profile
    from runbook.core.redact import Redactor
    from runbook.core.secrets import SecretStore
    from runbook.evidence.writer import Evidence
    from runbook.result import Result
    from runbook.safety.guards import Guards


class Polled(Protocol):
    """What one poll read (runbook.session.gate.Polled)."""

    @property
    def exit_code(self) -> int | None: ...

    @property
    def stdout(self) -> str: ...


@dataclass(frozen=True)
class HttpCall:
    """One HTTP call as the evidence holds it (`request` and `error` already redacted)."""

    service: str
    request: str
    status: int | None
    duration: float
    size: int
    changing: bool
    error: str | None = None


class OpsContext(Protocol):
    """The run as the operations see it (the session implements it)."""

    env: str
    scenario: str
    dry_run: bool
    profile: Profile
    redactor: Redactor
    secrets: SecretStore
    guards: Guards
    evidence: Evidence
    # who runs this, for the lock's owner file: known when the run opens
    operator: str
    operator_host: str

    # this run's pid and start time (runbook.evidence.liveness), for the lock's owner file
    @property
    def process(self) -> dict[str, Any] | None: ...

    @property
    def current_step(self) -> str | None: ...

    def probe(self, command: Command, **kw: Any) -> Result:
        """Run a read-only command (always runs)."""
        ...

    def run(self, command: Command, **kw: Any) -> Result:
        """Run a changing command (dry-run, confirmation, guards and the lock apply)."""
        ...

    def read_file(self, path: str) -> bytes:
        """A file's bytes on the target, read-only, recorded in the evidence."""
        ...

    def poll(self, command: str, *, kind: str) -> Polled:
        """The logged-off read-only probe of a poller (second connection, counted per kind)."""
        ...

    def verify_target(self) -> None:
        """Check the target's SSH host key before the first call of any kind (raises a Refusal)."""
        ...

    def allow_change(self, what: str, *, kind: str) -> bool:
        """The change check: True if a change may go ahead now, False in dry-run (recorded)."""
        ...

    def log_http(self, call: HttpCall) -> None:
        """Record one HTTP call in the run's evidence."""
        ...


class LockContext(Protocol):
    """What the host lock (runbook.safety.lock) needs: its owner, and the gate's paths.

    `run` is the gate's internal path for the lock's own commands (the change
    check and the guards apply; taking the lock does not, it is being taken);
    `poll` carries the heartbeat and the release at exit.
    """

    env: str
    scenario: str
    profile: Profile
    evidence: Evidence
    operator: str
    operator_host: str

    @property
    def process(self) -> dict[str, Any] | None: ...

    def probe(self, command: Command, **kw: Any) -> Result: ...

    def run(self, command: Command, **kw: Any) -> Result: ...

    def poll(self, command: str, *, kind: str) -> Polled: ...
