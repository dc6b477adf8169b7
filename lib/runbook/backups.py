"""Backups and restores (runbook scenario 5): the monthly drill and the incident restore.

Everything heavy happens ON THE SERVER: the dump is streamed from the
backups directory straight into psql (`gunzip -c < dump | psql`) or read by
`pg_restore -j N` (custom-format dumps); nothing crosses the operator's
connection but a few progress numbers.

Example (in a notebook)::

    from runbook import backups, open_session
    s = open_session("restore_drill")
    drill = backups.RestoreDrill(s)
    drill.list()           # the newest backups: name, size, age
    drill.preflight()      # RPO and minimum size, as checks
    drill.restore()        # into the scratch database, with progress
    drill.validate()       # row counts, data age, sample checksums
    drill.teardown()       # drop the scratch database (always)
    s.done()

Tools are found next to the profile's psql::

    >>> tool("sudo -n -u postgres psql", "pg_restore")
    'sudo -n -u postgres pg_restore'
    >>> tool("runuser -u postgres -- /usr/lib/postgresql/15/bin/psql -p 5433", "pg_restore")
    'runuser -u postgres -- /usr/lib/postgresql/15/bin/pg_restore -p 5433'
"""

from __future__ import annotations

import atexit
import contextlib
import fnmatch
import json
import os
import re
import shlex
import threading
import time
import uuid
from dataclasses import asdict, dataclass, field
from datetime import UTC, datetime
from pathlib import PurePosixPath
from typing import TYPE_CHECKING, Any

from runbook.errors import (
    CommandFailed,
    CommandInterrupted,
    Forbidden,
    NotConfirmed,
    ParameterError,
    Refusal,
    RunbookError,
)
from runbook.guards import forbid

if TYPE_CHECKING:
    import pandas as pd

    from runbook.session import Session

PLAIN, CUSTOM = "plain-gzip", "custom"
_DB_NAME = re.compile(r"[a-z_][a-z0-9_]{0,62}")
_SYSTEM_DBS = {"postgres", "template0", "template1"}


class RestoreFailed(RunbookError):
    """The restore did not complete; the message says what is left and how to go back."""


# ---------------------------------------------------------------- helpers


def tool(psql_prefix: str, name: str) -> str:
    """The profile's psql invocation with psql replaced by another client tool."""
    words = shlex.split(psql_prefix)
    for i in range(len(words) - 1, -1, -1):
        p = PurePosixPath(words[i])
        if p.name == "psql":
            words[i] = name if str(p.parent) in (".", "") else str(p.parent / name)
            return shlex.join(words)
    raise ParameterError(
        f"postgres.psql ({psql_prefix!r}) does not name psql; cannot derive {name}",
        key="postgres.psql",
    )


def ident(name: str) -> str:
    """A database name checked and double-quoted for SQL.

    >>> ident("dealix_restore_test")
    '"dealix_restore_test"'
    """
    if not _DB_NAME.fullmatch(name or ""):
        raise ParameterError(
            f"database name {name!r} is not valid (lower case letters, digits, _)", key="database"
        )
    return f'"{name}"'


def literal(text: str) -> str:
    """A SQL string literal.

    >>> literal("it's")
    "'it''s'"
    """
    return "'" + text.replace("'", "''") + "'"


def human_bytes(n: float | None) -> str:
    """Bytes for people.

    >>> human_bytes(1536), human_bytes(3 * 1024**3)
    ('1.5 KiB', '3.0 GiB')
    """
    if n is None:
        return "?"
    for unit in ("B", "KiB", "MiB", "GiB", "TiB"):
        if abs(n) < 1024 or unit == "TiB":
            return f"{n:.0f} {unit}" if unit == "B" else f"{n:.1f} {unit}"
        n /= 1024
    return f"{n:.1f} TiB"


def corrupt_name(existing: set[str], day: str) -> str:
    """`dealix_corrupt_YYYYMMDD`, or with _2, _3 … when taken: never an overwrite.

    >>> corrupt_name({"dealix_corrupt_20261127"}, "20261127")
    'dealix_corrupt_20261127_2'
    >>> corrupt_name(set(), "20261127")
    'dealix_corrupt_20261127'
    """
    base = f"dealix_corrupt_{day}"
    if base not in existing:
        return base
    n = 2
    while f"{base}_{n}" in existing:
        n += 1
    return f"{base}_{n}"


def in_jupyterlab() -> bool:
    """True in a kernel started by Jupyter's server (not papermill, not cron)."""
    return bool(os.environ.get("JPY_SESSION_NAME")) and not os.environ.get("RUNBOOK_RUN_DIR")


# ---------------------------------------------------------------- listing


def list_backups(s: Session, *, limit: int | None = 10) -> pd.DataFrame:
    """The backups on the server, newest first: name, format, size, modified, age_hours.

    A read-only `find` in the profile's backups dir (the runbook's
    `ls -lht /var/backups/postgres/*.sql.gz | head -5`, machine-readable).
    """
    import pandas as pd

    b = s.profile.backups
    cmd = (
        f"find {shlex.quote(b.dir)} -maxdepth 1 -type f "
        f"\\( -name {shlex.quote(b.pattern)} -o -name {shlex.quote(b.custom_pattern)} \\) "
        "-printf '%T@\\t%s\\t%f\\n'"
    )
    r = s.probe(cmd, shell=True, warn=True, label="list-backups")
    now = time.time()
    rows = []
    for line in r.stdout.splitlines():
        parts = line.split("\t")
        if len(parts) != 3:
            continue
        mtime, size, name = float(parts[0]), int(parts[1]), parts[2]
        age, age_from = backup_age(name, mtime, now)
        rows.append(
            {
                "name": name,
                "format": CUSTOM if fnmatch.fnmatch(name, b.custom_pattern) else PLAIN,
                "size_bytes": size,
                "size": human_bytes(size),
                "modified": datetime.fromtimestamp(mtime, UTC).strftime("%Y-%m-%d %H:%M UTC"),
                "age_hours": round(age / 3600, 2),
                "age_from": age_from,
                "path": str(PurePosixPath(b.dir) / name),
            }
        )
    cols = ["name", "format", "size_bytes", "size", "modified", "age_hours", "age_from", "path"]
    frame = pd.DataFrame(rows, columns=cols).sort_values("age_hours", kind="stable")
    frame = frame.reset_index(drop=True)
    return frame.head(limit) if limit else frame


_NAME_TIME = re.compile(
    r"(?<!\d)(?P<y>20\d\d)-?(?P<m>[01]\d)-?(?P<d>[0-3]\d)"
    r"(?:[T_-]?(?P<H>[0-2]\d)[:]?(?P<M>[0-5]\d)(?:[:]?(?P<S>[0-5]\d))?Z?)?(?!\d)"
)


