"""Notifications and dead-man's pings of unattended runs, over real HTTP.

A threaded http.server on 127.0.0.1 receives what Apprise sends for
`json://` and `form://` URLs and what the runner sends to a healthchecks.io
style ping URL. Real notebooks run headless through `runbook run` against the
sandbox (health_check: cheap, and red under `postgres-down`); the tests read
the bodies the receiver got, the record, `notifications.json` and the seal.

The notify profile (`sandbox-notify`, written to a temporary parameters
folder) extends the sandbox and names its URLs through secrets, as a real
profile must (a webhook URL holds a token): RB_NOTIFY_URL and RB_PING_URL.
"""

from __future__ import annotations

import contextlib
import json
import os
import re
import shutil
import signal
import ssl
import subprocess
import sys
import threading
import time
import urllib.parse
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import nbformat
import pytest

from runbook.cli import run as runner
from runbook.core import notify
from runbook.core.paths import parameters_dir, project_root
from runbook.core.redact import Redactor
from runbook.evidence.seal import MANIFEST, evidence_digest_of_manifest, read_manifest, verify_run

# in the URLs' secret places: none may reach a body, a record, a file or the terminal
URL_CANARY = "hookpass-Zq7Wm3Xk9Tr2"
PING_CANARY = "5f1e0b6c-9d2a-4c7e-8b1f-3a6d2e9c4b7f"
BODY_CANARY = "cnry-notify-Vb8Nq4Lz6Ks1"


class Receiver:
    """A webhook receiver and ping service: keeps every request; answers 500 under /broken."""

    def __init__(self, tls: ssl.SSLContext | None = None) -> None:
        self.requests: list[dict] = []
        receiver = self

        class Handler(BaseHTTPRequestHandler):
            def _handle(self) -> None:
                length = int(self.headers.get("Content-Length") or 0)
                body = self.rfile.read(length) if length else b""
                receiver.requests.append(
                    {
                        "method": self.command,
                        "path": self.path,
                        "headers": dict(self.headers),
                        "body": body,
                    }
                )
                status = 500 if self.path.startswith("/broken") else 200
                self.send_response(status)
                self.send_header("Content-Type", "text/plain")
                self.end_headers()
                self.wfile.write(b"OK" if status == 200 else b"boom")

            do_POST = do_GET = do_HEAD = _handle

            def log_message(self, *args: object) -> None:
                pass

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.port = self.server.server_address[1]
        if tls is not None:
            self.server.socket = tls.wrap_socket(self.server.socket, server_side=True)
        self.thread = threading.Thread(target=self.server.serve_forever, daemon=True)
        self.thread.start()

    def url(self, scheme: str, path: str, auth: str = "") -> str:
        return f"{scheme}://{auth}127.0.0.1:{self.port}{path}"

    def under(self, prefix: str) -> list[dict]:
        return [r for r in self.requests if r["path"].startswith(prefix)]

    def close(self) -> None:
        self.server.shutdown()
        self.server.server_close()


@pytest.fixture
def receiver() -> Iterator[Receiver]:
    r = Receiver()
    yield r
    r.close()


@pytest.fixture
def outputs(tmp_path, monkeypatch) -> Path:
    monkeypatch.setenv("RUNBOOK_OUTPUTS", str(tmp_path / "outputs"))
    return tmp_path / "outputs"


@pytest.fixture
def notify_profile(tmp_path, monkeypatch) -> Path:
    """parameters/ plus sandbox-notify.yaml: the sandbox, with a quick notify: section."""
    folder = tmp_path / "parameters"
    shutil.copytree(parameters_dir(), folder)
    (folder / "sandbox-notify.yaml").write_text(
        "name: sandbox-notify\n"
        "extends: sandbox\n"
        "notify:\n"
        "  url_secrets: [RB_NOTIFY_URL]\n"
        "  ping_secret: RB_PING_URL\n"
        "  attempts: 3\n"
        "  backoff_s: 0.1\n"
        "  timeout_s: 5\n"
    )
    # the kernel is a child process: it reads the same variable
    monkeypatch.setenv("RUNBOOK_PARAMETERS_DIR", str(folder))
    return folder


def _sandbox_secrets() -> dict[str, str]:
    from runbook.core.profile import load_profile
    from runbook.core.secrets import read_env_file

    path = load_profile("sandbox").secrets.file
    values = read_env_file(Path(path)) if path else {}
    return {k: v for k, v in values.items() if v and len(v) >= 8}


