"""The safety model end to end against the sandbox: rules refuse and the server is
unchanged, dry-run tells the truth, confirmations fail closed headless, one
changing run per host, bad input fails before any command runs."""

from __future__ import annotations

import hashlib
import json
import os
import shlex
import shutil
import subprocess
import sys
from pathlib import Path

import nbformat
import pytest
from conftest import runbook_notebook

from runbook import Forbidden, NotConfirmed, ParameterError, open_session
from runbook.core.paths import project_root

ROOT = project_root()


def snapshot(sb) -> dict:
    """What a refused command must leave untouched: HEAD, files, databases, .env."""
    st = sb.state
    app = Path(st["app_dir"])
    head = subprocess.run(
        ["git", "-C", str(app), "rev-parse", "HEAD"], capture_output=True, text=True, check=True
    ).stdout.strip()
    branches = subprocess.run(
        ["git", "-C", str(app), "branch", "--list"], capture_output=True, text=True, check=True
    ).stdout
    dbs = sorted(r[0] for r in sb.query("SELECT datname FROM pg_database", dbname="postgres"))
    return {
        "head": head,
        "branches": branches,
        "files": sorted(p.name for p in app.iterdir()),
        "env_sha": hashlib.sha256((app / ".env").read_bytes()).hexdigest(),
        "databases": dbs,
        "wal": sorted(p.name for p in (Path(st["pgdata"]) / "pg_wal").iterdir()),
    }


@pytest.fixture
def session(sandbox, tmp_path):
    s = open_session("safety-test", env="sandbox", run_dir=tmp_path / "run")
    yield s
    s.close()


def _rules_and_commands(st: dict) -> list[tuple[str, list[str] | str]]:
    app = st["app_dir"]
    psql = st["psql"]
    return [
        ("no-push-to-main", ["git", "-C", app, "push", "origin", "HEAD:main"]),
        ("no-commit-on-server", ["git", "-C", app, "commit", "--allow-empty", "-m", "hotfix"]),
        ("keep-protected-files", ["rm", "-f", f"{app}/.env.pre-v3.0.0.bak"]),
        (
            "no-force-delete-branch",
            ["git", "-C", app, "branch", "-D", "server-backup-20260423-084442"],
        ),
        ("keep-corrupt-db-7-days", f"{psql} -c 'DROP DATABASE IF EXISTS dealix_corrupt_29991231'"),
        ("one-downgrade-step", f"cd {app} && .venv/bin/alembic downgrade -2"),
        (
            "no-restore-into-production-db",
            f"gunzip -c {st['backups_dir']}/$(ls {st['backups_dir']} | tail -1) | {psql} dealix",
        ),
        ("env-edit-only-llm-priority", f"sed -i 's/^ADMIN_KEY=.*/ADMIN_KEY=owned/' {app}/.env"),
        ("no-delete-active-wal", f"rm -f {st['pgdata']}/pg_wal/0000000100000000000000*"),
    ]


def test_each_rule_refuses_and_the_server_is_unchanged(sandbox, session) -> None:
    before = snapshot(sandbox)
    for rule, command in _rules_and_commands(sandbox.state):
        shell = isinstance(command, str)
        for call in (session.run, session.probe):
            with pytest.raises(Forbidden) as info:
                call(command, shell=shell)
            assert info.value.rule == rule, command
    assert snapshot(sandbox) == before
    refused = [
        json.loads(x)
        for x in (session.run_dir / "commands.jsonl").read_text().splitlines()
        if '"refused"' in x
    ]
    assert len(refused) == 2 * len(_rules_and_commands(sandbox.state))
    assert session.commands_run == 0


def test_library_env_edit_is_the_only_allowed_one(sandbox, session) -> None:
    app = Path(sandbox.state["app_dir"])
    env = app / ".env"
    before = env.read_text()
    mode = env.stat().st_mode
    with pytest.raises(Forbidden, match="env-edit-only-llm-priority"):
        session.edit_env_var("ADMIN_KEY", "x" * 20)
    with pytest.raises(Forbidden):
        session.write_file(str(env), b"ADMIN_KEY=owned\n")
    assert env.read_text() == before
    diff = session.edit_env_var("LLM_PROVIDER_PRIORITY", "openai,google,anthropic")
    try:
        after = env.read_text()
        assert 'LLM_PROVIDER_PRIORITY="openai,google,anthropic"' in after
        changed = [
            a for a, b in zip(before.splitlines(), after.splitlines(), strict=True) if a != b
        ]
        assert len(changed) == 1 and changed[0].startswith("LLM_PROVIDER_PRIORITY")
        assert env.stat().st_mode == mode
        assert Path(diff["backup"]).read_text() == before
    finally:
        env.write_text(before)
        Path(diff["backup"]).unlink()


