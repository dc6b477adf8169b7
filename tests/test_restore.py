"""restore_drill.ipynb and restore_incident.ipynb against the real sandbox; records are read.

Production must be untouched by every drill: the stable tables (users,
pricing_plans) are compared whole, and leads (the app's workload keeps
inserting) by count and checksum of the rows that existed before the run.
"""

from __future__ import annotations

import gzip
import json
import os
import re
import signal
import subprocess
import time
from pathlib import Path

import nbformat
import pytest
from conftest import plain_papermill
from nbclient import NotebookClient

from runbook import open_session
from runbook.cli import run as runner
from runbook.core.profile import load_profile
from runbook.ops import backups
from runbook.sandbox import Sandbox
from runbook.scenarios import _restore, restore_drill

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


def test_scratch_guard_names_production_and_kept_databases() -> None:
    profile = load_profile("production")
    for name in ("dealix", "dealix_corrupt_20261127", "postgres"):
        assert restore_drill.scratch_problem(profile, name), name
    for name in ("dealix_restore_test", "scratch_1"):
        assert restore_drill.scratch_problem(profile, name) is None, name


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
    assert st["Scratch database is not production"] == "passed"
    # the numbers are in record.json itself, as metrics, equal to the drill's own
    m = {k: v["value"] for k, v in record["metrics"].items()}
    assert m["restore_bytes"] == numbers["restore"]["bytes_total"]
    assert m["restore_minutes"] == pytest.approx(numbers["restore"]["duration_s"] / 60)
    for t in numbers["tables"]:
        name = t["table"]
        assert m[f"rows_restored_{name}"] == t["restored_rows"] > 0
        assert m[f"rows_production_at_dump_{name}"] == t["production_rows_at_dump"]
        assert m[f"rows_production_now_{name}"] == t["production_rows_now"]
        assert m[f"row_delta_pct_{name}"] == t["delta_pct"]
        assert record["metrics"][f"row_delta_pct_{name}"]["target"] == 5
    assert production(sandbox, before["max_lead_id"]) == before


def test_drill_near_its_time_target_fails_and_recommends_custom_format(sandbox, healed) -> None:
    """A target the restore cannot meet: "Restore time" fails and its note says what to change."""
    code, run_dir = runner.run("restore_drill", {"time_target_minutes": 0.0001}, quiet=True)
    record = read(run_dir)
    assert code == runner.EXIT["dod_not_met"], record
    check = next(c for c in record["checks"] if c["name"] == "Restore time")
    assert check["status"] == "failed" and check["expected"] == "<= 0.0001 min"
    assert "custom format (pg_dump -Fc)" in check["note"]
    assert "pg_restore -j <cores>" in check["note"]
    assert "RECOMMENDATION:" in (run_dir / "restore_drill.ipynb").read_text()
    st = statuses(record)
    assert st["Restore completed"] == st["Row count leads"] == st["Teardown"] == "passed"
    assert SCRATCH not in databases(sandbox)


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


def test_a_dry_run_drill_restores_nothing_and_passes_no_restore_check(sandbox, healed) -> None:
    code, run_dir = runner.run("restore_drill", {"dry_run": True}, quiet=True)
    record = read(run_dir)
    assert code == 0 and record["dry_run"] is True, record
    assert record["changes"] == [] and SCRATCH not in databases(sandbox)
    for name in ("Restore completed", "Restore time"):
        check = next(c for c in record["checks"] if c["name"] == name)
        assert (check["status"], check["actual"]) == ("not available", "not run (dry run)")


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
    guard = next(c for c in record["checks"] if c["name"] == "Scratch database is not production")
    assert guard["status"] == "failed" and guard["actual"].startswith("dealix: ")
    assert record["changes"] == []
    assert production(sandbox, before["max_lead_id"]) == before


