"""Where the project's parts are, from any checkout location."""

from __future__ import annotations

import os
import subprocess
from functools import cache
from pathlib import Path


@cache
def project_root() -> Path:
    """The checkout: `$RUNBOOK_HOME`, else the folder above lib/ holding pyproject.toml."""
    env = os.environ.get("RUNBOOK_HOME")
    if env:
        return Path(env).resolve()
    here = Path(__file__).resolve()
    for parent in here.parents:
        if (parent / "pyproject.toml").is_file() and (parent / "parameters").is_dir():
            return parent
    raise RuntimeError(
        f"cannot find the project root (no pyproject.toml above {here}); set RUNBOOK_HOME"
    )


def runbook_sha() -> str | None:
    """The commit the checkout is at (record.json's `runbook_sha`), None outside git."""
    try:
        out = subprocess.run(
            ["git", "-C", str(project_root()), "rev-parse", "HEAD"],
            capture_output=True,
            text=True,
            timeout=5,
        )
    except (OSError, subprocess.TimeoutExpired):
        return None
    return out.stdout.strip() or None


def parameters_dir() -> Path:
    """Environment profiles: `$RUNBOOK_PARAMETERS_DIR`, else parameters/ in the checkout."""
    env = os.environ.get("RUNBOOK_PARAMETERS_DIR")
    return Path(env).resolve() if env else project_root() / "parameters"


def notebooks_dir() -> Path:
    return project_root() / "notebooks"


def outputs_dir() -> Path:
    """Where evidence goes: `$RUNBOOK_OUTPUTS`, else outputs/ in the checkout."""
    env = os.environ.get("RUNBOOK_OUTPUTS")
    return Path(env).resolve() if env else project_root() / "outputs"


def sandbox_state_dir() -> Path:
    """The sandbox's state dir: `$RUNBOOK_SANDBOX_DIR`, else .sandbox/ in the checkout."""
    env = os.environ.get("RUNBOOK_SANDBOX_DIR")
    return Path(env).expanduser().resolve() if env else project_root() / ".sandbox"