def test_dry_run_changes_nothing_but_shows_the_real_state(sandbox, tmp_path) -> None:
    before = snapshot(sandbox)
    s = open_session("safety-test", env="sandbox", dry_run=True, run_dir=tmp_path / "run")
    app = sandbox.state["app_dir"]
    sha = s.probe(["git", "-C", app, "rev-parse", "HEAD"]).stdout.strip()
    assert sha == before["head"]
    s.run(["git", "-C", app, "checkout", "--detach", "HEAD~1"])
    s.services.restart("api")
    s.db.execute("CREATE DATABASE dealix_dry_run_should_not_exist")
    s.write_file(f"{app}/dry-run-file", b"x")
    pid_before = sandbox.pid("dealix-api")
    rec = s.record()
    s.close()
    assert snapshot(sandbox) == before
    assert sandbox.pid("dealix-api") == pid_before
    would = [c["what"] for c in rec["would_change"]]
    assert len(would) == 4 and rec["changes"] == []
    assert any("checkout --detach 'HEAD~1'" in w for w in would)
    assert any("restart dealix-api" in w for w in would)


@pytest.fixture
def rehearsal(sandbox, tmp_path, monkeypatch):
    """A non-sandbox environment (kind: staging) that points at the sandbox."""
    params = tmp_path / "parameters"
    shutil.copytree(ROOT / "parameters", params)
    text = (params / "sandbox.yaml").read_text()
    text = text.replace("name: sandbox", "name: rehearsal").replace(
        "kind: sandbox", "kind: staging"
    )
    (params / "rehearsal.yaml").write_text(text)
    monkeypatch.setenv("RUNBOOK_PARAMETERS_DIR", str(params))
    return "rehearsal"


def test_changes_off_the_sandbox_need_confirmation(sandbox, rehearsal, tmp_path) -> None:
    marker = tmp_path / "changed"
    s = open_session("safety-test", env=rehearsal, run_dir=tmp_path / "a", interactive=False)
    assert s.probe(["true"]).ok  # read-only calls need no confirmation
    with pytest.raises(NotConfirmed, match=f"-p confirm {rehearsal}"):
        s.run(["touch", str(marker)])
    assert not marker.exists()
    s.close()
    s = open_session(
        "safety-test",
        env=rehearsal,
        confirm="production",
        run_dir=tmp_path / "b",
        interactive=False,
    )
    with pytest.raises(NotConfirmed, match="never counts for another"):
        s.run(["touch", str(marker)])
    s.close()
    assert not marker.exists()
    s = open_session("safety-test", env=rehearsal, confirm=rehearsal, run_dir=tmp_path / "c")
    s.run(["touch", str(marker)])
    s.run(["rm", str(marker)])
    s.close()
    events = (tmp_path / "c" / "commands.jsonl").read_text()
    assert events.count('"kind": "confirmation"') == 1  # once per run


def _notebook(path: Path, body: str) -> Path:
    nb = runbook_notebook()
    nb.cells = [
        nbformat.v4.new_code_cell(
            'env = "sandbox"\nconfirm = None\nmarker = ""', metadata={"tags": ["parameters"]}
        ),
        nbformat.v4.new_code_cell(body),
    ]
    nbformat.write(nb, path)
    return path


def test_headless_without_confirm_fails_closed_with_the_flag(sandbox, rehearsal, tmp_path) -> None:
    marker = tmp_path / "changed"
    nb = _notebook(
        tmp_path / "change.ipynb",
        "from runbook import open_session\n"
        "s = open_session('change', env=env, confirm=confirm)\n"
        "s.run(['touch', marker])\ns.done()",
    )
    env = {**os.environ, "RUNBOOK_OUTPUTS": str(tmp_path / "outputs")}
    proc = subprocess.run(
        [
            sys.executable,
            "-m",
            "papermill",
            str(nb),
            str(tmp_path / "out.ipynb"),
            "-k",
            "dealix-runbook",
            "-p",
            "env",
            rehearsal,
            "-p",
            "marker",
            str(marker),
        ],
        capture_output=True,
        text=True,
        env=env,
        timeout=300,
    )
    assert proc.returncode != 0
    assert not marker.exists()
    out = (tmp_path / "out.ipynb").read_text()
    assert f"-p confirm {rehearsal}" in out
    record = json.loads(next((tmp_path / "outputs").rglob("record.json")).read_text())
    assert record["outcome"] == "refused" and record["commands_run"] == 0


