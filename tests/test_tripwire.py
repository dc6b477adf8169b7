"""Layer 3, the tripwire (runbook.safety.tripwire), against the real sandbox.

Each protected object is damaged the way no guard can see: by a second process
with the sandbox's own root access, between two commands of a session (what
"a root shell beside the run" does). The session's next change must then stop
with outcome "tripped" (exit 9), put back what can be put back, and say what it
could not; the object is read on the real server afterwards. The changes the
scenarios are allowed to make (restore_incident's swap, one downgrade step, the
LLM_PROVIDER_PRIORITY edit, an old corrupt database dropped) do not trip.
"""

from __future__ import annotations

import hashlib
import json
import os
import subprocess
from datetime import UTC, datetime, timedelta
from pathlib import Path

import jsonschema
import pytest

from runbook.core.profile import Profile, load_profile
from runbook.errors import OUTCOMES, Tripped, outcome_of
from runbook.safety.guards import Guards
from runbook.safety.tripwire import Snapshot, Tripwire, parse
from runbook.sandbox import project_root
from runbook.session import open_session

KEPT = "server-backup-20260423-084442"


# ------------------------------------------------------------------ helpers
def _schema() -> jsonschema.Draft202012Validator:
    return jsonschema.Draft202012Validator(
        json.loads((project_root() / "docs" / "record.schema.json").read_text())
    )


def _record(run_dir: Path) -> dict:
    rec = json.loads((run_dir / "record.json").read_text())
    problems = [f"{e.json_path}: {e.message[:200]}" for e in _schema().iter_errors(rec)]
    assert not problems, problems
    return rec


def _events(run_dir: Path, kind: str = "tripwire") -> list[dict]:
    lines = (run_dir / "commands.jsonl").read_text().splitlines()
    return [e for e in map(json.loads, lines) if e.get("kind") == kind]


def _git(*args: str, cwd: str | None = None) -> str:
    return subprocess.run(
        ["git", *args], cwd=cwd, check=True, capture_output=True, text=True
    ).stdout.strip()


# A root shell lifts the server's armor (layer 2) before it destroys: these tests
# hold the tripwire alone, so the damage goes around the armor first.
NO_HOOKS = ("-c", "core.hooksPath=/dev/null")
RECEIVE_NO_HOOKS = "--receive-pack=git -c core.hooksPath=/dev/null receive-pack"


def _lift(path: str) -> bool:
    """`chattr -i` as root; True when the file was immutable."""
    flags = subprocess.run(["lsattr", "-d", path], capture_output=True, text=True).stdout
    subprocess.run(["chattr", "-i", path], capture_output=True, check=False)
    return "i" in flags.split(" ")[0]


def _sha256(path: str) -> str:
    return hashlib.sha256(Path(path).read_bytes()).hexdigest()


def _session(tmp_path: Path, scenario: str = "deploy", **kw):
    s = open_session(scenario, "sandbox", run_dir=tmp_path / "run", **kw)
    s.run(["true"], label="first-change")  # the first change arms the tripwire
    assert s.tripwire is not None and s.tripwire.armed
    return s


def _trips(s, *objects: str) -> tuple[Tripped, dict]:
    """The session's next change trips, naming the command and each object; the record says so."""
    with pytest.raises(Tripped) as info:
        s.run(["true"], label="after-damage")
    exc = info.value
    assert exc.command == "true"
    named = [v["object"] for v in exc.violations]
    for obj in objects:
        assert any(obj in n for n in named), (obj, named)
    rec = _record(s.run_dir)
    assert rec["outcome"] == "tripped" and OUTCOMES["tripped"] == 9
    assert rec["tripwire"]["tripped"]["command"] == "true"
    assert rec["error"]["type"] == "Tripped"
    tripped = [e for e in _events(s.run_dir) if e["event"] == "tripped"]
    assert len(tripped) == 1 and tripped[0]["after"] == "true"
    # latched: no change goes out after a trip
    with pytest.raises(Tripped):
        s.run(["touch", "/tmp/runbook-tripwire-never"])
    assert not Path("/tmp/runbook-tripwire-never").exists()
    return exc, rec


