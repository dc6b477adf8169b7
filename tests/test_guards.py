"""Each runbook rule refuses what it must and lets ordinary work through (no sandbox needed).

The end-to-end versions (server unchanged afterwards) are in test_safety.py.
"""

from __future__ import annotations

from datetime import date

import pytest

from runbook.core.profile import load_profile
from runbook.errors import Forbidden
from runbook.safety.guards import RULES, Guards

PROD = load_profile("production")
TODAY = date(2026, 11, 27)


def guards(**kw) -> Guards:
    return Guards(PROD, today=TODAY, **kw)


REFUSED = [
    ("no-push-to-main", "git push origin main"),
    ("no-push-to-main", "cd /opt/dealix && git push origin HEAD:main"),
    ("no-push-to-main", "git -C /opt/dealix push --force origin +main"),
    ("no-push-to-main", "git push"),
    ("no-commit-on-server", "git commit -am 'hotfix'"),
    ("no-commit-on-server", "sudo -n -- git -C /opt/dealix commit -m x"),
    ("keep-protected-files", "rm -f /opt/dealix/.env.pre-v3.0.0.bak"),
    ("keep-protected-files", "cd /opt/dealix; rm .env.pre-v3.0.0.bak"),
    ("keep-protected-files", "mv /opt/dealix/.env.pre-v3.0.0.bak /tmp/"),
    ("keep-protected-files", "echo > /opt/dealix/.env.pre-v3.0.0.bak"),
    ("keep-protected-files", "truncate -s0 /opt/dealix/.env.pre-v3.0.0.bak"),
    ("keep-protected-files", "find /opt/dealix -name '.env.pre-v3.0.0.bak' -delete"),
    ("no-force-delete-branch", "git branch -D server-backup-20260423-084442"),
    ("no-force-delete-branch", "git branch --delete --force server-backup-20260423-084442"),
    ("no-force-delete-branch", "git push origin --delete server-backup-20260423-084442"),
    ("no-force-delete-branch", "git push origin :server-backup-20260423-084442"),
    (
        "keep-corrupt-db-7-days",
        "sudo -n -u postgres psql -c 'DROP DATABASE dealix_corrupt_20261125;'",
    ),
    ("keep-corrupt-db-7-days", "dropdb dealix_corrupt_20261121"),
    ("keep-corrupt-db-7-days", "psql -c 'drop database if exists dealix_corrupt_unknown'"),
    ("one-downgrade-step", "/opt/dealix/.venv/bin/alembic downgrade -2"),
    ("one-downgrade-step", "alembic downgrade base"),
    ("one-downgrade-step", "cd /opt/dealix && .venv/bin/python -m alembic downgrade 0001"),
    (
        "no-restore-into-production-db",
        "gunzip -c /var/backups/postgres/dealix-2026-11-26.sql.gz | sudo -u postgres psql dealix",
    ),
    ("no-restore-into-production-db", "pg_restore -j2 -d dealix /var/backups/postgres/x.dump"),
    ("no-restore-into-production-db", "psql -c 'DROP DATABASE dealix'"),
    ("no-restore-into-production-db", "psql -c 'ALTER DATABASE dealix RENAME TO dealix_old'"),
    ("env-edit-only-llm-priority", "sed -i 's/ADMIN_KEY=.*/ADMIN_KEY=x/' /opt/dealix/.env"),
    ("env-edit-only-llm-priority", "echo 'DEBUG=1' >> /opt/dealix/.env"),
    ("env-edit-only-llm-priority", "cd /opt/dealix && echo X=1 | tee -a .env"),
    ("env-edit-only-llm-priority", "cp /tmp/new.env /opt/dealix/.env"),
    ("env-edit-only-llm-priority", "rm /opt/dealix/.env"),
    ("no-delete-active-wal", "rm -rf /var/lib/postgresql/15/main/pg_wal/0000000100000000000000A1"),
    ("no-delete-active-wal", "find /var/lib/postgresql/15/main/pg_wal -mtime +1 -delete"),
    ("opaque-command", 'rm -f "$(cat /tmp/list)"'),
    ("keep-armor", "chattr -i /opt/dealix/.env.pre-v3.0.0.bak"),
    ("keep-armor", "cd /opt/dealix && sudo -n chattr -f -i .env.pre-v3.0.0.bak"),
    ("keep-armor", "chattr -R -i /opt"),
    ("keep-armor", "chattr = /opt/dealix/.env.pre-v3.0.0.bak"),
    ("keep-armor", "chattr -i /var/backups/postgres/evidence/dealix_corrupt_20261207-x.dump"),
]