def _no_secret_in(blobs: dict[str, bytes]) -> list[str]:
    needles = {"url canary": URL_CANARY, "ping canary": PING_CANARY, **_sandbox_secrets()}
    forms = {
        name: {value, urllib.parse.quote(value, safe=""), json.dumps(value)[1:-1]}
        for name, value in needles.items()
    }
    return [
        f"{name} in {where}"
        for where, blob in blobs.items()
        for name, values in forms.items()
        if any(v.encode() in blob for v in values)
    ]


def _run_dir_blobs(run_dir: Path) -> dict[str, bytes]:
    return {str(p): p.read_bytes() for p in run_dir.rglob("*") if p.is_file()}


def test_failing_run_notifies_with_failed_checks_next_command_and_digest(
    healed, receiver, outputs, notify_profile, monkeypatch, capsys
) -> None:
    monkeypatch.setenv("RB_NOTIFY_URL", receiver.url("json", "/hook/json", f"hook:{URL_CANARY}@"))
    monkeypatch.setenv("RB_PING_URL", receiver.url("http", f"/ping/{PING_CANARY}"))
    form = receiver.url("form", "/hook/form")
    healed.fault("postgres-down")
    code, run_dir = runner.run("health_check", {"env": "sandbox-notify"}, notify=[form])
    out = capsys.readouterr()
    record = json.loads((run_dir / "record.json").read_text())
    assert code == 3 and record["outcome"] == "dod_not_met", record

    # the JSON webhook: Apprise's JSON body, the message is the run's story
    (sent,) = receiver.under("/hook/json")
    payload = json.loads(sent["body"])
    assert payload["type"] == "failure"
    assert payload["title"] == "runbook: health_check on sandbox-notify: dod_not_met (exit 3)"
    text = payload["message"]
    assert "host:" in text and record["target"] in text
    assert "outcome:      dod_not_met (exit 3)" in text
    deep = next(c for c in record["checks"] if c["name"] == "Deep health")
    assert f"Deep health: expected {deep['expected']}, actual" in text
    assert "postgres red" in text
    # health_check names no next command for a red database (database_down is a person's call)
    assert f"next:         {record['next_command'] or 'none: read the evidence'}" in text
    assert f"evidence:     {run_dir}" in text
    # the digest the message names is the sealed folder's, checkable with runbook verify
    assert verify_run(run_dir).ok
    digest = evidence_digest_of_manifest(run_dir)
    assert f"sha256 {digest}" in text
    # the form webhook got the same message as form fields
    (sent_form,) = receiver.under("/hook/form")
    fields = urllib.parse.parse_qs(sent_form["body"].decode())
    assert fields["message"][0] == text

    # the dead-man's switch: start, then the exit code, with a short body
    pings = receiver.under(f"/ping/{PING_CANARY}")
    assert [p["path"] for p in pings] == [f"/ping/{PING_CANARY}/start", f"/ping/{PING_CANARY}/3"]
    assert b"health_check on sandbox-notify: dod_not_met (exit 3)" in pings[1]["body"]
    assert b"failed checks: " in pings[1]["body"] and b"Deep health" in pings[1]["body"]

    # recorded: the plan in record.json, what the end sent in notifications.json, both sealed
    assert record["notify"]["due"] is True
    assert record["notify"]["start_pings"][0]["delivered"] is True
    log = json.loads((run_dir / notify.NOTIFICATIONS).read_text())
    assert [s["delivered"] for s in log["sent"]] == [True, True]
    assert log["pings"][0]["event"] == "exit 3" and log["pings"][0]["delivered"]
    assert log["evidence_digest"] == digest
    assert notify.NOTIFICATIONS in read_manifest(run_dir)
    assert f"notify:       {form}: delivered (1 attempt)" in out.out
    assert "notify:       json://hook:[redacted]@127.0.0.1" in out.out

    bodies = {r["path"]: r["body"] for r in receiver.requests}
    leaks = _no_secret_in({**bodies, **_run_dir_blobs(run_dir), "stdout": out.out.encode()})
    assert not leaks, leaks


