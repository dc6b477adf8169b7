"""Issue 19's forms through a real session on the sandbox: each class refused, the
protected objects unchanged on the real server, and the five harmless commands run.

The guard alone is tested form by form in test_guard_forms.py; here a
representative form of each class goes through `s.run` and `s.probe` (a probe
is a promise, not a proof), and the server is read afterwards: the protected
file by hash, the production database by OID, the kept branch and main by SHA
(in the app and on the origin), the alembic revision and the .env by hash.
"""

from __future__ import annotations

import base64
import hashlib
import subprocess
import uuid
from pathlib import Path

import pytest

from runbook import Forbidden, open_session


@pytest.fixture
def session(sandbox, tmp_path):
    s = open_session("guard-forms", env="sandbox", run_dir=tmp_path / "run")
    yield s
    s.close()


def _git(repo: str, *args: str) -> str:
    return subprocess.run(
        ["git", "-C", repo, *args], capture_output=True, text=True, check=True
    ).stdout.strip()


def protected_state(sb) -> dict:
    st = sb.state
    app = st["app_dir"]
    kept = st["backup_branch"]
    return {
        "file_sha": hashlib.sha256(Path(app, ".env.pre-v3.0.0.bak").read_bytes()).hexdigest(),
        "env_sha": hashlib.sha256(Path(app, ".env").read_bytes()).hexdigest(),
        "db_oid": sb.query(
            "SELECT oid FROM pg_database WHERE datname = 'dealix'", dbname="postgres"
        ),
        "kept": _git(app, "rev-parse", f"refs/heads/{kept}"),
        "main": _git(app, "rev-parse", "refs/heads/main"),
        "origin_main": _git(st["origin_dir"], "rev-parse", "refs/heads/main"),
        "alembic": sb.query("SELECT version_num FROM alembic_version"),
    }


def forms(st: dict) -> list[tuple[str, str, str]]:
    app = st["app_dir"]
    f = f"{app}/.env.pre-v3.0.0.bak"
    kept = st["backup_branch"]
    psql = st["psql"]
    dropdb = psql.replace("/psql ", "/dropdb ")
    payload = base64.b64encode(f"rm -f {f}".encode()).decode()
    return [
        ("variables", "keep-protected-files", f'X={f}; rm -f "$X"'),
        ("variables", "no-restore-into-production-db", f'DB=dealix; {dropdb} --force "$DB"'),
        ("variables", "opaque-command", 'rm -f "$TARGET_FILE"'),
        (
            "loops",
            "one-downgrade-step",
            f"cd {app} && for i in 1 2; do .venv/bin/alembic downgrade -1; done",
        ),
        ("loops", "opaque-command", f"ls {app}/.env.pre* | xargs rm -f"),
        ("interpreters", "opaque-command", f"python3 -c \"import os; os.remove('{f}')\""),
        ("interpreters", "opaque-command", f"echo {payload} | base64 -d | sh"),
        (
            "editors",
            "env-edit-only-llm-priority",
            f"sed -ri 's/^ADMIN_KEY=.*/ADMIN_KEY=x/' {app}/.env",
        ),
        (
            "editors",
            "env-edit-only-llm-priority",
            f"perl -pi -e 's/^ADMIN_KEY=.*/ADMIN_KEY=x/' {app}/.env",
        ),
        ("git", "no-force-delete-branch", f"git -C {app} update-ref -d refs/heads/{kept}"),
        ("git", "no-force-delete-branch", f"git -C {app} branch -m {kept} moved"),
        ("git", "no-push-to-main", f"cd {app} && git push -u origin HEAD"),
        ("git", "no-commit-on-server", f"git -C {app} -c alias.ci=commit ci --allow-empty -m x"),
        ("sql", "no-restore-into-production-db", f"{psql} -c 'DROP/**/DATABASE dealix'"),
        ("sql", "no-restore-into-production-db", f"{psql} -d dealix -c '\\i /tmp/guard-dump.sql'"),
        (
            "sql",
            "no-restore-into-production-db",
            f"gunzip -c {st['backups_dir']}/x.sql.gz | PGDATABASE=dealix {psql}",
        ),
    ]


