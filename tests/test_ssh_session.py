"""The execution core against the sandbox's real OpenSSH sshd (no mocks of SSH)."""

from __future__ import annotations

import base64
import json
import urllib.parse

import pytest

from runbook import (
    CommandFailed,
    CommandInterrupted,
    CommandTimedOut,
    Forbidden,
    HostKeyMismatch,
    ParameterError,
    open_session,
)
from runbook.core.transport import SSHTarget, SSHTransport


@pytest.fixture
def session(sandbox, tmp_path):
    s = open_session("test", env="sandbox", run_dir=tmp_path / "run")
    yield s
    s.close()


def test_commands_reuse_one_connection(session) -> None:
    for _ in range(5):
        assert session.probe(["true"]).ok
    assert session.gate.transport.connects == 1


def test_failure_message_names_command_exit_and_last_lines(session) -> None:
    with pytest.raises(CommandFailed) as info:
        session.probe("echo first; echo 'the reason' >&2; exit 7", shell=True)
    msg = str(info.value)
    assert "exit 7" in msg and "the reason" in msg and "echo first" in msg
    assert info.value.result.exit_code == 7
    r = session.probe("exit 3", shell=True, warn=True)
    assert r.exit_code == 3 and not r.ok
    assert session.probe("exit 1", shell=True, accept=(0, 1)).ok


@pytest.mark.parametrize("order", ["stderr-first", "stdout-first"])
def test_floods_on_both_streams(session, order: str) -> None:
    a, b = (">&2", "") if order == "stderr-first" else ("", ">&2")
    cmd = f"seq 1 400000 {a}; seq 1 400000 {b}; echo end"
    r = session.probe(cmd, shell=True)
    assert r.stdout_bytes > 2_000_000 and r.stderr_bytes > 2_000_000
    assert "elided" in r.stdout and r.stdout_log is not None
    assert len(r.stdout) < 20_000
    assert r.stdout_log.read_text().count("\n") == 400_001 if order == "stderr-first" else True


def test_timeout_stops_the_remote_process(session) -> None:
    with pytest.raises(CommandTimedOut) as info:
        session.probe("sleep 300 & echo child=$!; wait", shell=True, timeout=1.5)
    line = next(x for x in info.value.result.stdout.splitlines() if x.startswith("child="))
    pid = line.split("=")[1]
    assert session.probe(["kill", "-0", pid], warn=True).exit_code != 0, "sleep still running"
    assert session.probe(["true"]).ok


def test_waiting_for_the_exit_status_after_eof_does_not_spin(session) -> None:
    """A command that closes its output and keeps running (a daemon that
    detaches, `exec >&-`) sends EOF long before its exit status. Waiting for
    that status must sleep, not poll: measured in CPU seconds of this process,
    not in wall time."""
    import resource

    before = resource.getrusage(resource.RUSAGE_SELF)
    r = session.probe("exec >/dev/null 2>&1 </dev/null; sleep 1.5; exit 4", shell=True, warn=True)
    after = resource.getrusage(resource.RUSAGE_SELF)
    assert r.exit_code == 4
    cpu = (after.ru_utime - before.ru_utime) + (after.ru_stime - before.ru_stime)
    assert cpu < 0.5, f"the wait for the exit status burnt {cpu:.2f} s of CPU"


def test_killed_by_signal_is_not_exit_minus_one(session) -> None:
    r = session.probe("kill -KILL $$", shell=True, warn=True)
    assert r.exit_code is None and r.signal == "KILL"
    assert "killed by signal KILL" in r.status


def test_dead_connection_is_reported_then_reconnected(session, sandbox) -> None:
    assert session.probe(["true"]).ok
    # kill this connection's sshd process under the running command
    with pytest.raises(CommandInterrupted) as info:
        session.probe("sleep 0.3; kill -9 $PPID; sleep 5", shell=True, timeout=30)
    assert "NOT re-run" in str(info.value)
    # and sshd itself goes down and comes back before the next command
    sandbox.restart("sshd")
    assert session.probe(["echo", "again"]).stdout.strip() == "again"
    assert session.gate.transport.connects == 2


def test_changed_host_key_refuses_with_both_fingerprints(sandbox, tmp_path) -> None:
    import paramiko

    st = sandbox.state
    other = paramiko.Ed25519Key.from_private_key_file(st["ssh_key"])  # any other key
    kh = tmp_path / "known_hosts"
    kh.write_text(f"[{st['ssh_host']}]:{st['ssh_port']} {other.get_name()} {other.get_base64()}\n")
    t = SSHTransport(
        SSHTarget(
            host=st["ssh_host"],
            port=int(st["ssh_port"]),
            user=st["ssh_user"],
            key_path=st["ssh_key"],
            known_hosts=str(kh),
        )
    )
    with pytest.raises(HostKeyMismatch) as info:
        t.connection()
    assert info.value.expected != info.value.presented
    assert info.value.expected in str(info.value) and info.value.presented in str(info.value)
    assert st["host_key_fingerprint"] == info.value.presented


