"""restore_drill.ipynb and restore_incident.ipynb against the real sandbox; records are read.

Production must be untouched by every drill: the stable tables (users,
pricing_plans) are compared whole, and leads (the app's workload keeps
inserting) by count and checksum of the rows that existed before the run.
"""

from __future__ import annotations

import gzip
import json
import os
import signal
import subprocess
import time
from pathlib import Path

import pytest
from conftest import plain_papermill

from runbook import Forbidden, backups, runner
from runbook.profile import load_profile
from runbook.sandbox import Sandbox

ROOT = Path(__file__).resolve().parents[1]
SCRATCH = "dealix_restore_test"


@pytest.fixture(autouse=True)
def outputs(tmp_path, monkeypatch):
    monkeypatch.setenv("RUNBOOK_OUTPUTS", str(tmp_path / "outputs"))
    return tmp_path / "outputs"


def production(sb: Sandbox, max_lead_id: int | None = None) -> dict[str, object]:
    """What a drill must never change: whole stable tables, and leads up to an id."""
    if max_lead_id is None:
        max_lead_id = sb.query("SELECT coalesce(max(id), 0) FROM leads")[0][0]
    q = "SELECT count(*), md5(coalesce(string_agg(t::text, '|' ORDER BY t.id), '')) FROM {} t"
    return {
        "max_lead_id": max_lead_id,
        "users": sb.query(q.format("users"))[0],
        "pricing_plans": sb.query(q.format("pricing_plans"))[0],
        "leads": sb.query(q.format(f"(SELECT * FROM leads WHERE id <= {int(max_lead_id)})"))[0],  # noqa: S608
    }


def databases(sb: Sandbox) -> set[str]:
    return {r[0] for r in sb.query("SELECT datname FROM pg_database", dbname="postgres")}


def read(run_dir: Path) -> dict:
    return json.loads((run_dir / "record.json").read_text())


def statuses(record: dict) -> dict[str, str]:
    return {c["name"]: c["status"] for c in record["checks"]}


# ---------------------------------------------------------------- unit


def test_scratch_guard_refuses_production_and_kept_databases() -> None:
    class S:
        profile = load_profile("production")

    for name in ("dealix", "dealix_corrupt_20261127", "postgres"):
        with pytest.raises(Forbidden) as exc:
            backups.guard_scratch(S(), name)  # type: ignore[arg-type]
        assert exc.value.rule == "no-restore-into-production-db"


def test_restore_commands_stream_on_the_server() -> None:
    class S:
        profile = load_profile("production")

    plain = {"path": "/var/backups/postgres/dealix-2026-11-27.sql.gz", "format": backups.PLAIN}
    cmd = backups.restore_command(S(), plain, "dealix_restore_test", pidfile="/tmp/p")  # type: ignore[arg-type]
    assert "gunzip -c' < /var/backups/postgres/dealix-2026-11-27.sql.gz" in cmd
    assert "| sudo -n -u postgres psql -X -q -v ON_ERROR_STOP=1 --single-transaction" in cmd
    custom = {"path": "/var/backups/postgres/dealix-2026-11-27.dump", "format": backups.CUSTOM}
    cmd = backups.restore_command(S(), custom, "dealix_restore_test", jobs=2)  # type: ignore[arg-type]
    assert cmd == (
        "sudo -n -u postgres pg_restore --exit-on-error -j 2 -d dealix_restore_test "
        "/var/backups/postgres/dealix-2026-11-27.dump"
    )


@pytest.mark.parametrize("name", ["restore_drill", "restore_incident"])
def test_committed_notebooks_are_clean(name: str) -> None:
    nb = json.loads((ROOT / "notebooks" / f"{name}.ipynb").read_text())
    assert nb["metadata"]["kernelspec"]["name"] == "dealix-runbook"
    assert "papermill" not in nb["metadata"]
    code = [c for c in nb["cells"] if c["cell_type"] == "code"]
    assert all(c["outputs"] == [] and c["execution_count"] is None for c in code)
    params = [c for c in code if "parameters" in c["metadata"].get("tags", [])]
    assert len(params) == 1
    lines = "".join(params[0]["source"]).splitlines()
    assert lines[0].startswith('env = "sandbox"')
    assert any(ln.startswith("dry_run = False") for ln in lines)
    assert any(ln.startswith("confirm = None") for ln in lines)
    assert "s.done()" in "".join(code[-1]["source"])


