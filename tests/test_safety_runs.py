"""The safety model through `runbook run` (papermill, a real kernel) against the sandbox:
a stale host lock needs the explicit flag and breaking it is recorded; the lock is
released when a run fails; parameters holding secrets never reach papermill."""

from __future__ import annotations

import getpass
import json
import os
from pathlib import Path

import nbformat
import pytest
from conftest import runbook_notebook

from runbook import ParameterError, cli
from runbook.cli import run as runner
from runbook.core import catalog
from runbook.scenarios._base import SESSION_KEYWORDS


def _lock_dir(sb) -> Path:
    return Path(sb.state["log_dir"]).parent / "lock" / "dealix-runbook.lock"


def _record(run_dir: Path) -> dict:
    return json.loads((run_dir / "record.json").read_text())


def _events(run_dir: Path) -> list[dict]:
    return [json.loads(x) for x in (run_dir / "commands.jsonl").read_text().splitlines()]


@pytest.mark.parametrize("scenario", ["restore_drill", "restore_incident", "security_incident"])
def test_notebooks_declare_break_stale_lock_and_pass_it_on(scenario: str) -> None:
    path = catalog.notebook_path(scenario)
    assert catalog.declared_parameters(path)["break_stale_lock"]["default"] == "False"
    nb = nbformat.read(path, as_version=4)
    # open_scenario reads the parameters cell and hands the session its keywords
    opening = next(c.source for c in nb.cells if "open_scenario(" in c.source)
    assert f'open_scenario("{scenario}")' in opening
    assert "break_stale_lock" in SESSION_KEYWORDS


def test_stale_lock_is_broken_only_with_the_flag_and_recorded(
    sandbox, tmp_path, monkeypatch
) -> None:
    monkeypatch.setenv("RUNBOOK_OUTPUTS", str(tmp_path / "outputs"))
    lock = _lock_dir(sandbox)
    lock.mkdir(parents=True)
    ghost = {
        "operator": "ghost",
        "operator_host": "gone.example",
        "scenario": "deploy",
        "environment": "sandbox",
        "started": "2026-01-01T00:00:00Z",
    }
    (lock / "owner.json").write_text(json.dumps(ghost))
    (lock / "heartbeat").touch()
    os.utime(lock / "heartbeat", (1_700_000_000, 1_700_000_000))  # its run died long ago
    try:
        code, run_dir = runner.run("restore_drill", {}, quiet=True)
        rec = _record(run_dir)
        assert (code, rec["outcome"]) == (4, "refused")
        message = rec["error"]["message"]
        assert "ghost@gone.example" in message and "2026-01-01T00:00:00Z" in message
        assert "runbook run restore_drill --break-stale-lock" in message
        assert "-p break_stale_lock True" in message
        assert json.loads((lock / "owner.json").read_text())["operator"] == "ghost"
        assert rec["changes"] == []
        assert not sandbox.query(
            "SELECT 1 FROM pg_database WHERE datname = 'dealix_restore_test'", dbname="postgres"
        )
        # the CLI flag maps to the notebook's parameter
        assert cli.main(["run", "restore_drill", "--break-stale-lock"]) == 0
        runs = sorted((tmp_path / "outputs" / "sandbox" / "restore_drill").iterdir())
        assert len(runs) == 2
        rec = _record(runs[-1])
        assert rec["outcome"] == "ok" and rec["parameters"]["break_stale_lock"] is True
        broken = rec["lock"]["broken"]
        assert broken["previous_holder"]["operator"] == "ghost"
        assert broken["by"]["operator"] == getpass.getuser()
        assert broken["by"]["scenario"] == "restore_drill" and broken["at"]
        events = [e for e in _events(runs[-1]) if e.get("kind") == "lock"]
        assert [e["event"] for e in events] == ["broken", "acquired", "released"]
        assert not lock.exists()
    finally:
        if lock.exists():
            for f in lock.iterdir():
                f.unlink()
            lock.rmdir()


def _failing_notebook(path: Path) -> Path:
    nb = runbook_notebook()
    nb.cells = [
        nbformat.v4.new_code_cell(
            'env = "sandbox"\ndry_run = False\nconfirm = None', metadata={"tags": ["parameters"]}
        ),
        nbformat.v4.new_code_cell(
            "from runbook import open_session\n"
            "s = open_session('lock_then_fail', env=env, dry_run=dry_run, confirm=confirm)\n"
            "with s.step('1. Change'):\n"
            "    s.run(['true'])\n"
            "assert s.lock is not None and s.lock.held\n"
        ),
        nbformat.v4.new_code_cell("with s.step('2. Fail'):\n    s.run(['false'])\n"),
        nbformat.v4.new_code_cell("s.done()"),
    ]
    nbformat.write(nb, path)
    return path