def test_no_host_key_pinned_refuses_with_procedure(sandbox, tmp_path) -> None:
    st = sandbox.state
    t = SSHTransport(
        SSHTarget(
            host=st["ssh_host"],
            port=int(st["ssh_port"]),
            user=st["ssh_user"],
            key_path=st["ssh_key"],
            host_keys=["PLACEHOLDER: fill me"],
        )
    )
    with pytest.raises(Exception, match="ssh-keyscan"):
        t.connection()


def test_multibyte_and_invalid_utf8_across_chunks(session) -> None:
    # 70 KB of a 3-byte character: chunk boundaries fall inside characters
    r = session.probe(
        # (not python3 -c: the guard refuses an inline program it cannot read, issue 19)
        "yes '✓' | head -n 70000 | tr -d '\\n'; echo; printf 'bad \\377\\376 end\\n'",
        shell=True,
    )
    text = r.stdout_log.read_text() if r.stdout_log else r.stdout
    assert "\ufffd" not in text.splitlines()[0]
    assert "bad \ufffd\ufffd end" in r.stdout


def test_metacharacters_are_never_executed_remotely(session, tmp_path) -> None:
    marker = "/tmp/rb-pwned-marker"
    session.probe(["rm", "-f", marker])
    for value in [
        f"; touch {marker}",
        f"$(touch {marker})",
        f"`touch {marker}`",
        f"' ; touch {marker} '",
    ]:
        r = session.probe(["echo", value], env={"V": value})
        assert r.stdout.strip() == value
        r = session.probe(["sh", "-c", 'printf %s "$V"'], env={"V": value})
        assert r.stdout == value
    assert session.probe(["test", "-e", marker], warn=True).exit_code == 1


def test_files_written_atomically_over_sftp(session) -> None:
    path = f"{session.profile.app.dir}/../rb-test-file"
    session.gate.transport.write_file(path, b"one\n", mode=0o600)
    session.gate.transport.write_file(path, b"two\n")
    assert session.gate.transport.read_file(path) == b"two\n"
    assert session.probe(["stat", "-c", "%a", path]).stdout.strip() == "600"
    session.probe(["rm", "-f", path])


def test_canary_secrets_never_reach_the_evidence(sandbox, tmp_path, monkeypatch) -> None:
    canary = "canary-7Hq2ZpX4vN8rT1wY"
    monkeypatch.setenv("RB_CANARY_TOKEN", canary)
    run_dir = tmp_path / "run"
    s = open_session("test", env="sandbox", run_dir=run_dir)
    s.secrets.get("RB_CANARY_TOKEN")
    b64 = base64.b64encode(f"user:{canary}".encode()).decode()
    url = urllib.parse.quote(canary)
    cmd = (
        f"echo out {canary}; echo err {canary} >&2; echo https://u:{url}@host/x; echo {b64}; "
        f"seq 1 100000; printf '%s' {canary[:9]}; printf '%s\\n' {canary[9:]}; exit 4"
    )
    with pytest.raises(CommandFailed) as info:
        s.probe(cmd, shell=True, env={"TOKEN": canary})
    messages = [str(info.value), repr(info.value.result)]
    s.check("canary check", expected=canary, actual=canary, passed=True)
    with pytest.raises(ParameterError):
        open_session(
            "test",
            env="sandbox",
            run_dir=tmp_path / "r2",
            parameters={"x": s.secrets.get(s.profile.secrets.admin_key)},
        )
    s.done()
    s.close()
    for text in messages:
        assert canary not in text and b64 not in text
    for f in run_dir.rglob("*"):
        if f.is_file():
            data = f.read_text(errors="replace")
            assert canary not in data, f
            assert b64 not in data, f
    lines = [json.loads(x) for x in (run_dir / "commands.jsonl").read_text().splitlines()]
    assert any(x.get("exit_code") == 4 for x in lines)


def test_dry_run_skips_changes_but_runs_probes(sandbox, tmp_path) -> None:
    s = open_session("test", env="sandbox", dry_run=True, run_dir=tmp_path / "run")
    marker = "/tmp/rb-dry-run-marker"
    s.probe(["rm", "-f", marker])
    r = s.run(["touch", marker])
    # it never ran: neither ok nor failed, and check() has nothing to raise
    assert r.dry_run and not r.ran and not r.ok and not r.failed
    assert r.check() is r and r.status == "not run (dry run)"
    assert s.probe(["test", "-e", marker], warn=True).exit_code == 1
    rec = s.record()
    assert rec["would_change"][0]["what"] == f"touch {marker}"
    assert rec["changes"] == []
    s.close()