# ---------------------------------------------------------------- the drill


def test_healthy_drill_passes_and_leaves_no_scratch_database(sandbox, healed) -> None:
    before = production(sandbox)
    code, run_dir = runner.run("restore_drill", {}, quiet=True)
    record = read(run_dir)
    assert code == 0, record
    assert record["outcome"] == "ok"
    st = statuses(record)
    for name in (
        "Backup fresh (RPO)",
        "Backup size",
        "Restore completed",
        "Restore time",
        "Row count leads",
        "Row count users",
        "Sample checksum leads",
        "Data age (RPO)",
        "Teardown",
    ):
        assert st[name] == "passed", (name, record["checks"])
    assert SCRATCH not in databases(sandbox)
    numbers = json.loads((run_dir / "restore_drill.json").read_text())
    assert numbers["restore"]["ok"] is True and numbers["restore"]["bytes_total"] > 100_000
    assert {t["table"] for t in numbers["tables"]} == {"leads", "users"}
    assert all(abs(t["delta_pct"]) <= 5 for t in numbers["tables"])
    assert production(sandbox, before["max_lead_id"]) == before


@pytest.mark.parametrize(
    ("fault", "failed_check"),
    [
        ("stale-backups", "Backup fresh (RPO)"),
        ("empty-backup", "Backup size"),
        ("corrupt-backup", "Restore completed"),
        ("mass-delete", "Row count leads"),
    ],
)
def test_each_fault_fails_the_drill_by_name(sandbox, healed, fault, failed_check) -> None:
    leads_before_fault = sandbox.query("SELECT count(*) FROM leads")[0][0]
    backups_dir = Path(sandbox.state["backups_dir"])
    files_before = {p.name: p.read_bytes() for p in backups_dir.glob("dealix-*.sql.gz")}
    sandbox.fault(fault)
    before = production(sandbox)
    code, run_dir = runner.run("restore_drill", {}, quiet=True)
    record = read(run_dir)
    assert code == runner.EXIT["dod_not_met"], record
    st = statuses(record)
    assert st[failed_check] == "failed", record["checks"]
    assert st["Teardown"] == "passed"
    assert SCRATCH not in databases(sandbox)
    assert production(sandbox, before["max_lead_id"]) == before
    if fault in ("stale-backups", "empty-backup"):
        # refused before restoring: nothing was created
        assert "Restore completed" not in st
        assert not any("CREATE DATABASE" in c["what"] for c in record["changes"])
    # heal puts everything back: the same dumps, and every lead
    sandbox.heal()
    assert {p.name: p.read_bytes() for p in backups_dir.glob("dealix-*.sql.gz")} == files_before
    assert sandbox.query("SELECT count(*) FROM leads")[0][0] >= leads_before_fault


def test_restore_failing_midway_still_drops_the_scratch_database(sandbox, healed) -> None:
    sandbox.fault("corrupt-backup")
    code, run_dir = runner.run("restore_drill", {}, quiet=True)
    record = read(run_dir)
    assert code == runner.EXIT["dod_not_met"]
    changes = [c["what"] for c in record["changes"]]
    created = [i for i, c in enumerate(changes) if "CREATE DATABASE" in c and SCRATCH in c]
    dropped = [i for i, c in enumerate(changes) if "DROP DATABASE" in c and SCRATCH in c]
    assert created and dropped and dropped[-1] > created[0], changes
    failed = next(c for c in record["checks"] if c["name"] == "Restore completed")
    assert "unexpected end of file" in failed["actual"]
    assert statuses(record)["Restore time"] == "not available"
    assert SCRATCH not in databases(sandbox)


def test_drill_refuses_production_as_scratch(sandbox, healed) -> None:
    before = production(sandbox)
    code, run_dir = runner.run("restore_drill", {"scratch_db": "dealix"}, quiet=True)
    record = read(run_dir)
    assert code == runner.EXIT["refused"], record
    assert "no-restore-into-production-db" in record["error"]["message"]
    assert record["changes"] == []
    assert production(sandbox, before["max_lead_id"]) == before


def test_plain_papermill_without_parameters_targets_the_sandbox(sandbox, tmp_path, outputs):
    out = tmp_path / "out.ipynb"
    proc = plain_papermill("restore_drill", out)
    assert proc.returncode == 0, proc.stderr[-2000:]
    records = list(outputs.glob("sandbox/restore_drill/*/record.json"))
    assert len(records) == 1
    record = json.loads(records[0].read_text())
    assert record["environment"] == "sandbox" and record["outcome"] == "ok"
    assert SCRATCH not in databases(sandbox)