def test_plain_papermill_without_parameters_targets_the_sandbox(sandbox, tmp_path, outputs):
    """`python -m papermill notebooks/restore_drill.ipynb out.ipynb` from the project's root,
    as the crontab line runs it: no -k, no --cwd, no parameters."""
    out = tmp_path / "out.ipynb"
    proc = plain_papermill("restore_drill", out)
    assert proc.returncode == 0, proc.stderr[-2000:]
    assert proc.args[1:] == ["-m", "papermill", "notebooks/restore_drill.ipynb", str(out)]
    records = list(outputs.glob("sandbox/restore_drill/*/record.json"))
    assert len(records) == 1
    record = json.loads(records[0].read_text())
    assert record["environment"] == "sandbox" and record["outcome"] == "ok"
    executed = json.loads(out.read_text())
    # papermill took the kernel from the notebook's kernelspec
    assert executed["metadata"]["kernelspec"]["name"] == "dealix-runbook"
    assert executed["metadata"]["papermill"]["parameters"] == {}
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
    # the app keeps writing leads: what the backup can bring back is what existed
    # up to its newest row, so keep every row's time to count against it afterwards
    created_before = [r[0] for r in sandbox.query("SELECT created_at FROM leads")]
    sandbox.fault("mass-delete")
    assert sandbox.query("SELECT count(*) FROM leads")[0][0] < leads_before * 0.2
    kept_before = {d for d in databases(sandbox) if d.startswith("dealix_corrupt_")}
    try:
        code, run_dir = runner.run(
            "restore_incident", {"reason": "test: most leads deleted"}, quiet=True
        )
        record = read(run_dir)
        assert code == 0, record
        # the swap (production renamed to evidence, the clone renamed to production)
        # is the procedure's own change: watched, it does not trip
        assert record["tripwire"]["checks"] >= 2 and record["tripwire"]["tripped"] is None
        st = statuses(record)
        assert st["Restore completed"] == st["API deep health"] == "passed"
        # validated in the clone before anything was renamed
        assert st["Restored rows leads"] == st["Restored rows users"] == "passed"
        assert st["Restored data age (RPO)"] == "passed"
        steps = [x["name"] for x in record["steps"]]
        assert steps.index("3. Validate the clone before the swap") < steps.index(
            "4. Swap: rename current DB (evidence), the clone becomes production"
        )
        assert _clones(sandbox) == set()  # the clone became production
        # the rows are back: every lead the backup could hold (those up to its newest
        # row), within the 5 % tolerance; newer ones are the documented data-loss window
        # (the API writes new leads again once it is back: only rows older than the
        # fault are the backup's, and the newest of them is the backup's newest)
        newest = sandbox.query(
            "SELECT max(created_at) FROM leads WHERE created_at <= %s", (max(created_before),)
        )[0][0]
        could_hold = sum(1 for t in created_before if t <= newest)
        assert could_hold > leads_before * 0.5  # the backup is hours, not days, behind
        restored = sandbox.query("SELECT count(*) FROM leads WHERE created_at <= %s", (newest,))[0][
            0
        ]
        assert restored >= could_hold * 0.95
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


def _restart_api(sandbox: Sandbox) -> None:
    sandbox.start("dealix-api")
    sandbox.wait_api()
    sandbox.wait_deep("postgres", "green")


def _clones(sandbox: Sandbox) -> set[str]:
    return {d for d in databases(sandbox) if d.startswith("dealix_restore_2")}


def test_failed_incident_restore_leaves_production_untouched(sandbox, healed) -> None:
    """A dump that gzip -t accepts but psql rejects: the restore into the clone fails,
    nothing is renamed, production keeps every row, and the error says what to do."""
    bad = Path(sandbox.state["backups_dir"]) / "dealix-broken-test.sql.gz"
    filler = "".join(f"-- {os.urandom(32).hex()}\n" for _ in range(200))
    bad.write_bytes(
        gzip.compress((filler + "CREATE TABLE leads (id int);\nSELECT 1/0;\n").encode())
    )
    before = production(sandbox)
    kept_before = {d for d in databases(sandbox) if d.startswith("dealix_corrupt_")}
    try:
        code, run_dir = runner.run(
            "restore_incident", {"reason": "test: broken backup", "backup": bad.name}, quiet=True
        )
        record = read(run_dir)
        assert code == runner.EXIT["failed"], record
        assert record["failed_step"] == "2. Restore into a clone"
        message = record["error"]["message"]
        assert "nothing was swapped" in message and "untouched" in message
        assert "start dealix-api" in message and "-p backup NAME" in message
        assert statuses(record)["Restore completed"] == "failed"
        assert "Damaged database kept" not in statuses(record)
        assert {d for d in databases(sandbox) if d.startswith("dealix_corrupt_")} == kept_before
        assert _clones(sandbox) == set()  # the empty clone was dropped
        assert production(sandbox, before["max_lead_id"]) == before
    finally:
        bad.unlink(missing_ok=True)
        _restart_api(sandbox)


