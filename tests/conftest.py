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

`twin` (session scope): the production twin (lib/runbook/twin), built from the
cached layers and booted once per session in `$RUNBOOK_TEST_TWIN_DIR` (default
`<project>/.twin-test`), taken down at the end (`RUNBOOK_TEST_TWIN_REUSE=1`
keeps it). While it runs, `RUNBOOK_TWIN_DIR` points at it. Root and
systemd-nspawn are needed: elsewhere its tests skip with the reason, unless
`RUNBOOK_REQUIRE_TWIN=1` (scripts/test.sh as root, CI), where they fail. The
runner side reaches the twin through `twin_exec(twin, argv)`: the command runs
under `runbook twin exec`, in a private mount namespace whose /etc/hosts maps
api.dealix.me and the SaaS names, with SSL_CERT_FILE naming the twin's CA.
The test process itself never changes its own name resolution (unsharing the
mount namespace of a threaded pytest process is refused by the kernel).
"""

from __future__ import annotations

import contextlib
import os
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

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
        # a server the runbook has worked on: its armor installed by the runbook's own
        # preflight (health_check's Armor signal reads it back)
        armor_through_runbook("sandbox")
        yield sb
    finally:
        if not reuse:
            sb.down()
            # the test sandbox is thrown away: its armored files (the runbook made them
            # immutable) must not stop `rm -rf` of the checkout
            from runbook.sandbox.build.host import lift_armor

            lift_armor(sb.state_dir)
        if previous is None:
            os.environ.pop("RUNBOOK_SANDBOX_DIR", None)
        else:
            os.environ["RUNBOOK_SANDBOX_DIR"] = previous


def armor_through_runbook(env: str, run_dir: Path | None = None) -> list[Any]:
    """Install the server's armor as a changing scenario's preflight does, through a session."""
    import tempfile

    from runbook.scenarios._base import Scenario
    from runbook.session import open_session

    where = run_dir or Path(tempfile.mkdtemp(prefix="armor-run-"))
    # off the sandbox a change needs its confirmation, as `runbook run --confirm ENV` gives
    s = open_session("health_check", env, run_dir=where, confirm=env)
    try:
        return Scenario(s).armor_preflight()
    finally:
        s.close()


@pytest.fixture
def healed(sandbox: Sandbox) -> Iterator[Sandbox]:
    yield sandbox
    sandbox.heal()


@pytest.fixture
def env_restored(healed: Sandbox) -> Iterator[Sandbox]:
    """.env back as it was (a failover edits LLM_PROVIDER_PRIORITY), the API restarted."""
    env = Path(healed.state["app_dir"]) / ".env"
    original = env.read_bytes()
    yield healed
    if env.read_bytes() != original:
        env.write_bytes(original)
        healed.restart("dealix-api")
        healed.wait_api()
    for bak in env.parent.glob(".env.bak.*"):
        bak.unlink()


def _test_twin_dir() -> Path:
    env = os.environ.get("RUNBOOK_TEST_TWIN_DIR")
    return Path(env).expanduser().resolve() if env else project_root() / ".twin-test"


def twin_unavailable() -> str | None:
    """Why the twin cannot run here, or None."""
    import shutil

    if os.geteuid() != 0:
        return "the production twin needs root (systemd-nspawn, mounts, cgroups, veths)"
    missing = [t for t in ("systemd-nspawn", "debootstrap", "zstd") if not shutil.which(t)]
    if missing:
        return f"the production twin needs {', '.join(missing)} (scripts/setup.sh installs them)"
    return None


@pytest.fixture(scope="session")
def twin() -> Iterator[object]:
    why = twin_unavailable()
    if why:
        if os.environ.get("RUNBOOK_REQUIRE_TWIN") == "1":
            pytest.fail(f"RUNBOOK_REQUIRE_TWIN=1 but {why}")
        pytest.skip(why)
    from runbook.twin import Twin

    reuse = os.environ.get("RUNBOOK_TEST_TWIN_REUSE") == "1"
    t = Twin(_test_twin_dir())
    previous = os.environ.get("RUNBOOK_TWIN_DIR")
    os.environ["RUNBOOK_TWIN_DIR"] = str(t.dir)
    try:
        t.up(fresh=not reuse)
        # as for the sandbox: the armor a changing run's preflight installs, through a session
        armor_through_runbook("twin")
        yield t
    finally:
        if not reuse:
            t.down()
        if previous is None:
            os.environ.pop("RUNBOOK_TWIN_DIR", None)
        else:
            os.environ["RUNBOOK_TWIN_DIR"] = previous


def twin_exec(
    t: object, argv: list[str], timeout: float = 600, env: dict[str, str] | None = None
) -> subprocess.CompletedProcess:
    """Run argv on the runner side of the twin (`runbook twin exec --dir <twin> -- argv`)."""
    runbook = str(Path(sys.executable).with_name("runbook"))
    return subprocess.run(
        [runbook, "twin", "--dir", str(t.dir), "exec", "--", *argv],  # type: ignore[attr-defined]
        cwd=project_root(),
        capture_output=True,
        text=True,
        timeout=timeout,
        env={**os.environ, **(env or {})},
    )


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


def profile_keys(name: str) -> dict[str, object]:
    """parameters/<name>.yaml with its `extends:` chain merged, as flat dotted keys
    (`target.host`), before interpolation: what a profile diff test compares."""

    import yaml

    from runbook.core.paths import parameters_dir
    from runbook.core.profile import _extend

    def flatten(data: Any, prefix: str = "") -> dict[str, Any]:
        if isinstance(data, dict):
            out: dict[str, Any] = {}
            for k, v in data.items():
                out.update(flatten(v, f"{prefix}{k}."))
            return out
        return {prefix.rstrip("."): data}

    path = parameters_dir() / f"{name}.yaml"
    return flatten(_extend(yaml.safe_load(path.read_text()), path, parameters_dir(), [name]))


@contextlib.contextmanager
def fleet_twin(dir_env: str, default: str) -> Iterator[Any]:
    """A fresh fleet twin (`runbook twin up --fleet`) in `$dir_env` or <project>/`default`,
    down afterwards; a test module's fixture (each module its own, so none sees another's faults)."""
    why = twin_unavailable()
    if why:
        if os.environ.get("RUNBOOK_REQUIRE_TWIN") == "1":
            pytest.fail(f"RUNBOOK_REQUIRE_TWIN=1 but {why}")
        pytest.skip(why)
    from runbook.twin.fleet import Fleet

    env = os.environ.get(dir_env)
    f = Fleet(Path(env) if env else project_root() / default)
    previous = os.environ.get("RUNBOOK_TWIN_FLEET_DIR")
    os.environ["RUNBOOK_TWIN_FLEET_DIR"] = str(f.dir)
    try:
        f.up(fresh=True)
        yield f
    finally:
        f.down()
        if previous is None:
            os.environ.pop("RUNBOOK_TWIN_FLEET_DIR", None)
        else:
            os.environ["RUNBOOK_TWIN_FLEET_DIR"] = previous
