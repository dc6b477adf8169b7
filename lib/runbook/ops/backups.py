"""Backups on the server: listing, choosing, the restore with its progress, scratch databases,
table facts.

The operations scenario 3 (disk full: what is in the backups dir) and
scenario 5 (the drill and the incident restore) share, written once. Nothing
here records checks: the scenarios judge (runbook.scenarios._restore).

Tools are found next to the profile's psql::

    >>> tool("sudo -n -u postgres psql", "pg_restore")
    'sudo -n -u postgres pg_restore'
    >>> tool("runuser -u postgres -- /usr/lib/postgresql/15/bin/psql -p 5433", "pg_restore")
    'runuser -u postgres -- /usr/lib/postgresql/15/bin/pg_restore -p 5433'
"""

from __future__ import annotations

import fnmatch
import re
import shlex
import threading
import time
import uuid
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import PurePosixPath
from typing import TYPE_CHECKING, Any, Protocol

import paramiko

from runbook.errors import (
    ParameterError,
    RestoreFailed,
)
from runbook.ops.postgres import Postgres
from runbook.safety.attempt import PASS_THROUGH, attempt

if TYPE_CHECKING:
    import pandas as pd

    from runbook.core.context import OpsContext

PLAIN, CUSTOM = "plain-gzip", "custom"
_DB_NAME = re.compile(r"[a-z_][a-z0-9_]{0,62}")
SYSTEM_DBS = {"postgres", "template0", "template1"}


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


# ---------------------------------------------------------------- listing


def list_backups(
    ctx: OpsContext, *, limit: int | None = 10, every_file: bool = False
) -> pd.DataFrame:
    """The backups on the server, newest first: name, format, size, modified, age_hours,
    path, mtime (an aware datetime).

    A read-only `find` in the profile's backups dir (the runbook's
    `ls -lht /var/backups/postgres/*.sql.gz | head -5`, machine-readable).
    `every_file=True` lists every file there, not only the backup patterns
    (what fills the disk, scenario 3).
    """
    import pandas as pd

    b = ctx.profile.backups
    names = (
        ""
        if every_file
        else f"\\( -name {shlex.quote(b.pattern)} -o -name {shlex.quote(b.custom_pattern)} \\) "
    )
    cmd = f"find {shlex.quote(b.dir)} -maxdepth 1 -type f {names}-printf '%T@\\t%s\\t%f\\n'"
    r = ctx.probe(cmd, shell=True, warn=True, label="list-backups")
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
                "mtime": datetime.fromtimestamp(mtime, UTC),
            }
        )
    cols = [
        "name",
        "format",
        "size_bytes",
        "size",
        "modified",
        "age_hours",
        "age_from",
        "path",
        "mtime",
    ]
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


# ---------------------------------------------------------------- databases


def admin_sql(ctx: OpsContext, sql: str) -> None:
    Postgres(ctx).execute(sql, database="postgres")


def database_exists(ctx: OpsContext, name: str) -> bool:
    df = Postgres(ctx).query(
        f"SELECT count(*) AS n FROM pg_database WHERE datname = {literal(name)}",  # noqa: S608 - names via ident(), values via literal()
        database="postgres",
    )
    return int(df["n"][0]) > 0


def databases(ctx: OpsContext, like: str = "%") -> list[str]:
    df = Postgres(ctx).query(
        f"SELECT datname FROM pg_database WHERE datname LIKE {literal(like)} ORDER BY 1",  # noqa: S608 - names via ident(), values via literal()
        database="postgres",
    )
    return [] if df.empty else [str(x) for x in df["datname"]]


def create_database(ctx: OpsContext, name: str, *, owner: str | None = None) -> None:
    """CREATE DATABASE (owned by `owner`, the app's role, when given)."""
    sql = f"CREATE DATABASE {ident(name)}" + (f" OWNER {ident(owner)}" if owner else "")
    admin_sql(ctx, sql)


def drop_database(ctx: OpsContext, name: str) -> None:
    """Drop a (scratch) database, closing its connections first. Guards apply."""
    admin_sql(ctx, f"DROP DATABASE IF EXISTS {ident(name)} WITH (FORCE)")


def server_cores(ctx: OpsContext) -> int:
    r = ctx.probe("nproc", shell=True, warn=True, label="nproc")
    return int(r.stdout.strip()) if r.ok and r.stdout.strip().isdigit() else 1