def test_incident_restore_that_fails_validation_stops_before_the_swap(sandbox, healed) -> None:
    """A backup that restores cleanly but has no leads and one user: validation fails,
    production is not renamed, the clone is kept for inspection and the message says
    what to do."""
    empty = Path(sandbox.state["backups_dir"]) / "dealix-noleads-test.sql.gz"
    filler = "".join(f"-- {os.urandom(32).hex()}\n" for _ in range(200))
    sql = (
        "CREATE TABLE leads (id int, created_at timestamptz);\n"
        "CREATE TABLE users (id int, created_at timestamptz);\n"
        "INSERT INTO users VALUES (1, now());\n"
    )
    empty.write_bytes(gzip.compress((filler + sql).encode()))
    before = production(sandbox)
    kept_before = {d for d in databases(sandbox) if d.startswith("dealix_corrupt_")}
    try:
        code, run_dir = runner.run(
            "restore_incident",
            {"reason": "test: backup without leads", "backup": empty.name},
            quiet=True,
        )
        record = read(run_dir)
        assert code == runner.EXIT["failed"], record
        assert record["failed_step"] == "3. Validate the clone before the swap"
        st = statuses(record)
        assert st["Restore completed"] == "passed"
        assert st["Restored rows leads"] == "failed"  # no rows at all
        # one user where production holds many up to that row's time: a truncated table
        assert st["Restored rows users"] == "failed"
        assert "Damaged database kept" not in st and "API deep health" not in st
        message = record["error"]["message"]
        assert "leads: 0 rows; users: 1 rows" in message and "nothing was swapped" in message
        clones = _clones(sandbox)
        assert len(clones) == 1 and clones.pop() in message  # kept for inspection
        assert {d for d in databases(sandbox) if d.startswith("dealix_corrupt_")} == kept_before
        assert production(sandbox, before["max_lead_id"]) == before
    finally:
        empty.unlink(missing_ok=True)
        for d in _clones(sandbox):
            sandbox.query(f'DROP DATABASE "{d}" WITH (FORCE)', dbname="postgres")
        _restart_api(sandbox)


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
        # jobs not given: -j is the server's core count (the sandbox's server is this machine)
        cores = int(subprocess.run(["nproc"], capture_output=True, text=True).stdout)
        code, run_dir = runner.run("restore_drill", {"backup": dump.name}, quiet=True)
        record = read(run_dir)
        assert code == 0, record
        assert record["parameters"]["jobs"] is None
        restore_time = next(c for c in record["checks"] if c["name"] == "Restore time")
        assert f"custom, jobs {cores}" in restore_time["actual"]
        assert any(
            "pg_restore" in c["what"] and f"--exit-on-error -j {cores} " in c["what"]
            for c in record["changes"]
        )
        assert statuses(record)["Row count leads"] == "passed"
        assert SCRATCH not in databases(sandbox)
    finally:
        dump.unlink(missing_ok=True)


# ---------------------------------------------------------------- progress


def _paused_dump(sandbox: Sandbox, name: str, pauses: int, mb: int = 3, pause_s: int = 4) -> Path:
    """A gzip'd SQL dump far larger than the pipe buffer that stalls `pauses` times:
    `SELECT pg_sleep(...)` first, then after each `mb` MB of (incompressible) comment
    lines. While psql sleeps, gunzip blocks on the full pipe, so its offset in the
    dump stands still below 100 %. Dated 30 days back: never the newest backup."""
    line = lambda: f"-- {os.urandom(32).hex()}\n"  # noqa: E731
    chunk = mb * 1024 * 1024 // 68
    parts = []
    for _ in range(pauses):
        parts.append(f"SELECT pg_sleep({pause_s});\n")
        parts.append("".join(line() for _ in range(chunk)))
    path = Path(sandbox.state["backups_dir"]) / name
    path.write_bytes(gzip.compress("".join(parts).encode(), compresslevel=1))
    old = time.time() - 30 * 86400
    os.utime(path, (old, old))
    return path


