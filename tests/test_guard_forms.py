"""Issue 19's forms, class by class and rule by rule, against the guard (no sandbox).

Each row is a way of breaking a do-not-touch rule that an operator could type
through `s.run`/`s.probe` (or that the library's own helpers could send). The
guard must refuse it with the rule named in the row: the rule the form breaks,
or `opaque-command` where the guard cannot read the part that would break it.
`HARMLESS` must run. `test_count_per_rule` prints (and writes to
$GUARD_FORMS_COUNT, if set) how many forms each rule stops, for the issue's note.
"""

from __future__ import annotations

import json
import os
from collections import Counter
from datetime import date

import pytest

from runbook.core.profile import load_profile
from runbook.errors import Forbidden
from runbook.safety.guards import RULES, Guards

PROD = load_profile("production")
TODAY = date(2026, 11, 27)
F = "/opt/dealix/.env.pre-v3.0.0.bak"
ENV = "/opt/dealix/.env"
KEPT = "server-backup-20260423-084442"
WAL = "/var/lib/postgresql/15/main/pg_wal"
CORRUPT = "dealix_corrupt_20261125"

# a file on the "server" for psql -f / \i (read through the guard's `read`)
FILES = {
    "/tmp/dump.sql": b"CREATE TABLE leads (id int);\nCOPY leads FROM stdin;\n1\n\\.\n",
    "/opt/dealix/queries.sql": b"-- report\nSELECT count(*) FROM leads;\nSELECT 1;\n",
    "/tmp/drop.sql": b"DROP DATABASE dealix;\n",
    "/tmp/incl.sql": b"\\i /tmp/dump.sql\n",
    "/opt/dealix/.env": b'DATABASE_URL="postgresql://dealix@localhost/dealix"\nLLM_PROVIDER_PRIORITY=openai\n',
    "/tmp/evil.sh": b"rm -f /opt/dealix/.env.pre-v3.0.0.bak\n",
    # pg_dump 17.6+ brackets a dump with \restrict
    "/tmp/new-dump.sql": b"\\restrict k3y\nSET x = 1;\nCREATE TABLE t (id int);\n\\unrestrict k3y\n",
}


def answers(command: str) -> str | None:
    """The server's answers to the guard's questions (as the sandbox gives them)."""
    if "symbolic-ref" in command:
        return "main\n"
    if command.endswith(" current"):
        return "INFO  [alembic.runtime.migration] Context impl PostgresqlImpl.\n0003 (head)\n"
    if command.endswith(" show 0003"):
        return "Rev: 0003 (head)\nParent: 0002\nPath: x.py\n"
    return None


def guards(**kw) -> Guards:
    return Guards(PROD, today=TODAY, ask=answers, read=FILES.get, **kw)