def restore_command(
    ctx: OpsContext,
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
    psql = ctx.profile.postgres.psql
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


def one_row(ctx: OpsContext, sql: str, database: str) -> dict[str, Any]:
    """The first row of a query as a dict ({} when there is none)."""
    df = Postgres(ctx).query(sql, database=database)
    return {} if df.empty else dict(df.iloc[0])


def table_facts(ctx: OpsContext, database: str, table: str, sample: int = 1000) -> dict[str, Any]:
    """count, newest created_at (age in hours) and an md5 of the first `sample` rows by id."""
    t = f"public.{ident(table)}"
    cols = Postgres(ctx).query(
        "SELECT column_name FROM information_schema.columns "  # noqa: S608 - names via ident(), values via literal()
        f"WHERE table_schema = 'public' AND table_name = {literal(table)}",
        database=database,
    )
    names = set() if cols.empty else set(cols["column_name"])
    if not names:
        raise RestoreFailed(f"table {table} does not exist in {database}")
    count_sql = f"SELECT count(*) AS n FROM {t}"  # noqa: S608 - the name via ident()
    facts: dict[str, Any] = {"rows": int(one_row(ctx, count_sql, database)["n"])}
    if "created_at" in names:
        row = one_row(
            ctx,
            "SELECT max(created_at) AS newest, "  # noqa: S608 - names via ident(), values via literal()
            f"extract(epoch FROM now() - max(created_at)) / 3600 AS age_h FROM {t}",
            database,
        )
        facts["newest"] = None if row.get("newest") != row.get("newest") else row.get("newest")
        age = row.get("age_h")
        facts["age_hours"] = None if age is None or age != age else round(float(age), 2)
    if "id" in names:
        row = one_row(
            ctx,
            "SELECT md5(coalesce(string_agg(x::text, E'\\n' ORDER BY x.id), '')) AS h "  # noqa: S608 - names via ident(), values via literal()
            f"FROM (SELECT * FROM {t} ORDER BY id LIMIT {int(sample)}) x",
            database,
        )
        facts["sample_md5"] = row.get("h")
    return facts


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

    @property
    def ran(self) -> bool:
        """False for a restore a dry run skipped (`ok` is None then, never True)."""
        return not self.dry_run

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


class ProgressView(Protocol):
    """What shows a restore's progress: log lines (`ProgressLines`) or a notebook's bar."""

    def start(self, label: str, total: int) -> None: ...

    def show(self, seconds: float, done: int) -> None: ...

    def reading_done(self, seconds: float) -> None:
        """The whole dump is read; psql is finishing (indexes, constraints)."""
        ...

    def close(self) -> None: ...


class ProgressLines:
    """Progress as log lines (headless runs, the terminal, papermill)."""

    def __init__(self) -> None:
        self.label, self.total = "restore", 0

    def start(self, label: str, total: int) -> None:
        self.label, self.total = label, total

    def show(self, seconds: float, done: int) -> None:
        rate = done / 1e6 / seconds if seconds else 0.0
        if self.total:
            print(
                f"  {self.label}: {100 * done / self.total:5.1f} % "
                f"({human_bytes(done)} of {human_bytes(self.total)}), {rate:.1f} MB/s, "
                f"{seconds:.0f} s",
                flush=True,
            )
        else:
            print(f"  {self.label}: {human_bytes(done)}, {seconds:.0f} s", flush=True)

    def reading_done(self, seconds: float) -> None:
        # said at every poll, so a long tail never looks like a hang
        print(
            f"  {self.label}: dump read (100 %), psql finishing (indexes, constraints), "
            f"{seconds:.0f} s",
            flush=True,
        )

    def close(self) -> None:
        return None


def _poll(ctx: OpsContext, command: str) -> str:
    """The progress probe `command`'s stdout, read through the session's gate's `poll`.

    The logged-off probe on the second connection (counted as
    "restore-progress" in the record, not one line per poll in
    commands.jsonl): the restore's own command holds the first connection
    while this runs every few seconds from a thread. The guards still judge it.
    """
    return ctx.poll(command, kind="restore-progress").stdout


class RestoreProgress(threading.Thread):
    """Polls a server-side byte counter every `interval` seconds; keeps the samples."""

    def __init__(
        self,
        ctx: OpsContext,
        command: str,
        *,
        total: int,
        label: str,
        interval: float,
        view: ProgressView,
    ) -> None:
        super().__init__(daemon=True, name="restore-progress")
        self.ctx, self.command, self.total, self.interval = ctx, command, total, interval
        self.view = view
        self.stop_event = threading.Event()
        self.samples: list[tuple[float, int]] = []
        self.t0 = time.monotonic()
        view.start(label, total)

    def read(self) -> int | str | None:
        """Bytes so far, "done" when the reader has exited (psql still working), or None."""
        try:
            # a poll that fails says nothing this time; the restore's own command reports
            with attempt(also=(OSError, EOFError, paramiko.SSHException)) as a:
                polled = _poll(self.ctx, self.command)
        except PASS_THROUGH:
            # a refusal or a dead connection: stop polling (this thread); the restore's own
            # command meets it too and stops the run
            self.stop_event.set()
            return None
        if a.failed:
            return None
        text = polled.strip().splitlines()
        if not text:
            return None
        last = text[-1].strip().removeprefix("pos:").strip()
        return int(last) if last.isdigit() else ("done" if last == "done" else None)

    def run(self) -> None:
        while not self.stop_event.wait(self.interval):
            n = self.read()
            if n is None:
                continue
            t = time.monotonic() - self.t0
            if isinstance(n, int):
                self.samples.append((round(t, 1), n))
                self.view.show(t, n)
                continue
            # "done": the whole dump is read; psql is finishing
            if not self.samples or self.samples[-1][1] != self.total:
                self.samples.append((round(t, 1), self.total))
            self.view.reading_done(t)

    def finish(self, ok: bool | None = None) -> None:
        """Stop polling; a finished restore fills the view (a failed one leaves it short)."""
        self.stop_event.set()
        self.join(timeout=15)
        if ok and self.total and (not self.samples or self.samples[-1][1] != self.total):
            # finished between two polls: the last sample, line or bar says 100 %
            t = time.monotonic() - self.t0
            self.samples.append((round(t, 1), self.total))
            self.view.show(t, self.total)
        self.view.close()


def restore(
    ctx: OpsContext,
    chosen: dict[str, Any],
    database: str,
    *,
    on_progress: ProgressView | None = None,
    jobs: int | None = None,
    interval: float = 5.0,
    single_transaction: bool = True,
    timeout: float | None = None,
) -> RestoreResult:
    """Restore `chosen` into `database` on the server, its progress shown by `on_progress`
    (default: log lines); never raises on a failed restore (the result says ok=False), only
    on interrupts and refusals.

    Everything heavy happens on the server: the dump is streamed from the
    backups directory straight into psql, or read by `pg_restore -j N`;
    nothing crosses the operator's connection but a few progress numbers.
    """
    fmt = chosen["format"]
    jobs = jobs or (server_cores(ctx) if fmt == CUSTOM else 1)
    pidfile = f"/tmp/runbook-restore-{uuid.uuid4().hex[:12]}.pid"
    cmd = restore_command(
        ctx, chosen, database, jobs=jobs, single_transaction=single_transaction, pidfile=pidfile
    )
    total = int(chosen["size_bytes"])
    if fmt == CUSTOM:
        # pg_restore reads the file with N workers: show the restored database's size
        poll = f"{ctx.profile.postgres.psql} -X -At -d postgres -c " + shlex.quote(
            f"SELECT pg_database_size({literal(database)})"
        )
        label, shown_total = f"restore {chosen['name']} (database size)", 0
    else:
        # the compressed bytes gunzip has read so far: its offset in the dump
        # ("done" once gunzip has exited; the pid file goes when psql has finished)
        poll = (
            f'p=$(cat {shlex.quote(pidfile)} 2>/dev/null) && [ -n "$p" ] && '
            # grep, not sed: a poll through the session's gate is judged by the guards,
            # which read `$p` in a sed script as opaque
            "{ grep '^pos:' /proc/$p/fdinfo/0 2>/dev/null || echo done; }"
        )
        label, shown_total = f"restore {chosen['name']}", total
    print(
        f"restoring {chosen['name']} ({human_bytes(total)}, {fmt}) into {database} "
        f"on the server{f' with {jobs} jobs' if fmt == CUSTOM else ''}",
        flush=True,
    )
    progress = None
    if not ctx.dry_run:
        progress = RestoreProgress(
            ctx,
            poll,
            total=shown_total,
            label=label,
            interval=interval,
            view=on_progress or ProgressLines(),
        )
        progress.start()
    t0 = time.monotonic()
    try:
        r = ctx.run(cmd, shell=True, warn=True, timeout=timeout, label="restore")
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
        error = ctx.redactor.redact(cause.strip() + "\n" + "\n".join(lines[-8:]))
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
