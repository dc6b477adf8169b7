"""The drill unit's notifications, proved on the twin (issue 22 item 3).

docs/scheduling/'s drill unit, its `OnFailure=` drop-in (notify.conf) and the
notify unit are installed on the twin verbatim; beside them, as the profile
drop-in of tests/test_twin_systemd.py does, drop-ins that name the profile
`twin-drill-notify`: twin-drill with a `notify:` section whose URLs are
secrets in a 0600 secrets file, as a real profile names them. A webhook
receiver and ping service on this machine's bridge address (the twin's
"outside") keeps every request. Three drills:

- a failing one (corrupt-backup) tells once, from the run itself; the notify
  unit that OnFailure= starts sees it told and sends nothing more;
- one killed with SIGKILL (`systemctl kill -s KILL`) mid-restore is told
  through OnFailure=: the record left at "running" is finished as abandoned
  and told, with what systemd says of the unit;
- a healthy one sends no message and pings start, then ok.

Root and systemd-nspawn only (`-m twin`).
"""

from __future__ import annotations

import json
import shlex
import threading
import time
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

import pytest

from runbook.twin import drill

pytestmark = pytest.mark.twin

PROFILE = "twin-drill-notify"
NOTIFY_UNIT = "dealix-restore-drill-notify.service"
PING_UUID = "5f1e0b6c-9d2a-4c7e-8b1f-3a6d2e9c4b7f"
HOOK_TOKEN = "hooktoken-Zq7Wm3Xk9Tr2"
SECRETS = f"/root/.config/dealix/{PROFILE}.secrets.env"
OUTPUTS = f"{drill.RUNBOOK_DIR}/outputs/{PROFILE}/restore_drill"
SCRATCH = "dealix_restore_test"
LOCK = "/var/lock/dealix-runbook.lock"


class Receiver:
    """A webhook receiver and ping service on `host`: keeps every request."""

    def __init__(self, host: str) -> None:
        self.requests: list[dict[str, Any]] = []
        receiver = self

        class Handler(BaseHTTPRequestHandler):
            def _handle(self) -> None:
                length = int(self.headers.get("Content-Length") or 0)
                body = self.rfile.read(length) if length else b""
                receiver.requests.append({"path": self.path, "body": body})
                self.send_response(200)
                self.send_header("Content-Type", "text/plain")
                self.end_headers()
                self.wfile.write(b"OK")

            do_POST = do_GET = do_HEAD = _handle

            def log_message(self, *args: object) -> None:
                pass

        self.host = host
        self.server = ThreadingHTTPServer((host, 0), Handler)
        self.port = self.server.server_address[1]
        self.thread = threading.Thread(target=self.server.serve_forever, daemon=True)
        self.thread.start()

    def hooks(self) -> list[dict[str, Any]]:
        return [r for r in self.requests if r["path"].startswith("/hook/")]

    def pings(self) -> list[str]:
        return [r["path"] for r in self.requests if r["path"].startswith("/ping/")]

    def close(self) -> None:
        self.server.shutdown()
        self.server.server_close()


def profile_text() -> str:
    return (
        "# written by tests/test_twin_notify.py: twin-drill, and who hears about it\n"
        f"extends: {drill.DRILL_PROFILE}\n"
        f"name: {PROFILE}\n"
        "secrets:\n"
        f"  file: {SECRETS}\n"
        "notify:\n"
        "  url_secrets: [RB_NOTIFY_URL]\n"
        "  ping_secret: RB_PING_URL\n"
        "  attempts: 2\n"
        "  backoff_s: 0.5\n"
        "  timeout_s: 10\n"
    )


def notify_dropin() -> str:
    """The notify unit's ExecStart with only the profile replaced, as the drill's drop-in."""
    text = (drill.scheduling_dir() / NOTIFY_UNIT).read_text()
    (line,) = [ln for ln in text.splitlines() if ln.startswith("ExecStart=")]
    assert "--env staging" in line
    return f"[Service]\nExecStart=\n{line.replace('--env staging', f'--env {PROFILE}')}\n"


