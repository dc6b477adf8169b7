"""One way to turn an error into a check, and a result into a verdict.

A scenario step that may fail without ending the run (a restore that breaks,
a health endpoint that does not answer) wraps the call in `attempt`; a result
is turned into a check with `judge`. Both are thin methods on the session
(`s.attempt`, `s.judge`); the logic lives here so it is tested without a
server, and so no scenario writes its own `except RunbookError` (a test in
tests/test_architecture.py fails on one).

What `attempt` catches and what it never catches:

- a `RunbookError` (a command failed, an HTTP call failed, a restore broke)
  becomes a failed check named by the step, its actual the error's type and
  first line; the block ends there and the run goes on to the next step;
- a `Refusal` (Forbidden, NotConfirmed, HostKeyMismatch, HostKeyUnknown) and
  `CommandInterrupted` (the connection died while a command ran: it may or may
  not have finished) always pass through and stop the run, as do
  KeyboardInterrupt and anything outside the error tree (a bug is not a red check).

Without a name, `attempt` records nothing: the error is kept in `a.error` for
the caller to turn into a value ("unreachable", None), and refusals still pass.

What `judge` never does: call a command that never ran passed. A result whose
`ran` is False (a changing command, HTTP call or restore that a dry run
skipped) is recorded as "not run (dry run)" with `passed=None`, which the
definition of done shows apart and never counts as passed.

Example (a list stands in for the session's check recorder)::

    >>> from runbook.errors import CommandFailed, Forbidden, HTTPFailed
    >>> checks = []
    >>> def record(name, *, expected, actual, passed, note=""):
    ...     checks.append((name, actual, passed))
    >>> with attempt(record, "Deep health", expected="200") as a:
    ...     raise HTTPFailed("GET /health/deep failed: ConnectError\\nmore", method="GET", url="/")
    >>> a.failed, checks[-1]
    (True, ('Deep health', 'HTTPFailed: GET /health/deep failed: ConnectError', False))
    >>> with attempt(record, "Deploy", expected="exit 0"):
    ...     raise Forbidden("no-push-to-main", "git push origin main")
    Traceback (most recent call last):
    ...
    runbook.errors.Forbidden: refused by rule 'no-push-to-main': git push origin main
    >>> judge(record, "Restart", expected="exit 0", result=_NotRun())
    >>> checks[-1]
    ('Restart', 'not run (dry run)', None)
"""

from __future__ import annotations

import contextlib
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from typing import Any, Protocol

from runbook.errors import STOPS_THE_RUN, RunbookError

# never turned into a check or a value: they stop the run
PASS_THROUGH: tuple[type[BaseException], ...] = STOPS_THE_RUN
NOT_RUN = "not run (dry run)"
FIRST_LINE = 300  # characters of the error's first line kept in a check


class CheckRecorder(Protocol):
    """What records a check: `Session.check`'s signature."""

    def __call__(
        self, name: str, *, expected: Any, actual: Any, passed: bool | None, note: str = ""
    ) -> Any: ...


def describe(exc: BaseException) -> str:
    """An error as a check's actual: its type and the first line of its message.

    >>> describe(RunbookError("restore failed: gzip: unexpected end of file\\nlast lines: ..."))
    'RunbookError: restore failed: gzip: unexpected end of file'
    """
    lines = str(exc).splitlines()
    return f"{type(exc).__name__}: {(lines[0] if lines else '')[:FIRST_LINE]}"


@dataclass
class Attempt:
    """What one `attempt` block came to: `error` is the RunbookError it caught, if any."""

    name: str | None
    expected: Any
    error: BaseException | None = None

    @property
    def failed(self) -> bool:
        return self.error is not None

    @property
    def actual(self) -> str | None:
        """The error as a check's actual (type and first line), or None when it did not fail."""
        return describe(self.error) if self.error is not None else None