# Item: wrappers never hide a command. `s.run(cmd, shell=True, sudo=True)` becomes
# `sudo -n -- sh -c '<cmd>'` and env= becomes `env 'K=V' sh -c '<cmd>'` (runbook.core.command.build_command).
WRAPPED = [
    ("keep-protected-files", "sudo -n -- sh -c 'rm -f /opt/dealix/.env.pre-v3.0.0.bak'"),
    ("no-push-to-main", "sudo -n -- sh -c 'git push origin main'"),
    ("env-edit-only-llm-priority", "sudo -n -- sh -c \"sed -i 's/x/y/' /opt/dealix/.env\""),
    ("one-downgrade-step", "sudo -n -- sh -c 'cd /opt/dealix && .venv/bin/alembic downgrade base'"),
    ("keep-protected-files", "env 'A=1' sh -c 'rm -f /opt/dealix/.env.pre-v3.0.0.bak'"),
    ("no-push-to-main", "env -i PATH=/usr/bin bash -c 'git push origin main'"),
    ("no-push-to-main", "sudo -u app -- bash -lc 'cd /opt/dealix && git push origin main'"),
    ("no-push-to-main", "sudo -nu app bash -ec 'git push origin main'"),
    ("no-push-to-main", "dash -c 'git push origin main'"),
    ("no-push-to-main", "zsh -c 'git push origin main'"),
    ("keep-protected-files", "nice -n 10 rm -f /opt/dealix/.env.pre-v3.0.0.bak"),
    ("keep-protected-files", "nice -5 sh -c 'rm -f /opt/dealix/.env.pre-v3.0.0.bak'"),
    ("keep-protected-files", "timeout 30 sh -c 'rm -f /opt/dealix/.env.pre-v3.0.0.bak'"),
    ("keep-protected-files", "timeout -s KILL 30s rm /opt/dealix/.env.pre-v3.0.0.bak"),
    ("no-push-to-main", "nohup sh -c 'git push origin main' >/dev/null 2>&1 &"),
    ("no-restore-into-production-db", "su - postgres -c 'dropdb dealix'"),
    ("no-push-to-main", "runuser -u app -- git push origin main"),
    ("no-push-to-main", "eval 'git push origin main'"),
    ("keep-protected-files", "echo $(rm -f /opt/dealix/.env.pre-v3.0.0.bak)"),
    ("no-push-to-main", 'echo "`git push origin main`"'),
    ("no-push-to-main", "env -S 'git push origin main'"),
    ("no-push-to-main", "sh -c \"sh -c 'git push origin main'\""),
    ("no-push-to-main", "xargs -0 sh -c 'git push origin main'"),
    ("no-push-to-main", "flock /tmp/l -c 'git push origin main'"),
    ("no-push-to-main", "if true; then git push origin main; fi"),
    ("keep-protected-files", "cd /opt/dealix\ngit clean -fdx"),
]

