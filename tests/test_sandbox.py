"""The sandbox, checked part by part against the real thing (no mocks).

The session's sandbox comes from conftest.py. The last test takes it down,
checks by PID that nothing is left, and brings it back up for whatever
runs after this file.
"""

from __future__ import annotations

import gzip
import hashlib
import hmac
import json
import os
import re
import shlex
import stat
import subprocess
import sys
import time
import uuid
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import httpx
import paramiko
import pytest

from runbook.rehearsal.faults import listing
from runbook.sandbox import Sandbox, SandboxError, UnknownFault
from runbook.sandbox.procs import alive, descendants, proc_name, start_time

README_KEYS = (
    "ssh_host ssh_port ssh_user ssh_key known_hosts host_key_fingerprint app_dir origin_dir "
    "backups_dir pgdata log_dir pg_port pg_socket_dir pg_superuser psql redis_port redis_url "
    "api_port nginx_port base_url stubs_port stubs_url supervisorctl secrets_file"
).split()
SECRET_KEYS = (
    "DEALIX_ADMIN_KEY",
    "GITHUB_TOKEN",
    "SENTRY_AUTH_TOKEN",
    "POSTHOG_PERSONAL_API_KEY",
    "POSTHOG_PROJECT_API_KEY",
    "ANTHROPIC_API_KEY",
    "OPENAI_API_KEY",
    "GOOGLE_API_KEY",
)
APP_ENV_KEYS = (
    "APP_ENV DATABASE_URL REDIS_URL ADMIN_KEY WEBHOOK_SECRET ANTHROPIC_API_KEY OPENAI_API_KEY "
    "GOOGLE_API_KEY ANTHROPIC_BASE_URL OPENAI_BASE_URL GOOGLE_BASE_URL LLM_PROVIDER_PRIORITY "
    "BREAKER_FAILURE_THRESHOLD BREAKER_RESET_SECONDS WORKLOAD_INTERVAL_SECONDS SENTRY_DSN "
    "POSTHOG_API_KEY POSTHOG_HOST"
).split()


def sh(command: str, timeout: float = 60, **kw: Any) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        ["bash", "-o", "pipefail", "-c", command],
        capture_output=True,
        text=True,
        timeout=timeout,
        check=False,
        **kw,
    )


def psql(sb: Sandbox, sql: str, db: str = "dealix") -> subprocess.CompletedProcess[str]:
    """Run SQL with the state's `psql` prefix, as the runbook does on the server."""
    return sh(f"{sb.state['psql']} -X -d {db} -v ON_ERROR_STOP=1 -Atc {shlex.quote(sql)}")


def ssh_argv(sb: Sandbox, known_hosts: str, *command: str) -> list[str]:
    st = sb.state
    return [
        "ssh",
        "-F",
        "/dev/null",
        "-o",
        "StrictHostKeyChecking=yes",
        "-o",
        f"UserKnownHostsFile={known_hosts}",
        "-o",
        "GlobalKnownHostsFile=/dev/null",
        "-o",
        "BatchMode=yes",
        "-o",
        "IdentitiesOnly=yes",
        "-o",
        "ConnectTimeout=5",
        "-i",
        st["ssh_key"],
        "-p",
        str(st["ssh_port"]),
        f"{st['ssh_user']}@127.0.0.1",
        *command,
    ]


def api(
    sb: Sandbox, method: str, path: str, *, key: str | None = None, **kw: Any
) -> httpx.Response:
    headers = kw.pop("headers", {})
    if key is not None:
        headers["X-API-Key"] = key
    return httpx.request(method, sb.state["base_url"] + path, headers=headers, timeout=30, **kw)


# --------------------------------------------------------------------------- up / state


def test_up_again_is_idempotent(sandbox: Sandbox) -> None:
    before = sandbox.state
    after = sandbox.up()
    # The fast path neither restarts a program nor rewrites the record of the last full up.
    assert after["pids"] == before["pids"]
    assert after["up_at"] == before["up_at"]
    assert {n: p["pid"] for n, p in sandbox.programs().items()} == {
        n: pid for n, pid in before["pids"].items() if n != "supervisord"
    }


