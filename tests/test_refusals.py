"""Issue 12 (b): a security refusal ends the run, in every notebook.

The sandbox's server keeps its key; the profile pins another one (what an
interceptor, or a rebuilt server, looks like from the operator's side). Every
notebook must stop before its first call of any kind: outcome refused (exit 4),
both fingerprints in the record's error, no HTTP call, no command, no SQL, and
the Dealix API and the SaaS stubs receive nothing.
"""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
from pathlib import Path

import paramiko
import pytest

from runbook import open_session
from runbook.core.transport import fingerprint
from runbook.errors import HostKeyMismatch

ROOT = Path(__file__).resolve().parents[1]
# scenario -> the parameters it needs to start (the rest are the defaults)
NOTEBOOKS = {
    "database_down": {},
    "deploy": {},
    "health_check": {},
    "llm_provider_down": {"sample_seconds": 0.5},
    "restore_drill": {},
    "restore_incident": {"reason": "refusal test"},
    "rollback": {"reason": "refusal test"},
    "security_incident": {},
    "review": {},
}


@pytest.fixture
def wrong_key(sandbox, tmp_path, monkeypatch):
    """The sandbox profile with another ed25519 key pinned for the sandbox's sshd."""
    st = sandbox.state
    other = paramiko.Ed25519Key.from_private_key_file(st["ssh_key"])  # not the host key
    kh = tmp_path / "known_hosts"
    kh.write_text(f"[{st['ssh_host']}]:{st['ssh_port']} {other.get_name()} {other.get_base64()}\n")
    params = tmp_path / "parameters"
    shutil.copytree(ROOT / "parameters", params)
    profile = params / "sandbox.yaml"
    text = profile.read_text()
    assert "known_hosts: ${sandbox.known_hosts}" in text
    profile.write_text(text.replace("known_hosts: ${sandbox.known_hosts}", f"known_hosts: {kh}"))
    monkeypatch.setenv("RUNBOOK_PARAMETERS_DIR", str(params))
    monkeypatch.setenv("RUNBOOK_OUTPUTS", str(tmp_path / "outputs"))
    return {"expected": fingerprint(other), "presented": st["host_key_fingerprint"]}


def _server_logs(sandbox) -> dict[str, int]:
    """Sizes of the logs the API and the stubs append to on every request."""
    sizes = {}
    for program in ("dealix-api", "saas-stubs"):
        path = sandbox.layout.program_log(program)
        sizes[program] = path.stat().st_size if path.exists() else 0
    return sizes


# the API stand-in probes its LLM providers (stubs) every few seconds by itself
BACKGROUND = ("/anthropic/v1/messages", "/openai/", "/google/")


def _requests_since(sandbox, sizes: dict[str, int]) -> list[str]:
    """Requests the API and the stubs logged since `sizes`, but the API's own probes."""
    lines = []
    for program, size in sizes.items():
        with sandbox.layout.program_log(program).open("rb") as fh:
            fh.seek(size)
            lines += [f"{program}: {line}" for line in fh.read().decode().splitlines()]
    return [line for line in lines if '"' in line and not any(b in line for b in BACKGROUND)]


def _events(run_dir: Path) -> list[dict]:
    path = run_dir / "commands.jsonl"
    return [json.loads(line) for line in path.read_text().splitlines()] if path.exists() else []


def test_every_notebook_stops_at_a_changed_host_key(sandbox, wrong_key, tmp_path) -> None:
    before = _server_logs(sandbox)
    procs = {}
    for scenario, params in NOTEBOOKS.items():
        argv = [sys.executable, "-m", "runbook.cli", "run", scenario]
        for key, value in params.items():
            argv += ["-p", key, str(value)]
        # in parallel: each run stops at its first call, the kernels' start is the cost
        procs[scenario] = subprocess.Popen(
            argv, cwd=ROOT, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True
        )
    results = {name: (p.wait(timeout=600), p.stdout.read()) for name, p in procs.items()}
    outputs = tmp_path / "outputs" / "sandbox"
    for scenario, (code, out) in results.items():
        runs = sorted((outputs / scenario).glob("*/record.json"))
        assert len(runs) == 1, (scenario, out)
        record = json.loads(runs[0].read_text())
        events = _events(runs[0].parent)
        http = [e for e in events if e["kind"] == "http"]
        ran = [e for e in events if e["kind"] == "command" and "exit_code" in e]
        if scenario == "review":
            # the review reads local files only: it never contacts the server
            assert record["outcome"] in ("ok", "dod_not_met"), (scenario, record["error"])
            assert not http and not ran and not [e for e in events if e["kind"] == "command"]
            continue
        assert code == 4, (scenario, code, out)
        assert record["outcome"] == "refused" and record["exit_code"] == 4, (scenario, record)
        error = record["error"]
        assert error["type"] == "HostKeyMismatch", (scenario, error)
        for fp in (wrong_key["expected"], wrong_key["presented"]):
            assert fp in error["message"], (scenario, error)
        assert error["details"]["expected"] == wrong_key["expected"], scenario
        assert error["details"]["presented"] == wrong_key["presented"], scenario
        assert not http, (scenario, http)
        assert not ran, (scenario, ran)
        assert record["commands_run"] == 0, scenario
        # no red or "not available" check in place of the refusal (local checks may pass)
        assert all(c["status"] == "passed" for c in record["checks"]), (scenario, record["checks"])
        refused = [e for e in events if e["kind"] == "refused"]
        assert refused and refused[0]["details"]["presented"] == wrong_key["presented"]
    # the API, GitHub, Sentry, PostHog and the status pages got no request
    assert _requests_since(sandbox, before) == []


def test_a_caught_refusal_still_ends_the_run(sandbox, wrong_key, tmp_path) -> None:
    s = open_session("refusal-test", run_dir=tmp_path / "run", interactive=False)
    with pytest.raises(HostKeyMismatch):
        s.api.health()  # the first call of the run is HTTP: it is checked first
    # code that swallows the refusal gets it again on every later call, and
    # nothing goes out
    for call in (
        lambda: s.probe(["true"]),
        lambda: s.api.get("/health"),
        lambda: s.read_file("/etc/hostname"),
        lambda: s.db.query("SELECT 1"),
    ):
        with pytest.raises(HostKeyMismatch):
            call()
    with pytest.raises(HostKeyMismatch):
        s.done()
    record = json.loads((tmp_path / "run" / "record.json").read_text())
    s.close()
    assert record["outcome"] == "refused"
    assert record["error"]["details"]["expected"] == wrong_key["expected"]
    events = _events(tmp_path / "run")
    assert not [e for e in events if e["kind"] == "http"]
    assert not [e for e in events if e["kind"] == "command" and "exit_code" in e]


def test_lock_refusal_and_rule_refusal_carry_details() -> None:
    from runbook.errors import Forbidden

    err = Forbidden("r", "act", source="B", extra={"holder_state": "dead"})
    assert err.details() == {"rule": "r", "action": "act", "source": "B", "holder_state": "dead"}
