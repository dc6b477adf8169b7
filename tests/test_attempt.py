"""One way to turn an error into a check (runbook.safety.attempt), and `Result.ran`. No sandbox."""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any

import pytest

from runbook.errors import (
    CommandFailed,
    CommandInterrupted,
    Forbidden,
    HostKeyMismatch,
    HostKeyUnknown,
    HTTPFailed,
    NotConfirmed,
    ParameterError,
    Refusal,
    RestoreFailed,
    RunbookError,
)
from runbook.ops.http import HttpResponse
from runbook.result import Result, raise_for_ending
from runbook.safety.attempt import NOT_RUN, PASS_THROUGH, attempt, describe, judge


class Recorder:
    """Records checks the way Session.check does (same keywords), in a list."""

    def __init__(self) -> None:
        self.checks: list[dict[str, Any]] = []

    def __call__(
        self, name: str, *, expected: Any, actual: Any, passed: bool | None, note: str = ""
    ) -> dict[str, Any]:
        c = {"name": name, "expected": expected, "actual": actual, "passed": passed, "note": note}
        self.checks.append(c)
        return c


def result(*, exit_code: int | None = 0, dry_run: bool = False, stderr: str = "") -> Result:
    return Result(
        command="systemctl restart dealix-api",
        target="root@h:22",
        exit_code=exit_code,
        stdout="",
        stderr=stderr,
        started=datetime.now(UTC),
        duration=0.0 if dry_run else 0.2,
        dry_run=dry_run,
    )


# ------------------------------------------------------------------ Result.ran


def test_a_command_that_never_ran_is_not_ok_and_not_failed() -> None:
    skipped = result(exit_code=None, dry_run=True)
    assert not skipped.ran and not skipped.ok and not skipped.failed
    assert skipped.status == NOT_RUN
    # nothing failed: check() and raise_for_ending have nothing to raise
    assert skipped.check() is skipped
    assert raise_for_ending(skipped, timeout=10) is skipped


def test_a_command_that_ran_is_judged_by_its_exit_code() -> None:
    assert result(exit_code=0).ran and result(exit_code=0).ok
    bad = result(exit_code=2, stderr="boom")
    assert bad.ran and not bad.ok and bad.failed
    with pytest.raises(CommandFailed, match="exit 2"):
        bad.check()
    killed = result(exit_code=None)
    assert killed.ran and not killed.ok and killed.failed


def test_an_http_call_not_sent_never_ran() -> None:
    skipped = HttpResponse("POST", "http://h/x", None, "", {}, 0.0, dry_run=True)
    assert not skipped.ran and not skipped.ok
    assert HttpResponse("GET", "http://h/x", 200, "", {}, 0.1).ran


# ------------------------------------------------------------------ attempt


def test_a_runbook_error_becomes_one_failed_check_with_type_and_first_line() -> None:
    rec = Recorder()
    after: list[str] = []
    with attempt(rec, "Restore completed", expected="exit 0") as a:
        raise RestoreFailed("gzip: unexpected end of file\nline two\nline three")
        after.append("never")  # the block ends at the error
    assert a.failed and isinstance(a.error, RestoreFailed) and after == []
    assert rec.checks == [
        {
            "name": "Restore completed",
            "expected": "exit 0",
            "actual": "RestoreFailed: gzip: unexpected end of file",
            "passed": False,
            "note": "",
        }
    ]
    assert a.actual == rec.checks[0]["actual"]


def test_a_block_that_succeeds_records_nothing() -> None:
    rec = Recorder()
    with attempt(rec, "Validation", expected="measured") as a:
        value = 3
    assert not a.failed and a.actual is None and value == 3 and rec.checks == []


@pytest.mark.parametrize(
    "error",
    [
        Forbidden("no-push-to-main", "git push origin main", source="Appendix B"),
        NotConfirmed("confirm first", environment="staging"),
        HostKeyMismatch("changed key", target="h", expected="SHA256:a", presented="SHA256:b"),
        HostKeyUnknown("unknown key", target="h", presented="SHA256:c"),
        CommandInterrupted("the connection died", result(exit_code=None)),
        KeyboardInterrupt(),
        TypeError("a bug is not a red check"),
    ],
    ids=lambda e: type(e).__name__,
)
def test_refusals_interrupts_and_bugs_pass_through_and_record_nothing(
    error: BaseException,
) -> None:
    rec = Recorder()
    with pytest.raises(type(error)):
        with attempt(rec, "Deploy", expected="exit 0", also=(ValueError,)):
            raise error
    with pytest.raises(type(error)):
        with attempt():
            raise error
    assert rec.checks == []