def test_state_has_the_contract_keys(sandbox: Sandbox) -> None:
    state = sandbox.state
    missing = [k for k in README_KEYS if k not in state]
    assert not missing
    assert state["ssh_user"] == (
        "root" if os.geteuid() == 0 else os.environ.get("USER", state["ssh_user"])
    )
    assert state["base_url"] == f"http://127.0.0.1:{state['nginx_port']}"
    assert Path(state["pg_socket_dir"]).parent.name.startswith("rbsb-")
    assert (
        len(
            {
                state[k]
                for k in (
                    "ssh_port",
                    "pg_port",
                    "redis_port",
                    "api_port",
                    "nginx_port",
                    "stubs_port",
                )
            }
        )
        == 6
    )


def test_status_is_all_healthy(sandbox: Sandbox) -> None:
    rows = sandbox.status()
    assert [r for r in rows if not r["healthy"]] == []
    names = {r["name"] for r in rows}
    assert {"ssh login", "postgres", "redis", "api /health/deep", "backups", "faults"} <= names


def test_cli_status_and_fault_list(sandbox: Sandbox) -> None:
    run = [sys.executable, "-m", "runbook.cli", "sandbox", "--dir", str(sandbox.state_dir)]
    out = subprocess.run(
        [*run, "status", "--json"], capture_output=True, text=True, timeout=60, check=False
    )
    assert out.returncode == 0, out.stdout + out.stderr
    assert all(r["healthy"] for r in json.loads(out.stdout))
    listing = subprocess.run(
        [*run, "fault", "--list"], capture_output=True, text=True, timeout=30, check=False
    )
    assert listing.returncode == 0
    for name in ("postgres-down", "pool-exhausted", "ci-red", "llm-down:PROVIDER"):
        assert name in listing.stdout
    bad = subprocess.run(
        [*run, "fault", "no-such-fault"], capture_output=True, text=True, timeout=30, check=False
    )
    assert bad.returncode == 2
    assert "postgres-down" in bad.stderr


def test_secrets_are_private_and_shared(sandbox: Sandbox) -> None:
    lay = sandbox.layout
    secrets = sandbox.secrets()
    assert set(SECRET_KEYS) <= set(secrets)
    for path in (
        lay.secrets_file,
        lay.app_dir / ".env",
        lay.app_dir / ".env.pre-v3.0.0.bak",
        lay.stubs_config,
    ):
        assert stat.S_IMODE(path.stat().st_mode) == 0o600, path
    app_env = dict(
        line.split("=", 1)
        for line in (lay.app_dir / ".env").read_text().splitlines()
        if line and not line.startswith("#")
    )
    assert app_env["ADMIN_KEY"] == secrets["DEALIX_ADMIN_KEY"]
    stubs = json.loads(lay.stubs_config.read_text())
    assert stubs["github_token"] == secrets["GITHUB_TOKEN"]
    # No secret may reach state.json, the build log or any program's log.
    public = lay.state_file.read_text() + (lay.root / "build.log").read_text()
    for log in lay.supervisor_logs.glob("*.log"):
        public += log.read_text(errors="replace")
    for name, value in secrets.items():
        assert value not in public, name


# --------------------------------------------------------------------------- ssh


def test_ssh_login_with_the_pinned_host_key(sandbox: Sandbox) -> None:
    st = sandbox.state
    out = subprocess.run(
        ssh_argv(
            sandbox,
            st["known_hosts"],
            "id -un; test -d " + shlex.quote(st["app_dir"]) + " && echo app-ok",
        ),
        capture_output=True,
        text=True,
        timeout=30,
        check=False,
    )
    assert out.returncode == 0, out.stderr
    assert out.stdout.split() == [st["ssh_user"], "app-ok"]
    known = Path(st["known_hosts"]).read_text()
    assert re.fullmatch(rf"\[127\.0\.0\.1\]:{st['ssh_port']} ssh-ed25519 AAAA\S+\n", known)


