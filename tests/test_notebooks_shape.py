"""The committed notebooks: output-free, thin, on the project's kernel, safe by default.

The executed copies are the evidence; the committed ones are the procedure.
A stray output would leak an old run (or a secret) into git; logic in a
notebook would escape the library's tests and guards.
"""

from __future__ import annotations

import ast
import json
from pathlib import Path

import pytest

from runbook.core import catalog

ROOT = Path(__file__).resolve().parents[1]
NOTEBOOKS = sorted((ROOT / "notebooks").glob("*.ipynb"))
SCENARIOS = {
    "health_check",
    "deploy",
    "rollback",
    "database_down",
    "llm_provider_down",
    "restore_drill",
    "restore_incident",
    "security_incident",
    "review",
    "rolling_deploy",
    "fleet_rollback",
}


def test_every_scenario_has_its_notebook() -> None:
    assert {p.stem for p in NOTEBOOKS} == SCENARIOS


@pytest.mark.parametrize("path", NOTEBOOKS, ids=lambda p: p.stem)
def test_committed_notebook_shape(path: Path) -> None:
    nb = json.loads(path.read_text())
    assert nb["metadata"]["kernelspec"]["name"] == "dealix-runbook"
    code = [c for c in nb["cells"] if c["cell_type"] == "code"]
    for cell in code:
        assert cell.get("outputs") == [] and cell.get("execution_count") is None, (
            f"{path.name}: committed with outputs (clear them before committing)"
        )
        assert "papermill" not in cell.get("metadata", {}), f"{path.name}: an executed copy"
    # the first markdown cell names the runbook section it implements
    first = "".join(next(c for c in nb["cells"] if c["cell_type"] == "markdown")["source"])
    assert first.startswith("# ") and ("runbook" in first.lower() or "Runbook" in first)
    # safe by default: the parameters cell defaults to the sandbox and a real run
    params = catalog.declared_parameters(path)
    assert params["env"]["default"] == '"sandbox"', params["env"]
    assert params["dry_run"]["default"] == "False"
    meta = nb["metadata"].get("runbook", {})
    assert isinstance(meta.get("changes"), bool), f"{path.name}: metadata.runbook.changes"
    if meta["changes"]:
        for name in ("confirm", "break_stale_lock"):
            assert name in params, f"{path.name}: a changing notebook needs `{name}`"


@pytest.mark.parametrize("path", NOTEBOOKS, ids=lambda p: p.stem)
def test_notebooks_stay_thin(path: Path) -> None:
    """Prose plus short calls into lib/runbook: no raw commands, no loops of logic."""
    nb = json.loads(path.read_text())
    for cell in nb["cells"]:
        if cell["cell_type"] != "code":
            continue
        source = "".join(cell["source"])
        tree = ast.parse(source)
        raw = [
            node
            for node in ast.walk(tree)
            if isinstance(node, ast.Call)
            and isinstance(node.func, ast.Attribute)
            and node.func.attr in ("run", "probe")
            and isinstance(node.func.value, ast.Name)
            and node.func.value.id == "s"
        ]
        assert not raw, f"{path.name}: a raw s.run/s.probe; put the operation in lib/runbook"
        defs = [n for n in ast.walk(tree) if isinstance(n, (ast.FunctionDef, ast.ClassDef))]
        assert not defs, f"{path.name}: functions and classes belong in lib/runbook"
        assert len(source.splitlines()) <= 40, (
            f"{path.name}: a code cell of {len(source.splitlines())} lines"
        )


def _code(path: Path) -> list[str]:
    nb = json.loads(path.read_text())
    return ["".join(c["source"]) for c in nb["cells"] if c["cell_type"] == "code"]


@pytest.mark.parametrize("path", NOTEBOOKS, ids=lambda p: p.stem)
def test_first_cell_opens_the_scenario(path: Path) -> None:
    # one call reads the parameters cell: nothing is repeated in the notebook
    first = _code(path)[1]
    lines = [line for line in first.splitlines() if line.strip() and not line.startswith("#")]
    assert lines[0] == "from runbook import open_scenario", first
    call = ast.parse(lines[1]).body[0]
    assert isinstance(call, ast.Assign) and isinstance(call.value, ast.Call), first
    assert ast.unparse(call.value) == f"open_scenario('{path.stem}')", first
    assert ast.unparse(call.targets[0]).startswith("(s, "), first
    assert lines[2:] in ([], ["s"]), first


@pytest.mark.parametrize("path", NOTEBOOKS, ids=lambda p: p.stem)
def test_each_parameter_is_written_once(path: Path) -> None:
    # only the parameters cell names a parameter; the scenario class holds its value
    declared = set(catalog.parameter_names(path))
    for source in _code(path)[1:]:
        used = {n.id for n in ast.walk(ast.parse(source)) if isinstance(n, ast.Name)}
        assert not used & declared, (
            f"{path.name}: {sorted(used & declared)} outside the parameters cell"
        )


# the parameters a notebook refuses to run without (its default is None on purpose)
REQUIRED = {
    "rollback": {"reason": "a test"},
    "restore_incident": {"reason": "a test"},
    # the fleet scenarios refuse one server: opened on the example fleet (nothing connects)
    "rolling_deploy": {"env": "production-fleet"},
    "fleet_rollback": {"env": "production-fleet", "reason": "a test"},
}


@pytest.mark.parametrize("path", NOTEBOOKS, ids=lambda p: p.stem)
def test_the_record_holds_every_declared_parameter(
    path: Path, sandbox, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    from runbook import open_scenario

    monkeypatch.setenv("RUNBOOK_OUTPUTS", str(tmp_path))
    monkeypatch.delenv("RUNBOOK_RUN_DIR", raising=False)
    namespace: dict = {}
    exec(_code(path)[0], namespace)  # noqa: S102 - the committed parameters cell, as the kernel runs it
    namespace.update(REQUIRED.get(path.stem, {}))
    namespace["dry_run"] = True  # opening must change nothing
    declared = catalog.parameter_names(path)
    s, scenario = open_scenario(path.stem, namespace=namespace)
    try:
        record = json.loads((s.run_dir / "record.json").read_text())
    finally:
        s.close()
    assert type(scenario).__module__ == f"runbook.scenarios.{path.stem}"
    assert sorted(record["parameters"]) == sorted(declared)
    for name in declared:
        assert record["parameters"][name] == namespace[name], name
