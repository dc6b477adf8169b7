"""Disk space on the server: `df` of a few paths, and `du` of what fills them (read-only).

Scenario 3 (database down, branch "disk full") reads these; nothing here
judges or records a check. Sizes for people are binary units written the way
`df -h` writes them (KB, MB, GB: 1024-based).

Example (in a notebook)::

    usage(s, {"data": "/var/lib/postgresql", "backups": "/var/backups/postgres"})
    space_report(s, ["/var/lib/postgresql", "/var/backups/postgres"])
"""

from __future__ import annotations

import shlex
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    import pandas as pd

    from runbook.core.context import OpsContext


def human(n: float) -> str:
    """Bytes for people, as `df -h` writes them.

    >>> human(512), human(1536), human(3 * 1024**3)
    ('512 B', '1.5 KB', '3.0 GB')
    """
    for unit in ("B", "KB", "MB", "GB", "TB"):
        if abs(n) < 1024 or unit == "TB":
            return f"{n:.0f} {unit}" if unit == "B" else f"{n:.1f} {unit}"
        n /= 1024
    return str(n)


@dataclass(frozen=True)
class Usage:
    """One path's filesystem as `df` sees it; `error` when df gave no answer."""

    name: str
    path: str
    size: int = 0
    used: int = 0
    avail: int = 0
    pct: float = 0.0
    mount: str = ""
    error: str | None = None


def parse_df(stdout: str) -> list[dict[str, int | float | str]]:
    """`df -P -B1 PATH…` → rows of size, used, avail, pct, mount.

    >>> parse_df("Filesystem 1-blocks Used Available Capacity Mounted on\\n"
    ...          "tmpfs 8388608 8388608 0 100% /srv/backups\\n")[0]["pct"]
    100.0
    """
    rows: list[dict[str, int | float | str]] = []
    for line in stdout.splitlines()[1:]:
        parts = line.split()
        if len(parts) < 6 or not parts[1].isdigit():
            continue
        size, used, avail = int(parts[1]), int(parts[2]), int(parts[3])
        pct = 100.0 * used / (used + avail) if used + avail else 0.0
        rows.append(
            {
                "size": size,
                "used": used,
                "avail": avail,
                "pct": round(pct, 1),
                "mount": " ".join(parts[5:]),
            }
        )
    return rows


def usage(ctx: OpsContext, paths: Mapping[str, str]) -> dict[str, Usage]:
    """`df` of each named path (one call each: a missing path must not hide the others)."""
    out: dict[str, Usage] = {}
    for name, path in paths.items():
        r = ctx.probe(["df", "-P", "-B1", path], warn=True)
        rows = parse_df(r.stdout)
        if not rows:
            out[name] = Usage(name, path, error=(r.stderr.strip() or "df gave no answer")[:200])
            continue
        row = rows[0]
        out[name] = Usage(
            name,
            path,
            size=int(row["size"]),
            used=int(row["used"]),
            avail=int(row["avail"]),
            pct=float(row["pct"]),
            mount=str(row["mount"]),
        )
    return out


def usage_table(ctx: OpsContext, paths: Mapping[str, str]) -> pd.DataFrame:
    """`usage` as a small table: filesystem, path, used %, free, size (unanswered paths left out)."""
    import pandas as pd

    rows = [
        {
            "filesystem": u.name,
            "path": u.path,
            "used %": u.pct,
            "free": human(u.avail),
            "size": human(u.size),
        }
        for u in usage(ctx, paths).values()
        if u.error is None
    ]
    return pd.DataFrame(rows)


def space_report(ctx: OpsContext, dirs: Sequence[str]) -> pd.DataFrame:
    """`du` of everything directly under each of `dirs`, biggest first: path, bytes, size."""
    import pandas as pd

    targets = " ".join(f"{shlex.quote(d)}/*" for d in dirs)
    r = ctx.probe(f"du -sb {targets} 2>/dev/null | sort -n", shell=True, warn=True, accept=(0, 1))
    rows = []
    for line in r.stdout.splitlines():
        size, _, path = line.partition("\t")
        if size.isdigit():
            rows.append({"path": path, "bytes": int(size), "size": human(int(size))})
    df = pd.DataFrame(rows, columns=["path", "bytes", "size"])
    return df.sort_values("bytes", ascending=False).reset_index(drop=True)
