"""The session's two walls, read from the source with ast (nothing imported, no sandbox).

1. Nothing outside `runbook.session` touches a private name of the session or
   of its gate (`s._x`, `session._x`, `self.s._x`, `ctx._x`, `s.gate._x`): a
   scenario that needs the refusal latch or a new connection asks the gate's
   public API (`s.gate.stop_if_refused()`, `s.gate.new_connection()`), so the
   session's inside can change without breaking a scenario.
2. The gate (runbook/session/gate.py) is the session's only way out to the
   server: no other module of the library opens a transport
   (`transport_for`, `SSHTransport(...)`, `LocalTransport(...)`) or calls one
   (`transport.execute`, `.read_file`, ...). A poller asks `s.poll(...)`, the
   lock's heartbeat `ctx.poll(...)`, each counted in the record.
"""

from __future__ import annotations

import ast
from pathlib import Path

import runbook

LIB = Path(runbook.__file__).parent
ROOT = LIB.parents[1]
# what names the session (or its gate) where a module holds it
HOLDERS = {"s", "session", "sess", "ctx", "gate"}
OPENERS = {"transport_for", "SSHTransport", "LocalTransport"}
TRANSPORT_CALLS = {"execute", "read_file", "write_file", "exists", "connection"}
# where a transport may be opened or called, and why
TRANSPORT_ALLOWED = {
    "session/gate.py": "the gate: the session's one way out",
    "core/transport.py": "the transports themselves",
    # `learn` reads the env files over the connection the gate hands it; `learn_for_seal`
    # is the seal's own read, in the seal's process after the run, not the session's
    "core/server_secrets.py": "the seal's own read of the server's env files",
    # `runbook lock` is no run (no session, no evidence folder): a read-only look at each
    # host's lock directories over that host's pinned connection
    "cli/lock.py": "runbook lock's read-only look at who holds each lock",
}


def private_uses(source: str, filename: str) -> list[str]:
    """Every `<holder>._name` in `source` (dunders allowed), as "file:line: text".

    >>> private_uses("s._note_refusal(e)\\nself.s._x = 1\\ns.gate._raw\\nself._y\\ns.__dict__", "x.py")
    ['x.py:1: s._note_refusal', 'x.py:2: self.s._x', 'x.py:3: s.gate._raw']
    """
    found: list[tuple[int, str]] = []
    for node in ast.walk(ast.parse(source, filename)):
        if not isinstance(node, ast.Attribute):
            continue
        name = node.attr
        if not name.startswith("_") or (name.startswith("__") and name.endswith("__")):
            continue
        value = node.value
        holder = value.id if isinstance(value, ast.Name) else getattr(value, "attr", None)
        if holder in HOLDERS:
            found.append((node.lineno, f"{filename}:{node.lineno}: {ast.unparse(node)}"))
    return [text for _, text in sorted(found)]


def transport_uses(source: str, filename: str) -> list[str]:
    """Every transport opened or called in `source`, as "file:line: text".

    >>> transport_uses("t = SSHTransport(spec)\\nself.s.transport.execute('x')\\nctx.poll('x')", "x.py")
    ['x.py:1: SSHTransport(spec)', "x.py:2: self.s.transport.execute('x')"]
    """
    found: list[tuple[int, str]] = []
    for node in ast.walk(ast.parse(source, filename)):
        if not isinstance(node, ast.Call):
            continue
        func = node.func
        name = func.attr if isinstance(func, ast.Attribute) else getattr(func, "id", "")
        opens = name in OPENERS
        calls = (
            isinstance(func, ast.Attribute)
            and name in TRANSPORT_CALLS
            and "transport" in ast.unparse(func.value).lower()
        )
        if opens or calls:
            found.append((node.lineno, f"{filename}:{node.lineno}: {ast.unparse(node)}"))
    return [text for _, text in sorted(found)]


def _sources(*roots: Path) -> list[Path]:
    return [p for root in roots for p in sorted(root.rglob("*.py"))]


def test_no_private_name_of_the_session_outside_it() -> None:
    session_pkg = LIB / "session"
    found = [
        v
        for path in _sources(LIB, ROOT / "tests", ROOT / "benchmarks")
        if session_pkg not in path.parents
        for v in private_uses(path.read_text(), str(path.relative_to(ROOT)))
    ]
    assert not found, (
        "use the session's public API (the gate's refusal latch: s.gate.stop_if_refused(), "
        "s.gate.latch(exc); a new connection: s.gate.new_connection()):\n  " + "\n  ".join(found)
    )


def test_only_the_gate_goes_to_the_server() -> None:
    found = [
        v
        for path in _sources(LIB)
        if str(path.relative_to(LIB)) not in TRANSPORT_ALLOWED
        for v in transport_uses(path.read_text(), str(path.relative_to(LIB)))
    ]
    assert not found, (
        "go through the session's gate: s.probe/s.run/s.read_file, s.poll(cmd, kind=...) for a "
        "poller, s.gate.new_connection() for a fresh connection:\n  " + "\n  ".join(found)
    )


PLANTED = """
def _new_connection(s):
    s._stop_if_refused()
    fresh = SSHTransport(s.gate.transport.spec)
    fresh.execute("true", on_stdout=print, on_stderr=print, timeout=20)
    s._note_refusal(ValueError())

class _Progress:
    def read(self):
        self.s.transport.execute(self.command, on_stdout=print, on_stderr=print, timeout=10)
        return self.s.gate._second
"""


def test_each_rule_catches_a_planted_violation() -> None:
    # a scenario written the old way: both rules name each line
    assert private_uses(PLANTED, "p.py") == [
        "p.py:3: s._stop_if_refused",
        "p.py:6: s._note_refusal",
        "p.py:11: self.s.gate._second",
    ]
    assert transport_uses(PLANTED, "p.py") == [
        "p.py:4: SSHTransport(s.gate.transport.spec)",
        "p.py:10: self.s.transport.execute(self.command, on_stdout=print, on_stderr=print, "
        "timeout=10)",
    ]
