"""security_incident.ipynb on the loopback sandbox, and the scenario-6 faults.

Loopback mode has no host firewall and no fail2ban: those steps must read
"not available", never "passed". Rotation, its proof, the investigation and
the evidence tarball are real and checked from outside the notebook too.
"""

from __future__ import annotations

import hashlib
import json
from pathlib import Path

import pytest

from runbook.cli import run as runner
from runbook.rehearsal.faults import security_incident as faults_security
from runbook.sandbox.build.app import read_app_env
from runbook.sandbox.procs import http_get
from runbook.scenarios import security_incident as security

FIREWALL_ROWS = (
    "Firewall rules saved",
    "SSH restricted to 127.0.0.1",
    "New SSH connection from the operator works",
    "Firewall locked (proved from outside)",
    "Attacker addresses banned",
)


@pytest.fixture(autouse=True)
def outputs(tmp_path, monkeypatch):
    monkeypatch.setenv("RUNBOOK_OUTPUTS", str(tmp_path / "outputs"))
    return tmp_path / "outputs"


def _status(sandbox, key: str) -> int:
    url = sandbox.state["base_url"] + security.PROBE_PATH
    return http_get(url, headers={"X-API-Key": key})[0]


def _record(run_dir: Path) -> dict:
    return json.loads((run_dir / "record.json").read_text())


def _events(run_dir: Path) -> list[dict]:
    return [json.loads(x) for x in (run_dir / "commands.jsonl").read_text().splitlines()]


def test_intrusion_contained_proved_and_preserved(sandbox, healed) -> None:
    old_key = sandbox.admin_key
    old_webhook = sandbox.secrets()["DEALIX_WEBHOOK_SECRET"]
    env_before = read_app_env(sandbox.layout)
    healed.fault("intrusion")
    healed.fault("leaked-admin-key")
    assert _status(sandbox, old_key) == 200  # the leaked key works before the notebook

    code, run_dir = runner.run("security_incident", {}, quiet=True)
    record = _record(run_dir)
    assert code == 0, record
    assert record["outcome"] == "ok"
    status = {c["name"]: c["status"] for c in record["checks"]}
    for name in (
        "Old admin key worked before rotation",
        "Secrets rotated",
        "New admin key accepted",
        "Old admin key refused",
        "Evidence tarball hash matches",
        "Incident document drafted",
        "Notification to Sami Assiri drafted",
        "Contained and documented within 60 min",
    ):
        assert status[name] == "passed", (name, record["checks"])
    checks = {c["name"]: c for c in record["checks"]}
    # every rotated key compared before/after, named one by one (values never shown)
    assert checks["Secrets rotated"]["actual"] == "ADMIN_KEY replaced, WEBHOOK_SECRET replaced"
    for name in FIREWALL_ROWS:
        assert status[name] == "not available", (name, status)
    assert status["Authorized addresses unbanned"] == "not available"  # 127.0.0.1 was banned

    # Independently of the notebook: the old key is refused, the new one (from the
    # server's .env) accepted, and the operator's secrets file holds the new values.
    app_env = read_app_env(sandbox.layout)
    new_key = app_env["ADMIN_KEY"]
    assert new_key != old_key
    assert _status(sandbox, old_key) == 401
    assert _status(sandbox, new_key) == 200
    assert sandbox.admin_key == new_key
    assert sandbox.secrets()["DEALIX_WEBHOOK_SECRET"] == app_env["WEBHOOK_SECRET"] != old_webhook
    for key in security.ROTATED:  # per key, read from the server's .env before and after
        assert app_env[key] and app_env[key] != env_before[key], key

    # Scenario 6 step 5: the notification to Sami, drafted with the evidence hashes, not sent.
    notice = (run_dir / "notify-sami.md").read_text()
    doc_path = next(run_dir.glob("incident-*.md"))
    assert notice.startswith("To: Sami Assiri")
    assert hashlib.sha256(doc_path.read_bytes()).hexdigest() in notice
    assert "When: " in notice and "What: " in notice
    assert checks["Notification to Sami Assiri drafted"]["actual"].endswith("NOT sent: send it now")
    assert record["decisions"]["Notify the runbook owner"]["choice"] == "drafted; a person sends it"
    steps = [x["name"] for x in record["steps"]]
    assert steps.index("5b. Notify Sami") > steps.index("4. Preserve evidence")

    # Evidence: the downloaded tarball's hash is the server's, and the server's file is intact.
    ev = next(e for e in _events(run_dir) if e.get("kind") == "evidence")
    assert ev["sha256"] in notice
    local = run_dir / "evidence" / Path(ev["remote"]).name
    assert hashlib.sha256(local.read_bytes()).hexdigest() == ev["sha256"]
    assert hashlib.sha256(Path(ev["remote"]).read_bytes()).hexdigest() == ev["sha256"]
    assert (local.parent / (local.name + ".sha256")).read_text().split()[0] == ev["sha256"]
    import tarfile

    with tarfile.open(local) as tar:
        names = tar.getnames()
    assert any(n.endswith("auth.log") for n in names)
    assert any(n.endswith("nginx/access.log") for n in names)
    assert any(n.endswith("dealix-api.log") for n in names)

    # The investigation named the attacker: failed then accepted logins, granted admin calls.
    doc = next(run_dir.glob("incident-*.md")).read_text()
    assert "| 203.0.113.66 | deploy | 1 | 6 |" in doc
    assert "| 127.0.0.1 | True |" in doc  # the authorized address fail2ban banned
    assert "203.0.113.66 | /api/v1/admin/dlq/stats" in doc
    assert "198.51.100.23" in doc
    assert (run_dir / "security-advisory-draft.md").read_text().startswith("# GitHub security")

    # No key ever reaches the evidence (the downloaded tarball holds logs only).
    for path in run_dir.rglob("*"):
        if path.is_file() and path.suffix != ".tgz":
            text = path.read_text(errors="replace")
            for secret in (old_key, new_key, app_env["WEBHOOK_SECRET"], old_webhook):
                assert secret not in text, path