# (class, rule, command)
FORMS: list[tuple[str, str, str]] = [
    # --- shell variables, command substitution, the library's env=
    ("variables", "keep-protected-files", f'X={F}; rm -f "$X"'),
    ("variables", "keep-protected-files", f'X={F}\nrm -f "$X"'),
    ("variables", "keep-protected-files", 'D=/opt/dealix; rm -f "$D/.env.pre-v3.0.0.bak"'),
    ("variables", "keep-protected-files", f"export X={F}; sh -c 'rm -f \"$X\"'"),
    ("variables", "keep-protected-files", f"env 'X={F}' sh -c 'rm -f \"$X\"'"),
    ("variables", "keep-protected-files", f"sh -c 'rm -f \"$1\"' _ {F}"),
    ("variables", "opaque-command", 'rm -f "$BACKUP_FILE"'),
    ("variables", "opaque-command", "rm -f $(ls /opt/dealix/.env.pre*)"),
    ("variables", "opaque-command", "rm -f `cat /tmp/list`"),
    ("variables", "opaque-command", "$CMD -f /opt/dealix/x"),
    ("variables", "opaque-command", "${RM:-rm} -f /tmp/x"),
    ("variables", "no-restore-into-production-db", 'DB=dealix; dropdb --force "$DB"'),
    ("variables", "no-restore-into-production-db", "env 'DB=dealix' sh -c 'dropdb \"$DB\"'"),
    ("variables", "keep-corrupt-db-7-days", f'DB={CORRUPT}; dropdb "$DB"'),
    ("variables", "opaque-command", 'dropdb "$(psql -Atc "select 1")"'),
    ("variables", "env-edit-only-llm-priority", f"E={ENV}; echo DEBUG=1 >> $E"),
    ("variables", "opaque-command", "echo DEBUG=1 >> $ENVFILE"),
    ("variables", "no-push-to-main", "B=main; git push origin $B"),
    ("variables", "no-force-delete-branch", f'B={KEPT}; git branch -D "$B"'),
    ("variables", "opaque-command", 'git branch -D "$OLD"'),
    ("variables", "no-delete-active-wal", f"W={WAL}; rm -rf $W/*"),
    ("variables", "one-downgrade-step", "N=-2; alembic downgrade $N"),
    ("variables", "one-downgrade-step", "alembic downgrade $TARGET"),
    # --- loops and xargs
    ("loops", "one-downgrade-step", "for i in 1 2; do alembic downgrade -1; done"),
    ("loops", "one-downgrade-step", "while true; do alembic downgrade -1; done"),
    ("loops", "one-downgrade-step", "for ((i=0;i<2;i++)); do alembic downgrade -1; done"),
    ("loops", "one-downgrade-step", "f() { alembic downgrade -1; }; f; f"),
    ("loops", "keep-protected-files", "for f in /opt/dealix/.env.pre*; do rm -f $f; done"),
    ("loops", "opaque-command", "ls /opt/dealix | while read f; do rm -f /opt/dealix/$f; done"),
    ("loops", "opaque-command", "for f in $(ls /opt/dealix); do rm -f $f; done"),
    ("loops", "opaque-command", "ls /opt/dealix/.env.pre* | xargs rm -f"),
    ("loops", "opaque-command", "echo dealix | xargs dropdb"),
    ("loops", "opaque-command", f"echo {KEPT} | xargs git branch -D"),
    ("loops", "opaque-command", "echo x | xargs -I{} sh -c 'rm -f {}'"),
    ("loops", "no-delete-active-wal", f"for w in {WAL}/0*; do rm $w; done"),
    ("loops", "opaque-command", "find /opt/dealix -name '*.bak' | xargs rm"),
    # --- interpreters and encodings
    ("interpreters", "opaque-command", f"python3 -c \"import os; os.remove('{F}')\""),
    ("interpreters", "opaque-command", f"perl -e 'unlink \"{F}\"'"),
    ("interpreters", "opaque-command", "ruby -e 'File.delete(ARGV[0])' /opt/dealix/x"),
    ("interpreters", "opaque-command", 'node -e \'require("fs").unlinkSync("/x")\''),
    ("interpreters", "opaque-command", "echo 'import os' | python3"),
    ("interpreters", "opaque-command", "python3 - <<'EOF'\nimport os\nEOF"),
    ("interpreters", "opaque-command", "echo cm0gLWYgL29wdC9kZWFsaXgvLmVudg== | base64 -d | sh"),
    ("interpreters", "opaque-command", "echo 726d | xxd -r -p | bash"),
    ("interpreters", "opaque-command", "curl -s http://x/script | sh"),
    ("interpreters", "opaque-command", "sh < /tmp/script.sh"),
    ("interpreters", "keep-protected-files", f"$'\\x72\\x6d' -f {F}"),
    ("interpreters", "keep-protected-files", "rm -f $'/opt/dealix/\\x2eenv.pre-v3.0.0.bak'"),
    ("interpreters", "opaque-command", f"rm -f $'\\cA{F}'"),
    ("interpreters", "keep-protected-files", f"cat <<'EOF' | sh\nrm -f {F}\nEOF"),
    ("interpreters", "keep-protected-files", f"sh <<< 'rm -f {F}'"),
    ("interpreters", "no-push-to-main", "echo 'git push origin main' | bash"),
    ("interpreters", "opaque-command", 'eval "$PAYLOAD"'),
    ("interpreters", "opaque-command", "source /tmp/cleanup.sh"),
    ("interpreters", "opaque-command", ". /tmp/cleanup.sh"),
    ("interpreters", "keep-protected-files", "source /tmp/evil.sh"),
    (
        "sql",
        "no-restore-into-production-db",
        f'set -a; . {ENV}; gunzip -c x.gz | psql "$DATABASE_URL"',
    ),
    ("interpreters", "opaque-command", f"echo 'rm -f {F}' > /tmp/x.sh; sh /tmp/x.sh"),
    ("interpreters", "opaque-command", "awk 'BEGIN{system(\"rm -f /opt/x\")}'"),
    ("interpreters", "opaque-command", 'echo "unterminated'),
    # --- in-place editors on .env
    ("editors", "env-edit-only-llm-priority", f"sed -ri 's/^ADMIN_KEY=.*/ADMIN_KEY=x/' {ENV}"),
    ("editors", "env-edit-only-llm-priority", f"sed -Ei 's/a/b/' {ENV}"),
    ("editors", "env-edit-only-llm-priority", f"sed -i.bak 's/a/b/' {ENV}"),
    ("editors", "env-edit-only-llm-priority", f"sed --in-place=.bak 's/a/b/' {ENV}"),
    ("editors", "env-edit-only-llm-priority", f"sed -n -i -e 's/a/b/' {ENV}"),
    ("editors", "env-edit-only-llm-priority", f"perl -pi -e 's/a/b/' {ENV}"),
    ("editors", "env-edit-only-llm-priority", f"perl -i.bak -pe 's/a/b/' {ENV}"),
    ("editors", "env-edit-only-llm-priority", f"printf ',s/a/b/\\nw\\n' | ed -s {ENV}"),
    ("editors", "env-edit-only-llm-priority", f"ex -sc '%s/a/b/|x' {ENV}"),
    ("editors", "env-edit-only-llm-priority", f"cat {ENV} | sponge {ENV}"),
    ("editors", "env-edit-only-llm-priority", f"awk -i inplace '{{print}}' {ENV}"),
    ("editors", "env-edit-only-llm-priority", f"dos2unix {ENV}"),
    ("editors", "env-edit-only-llm-priority", "cp /tmp/.env /opt/dealix/"),
    ("editors", "env-edit-only-llm-priority", f"sort -o {ENV} {ENV}"),
    ("editors", "keep-protected-files", f"sed -i 's/a/b/' {F}"),
    ("editors", "keep-protected-files", f"gzip {F}"),
    ("editors", "keep-armor", f"chattr -i {F}"),
    ("editors", "keep-protected-files", f"> {F}"),
    ("editors", "keep-protected-files", f"exec 3> {F}"),
    ("editors", "keep-protected-files", f"coproc rm -f {F}"),
    ("editors", "opaque-command", "tar -xzf /tmp/x.tgz -C /opt/dealix"),
    ("editors", "opaque-command", "cd /opt && unzip -o /tmp/x.zip"),
    ("editors", "env-edit-only-llm-priority", f"sed -n 's/a/b/w {ENV}' /tmp/x"),
    ("editors", "opaque-command", "sed 's/.*/rm -f x/e' /tmp/x"),
    ("editors", "env-edit-only-llm-priority", f"pg_dump -f {ENV} dealix"),
    ("editors", "env-edit-only-llm-priority", f"psql -o {ENV} -c 'select 1'"),
    ("editors", "keep-armor", f"chattr = {F}"),
    # --- git beyond the porcelain
    ("git", "no-force-delete-branch", f"git update-ref -d refs/heads/{KEPT}"),
    ("git", "no-force-delete-branch", f"git update-ref refs/heads/{KEPT} HEAD~3"),
    (
        "git",
        "no-force-delete-branch",
        f"printf 'delete refs/heads/{KEPT}\\n' | git update-ref --stdin",
    ),
    ("git", "no-force-delete-branch", f"git branch -m {KEPT} old"),
    ("git", "no-force-delete-branch", f"git branch -M {KEPT} x"),
    ("git", "no-force-delete-branch", f"git branch -f {KEPT} HEAD"),
    ("git", "no-force-delete-branch", f"git checkout -B {KEPT}"),
    ("git", "no-force-delete-branch", f"git symbolic-ref refs/heads/{KEPT} refs/heads/x"),
    ("git", "no-force-delete-branch", f"git push origin :refs/heads/{KEPT}"),
    ("git", "no-force-delete-branch", "git push --prune origin 'refs/heads/*:refs/heads/*'"),
    ("git", "no-force-delete-branch", f"git fetch origin +main:{KEPT}"),
    ("git", "no-push-to-main", "git push origin 'refs/heads/*:refs/heads/*'"),
    ("git", "no-push-to-main", "git push origin 'HEAD:refs/heads/ma*'"),
    ("git", "no-push-to-main", "git push -u origin HEAD"),
    ("git", "no-push-to-main", "git push origin @"),
    ("git", "no-push-to-main", "git push origin HEAD:heads/main"),
    ("git", "no-push-to-main", "git push --mirror origin"),
    ("git", "no-push-to-main", "git push --all origin"),
    ("git", "no-push-to-main", "git -c alias.p='push origin main' p"),
    ("git", "no-push-to-main", "git -c alias.p='!git push origin main' p"),
    ("git", "no-commit-on-server", "git -c alias.ci=commit ci -am x"),
    (
        "git",
        "no-commit-on-server",
        "git update-ref refs/heads/main $(git commit-tree HEAD^{tree} -m x)",
    ),
    ("git", "no-commit-on-server", "git commit-tree HEAD^{tree} -p HEAD -m x"),
    ("git", "no-commit-on-server", "git update-ref refs/heads/main 1234abcd"),
    ("git", "no-commit-on-server", "git merge feature"),
    ("git", "no-commit-on-server", "git cherry-pick abc123"),
    ("git", "no-commit-on-server", "git revert HEAD"),
    ("git", "no-commit-on-server", "git pull origin main"),
    ("git", "no-commit-on-server", "git replace HEAD abc123"),
    ("git", "no-force-delete-branch", f"git branch -C main {KEPT}"),
    ("git", "no-force-delete-branch", f"git worktree add -B {KEPT} /tmp/w"),
    ("git", "no-commit-on-server", "git update-ref HEAD 1234abcd"),
    ("git", "opaque-command", "git ci -m x"),
    ("git", "opaque-command", "git p"),
    # --- SQL as PostgreSQL reads it
    ("sql", "no-restore-into-production-db", "psql -c 'DROP/**/DATABASE dealix'"),
    ("sql", "no-restore-into-production-db", "psql -c 'DROP DATABASE \"dealix\" WITH (FORCE)'"),
    ("sql", "no-restore-into-production-db", "psql -c 'drop database U&\"d\\0065alix\"'"),
    ("sql", "no-restore-into-production-db", "psql -c 'select 1; drop\n-- x\ndatabase dealix'"),
    ("sql", "no-restore-into-production-db", "psql -c 'ALTER DATABASE dealix RENAME TO x'"),
    ("sql", "keep-corrupt-db-7-days", f"psql -c 'DROP/**/DATABASE {CORRUPT}'"),
    ("sql", "no-restore-into-production-db", "psql -c 'SELEC oops; DROP DATABASE dealix'"),
    ("sql", "keep-corrupt-db-7-days", "psql -c 'drop database U&\"dealix_corrupt_2026112\\0035\"'"),
    ("sql", "no-restore-into-production-db", "psql -d dealix -f /tmp/dump.sql"),
    ("sql", "no-restore-into-production-db", "psql -f /tmp/drop.sql"),
    ("sql", "no-restore-into-production-db", "psql dealix < /tmp/dump.sql"),
    ("sql", "no-restore-into-production-db", "psql -d dealix -f /tmp/new-dump.sql"),
    ("sql", "no-restore-into-production-db", "psql -d dealix -c '\\i /tmp/dump.sql'"),
    ("sql", "no-restore-into-production-db", "psql -d dealix -c '\\ir /tmp/dump.sql'"),
    ("sql", "no-restore-into-production-db", "psql -d dealix -f /tmp/incl.sql"),
    ("sql", "keep-protected-files", f"psql -c '\\! rm -f {F}'"),
    ("sql", "keep-protected-files", f"psql -c \"\\copy leads to '{F}'\""),
    ("sql", "env-edit-only-llm-priority", f"psql -c \"COPY leads TO '{ENV}'\""),
    ("sql", "opaque-command", "psql -c \"COPY leads TO PROGRAM 'rm -f /x'\""),
    ("sql", "opaque-command", "psql -c 'select 1 \\gexec'"),
    ("sql", "keep-corrupt-db-7-days", f"psql -c 'ALTER DATABASE {CORRUPT} RENAME TO old'"),
    (
        "sql",
        "opaque-command",
        "psql -c \"UPDATE pg_database SET datname = 'x' WHERE datname = 'dealix'\"",
    ),
    ("sql", "opaque-command", "psql -d dealix -f /tmp/missing.sql"),
    (
        "sql",
        "no-restore-into-production-db",
        "gunzip -c /var/backups/d.sql.gz > /tmp/d.sql; psql dealix < /tmp/d.sql",
    ),
    (
        "sql",
        "no-restore-into-production-db",
        "gunzip -c /var/backups/d.sql.gz | PGDATABASE=dealix psql",
    ),
    (
        "sql",
        "no-restore-into-production-db",
        "gunzip -c /var/backups/d.sql.gz | env PGDATABASE=dealix psql -X",
    ),
    (
        "sql",
        "no-restore-into-production-db",
        "gunzip -c /var/backups/d.sql.gz | psql 'dbname=dealix'",
    ),
    (
        "sql",
        "no-restore-into-production-db",
        "gunzip -c /var/backups/d.sql.gz | psql postgresql://u@localhost/dealix",
    ),
    (
        "sql",
        "no-restore-into-production-db",
        'URL=postgresql://u@h/dealix; gunzip -c x.sql.gz | psql "$URL"',
    ),
    (
        "sql",
        "no-restore-into-production-db",
        "env 'DATABASE_URL=postgres://h/dealix' sh -c 'gunzip -c x.gz | psql \"$DATABASE_URL\"'",
    ),
    (
        "sql",
        "no-restore-into-production-db",
        "gunzip -c x.sql.gz | psql -X dealix -v ON_ERROR_STOP=1",
    ),
    ("sql", "no-restore-into-production-db", "gunzip -c x.sql.gz | psql"),
    ("sql", "no-restore-into-production-db", "pg_restore -d postgres --create /tmp/x.dump"),
    ("sql", "no-restore-into-production-db", "pg_restore --dbname=postgresql:///dealix x.dump"),
    ("sql", "opaque-command", 'psql "$DATABASE_URL" -f /tmp/dump.sql'),
    ("sql", "no-restore-into-production-db", "dropdb -h localhost dealix --if-exists"),
]

