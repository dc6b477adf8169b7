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
