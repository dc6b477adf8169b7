"""`Result`: what one command did, bounded and redacted.

Example::

    >>> from datetime import datetime, timezone
    >>> r = Result(command="true", target="local", exit_code=0, stdout="", stderr="",
    ...            started=datetime.now(timezone.utc), duration=0.01)
    >>> r.ran, r.ok, r.check() is r
    (True, True, True)

A changing command skipped by a dry run never ran: it is neither ok nor failed,
and `check()` has nothing to complain about::

    >>> skipped = Result(command="rm x", target="local", exit_code=None, stdout="", stderr="",
    ...                  started=datetime.now(timezone.utc), duration=0.0, dry_run=True)
    >>> skipped.ran, skipped.ok, skipped.failed, skipped.status, skipped.check() is skipped
    (False, False, False, 'not run (dry run)', True)
"""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import datetime
from pathlib import Path

from runbook.errors import CommandFailed, CommandInterrupted, CommandTimedOut


@dataclass(frozen=True)
class Result:
    """One finished command.

    `stdout` and `stderr` are bounded captures (head and tail, with an
    "N lines elided" marker); the full streams are in `stdout_log` /
    `stderr_log` when they did not fit. `exit_code` is None when the
    process was killed by a signal (`signal` names it) or never reported.
    Everything here has passed through the session's redactor.
    """

    command: str
    target: str
    exit_code: int | None
    stdout: str
    stderr: str
    started: datetime
    duration: float
    signal: str | None = None
    accepted: tuple[int, ...] = (0,)
    stdout_bytes: int = 0
    stderr_bytes: int = 0
    stdout_lines: int = 0
    stderr_lines: int = 0
    stdout_log: Path | None = None
    stderr_log: Path | None = None
    timed_out: bool = False
    interrupted: str | None = None
    dry_run: bool = False
    meta: dict[str, object] = field(default_factory=dict)

    @property
    def ran(self) -> bool:
        """False for a command that never ran (a changing command in a dry run: "would run")."""
        return not self.dry_run

    @property
    def ok(self) -> bool:
        """True only when the command ran and its exit code is accepted.

        A command that never ran (dry run) is not ok: nothing it was meant to do
        happened, so nothing may be judged passed on it. It is not `failed`
        either; `session.judge` records it as "not run (dry run)".
        """
        return self.ran and self.exit_code is not None and self.exit_code in self.accepted

    @property
    def failed(self) -> bool:
        """True when the command ran and did not end well (a dry run is not a failure)."""
        return self.ran and not self.ok

    @property
    def status(self) -> str:
        """Human words for how it ended: 'exit 0', 'killed by signal TERM', …"""
        if self.dry_run:
            return "not run (dry run)"
        if self.interrupted:
            return f"interrupted: {self.interrupted}"
        if self.timed_out:
            return "timed out (stopped on the target)"
        if self.exit_code is None:
            return f"killed by signal {self.signal}" if self.signal else "killed (no exit status)"
        return f"exit {self.exit_code}"

    def lines(self, stream: str = "stdout") -> list[str]:
        text = self.stdout if stream == "stdout" else self.stderr
        return text.splitlines()

    def tail(self, n: int = 10, stream: str = "both") -> str:
        """The last `n` lines of stdout, stderr or both (stderr last)."""
        if stream == "both":
            return "\n".join(self.stdout.splitlines()[-n:] + self.stderr.splitlines()[-n:])
        return "\n".join(self.lines(stream)[-n:])

    def check(self) -> Result:
        """Return self unless the command ran and failed: then raise `CommandFailed`.

        A dry-run result is returned as is: it did not fail, it did not run.
        """
        if self.failed:
            raise CommandFailed(describe_failure(self), self)
        return self

    def __str__(self) -> str:
        return self.stdout


def describe_failure(result: Result, lines: int = 10) -> str:
    """The message of a failed command: what ran, where, how it ended, last lines."""
    msg = f"command failed on {result.target}: {result.command}\n  {result.status}"
    if result.duration:
        msg += f" after {result.duration:.1f}s"
    for name, text, log in (
        ("stdout", result.stdout, result.stdout_log),
        ("stderr", result.stderr, result.stderr_log),
    ):
        tail = text.splitlines()[-lines:]
        if tail:
            msg += f"\n  last {name} lines:\n" + "\n".join("    " + t for t in tail)
        if log:
            msg += f"\n  full {name}: {log}"
    return msg


def raise_for_ending(result: Result, *, timeout: float | None, warn: bool = False) -> Result:
    """Return `result`, or raise for how it ended: interrupted, timed out, or (unless `warn`) failed.

    An interrupted command is never re-run by the library: the message says so.
    """
    if result.interrupted:
        raise CommandInterrupted(
            describe_failure(result)
            + "\n  the command was NOT re-run; check the server's state before retrying",
            result,
        )
    if result.timed_out:
        raise CommandTimedOut(
            describe_failure(result).replace("command failed", f"command timed out ({timeout}s)"),
            result,
        )
    if result.failed and not warn:
        raise CommandFailed(describe_failure(result), result)
    return result