def test_ssh_refuses_a_different_host_key(sandbox: Sandbox, tmp_path: Path) -> None:
    other = tmp_path / "other_key"
    subprocess.run(["ssh-keygen", "-q", "-t", "ed25519", "-N", "", "-f", str(other)], check=True)
    blob = other.with_suffix(".pub").read_text().split()[1]
    wrong = tmp_path / "known_hosts"
    wrong.write_text(f"[127.0.0.1]:{sandbox.state['ssh_port']} ssh-ed25519 {blob}\n")
    out = subprocess.run(
        ssh_argv(sandbox, str(wrong), "true"),
        capture_output=True,
        text=True,
        timeout=30,
        check=False,
    )
    assert out.returncode == 255
    assert (
        "REMOTE HOST IDENTIFICATION HAS CHANGED" in out.stderr
        or "Host key verification failed" in out.stderr
    )


def test_paramiko_pinned_login_and_auth_log(sandbox: Sandbox) -> None:
    st = sandbox.state
    client = paramiko.SSHClient()
    client.load_host_keys(st["known_hosts"])
    client.set_missing_host_key_policy(paramiko.RejectPolicy())
    client.connect(
        "127.0.0.1",
        port=st["ssh_port"],
        username=st["ssh_user"],
        key_filename=st["ssh_key"],
        allow_agent=False,
        look_for_keys=False,
        timeout=10,
    )
    try:
        key = client.get_transport().get_remote_server_key()  # type: ignore[union-attr]
        assert (
            "SHA256:" + key.fingerprint.split(":", 1)[1] == st["host_key_fingerprint"]
            or key.fingerprint == st["host_key_fingerprint"]
        )
    finally:
        client.close()
    assert f"Accepted publickey for {st['ssh_user']}" in Path(st["auth_log"]).read_text()
    assert "MaxSessions 10" in sandbox.layout.sshd_config.read_text()


# --------------------------------------------------------------------------- postgres


def test_psql_sees_the_seeded_leads(sandbox: Sandbox) -> None:
    out = psql(
        sandbox,
        "SELECT count(*), extract(epoch FROM now() - min(created_at)), "
        "extract(epoch FROM now() - max(created_at)) FROM leads",
    )
    assert out.returncode == 0, out.stderr
    count, oldest, newest = out.stdout.strip().split("|")
    assert int(count) >= 10_000
    assert 89 * 86400 <= float(oldest) <= 91 * 86400
    assert float(newest) <= 3 * 3600
    # Spread, not a lump: every one of the last 90 days has leads.
    days = psql(
        sandbox,
        "SELECT count(DISTINCT created_at::date) FROM leads "
        "WHERE created_at > now() - interval '90 days'",
    )
    assert int(days.stdout) >= 89


def test_seeded_reference_data(sandbox: Sandbox) -> None:
    plans = sandbox.query("SELECT code, price_monthly_sar FROM pricing_plans WHERE active")
    assert 3 <= len(plans) <= 4 and all(p[1] > 0 for p in plans)
    assert 150 <= sandbox.query("SELECT count(*) FROM users")[0][0] <= 250
    pending = sandbox.query("SELECT count(*) FROM approvals WHERE status = 'pending'")[0][0]
    assert 0 < pending < 10
    assert sandbox.query("SELECT count(*) FROM webhook_events")[0][0] > 0
    assert sandbox.query("SELECT version_num FROM alembic_version")[0][0] == "0002"


def test_app_role_uses_a_password_over_tcp(sandbox: Sandbox) -> None:
    import psycopg

    st = sandbox.state
    env = (sandbox.layout.app_dir / ".env").read_text()
    url = re.search(r"^DATABASE_URL=(\S+)$", env, re.M).group(1)  # type: ignore[union-attr]
    with psycopg.connect(url, connect_timeout=5) as conn:
        assert conn.execute("SELECT current_user").fetchone() == ("dealix",)
    with pytest.raises(psycopg.OperationalError):
        psycopg.connect(
            f"postgresql://dealix:wrong@127.0.0.1:{st['pg_port']}/dealix", connect_timeout=5
        )


