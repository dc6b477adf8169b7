"""Faults of the restore scenarios (runbook scenario 5: restore_drill, restore_incident).

| fault | what | heal |
|---|---|---|
| `stale-backups` | backups younger than 48 h are moved aside: the newest left is older than the RPO | move them back |
| `empty-backup` | the newest dump is replaced by a valid but empty gzip (20 bytes) | put the original back |
| `corrupt-backup` | the newest dump is cut at 60 %: gunzip fails midway ("unexpected end of file") | put the original back |
| `slow-backup` | the newest dump, whole, then `SELECT pg_sleep(600);`: the restore hangs in psql after the data, so a stop lands mid-restore | put the original back |
| `mass-delete` | 90 % of production's leads (and their notes and LLM calls) are deleted | re-insert the saved rows |

Written once, as shell on the server and SQL as the superuser, for both targets.
Files set aside live in `<backups_dir>/.faults/KIND/` (not matched by the backup
pattern), with their owner and mtime: a backup's age is its mtime, as `ls -lt` shows,
so only the content is wrong. `mass-delete` keeps the deleted rows in the
`runbook_fault` schema of production (a real incident restore replaces the database,
and then there is nothing left to heal).

Example::

    sb.fault("corrupt-backup"); ...; sb.heal()
"""

from __future__ import annotations

import shlex

from runbook.rehearsal.faults.registry import Fault, register
from runbook.rehearsal.target import Target

ASIDE = ".faults"
STALE_HOURS = 48


def _in_backups(t: Target, script: str) -> str:
    return t.sh(f"set -e; cd {shlex.quote(str(t.backups_dir))}; {script}").stdout.strip()


def _replace_newest(kind: str, make: str):
    """Keep the newest dump aside, write `make` (a shell pipeline reading "$orig") in
    its place with the same owner and mtime: only the content is wrong."""

    def go(t: Target, _: str | None) -> str:
        name = _in_backups(
            t,
            "f=$(ls -t dealix-*.sql.gz 2>/dev/null | head -1); "
            f'[ -n "$f" ] || {{ echo "{kind}: no backup to damage" >&2; exit 1; }}; '
            f'mkdir -p {ASIDE}/{kind}; orig={ASIDE}/{kind}/$f; cp -p "$f" "$orig"; '
            f'({make}) > "$f.part"; touch -r "$orig" "$f.part"; '
            'chown --reference="$orig" "$f.part"; mv "$f.part" "$f"; echo "$f"',
        )
        return f"{t.backups_dir}/{name} (original kept in {ASIDE}/{kind}/)"

    return go


def _put_back(kind: str):
    def heal(t: Target, _: str | None) -> None:
        # mv keeps the mtime; .faults goes only when empty (another fault may hold files)
        _in_backups(
            t,
            f"if [ -d {ASIDE}/{kind} ]; then "
            f'for f in {ASIDE}/{kind}/* {ASIDE}/{kind}/.[!.]*; do [ -e "$f" ] && mv -f "$f" .; '
            f"done; rmdir {ASIDE}/{kind}; rmdir {ASIDE} 2>/dev/null; fi; true",
        )

    return heal


def _stale(t: Target, _: str | None) -> str:
    moved = _in_backups(
        t,
        f"mkdir -p {ASIDE}/stale; "
        f"find . -maxdepth 1 -name 'dealix-*.sql.gz' -mmin -{STALE_HOURS * 60} "
        f"-exec mv {{}} {ASIDE}/stale/ \\; -print | wc -l; "
        f"ls dealix-*.sql.gz >/dev/null 2>&1 || "
        f'{{ echo "no backup older than {STALE_HOURS} h to leave behind" >&2; exit 1; }}',
    )
    return f"{moved} backups younger than {STALE_HOURS} h moved to {ASIDE}/stale/"


register(
    Fault(
        "stale-backups",
        f"Move every backup younger than {STALE_HOURS} h aside (to <backups_dir>/{ASIDE}/): "
        "the newest one left is older than the 24 h RPO. Heal: move them back.",
        _stale,
        _put_back("stale"),
    )
)
register(
    Fault(
        "empty-backup",
        "Replace the newest dump by a valid but empty gzip (20 bytes, same mtime): a "
        "'successful' backup that holds nothing. Heal: put the original back.",
        _replace_newest("empty", "gzip -n < /dev/null"),
        _put_back("empty"),
    )
)
register(
    Fault(
        "corrupt-backup",
        "Cut the newest dump at 60 % (same mtime, size above the minimum): gunzip fails "
        "midway with 'unexpected end of file'. Heal: put the original back.",
        _replace_newest("corrupt", 'head -c $(( $(stat -c %s "$orig") * 6 / 10 )) "$orig"'),
        _put_back("corrupt"),
    )
)
register(
    Fault(
        "slow-backup",
        "The newest dump, whole, then `SELECT pg_sleep(600);` (same mtime): a restore "
        "hangs in psql after the data, so a stop lands mid-restore. Heal: put the "
        "original back.",
        _replace_newest("slow", "cat \"$orig\"; echo 'SELECT pg_sleep(600);' | gzip -1"),
        _put_back("slow"),
    )
)


# ---------------------------------------------------------------- mass-delete

_SAVE = """
BEGIN;
CREATE SCHEMA IF NOT EXISTS runbook_fault;
DROP TABLE IF EXISTS runbook_fault.leads, runbook_fault.lead_notes, runbook_fault.llm_calls;
CREATE TABLE runbook_fault.leads AS SELECT * FROM public.leads WHERE id % 10 <> 0;
CREATE TABLE runbook_fault.lead_notes AS
  SELECT n.* FROM public.lead_notes n JOIN runbook_fault.leads l ON l.id = n.lead_id;
CREATE TABLE runbook_fault.llm_calls AS
  SELECT c.* FROM public.llm_calls c JOIN runbook_fault.leads l ON l.id = c.lead_id;
DELETE FROM public.lead_notes WHERE lead_id IN (SELECT id FROM runbook_fault.leads);
DELETE FROM public.llm_calls WHERE lead_id IN (SELECT id FROM runbook_fault.leads);
DELETE FROM public.leads WHERE id IN (SELECT id FROM runbook_fault.leads);
COMMIT;
"""

_PUT_BACK = """
BEGIN;
INSERT INTO public.leads SELECT * FROM runbook_fault.leads ON CONFLICT DO NOTHING;
INSERT INTO public.lead_notes SELECT * FROM runbook_fault.lead_notes ON CONFLICT DO NOTHING;
INSERT INTO public.llm_calls SELECT * FROM runbook_fault.llm_calls ON CONFLICT DO NOTHING;
DROP SCHEMA runbook_fault CASCADE;
COMMIT;
"""


def _mass_delete(t: Target, _: str | None) -> None:
    t.sql(_SAVE)


def _mass_delete_heal(t: Target, _: str | None) -> None:
    # After an incident restore the database was replaced from a backup (the
    # saved rows went with the renamed one): production is healthy already.
    has = t.sql(
        "SELECT count(*) FROM information_schema.schemata WHERE schema_name = 'runbook_fault'"
    )
    if has and int(has[0][0]):
        t.sql(_PUT_BACK)


register(
    Fault(
        "mass-delete",
        "Delete 90 % of production's leads (with their lead_notes and llm_calls), the rows "
        "kept in schema runbook_fault. Heal: re-insert them (nothing to do after an incident "
        "restore replaced the database).",
        _mass_delete,
        _mass_delete_heal,
    )
)
