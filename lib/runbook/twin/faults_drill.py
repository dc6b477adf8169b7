"""Twin faults for the restore drill, done the production way: files in
/var/backups/postgres changed over SSH, the original kept aside and put back.

| fault | what | heal |
|---|---|---|
| `corrupt-backup` | the newest dump is cut at 60 % (same mtime): gunzip fails midway | put the original back |
| `slow-backup` | the newest dump, whole, then `SELECT pg_sleep(600);` (same mtime): the restore hangs in psql after the data, so a stop lands mid-restore | put the original back |

`corrupt-backup` means what the sandbox's fault of that name means
(lib/runbook/sandbox/faults/restore.py); `slow-backup` is the twin's own
(the sandbox's interrupt test writes such a dump by hand). The originals wait
in /var/backups/postgres/.faults/KIND/ (not matched by the backup pattern).

FAULTS holds (name, description, apply, heal); faults.py registers them, so
that this module needs nothing from it (no import circle).

Example::

    >>> from runbook.twin.faults import get
    >>> get("slow-backup").name
    'slow-backup'
"""

from __future__ import annotations

from collections.abc import Callable
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from runbook.twin.instance import Twin

BACKUPS = "/var/backups/postgres"


def _replace_newest(kind: str, make: str) -> Callable[[Twin], str]:
    """Keep the newest dump aside, write `make` (a shell pipeline reading "$orig") in
    its place with the same owner and mtime: only the content is wrong."""

    def go(t: Twin) -> str:
        out = t.ssh(
            f"set -e; cd {BACKUPS}; f=$(ls -t dealix-*.sql.gz | head -1); "
            '[ -n "$f" ] || { echo "no backup to damage" >&2; exit 1; }; '
            f'mkdir -p .faults/{kind}; orig=.faults/{kind}/$f; cp -p "$f" "$orig"; '
            f'({make}) > "$f.part"; touch -r "$orig" "$f.part"; '
            'chown postgres:postgres "$f.part"; mv "$f.part" "$f"; echo "$f"'
        ).stdout.strip()
        return f"{kind}: {BACKUPS}/{out} (original kept in .faults/{kind}/)"

    return go


def _put_back(kind: str) -> Callable[[Twin], None]:
    def heal(t: Twin) -> None:
        # mv keeps the mtime: a backup's age is its mtime, as `ls -lt` shows
        t.ssh(
            f"cd {BACKUPS}; if [ -d .faults/{kind} ]; then "
            f'for f in .faults/{kind}/*; do [ -e "$f" ] && mv -f "$f" .; done; '
            f"rmdir .faults/{kind}; rmdir .faults 2>/dev/null; fi; true"
        )

    return heal


FAULTS: list[tuple[str, str, Callable[[Twin], str], Callable[[Twin], None]]] = [
    (
        "corrupt-backup",
        "Cut the newest dump in /var/backups/postgres at 60 % (same mtime, size above the "
        "minimum): gunzip fails midway. Heal: put the original back.",
        _replace_newest("corrupt", 'head -c $(( $(stat -c %s "$orig") * 6 / 10 )) "$orig"'),
        _put_back("corrupt"),
    ),
    (
        "slow-backup",
        "The newest dump, whole, then `SELECT pg_sleep(600);` (same mtime): the drill's "
        "restore hangs in psql after the data, so a stop lands mid-restore. Heal: put the "
        "original back.",
        _replace_newest("slow", "cat \"$orig\"; echo 'SELECT pg_sleep(600);' | gzip -1"),
        _put_back("slow"),
    ),
]
