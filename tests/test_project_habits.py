"""The project's habits hold: pyproject.toml and environment.yml name the same
dependencies, and the fast run of scripts/check leaves out every test that
needs the sandbox."""

from __future__ import annotations

import re
import subprocess
import sys
import tomllib
from pathlib import Path

import yaml

ROOT = Path(__file__).resolve().parent.parent
# conda-forge spells a few packages differently
CONDA_NAMES = {"redis": "redis-py"}


def _name_and_spec(requirement: str) -> tuple[str, str]:
    """("psycopg", ">=3.1") from "psycopg[binary]>=3.1"; names lower-cased.

    >>> _name_and_spec("psycopg[binary]>=3.1")
    ('psycopg', '>=3.1')
    >>> _name_and_spec("types-PyYAML>=6.0")
    ('types-pyyaml', '>=6.0')
    """
    m = re.match(r"\s*([A-Za-z0-9_.-]+)(\[[^\]]*\])?\s*(.*)", requirement)
    assert m, requirement
    return m.group(1).lower(), m.group(3).split("#")[0].strip()


def test_pyproject_and_environment_yml_agree() -> None:
    project = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]
    wanted = dict(_name_and_spec(r) for r in project["dependencies"])
    for extra in project["optional-dependencies"].values():
        wanted.update(_name_and_spec(r) for r in extra)
    wanted = {CONDA_NAMES.get(k, k): v for k, v in wanted.items()}

    env = yaml.safe_load((ROOT / "environment.yml").read_text())
    have: dict[str, str] = {}
    for dep in env["dependencies"]:
        items = dep["pip"] if isinstance(dep, dict) else [dep]
        for item in items:
            if item.startswith("-e ") or item in ("python>=3.11", "pip"):
                continue
            name, spec = _name_and_spec(item)
            have[name] = spec
    missing = {k: v for k, v in wanted.items() if have.get(k) != v}
    extra = sorted(set(have) - set(wanted))
    assert not missing and not extra, (
        f"environment.yml disagrees with pyproject.toml: add or correct {missing}, remove {extra}"
    )


def test_fast_run_leaves_out_every_sandbox_and_twin_test() -> None:
    # every health_check test asks for the sandbox (directly or through
    # `healed`), every twin_deploy test the twin; none of the triage unit tests does
    # (the selection is scripts/check's)
    check = (ROOT / "scripts" / "check").read_text()
    selection = re.search(r'fast-tests .* -m "([^"]+)"', check)
    assert selection, "scripts/check runs the fast tests with -m"
    out = subprocess.run(
        [
            sys.executable,
            "-m",
            "pytest",
            "--co",
            "-q",
            "-p",
            "no:cacheprovider",
            "-m",
            selection.group(1),
            "tests/test_health_check.py",
            "tests/test_twin_deploy.py",
            "tests/test_triage_unit.py",
        ],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=120,
    )
    fast = [line for line in out.stdout.splitlines() if "::" in line]
    assert fast, out.stdout + out.stderr
    wrong = [t for t in fast if "test_triage_unit.py" not in t]
    assert not wrong, f"sandbox or twin tests in the fast run: {wrong}"
