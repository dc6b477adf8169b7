"""security_incident.ipynb end to end in isolated mode: a real firewall, fail2ban, an outside.

Needs root, iptables and fail2ban (scripts/setup.sh installs them); without
them the isolated mode cannot exist on this machine and these tests skip,
saying what is missing, unless RUNBOOK_REQUIRE_ISOLATED=1 (scripts/test.sh
sets it when run as root, as CI is): then they fail with that message. The
loopback tests (tests/test_security.py) run everywhere.
"""

from __future__ import annotations

import hashlib
import json
import os
import re
import shutil
import socket
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from runbook.cli import run as runner
from runbook.rehearsal.faults import security_incident as faults_security
from runbook.sandbox import Sandbox, isolated
from runbook.sandbox.build.app import read_app_env
from runbook.sandbox.build.supervisor import NETNS_PROGRAMS
from runbook.sandbox.procs import http_get
from runbook.scenarios import security_incident as security


def missing_for_isolated() -> list[str]:
    """What this machine lacks for the isolated mode (empty when it can run)."""
    missing = [] if os.geteuid() == 0 else [f"root (running as uid {os.geteuid()})"]
    tools = {"ip": "iproute2 (ip)", "iptables": "iptables", "fail2ban-server": "fail2ban"}
    missing += [name for tool, name in tools.items() if not shutil.which(tool)]
    return missing


MISSING = missing_for_isolated()
if MISSING and os.environ.get("RUNBOOK_REQUIRE_ISOLATED") == "1":
    # scripts/test.sh sets this when it runs as root (CI): isolated mode is required
    # there, so a machine without it must fail, not go green with these skipped
    pytestmark = pytest.mark.usefixtures("_require_isolated")
else:
    pytestmark = pytest.mark.skipif(
        bool(MISSING), reason=f"isolated mode needs {', '.join(MISSING)} (missing)"
    )


@pytest.fixture(scope="session")
def _require_isolated() -> None:
    # session scope: set up before the module's `iso` fixture tries to build anything
    pytest.fail(
        "RUNBOOK_REQUIRE_ISOLATED=1 but isolated mode cannot run here: missing "
        + ", ".join(MISSING)
        + " (scripts/setup.sh installs iproute2, iptables, fail2ban; run as root)",
        pytrace=False,
    )


@pytest.fixture(autouse=True)
def outputs(tmp_path, monkeypatch):
    monkeypatch.setenv("RUNBOOK_OUTPUTS", str(tmp_path / "outputs"))
    return tmp_path / "outputs"


KINDS = ["ufw", "iptables"] if shutil.which("ufw") else ["iptables"]


@pytest.fixture(scope="module", params=KINDS)
def iso(sandbox: Sandbox, request) -> Iterator[Sandbox]:
    """The isolated host, once with ufw (production's firewall) and once with iptables."""
    previous = os.environ.get("RUNBOOK_ISOLATED_FIREWALL")
    os.environ["RUNBOOK_ISOLATED_FIREWALL"] = request.param
    try:
        isolated.down(sandbox)
        isolated.up(sandbox)
        assert sandbox.state["isolated"]["firewall"] == request.param
        yield sandbox
    finally:
        isolated.down(sandbox)
        if previous is None:
            os.environ.pop("RUNBOOK_ISOLATED_FIREWALL", None)
        else:
            os.environ["RUNBOOK_ISOLATED_FIREWALL"] = previous


@pytest.fixture
def healed_iso(iso: Sandbox) -> Iterator[Sandbox]:
    yield iso
    iso.heal()


def _status(sb: Sandbox, key: str) -> int:
    return http_get(sb.state["base_url"] + security.PROBE_PATH, headers={"X-API-Key": key})[0]