# ---------------------------------------------------------------- the incident


def test_incident_restore_needs_a_reason(sandbox, healed) -> None:
    code, run_dir = runner.run("restore_incident", {}, quiet=True)
    record = read(run_dir)
    assert code == runner.EXIT["parameters"], record
    assert record["changes"] == []


def test_incident_restore_off_the_sandbox_needs_confirmation(outputs) -> None:
    """Refused before any command reaches the server (none ran)."""
    code, run_dir = runner.run(
        "restore_incident", {"env": "production", "reason": "test"}, quiet=True
    )
    record = read(run_dir)
    assert code == runner.EXIT["refused"], record
    assert record["error"]["type"] == "NotConfirmed"
    assert record["commands_run"] == 0 and record["changes"] == []


def test_incident_restore_after_mass_delete(sandbox, healed) -> None:
    leads_before = sandbox.query("SELECT count(*) FROM leads")[0][0]
    sandbox.fault("mass-delete")
    assert sandbox.query("SELECT count(*) FROM leads")[0][0] < leads_before * 0.2
    kept_before = {d for d in databases(sandbox) if d.startswith("dealix_corrupt_")}
    try:
        code, run_dir = runner.run(
            "restore_incident", {"reason": "test: most leads deleted"}, quiet=True
        )
        record = read(run_dir)
        assert code == 0, record
        st = statuses(record)
        assert st["Restore completed"] == st["API deep health"] == "passed"
        # the rows are back (the backup is a few hours behind: within 5 %)
        assert sandbox.query("SELECT count(*) FROM leads")[0][0] >= leads_before * 0.95
        kept = {d for d in databases(sandbox) if d.startswith("dealix_corrupt_")} - kept_before
        assert len(kept) == 1
        first = kept.pop()
        # the renamed database is the damaged one, intact
        assert sandbox.query("SELECT count(*) FROM leads", dbname=first)[0][0] < leads_before * 0.2
        window = next(c for c in record["checks"] if c["name"] == "Data-loss window")
        assert window["status"] == "passed" and " h (newest restored " in window["actual"]
        postmortem = (run_dir / "postmortem.md").read_text()
        assert "How the data was lost" in postmortem and first in postmortem
        assert "(record.json)" in postmortem
        owner = sandbox.query(
            "SELECT pg_get_userbyid(datdba) FROM pg_database WHERE datname = 'dealix'",
            dbname="postgres",
        )[0][0]
        assert owner == "dealix"

        # a second incident restore the same day keeps the first evidence
        code, run_dir = runner.run(
            "restore_incident", {"reason": "test: second restore"}, quiet=True
        )
        assert code == 0, read(run_dir)
        now = {d for d in databases(sandbox) if d.startswith("dealix_corrupt_")} - kept_before
        assert first in now and f"{first}_2" in now
        assert sandbox.query("SELECT count(*) FROM leads", dbname=first)[0][0] < leads_before * 0.2
    finally:
        for d in {d for d in databases(sandbox) if d.startswith("dealix_corrupt_")} - kept_before:
            sandbox.query(f'DROP DATABASE "{d}" WITH (FORCE)', dbname="postgres")


def test_interrupted_restore_drops_the_scratch_database(sandbox, healed, outputs) -> None:
    """SIGINT while the restore runs (a dump that sleeps in psql): teardown, then exit 5."""
    slow = Path(sandbox.state["backups_dir"]) / "dealix-slow-test.sql.gz"
    filler = "".join(f"-- {os.urandom(32).hex()}\n" for _ in range(200))
    slow.write_bytes(gzip.compress((filler + "SELECT pg_sleep(120);\n").encode()))
    try:
        proc = subprocess.Popen(
            [
                str(ROOT / ".venv/bin/runbook"),
                "run",
                "restore_drill",
                "-p",
                "backup",
                slow.name,
            ],
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
            text=True,
        )
        deadline = time.monotonic() + 120
        sleeping = 0
        while time.monotonic() < deadline and proc.poll() is None:
            sleeping = sandbox.query(
                "SELECT count(*) FROM pg_stat_activity "
                "WHERE datname = %s AND query LIKE '%%pg_sleep%%'",
                (SCRATCH,),
                dbname="postgres",
            )[0][0]
            if sleeping:
                break
            time.sleep(0.5)
        assert sleeping, proc.communicate(timeout=60)[0][-3000:]
        time.sleep(6)  # one progress poll (every 5 s) while psql works
        proc.send_signal(signal.SIGINT)
        out, _ = proc.communicate(timeout=180)
        assert proc.returncode == runner.EXIT["interrupted"], out[-3000:]
        assert SCRATCH not in databases(sandbox)
        records = list(outputs.glob("sandbox/restore_drill/*/record.json"))
        record = json.loads(records[0].read_text())
        assert record["outcome"] == "interrupted"
        assert statuses(record)["Teardown"] == "passed"
        # the progress line reached the notebook while the restore ran
        executed = (records[0].parent / "restore_drill.ipynb").read_text()
        assert "dump read (100 %), psql finishing" in executed
    finally:
        slow.unlink(missing_ok=True)