def test_headless_progress_moves_during_a_long_restore(sandbox, tmp_path, capsys) -> None:
    """Progress samples below 100 % are seen and rise, in the result and the log lines."""
    dump = _paused_dump(sandbox, "dealix-progress-test.sql.gz", pauses=2)
    s = open_session("restore_drill", env="sandbox", run_dir=tmp_path / "run")
    db = "dealix_progress_test"
    try:
        backups.create_database(s, db)
        chosen = backups.choose(backups.list_backups(s, limit=None), dump.name)
        assert chosen is not None
        total = chosen["size_bytes"]
        assert total > 1024 * 1024  # far beyond the 64 KiB pipe buffer
        result = backups.restore(
            s, chosen, db, interval=0.5, on_progress=_restore.progress_view(False)
        )
    finally:
        backups.drop_database(s, db)
        s.close()
        dump.unlink(missing_ok=True)
    assert result.ok, result.error
    values = [n for _, n in result.progress]
    below = sorted({v for v in values if v < total})
    # one stall per pg_sleep: two distinct offsets below 100 %, then the end
    assert len(below) >= 2, values
    assert values == sorted(values) and values[-1] == total, values
    out = capsys.readouterr().out
    shown = [
        float(x) for x in re.findall(r"restore dealix-progress-test\.sql\.gz: +([\d.]+) % ", out)
    ]
    assert shown == sorted(shown), out
    assert len({p for p in shown if p < 100}) >= 2, out
    assert shown[-1] == 100.0 or "dump read (100 %), psql finishing" in out, out


def test_the_widget_bar_follows_every_progress_sample() -> None:
    """Each polled offset moves the ipywidgets bar (tqdm.notebook), not only the last."""
    view = _restore.progress_view(True)
    view.start("restore x", 1000)
    assert isinstance(view, _restore.NotebookBar)
    bar = view.bar
    assert type(bar).__name__ == "tqdm_notebook"
    widget = bar.container.children[1]
    seen = []
    for n in (120, 480, 1000):
        view.show(1.0, n)
        seen.append(widget.value)
    assert seen == [120, 480, 1000] and widget.max == 1000
    # headless: log lines instead
    assert isinstance(_restore.progress_view(False), backups.ProgressLines)


def test_jupyterlab_gets_a_widget_bar_that_fills(sandbox, tmp_path, monkeypatch) -> None:
    """In a kernel started by JupyterLab the restore draws an ipywidgets bar (not log
    lines) and fills it; the kernel is the project's, as JupyterLab starts it."""
    dump = _paused_dump(sandbox, "dealix-bar-test.sql.gz", pauses=1, mb=2, pause_s=2)
    monkeypatch.setenv("JPY_SESSION_NAME", str(tmp_path / "lab.ipynb"))
    monkeypatch.delenv("RUNBOOK_RUN_DIR", raising=False)
    code = f"""
from runbook import open_session
from runbook.ops import backups
from runbook.scenarios import _restore
s = open_session("restore_drill", env="sandbox", run_dir={str(tmp_path / "run")!r})
backups.create_database(s, "dealix_bar_test")
try:
    chosen = backups.choose(backups.list_backups(s, limit=None), {dump.name!r})
    r = backups.restore(
        s, chosen, "dealix_bar_test", interval=0.5, on_progress=_restore.progress_view()
    )
finally:
    backups.drop_database(s, "dealix_bar_test")
    s.close()
print("RESULT", r.ok, r.bytes_total, len(r.progress))
"""
    nb = nbformat.v4.new_notebook()
    nb.cells = [nbformat.v4.new_code_cell(code)]
    try:
        NotebookClient(nb, kernel_name="dealix-runbook", timeout=300).execute()
    finally:
        dump.unlink(missing_ok=True)
    outputs = nb.cells[0].outputs
    text = "".join(o.get("text", "") for o in outputs if o.output_type == "stream")
    ok, total, samples = re.search(r"RESULT (\w+) (\d+) (\d+)", text).groups()
    assert ok == "True" and int(samples) >= 1, text
    assert any("application/vnd.jupyter.widget-view+json" in o.get("data", {}) for o in outputs)
    assert " % (" not in text  # no headless log lines beside the bar
    state = nb.metadata["widgets"]["application/vnd.jupyter.widget-state+json"]["state"]
    bars = [m["state"] for m in state.values() if m["model_name"] == "FloatProgressModel"]
    assert len(bars) == 1, state
    assert bars[0]["max"] == bars[0]["value"] == int(total)
    assert bars[0]["bar_style"] == "success"