def _no_trip(s) -> None:
    s.run(["true"], label="after-legit-change")
    assert s.tripwire is not None and s.tripwire.tripped is None


def _protected(sandbox) -> str:
    return load_profile("sandbox").do_not_touch.files[0]


# ------------------------------------------------------------------ files
def test_a_deleted_protected_file_is_put_back_from_the_copy(sandbox, tmp_path) -> None:
    path = _protected(sandbox)
    before = (_sha256(path), oct(os.stat(path).st_mode))
    s = _session(tmp_path)
    try:
        armored = _lift(path)
        os.remove(path)  # a root shell beside the run
        exc, rec = _trips(s, f"file {path}")
        assert exc.violations[0]["rule"] == "keep-protected-files"
        assert exc.violations[0]["what"] == "gone"
        assert f"file {path}" in rec["tripwire"]["tripped"]["put_back"]
        # checked on the real server: the same bytes and mode
        assert (_sha256(path), oct(os.stat(path).st_mode)) == before
        # and immutable again when the armor had made it so
        attrs = subprocess.run(["lsattr", "-d", path], capture_output=True, text=True).stdout
        assert ("i" in attrs.split(" ")[0]) == armored
        # the copy stays (evidence of a trip), in a 0700 directory, never in the run's folder
        copies = Path(rec["tripwire"]["copies"])
        assert oct(copies.stat().st_mode & 0o777) == "0o700"
        assert not any("pre-v3" in p.name for p in s.run_dir.rglob("*"))
        assert Path(path).read_bytes() not in (s.run_dir / "commands.jsonl").read_bytes()
    finally:
        s.close()


def test_a_protected_file_overwritten_is_put_back(sandbox, tmp_path) -> None:
    path = _protected(sandbox)
    before = _sha256(path)
    s = _session(tmp_path)
    try:
        _lift(path)
        Path(path).write_text("OOPS=1\n")  # the same inode, other content
        exc, _ = _trips(s, f"file {path}")
        assert exc.violations[0]["what"] == "content changed"
        assert _sha256(path) == before
    finally:
        s.close()


def test_env_changed_outside_is_put_back_but_the_llm_edit_is_kept(sandbox, tmp_path) -> None:
    env = load_profile("sandbox").app.env_file
    original = Path(env).read_bytes()
    s = _session(tmp_path, scenario="llm_provider_down")
    try:
        # the one allowed in-place edit (scenario 4) does not trip
        s.edit_env_var("LLM_PROVIDER_PRIORITY", "openai,google,anthropic")
        _no_trip(s)
        edited = Path(env).read_text()
        assert 'LLM_PROVIDER_PRIORITY="openai,google,anthropic"' in edited
        # any other line does
        Path(env).write_text(edited.replace("APP_ENV=", "APP_ENV=hacked-", 1))
        exc, _ = _trips(s, f"env {env}")
        assert exc.violations[0]["rule"] == "env-edit-only-llm-priority"
        back = Path(env).read_text()
        assert "APP_ENV=hacked-" not in back
        assert 'LLM_PROVIDER_PRIORITY="openai,google,anthropic"' in back  # the allowed edit stays
        assert back == edited  # line for line, in its place
    finally:
        s.close()
        Path(env).write_bytes(original)


def test_a_step_allowed_to_rotate_keys_changes_only_those(sandbox, tmp_path) -> None:
    env = load_profile("sandbox").app.env_file
    original = Path(env).read_text()
    s = _session(tmp_path, scenario="security_incident")
    try:
        with s.tripwire_allows(["ADMIN_KEY"], "scenario 6 step 1: rotate"):
            Path(env).write_text(original.replace("ADMIN_KEY=", "ADMIN_KEY=rotated", 1))
            _no_trip(s)
        rotated = Path(env).read_text()
        # the copy follows the allowed change: a later trip never puts old keys back
        Path(env).write_text(rotated.replace("APP_ENV=", "APP_ENV=hacked-", 1))
        exc, _ = _trips(s, f"env {env}")
        assert "other than LLM_PROVIDER_PRIORITY changed" in exc.violations[0]["what"]
        assert Path(env).read_text() == rotated
        allow = [e for e in _events(s.run_dir) if e["event"] == "allow"]
        assert [e["env_keys"] for e in allow] == [["ADMIN_KEY"], []]
    finally:
        s.close()
        Path(env).write_text(original)