def name_time(name: str) -> datetime | None:
    """The time a backup's file name claims, in UTC; None when the name has no date.

    A name with a date only (`dealix-2026-04-23.sql.gz`) claims the end of
    that day: the newest time the name allows, so the name alone never makes
    a backup look older than it can be.

    >>> name_time("dealix-2026-04-23.sql.gz").isoformat()
    '2026-04-23T23:59:59+00:00'
    >>> name_time("dealix-20260423T0300Z.dump").isoformat()
    '2026-04-23T03:00:00+00:00'
    >>> name_time("dealix-latest.sql.gz") is None
    True
    """
    m = _NAME_TIME.search(name)
    if m is None:
        return None
    try:
        day = datetime(int(m["y"]), int(m["m"]), int(m["d"]), tzinfo=UTC)
    except ValueError:
        return None
    if m["H"] is None:
        return day.replace(hour=23, minute=59, second=59)
    try:
        return day.replace(hour=int(m["H"]), minute=int(m["M"]), second=int(m["S"] or 0))
    except ValueError:
        return None


def backup_age(name: str, mtime: float, now: float) -> tuple[float, str]:
    """(age in seconds, "mtime" or "name"): the older of the file's mtime and its name's date.

    A restored-from-tape or copied backup has a fresh mtime and an old
    name; a re-dated name over an old file is the reverse. Either way the
    RPO check must see the older one, and say which it used.

    >>> import calendar
    >>> now = calendar.timegm((2026, 4, 30, 12, 0, 0))
    >>> backup_age("dealix-2026-04-23.sql.gz", now - 60, now)[1]
    'name'
    >>> backup_age("dealix-2026-04-30.sql.gz", now - 5 * 86400, now)[1]
    'mtime'
    """
    by_mtime = now - mtime
    claimed = name_time(name)
    if claimed is None:
        return by_mtime, "mtime"
    by_name = now - claimed.timestamp()
    return (by_name, "name") if by_name > by_mtime else (by_mtime, "mtime")


def choose(frame: pd.DataFrame, backup: str | None = None) -> dict[str, Any] | None:
    """The newest backup, or the one named (file name or full path); None if none."""
    if frame.empty:
        return None
    if backup in (None, "", "newest", "latest"):
        row = frame.iloc[0]
    else:
        hits = frame[(frame["name"] == backup) | (frame["path"] == backup)]
        if hits.empty:
            raise ParameterError(
                f"backup {backup!r} is not among the backups found: {', '.join(frame['name'])}",
                key="backup",
            )
        row = hits.iloc[0]
    # plain Python values (numpy's int64 is not JSON)
    return {str(k): (v.item() if hasattr(v, "item") else v) for k, v in row.items()}


def preflight(
    s: Session, chosen: dict[str, Any] | None, *, rpo_hours: float, min_bytes: int
) -> bool:
    """Refuse a missing, stale or too-small backup: recorded as failed checks, never raised."""
    found = chosen is not None
    s.check(
        "Backup found",
        expected=f"a {s.profile.backups.pattern} in {s.profile.backups.dir}",
        actual=chosen["name"] if chosen else "none",
        passed=found,
    )
    if chosen is None:
        return False
    fresh = float(chosen["age_hours"]) <= rpo_hours
    age_from = chosen.get("age_from", "mtime")
    source = (
        f"by the date in its name; its mtime {chosen['modified']} is newer"
        if age_from == "name"
        else f"by its mtime {chosen['modified']}"
    )
    s.check(
        "Backup fresh (RPO)",
        expected=f"newest backup <= {rpo_hours:g} h old (the older of its mtime and its name's date)",
        actual=f"{chosen['age_hours']:.1f} h old ({chosen['name']}, {source})",
        passed=fresh,
        note=(
            f"age taken from the {'name' if age_from == 'name' else 'mtime'}"
            + ("" if fresh else "; no backup within the RPO: the nightly dump is not running")
        ),
    )
    big = int(chosen["size_bytes"]) >= min_bytes
    s.check(
        "Backup size",
        expected=f">= {human_bytes(min_bytes)} ({min_bytes} bytes)",
        actual=f"{human_bytes(chosen['size_bytes'])} ({chosen['size_bytes']} bytes)",
        passed=big,
        note="" if big else "a backup this small is empty or truncated",
    )
    return fresh and big


def scratch_problem(profile: Any, name: str) -> str | None:
    """Why `name` must not be the drill's scratch database, or None when it may be.

    >>> from runbook.profile import load_profile
    >>> p = load_profile("production")
    >>> scratch_problem(p, "dealix")
    'the scratch database must not be the production database (dealix)'
    >>> scratch_problem(p, "dealix_corrupt_20261127")
    'dealix_corrupt_20261127 is kept evidence or a system database, not a scratch database'
    >>> scratch_problem(p, "dealix_restore_test") is None
    True
    """
    ident(name)
    prod = profile.postgres.database
    if name == prod:
        return f"the scratch database must not be the production database ({prod})"
    if fnmatch.fnmatch(name, profile.do_not_touch.corrupt_db_pattern) or name in _SYSTEM_DBS:
        return f"{name} is kept evidence or a system database, not a scratch database"
    return None


def guard_scratch(s: Session, name: str) -> None:
    """Record whether the scratch database is distinct from production (and the kept and
    system databases), then refuse it when it is not."""
    problem = scratch_problem(s.profile, name)
    prod = s.profile.postgres.database
    s.check(
        "Scratch database is not production",
        expected=f"!= {prod}, not {s.profile.do_not_touch.corrupt_db_pattern}, not a system DB",
        actual=name if problem is None else f"{name}: {problem}",
        passed=problem is None,
    )
    if problem is not None:
        raise forbid("no-restore-into-production-db", f"restore drill into {name}", problem)


# ---------------------------------------------------------------- databases


def _admin_sql(s: Session, sql: str) -> None:
    s.db.execute(sql, database="postgres")


def database_exists(s: Session, name: str) -> bool:
    df = s.db.query(
        f"SELECT count(*) AS n FROM pg_database WHERE datname = {literal(name)}",  # noqa: S608 - names via ident(), values via literal()
        database="postgres",
    )
    return int(df["n"][0]) > 0


def databases(s: Session, like: str = "%") -> list[str]:
    df = s.db.query(
        f"SELECT datname FROM pg_database WHERE datname LIKE {literal(like)} ORDER BY 1",  # noqa: S608 - names via ident(), values via literal()
        database="postgres",
    )
    return [] if df.empty else [str(x) for x in df["datname"]]


def create_database(s: Session, name: str, *, owner: str | None = None) -> None:
    """CREATE DATABASE (owned by `owner`, the app's role, when given)."""
    sql = f"CREATE DATABASE {ident(name)}" + (f" OWNER {ident(owner)}" if owner else "")
    _admin_sql(s, sql)


def drop_database(s: Session, name: str) -> None:
    """Drop a (scratch) database, closing its connections first. Guards apply."""
    _admin_sql(s, f"DROP DATABASE IF EXISTS {ident(name)} WITH (FORCE)")


# ---------------------------------------------------------------- restore