# Item: do-not-touch and WAL paths are protected from their ancestors and from globs.
PATHS = [
    ("keep-protected-files", "rm -rf /opt/dealix"),
    ("keep-protected-files", "rm /opt/dealix/.env.pre*"),
    ("keep-protected-files", "rsync -a --delete /tmp/empty/ /opt/dealix/"),
    ("keep-protected-files", "cd /opt/dealix && git clean -fdx"),
    ("keep-protected-files", "git -C /opt/dealix clean -ffdx"),
    ("keep-protected-files", "rm -rf /opt/*"),
    ("keep-protected-files", "rm -rf /"),
    ("keep-protected-files", "mv /opt/dealix /opt/dealix.old"),
    ("keep-protected-files", "cd /opt && rm -rf dealix"),
    ("keep-protected-files", "cd /opt/dealix && rm -rf ./*"),
    ("keep-protected-files", "find /opt/dealix -name '*.bak' -delete"),
    ("keep-protected-files", "rm /opt/dealix/{.env.pre-v3.0.0.bak,x}"),
    ("no-delete-active-wal", "rm -rf /var/lib/postgresql"),
    ("no-delete-active-wal", "rm -rf /var/lib/postgresql/15/main"),
    ("no-delete-active-wal", "rm -rf /var/lib/postgresql/*"),
    ("no-delete-active-wal", "cd /var/lib/postgresql/15 && rm -rf main"),
    (
        "no-delete-active-wal",
        "pg_archivecleanup /var/lib/postgresql/15/main/pg_wal 000000010000000000000010",
    ),
    (
        "no-delete-active-wal",
        "pg_archivecleanup -d /var/lib/postgresql/15/main 000000010000000000000010",
    ),
    ("no-delete-active-wal", "find /var/lib/postgresql -name '0000*' -delete"),
    (
        "no-delete-active-wal",
        "sudo -n -u postgres -- sh -c 'rm -rf /var/lib/postgresql/15/main/pg_wal/*'",
    ),
]

ALLOWED = [
    "chattr +i /opt/dealix/.env.pre-v3.0.0.bak",
    "lsattr -d /opt/dealix/.env.pre-v3.0.0.bak",
    "chattr -i /tmp/scratch.txt",
    "git fetch origin",
    "git checkout main",
    "git pull --ff-only origin main",
    "git push origin feature/fix-123",
    "git branch -d some-old-branch",
    "git rev-parse HEAD",
    "cp /opt/dealix/.env /opt/dealix/.env.bak.20261127T010203Z",
    "cat /opt/dealix/.env.pre-v3.0.0.bak",
    "cp /opt/dealix/.env.pre-v3.0.0.bak /tmp/reference",
    "/opt/dealix/.venv/bin/alembic upgrade head",
    "/opt/dealix/.venv/bin/alembic downgrade -1",
    "gunzip -c /var/backups/postgres/dealix-2026-11-26.sql.gz | sudo -n -u postgres psql dealix_restore_test",
    "sudo -n -u postgres psql -c 'DROP DATABASE dealix_restore_test'",
    "sudo -n -u postgres psql -c 'DROP DATABASE dealix_corrupt_20261101'",
    "sudo -n -u postgres psql dealix -c 'SELECT count(*) FROM leads'",
    "du -sh /var/lib/postgresql/* /var/backups/postgres/* | sort -h",
    "rm -f /var/backups/postgres/dealix-2026-10-01.sql.gz",
    "ls -l /var/lib/postgresql/15/main/pg_wal",
    # wrapped ordinary work, and neighbours of protected paths
    "sudo -n -- sh -c 'git fetch origin && git status'",
    "sudo -n -- env 'X=1' sh -c 'echo ok > /tmp/out'",
    "bash -lc 'cd /opt/dealix && .venv/bin/alembic downgrade -1'",
    "nice -n 10 tar -czf /root/incident-1.tgz /var/log/nginx /var/log/auth.log",
    "setsid sh -c 'sleep 300; iptables-restore < /root/fw.before' </dev/null >/dev/null 2>&1 & echo $!",
    "cp -p /opt/dealix/.env /opt/dealix/.env.bak.20261127T010203Z",
    "rm -rf /opt/dealix/__pycache__",
    "find /opt/dealix -name '*.pyc' -delete",
    "cd /opt/dealix && git clean -n -d",
    "git -C /tmp/build clean -fdx",
    "rsync -a --delete /tmp/site/ /var/www/dealix/landing/",
    "rm -rf /var/lib/postgresql/wal_archive/old",
    "pg_archivecleanup /var/lib/postgresql/wal_archive 000000010000000000000010",
    "find /var/backups/postgres -name 'dealix-*.sql.gz' -mtime +30 -delete",
    "rm -f -- /var/backups/postgres/dealix-2026-10-01.sql.gz /var/backups/postgres/dealix-2026-10-02.sql.gz",
]