def test_refuses_to_lock_down_to_an_address_that_is_not_the_operators(sandbox, healed) -> None:
    key = sandbox.admin_key
    code, run_dir = runner.run("security_incident", {"allow_ssh_from": "192.0.2.10"}, quiet=True)
    record = _record(run_dir)
    assert code == runner.EXIT["refused"], record
    assert record["outcome"] == "refused"
    assert "no-self-lockout" in record["error"]["message"]
    assert "127.0.0.1" in record["error"]["message"]  # says which address the server sees
    assert record["failed_step"] == "0. Preflight: operator address"
    # refused before anything changed: no rotation, the operator's key still works
    assert [c["what"] for c in record["changes"] if "dealix-runbook.lock" not in c["what"]] == []
    assert sandbox.admin_key == key and _status(sandbox, key) == 200


def test_override_allows_another_address_and_is_recorded(sandbox, healed) -> None:
    code, run_dir = runner.run(
        "security_incident",
        {"allow_ssh_from": "192.0.2.10", "override_lockout_check": True},
        quiet=True,
    )
    record = _record(run_dir)
    assert code == 0, record
    assert "SSH restricted to 192.0.2.10" in {c["name"] for c in record["checks"]}
    overrides = [e for e in _events(run_dir) if e.get("kind") == "override"]
    assert overrides == [
        {**overrides[0], "rule": "no-self-lockout", "seen": "127.0.0.1", "target": "192.0.2.10"}
    ]


def test_faults_write_the_signals_and_heal_removes_them(sandbox, healed) -> None:
    auth = Path(sandbox.state["auth_log"])
    status_file = faults_security.fail2ban_status_file(sandbox)
    healed.fault("intrusion")
    text = auth.read_text()
    assert "Accepted password for deploy from 203.0.113.66" in text
    assert "banned" in status_file.read_text() and "127.0.0.1" in status_file.read_text()
    api_log = faults_security.api_log(sandbox).read_text()
    assert '203.0.113.66 "GET /api/v1/admin/dlq/stats" 401' in api_log
    healed.heal()
    assert "203.0.113.66" not in auth.read_text()
    assert "203.0.113.66" not in faults_security.api_log(sandbox).read_text()
    assert not status_file.exists()
    assert _status(sandbox, sandbox.admin_key) == 200


def test_a_rotation_that_skips_a_key_is_not_reported_as_rotated(sandbox, healed) -> None:
    """The app's script stops replacing WEBHOOK_SECRET but still prints that it rotated
    both: the before/after comparison names the key and the definition of done fails."""
    before = read_app_env(sandbox.layout)
    healed.fault("partial-rotation")
    code, run_dir = runner.run("security_incident", {}, quiet=True)
    record = _record(run_dir)
    assert code == runner.EXIT["dod_not_met"], record
    rotated = next(c for c in record["checks"] if c["name"] == "Secrets rotated")
    assert rotated["status"] == "failed"
    assert rotated["actual"] == "ADMIN_KEY replaced, WEBHOOK_SECRET unchanged"
    assert "rotated: ADMIN_KEY WEBHOOK_SECRET" in rotated["note"]  # what the script claimed
    after = read_app_env(sandbox.layout)
    assert after["ADMIN_KEY"] != before["ADMIN_KEY"]
    assert after["WEBHOOK_SECRET"] == before["WEBHOOK_SECRET"]
    for path in run_dir.rglob("*"):
        if path.is_file() and path.suffix != ".tgz":
            assert before["WEBHOOK_SECRET"] not in path.read_text(errors="replace"), path


def test_a_dry_run_previews_the_rotation_by_key_name_and_changes_nothing(sandbox, healed) -> None:
    """Dry run of scenario 6: the keys it would rotate, by name only, the restart, and
    the operator's secrets it would update; the server's .env and the API's key stay."""
    env = Path(sandbox.state["app_dir"]) / ".env"
    before_bytes = env.read_bytes()
    before = read_app_env(sandbox.layout)
    code, run_dir = runner.run("security_incident", {"dry_run": True}, quiet=True)
    record = _record(run_dir)
    assert code == 0 and record["dry_run"] is True, record  # a clean dry run
    rotated = next(c for c in record["checks"] if c["name"] == "Secrets rotated")
    assert rotated["status"] == "not available"  # a dry run proves nothing
    # nothing was contained: its speed is not judged, never passed
    contained = next(c for c in record["checks"] if c["name"].startswith("Contained and"))
    assert (contained["status"], contained["actual"]) == ("not available", "not run (dry run)")
    preview = record["preview"]
    assert preview[".env keys"] == [f"{key}: new value (rotated)" for key in security.ROTATED], (
        preview
    )
    assert any("dealix-api" in line for line in preview["services to restart"]), preview
    assert record["changes"] == []
    assert env.read_bytes() == before_bytes
    assert _status(sandbox, before["ADMIN_KEY"]) == 200  # the old key still works
    for path in run_dir.rglob("*"):
        if path.is_file() and path.suffix != ".tgz":
            text = path.read_text(errors="replace")
            assert before["ADMIN_KEY"] not in text and before["WEBHOOK_SECRET"] not in text