def write(t, path: str, text: str, mode: str = "644") -> None:
    q = shlex.quote(path)
    t.ssh(
        f"mkdir -p $(dirname {q}) && umask 077 && printf %s {shlex.quote(text)} > {q}.part "
        f"&& chmod {mode} {q}.part && mv {q}.part {q}"
    )


@pytest.fixture(scope="module")
def notify_twin(twin) -> Iterator[tuple[Any, Receiver]]:
    t = twin
    drill.install_runbook(t, echo=print)
    drill.install_units(t)
    receiver = Receiver(t.state["operator_ip"])
    base = f"{receiver.host}:{receiver.port}"
    units = drill.scheduling_dir()
    write(t, f"/etc/systemd/system/{NOTIFY_UNIT}", (units / NOTIFY_UNIT).read_text())
    notify_conf = f"{drill.UNIT}.d/notify.conf"
    write(t, f"/etc/systemd/system/{notify_conf}", (units / notify_conf).read_text())
    # zz-: after the profile drop-in (twin.conf), so its ExecStart is the one in force
    write(
        t,
        f"/etc/systemd/system/{drill.UNIT}.d/zz-notify-profile.conf",
        f"[Service]\nExecStart=\nExecStart={drill.drill_exec_start(PROFILE)}\n",
    )
    write(t, f"/etc/systemd/system/{NOTIFY_UNIT}.d/twin.conf", notify_dropin())
    write(t, f"{drill.RUNBOOK_DIR}/parameters/{PROFILE}.yaml", profile_text())
    write(
        t,
        SECRETS,
        f"RB_NOTIFY_URL=json://{base}/hook/{HOOK_TOKEN}\n"
        f"RB_PING_URL=http://{base}/ping/{PING_UUID}\n",
        mode="600",
    )
    t.ssh("systemctl daemon-reload")
    try:
        yield t, receiver
    finally:
        receiver.close()
        t.ssh(
            f"rm -f /etc/systemd/system/{NOTIFY_UNIT} /etc/systemd/system/{notify_conf} "
            f"/etc/systemd/system/{drill.UNIT}.d/zz-notify-profile.conf {SECRETS} "
            f"{drill.RUNBOOK_DIR}/parameters/{PROFILE}.yaml; "
            f"rm -rf /etc/systemd/system/{NOTIFY_UNIT}.d; systemctl daemon-reload; "
            f"systemctl reset-failed {drill.UNIT} {NOTIFY_UNIT} 2>/dev/null; true",
            check=False,
        )


@pytest.fixture
def healed(notify_twin):
    t, receiver = notify_twin
    receiver.requests.clear()
    yield t, receiver
    t.heal()
    # a killed drill's lock, broken as the operator its message names would
    t.ssh(f"rm -rf {LOCK}", check=False)
    t.ssh(
        f"cd / && sudo -n -u postgres psql -qc 'DROP DATABASE IF EXISTS {SCRATCH} WITH (FORCE)' "
        f">/dev/null; systemctl reset-failed {drill.UNIT} {NOTIFY_UNIT} 2>/dev/null; true",
        check=False,
    )


def invocation(t) -> str:
    return t.ssh(f"systemctl show {NOTIFY_UNIT} -p InvocationID --value").stdout.strip()


def wait_notify_unit(t, before: str, timeout: float = 300) -> dict[str, str]:
    """The notify unit's properties once a new invocation (after `before`) has ended."""
    deadline = time.monotonic() + timeout
    props: dict[str, str] = {}
    while time.monotonic() < deadline:
        out = t.ssh(
            f"systemctl show {NOTIFY_UNIT} -p InvocationID -p ActiveState -p Result "
            "-p ExecMainStatus"
        ).stdout
        props = dict(line.split("=", 1) for line in out.splitlines() if "=" in line)
        if props.get("InvocationID") not in ("", before) and props["ActiveState"] in (
            "inactive",
            "failed",
        ):
            return props
        time.sleep(1)
    raise AssertionError(
        f"{NOTIFY_UNIT} did not run and end: {props}\n"
        + t.ssh(f"journalctl -u {NOTIFY_UNIT} -n 40 -o cat --no-pager", check=False).stdout
    )