def test_every_refusal_in_the_tree_passes_through() -> None:
    # a new Refusal subclass added to errors.py is covered without touching attempt
    def subclasses(cls: type) -> list[type]:
        return [c for sub in cls.__subclasses__() for c in (sub, *subclasses(sub))]

    refusals = subclasses(Refusal)
    assert {Forbidden, NotConfirmed, HostKeyMismatch, HostKeyUnknown} <= set(refusals)
    assert all(issubclass(r, PASS_THROUGH) for r in refusals)


def test_without_a_name_the_error_is_kept_and_nothing_recorded() -> None:
    with attempt() as a:
        raise HTTPFailed("GET /health failed: ConnectError", method="GET", url="http://h/health")
    assert isinstance(a.error, HTTPFailed)
    assert a.actual == "HTTPFailed: GET /health failed: ConnectError"


def test_also_adds_expected_parser_errors_but_never_everything() -> None:
    with attempt(also=(ValueError,)) as a:
        int("x")
    assert isinstance(a.error, ValueError)
    # ParameterError is a ValueError and a RunbookError: caught either way
    with attempt() as b:
        raise ParameterError("bad", key="k")
    assert b.failed
    for wide in (Exception, BaseException):
        with pytest.raises(TypeError, match="specific error types"):
            with attempt(also=(wide,)):  # type: ignore[arg-type]
                pass


def test_a_name_needs_a_recorder_and_the_reverse() -> None:
    with pytest.raises(TypeError, match="together"):
        with attempt(None, "Teardown"):
            pass
    with pytest.raises(TypeError, match="together"):
        with attempt(Recorder()):
            pass


def test_describe_bounds_the_first_line() -> None:
    assert describe(RunbookError("x" * 1000 + "\nsecond")) == "RunbookError: " + "x" * 300
    assert describe(RunbookError("")) == "RunbookError: "


# ------------------------------------------------------------------ judge


def test_a_dry_run_result_is_never_judged_passed() -> None:
    rec = Recorder()
    skipped = result(exit_code=None, dry_run=True)
    judge(rec, "API restarted", expected="exit 0", result=skipped)
    judge(rec, "Forced", expected="x", result=skipped, actual="x", passed=True)
    judge(rec, "Fn", expected="x", result=skipped, passed=lambda r: True)
    sent = HttpResponse("POST", "http://h/drain", None, "", {}, 0.0, dry_run=True)
    judge(rec, "Drained", expected="200", result=sent, passed=True)
    judge(rec, "Kept", expected="renamed", ran=False, actual="exists", passed=True, note="why")
    assert [(c["actual"], c["passed"]) for c in rec.checks] == [(NOT_RUN, None)] * 5
    assert rec.checks[-1]["note"] == "why"


def test_a_result_that_ran_is_judged_by_ok_or_by_the_given_verdict() -> None:
    rec = Recorder()
    judge(rec, "ok", expected="exit 0", result=result(exit_code=0))
    judge(rec, "bad", expected="exit 0", result=result(exit_code=1))
    judge(
        rec,
        "fn",
        expected="exit 1 accepted",
        result=result(exit_code=1),
        actual=lambda r: r.exit_code,
        passed=lambda r: r.exit_code == 1,
    )
    judge(rec, "na", expected="x", result=result(exit_code=0), passed=None)
    judge(rec, "value", expected=">= 3", actual=5, passed=True)
    assert [(c["actual"], c["passed"]) for c in rec.checks] == [
        ("exit 0", True),
        ("exit 1", False),
        (1, True),
        ("exit 0", None),
        (5, True),
    ]


def test_judge_without_a_verdict_or_a_result_to_take_it_from_refuses() -> None:
    with pytest.raises(TypeError, match="say `passed=`"):
        judge(Recorder(), "Rows", expected="3", actual=3)