def test_failed_incident_restore_keeps_the_renamed_database(sandbox, healed) -> None:
    """A dump that gzip -t accepts but psql rejects: the run stops after the rename,
    the renamed database holds production's rows, and the error says how to swap back."""
    bad = Path(sandbox.state["backups_dir"]) / "dealix-broken-test.sql.gz"
    filler = "".join(f"-- {os.urandom(32).hex()}\n" for _ in range(200))
    bad.write_bytes(
        gzip.compress((filler + "CREATE TABLE leads (id int);\nSELECT 1/0;\n").encode())
    )
    leads = sandbox.query("SELECT count(*) FROM leads")[0][0]
    kept_before = {d for d in databases(sandbox) if d.startswith("dealix_corrupt_")}
    renamed = None
    try:
        code, run_dir = runner.run(
            "restore_incident", {"reason": "test: broken backup", "backup": bad.name}, quiet=True
        )
        record = read(run_dir)
        assert code == runner.EXIT["failed"], record
        assert record["failed_step"] == "3. Restore latest good backup"
        assert "swap it back" in record["error"]["message"]
        assert statuses(record)["Restore completed"] == "failed"
        new = {d for d in databases(sandbox) if d.startswith("dealix_corrupt_")} - kept_before
        assert len(new) == 1
        renamed = new.pop()
        assert renamed in record["error"]["message"]
        assert sandbox.query("SELECT count(*) FROM leads", dbname=renamed)[0][0] >= leads
        # the single transaction rolled back: the new database is empty
        assert (
            sandbox.query("SELECT count(*) FROM pg_tables WHERE schemaname = 'public'")[0][0] == 0
        )
    finally:
        bad.unlink(missing_ok=True)
        if renamed:
            # swap back as the error message says, so the next tests see production
            sandbox.query('DROP DATABASE IF EXISTS "dealix" WITH (FORCE)', dbname="postgres")
            sandbox.query(f'ALTER DATABASE "{renamed}" RENAME TO "dealix"', dbname="postgres")
        sandbox.start("dealix-api")
        sandbox.wait_api()
        sandbox.wait_deep("postgres", "green")


def test_custom_format_dump_is_restored_with_parallel_jobs(sandbox, healed) -> None:
    state = sandbox.state
    dump = Path(state["backups_dir"]) / "dealix-custom-test.dump"
    cmd = [
        f"{state['pg_bindir']}/pg_dump",
        "-h",
        state["pg_socket_dir"],
        "-p",
        str(state["pg_port"]),
        "-Fc",
        "dealix",
    ]
    if os.geteuid() == 0:
        cmd = ["runuser", "-u", "postgres", "--", *cmd]
    try:
        with dump.open("wb") as out:
            subprocess.run(cmd, check=True, stdout=out, cwd="/", timeout=120)
        dump.chmod(0o644)  # pg_restore runs as postgres and opens the dump itself
        code, run_dir = runner.run("restore_drill", {"backup": dump.name, "jobs": 2}, quiet=True)
        record = read(run_dir)
        assert code == 0, record
        restore_time = next(c for c in record["checks"] if c["name"] == "Restore time")
        assert "custom, jobs 2" in restore_time["actual"]
        assert any(
            "pg_restore" in c["what"] and "--exit-on-error -j 2" in c["what"]
            for c in record["changes"]
        )
        assert statuses(record)["Row count leads"] == "passed"
        assert SCRATCH not in databases(sandbox)
    finally:
        dump.unlink(missing_ok=True)