def notify_journal(t) -> str:
    return t.ssh(f"journalctl -u {NOTIFY_UNIT} -n 60 -o cat --no-pager", check=False).stdout


def run_dirs(t) -> list[str]:
    out = t.ssh(f"ls -1d {OUTPUTS}/*/ 2>/dev/null; true").stdout
    return sorted(line.rstrip("/") for line in out.split())


def new_record(t, before: list[str]) -> tuple[str, dict[str, Any]]:
    new = [d for d in run_dirs(t) if d not in before]
    assert len(new) == 1, (before, run_dirs(t))
    return new[0], json.loads(t.ssh(f"cat {new[0]}/record.json").stdout)


def message(hook: dict[str, Any]) -> str:
    body = json.loads(hook["body"])
    return f"{body.get('title')}\n{body.get('message')}"


def test_a_failing_drill_notifies_once_from_the_run(healed) -> None:
    t, receiver = healed
    t.fault("corrupt-backup")
    before, inv = run_dirs(t), invocation(t)
    started = t.ssh(f"systemctl start {drill.UNIT}", check=False, timeout=900)
    assert started.returncode != 0
    run_dir, record = new_record(t, before)
    assert record["outcome"] == "dod_not_met" and record["exit_code"] == 3, record
    # OnFailure= started the notify unit: it finds the run told and sends nothing more
    props = wait_notify_unit(t, inv)
    assert props["Result"] == "success", (props, notify_journal(t))
    journal = notify_journal(t)
    assert "already told by the run itself" in journal, journal
    (hook,) = receiver.hooks()
    assert hook["path"] == f"/hook/{HOOK_TOKEN}"
    text = message(hook)
    assert "restore_drill" in text and PROFILE in text
    assert "dod_not_met (exit 3)" in text, text
    assert "Restore completed" in text, text
    assert f"evidence:     {run_dir}" in text, text
    assert HOOK_TOKEN not in text and PING_UUID not in text
    assert receiver.pings() == [f"/ping/{PING_UUID}/start", f"/ping/{PING_UUID}/3"]
    told = json.loads(t.ssh(f"cat {run_dir}/notifications.json").stdout)
    assert [s["delivered"] for s in told["sent"]] == [True], told
    # the record and the notifications file never hold the URLs' secrets
    blobs = t.ssh(f"cat {run_dir}/record.json {run_dir}/notifications.json").stdout
    assert HOOK_TOKEN not in blobs and PING_UUID not in blobs


SLEEPING = (
    'cd / && sudo -n -u postgres psql -Atc "SELECT count(*) FROM pg_stat_activity '
    "WHERE datname = 'dealix_restore_test' AND query LIKE '%pg_sleep%'\""
)


