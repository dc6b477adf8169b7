"""Sandbox faults for the restore scenarios (runbook scenario 5).

| fault | what | heal |
|---|---|---|
| `stale-backups` | backups younger than 48 h are moved aside: the newest left is older than the RPO | move them back |
| `empty-backup` | the newest dump is replaced by a valid but empty gzip (20 bytes) | put the original back |
| `corrupt-backup` | the newest dump is cut at 60 %: gunzip fails midway ("unexpected end of file") | put the original back |
| `mass-delete` | 90 % of production's leads (and their notes and LLM calls) are deleted | re-insert the saved rows |

Files set aside live in `<backups_dir>/.faults/` (not matched by the backup
pattern); `mass-delete` keeps the deleted rows in the `runbook_fault` schema
of production (a real incident restore replaces the database, and then there
is nothing left to heal).

Example::

    sb.fault("corrupt-backup"); ...; sb.heal()
"""

from __future__ import annotations

import contextlib
import gzip
import os
import shutil
import time
from pathlib import Path
from typing import TYPE_CHECKING

from runbook.sandbox.faults._registry import Fault, register

if TYPE_CHECKING:
    from runbook.sandbox.manager import Sandbox

ASIDE = ".faults"
STALE_HOURS = 48


def _backups(sb: Sandbox) -> list[Path]:
    d = Path(sb.state["backups_dir"])
    return sorted(d.glob("dealix-*.sql.gz"), key=lambda p: p.stat().st_mtime, reverse=True)


def _aside(sb: Sandbox, kind: str) -> Path:
    d = Path(sb.state["backups_dir"]) / ASIDE / kind
    d.mkdir(parents=True, exist_ok=True)
    return d


def _restore_aside(sb: Sandbox, kind: str) -> None:
    d = Path(sb.state["backups_dir"]) / ASIDE / kind
    if not d.exists():
        return
    for f in d.iterdir():
        # a rename keeps the mtime: a backup's age is its mtime, as `ls -lt` shows
        os.replace(f, Path(sb.state["backups_dir"]) / f.name)
    shutil.rmtree(d, ignore_errors=True)
    with contextlib.suppress(OSError):
        d.parent.rmdir()  # only when empty: another fault may still hold files there


# ---------------------------------------------------------------- stale-backups


def _stale(sb: Sandbox, _: str | None) -> None:
    now = time.time()
    aside = _aside(sb, "stale")
    moved = 0
    for f in _backups(sb):
        if now - f.stat().st_mtime < STALE_HOURS * 3600:
            os.replace(f, aside / f.name)
            moved += 1
    if not _backups(sb):
        raise RuntimeError("stale-backups: no backup older than 48 h to leave behind")


def _stale_heal(sb: Sandbox, _: str | None) -> None:
    _restore_aside(sb, "stale")


# ---------------------------------------------------------------- newest dump damaged


def _replace_newest(sb: Sandbox, kind: str, data_of: object) -> None:
    files = _backups(sb)
    if not files:
        raise RuntimeError(f"{kind}: no backup to damage")
    newest = files[0]
    st = newest.stat()
    saved = _aside(sb, kind) / newest.name
    shutil.copy2(newest, saved)
    data = data_of(newest.read_bytes())  # type: ignore[operator]
    tmp = newest.with_name(newest.name + ".part")
    tmp.write_bytes(data)
    os.utime(tmp, (st.st_atime, st.st_mtime))  # same age: only the content is wrong
    os.replace(tmp, newest)


def _empty(sb: Sandbox, _: str | None) -> None:
    _replace_newest(sb, "empty", lambda _b: gzip.compress(b"", mtime=0))


def _corrupt(sb: Sandbox, _: str | None) -> None:
    _replace_newest(sb, "corrupt", lambda b: b[: int(len(b) * 0.6)])


def _heal_kind(kind: str):
    def heal(sb: Sandbox, _: str | None) -> None:
        _restore_aside(sb, kind)

    return heal


# ---------------------------------------------------------------- mass-delete

_SAVE = """
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
"""

_PUT_BACK = """
INSERT INTO public.leads SELECT * FROM runbook_fault.leads ON CONFLICT DO NOTHING;
INSERT INTO public.lead_notes SELECT * FROM runbook_fault.lead_notes ON CONFLICT DO NOTHING;
INSERT INTO public.llm_calls SELECT * FROM runbook_fault.llm_calls ON CONFLICT DO NOTHING;
DROP SCHEMA runbook_fault CASCADE;
"""


def _mass_delete(sb: Sandbox, _: str | None) -> None:
    with sb.connect("dealix", timeout=10) as conn, conn.transaction():
        conn.execute(_SAVE)


def _mass_delete_heal(sb: Sandbox, _: str | None) -> None:
    # After an incident restore the database was replaced from a backup (the
    # saved rows went with the renamed one): production is healthy already.
    with sb.connect("dealix", timeout=10) as conn:
        has = conn.execute(
            "SELECT count(*) FROM information_schema.schemata WHERE schema_name = 'runbook_fault'"
        ).fetchone()
        if has and has[0]:
            with conn.transaction():
                conn.execute(_PUT_BACK)


register(
    Fault(
        "stale-backups",
        f"Move every backup younger than {STALE_HOURS} h aside (to <backups_dir>/{ASIDE}/): "
        "the newest one left is older than the 24 h RPO. Heal: move them back.",
        _stale,
        _stale_heal,
    )
)

register(
    Fault(
        "empty-backup",
        "Replace the newest dump by a valid but empty gzip (20 bytes, same mtime): a "
        "'successful' backup that holds nothing. Heal: put the original back.",
        _empty,
        _heal_kind("empty"),
    )
)

register(
    Fault(
        "corrupt-backup",
        "Cut the newest dump at 60 % (same mtime, size above the minimum): gunzip fails "
        "midway with 'unexpected end of file'. Heal: put the original back.",
        _corrupt,
        _heal_kind("corrupt"),
    )
)

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