def test_attempt_and_judge_on_a_real_session(sandbox, tmp_path) -> None:
    s = open_session("test", env="sandbox", dry_run=True, run_dir=tmp_path / "run")
    marker = "/tmp/rb-judge-marker"
    # a changing command a dry run skipped: judged "not run", never passed
    c = s.judge("Marker written", expected="exit 0", result=s.run(["touch", marker]))
    assert (c.actual, c.status) == ("not run (dry run)", "not available")
    # a probe that ran and failed, inside attempt: one failed check, type and first line
    with s.attempt("Server answers", expected="exit 0") as a:
        s.probe("echo boom >&2; exit 3", shell=True)
    assert a.failed and s.checks[-1].status == "failed"
    assert s.checks[-1].actual.startswith("CommandFailed: command failed on ")
    # a runbook rule's refusal passes through attempt and records no check
    with pytest.raises(Forbidden), s.attempt("Pushed", expected="exit 0"):
        s.run(["git", "push", "origin", "main"])
    assert [x.name for x in s.checks] == ["Marker written", "Server answers"]
    s.close()


def test_git_and_alembic_on_the_server(session, sandbox) -> None:
    assert session.git.head() == sandbox.state["origin_head"]
    assert session.git.branch() == "main"
    assert session.alembic.current() == session.alembic.heads()[0]
    assert "->" in session.alembic.history()


def test_more_channels_than_the_server_allows_are_queued_not_refused(session) -> None:
    from concurrent.futures import ThreadPoolExecutor

    with ThreadPoolExecutor(max_workers=30) as pool:
        results = list(
            pool.map(lambda i: session.probe(["sh", "-c", f"sleep 0.2; echo {i}"]), range(30))
        )
    assert [int(r.stdout) for r in results] == list(range(30))
    assert session.gate.transport.connects == 1


def test_a_refused_channel_waits_and_keeps_the_connection(sandbox) -> None:
    """A profile that allows more sessions than sshd's MaxSessions (10) gets
    refusals; they must wait for a free slot, never drop the connection under
    the commands already running on it."""
    from concurrent.futures import ThreadPoolExecutor

    st = sandbox.state
    t = SSHTransport(
        SSHTarget(
            host=st["ssh_host"],
            port=int(st["ssh_port"]),
            user=st["ssh_user"],
            key_path=st["ssh_key"],
            known_hosts=st["known_hosts"],
            max_sessions=24,
        )
    )

    def run(i: int) -> bytes:
        out: list[bytes] = []
        outcome = t.execute(
            f"sleep 0.3; echo {i}", on_stdout=out.append, on_stderr=lambda b: None, timeout=30
        )
        assert outcome.exit_code == 0 and outcome.interrupted is None
        return b"".join(out)

    try:
        with ThreadPoolExecutor(max_workers=20) as pool:
            outs = list(pool.map(run, range(20)))
        assert outs == [f"{i}\n".encode() for i in range(20)]
        assert t.connects == 1
    finally:
        t.close()


def test_jump_host(sandbox, tmp_path) -> None:
    st = sandbox.state
    jump = SSHTarget(
        host=st["ssh_host"],
        port=int(st["ssh_port"]),
        user=st["ssh_user"],
        key_path=st["ssh_key"],
        known_hosts=st["known_hosts"],
    )
    t = SSHTransport(
        SSHTarget(
            host="127.0.0.1",
            port=int(st["ssh_port"]),
            user=st["ssh_user"],
            key_path=st["ssh_key"],
            known_hosts=st["known_hosts"],
            jump=jump,
        )
    )
    out: list[bytes] = []
    outcome = t.execute("echo via-jump", on_stdout=out.append, on_stderr=lambda b: None, timeout=10)
    assert outcome.exit_code == 0 and b"".join(out) == b"via-jump\n"
    assert t._jump is not None and t._jump.connects == 1
    t.close()


def test_backup_file_keeps_the_original(session) -> None:
    path = f"{session.profile.app.dir}/../rb-backup-test"
    session.gate.transport.write_file(path, b"keep me\n")
    copy = session.backup_file(path)
    assert session.gate.transport.read_file(copy) == b"keep me\n"
    assert copy.startswith(path + ".bak.") and copy.endswith("Z")
    session.probe(["rm", "-f", path, copy])
