"""Layers 1 and 3 of issue 19 (the guard, the tripwire) on the production twin (`-m twin`).

A real session runs on the runner side of the twin (profile "twin", i.e.
production.yaml, `--confirm twin`) under `runbook twin exec`, as a notebook
would: the guard asks the twin's own server its questions (the branch HEAD is
on, the SQL file `psql -f` would read) and the tripwire reads the twin through
production's own paths (`sudo -n -u postgres psql`, the copies beside
/var/lock's host lock, `git ls-remote` to the twin's origin). Every protected
object is then read on the twin over SSH as root: a file's sha256, a branch's
SHA, the production database's OID, the alembic revision.
"""

from __future__ import annotations

import json
import sys
from datetime import UTC, datetime
from pathlib import Path

import pytest
from conftest import twin_exec

pytestmark = pytest.mark.twin

F = "/opt/dealix/.env.pre-v3.0.0.bak"
ENV = "/opt/dealix/.env"
KEPT = "server-backup-20260423-084442"
APP = "/opt/dealix"
PSQL = "sudo -n -u postgres psql"

# one representative form per class of the issue (tests/test_guard_forms.py has them all),
# typed as an operator on production would type them: each would destroy its object if run
FORMS: list[tuple[str, str, str]] = [
    ("variables", "keep-protected-files", f'X={F}; rm -f "$X"'),
    ("variables", "no-restore-into-production-db", 'DB=dealix; sudo -n -u postgres dropdb "$DB"'),
    ("loops", "one-downgrade-step", f"cd {APP} && for i in 1 2; do alembic downgrade -1; done"),
    ("loops", "keep-protected-files", "for f in /opt/dealix/.env.pre*; do rm -f $f; done"),
    ("interpreters", "opaque-command", f"python3 -c \"import os; os.remove('{F}')\""),
    # "rm -f /opt/dealix/.env.pre-v3.0.0.bak", base64
    (
        "interpreters",
        "opaque-command",
        "echo cm0gLWYgL29wdC9kZWFsaXgvLmVudi5wcmUtdjMuMC4wLmJhawo= | base64 -d | sh",
    ),
    ("editors", "env-edit-only-llm-priority", f"sed -ri 's/^APP_ENV=.*/APP_ENV=x/' {ENV}"),
    ("editors", "env-edit-only-llm-priority", f"perl -pi -e 's/^APP_ENV=/APP_ENV=x/' {ENV}"),
    ("git", "no-force-delete-branch", f"git -C {APP} update-ref -d refs/heads/{KEPT}"),
    ("git", "no-force-delete-branch", f"cd {APP} && git branch -f {KEPT} HEAD~1"),
    ("git", "no-push-to-main", f"cd {APP} && git push -u origin HEAD"),
    ("git", "no-commit-on-server", f"cd {APP} && git -c alias.ci=commit ci --allow-empty -m x"),
    ("sql", "no-restore-into-production-db", f"{PSQL} -c 'DROP/**/DATABASE dealix'"),
    ("sql", "no-restore-into-production-db", f"{PSQL} -f /tmp/twin-safety-drop.sql"),
    (
        "sql",
        "no-restore-into-production-db",
        f"{PSQL} -d dealix -c '\\i /tmp/twin-safety-drop.sql'",
    ),
    (
        "sql",
        "no-restore-into-production-db",
        "cat /tmp/twin-safety-drop.sql | sudo -n -u postgres env PGDATABASE=dealix psql",
    ),
]

# a SELECT-only file read with -f from the production database: runs (a false positive before)
HARMLESS = [f"{PSQL} -XAt -d dealix -f /tmp/twin-safety-select.sql"]

_FORMS_SCRIPT = r"""
import json, sys
from runbook.errors import Forbidden
from runbook.session import open_session

forms, harmless, run_dir = json.loads(sys.argv[1]), json.loads(sys.argv[2]), sys.argv[3]
protected, app = sys.argv[4], sys.argv[5]
s = open_session("deploy", "twin", confirm="twin", run_dir=run_dir)
out = {"forms": [], "harmless": []}
try:
    for klass, rule, command in forms:
        try:
            r = s.run(command, shell=True, label=f"form {klass}")
            out["forms"].append({"command": command, "ran": True, "exit": r.exit_code})
        except Forbidden as exc:
            out["forms"].append({"command": command, "rule": exc.rule, "text": str(exc)[:400]})
    for command in harmless:
        r = s.probe(command, shell=True, label="harmless")
        out["harmless"].append({"command": command, "exit": r.exit_code, "out": r.stdout[-200:]})
    # the harmless commands of the issue that change something: a copy beside the
    # protected file, the library's own backup of it, a dry-run push to main
    s.run(["cp", "-p", protected, protected + ".copy-twin-safety"], label="harmless copy")
    out["backup"] = str(s.backup_file(protected))
    r = s.run(f"cd {app} && git push --dry-run origin HEAD:main", shell=True, label="dry run")
    out["dry_run"] = r.exit_code
finally:
    s.close()
print("RESULT " + json.dumps(out))
"""

