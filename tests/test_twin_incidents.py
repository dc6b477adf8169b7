"""The incident scenarios on the production twin: database_down with each fault,
restore_drill, restore_incident and security_incident, with production.yaml (plus only
twin.yaml's overrides), run as `runbook twin exec -- runbook run ... --env twin`.

Each test reads the record AND checks the effect on the twin itself over SSH
(systemctl, psql, pg_database, df, ufw, fail2ban-client, the app's .env). Faults on one
twin are not independent, so the tests run one after another; every test heals what it
applied (`runbook twin heal`'s own code path) even when it fails.
"""

from __future__ import annotations

import json
import re
import shlex
import subprocess
import sys
from collections.abc import Iterator
from datetime import UTC, datetime
from pathlib import Path

import pytest
from conftest import twin_exec

pytestmark = pytest.mark.twin

CLUSTER = "postgresql@15-main"
HANDOFF = "Hand-off to scenario 5 (restore_incident)"


@pytest.fixture
def healed_twin(twin) -> Iterator[object]:
    yield twin
    twin.heal()


def run_on_twin(
    twin, tmp_path: Path, scenario: str, *params: str, confirm: bool = True
) -> tuple[subprocess.CompletedProcess, dict, Path]:
    runbook = str(Path(sys.executable).with_name("runbook"))
    outputs = tmp_path / "outputs"
    before = set(outputs.glob(f"twin/{scenario}/*/record.json"))
    argv = [runbook, "run", scenario, "--env", "twin"]
    if confirm:
        argv += ["--confirm", "twin"]
    got = twin_exec(
        twin,
        [*argv, *params],
        env={"RUNBOOK_OUTPUTS": str(outputs), "PYTHONDONTWRITEBYTECODE": "1"},
        timeout=900,
    )
    new = sorted(set(outputs.glob(f"twin/{scenario}/*/record.json")) - before)
    assert new, f"no record for {scenario}: {got.stdout[-1500:]} {got.stderr[-1500:]}"
    return got, json.loads(new[-1].read_text()), new[-1].parent


def checks(record: dict) -> dict[str, dict]:
    return {c["name"]: c for c in record["checks"]}


def branch_of(record: dict) -> dict:
    return record["decisions"]["Triage: branch"]


def on_twin(twin, cmd: str) -> str:
    return twin.ssh(cmd, check=False, timeout=60).stdout.strip()


def active(twin, *units: str) -> list[str]:
    return on_twin(twin, "systemctl is-active " + " ".join(units)).split()


def select1(twin, db: str = "dealix") -> bool:
    return on_twin(twin, f"cd / && sudo -n -u postgres psql -XAtq -d {db} -c 'SELECT 1'") == "1"


def deep_postgres(twin) -> str:
    return on_twin(twin, "curl -s https://api.dealix.me/health/deep | jq -r .postgres.status")


def databases(twin) -> list[str]:
    out = on_twin(
        twin,
        "cd / && sudo -n -u postgres psql -XAtq -d postgres -c "
        '"SELECT datname FROM pg_database WHERE NOT datistemplate ORDER BY 1"',
    )
    return out.split()


def failed(record: dict) -> list[dict]:
    return [c for c in record["checks"] if c["status"] == "failed"]


# ------------------------------------------------------------------ database_down


def test_cluster_sigkilled_triage_reads_the_cluster_not_the_wrapper(healed_twin, tmp_path) -> None:
    twin = healed_twin
    twin.fault("postgres-killed")
    # the Debian finding itself: the wrapper says active, the cluster is failed
    assert active(twin, "postgresql", CLUSTER) == ["active", "failed"]
    got, record, run_dir = run_on_twin(twin, tmp_path, "database_down")
    triage = branch_of(record)
    assert triage["choice"] == "service failed", triage
    # the recorded reason is true: it names the cluster and its state, never "runs"
    assert CLUSTER in triage["reason"] and "failed" in triage["reason"], triage
    assert "runs" not in triage["reason"], triage
    signals = json.loads((run_dir / "triage.json").read_text())["signals"]
    assert signals["postgres_unit"] == CLUSTER and signals["postgres_service"].startswith("failed")
    # the cluster's own log file was read (journald has nothing of the server's words)
    before = (run_dir / "postgres-log-before-restart.txt").read_text()
    assert "==> /var/log/postgresql/postgresql-15-main.log <==" in before
    assert "database system is ready to accept connections" in before  # the server's words
    assert got.returncode == 0 and record["outcome"] == "ok", (failed(record), got.stderr[-1500:])
    assert any("restart" in c["what"] and "postgresql" in c["what"] for c in record["changes"])
    # and on the twin: the cluster runs, answers, the API sees it
    assert active(twin, "postgresql", CLUSTER) == ["active", "active"]
    assert select1(twin) and deep_postgres(twin) == "green"