def test_outside_the_allowance_another_key_still_trips(sandbox, tmp_path) -> None:
    env = load_profile("sandbox").app.env_file
    original = Path(env).read_text()
    s = _session(tmp_path, scenario="security_incident")
    try:
        with s.tripwire_allows(["ADMIN_KEY"], "scenario 6 step 1: rotate"):
            Path(env).write_text(original.replace("REDIS_URL=", "REDIS_URL=x", 1))
            exc, _ = _trips(s, f"env {env}")
        assert "other than LLM_PROVIDER_PRIORITY, ADMIN_KEY changed" in exc.violations[0]["what"]
        assert Path(env).read_text() == original
    finally:
        s.close()
        Path(env).write_text(original)


# ------------------------------------------------------------------ git refs
def test_kept_branch_deleted_on_the_server_and_in_origin_is_put_back(sandbox, tmp_path) -> None:
    app, origin = sandbox.state["app_dir"], sandbox.state["origin_dir"]
    sha = _git("rev-parse", f"refs/heads/{KEPT}", cwd=app)
    assert _git("--git-dir", origin, "rev-parse", f"refs/heads/{KEPT}") == sha
    s = _session(tmp_path)
    try:
        _git(*NO_HOOKS, "update-ref", "-d", f"refs/heads/{KEPT}", cwd=app)  # plumbing
        _git(*NO_HOOKS, "--git-dir", origin, "update-ref", "-d", f"refs/heads/{KEPT}")
        exc, rec = _trips(s, f"server ref refs/heads/{KEPT}", f"origin ref refs/heads/{KEPT}")
        assert {v["rule"] for v in exc.violations} == {"no-force-delete-branch"}
        assert len(rec["tripwire"]["tripped"]["put_back"]) == 2
        assert _git("rev-parse", f"refs/heads/{KEPT}", cwd=app) == sha
        assert _git("--git-dir", origin, "rev-parse", f"refs/heads/{KEPT}") == sha
    finally:
        s.close()


def test_a_commit_on_the_server_is_taken_off_main(sandbox, tmp_path) -> None:
    app = sandbox.state["app_dir"]
    main = _git("rev-parse", "refs/heads/main", cwd=app)
    s = _session(tmp_path)
    try:
        _git(
            *NO_HOOKS, "-c", "user.name=x", "-c", "user.email=x@x", "commit", "-q",
            "--allow-empty", "--no-verify", "-m", "hotfix on the server", cwd=app,
        )  # fmt: skip
        assert _git("rev-parse", "refs/heads/main", cwd=app) != main
        exc, _ = _trips(s, "server ref refs/heads/main")
        assert exc.violations[0]["rule"] == "no-commit-on-server"
        assert _git("rev-parse", "refs/heads/main", cwd=app) == main
    finally:
        s.close()


def test_a_push_to_main_from_the_server_is_put_back_in_origin(sandbox, tmp_path) -> None:
    app, origin = sandbox.state["app_dir"], sandbox.state["origin_dir"]
    main = _git("rev-parse", "refs/heads/main", cwd=app)
    s = _session(tmp_path)
    try:
        _git(
            *NO_HOOKS, "-c", "user.name=x", "-c", "user.email=x@x", "commit", "-q",
            "--allow-empty", "--no-verify", "-m", "pushed from the server", cwd=app,
        )  # fmt: skip
        _git(
            *NO_HOOKS, "push", "-q", "--no-verify", RECEIVE_NO_HOOKS, "origin",
            "HEAD:refs/heads/main", cwd=app,
        )  # fmt: skip
        exc, _ = _trips(s, "origin ref refs/heads/main", "server ref refs/heads/main")
        assert "no-push-to-main" in {v["rule"] for v in exc.violations}
        assert _git("--git-dir", origin, "rev-parse", "refs/heads/main") == main
        assert _git("rev-parse", "refs/heads/main", cwd=app) == main
    finally:
        s.close()
        _git(*NO_HOOKS, "update-ref", "refs/remotes/origin/main", main, cwd=app)