_TRIP_SCRIPT = r"""
import json, os, sys
from runbook.errors import Tripped
from runbook.session import open_session
from runbook.twin import Twin

damage, run_dir = sys.argv[1], sys.argv[2]
s = open_session("deploy", "twin", confirm="twin", run_dir=run_dir)
out = {}
try:
    s.run(["true"], label="first-change")  # arms the tripwire
    out["armed"] = s.tripwire.summary()
    out["immutable"] = sorted(s.tripwire.immutable)
    # a root shell beside the run, over SSH, outside the runbook: no guard reads it
    root = Twin(os.environ["RUNBOOK_TWIN_DIR"]).ssh(damage, check=False, timeout=60)
    out["damage"] = {"exit": root.returncode, "stderr": root.stderr[-400:]}
    try:
        s.run(["true"], label="after-damage")
        out["tripped"] = None
    except Tripped as exc:
        out["tripped"] = {"command": exc.command, "violations": exc.violations,
                          "put_back": exc.restored, "not_put_back": exc.not_restored}
    try:
        s.run(["touch", "/tmp/twin-safety-never"], label="latched")
        out["latched"] = False
    except Tripped:
        out["latched"] = True
finally:
    s.close()
print("RESULT " + json.dumps(out))
"""


def _session_script(twin, tmp_path: Path, script: str, *args: str) -> dict:
    got = twin_exec(
        twin,
        [sys.executable, "-c", script, *args],
        env={"PYTHONDONTWRITEBYTECODE": "1"},
        timeout=600,
    )
    lines = [ln for ln in got.stdout.splitlines() if ln.startswith("RESULT ")]
    assert got.returncode == 0 and lines, (got.stdout[-2000:], got.stderr[-3000:])
    return json.loads(lines[-1][len("RESULT ") :])


def _root(twin, cmd: str) -> str:
    got = twin.ssh(cmd, check=False, timeout=60)
    assert got.returncode == 0, (cmd, got.stderr[-500:])
    return got.stdout.strip()


def _state(twin) -> dict[str, str]:
    """Every protected object, read on the twin as root."""
    sql = (
        "select 'oid|' || oid from pg_database where datname = 'dealix'; "
        "select 'alembic|' || version_num from alembic_version"
    )
    return {
        "file": _root(twin, f"sha256sum {F} | cut -c1-64"),
        "env": _root(twin, f"sha256sum {ENV} | cut -c1-64"),
        "kept": _root(twin, f"git -C {APP} rev-parse refs/heads/{KEPT}"),
        "main": _root(twin, f"git -C {APP} rev-parse refs/heads/main"),
        "origin main": _root(twin, "git --git-dir=/srv/git/dealix.git rev-parse refs/heads/main"),
        "head": _root(twin, f"git -C {APP} symbolic-ref HEAD"),
        "db": _root(twin, f'cd / && {PSQL} -XAtq -d dealix -c "{sql}"'),
    }


def _immutable(twin, path: str) -> bool:
    return "i" in _root(twin, f"lsattr -d {path}").split(" ")[0]