@dataclass(repr=False)
class RestoreResult:
    """What one restore did (also written to the evidence as JSON)."""

    backup: str
    database: str
    format: str
    ok: bool | None
    exit_code: int | None
    duration_s: float
    bytes_total: int
    jobs: int
    command: str = ""
    error: str = ""
    dry_run: bool = False
    progress: list[tuple[float, int]] = field(default_factory=list)

    def __repr__(self) -> str:
        if self.dry_run:
            return f"<restore of {self.backup} into {self.database}: dry run, not run>"
        verdict = "ok" if self.ok else f"FAILED (exit {self.exit_code})"
        return (
            f"<restore of {self.backup} into {self.database}: {verdict} in {self.duration_s} s, "
            f"{human_bytes(self.bytes_total)} {self.format}, {self.rate_mb_s or 0:.1f} MB/s"
            + (f", {self.jobs} jobs>" if self.format == CUSTOM else ">")
        )

    @property
    def rate_mb_s(self) -> float | None:
        if not self.duration_s:
            return None
        return self.bytes_total / 1e6 / self.duration_s


class _Progress(threading.Thread):
    """Polls a server-side byte counter and prints a line every `interval` seconds."""

    def __init__(self, s: Session, command: str, *, total: int, label: str, interval: float, bar):
        super().__init__(daemon=True, name="restore-progress")
        self.s, self.command, self.total, self.label = s, command, total, label
        self.interval = interval
        self.stop_event = threading.Event()
        self.samples: list[tuple[float, int]] = []
        self.bar = bar
        self.t0 = time.monotonic()

    def read(self) -> int | str | None:
        """Bytes so far, "done" when the reader has exited (psql still working), or None."""
        out: list[bytes] = []
        try:
            self.s.transport.execute(
                self.command, on_stdout=out.append, on_stderr=lambda _b: None, timeout=10
            )
        except Exception:
            return None
        text = b"".join(out).decode(errors="replace").strip().splitlines()
        if not text:
            return None
        last = text[-1].strip()
        return int(last) if last.isdigit() else ("done" if last == "done" else None)

    def run(self) -> None:
        while not self.stop_event.wait(self.interval):
            n = self.read()
            if n is None:
                continue
            if not isinstance(n, int):
                # "done": the whole dump is read: psql is finishing (indexes, constraints);
                # keep saying so, so a long tail never looks like a hang
                t = time.monotonic() - self.t0
                if not self.samples or self.samples[-1][1] != self.total:
                    self.samples.append((round(t, 1), self.total))
                    if self.bar is not None:
                        self.show(t, self.total)
                if self.bar is None:
                    print(
                        f"  {self.label}: dump read (100 %), psql finishing "
                        f"(indexes, constraints), {t:.0f} s",
                        flush=True,
                    )
                continue
            t = time.monotonic() - self.t0
            self.samples.append((round(t, 1), n))
            self.show(t, n)

    def show(self, t: float, n: int) -> None:
        if self.bar is not None:
            with contextlib.suppress(Exception):
                self.bar.n = n
                self.bar.refresh()
            return
        rate = n / 1e6 / t if t else 0.0
        if self.total:
            print(
                f"  {self.label}: {100 * n / self.total:5.1f} % "
                f"({human_bytes(n)} of {human_bytes(self.total)}), {rate:.1f} MB/s, {t:.0f} s",
                flush=True,
            )
        else:
            print(f"  {self.label}: {human_bytes(n)}, {t:.0f} s", flush=True)

    def finish(self, ok: bool | None = None) -> None:
        """Stop polling; a finished restore fills the bar (a failed one leaves it red)."""
        self.stop_event.set()
        self.join(timeout=15)
        if ok and self.total and (not self.samples or self.samples[-1][1] != self.total):
            # finished between two polls: the last sample, line or bar says 100 %
            t = time.monotonic() - self.t0
            self.samples.append((round(t, 1), self.total))
            self.show(t, self.total)
        if self.bar is not None:
            with contextlib.suppress(Exception):
                self.bar.close()


def _make_bar(total: int, label: str, enabled: bool):
    """An ipywidgets progress bar (tqdm.notebook) for JupyterLab, or None for log lines.

    tqdm.notebook, not tqdm.auto: the caller already knows it runs in a
    Jupyter kernel, and tqdm.auto would quietly fall back to a text bar that
    JupyterLab shows as a frozen stderr line. If the widget cannot be made
    (ipywidgets missing), the restore prints periodic log lines instead.
    """
    if not enabled:
        return None
    try:
        from tqdm.notebook import tqdm as notebook_tqdm

        return notebook_tqdm(total=total or None, unit="B", unit_scale=True, desc=label)
    except ImportError:
        return None


def server_cores(s: Session) -> int:
    r = s.probe("nproc", shell=True, warn=True, label="nproc")
    return int(r.stdout.strip()) if r.ok and r.stdout.strip().isdigit() else 1


def restore_command(
    s: Session,
    chosen: dict[str, Any],
    database: str,
    *,
    jobs: int = 1,
    single_transaction: bool = True,
    pidfile: str = "",
) -> str:
    """The server-side pipeline that restores `chosen` into `database`.

    Plain gzip'd SQL: `gunzip -c < dump | psql -v ON_ERROR_STOP=1 --single-transaction`.
    gunzip writes its PID to `pidfile` so its read offset in the dump can be
    polled from /proc (progress without pv). If gunzip fails midway (a corrupt
    or truncated dump) psql would otherwise take the partial stream and
    COMMIT it: we append a statement that cannot succeed, so psql stops and
    the single transaction rolls back, leaving nothing half-restored.

    Custom format: `pg_restore --exit-on-error -j N -d database dump`.
    """
    psql = s.profile.postgres.psql
    path = shlex.quote(chosen["path"])
    db = shlex.quote(database)
    if chosen["format"] == CUSTOM:
        return f"{tool(psql, 'pg_restore')} --exit-on-error -j {int(jobs)} -d {db} {path}"
    pid = shlex.quote(pidfile or f"/tmp/runbook-restore-{uuid.uuid4().hex[:12]}.pid")
    abort = (
        "{ echo 'restore: gunzip failed: aborting the restore transaction' >&2; "
        "printf '\\n\\\\.\\nSELECT runbook_restore_aborted_gunzip_failed();\\n'; }"
    )
    single = " --single-transaction" if single_transaction else ""
    return (
        f"{{ sh -c 'echo $$ > {pid}; exec gunzip -c' < {path} || {abort}; }} "
        f"| {psql} -X -q -v ON_ERROR_STOP=1{single} -d {db}; "
        f"rc=$?; rm -f {pid}; exit $rc"
    )