def test_the_lock_is_released_when_a_run_fails(sandbox, tmp_path, monkeypatch) -> None:
    monkeypatch.setenv("RUNBOOK_OUTPUTS", str(tmp_path / "outputs"))
    nb = _failing_notebook(tmp_path / "lock_then_fail.ipynb")
    code, run_dir = runner.run_notebook(nb, "lock_then_fail", {}, quiet=True)
    rec = _record(run_dir)
    assert (code, rec["outcome"], rec["failed_step"]) == (1, "failed", "2. Fail")
    assert rec["lock"]["held"] is True  # it was held while the run worked ...
    assert not _lock_dir(sandbox).exists()  # ... and is gone now the run ended
    lock_events = [e["event"] for e in _events(run_dir) if e.get("kind") == "lock"]
    assert lock_events == ["acquired", "released"]
    # the next run is not held back
    code, run_dir = runner.run_notebook(nb, "lock_then_fail", {}, quiet=True)
    assert code == 1 and _record(run_dir)["failed_step"] == "2. Fail"
    assert not _lock_dir(sandbox).exists()


def test_runner_refuses_parameters_holding_environment_secrets(tmp_path, monkeypatch) -> None:
    secret = "fix4-admin-key-from-the-environment-0123"
    monkeypatch.setenv("DEALIX_ADMIN_KEY", secret)  # production's admin_key variable
    monkeypatch.setenv("RUNBOOK_OUTPUTS", str(tmp_path / "outputs"))
    for params, key in (
        ({"env": "production", "allow_ssh_from": secret}, "allow_ssh_from"),
        ({"env": "production", "known_addresses": ["203.0.113.9", secret]}, "known_addresses[1]"),
    ):
        with pytest.raises(ParameterError) as info:
            runner.validate_parameters("security_incident", params)
        assert info.value.key == key and secret not in str(info.value)
    # the CLI stops there: exit 2, no run folder, nothing executed
    code = cli.main(
        ["run", "security_incident", "--env", "production", "-p", "allow_ssh_from", secret]
    )
    assert code == runner.EXIT["parameters"]
    assert not (tmp_path / "outputs").exists()
    runner.validate_parameters(
        "security_incident", {"env": "production", "known_addresses": ["203.0.113.9"]}
    )


def _dead_process() -> dict:
    """The liveness facts of a process of this machine that has exited."""
    import subprocess
    import sys

    out = subprocess.run(
        [
            sys.executable,
            "-c",
            "import json; from runbook.evidence.liveness import this_process; "
            "print(json.dumps(this_process()))",
        ],
        capture_output=True,
        text=True,
        check=True,
    ).stdout
    return json.loads(out)


@pytest.mark.parametrize("holder", ["restore_drill", "deploy"])
def test_a_dead_drills_lock_is_broken_by_the_next_run_and_only_a_drills(
    sandbox, tmp_path, monkeypatch, holder: str
) -> None:
    """A drill killed by its timer left the lock: the next drill breaks it by itself, on two
    proofs (its process is gone from this machine, its heartbeat stopped), and records why.
    A dead deploy may have left the server half changed: a person breaks that one."""
    from runbook.evidence.liveness import alive

    monkeypatch.setenv("RUNBOOK_OUTPUTS", str(tmp_path / "outputs"))
    lock = _lock_dir(sandbox)
    lock.mkdir(parents=True)
    process = _dead_process()
    assert alive(process) is False
    ghost = {
        "operator": "cron",
        "operator_host": process["host"],
        "scenario": holder,
        "environment": "sandbox",
        "started": "2026-01-01T00:00:00Z",
        "process": process,
    }
    (lock / "owner.json").write_text(json.dumps(ghost))
    (lock / "heartbeat").touch()
    os.utime(lock / "heartbeat", (1_700_000_000, 1_700_000_000))
    try:
        code, run_dir = runner.run("restore_drill", {}, quiet=True)
        rec = _record(run_dir)
        if holder == "deploy":
            assert (code, rec["outcome"]) == (4, "refused")
            assert "looks dead" in rec["error"]["message"]
            assert json.loads((lock / "owner.json").read_text())["scenario"] == "deploy"
            return
        assert (code, rec["outcome"]) == (0, "ok")
        assert rec["parameters"]["break_stale_lock"] is False
        broken = rec["lock"]["broken"]
        assert broken["automatic"] is True
        assert broken["previous_holder"]["scenario"] == "restore_drill"
        assert f"pid {process['pid']}" in broken["why"] and "heartbeat stopped" in broken["why"]
        events = [e for e in _events(run_dir) if e.get("kind") == "lock"]
        assert [e["event"] for e in events] == ["broken", "acquired", "released"]
        assert events[0]["automatic"] is True
        assert not lock.exists()
    finally:
        if lock.exists():
            for f in lock.iterdir():
                f.unlink()
            lock.rmdir()