def test_one_changing_run_per_host(sandbox, tmp_path) -> None:
    a = open_session("deploy", env="sandbox", run_dir=tmp_path / "a")
    b = open_session("rollback", env="sandbox", run_dir=tmp_path / "b")
    a.acquire_lock()
    try:
        with pytest.raises(Forbidden) as info:
            b.acquire_lock()
        assert info.value.rule == "one-changing-run-per-host"
        assert "deploy" in str(info.value) and "since" in str(info.value)
    finally:
        a.done()  # releases
    b.acquire_lock()
    assert b.record()["lock"]["held"]
    b.close()
    assert not Path(sandbox.state["log_dir"]).joinpath("../lock/dealix-runbook.lock").exists()


def test_stale_lock_is_broken_only_when_asked(sandbox, tmp_path) -> None:
    lock = Path(sandbox.state["log_dir"]).parent / "lock" / "dealix-runbook.lock"
    lock.mkdir(parents=True)
    (lock / "owner.json").write_text(
        json.dumps({"operator": "ghost", "scenario": "deploy", "started": "2026-01-01T00:00:00Z"})
    )
    (lock / "heartbeat").touch()
    os.utime(lock / "heartbeat", (1_700_000_000, 1_700_000_000))
    try:
        s = open_session("deploy", env="sandbox", run_dir=tmp_path / "a")
        with pytest.raises(Forbidden, match="break_stale_lock = True"):
            s.acquire_lock()
        s.close()
        s = open_session("deploy", env="sandbox", run_dir=tmp_path / "b", break_stale_lock=True)
        s.acquire_lock()
        rec = s.record()
        assert rec["lock"]["broken"]["previous_holder"]["operator"] == "ghost"
        s.close()
    finally:
        shutil.rmtree(lock, ignore_errors=True)


def _commands_in(run_dir: Path) -> list[dict]:
    """The commands a run executed, from its commands.jsonl (none if it has none)."""
    path = run_dir / "commands.jsonl"
    if not path.exists():
        return []
    events = [json.loads(x) for x in path.read_text().splitlines()]
    return [e for e in events if e.get("kind") == "command" and "exit_code" in e]


def _open_and_probe(run_dir: Path) -> ParameterError | None:
    """What the first cells of a notebook do: open the session, then a command."""
    try:
        s = open_session("x", env="sandbox", run_dir=run_dir)
    except ParameterError as exc:
        return exc
    try:
        s.probe(["true"])
    finally:
        s.close()
    return None


def test_bad_profile_fails_before_any_command(sandbox, tmp_path, monkeypatch) -> None:
    params = tmp_path / "parameters"
    shutil.copytree(ROOT / "parameters", params)
    monkeypatch.setenv("RUNBOOK_PARAMETERS_DIR", str(params))
    # the same steps with the good profile do run a command (and commands.jsonl shows it),
    # so the zero below is a result, not an empty folder
    assert _open_and_probe(tmp_path / "good") is None
    assert len(_commands_in(tmp_path / "good")) == 1
    (params / "sandbox.yaml").write_text(
        (params / "sandbox.yaml").read_text().replace("max_sessions: 10", "max_sesions: 10")
    )
    error = _open_and_probe(tmp_path / "run")
    assert isinstance(error, ParameterError)
    assert error.key == "target.max_sesions" and "sandbox.yaml" in str(error)
    assert _commands_in(tmp_path / "run") == []