def restore(
    s: Session,
    chosen: dict[str, Any],
    database: str,
    *,
    jobs: int | None = None,
    interval: float = 5.0,
    bar: bool | None = None,
    single_transaction: bool = True,
    timeout: float | None = None,
) -> RestoreResult:
    """Restore `chosen` into `database` on the server, showing progress; never raises on
    a failed restore (the result says ok=False), only on interrupts and refusals."""
    fmt = chosen["format"]
    jobs = jobs or (server_cores(s) if fmt == CUSTOM else 1)
    pidfile = f"/tmp/runbook-restore-{uuid.uuid4().hex[:12]}.pid"
    cmd = restore_command(
        s, chosen, database, jobs=jobs, single_transaction=single_transaction, pidfile=pidfile
    )
    total = int(chosen["size_bytes"])
    if fmt == CUSTOM:
        # pg_restore reads the file with N workers: show the restored database's size
        poll = f"{s.profile.postgres.psql} -X -At -d postgres -c " + shlex.quote(
            f"SELECT pg_database_size({literal(database)})"
        )
        label, shown_total = f"restore {chosen['name']} (database size)", 0
    else:
        # the compressed bytes gunzip has read so far: its offset in the dump
        # ("done" once gunzip has exited; the pid file goes when psql has finished)
        poll = (
            f'p=$(cat {shlex.quote(pidfile)} 2>/dev/null) && [ -n "$p" ] && '
            "{ sed -n 's/^pos:[[:space:]]*//p' /proc/$p/fdinfo/0 2>/dev/null | grep . "
            "|| echo done; }"
        )
        label, shown_total = f"restore {chosen['name']}", total
    print(
        f"restoring {chosen['name']} ({human_bytes(total)}, {fmt}) into {database} "
        f"on the server{f' with {jobs} jobs' if fmt == CUSTOM else ''}",
        flush=True,
    )
    use_bar = in_jupyterlab() if bar is None else bar
    progress = None
    if not s.dry_run:
        progress = _Progress(
            s,
            poll,
            total=shown_total,
            label=label,
            interval=interval,
            bar=_make_bar(shown_total, label, use_bar),
        )
        progress.start()
    t0 = time.monotonic()
    try:
        r = s.run(cmd, shell=True, warn=True, timeout=timeout, label="restore")
    except BaseException:
        if progress is not None:
            progress.finish(ok=False)
        raise
    # the restore's own time, before waiting for the poller to notice the end
    duration = time.monotonic() - t0
    if progress is not None:
        progress.finish(ok=r.ok and not r.dry_run)
    if r.dry_run:
        return RestoreResult(
            chosen["name"], database, fmt, None, None, 0.0, total, jobs, r.command, dry_run=True
        )
    error = ""
    if not r.ok:
        lines = [ln for ln in r.stderr.splitlines() if ln.strip()]
        # the cause first: gunzip's complaint, else psql's/pg_restore's first error
        cause = next((ln for ln in lines if "gzip" in ln or "unexpected end" in ln), None) or next(
            (ln for ln in lines if "ERROR" in ln or "error" in ln), f"exit {r.exit_code}"
        )
        error = s.redactor.redact(cause.strip() + "\n" + "\n".join(lines[-8:]))
    result = RestoreResult(
        backup=chosen["name"],
        database=database,
        format=fmt,
        ok=r.ok,
        exit_code=r.exit_code,
        duration_s=round(duration, 2),
        bytes_total=total,
        jobs=jobs,
        command=r.command,
        error=error,
        progress=progress.samples if progress else [],
    )
    print(
        f"restore {'finished' if r.ok else 'FAILED'} in {duration:.1f} s "
        f"({human_bytes(total)} compressed, {result.rate_mb_s or 0:.1f} MB/s)"
        + ("" if r.ok else f": {error.splitlines()[0]}"),
        flush=True,
    )
    return result


# ---------------------------------------------------------------- validation


def _one(s: Session, sql: str, database: str) -> dict[str, Any]:
    df = s.db.query(sql, database=database)
    return {} if df.empty else dict(df.iloc[0])


def table_facts(s: Session, database: str, table: str, sample: int = 1000) -> dict[str, Any]:
    """count, newest created_at (age in hours) and an md5 of the first `sample` rows by id."""
    t = f"public.{ident(table)}"
    cols = s.db.query(
        "SELECT column_name FROM information_schema.columns "  # noqa: S608 - names via ident(), values via literal()
        f"WHERE table_schema = 'public' AND table_name = {literal(table)}",
        database=database,
    )
    names = set() if cols.empty else set(cols["column_name"])
    if not names:
        raise RestoreFailed(f"table {table} does not exist in {database}")
    facts: dict[str, Any] = {"rows": int(_one(s, f"SELECT count(*) AS n FROM {t}", database)["n"])}  # noqa: S608 - names via ident(), values via literal()
    if "created_at" in names:
        row = _one(
            s,
            "SELECT max(created_at) AS newest, "  # noqa: S608 - names via ident(), values via literal()
            f"extract(epoch FROM now() - max(created_at)) / 3600 AS age_h FROM {t}",
            database,
        )
        facts["newest"] = None if row.get("newest") != row.get("newest") else row.get("newest")
        age = row.get("age_h")
        facts["age_hours"] = None if age is None or age != age else round(float(age), 2)
    if "id" in names:
        row = _one(
            s,
            "SELECT md5(coalesce(string_agg(x::text, E'\\n' ORDER BY x.id), '')) AS h "  # noqa: S608 - names via ident(), values via literal()
            f"FROM (SELECT * FROM {t} ORDER BY id LIMIT {int(sample)}) x",
            database,
        )
        facts["sample_md5"] = row.get("h")
    return facts


def _as_utc(value: Any) -> datetime:
    """A timestamp from the database (datetime or text) as an aware UTC datetime.

    >>> _as_utc("2026-11-27 08:00:00+00:00").isoformat()
    '2026-11-27T08:00:00+00:00'
    """
    ts = value if isinstance(value, datetime) else datetime.fromisoformat(str(value).replace(" ", "T"))
    return ts.replace(tzinfo=UTC) if ts.tzinfo is None else ts.astimezone(UTC)


def _pct(got: int, base: int) -> float:
    """Signed difference in percent of `base`.

    >>> round(_pct(95, 100), 1), _pct(0, 0)
    (-5.0, 0.0)
    """
    return 100.0 * (got - base) / base if base else (0.0 if got == 0 else 100.0)