def test_one_form_per_class_is_refused_on_the_twin_and_nothing_moves(twin, tmp_path) -> None:
    _root(
        twin,
        "printf 'DROP DATABASE dealix;\\n' > /tmp/twin-safety-drop.sql && "
        "printf 'SELECT 40 + 2;\\n' > /tmp/twin-safety-select.sql && "
        "chmod 644 /tmp/twin-safety-*.sql",
    )
    before = _state(twin)
    assert before["head"] == "refs/heads/main"  # what makes `git push -u origin HEAD` reach main
    assert before["db"].startswith("oid|") and "alembic|" in before["db"], before["db"]
    got = _session_script(
        twin,
        tmp_path,
        _FORMS_SCRIPT,
        json.dumps(FORMS),
        json.dumps(HARMLESS),
        str(tmp_path / "run"),
        F,
        APP,
    )
    ran = [f for f in got["forms"] if f.get("ran")]
    assert not ran, ran
    wrong = [
        (form, rule, f.get("rule"), f.get("text"))
        for (_, rule, form), f in zip(FORMS, got["forms"], strict=True)
        if f.get("rule") != rule
    ]
    assert not wrong, wrong
    assert {k for k, _, _ in FORMS} == {
        "variables",
        "loops",
        "interpreters",
        "editors",
        "git",
        "sql",
    }
    assert [h["exit"] for h in got["harmless"]] == [0], got["harmless"]
    assert got["harmless"][0]["out"].strip() == "42"
    assert got["dry_run"] == 0
    copies = [f"{F}.copy-twin-safety", got["backup"]]
    same = _root(twin, f"sha256sum {' '.join(copies)} | cut -c1-64 | sort -u")
    _root(twin, f"rm -f {' '.join(copies)}")
    assert same == before["file"], same  # both copies hold the protected bytes
    # on the twin: every protected object as it was
    assert _state(twin) == before


def test_the_tripwire_on_the_twin_puts_back_what_a_root_shell_destroyed(twin, tmp_path) -> None:
    # a corrupt database of today's (restore_incident's evidence): 7 days to keep
    young = f"dealix_corrupt_{datetime.now(UTC):%Y%m%d}_twin"
    drop = f"cd / && {PSQL} -XAtq -d postgres -c 'DROP DATABASE IF EXISTS {young}'"
    _root(twin, f"{drop} && cd / && {PSQL} -XAtq -d postgres -c 'CREATE DATABASE {young}'")
    _root(twin, "rm -f /tmp/twin-safety-never")
    before = _state(twin)
    was_immutable = _immutable(twin, F)
    # the armor lifted for these objects, as a root shell can: then the damage
    damage = (
        f"chattr -i {F} 2>/dev/null; rm -f {F} && "
        f"git -C {APP} -c core.hooksPath=/dev/null update-ref -d refs/heads/{KEPT} && "
        f"cd / && {PSQL} -XAtq -d postgres -c 'DROP DATABASE {young}'"
    )
    try:
        got = _session_script(twin, tmp_path, _TRIP_SCRIPT, damage, str(tmp_path / "run"))
    finally:
        _root(twin, drop)
    assert got["damage"]["exit"] == 0, got["damage"]
    # the production paths the sandbox could not show: OIDs through `sudo -n -u postgres
    # psql`, origin's refs through ls-remote, the copies beside /var/lock's host lock
    armed = got["armed"]["objects"]
    assert any(o.startswith("database dealix (oid ") for o in armed), armed
    assert any(o.startswith(f"database {young} (oid ") for o in armed), armed
    assert f"origin ref refs/heads/{KEPT}" in armed and "origin ref refs/heads/main" in armed
    copies = got["armed"]["copies"]
    assert copies and copies.startswith("/var/lock/dealix-runbook-tripwire/"), copies
    assert (F in got["immutable"]) == was_immutable
    trip = got["tripped"]
    assert trip is not None, got
    assert trip["command"] == "true" and got["latched"] is True
    named = {v["object"]: v for v in trip["violations"]}
    assert named[f"file {F}"]["rule"] == "keep-protected-files", named
    assert any(KEPT in o for o in named), named
    assert named[f"database {young}"]["rule"] == "keep-corrupt-db-7-days", named
    assert f"file {F}" in trip["put_back"], trip
    # a dropped database is named, never guessed back
    assert [x for x in trip["not_put_back"] if "cannot be put back" in x and young in x], trip
    assert len(trip["not_put_back"]) == 1, trip
    record = json.loads((tmp_path / "run" / "record.json").read_text())
    assert record["outcome"] == "tripped" and record["tripwire"]["tripped"]["command"] == "true"
    # checked on the twin: the same bytes, the ref at its SHA, immutable again, the copy kept
    assert _state(twin) == before
    assert _immutable(twin, F) == was_immutable
    assert _root(twin, f"stat -c %a {copies}") == "700"
    assert _root(twin, "test -e /tmp/twin-safety-never || echo absent") == "absent"