@pytest.mark.parametrize(("rule", "command"), REFUSED)
def test_rule_refuses(rule: str, command: str) -> None:
    with pytest.raises(Forbidden) as info:
        guards().check_command(command)
    assert info.value.rule == rule
    assert RULES[rule].source in str(info.value)


@pytest.mark.parametrize(("rule", "command"), WRAPPED)
def test_wrapped_commands_are_checked_inside(rule: str, command: str) -> None:
    with pytest.raises(Forbidden) as info:
        guards().check_command(command)
    assert info.value.rule == rule


@pytest.mark.parametrize(("rule", "command"), PATHS)
def test_ancestors_and_globs_of_protected_paths_are_refused(rule: str, command: str) -> None:
    with pytest.raises(Forbidden) as info:
        guards().check_command(command)
    assert info.value.rule == rule


@pytest.mark.parametrize(
    ("rule", "inner"),
    [
        ("keep-protected-files", "rm -f /opt/dealix/.env.pre-v3.0.0.bak"),
        ("no-push-to-main", "git push origin main"),
        ("env-edit-only-llm-priority", "sed -i 's/^A=.*/A=2/' /opt/dealix/.env"),
        ("one-downgrade-step", "/opt/dealix/.venv/bin/alembic downgrade base"),
    ],
)
@pytest.mark.parametrize(
    "wrap",
    [
        {"sudo": True},
        {"sudo": "postgres"},
        {"env": {"PGOPTIONS": "-c x=1"}},
        {"env": {"A": "1"}, "sudo": True, "cwd": "/opt/dealix"},
    ],
)
def test_what_build_command_wraps_is_still_refused(rule: str, inner: str, wrap: dict) -> None:
    from runbook.core.command import build_command

    text = build_command(inner, shell=True, **wrap)
    assert text != inner  # really wrapped
    with pytest.raises(Forbidden) as info:
        guards().check_command(text)
    assert info.value.rule == rule


def test_a_shell_reading_its_script_from_stdin_is_checked() -> None:
    with pytest.raises(Forbidden, match="no-push-to-main"):
        guards().check_command(
            "sudo -n -- bash -s", stdin=b"cd /opt/dealix\ngit push origin main\n"
        )
    with pytest.raises(Forbidden, match="no-restore-into-production-db"):
        guards().check_command("sudo -n -u postgres psql", stdin=b"DROP DATABASE dealix;")
    guards().check_command("bash -s", stdin=b"git status\n")


def test_downgrades_are_counted_across_the_run() -> None:
    g = guards()
    g.check_command("/opt/dealix/.venv/bin/alembic downgrade -1")
    assert g.downgrade_steps == 1
    with pytest.raises(Forbidden, match="one-downgrade-step") as info:
        g.check_command("/opt/dealix/.venv/bin/alembic downgrade -1")
    assert "already downgraded" in str(info.value)
    with pytest.raises(Forbidden, match="one-downgrade-step"):
        g.check_downgrade(1, "alembic downgrade -1")  # what appops/deploy ask before running
    assert g.downgrade_steps == 1  # refused commands are not counted
    with pytest.raises(Forbidden, match="one-downgrade-step"):
        guards().check_command("alembic downgrade -1 && alembic downgrade -1")
    with pytest.raises(Forbidden, match="one-downgrade-step"):
        guards().check_command("sudo -n -- sh -c 'alembic downgrade -1; alembic downgrade -1'")
    # a refused command (another rule) does not count its downgrade either
    g2 = guards()
    with pytest.raises(Forbidden, match="no-push-to-main"):
        g2.check_command("alembic downgrade -1 && git push origin main")
    assert g2.downgrade_steps == 0
    g2.check_command("alembic downgrade -1")
    # a named approver lifts the limit, and the steps are still counted
    g3 = guards(approved_by="Sami Assiri")
    g3.check_command("alembic downgrade -1 && alembic downgrade -1")
    g3.check_command("alembic downgrade -1")
    assert g3.downgrade_steps == 3