def test_ok_run_sends_no_message_by_default_and_pings_ok(
    healed, receiver, outputs, notify_profile, monkeypatch
) -> None:
    monkeypatch.setenv("RB_NOTIFY_URL", receiver.url("json", "/hook/json"))
    monkeypatch.setenv("RB_PING_URL", receiver.url("http", f"/ping/{PING_CANARY}"))
    code, run_dir = runner.run("health_check", {"env": "sandbox-notify"}, quiet=True)
    assert code == 0
    assert receiver.under("/hook") == []
    pings = [p["path"] for p in receiver.under("/ping")]
    assert pings == [f"/ping/{PING_CANARY}/start", f"/ping/{PING_CANARY}"]
    record = json.loads((run_dir / "record.json").read_text())
    assert record["notify"]["due"] is False
    log = json.loads((run_dir / notify.NOTIFICATIONS).read_text())
    assert log["sent"] == [] and "not one the plan names" in log["skipped"]
    assert verify_run(run_dir).ok


def test_when_always_tells_of_an_ok_run(sandbox, receiver, outputs) -> None:
    url = receiver.url("json", "/hook/always")
    code, run_dir = runner.run("health_check", {}, quiet=True, notify=[url], notify_when=["always"])
    assert code == 0
    (sent,) = receiver.under("/hook/always")
    payload = json.loads(sent["body"])
    assert payload["type"] == "success"
    assert "outcome:      ok (exit 0)" in payload["message"]
    assert json.loads((run_dir / "record.json").read_text())["notify"]["when"] == ["always"]


def test_a_receiver_that_fails_is_retried_recorded_and_leaves_the_outcome(
    sandbox, receiver, outputs, notify_profile, monkeypatch, capsys
) -> None:
    monkeypatch.setenv("RB_NOTIFY_URL", receiver.url("json", "/broken/hook", f"u:{URL_CANARY}@"))
    monkeypatch.setenv("RB_PING_URL", receiver.url("http", f"/broken/{PING_CANARY}"))
    code, run_dir = runner.run(
        "health_check", {"env": "sandbox-notify"}, quiet=True, notify_when=["always"]
    )
    err = capsys.readouterr().err
    assert code == 0
    record = json.loads((run_dir / "record.json").read_text())
    assert record["outcome"] == "ok" and record["exit_code"] == 0
    # three tries each (the profile's attempts), then given up
    assert len(receiver.under("/broken/hook")) == 3
    assert len(receiver.under(f"/broken/{PING_CANARY}/start")) == 3
    assert [p["path"] for p in receiver.under("/broken/")][-1] == f"/broken/{PING_CANARY}"
    log = json.loads((run_dir / notify.NOTIFICATIONS).read_text())
    (sent,) = log["sent"]
    assert sent["delivered"] is False and sent["attempts"] == 3
    assert any("500" in e for e in sent["errors"]), sent
    assert log["pings"][0]["delivered"] is False
    assert record["notify"]["start_pings"][0]["delivered"] is False
    # printed, even with quiet=True
    assert "NOT delivered after 3 attempts" in err and "the run's outcome stands" in err
    assert verify_run(run_dir).ok
    bodies = {r["path"]: r["body"] for r in receiver.requests}
    leaks = _no_secret_in({**bodies, **_run_dir_blobs(run_dir), "stderr": err.encode()})
    assert not leaks, leaks