def test_isolated_mode_is_a_separate_host_with_its_own_firewall(iso) -> None:
    info = iso.state["isolated"]
    assert info["server_ip"] != "127.0.0.1"
    assert isolated.ssh_reachable_from_operator(iso)
    assert isolated.ssh_reachable_from_outside(iso)
    rules = isolated.iptables(iso, "-S")
    assert re.search(r"^-A \S+ -p tcp -m tcp --dport 22 -j ACCEPT$", rules, re.M), rules
    if info["firewall"] == "ufw":
        status = isolated._run("ufw", "status", ns=info["server_ns"]).stdout
        assert "Status: active" in status and "22/tcp" in status
    assert "Status for the jail: sshd" in isolated.fail2ban(iso, "status", "sshd")


def _outside_http(sb: Sandbox) -> int:
    """GET /health through nginx from the outside namespace (another client on the net)."""
    info = sb.state["isolated"]
    url = f"http://{info['server_outside_ip']}:{sb.state['nginx_port']}/health"
    return isolated.http_status_in_ns(info["outside_ns"], url, {})


def test_server_side_runs_in_the_namespace(iso) -> None:
    """Postgres, Redis, the API and nginx are in the server namespace; the stubs are not."""
    info = iso.state["isolated"]
    in_ns = set(isolated._run("ip", "netns", "pids", info["server_ns"]).stdout.split())
    for program in NETNS_PROGRAMS:
        assert str(iso.pid(program)) in in_ns, program
    assert str(iso.pid("saas-stubs")) not in in_ns  # "the internet" stays outside
    # nothing of the server side listens on this machine's loopback any more
    for port in ("pg_port", "redis_port", "api_port", "nginx_port"):
        with pytest.raises(OSError):
            socket.create_connection(("127.0.0.1", iso.state[port]), timeout=2).close()
    # the operator reaches the API through nginx at the namespace's address
    assert iso.state["base_url"] == f"http://{info['server_ip']}:{iso.state['nginx_port']}"
    assert http_get(iso.state["base_url"] + "/health")[0] == 200
    status, body = iso.api("/health/deep")
    assert status == 200, body
    assert iso.query("SELECT count(*) FROM leads")  # over the shared Unix socket
    # the app reaches the SaaS at the host side of the veth
    env = read_app_env(iso.layout)
    stubs = f"@{info['operator_ip']}:{iso.state['stubs_port']}/"
    assert stubs in env["SENTRY_DSN"], env["SENTRY_DSN"]
    for key in ("POSTHOG_HOST", "ANTHROPIC_BASE_URL", "OPENAI_BASE_URL", "GOOGLE_BASE_URL"):
        assert env[key].startswith(f"http://{info['operator_ip']}:{iso.state['stubs_port']}/")
    # the firewall governs HTTP as well as SSH: open to all, the outside included
    rules = isolated.iptables(iso, "-S")
    assert re.search(rf"--dport {iso.state['nginx_port']} -j ACCEPT$", rules, re.M), rules
    assert _outside_http(iso) == 200


