"""`runbook list`: the scenarios, their parameters, and what each needs before it runs.

What a scenario needs is declared in its notebook, once, and read from there:

- the notebook metadata ``runbook``, e.g.
  ``{"changes": true, "secrets": ["admin_key"], "approval": "second downgrade"}``:
  whether it changes things (confirmation needed off the sandbox), the secrets
  it needs as profile roles (``admin_key``, ``github_token``: each environment's
  profile names the variable), and the rule that asks for a named approver;
- the parameters cell: an ``approved_by`` parameter means a rule can ask for one.

Nothing is guessed from the code (tests/test_catalog.py holds every
notebook's declaration against the secrets its scenario reads).

Example::

    >>> sc = describe(notebooks_dir() / "health_check.ipynb")
    >>> sc.secrets, sc.needs()
    (['admin_key', 'github_token'], 'read-only; secrets admin_key, github_token')
"""

from __future__ import annotations

import json
import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from runbook.core.paths import notebooks_dir
from runbook.errors import ParameterError


@dataclass
class NotebookInfo:
    """What `runbook list` shows of one notebook (the scenario class is runbook.scenarios._base)."""

    name: str
    path: Path
    parameters: dict[str, Any] = field(default_factory=dict)
    changes: bool = False
    approval: str | None = None
    secrets: list[str] = field(default_factory=list)
    title: str = ""

    def needs(self) -> str:
        parts = []
        parts.append(
            "confirmation off the sandbox (--confirm ENV)" if self.changes else "read-only"
        )
        if self.approval:
            parts.append(f"approver (--approved-by NAME) for {self.approval}")
        if self.secrets:
            parts.append("secrets " + ", ".join(self.secrets))
        return "; ".join(parts)


def declared(path: Path) -> dict[str, Any]:
    """The notebook's ``runbook`` metadata: what it declares it changes and needs."""
    try:
        nb = json.loads(path.read_text())
    except ValueError:
        return {}
    return dict(nb.get("metadata", {}).get("runbook", {}) or {})


def notebook_path(scenario: str) -> Path:
    path = notebooks_dir() / f"{scenario}.ipynb"
    if not path.exists():
        known = sorted(p.stem for p in notebooks_dir().glob("*.ipynb"))
        raise ParameterError(
            f"no scenario {scenario!r} (known: {', '.join(known)})", key="scenario"
        )
    return path


def declared_parameters(path: Path) -> dict[str, dict[str, Any]]:
    """The notebook's parameters cell, as papermill reads it, completed by Python's parser.

    papermill's line parser skips a line like ``backup = None  # None = the newest``
    (an ``=`` in the comment) with a warning, and would then refuse nothing and
    document nothing for it; `ast` reads every assignment.
    """
    import ast
    import logging

    import papermill

    log = logging.getLogger("papermill")
    level = log.level
    log.setLevel(logging.ERROR)
    try:
        declared = dict(papermill.inspect_notebook(str(path)))
    finally:
        log.setLevel(level)
    nb = json.loads(path.read_text())
    for cell in nb.get("cells", []):
        if "parameters" not in cell.get("metadata", {}).get("tags", []):
            continue
        source = "".join(cell.get("source", ""))
        try:
            tree = ast.parse(source)
        except SyntaxError:
            break
        for node in tree.body:
            if isinstance(node, (ast.Assign, ast.AnnAssign)):
                targets = node.targets if isinstance(node, ast.Assign) else [node.target]
                for target in targets:
                    if isinstance(target, ast.Name) and target.id not in declared:
                        declared[target.id] = {
                            "name": target.id,
                            "inferred_type_name": "None",
                            # `x: int` alone has no value to show
                            "default": (
                                ast.get_source_segment(source, node.value) if node.value else None
                            ),
                            "help": "",
                        }
        break
    return declared


def parameter_names(path: Path) -> list[str]:
    """The names the notebook's tagged `parameters` cell assigns, in order (ast, no papermill).

    >>> parameter_names(notebooks_dir() / "health_check.ipynb")
    ['env', 'dry_run']
    """
    import ast

    nb = json.loads(path.read_text())
    for cell in nb.get("cells", []):
        if "parameters" not in cell.get("metadata", {}).get("tags", []):
            continue
        names: list[str] = []
        for node in ast.parse("".join(cell.get("source", ""))).body:
            targets = (
                node.targets
                if isinstance(node, ast.Assign)
                else ([node.target] if isinstance(node, ast.AnnAssign) else [])
            )
            names += [t.id for t in targets if isinstance(t, ast.Name) and t.id not in names]
        return names
    raise ParameterError(f"{path.name} has no cell tagged 'parameters'", key="notebook")


def describe(path: Path, profile: Any = None) -> NotebookInfo:
    """What `runbook list` shows for one notebook; secrets as `profile`'s variables if given,
    else as the roles the notebook declares."""
    nb = json.loads(path.read_text())
    declared_params = declared_parameters(path)
    params = {k: v.get("default") for k, v in declared_params.items()}
    meta = declared(path)
    title = ""
    for c in nb.get("cells", []):
        if c["cell_type"] == "markdown":
            first = "".join(c.get("source", "")).strip().splitlines()
            title = first[0].lstrip("# ").strip() if first else ""
            break
    secrets = list(meta.get("secrets", []))
    return NotebookInfo(
        name=path.stem,
        path=path,
        parameters=params,
        changes=bool(meta.get("changes", "confirm" in params)),
        approval=meta.get("approval")
        or ("a rule that names one" if "approved_by" in params else None),
        secrets=sorted(set(resolve_secret_names(secrets, profile) if profile else secrets)),
        title=title,
    )


def resolve_secret_names(names: list[str] | tuple[str, ...], profile: Any) -> list[str]:
    """Secret names as environment variables: a `secrets:` role of the profile
    ("sentry_token", "admin_key") becomes that environment's variable name.

    >>> from runbook.core.profile import load_profile
    >>> resolve_secret_names(["sentry_token", "EXTRA_TOKEN"], load_profile("production"))
    ['SENTRY_AUTH_TOKEN', 'EXTRA_TOKEN']
    """
    out: list[str] = []
    roles = {f for f in vars(profile.secrets) if f != "file"}
    for name in names:
        var = getattr(profile.secrets, name) if name in roles else name
        if var and var not in out:
            out.append(var)
    return out


def required_secrets(
    scenario: str, profile: Any, explicit: list[str] | tuple[str, ...] = ()
) -> list[str]:
    """Every secret a run of `scenario` needs, as this profile's variable names.

    `explicit` (the session's `require_secrets`) plus what the scenario's notebook
    declares (metadata ``runbook.secrets``).
    """
    names = list(explicit)
    path = notebooks_dir() / f"{scenario}.ipynb"
    if re.fullmatch(r"[A-Za-z0-9_-]+", scenario or "") and path.is_file():
        names += list(declared(path).get("secrets", []))
    return resolve_secret_names(names, profile)


def list_text(notebooks: list[Path], profile: Any = None) -> str:
    """The `runbook list` output; secrets by `profile`'s variable names when one is given."""
    out = []
    for path in notebooks:
        sc = describe(path, profile)
        out.append(f"{sc.name}  {sc.title}")
        out.append("  parameters: " + ", ".join(f"{k}={v}" for k, v in sc.parameters.items()))
        out.append(f"  needs:      {sc.needs()}")
    return "\n".join(out)