@contextlib.contextmanager
def attempt(
    record: CheckRecorder | None = None,
    name: str | None = None,
    *,
    expected: Any = "",
    note: str = "",
    also: tuple[type[Exception], ...] = (),
) -> Iterator[Attempt]:
    """Run the block; a `RunbookError` in it becomes a failed check named `name`.

    `also` adds exception types the caller expects from a parser (ValueError
    from a JSON body); it cannot widen the catch to everything, and refusals
    and interrupted commands pass through whatever it holds.

    >>> from runbook.errors import CommandInterrupted
    >>> with attempt() as a:
    ...     raise CommandInterrupted("the connection died", None)  # type: ignore[arg-type]
    Traceback (most recent call last):
    ...
    runbook.errors.CommandInterrupted: the connection died
    >>> with attempt(also=(ValueError,)) as a:
    ...     int("not a number")
    >>> a.failed, a.actual
    (True, "ValueError: invalid literal for int() with base 10: 'not a number'")
    """
    for kind in also:
        if not issubclass(kind, Exception) or kind in (Exception, BaseException):
            raise TypeError(f"attempt(also=...) takes specific error types, not {kind.__name__}")
    if (record is None) != (name is None):
        raise TypeError("attempt() takes a recorder and a check name together, or neither")
    a = Attempt(name, expected)
    caught: tuple[type[Exception], ...] = (RunbookError, *also)
    try:
        yield a
    except PASS_THROUGH:
        raise
    except caught as exc:
        a.error = exc
        if record is not None and name is not None:
            record(name, expected=expected, actual=describe(exc), passed=False, note=note)


FROM_RESULT: Any = object()  # judge(): derive passed/actual from the result


def has_run(result: Any) -> bool:
    """False when `result` stands for a call a dry run skipped (its `ran`, else its `dry_run`).

    >>> has_run(_NotRun()), has_run({"rows": 3}), has_run(None)
    (False, True, True)
    """
    value = getattr(result, "ran", None)
    if isinstance(value, bool):
        return value
    return not bool(getattr(result, "dry_run", False))


def judge(
    record: CheckRecorder,
    name: str,
    *,
    expected: Any,
    result: Any = None,
    actual: Any = FROM_RESULT,
    passed: bool | Callable[[Any], bool | None] | None = FROM_RESULT,
    note: str = "",
    ran: bool | None = None,
) -> Any:
    """Record the check `name` on `result`, never passed on a call that never ran.

    `passed` is a bool, None (not available here) or a function of the result;
    by default the result's `ok`. `actual` is a value or a function of the
    result; by default its `status`, else the result itself. `ran=False` says
    the thing judged was skipped by a dry run when there is no result object to
    say so (a restart that returned a plain dict).

    >>> checks = []
    >>> def record(name, *, expected, actual, passed, note=""):
    ...     checks.append((name, actual, passed, note))
    >>> judge(record, "Rows", expected=">= 3", result={"rows": 5},
    ...       actual=lambda r: r["rows"], passed=lambda r: r["rows"] >= 3)
    >>> judge(record, "Backup copied", expected="copied", actual="copied", passed=True,
    ...       ran=False, note="would copy .env to .env.bak")
    >>> checks
    [('Rows', 5, True, ''), ('Backup copied', 'not run (dry run)', None, 'would copy .env to .env.bak')]
    """
    did_run = has_run(result) if ran is None else ran
    if not did_run:
        return record(name, expected=expected, actual=NOT_RUN, passed=None, note=note)
    if actual is FROM_RESULT:
        actual = getattr(result, "status", result)
    elif callable(actual):
        actual = actual(result)
    if passed is FROM_RESULT:
        if result is None or not hasattr(result, "ok"):
            raise TypeError(f"judge({name!r}): say `passed=`, the result has no `ok` to judge by")
        passed = bool(result.ok)
    elif callable(passed):
        passed = passed(result)
    return record(name, expected=expected, actual=actual, passed=passed, note=note)


class _NotRun:
    """A skipped call, for the examples above."""

    ran = False
