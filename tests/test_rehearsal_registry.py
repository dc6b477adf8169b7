"""One rehearsal wing: one fault registry, listed the same by `runbook sandbox` and
`runbook twin`, each fault name registered once, and only in lib/runbook/rehearsal/faults/.

Fast: nothing is started (the lists are the registry, not a target).
"""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

import runbook
from runbook.rehearsal.faults import FAULTS, DuplicateFault, Fault, UnknownFault, listing, parse
from runbook.sandbox import cli as sandbox_cli
from runbook.twin import cli as twin_cli

LIB = Path(runbook.__file__).parent
FAULTS_DIR = LIB / "rehearsal" / "faults"


def _listed(main, capsys: pytest.CaptureFixture[str]) -> str:
    assert main(["fault", "--list"]) == 0
    return capsys.readouterr().out


def test_both_clis_list_the_one_registry(capsys: pytest.CaptureFixture[str]) -> None:
    sandbox = _listed(sandbox_cli.main, capsys)
    twin = _listed(twin_cli.main, capsys)
    assert sandbox == twin
    heads = [line.split()[0] for line in sandbox.splitlines() if not line.startswith(" ")]
    assert heads == [f.usage for f in listing()]
    # a fault one target cannot do says so, in the list too
    for f in listing():
        head = next(line for line in sandbox.splitlines() if line.split()[0] == f.usage)
        assert head == (f"{f.usage}  ({f.only})" if f.only else f.usage)


def _registered_names() -> list[tuple[str, str]]:
    """(module, name) of every `Fault("name", ...)` written in the rehearsal wing."""
    found = []
    for path in sorted(LIB.rglob("*.py")):
        for node in ast.walk(ast.parse(path.read_text())):
            if (
                isinstance(node, ast.Call)
                and isinstance(node.func, ast.Name)
                and node.func.id == "Fault"
                and node.args
                and isinstance(node.args[0], ast.Constant)
            ):
                found.append((str(path.relative_to(LIB)), node.args[0].value))
    return found


def test_each_fault_is_written_once_in_the_rehearsal_wing() -> None:
    written = _registered_names()
    names = [name for _, name in written]
    twice = sorted({n for n in names if names.count(n) > 1})
    assert twice == [], f"registered twice: {twice} ({written})"
    outside = [(m, n) for m, n in written if not m.startswith("rehearsal/faults/")]
    assert outside == [], "faults live in lib/runbook/rehearsal/faults/ only"
    assert set(names) == set(FAULTS)
    # the duplicate the review found is gone: llm-down:anthropic says it
    assert "llm-anthropic-down" not in FAULTS
    assert parse("llm-down:anthropic")[0].name == "llm-down"


def test_register_refuses_a_second_fault_of_a_name() -> None:
    with pytest.raises(DuplicateFault, match="postgres-down"):
        from runbook.rehearsal.faults import register

        register(Fault("postgres-down", "again", lambda t, p: None, lambda t, p: None))
    assert FAULTS["postgres-down"].description.startswith("Stop PostgreSQL")


def test_a_target_is_refused_a_fault_it_cannot_do() -> None:
    assert parse("postgres-killed", "twin")[0].name == "postgres-killed"
    with pytest.raises(UnknownFault, match="'postgres-killed' is twin only; known on the sandbox"):
        parse("postgres-killed", "sandbox")
    with pytest.raises(UnknownFault, match="'postgres-crash' is sandbox only"):
        parse("postgres-crash", "twin")


def test_the_sandbox_and_the_twin_are_both_targets_and_share_fault_and_heal() -> None:
    from runbook.rehearsal import state
    from runbook.rehearsal.target import Target
    from runbook.sandbox import Sandbox
    from runbook.twin import Twin

    members = {
        name
        for name in vars(Target)
        if not name.startswith("_") and name not in {"kind"} and not name.startswith("__")
    }
    assert members >= {"sh", "service_start", "sql", "api", "locked", "update_state"}
    for cls in (Sandbox, Twin):
        missing = sorted(m for m in members if not hasattr(cls, m))
        assert missing == [], f"{cls.__name__} lacks Target members {missing}"
        # fault and heal are state.py's, one meaning on both targets
        for method in ("fault", "heal"):
            code = getattr(cls, method).__code__
            assert getattr(state, method).__name__ in code.co_names, (cls.__name__, method)
    assert (Sandbox.kind, Twin.kind) == ("sandbox", "twin")