def test_each_class_is_refused_and_nothing_changes_on_the_server(sandbox, session) -> None:
    Path("/tmp/guard-dump.sql").write_text("CREATE TABLE guard_probe (id int);\n")
    before = protected_state(sandbox)
    stopped = 0
    for klass, rule, text in forms(sandbox.state):
        for call in (session.run, session.probe):
            with pytest.raises(Forbidden) as info:
                call(text, shell=True)
            assert info.value.rule == rule, (klass, text, str(info.value))
            stopped += 1
    assert stopped == 2 * len(forms(sandbox.state))
    # the library's own SQL call, with a psql meta-command in it
    with pytest.raises(Forbidden) as info:
        session.db.execute("\\i /tmp/guard-dump.sql")
    assert info.value.rule == "no-restore-into-production-db"
    assert protected_state(sandbox) == before
    # the guard's own questions (the branch HEAD is on) are the only commands that ran
    assert session.commands_run <= 2 * len(forms(sandbox.state))
    assert not sandbox.query("SELECT 1 FROM pg_tables WHERE tablename = 'guard_probe'")


def test_the_five_harmless_commands_run(sandbox, session) -> None:
    st = sandbox.state
    app, psql = st["app_dir"], st["psql"]
    f = f"{app}/.env.pre-v3.0.0.bak"
    before = protected_state(sandbox)
    tag = uuid.uuid4().hex[:8]
    # 1. a copy of the protected file, elsewhere and beside it
    session.run(["cp", f, f"/tmp/guard-copy-{tag}"])
    session.run(["cp", f, f"{f}.copy-{tag}"])
    # 2. the library's own backup of it
    backup = session.backup_file(f)
    # 3. a dry-run push to main
    session.run(f"cd {app} && git push --dry-run origin HEAD:main", shell=True)
    # 4. a SELECT-only file into the production database
    queries = f"/tmp/guard-queries-{tag}.sql"
    Path(queries).write_text("-- report\nSELECT count(*) FROM leads;\nSELECT 1;\n")
    r = session.run(f"{psql} -X -d dealix -f {queries}", shell=True)
    assert r.ok and "count" in r.stdout
    # 5. a downgrade by revision id that is one step (the current revision's parent)
    current = before["alembic"][0][0]
    parent = {"0002": "0001"}[current]
    try:
        session.run(f"cd {app} && .venv/bin/alembic downgrade {parent}", shell=True)
        assert sandbox.query("SELECT version_num FROM alembic_version") == [(parent,)]
        assert session.guards.downgrade_steps == 1
    finally:
        subprocess.run(
            ["sh", "-c", f"cd {app} && .venv/bin/alembic upgrade head"],
            check=True,
            capture_output=True,
        )
    for p in (f"/tmp/guard-copy-{tag}", f"{f}.copy-{tag}", backup, queries):
        assert Path(p).exists()
        Path(p).unlink()
    assert protected_state(sandbox) == before


def test_a_restore_split_over_two_calls_is_refused_at_the_second(sandbox, session) -> None:
    """The first call only writes a file; the guard reads that file on the server when
    the second feeds it to psql, and sees a restore into the production database."""
    st = sandbox.state
    dump = f"/tmp/guard-split-{uuid.uuid4().hex[:8]}.sql"
    newest = sorted(Path(st["backups_dir"]).glob("dealix-*.sql.gz"))[-1]
    before = protected_state(sandbox)
    session.run(f"gunzip -c {newest} | head -c 4000000 > {dump}", shell=True)
    try:
        for text in (f"{st['psql']} dealix < {dump}", f"{st['psql']} -d dealix -f {dump}"):
            with pytest.raises(Forbidden) as info:
                session.run(text, shell=True)
            assert info.value.rule == "no-restore-into-production-db", str(info.value)
        assert protected_state(sandbox) == before
    finally:
        Path(dump).unlink()
