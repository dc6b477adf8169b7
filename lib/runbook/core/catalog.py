"""`runbook list`: the scenarios, their parameters, and what each needs before it runs.

What a scenario needs comes from the notebook itself, so it cannot drift:

- the notebook metadata ``runbook`` (optional), e.g.
  ``{"changes": true, "secrets": ["ADMIN_KEY"], "approval": "second downgrade"}``;
- otherwise it is read off the parameters cell and the code: a ``confirm``
  parameter means the scenario changes things (confirmation needed off the
  sandbox), ``approved_by`` means a rule can ask for a named approver, and
  ``secrets.get("NAME")`` / the admin API name the secrets it reads.

Example::

    >>> needs_from_code(['s.api.admin_get("/x")', 'k = s.secrets.get("SENTRY_TOKEN")'])
    ['ADMIN_KEY', 'SENTRY_TOKEN']
"""

from __future__ import annotations

import json
import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from runbook.core.paths import notebooks_dir
from runbook.errors import ParameterError

_SECRET_GET = re.compile(r"secrets\.get\(\s*['\"]([A-Z0-9_]+)['\"]")
# calls that go through the admin API use ADMIN_KEY (api.py)
_ADMIN = re.compile(r"\.(admin_get|admin_post|dlq_stats|pending_approvals|drain)\(")


@dataclass
class Scenario:
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


def needs_from_code(
    sources: list[str],
    admin_key: str = "ADMIN_KEY",
    github_token: str = "GITHUB_TOKEN",  # noqa: S107 - a variable name, not a value
) -> list[str]:
    """Secret names the code reads (the admin API and GitHub by their profile names)."""
    found: set[str] = set()
    for src in sources:
        found.update(_SECRET_GET.findall(src))
        if _ADMIN.search(src) or "health.check_all" in src:
            found.add(admin_key)
        if ".github." in src or "health.check_all" in src:
            found.add(github_token)
    return sorted(found)


def _secret_names() -> dict[str, str]:
    try:
        from runbook.core.profile import load_profile

        secrets = load_profile("sandbox").secrets
        return {"admin_key": secrets.admin_key, "github_token": secrets.github_token}
    except Exception:
        return {}


def _as_variables(names: list[str]) -> list[str]:
    """Profile roles ("sentry_token") as the sandbox profile's variable names."""
    try:
        from runbook.core.profile import load_profile

        return resolve_secret_names(names, load_profile("sandbox"))
    except Exception:
        return list(names)


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


def describe(path: Path) -> Scenario:
    """What `runbook list` shows for one notebook."""
    nb = json.loads(path.read_text())
    declared = declared_parameters(path)
    params = {k: v.get("default") for k, v in declared.items()}
    meta = nb.get("metadata", {}).get("runbook", {}) or {}
    code = ["".join(c.get("source", "")) for c in nb.get("cells", []) if c["cell_type"] == "code"]
    title = ""
    for c in nb.get("cells", []):
        if c["cell_type"] == "markdown":
            first = "".join(c.get("source", "")).strip().splitlines()
            title = first[0].lstrip("# ").strip() if first else ""
            break
    return Scenario(
        name=path.stem,
        path=path,
        parameters=params,
        changes=bool(meta.get("changes", "confirm" in params)),
        approval=meta.get("approval")
        or ("a rule that names one" if "approved_by" in params else None),
        secrets=sorted(
            set(_as_variables(meta.get("secrets", [])))
            | set(needs_from_code(code, **_secret_names()))
        ),
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
    declares (metadata ``runbook.secrets``) or visibly reads (see `needs_from_code`).
    """
    names = list(explicit)
    path = notebooks_dir() / f"{scenario}.ipynb"
    if re.fullmatch(r"[A-Za-z0-9_-]+", scenario or "") and path.is_file():
        try:
            nb = json.loads(path.read_text())
        except ValueError:
            nb = {}
        meta = nb.get("metadata", {}).get("runbook", {}) or {}
        code = [
            "".join(c.get("source", ""))
            for c in nb.get("cells", [])
            if c.get("cell_type") == "code"
        ]
        names += list(meta.get("secrets", []))
        names += needs_from_code(
            code,
            admin_key=profile.secrets.admin_key,
            github_token=profile.secrets.github_token,
        )
    return resolve_secret_names(names, profile)


def list_text(notebooks: list[Path]) -> str:
    """The `runbook list` output."""
    out = []
    for path in notebooks:
        sc = describe(path)
        out.append(f"{sc.name}  {sc.title}")
        out.append("  parameters: " + ", ".join(f"{k}={v}" for k, v in sc.parameters.items()))
        out.append(f"  needs:      {sc.needs()}")
    return "\n".join(out)
