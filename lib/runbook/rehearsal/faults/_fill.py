"""Fill a backups directory to the last byte with old filler backups (the disk-full fault).

Standard library only and runnable as a script, because the twin runs this very
file on its server (`python3 - DIR SIZE`) while the sandbox imports `fill`: one
filling for both targets. Old daily backups go before the real ones (October),
then one last file takes every byte left, so writes really fail with ENOSPC.
"""

from __future__ import annotations

import os
import secrets
import sys
import time
from pathlib import Path

FILLER_BYTES = 700 * 1024


def fill(directory: Path, size: int = FILLER_BYTES) -> None:
    """Old backups of `size` bytes, dated before the oldest file there, until the disk is full."""
    oldest = min((f.stat().st_mtime for f in directory.iterdir()), default=time.time())
    for day in range(1, 29):
        path = directory / f"dealix-2026-10-{day:02d}.sql.gz"
        mtime = oldest - 86400 * (40 - day)
        try:
            with path.open("wb", buffering=0) as fh:
                fh.write(secrets.token_bytes(size))
        except OSError:
            path.unlink(missing_ok=True)
            break
        finally:
            if path.exists():
                os.utime(path, (mtime, mtime))
    filler = directory / "dealix-2026-09-30.sql.gz"
    with filler.open("wb", buffering=0) as fh:
        try:
            while True:
                fh.write(secrets.token_bytes(4096))
        except OSError:
            pass
    mtime = oldest - 86400 * 60
    os.utime(filler, (mtime, mtime))


if __name__ == "__main__":
    fill(Path(sys.argv[1]), int(sys.argv[2]))