def test_secrets_file_must_be_private(sandbox, tmp_path, monkeypatch) -> None:
    src = Path(sandbox.state["secrets_file"])
    loose = tmp_path / "secrets.env"
    loose.write_text(src.read_text())
    loose.chmod(0o644)
    params = tmp_path / "parameters"
    shutil.copytree(ROOT / "parameters", params)
    (params / "sandbox.yaml").write_text(
        (params / "sandbox.yaml")
        .read_text()
        .replace("file: ${sandbox.secrets_file}", f"file: {loose}")
    )
    monkeypatch.setenv("RUNBOOK_PARAMETERS_DIR", str(params))
    with pytest.raises(ParameterError, match="chmod 600"):
        open_session("x", env="sandbox", run_dir=tmp_path / "run")


def test_missing_secret_names_the_variable(session) -> None:
    with pytest.raises(ParameterError, match="RB_NOT_SET_ANYWHERE"):
        session.secrets.get("RB_NOT_SET_ANYWHERE")


def test_production_refuses_until_its_host_key_is_pinned(tmp_path) -> None:
    s = open_session("x", env="production", run_dir=tmp_path / "run")
    with pytest.raises(Exception, match="ssh-keyscan"):
        s.probe(["true"])
    assert s.commands_run == 0


# ---------------------------------------------------------------- audit of issue 4


def _lock_dir(sb) -> Path:
    return Path(sb.state["log_dir"]).parent / "lock" / "dealix-runbook.lock"


def test_wrapped_commands_are_refused_in_a_session(sandbox, session) -> None:
    """sudo=True and env= wrap a raw command in `sh -c '...'`: the rules still see it."""
    before = snapshot(sandbox)
    wraps = ({"sudo": True}, {"env": {"PGAPPNAME": "runbook"}}, {"sudo": True, "env": {"A": "1"}})
    for rule, command in _rules_and_commands(sandbox.state):
        text = command if isinstance(command, str) else shlex.join(command)
        for kw in wraps:
            with pytest.raises(Forbidden) as info:
                session.run(text, shell=True, **kw)
            assert info.value.rule == rule, (text, kw)
    assert snapshot(sandbox) == before
    assert session.commands_run == 0
    assert not _lock_dir(sandbox).exists()


def test_wrapped_commands_are_refused_in_a_production_dry_run(tmp_path) -> None:
    s = open_session("x", env="production", dry_run=True, run_dir=tmp_path / "run")
    for text, rule in (
        ("rm -f /opt/dealix/.env.pre-v3.0.0.bak", "keep-protected-files"),
        ("git push origin main", "no-push-to-main"),
        ("sed -i 's/^DEBUG=.*/DEBUG=1/' /opt/dealix/.env", "env-edit-only-llm-priority"),
        ("cd /opt/dealix && .venv/bin/alembic downgrade base", "one-downgrade-step"),
    ):
        for kw in ({"sudo": True}, {"env": {"X": "1"}}, {"sudo": "dealix", "cwd": "/tmp"}):
            with pytest.raises(Forbidden) as info:
                s.run(text, shell=True, **kw)
            assert info.value.rule == rule
    assert s.commands_run == 0 and s.record()["would_change"] == []


def test_raw_commands_on_ancestors_globs_and_wal_are_refused(sandbox, session) -> None:
    st = sandbox.state
    app, pgdata = st["app_dir"], st["pgdata"]
    empty = session.run_dir / "empty"
    empty.mkdir()
    before = snapshot(sandbox)
    for rule, text in (
        ("keep-protected-files", f"rm -rf {app}"),
        ("keep-protected-files", f"rm {app}/.env.pre*"),
        ("keep-protected-files", f"rsync -a --delete {empty}/ {app}/"),
        ("keep-protected-files", f"cd {app} && git clean -fdx"),
        ("keep-protected-files", f"git -C {app} clean -fdx"),
        ("no-delete-active-wal", f"rm -rf {pgdata}"),
        ("no-delete-active-wal", f"pg_archivecleanup {pgdata}/pg_wal 000000010000000000000009"),
        ("no-delete-active-wal", f"cd {pgdata} && rm -rf ./*"),
    ):
        with pytest.raises(Forbidden) as info:
            session.run(text, shell=True)
        assert info.value.rule == rule, text
    assert snapshot(sandbox) == before
    assert session.commands_run == 0