def compare(
    s: Session,
    scratch: str,
    tables: list[str],
    *,
    tolerance_pct: float,
    rpo_hours: float,
    sample: int = 1000,
) -> pd.DataFrame:
    """Per table: rows in the restore vs production (delta %), data age, sample checksum.

    Each comparison is a check; a table missing from the restore is a failed check.
    """
    import pandas as pd

    prod = s.profile.postgres.database
    rows: list[dict[str, Any]] = []
    ages: list[float] = []
    for table in tables:
        try:
            got = table_facts(s, scratch, table, sample)
        except (RestoreFailed, CommandFailed) as exc:
            s.check(
                f"Row count {table}",
                expected=f"within ±{tolerance_pct:g} % of production",
                actual=f"not in the restore: {str(exc).splitlines()[0][:200]}",
                passed=False,
            )
            rows.append({"table": table, "restored_rows": None})
            continue
        want = table_facts(s, prod, table, sample)
        # Compare with what production held when the dump was taken (rows
        # created up to the newest restored one): production's growth since
        # the dump is the RPO check's business, and counting it here would
        # fail a complete backup on a busy day and pass one missing rows on a
        # quiet one. Production's total is shown as well.
        base = want["rows"]
        basis = "production"
        if got.get("newest") is not None and "newest" in want:
            base = int(
                _one(
                    s,
                    f"SELECT count(*) AS n FROM public.{ident(table)} "  # noqa: S608 - ident()
                    f"WHERE created_at <= {literal(str(got['newest']))}::timestamptz",
                    prod,
                )["n"]
            )
            basis = "production up to the newest restored row"
        delta = _pct(got["rows"], base)
        s.check(
            f"Row count {table}",
            expected=f"within ±{tolerance_pct:g} % of {basis} ({base})",
            actual=(
                f"{got['rows']} restored ({delta:+.2f} %); production now {want['rows']} "
                f"({_pct(got['rows'], want['rows']):+.2f} %)"
            ),
            passed=abs(delta) <= tolerance_pct,
        )
        same = None
        if "sample_md5" in got and "sample_md5" in want:
            same = got["sample_md5"] == want["sample_md5"]
            s.check(
                f"Sample checksum {table}",
                expected=f"md5 of the first {sample} rows by id equals production's",
                actual=f"{'equal' if same else 'different'} ({got['sample_md5']})",
                passed=same,
            )
        if got.get("age_hours") is not None:
            ages.append(got["age_hours"])
        # per table, as numbers in record.json (history and dashboards read these)
        s.metric(f"rows_restored_{table}", got["rows"], "rows")
        s.metric(f"rows_production_at_dump_{table}", base, "rows")
        s.metric(f"rows_production_now_{table}", want["rows"], "rows")
        s.metric(f"row_delta_pct_{table}", round(delta, 2), "%", target=tolerance_pct)
        rows.append(
            {
                "table": table,
                "restored_rows": got["rows"],
                "production_rows_at_dump": base,
                "delta_rows": got["rows"] - base,
                "delta_pct": round(delta, 2),
                "production_rows_now": want["rows"],
                "delta_now_pct": round(_pct(got["rows"], want["rows"]), 2),
                "newest_restored": str(got.get("newest")),
                "data_age_hours": got.get("age_hours"),
                "sample_checksum_equal": same,
            }
        )
    age = min(ages) if ages else None
    if age is not None:
        s.metric("data_age_hours", age, "h", target=rpo_hours)
    s.check(
        "Data age (RPO)",
        expected=f"newest restored row <= {rpo_hours:g} h old",
        actual="no created_at in the restore" if age is None else f"{age:.1f} h old",
        passed=age is not None and age <= rpo_hours,
    )
    return pd.DataFrame(rows)


# ---------------------------------------------------------------- the drill


class RestoreDrill:
    """The monthly drill: newest backup into a scratch database, validated, torn down.

    Every step records checks instead of raising, so the teardown cell always
    runs; an interrupt during the restore drops the scratch database before
    it propagates, and an `atexit` hook is the last resort if the kernel is
    shut down between cells.
    """

    def __init__(
        self,
        s: Session,
        *,
        backup: str | None = None,
        rpo_hours: float | None = None,
        row_tolerance_pct: float | None = None,
        time_target_minutes: float | None = None,
        tables: list[str] | None = None,
        scratch_db: str = "dealix_restore_test",
        min_backup_bytes: int | None = None,
        jobs: int | None = None,
    ):
        t = s.profile.targets
        self.s = s
        self.backup = backup
        self.rpo_hours = float(rpo_hours if rpo_hours is not None else t.rpo_hours)
        self.tolerance = float(
            row_tolerance_pct if row_tolerance_pct is not None else t.row_tolerance_pct
        )
        self.target_min = float(
            time_target_minutes if time_target_minutes is not None else t.restore_minutes
        )
        self.tables = list(tables or s.profile.backups.tables)
        self.scratch = scratch_db
        self.min_bytes = int(
            min_backup_bytes if min_backup_bytes is not None else s.profile.backups.min_size_bytes
        )
        self.jobs = jobs
        self.frame: pd.DataFrame | None = None
        self.chosen: dict[str, Any] | None = None
        self.ready = False
        self.result: RestoreResult | None = None
        self.comparison: pd.DataFrame | None = None
        self.created = False
        self.torn_down = False
        guard_scratch(s, scratch_db)
        atexit.register(self._last_resort)

    def list(self) -> pd.DataFrame:
        """The newest backups (name, format, size, modified, age)."""
        self.frame = list_backups(self.s)
        return self.frame

    def preflight(self) -> bool:
        """Choose the backup, check RPO and size (failed checks, not errors), take the lock."""
        if self.frame is None:
            self.list()
        assert self.frame is not None
        self.chosen = choose(self.frame, self.backup)
        with self.s.step("Preflight: backup age and size"):
            self.ready = preflight(
                self.s, self.chosen, rpo_hours=self.rpo_hours, min_bytes=self.min_bytes
            )
        if not self.ready:
            print("preflight failed: the backup is NOT restored (see the failed checks)")
        return self.ready

    def restore(self) -> RestoreResult | None:
        """Create the scratch database and restore into it."""
        if not self.ready or self.chosen is None:
            print("skipped: the preflight did not pass")
            return None
        s = self.s
        s.acquire_lock()
        try:
            with s.step("1. Create isolated DB"):
                if database_exists(s, self.scratch):
                    # left by an earlier drill that died: it is ours to replace
                    print(f"{self.scratch} exists from an earlier run: dropping it first")
                    drop_database(s, self.scratch)
                create_database(s, self.scratch)
                self.created = True
            with s.step("2. Restore"):
                # let a slow restore finish (it fails "Restore time", with its real
                # duration) instead of dying at the profile's command timeout
                self.result = restore(
                    s,
                    self.chosen,
                    self.scratch,
                    jobs=self.jobs,
                    timeout=max(3600.0, 4 * self.target_min * 60),
                )
            r = self.result
            if r.dry_run:
                return r
            s.check(
                "Restore completed",
                expected="exit 0, the whole dump read",
                actual="ok" if r.ok else f"exit {r.exit_code}: {r.error.splitlines()[0]}",
                passed=bool(r.ok),
                note=r.error[-500:] if not r.ok else "",
            )
            target_s = self.target_min * 60
            advice = ""
            if r.format == PLAIN and r.duration_s > 0.5 * target_s:
                advice = (
                    "the restore takes over half its time target: switch the nightly dump to "
                    "custom format (pg_dump -Fc) and restore it with pg_restore -j <cores>"
                )
                print("RECOMMENDATION:", advice)
            # the record's numbers (record.json "metrics"), not only the checks' text
            s.metric("restore_bytes", r.bytes_total, "B")
            if r.ok:
                s.metric("restore_minutes", r.duration_s / 60, "min", target=self.target_min)
                if r.rate_mb_s is not None:
                    s.metric("restore_rate_mb_s", r.rate_mb_s, "MB/s")
            s.check(
                "Restore time",
                expected=f"<= {self.target_min:g} min",
                actual=(
                    f"{r.duration_s:.1f} s for {human_bytes(r.bytes_total)} "
                    f"({r.rate_mb_s or 0:.1f} MB/s, {r.format}, jobs {r.jobs})"
                ),
                # a failed restore has no meaningful time: "not available", not a second failure
                passed=(r.duration_s <= target_s) if r.ok else None,
                note=advice,
            )
            return r
        except (Forbidden, NotConfirmed, CommandInterrupted):
            # refused, or the operator stopped the run (the runner runs no more
            # cells after a signal): the scratch database goes now
            with contextlib.suppress(BaseException):
                self.teardown()
            raise
        except Refusal:
            raise  # a refusal ends the run; never a red check
        except RunbookError as exc:
            s.check(
                "Restore completed",
                expected="exit 0",
                actual=f"{type(exc).__name__}: {str(exc).splitlines()[0][:300]}",
                passed=False,
            )
            return None
        except BaseException:
            # an interrupt: drop the scratch database before the cell stops the run
            with contextlib.suppress(BaseException):
                self.teardown()
            raise

    def validate(self) -> pd.DataFrame | None:
        """Row counts vs production, max(created_at) vs RPO, sample checksums."""
        if self.result is None or not self.result.ok:
            print("skipped: nothing restored to validate")
            return None
        try:
            with self.s.step("3. Validate row counts, 4. data age"):
                self.comparison = compare(
                    self.s,
                    self.scratch,
                    self.tables,
                    tolerance_pct=self.tolerance,
                    rpo_hours=self.rpo_hours,
                )
        except Refusal:
            raise  # a refusal ends the run; never a red check
        except RunbookError as exc:
            self.s.check(
                "Validation",
                expected="row counts, data age and checksums measured",
                actual=f"{type(exc).__name__}: {str(exc).splitlines()[0][:300]}",
                passed=False,
            )
            return None
        return self.comparison

    def teardown(self) -> bool:
        """Drop the scratch database (always; the verdict comes after, in done())."""
        if self.torn_down:
            return True
        s = self.s
        if s.dry_run:
            self.torn_down = True
            return True
        try:
            with s.step("5. Teardown"):
                if self.created or database_exists(s, self.scratch):
                    drop_database(s, self.scratch)
                gone = not database_exists(s, self.scratch)
            s.check(
                "Teardown",
                expected=f"scratch database {self.scratch} dropped",
                actual="dropped" if gone else "still exists",
                passed=gone,
            )
        except Refusal:
            raise  # a refusal ends the run; never a red check
        except RunbookError as exc:
            s.check(
                "Teardown",
                expected=f"scratch database {self.scratch} dropped",
                actual=f"{type(exc).__name__}: {str(exc).splitlines()[0][:300]}",
                passed=False,
            )
            return False
        self.torn_down = gone
        return gone

    def _last_resort(self) -> None:
        if self.created and not self.torn_down:
            with contextlib.suppress(BaseException):
                self.teardown()

    def summary(self) -> dict[str, Any]:
        """The drill's numbers, also written to `restore_drill.json` in the evidence."""
        data: dict[str, Any] = {
            "backup": self.chosen,
            "scratch_db": self.scratch,
            "rpo_hours": self.rpo_hours,
            "row_tolerance_pct": self.tolerance,
            "time_target_minutes": self.target_min,
            "restore": asdict(self.result) if self.result else None,
            "tables": (
                self.comparison.to_dict(orient="records") if self.comparison is not None else []
            ),
            "checks": {c.name: c.status for c in self.s.checks},
            "torn_down": self.torn_down,
        }
        self.s.evidence.write_text(
            "restore_drill.json", json.dumps(data, indent=2, default=str) + "\n"
        )
        return data


