"""Architecture rules read from the source with ast (nothing imported, no sandbox).

One way to turn an error into a check: a scenario (or an operation) never
writes `except RunbookError`, `except Exception`, `except BaseException`, a
bare `except:` or `contextlib.suppress(RunbookError)`. Each of those catches
a refusal (a changed host key, a runbook rule, a missing confirmation) unless
the writer remembers `except Refusal: raise` first, and one forgotten clause
turns a refusal into a red check while the run carries on. `s.attempt(...)`
(runbook.safety.attempt) is the one place that catches them, refusals and
interrupted commands let through.

A handler that ends in a bare `raise` is allowed: it cleans up (drops a
scratch database, stops a progress poller, says how to roll back) and lets
the same error go on, so it never turns one into a check or a value.
"""

from __future__ import annotations

import ast
import re
from pathlib import Path

import runbook

LIB = Path(runbook.__file__).parent
CHECKED = (LIB / "scenarios", LIB / "ops")
WIDE = {"RunbookError", "Exception", "BaseException"}


def _names(node: ast.expr | None) -> set[str]:
    """The class names an except clause (or suppress) lists: `X`, `errors.X`, `(X, Y)`."""
    if node is None:
        return set()
    if isinstance(node, ast.Tuple):
        return {n for elt in node.elts for n in _names(elt)}
    if isinstance(node, ast.Name):
        return {node.id}
    if isinstance(node, ast.Attribute):
        return {node.attr}
    if isinstance(node, ast.Starred):
        return _names(node.value)
    return set()


def _reraises(handler: ast.ExceptHandler) -> bool:
    last = handler.body[-1]
    return isinstance(last, ast.Raise) and last.exc is None


def violations(source: str, filename: str) -> list[str]:
    """Every hand-written catch-all in `source`, as "file:line: what".

    >>> violations("try:\\n    f()\\nexcept (Refusal, RunbookError):\\n    pass\\n", "x.py")
    ['x.py:3: except RunbookError']
    >>> violations("try:\\n    f()\\nexcept BaseException:\\n    cleanup()\\n    raise\\n", "x.py")
    []
    """
    found: list[str] = []
    for node in ast.walk(ast.parse(source, filename)):
        if isinstance(node, ast.ExceptHandler):
            if _reraises(node):
                continue
            if node.type is None:
                found.append(f"{filename}:{node.lineno}: bare except")
            for name in sorted(_names(node.type) & WIDE):
                found.append(f"{filename}:{node.lineno}: except {name}")
        elif isinstance(node, ast.Call):
            func = node.func
            called = func.attr if isinstance(func, ast.Attribute) else getattr(func, "id", "")
            if called == "suppress" and any("RunbookError" in _names(a) for a in node.args):
                found.append(f"{filename}:{node.lineno}: suppress(RunbookError)")
    return found


def test_no_hand_written_catch_all_in_scenarios_or_ops() -> None:
    found = [
        v
        for root in CHECKED
        for path in sorted(root.rglob("*.py"))
        for v in violations(path.read_text(), str(path.relative_to(LIB)))
    ]
    assert not found, (
        "turn errors into checks with `with s.attempt(name, expected=...)` (or `s.attempt()` "
        "for a value) and judge results with `s.judge(...)`: they let refusals and "
        "interrupted commands through (docs/development.md):\n  " + "\n  ".join(found)
    )


REFUSALS = {
    "Refusal",
    "Forbidden",
    "NotConfirmed",
    "HostKeyMismatch",
    "HostKeyUnknown",
    "Tripped",
}


def refusal_handlers(source: str, filename: str) -> list[str]:
    """Every except clause naming a refusal, re-raising or not: refusals are the session's.

    >>> refusal_handlers("try:\\n    f()\\nexcept Forbidden:\\n    note()\\n    raise\\n", "x.py")
    ['x.py:3: except Forbidden']
    """
    return [
        f"{filename}:{node.lineno}: except {name}"
        for node in ast.walk(ast.parse(source, filename))
        if isinstance(node, ast.ExceptHandler)
        for name in sorted(_names(node.type) & REFUSALS)
    ]


