"""The library's layers: imports run one way, no runtime circle, a deliberate public surface.

Read with ast (tests/importgraph.py), nothing imported: a runtime import (at
module level or inside a function) from a lower layer to a higher one fails,
and so does any runtime import circle. Imports under `if TYPE_CHECKING:` are
allowed both ways: they never run.
"""

from __future__ import annotations

import ast
import inspect
from pathlib import Path

import pytest
from importgraph import Edge, cycles, edges, runtime_graph

import runbook
from runbook import errors

LIB = Path(runbook.__file__).parent

# lowest first; a module may import its own layer and the ones below
LAYERS: list[tuple[str, tuple[str, ...]]] = [
    ("vocabulary", ("runbook.errors", "runbook.result", "runbook.checks", "runbook.clock")),
    ("core", ("runbook.core",)),
    # the run records apart from the plumbing: the writer, the record's parts, seal, liveness,
    # story, the postmortem drafter, the resume plan, history (the review scenario reads through it)
    ("evidence", ("runbook.evidence",)),
    ("safety", ("runbook.safety",)),
    ("ops", ("runbook.ops",)),
    # the session's gate, its one way out to the server, and what it needs: below the facade
    # (the gate never reaches back into the session; it takes the run as a protocol)
    ("gate", ("runbook.session.gate", "runbook.session.capture", "runbook.session.parameters")),
    # the facade (runbook.session) and its record
    ("session", ("runbook.session",)),
    ("scenarios", ("runbook.scenarios",)),
    # tooling on top of the library: the sandbox and its twin may import anything below
    ("sandbox", ("runbook.rehearsal", "runbook.sandbox", "runbook.twin")),
    # other engines that run `runbook run` (Prefect 3, the optional extra): above the
    # library, below the command line that serves them (`runbook schedule`)
    ("integrations", ("runbook.integrations",)),
    # the entry point dispatches to everything, `runbook sandbox ...` included
    ("cli", ("runbook.cli",)),
    # the public surface (`from runbook import open_scenario`): imported by none inside the library
    ("surface", ("runbook",)),
]


def layer_of(module: str) -> int:
    """The index in LAYERS of the most specific prefix that names `module`.

    >>> LAYERS[layer_of("runbook.ops.api")][0], LAYERS[layer_of("runbook")][0]
    ('ops', 'surface')
    >>> LAYERS[layer_of("runbook.safety.change")][0], LAYERS[layer_of("runbook.core.kernel")][0]
    ('safety', 'core')
    """
    best, best_len = -1, -1
    for index, (_, prefixes) in enumerate(LAYERS):
        for prefix in prefixes:
            if (module == prefix or module.startswith(prefix + ".")) and len(prefix) > best_len:
                best, best_len = index, len(prefix)
    return best


def upward(edge_list: list[Edge]) -> list[str]:
    """Runtime imports from a lower layer to a higher one, as readable lines."""
    out = []
    for e in edge_list:
        if e.type_only:
            continue
        src, dst = layer_of(e.source), layer_of(e.target)
        if dst > src:
            out.append(
                f"{e.source} ({LAYERS[src][0]}) imports {e.target} ({LAYERS[dst][0]}) "
                f"at line {e.line}{' inside a function' if e.deferred else ''}"
            )
    return out


def test_every_module_has_a_layer() -> None:
    modules, _ = edges(LIB)
    unplaced = sorted(m for m in modules if layer_of(m) < 0)
    assert not unplaced, f"put these modules in a layer (tests/test_layers.py LAYERS): {unplaced}"


def test_imports_run_one_way() -> None:
    _, edge_list = edges(LIB)
    assert upward(edge_list) == []


def test_no_runtime_import_circle() -> None:
    _, edge_list = edges(LIB)
    assert cycles(runtime_graph(edge_list)) == []


def test_ops_and_safety_do_not_know_the_session() -> None:
    # not even for types: they take an OpsContext, which the session implements
    _, edge_list = edges(LIB)
    session = ("runbook.session", "runbook.session.")
    lower = [
        f"{e.source} -> {e.target}"
        for e in edge_list
        if e.target.startswith(session)
        and not e.source.startswith(session)
        and layer_of(e.source) < layer_of("runbook.session")
    ]
    assert lower == []


def test_the_gate_does_not_know_the_facade() -> None:
    # not even for types: the gate takes its run as a protocol (runbook.session.gate.Run)
    _, edge_list = edges(LIB)
    gate = next(prefixes for name, prefixes in LAYERS if name == "gate")
    back = [
        f"{e.source} -> {e.target}"
        for e in edge_list
        if e.source in gate and layer_of(e.target) > layer_of(e.source)
    ]
    assert back == []


