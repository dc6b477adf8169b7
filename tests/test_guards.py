"""Each runbook rule refuses what it must and lets ordinary work through (no sandbox needed).

The end-to-end versions (server unchanged afterwards) are in test_safety.py.
"""

from __future__ import annotations

from datetime import date

import pytest

from runbook.errors import Forbidden
from runbook.guards import RULES, Guards
from runbook.profile import load_profile

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
    ("keep-corrupt-db-7-days", "sudo -n -u postgres psql -c 'DROP DATABASE dealix_corrupt_20261125;'"),
    ("keep-corrupt-db-7-days", "dropdb dealix_corrupt_20261121"),
    ("keep-corrupt-db-7-days", "psql -c 'drop database if exists dealix_corrupt_unknown'"),
    ("one-downgrade-step", "/opt/dealix/.venv/bin/alembic downgrade -2"),
    ("one-downgrade-step", "alembic downgrade base"),
    ("one-downgrade-step", "cd /opt/dealix && .venv/bin/python -m alembic downgrade 0001"),
    ("no-restore-into-production-db", "gunzip -c /var/backups/postgres/dealix-2026-11-26.sql.gz | sudo -u postgres psql dealix"),
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
]

ALLOWED = [
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
]


@pytest.mark.parametrize(("rule", "command"), REFUSED)
def test_rule_refuses(rule: str, command: str) -> None:
    with pytest.raises(Forbidden) as info:
        guards().check_command(command)
    assert info.value.rule == rule
    assert RULES[rule].source in str(info.value)


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