# ------------------------------------------------------------------ databases
def test_a_young_corrupt_database_dropped_trips_an_old_one_does_not(sandbox, tmp_path) -> None:
    today = datetime.now(UTC)
    young = f"dealix_corrupt_{today:%Y%m%d}_tw"
    old = f"dealix_corrupt_{today - timedelta(days=30):%Y%m%d}_tw"
    for name in (young, old):
        sandbox.query(f'DROP DATABASE IF EXISTS "{name}"', dbname="postgres")
        sandbox.query(f'CREATE DATABASE "{name}"', dbname="postgres")
    s = _session(tmp_path)
    try:
        sandbox.query(f'DROP DATABASE "{old}"', dbname="postgres")  # past its 7 days: allowed
        _no_trip(s)
        sandbox.query(f'DROP DATABASE "{young}"', dbname="postgres")
        exc, rec = _trips(s, f"database {young}")
        assert exc.violations[0]["rule"] == "keep-corrupt-db-7-days"
        # said plainly: a dropped database cannot be put back
        assert any(young in x and "cannot be put back" in x for x in exc.not_restored)
        assert rec["tripwire"]["tripped"]["put_back"] == []
        assert not sandbox.query(
            "SELECT 1 FROM pg_database WHERE datname = %s", (young,), dbname="postgres"
        )
    finally:
        s.close()
        for name in (young, old):
            sandbox.query(f'DROP DATABASE IF EXISTS "{name}"', dbname="postgres")


def _rename_production(sandbox, to: str, frm: str = "dealix") -> None:
    sandbox.query(
        "SELECT pg_terminate_backend(pid) FROM pg_stat_activity "
        "WHERE datname = %s AND pid <> pg_backend_pid()",
        (frm,),
        dbname="postgres",
    )
    sandbox.query(f'ALTER DATABASE "{frm}" RENAME TO "{to}"', dbname="postgres")


def _oid(sandbox, name: str) -> int | None:
    rows = sandbox.query(
        "SELECT oid FROM pg_database WHERE datname = %s", (name,), dbname="postgres"
    )
    return int(rows[0][0]) if rows else None


def test_production_database_renamed_outside_restore_incident_is_renamed_back(
    sandbox, tmp_path
) -> None:
    oid = _oid(sandbox, "dealix")
    s = _session(tmp_path)
    sandbox.stop("dealix-api")  # its pool would hold the database open
    try:
        _rename_production(sandbox, "dealix_moved_tw")
        exc, _ = _trips(s, "database dealix")
        assert exc.violations[0]["rule"] == "no-restore-into-production-db"
        assert "renamed to dealix_moved_tw" in exc.violations[0]["what"]
        assert _oid(sandbox, "dealix") == oid  # renamed back, the same database
    finally:
        s.close()
        if _oid(sandbox, "dealix") is None:
            _rename_production(sandbox, "dealix", frm="dealix_moved_tw")
        sandbox.start("dealix-api")
        sandbox.wait_api()


def test_restore_incident_may_swap_the_production_database(sandbox, tmp_path) -> None:
    oid = _oid(sandbox, "dealix")
    s = _session(tmp_path, scenario="restore_incident", procedure="restore_incident")
    sandbox.stop("dealix-api")
    try:
        # what the incident restore does: production becomes evidence, a clone production
        sandbox.query('CREATE DATABASE "dealix_clone_tw" TEMPLATE template0', dbname="postgres")
        _rename_production(sandbox, "dealix_swapped_tw")
        sandbox.query('ALTER DATABASE "dealix_clone_tw" RENAME TO "dealix"', dbname="postgres")
        _no_trip(s)
        assert _oid(sandbox, "dealix") != oid
    finally:
        s.close()
        if _oid(sandbox, "dealix_swapped_tw") is not None:
            sandbox.query('DROP DATABASE IF EXISTS "dealix" WITH (FORCE)', dbname="postgres")
            _rename_production(sandbox, "dealix", frm="dealix_swapped_tw")
        sandbox.start("dealix-api")
        sandbox.wait_api()
    assert _oid(sandbox, "dealix") == oid