def test_intrusion_end_to_end_outside_blocked_operator_in(healed_iso) -> None:
    sb = healed_iso
    info = sb.state["isolated"]
    old_key = sb.admin_key
    env_before = read_app_env(sb.layout)
    sb.fault("intrusion")
    sb.fault("leaked-admin-key")
    assert isolated.ssh_reachable_from_outside(sb)  # before: anyone reaches SSH

    code, run_dir = runner.run(
        "security_incident",
        {"env": "sandbox-isolated", "known_addresses": [faults_security.COLLEAGUE]},
        quiet=True,
    )
    record = json.loads((run_dir / "record.json").read_text())
    assert code == 0, record
    status = {c["name"]: c["status"] for c in record["checks"]}
    for name in (
        "Secrets rotated",
        "New admin key accepted",
        "Old admin key refused",
        "Firewall rules saved",
        "Outside reaches SSH before lockdown",
        f"SSH restricted to {info['operator_ip']}",
        "New SSH connection from the operator works",
        "Firewall locked (proved from outside)",
        "Attacker addresses banned",
        "Authorized addresses unbanned",
        "Evidence tarball hash matches",
        "Incident document drafted",
        "Notification to Sami Assiri drafted",
    ):
        assert status.get(name) == "passed", (name, record["checks"])
    assert "not available" not in status.values()
    rotated = next(c for c in record["checks"] if c["name"] == "Secrets rotated")
    assert rotated["actual"] == "ADMIN_KEY replaced, WEBHOOK_SECRET replaced"

    # From outside the notebook: the outside namespace is blocked, the operator is not.
    assert not isolated.ssh_reachable_from_outside(sb)
    assert isolated.ssh_reachable_from_operator(sb)
    assert _outside_http(sb) == 200  # the lockdown narrows SSH only, as on production
    rules = isolated.iptables(sb, "-S")
    assert f"-s {info['operator_ip']}/32 -p tcp -m tcp --dport 22 -j ACCEPT" in rules
    banned = isolated.fail2ban(sb, "status", "sshd")
    assert faults_security.ATTACKER in banned and faults_security.SCANNER in banned
    assert faults_security.COLLEAGUE not in banned
    # The keys, checked against the API directly.
    env_after = read_app_env(sb.layout)
    new_key = env_after["ADMIN_KEY"]
    assert _status(sb, old_key) == 401 and _status(sb, new_key) == 200
    for key in security.ROTATED:  # each rotated key, from the server's .env before and after
        assert env_after[key] and env_after[key] != env_before[key], key
    # The evidence tarball: the downloaded copy's hash is the server's.
    events = [json.loads(x) for x in (run_dir / "commands.jsonl").read_text().splitlines()]
    ev = next(e for e in events if e.get("kind") == "evidence")
    local = run_dir / "evidence" / Path(ev["remote"]).name
    assert hashlib.sha256(local.read_bytes()).hexdigest() == ev["sha256"]
    assert ev["sha256"] in (run_dir / "notify-sami.md").read_text()
    # The saved rules are restorable iptables-save output.
    saved = next(c["actual"] for c in record["checks"] if c["name"] == "Firewall rules saved")
    suffix = ".user.rules" if info["firewall"] == "ufw" else ".rules"
    assert "--dport 22 -j ACCEPT" in Path(saved + suffix).read_text()

    sb.heal()  # back to a fresh server: the outside reaches SSH again
    assert isolated.ssh_reachable_from_outside(sb)


def test_isolated_refuses_to_lock_down_to_the_outside_address(healed_iso) -> None:
    info = healed_iso.state["isolated"]
    code, run_dir = runner.run(
        "security_incident",
        {"env": "sandbox-isolated", "allow_ssh_from": info["outside_ip"]},
        quiet=True,
    )
    record = json.loads((run_dir / "record.json").read_text())
    assert code == runner.EXIT["refused"], record
    assert "no-self-lockout" in record["error"]["message"]
    assert info["operator_ip"] in record["error"]["message"]
    assert isolated.ssh_reachable_from_outside(healed_iso)  # nothing changed


def test_a_lockdown_that_shuts_the_operator_out_is_caught_and_reverted(healed_iso) -> None:
    """Overridden to the wrong address: the new-connection proof fails, the run
    is not done, and the revert timer on the server restores the saved rules."""
    info = healed_iso.state["isolated"]
    code, run_dir = runner.run(
        "security_incident",
        {
            "env": "sandbox-isolated",
            "allow_ssh_from": info["outside_ip"],
            "override_lockout_check": True,
            "lockdown_revert_seconds": 20,
        },
        quiet=True,
    )
    record = json.loads((run_dir / "record.json").read_text())
    assert code == runner.EXIT["dod_not_met"], (
        record["error"],
        record["failed_step"],
        record["checks"],
    )
    status = {c["name"]: c["status"] for c in record["checks"]}
    assert status["New SSH connection from the operator works"] == "failed"
    # the established session carried the rest of the run: evidence was still preserved
    assert status["Evidence tarball hash matches"] == "passed"
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline and not isolated.ssh_reachable_from_operator(healed_iso):
        time.sleep(1)
    assert isolated.ssh_reachable_from_operator(healed_iso)  # the timer put the rules back
    assert f"-s {info['outside_ip']}/32" not in isolated.iptables(healed_iso, "-S")