def test_a_killed_drill_notifies_through_onfailure(healed) -> None:
    t, receiver = healed
    t.fault("slow-backup")
    before, inv = run_dirs(t), invocation(t)
    t.ssh(f"systemctl start --no-block {drill.UNIT}")
    deadline, sleeping = time.monotonic() + 600, "0"
    while time.monotonic() < deadline and sleeping in ("", "0"):
        sleeping = t.ssh(SLEEPING, check=False).stdout.strip()
        time.sleep(1)
    assert sleeping not in ("", "0"), t.ssh(f"journalctl -u {drill.UNIT} -n 40 -o cat").stdout
    # SIGKILL to every process of the unit: no handler runs, no verdict, no message
    t.ssh(f"systemctl kill -s KILL {drill.UNIT}")
    props = wait_notify_unit(t, inv)
    journal = notify_journal(t)
    assert props["Result"] == "success", (props, journal)
    run_dir, record = new_record(t, before)
    assert record["outcome"] == "abandoned" and record["exit_code"] == 8, record
    (hook,) = receiver.hooks()
    text = message(hook)
    assert "abandoned (exit 8)" in text, text
    # SIGKILL left the host lock held: the message says so, and that the next run
    # breaks a dead drill's lock by itself (no person needed: no --break-stale-lock)
    assert "note:         the host lock /var/lock/dealix-runbook.lock is still held" in text
    assert "breaks it by itself" in text and "--break-stale-lock" not in text, text
    assert f"evidence:     {run_dir}" in text, text
    assert HOOK_TOKEN not in text and PING_UUID not in text
    # the run pinged its start; the notify unit pinged the abandoned exit
    assert receiver.pings() == [f"/ping/{PING_UUID}/start", f"/ping/{PING_UUID}/8"]
    # what systemd said of the killed unit, through OnFailure='s MONITOR_* variables
    assert f"systemd: {drill.UNIT} failed (result signal, exit status" in journal, journal
    unit = t.ssh(f"systemctl show {drill.UNIT} -p Result --value").stdout.strip()
    assert unit == "signal"
    # next month's drill, once the dead drill's heartbeat is past 2 minutes (aged here,
    # not waited for): it breaks the lock by itself, records why, and passes
    t.heal()
    assert t.ssh(f"test -d {LOCK}", check=False).returncode == 0
    t.ssh(f"touch -d '-10 min' {LOCK}/heartbeat && systemctl reset-failed {drill.UNIT}")
    receiver.requests.clear()
    again = run_dirs(t)
    started = t.ssh(f"systemctl start {drill.UNIT}", check=False, timeout=900)
    assert started.returncode == 0, t.ssh(f"journalctl -u {drill.UNIT} -n 40 -o cat").stdout
    _, record = new_record(t, again)
    assert record["outcome"] == "ok", record.get("error")
    broken = record["lock"]["broken"]
    assert broken["automatic"] is True and "heartbeat stopped" in broken["why"], broken
    assert broken["previous_holder"]["scenario"] == "restore_drill"


def test_a_healthy_drill_sends_nothing_and_pings_ok(healed) -> None:
    t, receiver = healed
    before, inv = run_dirs(t), invocation(t)
    started = t.ssh(f"systemctl start {drill.UNIT}", check=False, timeout=900)
    journal = t.ssh(f"journalctl -u {drill.UNIT} -n 60 -o cat --no-pager", check=False).stdout
    assert started.returncode == 0, journal
    _, record = new_record(t, before)
    assert record["outcome"] == "ok" and record["exit_code"] == 0, record.get("error")
    assert receiver.hooks() == []
    assert receiver.pings() == [f"/ping/{PING_UUID}/start", f"/ping/{PING_UUID}"]
    time.sleep(2)
    # OnFailure= never fired: the notify unit has not run again
    assert invocation(t) == inv


def test_a_drill_cut_off_by_its_timeout_tells_once(healed) -> None:
    """TimeoutStartSec ends a hung drill with the unit's KillSignal (SIGINT): the runner
    interrupts the kernel, writes its record (exit 5) and tells; OnFailure= finds it told."""
    t, receiver = healed
    timeout_conf = f"/etc/systemd/system/{drill.UNIT}.d/zz-timeout.conf"
    write(t, timeout_conf, "[Service]\nTimeoutStartSec=40s\n")
    t.ssh("systemctl daemon-reload")
    try:
        t.fault("slow-backup")
        before, inv = run_dirs(t), invocation(t)
        started = t.ssh(f"systemctl start {drill.UNIT}", check=False, timeout=600)
        assert started.returncode != 0
        result = t.ssh(f"systemctl show {drill.UNIT} -p Result --value").stdout.strip()
        assert result == "timeout", result
        props = wait_notify_unit(t, inv)
        journal = notify_journal(t)
        assert props["Result"] == "success", (props, journal)
        assert "already told by the run itself" in journal, journal
        run_dir, record = new_record(t, before)
        assert record["outcome"] == "interrupted" and record["exit_code"] == 5, record
        (hook,) = receiver.hooks()
        text = message(hook)
        assert "interrupted (exit 5)" in text and f"evidence:     {run_dir}" in text, text
        assert receiver.pings() == [f"/ping/{PING_UUID}/start", f"/ping/{PING_UUID}/5"]
    finally:
        t.ssh(f"rm -f {timeout_conf} && systemctl daemon-reload", check=False)