# ------------------------------------------------------------------ alembic
# The revision is moved in alembic_version, as a root shell's `alembic downgrade`
# would leave it, without dropping the tables a real downgrade to base drops (the
# sandbox's seeded data). A real one-step downgrade is the rollback's, in
# tests/test_deploy.py (its record's tripwire does not trip).
def _set_revision(sandbox, rev: str | None) -> None:
    sandbox.query("DELETE FROM alembic_version")
    if rev:
        sandbox.query("INSERT INTO alembic_version (version_num) VALUES (%s)", (rev,))


def test_alembic_two_steps_down_trips_one_does_not(sandbox, tmp_path) -> None:
    head = sandbox.query("SELECT version_num FROM alembic_version")[0][0]
    s = _session(tmp_path, scenario="rollback")
    try:
        assert s.tripwire.highest_rev == head == "0002"
        assert s.tripwire._below(head, None) == 2  # the sandbox's 0001 <- 0002
        _set_revision(sandbox, "0001")  # one step: the rollback's own
        _no_trip(s)
        _set_revision(sandbox, None)  # base: a second step, which needs approved_by
        exc, rec = _trips(s, "alembic revision")
        assert exc.violations[0]["rule"] == "one-downgrade-step"
        assert "2 steps below 0002 (now base)" in exc.violations[0]["what"]
        assert any("alembic revision" in x for x in rec["tripwire"]["tripped"]["not_put_back"])
    finally:
        s.close()
        _set_revision(sandbox, head)


def test_two_steps_down_with_an_approver_do_not_trip(sandbox, tmp_path) -> None:
    head = sandbox.query("SELECT version_num FROM alembic_version")[0][0]
    s = _session(tmp_path, scenario="rollback", approved_by="Sami")
    try:
        _set_revision(sandbox, None)
        _no_trip(s)
    finally:
        s.close()
        _set_revision(sandbox, head)


# ------------------------------------------------------------------ WAL
def test_an_active_wal_segment_deleted_trips(sandbox, tmp_path) -> None:
    # a segment after the insert position (preallocated or recycled): deleting it is
    # harmless to Postgres, and still a deletion in the active WAL the rule protects
    sandbox.query("SELECT pg_switch_wal()", dbname="postgres")
    sandbox.query("CHECKPOINT", dbname="postgres")
    wal = Path(sandbox.state["pgdata"]) / "pg_wal"
    current = sandbox.query(
        "SELECT pg_walfile_name(pg_current_wal_insert_lsn())", dbname="postgres"
    )[0][0]
    ahead = sorted(p.name for p in wal.iterdir() if len(p.name) == 24 and p.name > current)
    if not ahead:  # no recycled segment yet: make the next one exist
        sandbox.query("SELECT pg_switch_wal()", dbname="postgres")
        sandbox.query("CHECKPOINT", dbname="postgres")
        current = sandbox.query(
            "SELECT pg_walfile_name(pg_current_wal_insert_lsn())", dbname="postgres"
        )[0][0]
        ahead = sorted(p.name for p in wal.iterdir() if len(p.name) == 24 and p.name > current)
    assert ahead, sorted(p.name for p in wal.iterdir())
    s = _session(tmp_path)
    try:
        (wal / ahead[-1]).unlink()
        exc, _ = _trips(s, "active WAL")
        assert exc.violations[0]["rule"] == "no-delete-active-wal"
        assert ahead[-1] in exc.violations[0]["what"] or "segment" in exc.violations[0]["what"]
        assert any("WAL cannot be put back" in x for x in exc.not_restored)
    finally:
        s.close()
    assert sandbox.query("SELECT 1", dbname="dealix") == [(1,)]


