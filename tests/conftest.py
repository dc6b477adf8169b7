"""Shared fixtures.

`sandbox` (session scope): a real sandbox, built fresh once per test
session in `$RUNBOOK_TEST_SANDBOX_DIR` (default `<project>/.sandbox-test`,
never the operator's `.sandbox`) and taken down at the end. While it runs,
`RUNBOOK_SANDBOX_DIR` points at it, so subprocesses (the `runbook` CLI,
papermill kernels) find the same sandbox. `RUNBOOK_TEST_SANDBOX_REUSE=1`
keeps a running one between sessions (quicker when iterating; the seed
data then ages).

Tests that use either are marked `sandbox`; `scripts/check` runs the rest
(`pytest -m "not sandbox"`) as its fast tests.

`healed`: the sandbox again, healed after the test; use it in every test
that applies a fault::

    def test_something_under_postgres_down(healed):
        healed.fault("postgres-down")
        ...
"""

from __future__ import annotations

import os
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import nbformat
import pytest

from runbook.sandbox import Sandbox, project_root


def pytest_configure(config: pytest.Config) -> None:
    config.addinivalue_line(
        "markers", "sandbox: needs the real sandbox (set automatically from the fixtures)"
    )


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    # Marked from the fixture closure rather than by hand, so a new test that
    # asks for the sandbox (directly or through `healed`) can never slip into
    # scripts/check's fast run, which deselects "sandbox".
    for item in items:
        if "sandbox" in getattr(item, "fixturenames", ()):
            item.add_marker(pytest.mark.sandbox)


def _test_state_dir() -> Path:
    env = os.environ.get("RUNBOOK_TEST_SANDBOX_DIR")
    return Path(env).expanduser().resolve() if env else project_root() / ".sandbox-test"


@pytest.fixture(scope="session")
def sandbox() -> Iterator[Sandbox]:
    reuse = os.environ.get("RUNBOOK_TEST_SANDBOX_REUSE") == "1"
    sb = Sandbox(_test_state_dir())
    previous = os.environ.get("RUNBOOK_SANDBOX_DIR")
    os.environ["RUNBOOK_SANDBOX_DIR"] = str(sb.state_dir)
    try:
        sb.up(fresh=not reuse)
        yield sb
    finally:
        if not reuse:
            sb.down()
        if previous is None:
            os.environ.pop("RUNBOOK_SANDBOX_DIR", None)
        else:
            os.environ["RUNBOOK_SANDBOX_DIR"] = previous


@pytest.fixture
def healed(sandbox: Sandbox) -> Iterator[Sandbox]:
    yield sandbox
    sandbox.heal()


def plain_papermill(scenario: str, out: Path, timeout: float = 600) -> subprocess.CompletedProcess:
    """Run notebooks/<scenario>.ipynb exactly as the README's crontab line does.

    `python -m papermill notebooks/<scenario>.ipynb OUT` from the project's
    root: no parameters, no `-k` (the notebook's kernelspec must name a
    kernel this interpreter finds) and no `--cwd`.
    """
    return subprocess.run(
        [sys.executable, "-m", "papermill", f"notebooks/{scenario}.ipynb", str(out)],
        cwd=project_root(),
        capture_output=True,
        text=True,
        timeout=timeout,
    )


def runbook_notebook() -> nbformat.NotebookNode:
    """A new, empty notebook on the project's kernel (tests add their cells)."""
    nb = nbformat.v4.new_notebook()
    nb.metadata["kernelspec"] = {
        "name": "dealix-runbook",
        "display_name": "Dealix runbook (.venv)",
        "language": "python",
    }
    return nb