def test_service_stopped_is_restarted(healed_twin, tmp_path) -> None:
    twin = healed_twin
    twin.fault("postgres-down")
    assert active(twin, CLUSTER) == ["inactive"]
    got, record, _ = run_on_twin(twin, tmp_path, "database_down")
    triage = branch_of(record)
    assert triage["choice"] == "service failed" and "inactive (dead)" in triage["reason"], triage
    assert got.returncode == 0 and record["outcome"] == "ok", (failed(record), got.stderr[-1500:])
    assert checks(record)["Postgres answers SELECT 1 after the restart"]["status"] == "passed"
    assert active(twin, CLUSTER) == ["active"] and select1(twin)
    assert deep_postgres(twin) == "green"


def test_pool_exhausted_by_real_connections_restarts_the_api(healed_twin, tmp_path) -> None:
    twin = healed_twin
    twin.fault("pool-exhausted")
    held = int(
        on_twin(
            twin,
            "cd / && sudo -n -u postgres psql -XAtq -d postgres -c "
            "\"SELECT count(*) FROM pg_stat_activity WHERE usename = 'dealix'\"",
        )
    )
    assert held >= 90  # Debian's max_connections 100, less the superuser's reserve
    assert select1(twin)  # the superuser still gets in
    got, record, _ = run_on_twin(twin, tmp_path, "database_down")
    assert branch_of(record)["choice"] == "connection pool exhausted", branch_of(record)
    assert got.returncode == 0 and record["outcome"] == "ok", (failed(record), got.stderr[-1500:])
    assert any(c["what"].endswith("restart dealix-api") for c in record["changes"])
    left = int(
        on_twin(
            twin,
            "cd / && sudo -n -u postgres psql -XAtq -d postgres -c "
            "\"SELECT count(*) FROM pg_stat_activity WHERE usename = 'dealix'\"",
        )
    )
    assert left < 10, left  # the restart ended the held connections with the API's cgroup
    assert active(twin, "dealix-api") == ["active"] and deep_postgres(twin) == "green"


def test_disk_full_rotates_old_backups_on_a_real_full_filesystem(healed_twin, tmp_path) -> None:
    twin = healed_twin
    real = set(on_twin(twin, "ls /var/backups/postgres").split())
    twin.fault("disk-full")
    assert on_twin(twin, "df --output=pcent /var/backups/postgres | tail -1") == "100%"
    enospc = twin.ssh("head -c 65536 /dev/zero > /var/backups/postgres/probe", check=False)
    assert enospc.returncode != 0 and "No space left" in enospc.stderr
    twin.ssh("rm -f /var/backups/postgres/probe")
    got, record, _ = run_on_twin(twin, tmp_path, "database_down", "-p", "keep_newest_backups", "7")
    assert branch_of(record)["choice"] == "disk full", branch_of(record)
    assert got.returncode == 0 and record["outcome"] == "ok", (failed(record), got.stderr[-1500:])
    c = checks(record)
    assert c["Data and backups filesystems below the full mark"]["status"] == "passed"
    assert c["Newest backups kept"]["actual"].startswith("7 of 7 still there")
    left = set(on_twin(twin, "ls /var/backups/postgres").split())
    assert real <= left and len(left) == 7, (real, left)  # every real backup is still there
    pct = int(on_twin(twin, "df --output=pcent /var/backups/postgres | tail -1").rstrip("%"))
    assert pct < 95
    assert (
        twin.ssh(
            "head -c 65536 /dev/zero > /var/backups/postgres/probe && rm "
            "/var/backups/postgres/probe",
            check=False,
        ).returncode
        == 0
    )


def test_corrupt_hands_off_and_the_incident_restore_restores(healed_twin, tmp_path) -> None:
    twin = healed_twin
    twin.fault("db-corrupt")
    assert not select1(twin) and active(twin, CLUSTER) == ["active"]
    got, record, _ = run_on_twin(twin, tmp_path, "database_down")
    assert branch_of(record)["choice"] == "database corrupt or will not start"
    assert record["changes"] == []  # nothing restarted, nothing deleted
    handoff = checks(record)[HANDOFF]
    assert handoff["status"] == "failed" and got.returncode == 3, (handoff, got.returncode)
    words = shlex.split(handoff["note"].removeprefix("run: "))
    assert words[:7] == [
        "runbook",
        "run",
        "restore_incident",
        "--env",
        "twin",
        "--confirm",
        "twin",
    ], words
    # the printed command, run as printed (its --confirm twin included)
    got, record, _ = run_on_twin(twin, tmp_path, "restore_incident", *words[5:], confirm=False)
    assert got.returncode == 0 and record["outcome"] == "ok", (failed(record), got.stderr[-2000:])
    today = datetime.now(UTC).strftime("%Y%m%d")
    dbs = databases(twin)
    assert "dealix" in dbs and any(re.fullmatch(rf"dealix_corrupt_{today}\w*", d) for d in dbs), dbs
    # the API was stopped for the restore (a recorded change) and is back
    what = " | ".join(c["what"] for c in record["changes"])
    assert "stop dealix-api" in what and "start dealix-api" in what, what
    assert active(twin, "dealix-api", CLUSTER) == ["active", "active"]
    assert select1(twin) and deep_postgres(twin) == "green"
    leads = on_twin(
        twin, "cd / && sudo -n -u postgres psql -XAtq -d dealix -c 'SELECT count(*) FROM leads'"
    )
    assert int(leads) > 1000