# ------------------------------------------------------------------ the session's side
def test_a_clean_run_records_the_tripwire_and_removes_its_copies(sandbox, tmp_path) -> None:
    s = _session(tmp_path)
    for _ in range(5):
        s.run(["true"])
    copies = Path(s.tripwire.copy_dir)
    assert copies.is_dir() and all(
        oct(p.stat().st_mode & 0o777) == "0o600" for p in copies.iterdir()
    )
    s.done()
    rec = _record(s.run_dir)
    tw = rec["tripwire"]
    assert (
        rec["outcome"] == "ok" and tw["tripped"] is None and tw["checks"] == 6
    )  # the first change too
    assert tw["cost_ms"]["median"] > 0 and any("database dealix" in o for o in tw["objects"])
    assert not copies.exists()  # removed with the run
    events = _events(s.run_dir)
    assert [e["event"] for e in events] == ["armed"] + ["checked"] * 6


def test_probes_and_dry_runs_do_not_arm_the_tripwire(sandbox, tmp_path) -> None:
    s = open_session("deploy", "sandbox", run_dir=tmp_path / "dry", dry_run=True)
    s.probe(["true"])
    s.run(["touch", "/tmp/never"])
    assert s.tripwire is None and _record(s.run_dir)["tripwire"] is None
    s.close()


# ------------------------------------------------------------------ rules, no sandbox
def _wire(profile: Profile | None = None, **guards) -> Tripwire:
    p = profile or load_profile("production")

    def no_transport():
        raise AssertionError("compare() never goes out")

    return Tripwire(no_transport, p, Guards(p, **guards), run_id="t", log=lambda e: None)


def test_outcome_tripped_has_its_own_exit_code() -> None:
    exc = Tripped("x", [{"object": "o", "rule": "r", "what": "w"}], [], ["o: cannot"])
    assert outcome_of(exc) == "tripped" and outcome_of("Tripped") == "tripped"
    assert OUTCOMES["tripped"] == 9 and len(set(OUTCOMES.values())) == len(OUTCOMES)
    assert "Could NOT put back: o: cannot" in str(exc)


def test_wal_rule_spares_what_postgres_recycles_below_redo() -> None:
    w = _wire()
    seg = "0000000100000000000000{:02X}".format
    old = Snapshot(wal=[seg(1), seg(2), seg(3), seg(4)], redo=seg(2), data_dir=True)
    recycled = Snapshot(wal=[seg(3), seg(4), seg(5)], redo=seg(3), data_dir=True)
    assert w.compare(old, recycled) == []
    deleted = Snapshot(wal=[seg(2), seg(4)], redo=seg(2), data_dir=True)
    assert [v.rule for v in w.compare(old, deleted)] == ["no-delete-active-wal"]
    gone = Snapshot(wal=None, data_dir=False)
    assert next(v.object for v in w.compare(old, gone)).startswith("data directory")


def test_wal_is_not_judged_while_postgres_does_not_answer() -> None:
    # a stop's shutdown checkpoint recycles segments before its new REDO; with no
    # REDO to read, the listing is kept for the next reading that has one
    w = _wire()
    seg = "0000000100000000000000{:02X}".format
    old = Snapshot(wal=[seg(2), seg(3), seg(4)], redo=seg(2), data_dir=True)
    down = Snapshot(wal=[seg(4), seg(5)], redo=None, data_dir=True)
    assert w.compare(old, down) == []
    carried = w._carry(old, down)
    assert carried.wal == old.wal and carried.redo == seg(2)
    up = Snapshot(wal=[seg(4), seg(5)], redo=seg(4), data_dir=True)
    assert w.compare(carried, up) == []
    assert [v.rule for v in w.compare(carried, Snapshot(wal=[seg(5)], redo=seg(4)))] == [
        "no-delete-active-wal"
    ]


def test_production_database_rule_follows_the_procedure() -> None:
    old = Snapshot(dbs={5: "postgres", 100: "dealix"})
    swapped = Snapshot(dbs={5: "postgres", 100: "dealix_corrupt_20261207", 200: "dealix"})
    assert [v.rule for v in _wire().compare(old, swapped)] == ["no-restore-into-production-db"]
    assert _wire(procedure="restore_incident").compare(old, swapped) == []