def test_a_second_run_is_refused_at_its_first_change(sandbox, tmp_path) -> None:
    marker = Path(sandbox.state["app_dir"]).parent / "fix4-second-run-marker"
    a = open_session("deploy", env="sandbox", run_dir=tmp_path / "a")
    b = open_session("rollback", env="sandbox", run_dir=tmp_path / "b")
    try:
        a.run(["true"])  # the session takes the lock by itself before its first change
        assert a.lock is not None and a.lock.held and _lock_dir(sandbox).exists()
        a.acquire_lock()  # explicit calls stay allowed and change nothing
        before = snapshot(sandbox)
        with pytest.raises(Forbidden) as info:
            b.run(["touch", str(marker)])
        assert info.value.rule == "one-changing-run-per-host"
        message = str(info.value)
        assert "running deploy" in message and "since" in message
        assert a.lock.owner["started"] in message and a.lock.owner["operator"] in message
        assert not marker.exists() and snapshot(sandbox) == before
        changed = [c for c in _commands_in(tmp_path / "b") if c["changing"]]
        assert changed == []  # only the read-only look at the lock ran
        assert b.record()["changes"] == []
        events = (tmp_path / "a" / "commands.jsonl").read_text()
        assert events.count('"event": "acquired"') == 1
    finally:
        a.done()  # releases
    assert not _lock_dir(sandbox).exists()
    try:
        b.run(["touch", str(marker)])  # now it may, and holds the lock itself
        assert b.lock is not None and b.lock.held
        assert marker.exists()
    finally:
        b.close()
        marker.unlink(missing_ok=True)
    assert not _lock_dir(sandbox).exists()


def test_dry_run_and_read_only_runs_take_no_lock(sandbox, tmp_path) -> None:
    s = open_session("deploy", env="sandbox", dry_run=True, run_dir=tmp_path / "a")
    s.run(["touch", "/tmp/never"])
    s.probe(["true"])
    assert s.lock is None and not _lock_dir(sandbox).exists()
    s.close()


@pytest.fixture
def sandbox_copy(sandbox, tmp_path, monkeypatch):
    """parameters/ copied (and RUNBOOK_PARAMETERS_DIR pointed at it) so a test can edit
    the sandbox profile."""
    params = tmp_path / "parameters"
    shutil.copytree(ROOT / "parameters", params)
    monkeypatch.setenv("RUNBOOK_PARAMETERS_DIR", str(params))
    return params / "sandbox.yaml"


def test_a_missing_secret_refuses_before_the_first_change(
    sandbox, sandbox_copy, tmp_path, monkeypatch
) -> None:
    var = "RB_FIX4_SENTRY_TOKEN_UNSET"
    monkeypatch.delenv(var, raising=False)
    sandbox_copy.write_text(
        sandbox_copy.read_text().replace(
            "file: ${sandbox.secrets_file}",
            f"file: ${{sandbox.secrets_file}}\n  sentry_token: {var}",
        )
    )
    marker = Path(sandbox.state["app_dir"]).parent / "fix4-secret-marker"
    for dry_run in (False, True):
        run_dir = tmp_path / f"run-{dry_run}"
        s = open_session(
            "deploy",
            env="sandbox",
            dry_run=dry_run,
            run_dir=run_dir,
            require_secrets=["sentry_token", "admin_key"],
        )
        s.probe(["true"])  # read-only calls are not held back
        with pytest.raises(ParameterError) as info:
            s.run(["touch", str(marker)])
        assert info.value.key == var
        assert var in str(info.value) and sandbox.state["secrets_file"] in str(info.value)
        assert not marker.exists() and not _lock_dir(sandbox).exists()
        assert [c for c in _commands_in(run_dir) if c["changing"]] == []
        assert s.record()["would_change"] == [] and s.record()["changes"] == []
        s.close()
    monkeypatch.setenv(var, "sentry-token-fix4-0123456789")
    s = open_session(
        "deploy", env="sandbox", run_dir=tmp_path / "ok", require_secrets=["sentry_token"]
    )
    try:
        s.run(["touch", str(marker)])
        assert marker.exists()
    finally:
        s.close()
        marker.unlink(missing_ok=True)


