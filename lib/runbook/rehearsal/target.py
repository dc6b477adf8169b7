"""What a fault may do to a rehearsal target: the sandbox or the twin, one protocol.

Faults (runbook.rehearsal.faults) are written against `Target`, so each is written
once: a command as root on the server (`sh`), a part of the stack stopped or started
(`service_stop`/`service_start`/`service_restart` by part name, which is a supervisord program on the
sandbox and a systemd unit on the twin), SQL as the database superuser, the SaaS
stubs' control endpoints, the API, and deep health. `runbook.rehearsal.state` uses
the rest (the lock, the list of active faults, the settle after a heal).

Parts are named by what they are, not by how a target runs them:

    >>> sorted(PARTS)
    ['api', 'postgres', 'redis']
"""

from __future__ import annotations

import subprocess
from collections.abc import Iterable
from contextlib import AbstractContextManager
from pathlib import Path, PurePosixPath
from typing import Any, Protocol

# part -> (the sandbox's supervisord program, the twin's systemd unit)
PARTS = {
    "postgres": ("postgresql", "postgresql"),
    "redis": ("redis", "redis-server"),
    "api": ("dealix-api", "dealix-api"),
}


class RehearsalError(RuntimeError):
    """A part of a rehearsal target failed; `part` names it, `log_tail` shows why.
    SandboxError and TwinError are its two kinds (the CLIs catch this one).

    >>> str(RehearsalError("heal", "could not heal db-corrupt: boom", ["oops"]))
    'heal: could not heal db-corrupt: boom\\n  | oops'
    """

    def __init__(self, part: str, message: str, log_tail: Iterable[str] = ()):
        self.part = part
        self.log_tail = list(log_tail)
        text = f"{part}: {message}"
        if self.log_tail:
            text += "\n" + "\n".join(f"  | {line}" for line in self.log_tail)
        super().__init__(text)


class Target(Protocol):
    """The sandbox (runbook.sandbox.Sandbox) or the twin (runbook.twin.Twin)."""

    kind: str  # "sandbox" or "twin": the registry's `targets`, by_target's choice

    @property
    def state(self) -> dict[str, Any]: ...

    def secrets(self) -> dict[str, str]: ...

    # ---------------------------------------------------------------- the server

    def sh(
        self, command: str, timeout: float = 120, check: bool = True
    ) -> subprocess.CompletedProcess[str]:
        """A shell command on the server as its administrator (the twin: root over SSH;
        the sandbox: this machine, as the sandbox's owner)."""
        ...

    def service_stop(self, part: str) -> None: ...

    def service_start(self, part: str) -> None:
        """Start `part` (after a failure too) and wait until it answers."""
        ...

    def service_restart(self, part: str) -> None: ...

    def sql(self, query: str, dbname: str = "dealix") -> list[tuple[Any, ...]]:
        """Rows of one query as the database superuser."""
        ...

    @property
    def backups_dir(self) -> PurePosixPath: ...

    @property
    def pgdata(self) -> PurePosixPath: ...

    @property
    def app_dir(self) -> PurePosixPath: ...

    @property
    def origin_dir(self) -> PurePosixPath:
        """The bare git origin ("GitHub") on the server's side."""
        ...

    @property
    def origin_url(self) -> str:
        """The origin as a developer's clone on this machine names it."""
        ...

    def developer_git(self, *args: str, cwd: Path | None = None) -> str:
        """The app developer's git on this machine (a deploy fault's clone and push)."""
        ...

    @property
    def scratch(self) -> PurePosixPath:
        """A directory on the server for what a fault keeps aside until its heal."""
        ...

    # ---------------------------------------------------------------- API and SaaS

    def api(
        self, path: str, *, method: str = "GET", admin: bool = False, timeout: float = 10
    ) -> tuple[int, Any]: ...

    def wait_deep(self, part: str, status: str, timeout: float = 60) -> None: ...

    def stub_control(self, path: str, body: Any) -> Any: ...

    def add_ci_run(self, conclusion: str, head_sha: str | None = None) -> Any: ...

    # ---------------------------------------------------------------- for state.py

    def locked(self) -> AbstractContextManager[None]: ...

    def ensure_up(self) -> None: ...

    def update_state(self, **changes: Any) -> None: ...

    def after_heal(self) -> None:
        """What the target records once healed and settled (the sandbox: its PIDs)."""
        ...