def test_origin_main_rewound_trips_a_fast_forward_does_not() -> None:
    w = _wire()
    old = Snapshot(refs={"refs/heads/main": "a" * 40}, origin={"refs/heads/main": "a" * 40})
    ff = Snapshot(
        refs={"refs/heads/main": "a" * 40},
        origin={"refs/heads/main": "b" * 40},
        origin_main_ff="yes",
        main_on_origin="yes",
    )
    assert w.compare(old, ff) == []  # someone merged a PR: not this run's doing
    rewound = Snapshot(
        refs={"refs/heads/main": "a" * 40},
        origin={"refs/heads/main": "c" * 40},
        origin_main_ff="no",
        main_on_origin="yes",
    )
    assert [v.rule for v in w.compare(old, rewound)] == ["no-push-to-main"]


def test_parse_reads_the_scripts_lines() -> None:
    text = "\n".join(
        [
            "file|0|12|5|600|0:0|" + "a" * 64,
            "env|" + "b" * 64,
            "ref|refs/heads/main|" + "c" * 40,
            "origin|unreachable",
            "alembic_read|yes",
            "conn|ok",
            "db|5|postgres",
            "redo|000000010000000000000002",
            "datadir_exists|yes",
            "wal_dir|/x/pg_wal",
            "wal|000000010000000000000002",
            "wal|archive_status",
            'mig|migrations/versions/0002_x.py:revision: str = "0002"',
            'mig|migrations/versions/0002_x.py:down_revision: str | None = "0001"',
            "mig|migrations/versions/0001_x.py:revision = '0001'",
            "mig|migrations/versions/0001_x.py:down_revision = None",
        ]
    )
    snap = parse(text, ["/p"])
    assert snap.files["/p"] is not None and snap.files["/p"]["inode"] == "12"
    assert snap.origin is None and snap.alembic == [] and snap.dbs == {5: "postgres"}
    assert snap.chain == {"0002": "0001", "0001": None}
    assert snap.wal == ["000000010000000000000002", "archive_status"] and snap.data_dir


def test_an_origin_unreachable_at_the_baseline_is_not_asked_again() -> None:
    w = _wire()
    assert "ls-remote origin" in w.script()
    w.baseline = w.last = Snapshot(origin=None)
    assert "ls-remote" not in w.script() and "origin|unreachable" in w.script()
    w.baseline = w.last = Snapshot(origin={"refs/heads/main": "a" * 40})
    assert "ls-remote origin" in w.script()


def test_production_dropped_trips_even_in_the_incident_restore(sandbox, tmp_path) -> None:
    """The incident restore may replace production (a rename), never drop it (the evidence)."""
    clone, gone = "dealix_tw_clone", "dealix_tw_gone"
    for name in (clone, gone):
        sandbox.query(f'DROP DATABASE IF EXISTS "{name}"', dbname="postgres")
    s = _session(tmp_path, "restore_incident", procedure="restore_incident")
    assert s.guards.procedure == "restore_incident"
    sandbox.stop("dealix-api")
    try:
        sandbox.query(
            "SELECT pg_terminate_backend(pid) FROM pg_stat_activity "
            "WHERE datname = 'dealix' AND pid <> pg_backend_pid()",
            dbname="postgres",
        )
        sandbox.query(f'CREATE DATABASE "{clone}" TEMPLATE dealix', dbname="postgres")
        _rename_production(sandbox, gone)
        sandbox.query(f'DROP DATABASE "{gone}"', dbname="postgres")
        sandbox.query(f'ALTER DATABASE "{clone}" RENAME TO dealix', dbname="postgres")
        exc, _ = _trips(s, "database dealix")
        assert exc.violations[0]["rule"] == "no-restore-into-production-db"
        assert "dropped" in exc.violations[0]["what"]
    finally:
        s.close()
        if _oid(sandbox, "dealix") is None and _oid(sandbox, clone) is not None:
            sandbox.query(f'ALTER DATABASE "{clone}" RENAME TO dealix', dbname="postgres")
        sandbox.start("dealix-api")