# --------------------------------------------------------------------------- the app


def test_app_dir_is_a_deployed_clone(sandbox: Sandbox) -> None:
    st = sandbox.state
    app = Path(st["app_dir"])

    def git(*args: str) -> str:
        return subprocess.run(
            ["git", "-C", str(app), *args], capture_output=True, text=True, check=True
        ).stdout.strip()

    head = git("rev-parse", "HEAD")
    assert head == st["origin_head"] == (app / ".last_good_sha").read_text().strip()
    assert git("status", "--porcelain") == ""
    assert int(git("rev-list", "--count", "HEAD")) >= 2
    backup = git("rev-parse", "server-backup-20260423-084442")
    assert (
        backup
        == git("rev-parse", "origin/server-backup-20260423-084442")
        == git("rev-parse", "HEAD~1")
    )
    assert (app / ".env.pre-v3.0.0.bak").exists() and (app / ".env.example").exists()
    assert os.access(app / "scripts" / "rotate_secrets.sh", os.X_OK)
    env_text = (app / ".env").read_text()
    for key in APP_ENV_KEYS:
        assert re.search(rf"^{key}=", env_text, re.M), key
    assert 'LLM_PROVIDER_PRIORITY="anthropic,openai,google"' in env_text


def test_app_venv_installs_requirements_offline_and_migrates(sandbox: Sandbox) -> None:
    app = sandbox.layout.app_dir
    env = {"PATH": "/usr/bin:/bin", "HOME": str(sandbox.state_dir), "LANG": "C.UTF-8"}
    pip = subprocess.run(
        [str(app / ".venv/bin/python"), "-m", "pip", "install", "-r", "requirements.txt"],
        cwd=app,
        env=env,
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    assert pip.returncode == 0, pip.stdout + pip.stderr
    assert "Requirement already satisfied" in pip.stdout
    up = subprocess.run(
        [str(app / ".venv/bin/alembic"), "upgrade", "head"],
        cwd=app,
        env=env,
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    assert up.returncode == 0, up.stderr
    current = subprocess.run(
        [str(app / ".venv/bin/alembic"), "current"],
        cwd=app,
        env=env,
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    assert "0002 (head)" in current.stdout


def test_public_endpoints_through_nginx(sandbox: Sandbox) -> None:
    health = api(sandbox, "GET", "/health")
    assert health.status_code == 200
    assert health.json() == {"status": "ok", "sha": sandbox.state["origin_head"]}
    assert health.headers.get("server", "").startswith("nginx")
    deep = api(sandbox, "GET", "/health/deep")
    assert deep.status_code == 200, deep.text
    assert deep.json()["status"] == "green"
    assert {deep.json()[p]["status"] for p in ("postgres", "redis", "llm_providers")} == {"green"}
    plans = api(sandbox, "GET", "/api/v1/pricing/plans").json()["plans"]
    assert {"id", "code", "name", "price_monthly_sar", "max_leads"} <= set(plans[0])
    leads = api(sandbox, "GET", "/api/v1/leads", params={"limit": 5})
    assert leads.status_code == 200
    created = api(
        sandbox,
        "POST",
        "/api/v1/leads",
        json={"company": "Tabuk Solar Est.", "contact_name": "Reem Al-Harbi"},
    )
    assert created.status_code == 201, created.text
    one = api(sandbox, "GET", f"/api/v1/leads/{created.json()['id']}")
    assert one.status_code == 200 and one.json()["company"] == "Tabuk Solar Est."


def test_webhook_needs_a_valid_signature(sandbox: Sandbox) -> None:
    secret = sandbox.secrets()["DEALIX_WEBHOOK_SECRET"]
    body = json.dumps({"event_id": f"evt_{uuid.uuid4().hex[:20]}", "type": "payment.paid"}).encode()
    sig = "sha256=" + hmac.new(secret.encode(), body, hashlib.sha256).hexdigest()
    ok = api(
        sandbox,
        "POST",
        "/api/v1/webhooks/moyasar",
        content=body,
        headers={"X-Dealix-Signature": sig, "Content-Type": "application/json"},
    )
    assert ok.status_code == 200, ok.text
    bad = api(
        sandbox,
        "POST",
        "/api/v1/webhooks/moyasar",
        content=body,
        headers={"X-Dealix-Signature": "sha256=00", "Content-Type": "application/json"},
    )
    assert bad.status_code == 401


@pytest.mark.parametrize(
    ("method", "path"),
    [
        ("GET", "/api/v1/admin/dlq/stats"),
        ("GET", "/api/v1/admin/approvals/pending"),
        ("GET", "/api/v1/admin/sentry-check"),
        ("POST", "/api/v1/admin/dlq/webhooks/drain?limit=5"),
        ("POST", "/api/v1/admin/dlq/outbound/drain?limit=5"),
        ("POST", "/api/v1/admin/dlq/enrichment/drain?limit=5"),
    ],
)
def test_admin_endpoints_need_the_key(sandbox: Sandbox, method: str, path: str) -> None:
    for key in (None, "wrong-key-123456"):
        refused = api(sandbox, method, path, key=key)
        assert refused.status_code == 401
        assert refused.json() == {"error": "unauthorized"}
    allowed = api(sandbox, method, path, key=sandbox.admin_key)
    assert allowed.status_code == 200, allowed.text
    body = allowed.json()
    if path.endswith("dlq/stats"):
        assert set(body["queues"]) == {"WEBHOOKS_DLQ", "OUTBOUND_DLQ", "ENRICHMENT_DLQ"}
    elif path.endswith("pending"):
        assert 0 < body["count"] < 10 and len(body["pending"]) == body["count"]
    elif path.endswith("sentry-check"):
        assert body["posthog"] == "sent" and body["sentry_event_id"]
    else:
        assert {"queue", "drained", "failed", "remaining"} <= set(body)


# --------------------------------------------------------------------------- process manager


def test_supervisorctl_restart_changes_the_api_pid(sandbox: Sandbox) -> None:
    before = sandbox.pid("dealix-api")
    out = sh(f"{sandbox.state['supervisorctl']} restart dealix-api", timeout=60)
    assert out.returncode == 0, out.stdout + out.stderr
    after = sandbox.pid("dealix-api")
    assert after and after != before and not alive(before)
    sandbox.wait_api()
    assert api(sandbox, "GET", "/health").status_code == 200
    tail = sh(f"{sandbox.state['supervisorctl']} tail dealix-api")
    assert "Uvicorn running" in tail.stdout or "startup complete" in tail.stdout


# --------------------------------------------------------------------------- faults


def test_fault_registry(sandbox: Sandbox) -> None:
    names = [f.usage for f in listing()]
    assert {"postgres-down", "pool-exhausted", "ci-red", "llm-down:PROVIDER"} <= set(names)
    with pytest.raises(UnknownFault, match="postgres-down"):
        sandbox.fault("no-such-fault")
    with pytest.raises(UnknownFault, match="anthropic"):
        sandbox.fault("llm-down:nobody")
    assert sandbox.heal() == []


def test_postgres_down_and_heal(healed: Sandbox) -> None:
    sb = healed
    assert sb.fault("postgres-down") == "postgres-down applied"
    assert sb.fault("postgres-down") == "postgres-down is already active"
    assert sb.state["faults"] == ["postgres-down"]
    deep = api(sb, "GET", "/health/deep")
    assert deep.status_code == 503 and deep.json()["postgres"]["status"] == "red"
    assert psql(sb, "SELECT 1").returncode != 0
    with pytest.raises(Exception, match=r"connect|socket|No such file"):
        sb.query("SELECT 1", timeout=2)
    assert api(sb, "GET", "/api/v1/leads").status_code == 500
    # Work the workload could not record meanwhile waits in the DLQs ...
    time.sleep(2.5)
    assert sb.heal() == ["postgres-down"]
    assert sb.state["faults"] == []
    # ... and heal replays it: the next drill starts from a clean baseline.
    stats = api(sb, "GET", "/api/v1/admin/dlq/stats", key=sb.admin_key).json()
    assert set(stats["queues"].values()) == {0}
    assert psql(sb, "SELECT 1").stdout.strip() == "1"
    assert api(sb, "GET", "/health/deep").json()["postgres"]["status"] == "green"


def test_redis_down_and_heal(healed: Sandbox) -> None:
    sb = healed
    assert sb.fault("redis-down") == "redis-down applied"
    deep = api(sb, "GET", "/health/deep")
    assert deep.status_code == 503 and deep.json()["redis"]["status"] == "red"
    assert deep.json()["postgres"]["status"] == "green"
    assert sb.heal() == ["redis-down"]
    deep = api(sb, "GET", "/health/deep")
    assert deep.status_code == 200 and deep.json()["redis"]["status"] == "green"


def test_pool_exhausted_and_heal(healed: Sandbox) -> None:
    sb = healed
    pid = sb.pid("dealix-api")
    sb.fault("pool-exhausted")
    deep = api(sb, "GET", "/health/deep")
    assert deep.status_code == 503 and deep.json()["postgres"]["status"] == "red"
    assert api(sb, "GET", "/health").status_code == 200
    # The database itself is fine: the superuser still gets in.
    assert psql(sb, "SELECT 1").stdout.strip() == "1"
    used = sb.query("SELECT count(*) FROM pg_stat_activity WHERE usename = 'dealix'")[0][0]
    assert used >= 40 - 3 - 1
    sb.heal()
    assert sb.pid("dealix-api") != pid
    assert api(sb, "GET", "/health/deep").json()["postgres"]["status"] == "green"


def test_ci_red_and_heal(healed: Sandbox) -> None:
    sb = healed
    head = sb.state["origin_head"]
    sb.fault("ci-red")
    newest = sb.ci_runs(3)[0]
    assert (newest["conclusion"], newest["head_branch"], newest["head_sha"]) == (
        "failure",
        "main",
        head,
    )
    sb.heal()
    assert sb.ci_runs(1)[0]["conclusion"] == "success"


def test_parameterised_fault_llm_down(healed: Sandbox) -> None:
    sb = healed
    sb.fault("llm-down:anthropic")
    assert sb.state["faults"] == ["llm-down:anthropic"]
    page = httpx.get(sb.state["stubs_url"] + "/status/anthropic/api/v2/status.json").json()
    assert page["status"]["indicator"] != "none"
    sb.heal()
    page = httpx.get(sb.state["stubs_url"] + "/status/anthropic/api/v2/status.json").json()
    assert page["status"]["indicator"] == "none"


def test_heal_undoes_several_faults_newest_first(healed: Sandbox) -> None:
    sb = healed
    sb.fault("ci-red")
    sb.fault("postgres-down")
    assert sb.heal() == ["postgres-down", "ci-red"]
    assert all(r["healthy"] for r in sb.status())


# --------------------------------------------------------------------------- backups


def _backup_days(sb: Sandbox) -> list[str]:
    """The four nightly dumps made when the sandbox was seeded (today's included)."""
    seeded = datetime.fromisoformat(sb.state["seeded_at"]).date()
    return [f"dealix-{seeded - timedelta(days=n)}.sql.gz" for n in range(3, -1, -1)]


def _copied_leads(path: Path) -> int:
    with gzip.open(path, "rt") as fh:
        inside = False
        n = 0
        for line in fh:
            if line.startswith("COPY public.leads "):
                inside = True
            elif inside and line.startswith("\\."):
                return n
            elif inside:
                n += 1
    return n


def test_backups_one_per_day(sandbox: Sandbox) -> None:
    backups = Path(sandbox.state["backups_dir"])
    files = sorted(p.name for p in backups.glob("dealix-*.sql.gz"))
    assert all(re.fullmatch(r"dealix-\d{4}-\d{2}-\d{2}\.sql\.gz", f) for f in files)
    # A sandbox kept across midnight adds that day's dump at its next `up`.
    assert files[:4] == _backup_days(sandbox)
    files = files[:4]
    counts = [_copied_leads(backups / name) for name in files]
    # Nightly dumps of a growing table: each holds more than the one before.
    assert counts == sorted(counts) and counts[0] < counts[-1]
    now = datetime.now(UTC).timestamp()
    for name in files:
        mtime = (backups / name).stat().st_mtime
        assert mtime <= now
        assert datetime.fromtimestamp(mtime, UTC).strftime("%Y-%m-%d") == name[7:17]


def test_newest_backup_restores_with_psql(sandbox: Sandbox) -> None:
    newest = max(Path(sandbox.state["backups_dir"]).glob("dealix-*.sql.gz"))
    scratch = "dealix_restore_test"
    prefix = sandbox.state["psql"]
    assert psql(sandbox, f"DROP DATABASE IF EXISTS {scratch}", db="postgres").returncode == 0
    assert psql(sandbox, f"CREATE DATABASE {scratch}", db="postgres").returncode == 0
    try:
        out = sh(
            f"gunzip -c {shlex.quote(str(newest))} | {prefix} -X -q -v ON_ERROR_STOP=1 "
            f"-d {scratch} >/dev/null",
            timeout=300,
        )
        assert out.returncode == 0, out.stderr[-2000:]
        restored = int(psql(sandbox, "SELECT count(*) FROM leads", db=scratch).stdout)
        live = int(psql(sandbox, "SELECT count(*) FROM leads").stdout)
        assert abs(live - restored) <= 0.05 * live
    finally:
        psql(sandbox, f"DROP DATABASE IF EXISTS {scratch} WITH (FORCE)", db="postgres")


# --------------------------------------------------------------------------- down (last)


def _wait_for_session(supervisord: int, marker: str) -> None:
    deadline = time.monotonic() + 10
    while time.monotonic() < deadline:
        if any(marker in proc_name(p) for p in descendants(supervisord)):
            return
        time.sleep(0.05)
    raise AssertionError(f"no {marker!r} below supervisord")


def test_down_leaves_no_process_then_up_again(sandbox: Sandbox) -> None:
    st = sandbox.state
    live = sandbox.pids()
    sup = live["supervisord"]
    # A live SSH session: its per-connection sshd outlives the listener's SIGTERM.
    session = subprocess.Popen(
        ssh_argv(sandbox, st["known_hosts"], "sleep 300"),
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    try:
        _wait_for_session(sup, "sleep 300")
        pids = {p: start_time(p) for p in {sup, *descendants(sup), *live.values()}}
        pids = {p: s for p, s in pids.items() if s is not None}
        assert set(live.values()) <= set(pids) and len(live) == 7
        sandbox.down()
        assert [p for p, s in pids.items() if alive(p, s)] == []
        lay = sandbox.layout
        for pidfile in (
            lay.run_dir / "supervisord.pid",
            lay.run_dir / "sshd.pid",
            lay.run_dir / "nginx.pid",
            lay.pgdata / "postmaster.pid",
        ):
            assert not pidfile.exists(), pidfile
        assert sandbox.state["pids"] == {}
        assert not any(r["healthy"] for r in sandbox.status() if r["name"].startswith("program"))
    finally:
        session.kill()
        session.wait()
    sandbox.down()  # a second down is harmless
    state = sandbox.up()
    assert state["ready"] and state["pids"]["supervisord"] != sup
    assert all(r["healthy"] for r in sandbox.status())


def test_up_fails_clearly_on_a_foreign_state(tmp_path: Path) -> None:
    sb = Sandbox(tmp_path / "sb")
    sb.state_dir.mkdir()
    sb.layout.state_file.write_text(json.dumps({"layout_version": -1}))
    with pytest.raises(SandboxError, match="--fresh"):
        sb.up()
