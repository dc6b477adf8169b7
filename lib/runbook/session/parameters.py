"""What papermill injected into a notebook run, read back from the kernel's history.

papermill only warns about an unknown `-p` name and runs on; the session
refuses it instead (`check_papermill_injection`), and builds its rerun
command from what was injected.
"""

from __future__ import annotations

import ast
from typing import Any

from runbook.errors import ParameterError

PAPERMILL_MARK = "# Parameters"


def assigned(source: str) -> dict[str, Any]:
    """Names a cell assigns at top level, with their literal values when it has them.

    >>> assigned("env = 'staging'\\nbackup: str | None = None\\nx = f()\\nprint(env)")
    {'env': 'staging', 'backup': None, 'x': None}
    """
    try:
        tree = ast.parse(source)
    except SyntaxError:
        return {}
    names: dict[str, Any] = {}
    for node in tree.body:
        value: ast.expr | None
        if isinstance(node, ast.Assign):
            targets, value = node.targets, node.value
        elif isinstance(node, ast.AnnAssign):
            targets, value = [node.target], node.value
        else:
            continue
        for target in targets:
            if isinstance(target, ast.Name):
                try:
                    names[target.id] = ast.literal_eval(value) if value else None
                except ValueError:
                    names[target.id] = None
    return names


def check_papermill_injection(ip: Any) -> dict[str, Any]:
    r"""Refuse parameters the notebook does not declare, under plain papermill too.

    papermill only warns about an unknown `-p` name and runs on: a typo such as
    `-p bakup X` would silently restore the newest backup. Its injected cell
    (marked "# Parameters") runs right after the notebook's parameters cell,
    so both are in the kernel's input history. Returns what was injected.

    >>> class Kernel:
    ...     user_ns = {"In": ["", "env = 'sandbox'\nbackup = None", "# Parameters\nbakup = 'x'\n"]}
    >>> check_papermill_injection(Kernel())
    Traceback (most recent call last):
    ...
    runbook.errors.ParameterError: papermill passed a parameter this notebook does not declare: bakup. ...
    """
    history = getattr(ip, "user_ns", {}).get("In") if ip is not None else None
    if not history:
        return {}
    for index in range(len(history) - 1, 0, -1):
        if str(history[index]).lstrip().startswith(PAPERMILL_MARK):
            break
    else:
        return {}
    injected = assigned(str(history[index]))
    declared = assigned(str(history[index - 1])) if index > 1 else {}
    unknown = sorted(set(injected) - set(declared))
    if unknown:
        raise ParameterError(
            "papermill passed a parameter this notebook does not declare: "
            f"{', '.join(unknown)}. Nothing ran. Declared: {', '.join(declared) or 'none'}; "
            "fix the -p name (papermill itself only warns).",
            key=unknown[0],
        )
    return injected