def test_no_scenario_handles_a_refusal() -> None:
    found = [
        v
        for path in sorted((LIB / "scenarios").rglob("*.py"))
        for v in refusal_handlers(path.read_text(), str(path.relative_to(LIB)))
    ]
    assert not found, (
        "a refusal stops the run and the session records it: let it through "
        "(a guard's rule outside a command: `s.enforce(s.guards.check_..., ...)`):\n  "
        + "\n  ".join(found)
    )


def test_the_rule_catches_each_shape() -> None:
    planted = """
from runbook import errors
try:
    a()
except RunbookError:
    x = None
try:
    a()
except Exception as exc:
    x = exc
try:
    a()
except (ValueError, errors.RunbookError):
    pass
try:
    a()
except:
    pass
try:
    a()
except BaseException:
    log()
with contextlib.suppress(RunbookError, KeyError):
    a()
try:
    a()
except Refusal:
    raise
except KeyboardInterrupt:
    stop()
except (ValueError, KeyError):
    pass
"""
    assert violations(planted, "p.py") == [
        "p.py:5: except RunbookError",
        "p.py:9: except Exception",
        "p.py:13: except RunbookError",
        "p.py:17: bare except",
        "p.py:21: except BaseException",
        "p.py:23: suppress(RunbookError)",
    ]


# ------------------------------------------------------------------ one scenario shape

SCENARIOS = LIB / "scenarios"
# scenarios still being converted on a branch of their own may be named here until it merges
# (database_down and security_incident were, until both merged as packages)
NOT_YET_CONVERTED: set[str] = set()
SESSION_PARAMETERS = {"s", "session"}


def session_functions(source: str, filename: str) -> list[str]:
    """Every module-level function in `source` that takes a session, as "file:line: name(arg)".

    A parameter takes a session when it is named `s` or `session`, or its
    annotation names `Session`. Methods are the place for that (one per
    runbook step); pure judging takes values, and server operations live in
    runbook.ops, taking an OpsContext.

    >>> session_functions("def f(s, x):\\n    pass\\nclass A:\\n    def g(self, s): ...\\n", "x.py")
    ['x.py:1: f(s)']
    >>> session_functions("def f(ctx: 'Session | None' = None): ...\\n", "x.py")
    ['x.py:1: f(ctx)']
    >>> session_functions("def f(ctx: OpsContext, sessions: int): ...\\n", "x.py")
    []
    """
    found: list[str] = []
    for node in ast.parse(source, filename).body:
        if not isinstance(node, ast.FunctionDef | ast.AsyncFunctionDef):
            continue
        a = node.args
        params = [*a.posonlyargs, *a.args, *a.kwonlyargs, *filter(None, (a.vararg, a.kwarg))]
        for p in params:
            note = ast.unparse(p.annotation) if p.annotation is not None else ""
            if p.arg in SESSION_PARAMETERS or re.search(r"\bSession\b", note):
                found.append(f"{filename}:{node.lineno}: {node.name}({p.arg})")
                break
    return found


def _not_yet_converted(path: Path) -> bool:
    rel = path.relative_to(SCENARIOS)
    return rel.parts[0].removesuffix(".py") in NOT_YET_CONVERTED


def test_no_module_level_function_in_scenarios_takes_a_session() -> None:
    found = [
        v
        for path in sorted(SCENARIOS.rglob("*.py"))
        if not _not_yet_converted(path)
        for v in session_functions(path.read_text(), str(path.relative_to(LIB)))
    ]
    assert not found, (
        "one scenario shape: a step is a method of the scenario class (it opens its step, "
        "calls ops, judges, records checks); pure judging takes values, never the session; "
        "a server operation goes to runbook.ops and takes an OpsContext:\n  " + "\n  ".join(found)
    )
