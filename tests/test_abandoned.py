"""Issue 12 (c): a run killed with SIGKILL is finished as "abandoned" by the next run.

A real `runbook run` of a notebook that takes the host lock, runs a command
and then blocks; the runner and its kernel are killed by PID. Then: the lock
says at once that its holder is dead and gives the flag; the next session and
the next runner finish the dead record (outcome abandoned, exit 8, last step,
last command); history, verify and the review count it.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import nbformat
import pytest
from conftest import runbook_notebook

from runbook import open_session
from runbook.cli import evidence as evidence_cli
from runbook.cli import run as runner
from runbook.errors import Forbidden
from runbook.evidence import history as hist
from runbook.evidence import liveness
from runbook.scenarios import review as rv

ROOT = Path(__file__).resolve().parents[1]
BLOCKER = """
from runbook import open_session
s = open_session("blocker", env=env)
with s.step("1. Hold the host lock"):
    s.acquire_lock()
    s.run(["sleep", "0.2"])
    print("READY", flush=True)
    import time
    time.sleep(600)
"""


@pytest.fixture
def outputs(tmp_path, monkeypatch):
    monkeypatch.setenv("RUNBOOK_OUTPUTS", str(tmp_path / "outputs"))
    return tmp_path / "outputs"


def _notebook(path: Path, source: str) -> Path:
    nb = runbook_notebook()
    params = nbformat.v4.new_code_cell('env = "sandbox"')
    params.metadata["tags"] = ["parameters"]
    nb.cells = [params, nbformat.v4.new_code_cell(source)]
    nbformat.write(nb, path)
    return path


def _kill_a_run(tmp_path: Path, outputs: Path) -> tuple[Path, dict]:
    """Start the blocker under a real runner, wait until it holds the lock, SIGKILL both."""
    _break_lock(tmp_path, "before")  # a lock left by an earlier failed test
    nb = _notebook(tmp_path / "blocker.ipynb", BLOCKER)
    code = (
        "import sys; from pathlib import Path; from runbook.cli.run import run_notebook; "
        f"run_notebook(Path({str(nb)!r}), 'blocker', {{}}, quiet=True)"
    )
    proc = subprocess.Popen([sys.executable, "-c", code], cwd=ROOT, env=os.environ.copy())
    record_path = None
    try:
        deadline = time.monotonic() + 120
        while time.monotonic() < deadline and proc.poll() is None:
            found = list((outputs / "sandbox" / "blocker").glob("*/commands.jsonl"))
            # the record is rewritten at step ends; the log shows the command at once
            if found and '"command": "sleep 0.2"' in found[0].read_text():
                record_path = found[0].parent / "record.json"
                break
            time.sleep(0.2)
        assert record_path is not None, "the blocker never took the lock and ran its command"
        rec = json.loads(record_path.read_text())
        proc_info = rec["process"]
        assert proc_info["runner_pid"] == proc.pid and liveness.alive(proc_info) is True
        os.kill(proc_info["pid"], signal.SIGKILL)  # the kernel
    finally:
        with contextlib.suppress(ProcessLookupError):
            os.kill(proc.pid, signal.SIGKILL)  # the runner
        proc.wait(timeout=30)
    deadline = time.monotonic() + 30
    while liveness.alive(proc_info) and time.monotonic() < deadline:
        time.sleep(0.1)
    assert liveness.alive(proc_info) is False
    rec = json.loads(record_path.read_text())
    assert rec["outcome"] == "running"  # what a SIGKILL leaves: the bug of issue 12 (c)
    return record_path.parent, rec


def _break_lock(tmp_path: Path, name: str = "cleanup") -> None:
    s = open_session("cleanup", break_stale_lock=True, run_dir=tmp_path / name)
    s.acquire_lock()
    s.close()


def test_a_killed_run_is_abandoned_and_its_lock_named_dead(sandbox, outputs, tmp_path) -> None:
    dead_dir, before = _kill_a_run(tmp_path, outputs)
    try:
        # the lock: its heartbeat is seconds old, yet its holder is known dead
        s = open_session("deploy", run_dir=tmp_path / "next", interactive=False)
        with pytest.raises(Forbidden) as info:
            s.acquire_lock()
        s.close()
        message = str(info.value)
        assert "looks dead" in message and "Wait for that run" not in message
        assert "--break-stale-lock" in message and "-p break_stale_lock True" in message
        assert str(before["process"]["pid"]) in message
        details = info.value.details()
        assert details["holder_state"] == "dead"
        assert details["holder_pid"] == str(before["process"]["pid"])
        assert "--break-stale-lock" in details["fix"]
        # opening that session finished the dead run's record
        rec = json.loads((dead_dir / "record.json").read_text())
        assert rec["outcome"] == "abandoned" and rec["exit_code"] == 8
        assert rec["failed_step"] == "1. Hold the host lock"
        ab = rec["abandoned"]
        assert ab["last_step"] == "1. Hold the host lock"
        assert "sleep 0.2" in ab["last_command"]["command"]
        assert ab["detected_by"]["run_dir"] == str(tmp_path / "next")
        assert str(before["process"]["pid"]) in ab["why"]
        assert [st["status"] for st in rec["steps"]] == ["abandoned"]
        assert rec["error"]["type"] == "Abandoned"
        # history, verify and the review count it
        df = hist.load(outputs)
        assert list(df[df["scenario"] == "blocker"]["outcome"]) == ["abandoned"]
        assert "abandoned 1" in hist.render(df)
        verify_args = argparse.Namespace(command="verify", run_dir=str(dead_dir), chain=False)
        assert evidence_cli.run_command(verify_args) == 0  # the finisher sealed it
        chain_args = argparse.Namespace(command="verify", run_dir=str(outputs), chain=True)
        assert evidence_cli.run_command(chain_args) == 0
        r = rv.review(outputs)
        assert list(r.abandoned["scenario"]) == ["blocker"]
    finally:
        _break_lock(tmp_path)


def test_the_runner_finishes_a_dead_run_before_it_starts(sandbox, outputs, tmp_path) -> None:
    dead_dir, _ = _kill_a_run(tmp_path, outputs)
    try:
        # a notebook that opens no session: only the runner can have finished it
        nb = _notebook(tmp_path / "plain.ipynb", "1 + 1")
        runner.run_notebook(nb, "plain", {}, quiet=True)
        rec = json.loads((dead_dir / "record.json").read_text())
        assert rec["outcome"] == "abandoned" and rec["exit_code"] == 8
        assert rec["abandoned"]["detected_by"]["run_dir"].endswith("-plain")
        assert runner.EXIT["abandoned"] == 8
    finally:
        _break_lock(tmp_path)


def test_a_live_run_and_a_reused_pid_are_told_apart() -> None:
    me = liveness.this_process()
    assert liveness.alive(me) is True
    # the same pid with another start time is another process: ours is gone
    assert liveness.alive({**me, "start": me["start"] + 1, "runner_pid": None}) is False
    assert liveness.alive({**me, "host": "elsewhere"}) is None
