"""Scenario 3's rotation rules: which old backups may be deleted when the disk is full (pure).

The safety rules live in one place and take a table (`list_backups`'s
answer), never a Session: only files directly in the backups dir matching the
profile's pattern, never anything under the data dir or a WAL dir, never the
newest `keep_newest` backups.
"""

from __future__ import annotations

from pathlib import PurePosixPath
from typing import TYPE_CHECKING

from runbook.ops.disk import human

if TYPE_CHECKING:
    import pandas as pd


def rotation_candidates(
    backups: pd.DataFrame,
    *,
    backups_dir: str,
    pattern: str,
    keep_newest: int,
    data_dir: str,
) -> pd.DataFrame:
    """Old backups that may be deleted: pure, the safety rules in one place.

    Only files directly in `backups_dir` matching `pattern`; never anything in
    the data dir or any WAL; never the `keep_newest` newest backups (the RPO
    needs them). Oldest first.

    >>> import pandas as pd
    >>> from datetime import datetime, UTC
    >>> b = pd.DataFrame({"path": [f"/b/dealix-2026-11-0{i}.sql.gz" for i in range(1, 6)],
    ...                   "bytes": [1] * 5,
    ...                   "modified": [datetime(2026, 11, i, tzinfo=UTC) for i in range(1, 6)]})
    >>> list(rotation_candidates(b, backups_dir="/b", pattern="dealix-*.sql.gz",
    ...                          keep_newest=3, data_dir="/pg")["path"])
    ['/b/dealix-2026-11-01.sql.gz', '/b/dealix-2026-11-02.sql.gz']
    """
    if keep_newest < 1:
        raise ValueError("keep_newest must be at least 1: the newest backup is never deleted")
    ours = backup_files(backups, backups_dir=backups_dir, pattern=pattern, data_dir=data_dir)
    old = ours.iloc[keep_newest:].sort_values("modified")
    return old.reset_index(drop=True)


def backup_files(
    backups: pd.DataFrame, *, backups_dir: str, pattern: str, data_dir: str
) -> pd.DataFrame:
    """The backups proper, newest first: files directly in `backups_dir` matching
    `pattern`, never anything under the data dir or a WAL dir (pure).

    >>> import pandas as pd
    >>> from datetime import datetime, UTC
    >>> b = pd.DataFrame({"path": ["/b/dealix-1.sql.gz", "/b/notes.txt", "/b/dealix-2.sql.gz"],
    ...                   "bytes": [1, 1, 1],
    ...                   "modified": [datetime(2026, 11, d, tzinfo=UTC) for d in (1, 2, 3)]})
    >>> list(backup_files(b, backups_dir="/b", pattern="dealix-*.sql.gz", data_dir="/pg")["path"])
    ['/b/dealix-2.sql.gz', '/b/dealix-1.sql.gz']
    """
    import fnmatch

    root = PurePosixPath(backups_dir)
    data = PurePosixPath(data_dir)

    def eligible(path: str) -> bool:
        p = PurePosixPath(path)
        return (
            p.parent == root
            and fnmatch.fnmatch(p.name, pattern)
            and "pg_wal" not in p.parts
            and "pg_xlog" not in p.parts
            and data not in p.parents
            and p != data
        )

    mask = backups["path"].map(eligible) if len(backups) else backups["path"]
    ours = backups[mask.astype(bool)] if len(backups) else backups
    return ours.sort_values("modified", ascending=False).reset_index(drop=True)


def backups_table(backups: pd.DataFrame) -> pd.DataFrame:
    """Backups for people: file name, size, modified (paths are long; the dir is known).

    >>> import pandas as pd
    >>> from datetime import datetime, UTC
    >>> backups_table(pd.DataFrame({"path": ["/b/dealix-1.sql.gz"], "bytes": [2048],
    ...               "modified": [datetime(2026, 11, 1, tzinfo=UTC)]}))["file"].tolist()
    ['dealix-1.sql.gz']
    """
    import pandas as pd

    return pd.DataFrame(
        {
            "file": [PurePosixPath(str(p)).name for p in backups["path"]],
            "size": [human(int(b)) for b in backups["bytes"]],
            "modified": list(backups["modified"]),
        },
        columns=["file", "size", "modified"],
    )