# ---------------------------------------------------------------- the incident


def swap_back_instructions(prod: str, renamed: str, psql: str) -> str:
    return (
        f"The original database is intact as {renamed}. To swap it back:\n"
        f"  1. stop the API\n"
        f"  2. {psql} -d postgres -c 'ALTER DATABASE {prod} RENAME TO "
        f"{prod}_failed_restore_{datetime.now(UTC):%Y%m%d%H%M}'\n"
        f"  3. {psql} -d postgres -c 'ALTER DATABASE {renamed} RENAME TO {prod}'\n"
        f"  4. start the API and check /health/deep"
    )


class IncidentRestore:
    """Replace production's database with a backup, keeping the old one as evidence."""

    def __init__(
        self,
        s: Session,
        *,
        reason: str,
        backup: str | None = None,
        incident_time: str | None = None,
        min_backup_bytes: int | None = None,
        tables: list[str] | None = None,
        api_wait_seconds: float = 90,
    ):
        if not (reason or "").strip():
            raise ParameterError(
                "reason is required: say what happened (it goes into the postmortem)",
                key="reason",
            )
        if s.guards.procedure != "restore_incident":
            raise ParameterError(
                "open the session with procedure='restore_incident'", key="procedure"
            )
        self.s = s
        self.reason = reason.strip()
        self.backup = backup
        self.incident_time = (
            datetime.fromisoformat(incident_time.replace("Z", "+00:00"))
            if incident_time
            else datetime.now(UTC)
        )
        if self.incident_time.tzinfo is None:
            self.incident_time = self.incident_time.replace(tzinfo=UTC)
        self.min_bytes = int(
            min_backup_bytes if min_backup_bytes is not None else s.profile.backups.min_size_bytes
        )
        self.tables = list(tables or s.profile.backups.tables)
        self.api_wait = api_wait_seconds
        self.prod = s.profile.postgres.database
        self.chosen: dict[str, Any] | None = None
        self.frame: pd.DataFrame | None = None
        self.before: dict[str, Any] = {}
        self.owner = "dealix"
        self.renamed: str | None = None
        self.clone: str | None = None
        self.validation: pd.DataFrame | None = None
        self.result: RestoreResult | None = None
        self.loss: dict[str, Any] = {}
        self.deep: dict[str, Any] = {}

    def preflight(self) -> pd.DataFrame:
        """Confirmation first (fail closed), then the backup list and its size check."""
        s = self.s
        s.require_confirmation("incident restore: replace the production database")
        self.frame = list_backups(s)
        self.chosen = choose(self.frame, self.backup)
        with s.step("Preflight"):
            found = self.chosen is not None
            s.check(
                "Backup found",
                expected=f"a backup in {s.profile.backups.dir}",
                actual=self.chosen["name"] if self.chosen else "none",
                passed=found,
            )
            if not found:
                raise RestoreFailed("no backup to restore: nothing was changed")
            assert self.chosen is not None
            big = int(self.chosen["size_bytes"]) >= self.min_bytes
            s.check(
                "Backup size",
                expected=f">= {self.min_bytes} bytes",
                actual=f"{self.chosen['size_bytes']} bytes ({self.chosen['name']})",
                passed=big,
            )
            if not big:
                raise RestoreFailed(
                    f"{self.chosen['name']} is too small to be a real backup: nothing was "
                    "changed; pick another with -p backup NAME"
                )
            if self.chosen["format"] == PLAIN:
                # the whole file must decompress before we touch production
                r = s.probe(
                    f"gzip -t {shlex.quote(self.chosen['path'])}",
                    shell=True,
                    warn=True,
                    label="gzip-test",
                )
                s.check(
                    "Backup readable (gzip -t)",
                    expected="exit 0",
                    actual="ok" if r.ok else f"exit {r.exit_code}: {r.tail(2)}",
                    passed=r.ok,
                )
                if not r.ok:
                    raise RestoreFailed(
                        f"{self.chosen['name']} is corrupt: nothing was changed; pick another"
                    )
            s.acquire_lock()
        return self.frame

    def snapshot(self) -> dict[str, Any]:
        """The damaged database's row counts and owner, for the postmortem."""
        s = self.s
        row = _one(
            s,
            "SELECT pg_get_userbyid(datdba) AS owner FROM pg_database "  # noqa: S608 - names via ident(), values via literal()
            f"WHERE datname = {literal(self.prod)}",
            "postgres",
        )
        self.owner = str(row.get("owner") or "dealix")
        for t in self.tables:
            with contextlib.suppress(RunbookError):
                self.before[t] = table_facts(s, self.prod, t)
        return self.before

    def stop_api(self) -> None:
        with self.s.step("1. Stop API to freeze writes"):
            self.s.services.stop("api")

    def restore(self) -> RestoreResult:
        """Restore the backup into a fresh clone (`<prod>_restore_<UTC>`), not into production.

        Scenario 5's preflight: "restore into a staging clone first, validate,
        then swap". Production keeps its name (and its damaged data) until
        `validate()` has passed and `swap()` renames the two.
        """
        s = self.s
        assert self.chosen is not None
        with s.step("2. Restore into a clone"):
            self.clone = f"{self.prod}_restore_{datetime.now(UTC):%Y%m%d%H%M%S}"
            create_database(s, self.clone, owner=self.owner)
            # never cut an incident restore at the profile's command timeout
            self.result = restore(s, self.chosen, self.clone, timeout=6 * 3600)
            r = self.result
            if r.dry_run:
                return r
            s.check(
                "Restore completed",
                expected=f"exit 0, into the clone {self.clone}",
                actual="ok" if r.ok else f"exit {r.exit_code}",
                passed=bool(r.ok),
                note=r.error[-500:] if not r.ok else "",
            )
            if not r.ok:
                # the single transaction rolled back: the clone is empty, ours to drop
                with contextlib.suppress(RunbookError):
                    drop_database(s, self.clone)
                raise RestoreFailed(
                    f"the restore of {self.chosen['name']} failed ({r.error.splitlines()[0]}); "
                    f"nothing was swapped: {self.untouched()}"
                )
        return r

    def untouched(self) -> str:
        """What to do when the run stops before the swap (production still in place)."""
        svc = self.s.profile.services
        return (
            f"the production database {self.prod} is untouched and the API is stopped. Either "
            f"start the API on it again (`{svc.control} start {svc.api}`) or run this notebook "
            "again with another backup (-p backup NAME)."
        )

    def validate(self) -> pd.DataFrame:
        """Before the swap: every table restored, not emptier than the damaged database.

        Per table: the clone's rows against the rows production (the damaged
        database, still in place) holds up to the newest restored row, within
        the row tolerance: a mass delete leaves production with fewer, so the
        backup passes; a truncated backup has fewer than production and fails.
        The newest restored row's age at the incident time is checked against
        the RPO (recorded; a stale backup may still be the newest good one, so
        it does not stop the swap). A failed table stops the run here.
        """
        import pandas as pd

        s = self.s
        cols = ["table", "restored_rows", "production_rows_at_dump", "delta_pct", "newest"]
        if s.dry_run or self.clone is None:
            return pd.DataFrame(columns=cols)
        tol = float(s.profile.targets.row_tolerance_pct)
        rpo = float(s.profile.targets.rpo_hours)
        rows: list[dict[str, Any]] = []
        problems: list[str] = []
        newest: datetime | None = None
        with s.step("3. Validate the clone before the swap"):
            for table in self.tables:
                try:
                    got = table_facts(s, self.clone, table)
                except (RestoreFailed, CommandFailed) as exc:
                    problems.append(f"{table} missing")
                    s.check(
                        f"Restored rows {table}",
                        expected="the table restored, with rows",
                        actual=f"not in the restore: {str(exc).splitlines()[0][:200]}",
                        passed=False,
                    )
                    continue
                base: int | None = None
                if got.get("newest") is not None:
                    ts = _as_utc(got["newest"])
                    newest = ts if newest is None or ts > newest else newest
                    with contextlib.suppress(RunbookError, KeyError, TypeError, ValueError):
                        base = int(
                            _one(
                                s,
                                f"SELECT count(*) AS n FROM public.{ident(table)} "  # noqa: S608 - ident()
                                f"WHERE created_at <= {literal(str(got['newest']))}::timestamptz",
                                self.prod,
                            )["n"]
                        )
                ok = got["rows"] > 0 and (base is None or got["rows"] >= base * (1 - tol / 100))
                if not ok:
                    problems.append(f"{table}: {got['rows']} rows")
                s.check(
                    f"Restored rows {table}",
                    expected=(
                        "> 0"
                        + (
                            f" and >= the damaged database's {base} rows up to the newest "
                            f"restored row (-{tol:g} %)"
                            if base is not None
                            else " (the damaged database cannot be counted)"
                        )
                    ),
                    actual=f"{got['rows']} restored"
                    + (f" ({_pct(got['rows'], base):+.2f} %)" if base else ""),
                    passed=ok,
                )
                rows.append(
                    {
                        "table": table,
                        "restored_rows": got["rows"],
                        "production_rows_at_dump": base,
                        "delta_pct": None if base is None else round(_pct(got["rows"], base), 2),
                        "newest": str(got.get("newest")),
                    }
                )
            age = None if newest is None else (self.incident_time - newest).total_seconds() / 3600
            s.check(
                "Restored data age (RPO)",
                expected=f"newest restored row <= {rpo:g} h before the incident",
                actual="no created_at in the restore" if age is None else f"{age:.1f} h",
                passed=age is not None and age <= rpo,
                note="" if age is None or age <= rpo else "the backup gap goes in the postmortem",
            )
            self.validation = pd.DataFrame(rows, columns=cols)
            if problems:
                # inside the step: the record names it as the step that failed
                raise RestoreFailed(
                    f"the restored clone failed validation ({'; '.join(problems)}): nothing was "
                    f"swapped; {self.untouched()} The clone is kept as {self.clone} for "
                    f"inspection (drop it when done: DROP DATABASE {self.clone})."
                )
        return self.validation

    def swap(self) -> str:
        """Rename production to dealix_corrupt_YYYYMMDD[_n] (never a drop), the clone to production."""
        s = self.s
        if not s.dry_run and (self.clone is None or self.validation is None):
            # never rename production away without a validated copy to put in its place
            raise RestoreFailed(
                f"swap() before restore() and validate() passed: nothing was swapped; "
                f"{self.untouched()}"
            )
        with s.step("4. Swap: rename current DB (evidence), the clone becomes production"):
            existing = set(databases(s, "dealix_corrupt_%"))
            self.renamed = corrupt_name(existing, datetime.now(UTC).strftime("%Y%m%d"))
            # a rename needs no one connected: the API is stopped, close the rest
            for db in (self.prod, self.clone or self.prod):
                _admin_sql(
                    s,
                    "SELECT pg_terminate_backend(pid) FROM pg_stat_activity "  # noqa: S608 - names via ident(), values via literal()
                    f"WHERE datname = {literal(db)} AND pid <> pg_backend_pid()",
                )
            _admin_sql(s, f"ALTER DATABASE {ident(self.prod)} RENAME TO {ident(self.renamed)}")
            try:
                _admin_sql(
                    s, f"ALTER DATABASE {ident(self.clone or '')} RENAME TO {ident(self.prod)}"
                )
            except Refusal:
                raise  # a refusal ends the run; never a red check
            except RunbookError:
                # put production back under its name before stopping
                _admin_sql(s, f"ALTER DATABASE {ident(self.renamed)} RENAME TO {ident(self.prod)}")
                self.renamed = None
                raise
            kept = database_exists(s, self.renamed) if not s.dry_run else None
            s.check(
                "Damaged database kept",
                expected=f"{self.prod} renamed to {self.renamed}, not dropped",
                actual="exists" if kept else ("dry run" if kept is None else "missing"),
                passed=kept,
            )
        return self.renamed

    def start_api(self) -> dict[str, Any]:
        """Start the API and wait for /health/deep green."""
        s = self.s
        with s.step("5. Restart API + verify"):
            s.services.start("api")
            if s.dry_run:
                return {}
            deadline = time.monotonic() + self.api_wait
            deep: dict[str, Any] = {}
            while time.monotonic() < deadline:
                with contextlib.suppress(RunbookError):
                    deep = s.api.deep_health()
                    if deep.get("status") == "green":
                        break
                time.sleep(2)
            self.deep = deep
            green = deep.get("status") == "green"
            s.check(
                "API deep health",
                expected="/health/deep 200, all green",
                actual=f"{deep.get('http_status')} {deep.get('status')}",
                passed=green,
                note=""
                if green or not self.renamed
                else swap_back_instructions(self.prod, self.renamed, s.profile.postgres.psql),
            )
        return deep

    def loss_window(self) -> dict[str, Any]:
        """Newest restored row vs the incident time; rows only in the damaged copy."""
        s = self.s
        if s.dry_run or self.renamed is None:
            return {}
        newest: datetime | None = None
        per: dict[str, Any] = {}
        for t in self.tables:
            try:
                f = table_facts(s, self.prod, t)
            except Refusal:
                raise  # a refusal ends the run; never a red check
            except RunbookError:
                continue
            per[t] = {"restored_rows": f["rows"], "newest": str(f.get("newest"))}
            if f.get("newest") is not None:
                ts = _as_utc(f["newest"])
                newest = ts if newest is None or ts > newest else newest
                # rows written after the backup survive only in the renamed database
                with contextlib.suppress(RunbookError):
                    n = _one(
                        s,
                        f"SELECT count(*) AS n FROM public.{ident(t)} "  # noqa: S608 - names via ident(), values via literal()
                        f"WHERE created_at > {literal(str(f['newest']))}",
                        self.renamed,
                    ).get("n")
                    per[t]["only_in_renamed"] = int(n) if n is not None else None
        window_h = None if newest is None else (self.incident_time - newest).total_seconds() / 3600
        self.loss = {
            "newest_restored": newest.isoformat() if newest else None,
            "incident_time": self.incident_time.isoformat(),
            "window_hours": None if window_h is None else round(window_h, 2),
            "tables": per,
        }
        s.check(
            "Data-loss window",
            expected="documented: newest restored row vs the incident time",
            actual=(
                "unknown (no created_at)"
                if window_h is None
                else f"{window_h:.2f} h (newest restored {newest:%Y-%m-%d %H:%M:%S} UTC, "
                f"incident {self.incident_time:%Y-%m-%d %H:%M:%S} UTC)"
            ),
            passed=window_h is not None,
        )
        return self.loss

    def postmortem(self) -> str:
        """Draft the mandatory postmortem into the evidence folder (postmortem.md)."""
        s = self.s
        b = self.chosen or {}
        lines = [
            f"# Postmortem draft: production data restored from backup ({datetime.now(UTC):%Y-%m-%d})",
            "",
            f"Reason given at restore time: {self.reason}",
            "",
            "## What happened",
            "",
            f"- Incident time: {self.incident_time:%Y-%m-%d %H:%M UTC}",
            f"- Damaged database kept as `{self.renamed}` (keep at least "
            f"{s.profile.do_not_touch.corrupt_db_keep_days} days; never dropped by this run)",
            f"- Restored backup: `{b.get('name')}` ({b.get('size')}, {b.get('modified')}, "
            f"{b.get('format')})",
            f"- Restore duration: {self.result.duration_s if self.result else '?'} s, into the "
            f"clone `{self.clone}`, validated before the swap (rows per table against the "
            "damaged database up to the newest restored row)",
            f"- API after restore: /health/deep {self.deep.get('http_status')} "
            f"{self.deep.get('status')}",
            "",
            "## Data-loss window",
            "",
            f"- Newest restored row: {self.loss.get('newest_restored')}",
            f"- Window: {self.loss.get('window_hours')} h of writes are not in the restored "
            "database",
        ]
        for t, f in self.loss.get("tables", {}).items():
            before = self.before.get(t, {}).get("rows")
            lines.append(
                f"- `{t}`: {before} rows in the damaged database before the restore, "
                f"{f.get('restored_rows')} restored; {f.get('only_in_renamed')} rows newer than "
                f"the backup exist only in `{self.renamed}` (candidates for re-import)"
            )
        lines += [
            "",
            "## How the data was lost",
            "",
            "_TODO: the exact cause (statement, deploy, person or process) and when it was "
            "noticed._",
            "",
            "## Why the backup gap existed",
            "",
            f"_TODO: backups are nightly; {self.loss.get('window_hours')} h passed between the "
            "newest restored row and the incident. Say whether the nightly job ran, and why no "
            "WAL archive / point-in-time recovery covered the gap._",
            "",
            "## What changed",
            "",
            "_TODO: the fix that prevents it (guard, permission, review) and the backup change "
            "(frequency, PITR, custom format), with owners and dates._",
            "",
            "## Evidence",
            "",
            "- [executed notebook](restore_incident.ipynb)",
            "- [record.json](record.json): steps, checks, changes",
            "- [commands.jsonl](commands.jsonl): every command as it ran",
            "- [restore_incident.json](restore_incident.json): the numbers above",
            "",
        ]
        text = "\n".join(lines)
        s.evidence.write_text("postmortem.md", text)
        s.evidence.write_text(
            "restore_incident.json",
            json.dumps(
                {
                    "reason": self.reason,
                    "backup": self.chosen,
                    "renamed": self.renamed,
                    "before": self.before,
                    "restore": asdict(self.result) if self.result else None,
                    "clone": self.clone,
                    "validation": (
                        self.validation.to_dict(orient="records")
                        if self.validation is not None
                        else []
                    ),
                    "loss": self.loss,
                    "deep_health": self.deep,
                },
                indent=2,
                default=str,
            )
            + "\n",
        )
        print(f"postmortem draft: {s.run_dir / 'postmortem.md'}")
        return text