def test_llm_priority_value_is_a_list_of_known_providers() -> None:
    from runbook.errors import ParameterError
    from runbook.safety.guards import check_provider_priority

    check_provider_priority("openai,google,anthropic", PROD)
    check_provider_priority("google", PROD)
    for bad in (
        'openai"\nADMIN_KEY="owned',
        "openai,google\nX=1",
        "openai, google",
        'openai"',
        "openai;reboot",
        "",
        "OpenAI",
    ):
        with pytest.raises(Forbidden, match="env-edit-only-llm-priority"):
            check_provider_priority(bad, PROD)
    with pytest.raises(ParameterError, match="opneai"):
        check_provider_priority("opneai,google", PROD)
    with pytest.raises(ParameterError, match="twice"):
        check_provider_priority("openai,openai", PROD)
    # a provider the server already lists is known
    check_provider_priority("mistral,openai", PROD, current='"openai,mistral"')


@pytest.mark.parametrize("command", ALLOWED)
def test_ordinary_work_is_allowed(command: str) -> None:
    guards().check_command(command)


def test_every_rule_has_a_refusal_test() -> None:
    assert {r for r, _ in REFUSED} == set(RULES) - {"one-changing-run-per-host"}


def test_downgrade_of_two_steps_needs_a_named_approver() -> None:
    guards(approved_by="Sami Assiri").check_command("alembic downgrade -2")
    guards(approved_by="Sami Assiri").check_downgrade(3, "alembic downgrade -3")


def test_incident_restore_may_replace_the_production_database() -> None:
    g = guards(procedure="restore_incident")
    g.check_command("psql -c 'ALTER DATABASE dealix RENAME TO dealix_corrupt_20261127'")
    g.check_command("gunzip -c /var/backups/postgres/dealix-2026-11-26.sql.gz | psql dealix")
    with pytest.raises(Forbidden):  # the 7-day rule still holds inside the procedure
        g.check_command("dropdb dealix_corrupt_20261126")


def test_incident_restore_may_rename_the_damaged_database_back_but_never_drops_production() -> None:
    g = guards(procedure="restore_incident")
    young = f"dealix_corrupt_{TODAY:%Y%m%d}"
    # the swap's undo: the damaged database goes back under the production name, whole
    g.check_command(f"psql -c 'ALTER DATABASE {young} RENAME TO dealix'")
    with pytest.raises(Forbidden) as info:  # away from production it is the first half of a drop
        g.check_command(f"psql -c 'ALTER DATABASE {young} RENAME TO dealix_elsewhere'")
    assert info.value.rule == "keep-corrupt-db-7-days"
    for drop in ("psql -c 'DROP DATABASE dealix'", "dropdb dealix", "dropdb --force dealix"):
        with pytest.raises(Forbidden) as info:  # renamed, never dropped: scenario 5 step 2
            g.check_command(drop)
        assert info.value.rule == "no-restore-into-production-db"
        assert "never dropped" in str(info.value)
    # outside the incident restore nothing is renamed onto production
    with pytest.raises(Forbidden) as info:
        guards(procedure="restore_drill").check_command(
            "psql -c 'ALTER DATABASE dealix_restore_test RENAME TO dealix'"
        )
    assert info.value.rule == "no-restore-into-production-db"