def test_the_check_catches_an_upward_import_and_a_circle(tmp_path: Path) -> None:
    # the graph reader itself, on a made-up package with one of each mistake
    pkg = tmp_path / "runbook"
    (pkg / "ops").mkdir(parents=True)
    (pkg / "__init__.py").write_text("")
    (pkg / "ops" / "__init__.py").write_text("")
    (pkg / "session.py").write_text("from runbook.ops import api\n")
    (pkg / "ops" / "api.py").write_text(
        "from typing import TYPE_CHECKING\n"
        "if TYPE_CHECKING:\n    from runbook.session import Session\n"
        "def f():\n    from runbook.session import open_session\n"
    )
    _, edge_list = edges(pkg)
    assert upward(edge_list) == [
        "runbook.ops.api (ops) imports runbook.session (session) at line 5 inside a function"
    ]
    assert cycles(runtime_graph(edge_list)) == [["runbook.ops.api", "runbook.session"]]
    assert cycles(runtime_graph(edge_list, include_deferred=False)) == []


def test_every_notebook_has_its_scenario_module() -> None:
    # a newcomer finds the code of notebooks/X.ipynb in runbook/scenarios/X.py, or in the
    # package runbook/scenarios/X/ (its class in __init__.py, the pure judging beside it)
    notebooks = sorted(p.stem for p in (LIB.parents[1] / "notebooks").glob("*.ipynb"))
    scenarios = LIB / "scenarios"
    files = [p.stem for p in scenarios.glob("*.py")]
    packages = [p.parent.name for p in scenarios.glob("*/__init__.py")]
    modules = sorted(m for m in files + packages if not m.startswith("_"))
    assert notebooks == modules


# ------------------------------------------------------------------ the public surface

PUBLIC = {
    "OUTCOMES",
    "Check",
    "CommandError",
    "CommandFailed",
    "CommandInterrupted",
    "CommandTimedOut",
    "ConfirmationInterrupted",
    "ConnectionFailed",
    "DefinitionOfDoneNotMet",
    "Forbidden",
    "HTTPFailed",
    "HostKeyMismatch",
    "HostKeyUnknown",
    "NotConfirmed",
    "ParameterError",
    "Refusal",
    "RestoreFailed",
    "Result",
    "RunbookError",
    "Session",
    "Tripped",
    "open_scenario",
    "open_session",
    "outcome_of",
}


def test_public_surface_is_deliberate() -> None:
    assert set(runbook.__all__) == PUBLIC
    assert len(runbook.__all__) == len(set(runbook.__all__))
    for name in runbook.__all__:
        assert getattr(runbook, name) is not None


def test_one_error_tree_all_exported() -> None:
    tree = {
        obj
        for _, obj in inspect.getmembers(errors, inspect.isclass)
        if issubclass(obj, errors.RunbookError) and obj.__module__ == errors.__name__
    }
    assert {cls.__name__ for cls in tree} <= PUBLIC
    # no error class of the library lives outside errors.py (the sandbox's are its own)
    names = {cls.__name__ for cls in tree}
    strays = []
    for path in LIB.rglob("*.py"):
        if path.name == "errors.py" or "sandbox" in path.parts:
            continue
        for node in ast.walk(ast.parse(path.read_text())):
            if isinstance(node, ast.ClassDef):
                bases = {
                    b.id if isinstance(b, ast.Name) else getattr(b, "attr", "") for b in node.bases
                }
                if bases & names:
                    strays.append(f"{path.relative_to(LIB)}: class {node.name}")
    assert strays == []


@pytest.mark.parametrize(
    ("error", "outcome", "code"),
    [
        (errors.ParameterError("x"), "parameters", 2),
        (errors.DefinitionOfDoneNotMet([]), "dod_not_met", 3),
        (errors.Forbidden("rule", "act"), "refused", 4),
        (errors.NotConfirmed("x", environment="staging"), "refused", 4),
        (errors.HostKeyMismatch("x", target="t", expected="e", presented="p"), "refused", 4),
        (KeyboardInterrupt(), "interrupted", 5),
        (errors.CommandTimedOut("x", None), "timed_out", 6),  # type: ignore[arg-type]
        (errors.RestoreFailed("x"), "failed", 1),
        (RuntimeError("x"), "failed", 1),
    ],
)
def test_one_outcome_table(error: BaseException, outcome: str, code: int) -> None:
    # the session (record_failure) and the runner (papermill's error name) read the same table
    from runbook.cli import run

    assert errors.outcome_of(error) == outcome
    assert errors.outcome_of(type(error).__name__) == outcome
    assert errors.OUTCOMES[outcome] == code
    assert run.EXIT is errors.OUTCOMES