@pytest.mark.parametrize(
    ("flag", "url"),
    [
        ("--notify", f"bogus://alerts:{URL_CANARY}@example.internal/hook"),
        ("--notify", f"json://:{URL_CANARY}@"),
        ("--ping", f"ftp://hc.example/ping/{PING_CANARY}"),
        ("--notify-when", "sometimes"),
    ],
)
def test_a_malformed_url_is_a_parameters_error_before_anything_runs(
    sandbox, outputs, flag, url
) -> None:
    runbook = str(Path(sys.executable).with_name("runbook"))
    proc = subprocess.run(
        [runbook, "run", "health_check", flag, url],
        cwd=project_root(),
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert proc.returncode == 2, proc.stderr
    assert "nothing ran" in proc.stdout
    assert URL_CANARY not in proc.stdout + proc.stderr
    assert PING_CANARY not in proc.stdout + proc.stderr
    if flag != "--notify-when":
        assert f"{flag} " in proc.stderr and ("[redacted]" in proc.stderr or "…" in proc.stderr)
    else:
        assert "'sometimes' is not a notification condition" in proc.stderr
    assert not outputs.exists() or not any(outputs.rglob("record.json"))


def test_a_secret_in_the_record_never_reaches_the_body(receiver) -> None:
    """The message passes the redactor on its way out, whatever the record holds."""
    redactor = Redactor()
    redactor.register("RB_CANARY", BODY_CANARY)
    plan = notify.Plan(
        urls=(receiver.url("json", "/hook/canary"), receiver.url("form", "/hook/canary-form")),
        redactor=redactor,
    )
    record = {
        "scenario": "restore_drill",
        "environment": "staging",
        "target": "10.0.0.5",
        "outcome": "failed",
        "exit_code": 1,
        "failed_step": f"4. Restore with {BODY_CANARY}",
        "checks": [{"name": "rows", "expected": "100", "actual": BODY_CANARY, "status": "failed"}],
        "error": {"type": "CommandFailed", "message": f"psql said {BODY_CANARY}"},
        "next_command": f"runbook run restore_drill -p token {BODY_CANARY}",
    }
    log = notify.deliver_run(plan, record, Path("/tmp/run"), "ab" * 32)
    assert [s["delivered"] for s in log["sent"]] == [True, True]
    bodies = [r["body"] for r in receiver.under("/hook/canary")]
    assert len(bodies) == 2
    for body in bodies:
        assert BODY_CANARY.encode() not in body
        assert urllib.parse.quote(BODY_CANARY).encode() not in body
    assert "[redacted:RB_CANARY]" in json.loads(bodies[0])["message"]


def test_cronitor_urls_get_cronitor_states(receiver) -> None:
    plan = notify.Plan(pings=(f"cronitor+{receiver.url('http', '/p/key123/drill')}",))
    assert notify.ping(plan, "start")[0]["delivered"]
    assert notify.ping(plan, "exit", code=3, body="dod_not_met")[0]["delivered"]
    assert notify.ping(plan, "exit", code=0)[0]["delivered"]
    assert [r["path"] for r in receiver.requests] == [
        "/p/key123/drill?state=run",
        "/p/key123/drill?state=fail&status_code=3",
        "/p/key123/drill?state=complete&status_code=0",
    ]
    assert receiver.requests[1]["body"] == b"dod_not_met"


def test_the_manifest_covers_the_notifications(tmp_path) -> None:
    """The digest a message names is the manifest without PREVIOUS and the annex."""
    from runbook.evidence.seal import evidence_digest, write_manifest

    (tmp_path / "record.json").write_text("{}")
    before = evidence_digest(tmp_path)
    (tmp_path / notify.NOTIFICATIONS).write_text("{}")
    (tmp_path / "PREVIOUS").write_text("0" * 64 + "  -\n")
    write_manifest(tmp_path)
    assert set(read_manifest(tmp_path)) == {"record.json", notify.NOTIFICATIONS, "PREVIOUS"}
    assert evidence_digest_of_manifest(tmp_path) == before
    (tmp_path / notify.NOTIFICATIONS).write_text('{"sent": []}')
    assert verify_run(tmp_path).changed == [notify.NOTIFICATIONS]
    assert (tmp_path / MANIFEST).exists()


# ------------------------------------------------- runbook notify (OnFailure=)
SLEEPER = """
from runbook import open_session
s = open_session("sleeper", env=env)
with s.step("1. Sleep as a drill that hangs"):
    s.probe(["true"])
    print("READY", flush=True)
    import time
    time.sleep(600)
"""


def _runbook_notify(args: list[str], **env: str) -> subprocess.CompletedProcess:
    runbook = str(Path(sys.executable).with_name("runbook"))
    return subprocess.run(
        [runbook, "notify", *args],
        cwd=project_root(),
        capture_output=True,
        text=True,
        timeout=120,
        env={**os.environ, **env},
    )


MONITOR = {
    "MONITOR_UNIT": "dealix-restore-drill.service",
    "MONITOR_SERVICE_RESULT": "signal",
    "MONITOR_EXIT_STATUS": "KILL",
}


def test_a_killed_run_is_told_through_runbook_notify(sandbox, receiver, outputs, tmp_path) -> None:
    """What OnFailure= runs after a SIGKILL: the stuck record is finished as abandoned, then told."""
    from conftest import runbook_notebook

    from runbook.evidence import liveness

    nb = runbook_notebook()
    params = nbformat.v4.new_code_cell('env = "sandbox"')
    params.metadata["tags"] = ["parameters"]
    nb.cells = [params, nbformat.v4.new_code_cell(SLEEPER)]
    path = tmp_path / "sleeper.ipynb"
    nbformat.write(nb, path)
    code = (
        "from pathlib import Path; from runbook.cli.run import run_notebook; "
        f"run_notebook(Path({str(path)!r}), 'sleeper', {{}}, quiet=True)"
    )
    proc = subprocess.Popen([sys.executable, "-c", code], cwd=project_root(), env=os.environ.copy())
    record_path = None
    try:
        deadline = time.monotonic() + 120
        while time.monotonic() < deadline and proc.poll() is None:
            found = list((outputs / "sandbox" / "sleeper").glob("*/commands.jsonl"))
            if found and '"step": "1. Sleep as a drill that hangs"' in found[0].read_text():
                record_path = found[0].parent / "record.json"
                break
            time.sleep(0.2)
        assert record_path is not None, "the sleeper never started its step"
        info = json.loads(record_path.read_text())["process"]
        os.kill(info["pid"], signal.SIGKILL)  # the kernel
    finally:
        with contextlib.suppress(ProcessLookupError):
            os.kill(proc.pid, signal.SIGKILL)  # the runner: no verdict, no message
        proc.wait(timeout=30)
    deadline = time.monotonic() + 30
    while liveness.alive(info) and time.monotonic() < deadline:
        time.sleep(0.1)
    assert receiver.requests == []
    hook = receiver.url("json", "/hook/onfailure")
    ping = receiver.url("http", f"/ping/{PING_CANARY}")
    done = _runbook_notify(["sleeper", "--notify", hook, "--ping", ping], **MONITOR)
    assert done.returncode == 0, done.stdout + done.stderr
    record = json.loads(record_path.read_text())
    assert record["outcome"] == "abandoned" and record["exit_code"] == 8
    (sent,) = receiver.under("/hook/onfailure")
    text = json.loads(sent["body"])["message"]
    assert "outcome:      abandoned (exit 8)" in text
    assert "1. Sleep as a drill that hangs" in text
    assert f"evidence:     {record_path.parent}" in text
    assert [p["path"] for p in receiver.under("/ping")] == [f"/ping/{PING_CANARY}/8"]
    assert (
        "unit:         systemd: dealix-restore-drill.service failed (result signal" in done.stdout
    )
    assert PING_CANARY not in done.stdout + done.stderr


def test_runbook_notify_stays_quiet_when_the_run_told_them(
    sandbox, healed, receiver, outputs
) -> None:
    hook = receiver.url("json", "/hook/told")
    healed.fault("ci-red")
    code, run_dir = runner.run("health_check", {}, quiet=True, notify=[hook])
    assert code == 3 and len(receiver.under("/hook/told")) == 1
    done = _runbook_notify(["health_check", "--notify", hook], **MONITOR)
    assert done.returncode == 0, done.stderr
    assert "already told by the run itself" in done.stdout
    assert len(receiver.under("/hook/told")) == 1
    assert verify_run(run_dir).ok


def test_runbook_notify_says_the_run_left_no_record(sandbox, receiver, outputs) -> None:
    hook = receiver.url("form", "/hook/none")
    ping = receiver.url("http", f"/ping/{PING_CANARY}")
    done = _runbook_notify(["restore_drill", "--notify", hook, "--ping", ping], **MONITOR)
    assert done.returncode == 0, done.stdout + done.stderr
    (sent,) = receiver.under("/hook/none")
    fields = urllib.parse.parse_qs(sent["body"].decode())
    assert fields["title"] == ["runbook: restore_drill on sandbox: no record (exit KILL)"]
    text = fields["message"][0]
    assert "dealix-restore-drill.service failed (result signal, exit status KILL)" in text
    assert "the run left no record in the last 180 minutes" in text
    assert "journalctl -u dealix-restore-drill.service" in text
    assert [p["path"] for p in receiver.under("/ping")] == [f"/ping/{PING_CANARY}/fail"]


def test_the_scheduling_docs_quote_the_notify_units_verbatim() -> None:
    text = (project_root() / "docs" / "scheduling.md").read_text()
    blocks = re.findall(r"```[a-z]*\n(.*?)```", text, re.S)
    units = project_root() / "docs" / "scheduling"
    for name in (
        "dealix-restore-drill-notify.service",
        "dealix-restore-drill.service.d/notify.conf",
    ):
        assert (units / name).read_text() in blocks, name


def test_jsons_reaches_an_https_receiver(tmp_path) -> None:
    """jsons:// is json:// over TLS; the receiver's certificate is self-signed, so the
    URL says verify=no (a real receiver has a certificate the system trusts)."""
    key, cert = tmp_path / "key.pem", tmp_path / "cert.pem"
    subprocess.run(
        ["openssl", "req", "-x509", "-newkey", "rsa:2048", "-nodes", "-keyout", str(key),
         "-out", str(cert), "-days", "1", "-subj", "/CN=127.0.0.1"],
        check=True, capture_output=True,
    )  # fmt: skip
    context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    context.load_cert_chain(cert, key)
    receiver = Receiver(tls=context)
    try:
        plan = notify.Plan(urls=(receiver.url("jsons", "/hook/tls") + "?verify=no",))
        record = {"scenario": "restore_drill", "environment": "staging", "outcome": "failed",
                  "exit_code": 1, "failed_step": "3. Restore"}  # fmt: skip
        log = notify.deliver_run(plan, record, None, None)
        assert log["sent"][0]["delivered"], log
        (sent,) = receiver.under("/hook/tls")
        assert "failed step:  3. Restore" in json.loads(sent["body"])["message"]
    finally:
        receiver.close()


def test_a_run_refused_before_it_began_still_tells_the_flags(receiver, outputs) -> None:
    """A profile that no longer loads: exit 2, and the command line's URLs hear it at once."""
    hook = receiver.url("json", "/hook/refused", f"u:{URL_CANARY}@")
    ping = receiver.url("http", f"/ping/{PING_CANARY}")
    runbook = str(Path(sys.executable).with_name("runbook"))
    proc = subprocess.run(
        [runbook, "run", "restore_drill", "--env", "nosuch", "--notify", hook, "--ping", ping],
        cwd=project_root(),
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert proc.returncode == 2, proc.stderr
    assert "nothing ran" in proc.stdout
    (sent,) = receiver.under("/hook/refused")
    payload = json.loads(sent["body"])
    assert payload["title"] == "runbook: restore_drill on nosuch: parameters (exit 2)"
    assert "no profile for environment 'nosuch'" in payload["message"]
    assert [p["path"] for p in receiver.under("/ping")] == [f"/ping/{PING_CANARY}/2"]
    assert "delivered (1 attempt)" in proc.stderr
    assert URL_CANARY not in proc.stdout + proc.stderr and PING_CANARY not in proc.stderr
    assert not outputs.exists() or not any(outputs.rglob("record.json"))


def test_a_dead_runs_host_lock_is_named_with_who_breaks_it(tmp_path) -> None:
    """A SIGKILLed run never releases the host lock: `runbook notify` says so (local target),
    and says nothing of a lock whose holder lives or of no lock at all."""
    from runbook.cli.notify import _dead_lock

    code = "import json; from runbook.evidence.liveness import this_process as p; print(json.dumps(p()))"
    gone = json.loads(
        subprocess.run(
            [sys.executable, "-c", code], capture_output=True, text=True, check=True
        ).stdout
    )
    lock = tmp_path / "dealix-runbook.lock"
    assert _dead_lock(str(lock)) is None
    lock.mkdir()
    owner = {"scenario": "restore_drill", "started": "2026-12-01T04:00:00.000Z"}
    (lock / "owner.json").write_text(json.dumps({**owner, "process": gone}))
    words = _dead_lock(str(lock))
    assert words is not None and words.startswith(f"the host lock {lock} is still held by")
    assert "(restore_drill since 2026-12-01T04:00:00.000Z)" in words
    # a drill's lock the next run breaks by itself (safety/lock.py); any other waits for a person
    assert "breaks it by itself" in words and "refused until a person" not in words
    (lock / "owner.json").write_text(json.dumps({**owner, "scenario": "deploy", "process": gone}))
    words = _dead_lock(str(lock))
    assert words is not None and "refused until a person breaks it" in words
    from runbook.evidence.liveness import this_process

    (lock / "owner.json").write_text(json.dumps({**owner, "process": this_process()}))
    assert _dead_lock(str(lock)) is None