HARMLESS = [
    f"cp {F} /tmp/x",
    f"cp -p {F} {F}.bak.20261127T010203Z",
    f"cp {F} {F}.copy",
    "git push --dry-run origin HEAD:main",
    "git push -n origin main",
    "psql -d dealix -f /opt/dealix/queries.sql",
    "cd /opt/dealix && psql dealix -f queries.sql",
    "alembic downgrade 0002",
    "cd /opt/dealix && .venv/bin/alembic downgrade 0002",
    # everyday reading with loops and variables
    'for f in /var/backups/postgres/*.sql.gz; do ls -l "$f"; done',
    "ls -1t /var/backups/postgres | head -3 | while read f; do echo $f; done",
    "for f in $(ls /var/log/dealix); do tail -n 20 /var/log/dealix/$f; done",
    "D=/var/backups/postgres; du -sh $D/*",
    "gunzip -t $(ls -1t /var/backups/postgres/*.sql.gz | head -1)",
    "journalctl -u dealix-api --since \"$(date -d '1 hour ago' '+%F %T')\" | tail",
    "python3 /opt/dealix/scripts/report.py",
    "git symbolic-ref --short -q HEAD",
    f"chattr +i {F}",
    f"lsattr {F}",
    "git rev-parse --abbrev-ref HEAD",
    "git pull --ff-only origin main",
    "psql -d dealix -c 'SELECT count(*) FROM leads'",
    "echo '\\dt' | psql -d dealix",
    'for f in $(pg_lsclusters --no-header | awk \'{print $7}\'); do [ -r "$f" ] && tail -n 5 "$f"; done',
    "case $(hostname) in prod*) echo prod;; *) echo other;; esac",
    "[[ -f /opt/dealix/.env ]] && echo yes",
    "ls | xargs -n1 echo",
    "find /var/backups/postgres -name '*.gz' | xargs ls -l",
    "gunzip -c /var/backups/d.sql.gz | psql dealix_restore_test",
    "psql -d dealix_restore_test -f /tmp/new-dump.sql",
    "git reset --hard 1234abcd",
    "sed -n '/error/p' /var/log/dealix/api.log",
    "sed 's/e/E/g' /var/log/dealix/api.log",
    "rm -f ~/runbook-scratch.txt",
    "cd /tmp && tar -xzf /var/backups/x.tgz",
    "tar -tzf /var/backups/x.tgz",
    "chattr +i /opt/dealix/.env.pre-v3.0.0.bak",
    f"set -a; . {ENV}; env | grep -c LLM_",
    "cd /opt/dealix && . ./.env && psql \"$DATABASE_URL\" -c 'SELECT 1'",
]