def test_cluster_will_not_start_is_handed_off_with_its_log(healed_twin, tmp_path) -> None:
    twin = healed_twin
    twin.fault("cluster-corrupt")
    got, record, _ = run_on_twin(twin, tmp_path, "database_down")
    after = record["decisions"].get("Branch after the restart") or branch_of(record)
    assert after["choice"] == "database corrupt or will not start", record["decisions"]
    # the reason is true: the restart "worked" (the wrapper) but the cluster failed, and
    # the server's own words come from the cluster's log file (journald has none)
    assert f"the restart exited 0 but {CLUSTER} failed" in after["reason"], after
    assert "database files are incompatible with server" in after["reason"], after
    # it gave up as soon as the cluster's unit said failed (not after the whole wait)
    answered = checks(record)["Postgres answers SELECT 1 after the restart"]
    assert answered["actual"].startswith(f"no answer: {CLUSTER} failed (failed)"), answered
    assert checks(record)[HANDOFF]["status"] == "failed"
    assert got.returncode == 3 and record["outcome"] == "dod_not_met"
    assert active(twin, CLUSTER) != ["active"]


# ------------------------------------------------------------------ restore_drill


def test_restore_drill_restores_beside_production_and_leaves_no_scratch(twin, tmp_path) -> None:
    before = databases(twin)
    got, record, _ = run_on_twin(twin, tmp_path, "restore_drill")
    assert got.returncode == 0 and record["outcome"] == "ok", (failed(record), got.stderr[-2000:])
    assert databases(twin) == before  # the scratch database is gone, production untouched
    assert select1(twin) and deep_postgres(twin) == "green"


# ------------------------------------------------------------------ security_incident


def _admin_status(twin, key: str) -> str:
    script = (
        "import httpx, sys; r = httpx.get('https://api.dealix.me/api/v1/admin/dlq/stats', "
        "headers={'X-API-Key': sys.argv[1]}); print(r.status_code)"
    )
    got = twin_exec(twin, [sys.executable, "-c", script, key])
    assert got.returncode == 0, got.stderr
    return got.stdout.strip()


def test_security_incident_rotates_locks_down_and_bans(healed_twin, tmp_path) -> None:
    from runbook.rehearsal.faults.security_incident import attacker_ip

    twin = healed_twin
    st = twin.state
    old_key = twin.secrets()["DEALIX_ADMIN_KEY"]
    old_env = on_twin(twin, "grep -E '^(ADMIN_KEY|WEBHOOK_SECRET)=' /opt/dealix/.env")
    assert _admin_status(twin, old_key) == "200"
    twin.fault("intrusion")
    attacker = attacker_ip(st)
    assert attacker in on_twin(twin, "fail2ban-client status sshd")
    got, record, _ = run_on_twin(twin, tmp_path, "security_incident")
    assert got.returncode == 0 and record["outcome"] == "ok", (failed(record), got.stderr[-2000:])
    c = checks(record)
    for name in (
        "New admin key accepted",
        "Firewall locked (proved from outside)",
        "Attacker addresses banned",
    ):
        assert c[name]["status"] == "passed", c[name]
    # rotated: the server's .env changed, the operator's file follows, the API proves it
    new_env = on_twin(twin, "grep -E '^(ADMIN_KEY|WEBHOOK_SECRET)=' /opt/dealix/.env")
    new_key = twin.secrets()["DEALIX_ADMIN_KEY"]
    # booleans first: a failing assert must not print the keys
    env_changed = bool(new_env) and len(new_env.splitlines()) == 2 and new_env != old_env
    both_changed = not set(new_env.splitlines()) & set(old_env.splitlines())
    file_follows = f"ADMIN_KEY={new_key}" in new_env.splitlines() and new_key != old_key
    assert env_changed and both_changed and file_follows
    assert _admin_status(twin, new_key) == "200" and _admin_status(twin, old_key) == "401"
    # ufw: SSH only from the operator's address; refused from .9, still open from .1
    ufw = on_twin(twin, "ufw status")
    assert re.search(rf"22(/tcp)?\s+ALLOW\s+{re.escape(st['operator_ip'])}", ufw), ufw
    assert not re.search(r"^22/tcp\s+ALLOW\s+Anywhere", ufw, re.M), ufw
    probe = st["outside_probe"].format(host=shlex.quote(st["host"]), port=22)
    # the profile's own probe command, run as security_incident runs it (a shell)
    proc = subprocess.run(probe, shell=True, capture_output=True, timeout=30)  # noqa: S602
    assert proc.returncode != 0
    # fail2ban: the attacker is banned, the operator's address is not and still works
    f2b = on_twin(twin, "fail2ban-client status sshd")
    assert attacker in f2b and st["operator_ip"] not in f2b, f2b
    assert twin.ssh("true", check=False).returncode == 0
