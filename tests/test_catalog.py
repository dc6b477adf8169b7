"""What `runbook list` and the session's secret check read: each notebook's declaration.

A notebook declares in its metadata (``runbook.changes``, ``runbook.secrets``)
what it changes and which secrets it needs; nothing is guessed from its text.
These tests hold every declaration against the code, read with ast (nothing
runs, no sandbox): a changing notebook has a ``confirm`` parameter, and the declared secrets are exactly the roles its
scenario module reads for sure, through the `runbook.ops` clients it calls
(a method that reads ``profile.secrets.<role>``, or calls one that does) or
a required ``secrets.get`` of its own.
"""

from __future__ import annotations

import ast
import importlib
import json
import os
import subprocess
from dataclasses import fields
from pathlib import Path

import pytest

import runbook
from runbook.core import catalog
from runbook.core.paths import notebooks_dir
from runbook.core.profile import Secrets

LIB = Path(runbook.__file__).parent
ROOT = LIB.parents[1]
ROLES = {f.name for f in fields(Secrets)} - {"file"}
NOTEBOOKS = sorted(notebooks_dir().glob("*.ipynb"))


def _role(node: ast.AST) -> str | None:
    """`<anything>.secrets.<role>` -> role."""
    if (
        isinstance(node, ast.Attribute)
        and node.attr in ROLES
        and isinstance(node.value, ast.Attribute)
        and node.value.attr == "secrets"
    ):
        return node.attr
    return None


def _optional(call: ast.Call) -> bool:
    return any(
        k.arg == "required" and isinstance(k.value, ast.Constant) and k.value.value is False
        for k in call.keywords
    )


def _secret_reads(tree: ast.AST) -> set[str]:
    """Roles read by a required `secrets.get(<...>.secrets.<role>)` in `tree`, the
    name also through a variable (`var = s.profile.secrets.admin_key`)."""
    names = {
        t.id: role
        for node in ast.walk(tree)
        if isinstance(node, ast.Assign) and (role := _role(node.value))
        for t in node.targets
        if isinstance(t, ast.Name)
    }
    out = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Call) and isinstance(node.func, ast.Attribute):
            if node.func.attr == "get" and node.args and not _optional(node):
                arg = node.args[0]
                role = _role(arg) or (names.get(arg.id) if isinstance(arg, ast.Name) else None)
                if role:
                    out.add(role)
    return out


def _client_methods() -> dict[str, dict[str, set[str]]]:
    """runbook.ops class name -> {method: the roles it reads, itself or via self.<method>()}."""
    classes: dict[str, dict[str, set[str]]] = {}
    for path in sorted((LIB / "ops").glob("*.py")):
        for cls in ast.parse(path.read_text()).body:
            if not isinstance(cls, ast.ClassDef):
                continue
            reads: dict[str, set[str]] = {}
            calls: dict[str, set[str]] = {}
            for fn in cls.body:
                if isinstance(fn, ast.FunctionDef):
                    reads[fn.name] = _secret_reads(fn)
                    calls[fn.name] = {
                        n.func.attr
                        for n in ast.walk(fn)
                        if isinstance(n, ast.Call)
                        and isinstance(n.func, ast.Attribute)
                        and isinstance(n.func.value, ast.Name)
                        and n.func.value.id == "self"
                    }
            changed = True
            while changed:
                changed = False
                for name, callees in calls.items():
                    for callee in callees & reads.keys():
                        if not reads[callee] <= reads[name]:
                            reads[name] |= reads[callee]
                            changed = True
            classes[cls.name] = {m: r for m, r in reads.items() if r}
    return classes


def _session_clients() -> dict[str, str]:
    """Session attribute (s.api) -> the runbook.ops class it builds (DealixAPI): read from
    the class itself, so the way the session writes its clients cannot hide one."""
    from functools import cached_property

    from runbook.session import Session

    out = {}
    for name, attr in vars(Session).items():
        if isinstance(attr, cached_property):
            built = attr.func
            if isinstance(built, type) and built.__module__.startswith("runbook.ops."):
                out[name] = built.__name__
    return out