@pytest.mark.parametrize(
    ("klass", "rule", "command"), FORMS, ids=[f"{c}-{r}-{i}" for i, (c, r, _) in enumerate(FORMS)]
)
def test_form_is_refused(klass: str, rule: str, command: str) -> None:
    with pytest.raises(Forbidden) as info:
        guards().check_command(command)
    assert info.value.rule == rule, str(info.value)
    assert RULES[rule].source in str(info.value)


@pytest.mark.parametrize("command", HARMLESS)
def test_harmless_command_runs(command: str) -> None:
    guards().check_command(command)


def test_opaque_refusal_names_the_part_and_the_way_out() -> None:
    with pytest.raises(Forbidden, match="opaque-command") as info:
        guards().check_command('rm -f "$BACKUP_FILE"')
    text = str(info.value)
    assert "$BACKUP_FILE" in text and "plainly" in text


def test_without_the_server_a_head_push_and_a_revision_downgrade_are_refused() -> None:
    bare = Guards(PROD, today=TODAY)
    with pytest.raises(Forbidden, match="no-push-to-main"):
        bare.check_command("git push -u origin HEAD")
    with pytest.raises(Forbidden, match="one-downgrade-step"):
        bare.check_command("alembic downgrade 0002")
    with pytest.raises(Forbidden, match="opaque-command"):
        bare.check_command("psql -d dealix -f /opt/dealix/queries.sql")


def test_a_revision_that_is_not_the_parent_is_more_than_one_step() -> None:
    with pytest.raises(Forbidden, match="one-downgrade-step"):
        guards().check_command("alembic downgrade 0001")


def test_count_per_rule() -> None:
    stopped: Counter[str] = Counter()
    classes: Counter[str] = Counter()
    for klass, _rule, command in FORMS:
        try:
            guards().check_command(command)
        except Forbidden as exc:
            stopped[exc.rule] += 1
            classes[klass] += 1
    counts = {
        "forms": len(FORMS),
        "stopped": sum(stopped.values()),
        "per_rule": dict(stopped),
        "per_class": dict(classes),
        "harmless": len(HARMLESS),
    }
    print(json.dumps(counts, indent=1))
    if os.environ.get("GUARD_FORMS_COUNT"):
        with open(os.environ["GUARD_FORMS_COUNT"], "w") as fh:
            json.dump(counts, fh, indent=1)
    assert counts["stopped"] == len(FORMS)
