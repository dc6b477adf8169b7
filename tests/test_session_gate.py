"""The session's gate against the sandbox's real sshd: its poll, its second connection,
a new connection, the lock's heartbeat; and finishing runs that died, as a reported step."""

from __future__ import annotations

import dataclasses
import json
import os
import time
from pathlib import Path

import pytest

from runbook import HostKeyMismatch, open_session
from runbook.evidence import liveness
from runbook.safety import lock as lock_module


def _events(run_dir: Path) -> list[dict]:
    path = run_dir / "commands.jsonl"
    return [json.loads(line) for line in path.read_text().splitlines()] if path.exists() else []


def _record(run_dir: Path) -> dict:
    return json.loads((run_dir / "record.json").read_text())


@pytest.fixture
def session(sandbox, tmp_path):
    s = open_session("gate-test", env="sandbox", run_dir=tmp_path / "run")
    yield s
    s.close()


def test_a_poll_goes_on_a_second_connection_counted_not_logged(session, tmp_path) -> None:
    # the server sees the client's address and port of each connection
    first = session.probe("echo $SSH_CONNECTION", shell=True).stdout.strip()
    polled = [session.poll("echo $SSH_CONNECTION", kind="progress") for _ in range(3)]
    assert {p.exit_code for p in polled} == {0}
    second = polled[0].stdout.strip()
    assert first and second and first != second  # another connection (another client port)
    assert {p.stdout.strip() for p in polled} == {second}  # one second connection, reused
    session.write_record()
    record = _record(tmp_path / "run")
    assert record["polls"] == {"progress": 3}
    assert record["commands_run"] == 1  # the probe; the polls are not the run's commands
    commands = [e for e in _events(tmp_path / "run") if e["kind"] == "command"]
    assert len(commands) == 1 and "SSH_CONNECTION" in commands[0]["command"]


def test_the_lock_heartbeat_and_release_are_polls(sandbox, tmp_path, monkeypatch) -> None:
    monkeypatch.setattr(lock_module, "HEARTBEAT_S", 0.1)
    s = open_session("gate-test", env="sandbox", run_dir=tmp_path / "run", break_stale_lock=True)
    try:
        lock = s.acquire_lock()
        deadline = time.monotonic() + 60
        while not s.gate.polls.get("lock-heartbeat") and time.monotonic() < deadline:
            time.sleep(0.05)
        assert s.gate.polls.get("lock-heartbeat", 0) >= 1
        s.release_lock()
        assert not lock.held
        assert s.probe(["test", "-e", lock.path], warn=True).exit_code == 1  # released
    finally:
        s.close()
    s.write_record()
    record = _record(tmp_path / "run")
    assert record["polls"]["lock-release"] == 1 and record["polls"]["lock-heartbeat"] >= 1
    labels = [e["command"] for e in _events(tmp_path / "run") if e["kind"] == "command"]
    assert not [c for c in labels if "heartbeat" in c and c.startswith("touch")]


def test_a_new_connection_is_fresh_and_pinned(session, tmp_path) -> None:
    before = session.gate.transport.connects
    with session.gate.new_connection() as conn:
        assert conn.execute("true").exit_code == 0
        assert conn.execute("exit 3").exit_code == 3
    assert session.gate.transport.connects == before  # the first connection was not used
    assert [e for e in _events(tmp_path / "run") if e["kind"] == "connection"]


def test_a_refusal_on_a_new_connection_latches_the_gate(sandbox, tmp_path, monkeypatch) -> None:
    s = open_session("gate-test", env="sandbox", run_dir=tmp_path / "run")
    try:
        s.probe(["true"])  # the first connection is fine
        # now the pinned key changes (another known_hosts): the next connection is refused
        st = sandbox.state
        kh = tmp_path / "known_hosts"
        import paramiko

        other = paramiko.Ed25519Key.from_private_key_file(st["ssh_key"])
        kh.write_text(
            f"[{st['ssh_host']}]:{st['ssh_port']} {other.get_name()} {other.get_base64()}\n"
        )
        target = dataclasses.replace(s.profile.target, known_hosts=str(kh), host_key=[])
        s.gate.profile = dataclasses.replace(s.profile, target=target)
        with pytest.raises(HostKeyMismatch), s.gate.new_connection() as conn:
            conn.execute("true")
        assert s.gate.refused is not None
        with pytest.raises(HostKeyMismatch):
            s.probe(["true"])  # nothing more goes out, on any connection
        assert _record(tmp_path / "run")["outcome"] == "refused"
    finally:
        s.close()


def test_finishing_dead_runs_is_a_reported_step(sandbox, tmp_path, monkeypatch) -> None:
    outputs = tmp_path / "outputs"
    monkeypatch.setenv("RUNBOOK_OUTPUTS", str(outputs))
    me = liveness.this_process()
    dead = {**me, "start": me["start"] + 1, "runner_pid": None}  # our pid, another process
    folders = {}
    for name in ("dead-ok", "dead-unwritable"):
        run_dir = outputs / "sandbox" / "blocker" / name
        run_dir.mkdir(parents=True)
        (run_dir / "record.json").write_text(
            json.dumps(
                {
                    "schema": "runbook.record/1",
                    "scenario": "blocker",
                    "environment": "sandbox",
                    "started": "2026-01-01T00:00:00.000Z",
                    "outcome": "running",
                    "process": dead,
                    "steps": [],
                    "checks": [],
                }
            )
        )
        folders[name] = run_dir
    # the atomic rewrite's temporary file cannot be made: finishing that run fails
    (folders["dead-unwritable"] / "record.json.tmp").mkdir()
    s = open_session("gate-test", env="sandbox", run_dir=tmp_path / "run")
    s.close()
    assert _record(folders["dead-ok"])["outcome"] == "abandoned"
    assert _record(folders["dead-unwritable"])["outcome"] == "running"
    record = _record(tmp_path / "run")
    assert record["abandoned_runs"]["finished"] == [str(folders["dead-ok"])]
    (failed,) = record["abandoned_runs"]["failed"]
    assert failed["run_dir"] == str(folders["dead-unwritable"])
    assert failed["error"].startswith("IsADirectoryError")
    (event,) = [e for e in _events(tmp_path / "run") if e["kind"] == "abandoned-runs"]
    assert event["failed"] == record["abandoned_runs"]["failed"]
    assert os.path.isdir(folders["dead-unwritable"] / "record.json.tmp")