def test_parameters_holding_an_environment_secret_are_refused(
    sandbox, sandbox_copy, tmp_path, monkeypatch
) -> None:
    var, value = "RB_FIX4_OPENAI_KEY", "sk-fix4-env-only-0123456789"
    sandbox_copy.write_text(
        sandbox_copy.read_text().replace(
            "file: ${sandbox.secrets_file}", f"file: ${{sandbox.secrets_file}}\n  openai_key: {var}"
        )
    )
    monkeypatch.setenv(var, value)
    for params, key in (
        ({"note": value}, "note"),
        ({"known_addresses": ["203.0.113.7", value]}, "known_addresses[1]"),
        ({"headers": {"Authorization": f"Bearer {value}"}}, "headers['Authorization']"),
    ):
        with pytest.raises(ParameterError) as info:
            open_session("x", env="sandbox", run_dir=tmp_path / "r", parameters=params)
        assert info.value.key == key and value not in str(info.value)
    # a secret from the file inside a list is refused too
    from runbook.core.secrets import read_env_file

    admin = read_env_file(Path(sandbox.state["secrets_file"]))["DEALIX_ADMIN_KEY"]
    with pytest.raises(ParameterError):
        open_session("x", env="sandbox", run_dir=tmp_path / "r", parameters={"l": [[admin]]})
    open_session("x", env="sandbox", run_dir=tmp_path / "ok", parameters={"l": ["a", 1]}).close()


def test_two_downgrades_in_one_run_need_an_approver(sandbox, tmp_path) -> None:
    s = open_session("rollback", env="sandbox", dry_run=True, run_dir=tmp_path / "a")
    assert s.alembic.downgrade(1).dry_run
    with pytest.raises(Forbidden) as info:
        s.alembic.downgrade(1)
    assert info.value.rule == "one-downgrade-step"
    with pytest.raises(Forbidden):
        s.run(f"cd {sandbox.state['app_dir']} && .venv/bin/alembic downgrade -1", shell=True)
    assert len(s.record()["would_change"]) == 1
    s.close()
    s = open_session(
        "rollback", env="sandbox", dry_run=True, approved_by="Sami Assiri", run_dir=tmp_path / "b"
    )
    s.alembic.downgrade(1)
    s.alembic.downgrade(1)
    assert len(s.record()["would_change"]) == 2 and s.guards.downgrade_steps == 2
    s.close()


def test_llm_priority_edit_refuses_a_value_that_writes_other_lines(sandbox, session) -> None:
    app = Path(sandbox.state["app_dir"])
    env = app / ".env"
    before = snapshot(sandbox)
    backups = sorted(app.glob(".env.bak.*"))
    for bad in ('openai"\nADMIN_KEY="owned', "openai,google\nDEBUG=1", 'openai" # x'):
        with pytest.raises(Forbidden, match="env-edit-only-llm-priority"):
            session.edit_env_var("LLM_PROVIDER_PRIORITY", bad)
    with pytest.raises(ParameterError, match="opneai"):
        session.edit_env_var("LLM_PROVIDER_PRIORITY", "opneai,google")
    assert snapshot(sandbox) == before
    assert sorted(app.glob(".env.bak.*")) == backups  # refused before the backup
    assert "owned" not in env.read_text()


def test_changing_http_by_default_for_methods_that_write(sandbox, tmp_path) -> None:
    from runbook.ops.http import HttpClient

    s = open_session("x", env="sandbox", dry_run=True, run_dir=tmp_path / "run")
    client = HttpClient(s, "dealix-api", s.profile.api.base_url, verify=False)
    try:
        assert client.post("/health", accept=tuple(range(100, 600))).dry_run  # skipped
        assert client.request("DELETE", "/health", accept=tuple(range(100, 600))).dry_run
        read = client.post("/health", accept=tuple(range(100, 600)), changing=False)
        assert not read.dry_run and read.status is not None  # declared read-only: sent
        assert client.get("/health").status == 200
    finally:
        client.close()
        s.close()
    would = [c["what"] for c in s.record()["would_change"]]
    assert len(would) == 2 and would[0].startswith("HTTP POST") and "DELETE" in would[1]


def test_incident_procedure_belongs_to_its_scenario(tmp_path) -> None:
    with pytest.raises(ParameterError) as info:
        open_session(
            "deploy", env="production", procedure="restore_incident", run_dir=tmp_path / "a"
        )
    assert info.value.key == "procedure"
    with pytest.raises(ParameterError):
        open_session(
            "restore_incident", env="production", procedure="anything", run_dir=tmp_path / "b"
        )
    s = open_session(
        "restore_incident", env="production", procedure="restore_incident", run_dir=tmp_path / "c"
    )
    assert s.guards.procedure == "restore_incident"
    s.close()