def read_roles(scenario: str) -> set[str]:
    """The secret roles the scenario's module (and the private scenario helpers it
    imports) reads for sure."""
    clients = _client_methods()
    attrs = _session_clients()
    module = importlib.import_module(f"runbook.scenarios.{scenario}")
    sources = [Path(str(module.__file__))]
    tree = ast.parse(sources[0].read_text())
    for node in ast.walk(tree):
        if isinstance(node, ast.ImportFrom) and (node.module or "").startswith(
            "runbook.scenarios._"
        ):
            helper = LIB / "scenarios" / f"{node.module.rsplit('.', 1)[1]}.py"
            if helper not in sources:
                sources.append(helper)
    roles: set[str] = set()
    for path in sources:
        tree = ast.parse(path.read_text())
        roles |= _secret_reads(tree)
        constructed = {
            n.func.id
            for n in ast.walk(tree)
            if isinstance(n, ast.Call) and isinstance(n.func, ast.Name)
        } & clients.keys()
        for n in ast.walk(tree):
            if not (isinstance(n, ast.Call) and isinstance(n.func, ast.Attribute)):
                continue
            method, owner = n.func.attr, n.func.value
            # s.api.admin_get(...), self.s.github.ci_green(...)
            if isinstance(owner, ast.Attribute) and owner.attr in attrs:
                roles |= clients.get(attrs[owner.attr], {}).get(method, set())
            # Sentry(s) ... sentry.rate(...): a client the module builds itself
            for cls in constructed:
                roles |= clients[cls].get(method, set())
    return roles


def test_the_reader_finds_what_a_client_reads() -> None:
    # the reader itself: the admin API's admin calls read admin_key, its liveness does not
    api = _client_methods()["DealixAPI"]
    assert api["admin_get"] == {"admin_key"} and "health" not in api
    assert _session_clients()["api"] == "DealixAPI"


@pytest.mark.parametrize("path", NOTEBOOKS, ids=lambda p: p.stem)
def test_every_notebook_declares_what_it_changes_and_needs(path: Path) -> None:
    meta = json.loads(path.read_text())["metadata"].get("runbook")
    assert isinstance(meta, dict), f"{path.name}: metadata 'runbook' is missing"
    assert isinstance(meta.get("changes"), bool), f"{path.name}: runbook.changes is missing"
    assert isinstance(meta.get("secrets"), list), f"{path.name}: runbook.secrets is missing"
    unknown = set(meta["secrets"]) - ROLES
    assert not unknown, f"{path.name}: {unknown} are not profile roles ({sorted(ROLES)})"
    # a changing notebook asks for confirmation off the sandbox (review takes a confirm
    # too, for the report it writes, and is read-only on the server)
    if meta["changes"]:
        assert "confirm" in catalog.parameter_names(path), path.name


@pytest.mark.parametrize("path", NOTEBOOKS, ids=lambda p: p.stem)
def test_declared_secrets_are_what_the_scenario_reads(path: Path) -> None:
    from runbook.scenarios import _base

    declared = set(catalog.declared(path)["secrets"])
    # a scenario class may add secrets to check before the first change (require_secrets)
    extra = set(_base.scenario_class(path.stem).require_secrets)
    assert declared | extra == read_roles(path.stem), path.name


def test_runbook_list_needs_no_sandbox(tmp_path: Path) -> None:
    env = dict(os.environ, RUNBOOK_SANDBOX_DIR=str(tmp_path / "no-sandbox"))
    cli = subprocess.run(
        [str(ROOT / ".venv/bin/runbook"), "list"], capture_output=True, text=True, env=env
    )
    assert cli.returncode == 0, cli.stderr
    lines = cli.stdout.splitlines()
    listed = {line.split()[0] for line in lines if line and not line.startswith(" ")}
    assert {p.stem for p in NOTEBOOKS} <= listed
    assert "  needs:      read-only; secrets admin_key, github_token" in lines
    # what needs a sandbox (its variable names) is left out, said once, with the fix
    assert lines[-1].startswith("secrets are shown as profile roles") and "sandbox up" in lines[-1]
    assert sum("sandbox up" in line for line in lines) == 1
