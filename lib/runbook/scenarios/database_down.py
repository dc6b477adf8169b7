"""Scenario 3 (database down): gather every signal at once, name the branch, run only that branch.

`gather(s)` measures everything the runbook's triage looks at (deep health,
the postgres and API services, `SELECT 1`, disk usage of the data and backups
filesystems, connections by state against `max_connections`, the last log
lines) into ONE table. `classify(table)` is a pure function of that table:
it names the branch and says why, so it is unit-tested on crafted tables.

Example (crafted signals, as the tests do)::

    >>> t = signal_table({"postgres_service": "failed (failed)", "select1": False,
    ...                   "select1_error": "connection refused", "deep_postgres": "red"})
    >>> b = classify(t)
    >>> b.name
    'service failed'
    >>> classify(signal_table({"deep_postgres": "green", "deep_status": "green",
    ...                        "postgres_service": "active (running)", "select1": True})).name
    'no incident found'
"""

from __future__ import annotations

import math
import re
import shlex
from collections.abc import Callable
from dataclasses import dataclass
from datetime import datetime
from pathlib import PurePosixPath
from typing import TYPE_CHECKING, Any

from runbook.clock import wait_for
from runbook.core import postmortem
from runbook.core.postmortem import Summary
from runbook.errors import CommandFailed
from runbook.ops import backups as backup_ops
from runbook.ops.logs import last_lines, log_gist, recent_errors
from runbook.scenarios._base import Scenario, show

if TYPE_CHECKING:
    import pandas as pd

    from runbook.session import Session

NO_INCIDENT = "no incident found"
SERVICE_FAILED = "service failed"
DISK_FULL = "disk full"
POOL_EXHAUSTED = "connection pool exhausted"
CORRUPT = "database corrupt or will not start"
NOT_THE_DATABASE = "not the database"
BRANCHES = (NO_INCIDENT, SERVICE_FAILED, DISK_FULL, POOL_EXHAUSTED, CORRUPT, NOT_THE_DATABASE)
# The branches whose steps change the server (restart, delete): they take the host lock.
CHANGING = (SERVICE_FAILED, DISK_FULL, POOL_EXHAUSTED)
WONT_START = "Postgres will not start"

# A filesystem this full is "full" for the runbook: Postgres needs room for
# WAL segments and checkpoints well before df says 100 %.
DISK_FULL_PCT = 95.0

_CORRUPTION = re.compile(
    r"invalid page|could not read block|checksum|PANIC|could not open file|"
    r"invalid record length|could not locate a valid checkpoint|unexpected zero page|"
    r"missing chunk number|invalid memory alloc|data corrupted|corrupt",
    re.IGNORECASE,
)
_POOL = re.compile(
    r"too many clients|remaining connection slots are reserved|too many connections",
    re.IGNORECASE,
)

# What each signal is, what is normal, in words for someone who never read the runbook.
SIGNALS: dict[str, tuple[str, str]] = {
    "deep_status": ("API deep health, overall", "green (HTTP 200)"),
    "deep_postgres": ("API deep health, postgres part", "green: the API runs SELECT 1"),
    "api_service": ("API service (dealix-api)", "active (running)"),
    "postgres_service": ("Postgres service", "active (running)"),
    "select1": ("SELECT 1 as the database superuser", "answers 1"),
    "disk_data": ("Disk: Postgres data filesystem", f"below {DISK_FULL_PCT:.0f}% used"),
    "disk_backups": ("Disk: backups filesystem", f"below {DISK_FULL_PCT:.0f}% used"),
    "connections": ("Connections in use vs max_connections", "well below the maximum"),
    "postgres_log": ("Postgres log, last lines", "no PANIC, no corruption errors"),
}


@dataclass(frozen=True)
class Branch:
    """The runbook branch to follow and the reason, in one sentence."""

    name: str
    reason: str

    def _repr_markdown_(self) -> str:
        return f"**Branch: {self.name}**  \n{self.reason}"


# --------------------------------------------------------------------------- the table


def signal_table(values: dict[str, Any], seen: dict[str, str] | None = None) -> pd.DataFrame:
    """Build the triage table from raw values (gather() does this from the server).

    Raw keys beyond SIGNALS (select1_error, deep_postgres_detail,
    connections_max, connections_reserved, disk_*_mount, postgres_log_text)
    travel in the `value` column of the signal they explain.
    """
    import pandas as pd

    seen = seen or {}
    rows = []
    for key, (signal, normal) in SIGNALS.items():
        value = values.get(key)
        text = seen.get(key) or _default_seen(key, values)
        rows.append(
            {
                "key": key,
                "signal": signal,
                "what we saw": text,
                "what is normal": normal,
                "what it means": _meaning(key, values),
                "value": value,
            }
        )
    table = pd.DataFrame(rows)
    table.attrs["raw"] = dict(values)
    return table


def readable(table: pd.DataFrame) -> pd.DataFrame:
    """The table for people: signal, what we saw, what is normal, what it means."""
    return table[["signal", "what we saw", "what is normal", "what it means"]].set_index("signal")


def _pct(v: Any) -> float | None:
    try:
        f = float(v)
    except (TypeError, ValueError):
        return None
    return None if math.isnan(f) else f


def _default_seen(key: str, v: dict[str, Any]) -> str:
    value = v.get(key)
    if value is None:
        return "not measured (" + str(v.get(f"{key}_error") or "no answer") + ")"
    if key == "select1":
        return "1" if value else f"error: {str(v.get('select1_error') or '')[:160]}"
    if key == "deep_postgres":
        return f"{value}: {str(v.get('deep_postgres_detail') or '')[:160]}"
    if key in ("disk_data", "disk_backups"):
        return (
            f"{value:.0f}% used, {v.get(key + '_free', '?')} free on {v.get(key + '_mount', '?')}"
        )
    if key == "connections":
        by_state = v.get("connections_by_state") or ""
        return f"{value} of {v.get('connections_max', '?')} ({by_state})"
    if key == "postgres_log":
        return str(value)[-300:]
    return str(value)


def _meaning(key: str, v: dict[str, Any]) -> str:
    value = v.get(key)
    if key == "deep_status":
        return "the API sees every dependency" if value == "green" else "something is degraded"
    if key == "deep_postgres":
        if value is None:
            return "the API did not answer: the problem may be in front of the database"
        return "the API reaches the database" if value == "green" else "the API cannot use the DB"
    if key == "api_service":
        return "the API process runs" if value else "the API process is down: not the database"
    if key == "postgres_service":
        if value is None:
            return "unknown"
        if str(value).startswith("active (running)"):
            return "Postgres runs"
        if str(value).startswith("active"):
            return "the unit is active but runs no server process: it proves nothing"
        return "Postgres is not running"
    if key == "select1":
        if value:
            return "Postgres answers queries"
        err = str(v.get("select1_error") or "")
        if _CORRUPTION.search(err):
            return "Postgres answers with a corruption error"
        if _POOL.search(err):
            return "every connection slot is taken"
        return "Postgres does not answer"
    if key in ("disk_data", "disk_backups"):
        pct = _pct(value)
        if pct is None:
            return "unknown"
        return "full: writes fail, Postgres may stop" if pct >= DISK_FULL_PCT else "enough room"
    if key == "connections":
        used, top = value, v.get("connections_max")
        if used is None or top is None:
            return "unknown"
        reserved = int(v.get("connections_reserved") or 0)
        if int(used) >= int(top) - reserved:
            return "the pool is exhausted: new app connections are refused"
        return "connections available"
    if key == "postgres_log":
        recent = recent_errors(str(value or ""))
        return "corruption or a PANIC in the log" if _CORRUPTION.search(recent) else "—"
    return ""


# --------------------------------------------------------------------------- classify


def classify(table: pd.DataFrame) -> Branch:
    """Name the runbook branch from the triage table (pure: no I/O).

    Order matters: a full disk is checked first because restarting Postgres
    on a full disk fails again (and it is the most common real cause); then
    whether Postgres runs; then whether it answers; then whether the API can
    get a connection.
    """
    v: dict[str, Any] = dict(table.attrs.get("raw") or {})
    for _, row in table.iterrows():
        v.setdefault(row["key"], row["value"])
    full = [
        f"{k.removeprefix('disk_')} filesystem {_pct(v.get(k)):.0f}% used"
        for k in ("disk_data", "disk_backups")
        if _pct(v.get(k)) is not None and _pct(v.get(k)) >= DISK_FULL_PCT  # type: ignore[operator]
    ]
    if full:
        return Branch(DISK_FULL, "; ".join(full) + f" (full from {DISK_FULL_PCT:.0f}%)")
    service = str(v.get("postgres_service") or "")
    unit = str(v.get("postgres_unit") or "")
    named = f"the Postgres service ({unit})" if unit else "the Postgres service"
    log_text = recent_errors(str(v.get("postgres_log") or ""))
    err = str(v.get("select1_error") or "")
    if service and not service.startswith("active"):
        m = _CORRUPTION.search(log_text)
        if m:
            return Branch(CORRUPT, f"{named} is {service} and its log says {_around(log_text, m)}")
        return Branch(SERVICE_FAILED, f"{named} is {service}; no corruption in log")
    # Only say "runs" when the unit that runs the server says so (not a wrapper).
    runs = (
        (f"Postgres runs ({unit} {service})" if unit else "Postgres runs")
        if service.startswith("active (running)")
        else (f"{named} says {service or 'nothing'}")
    )
    if v.get("select1") is False:
        m = _CORRUPTION.search(err) or _CORRUPTION.search(log_text)
        if m:
            src = err if _CORRUPTION.search(err) else log_text
            return Branch(CORRUPT, f"{runs} but SELECT 1 fails: {_around(src, m)}")
        if _POOL.search(err):
            return Branch(POOL_EXHAUSTED, f"SELECT 1 is refused for lack of slots: {err[:160]}")
        return Branch(SERVICE_FAILED, f"{runs} but does not answer SELECT 1: {err[:160]}")
    deep = v.get("deep_postgres")
    detail = str(v.get("deep_postgres_detail") or "")
    if deep not in (None, "green"):
        used, top = v.get("connections"), v.get("connections_max")
        reserved = int(v.get("connections_reserved") or 0)
        if _POOL.search(detail) or (
            used is not None and top is not None and int(used) >= int(top) - reserved
        ):
            return Branch(
                POOL_EXHAUSTED,
                f"Postgres answers the superuser but the API gets no connection "
                f"({used} of {top} in use): {detail[:160]}",
            )
        if _CORRUPTION.search(detail):
            return Branch(CORRUPT, f"the API's query fails with corruption: {detail[:160]}")
        return Branch(
            NOT_THE_DATABASE,
            f"Postgres answers SELECT 1 and has free slots, but the API says postgres {deep}: "
            f"{detail[:160]} (check DATABASE_URL, the dealix role, pg_hba, the network)",
        )
    if deep is None:
        return Branch(
            NOT_THE_DATABASE,
            "Postgres answers but the API does not: follow the health check and scenario 2",
        )
    overall = v.get("deep_status")
    if overall not in (None, "green"):
        red = v.get("deep_red_parts") or "another part"
        return Branch(NOT_THE_DATABASE, f"postgres is green; {red} is not: see the health check")
    return Branch(NO_INCIDENT, "every database signal is normal: nothing to fix")


def _around(text: str, m: re.Match[str], width: int = 80) -> str:
    start = max(0, m.start() - width // 2)
    return "…" + text[start : m.end() + width].replace("\n", " ").strip() + "…"


# --------------------------------------------------------------------------- gather


def _human(n: float) -> str:
    for unit in ("B", "KB", "MB", "GB", "TB"):
        if abs(n) < 1024 or unit == "TB":
            return f"{n:.0f} {unit}" if unit == "B" else f"{n:.1f} {unit}"
        n /= 1024
    return str(n)


def parse_df(stdout: str) -> list[dict[str, Any]]:
    """`df -P -B1 PATH…` → rows of size, used, avail, pct, mount.

    >>> parse_df("Filesystem 1-blocks Used Available Capacity Mounted on\\n"
    ...          "tmpfs 8388608 8388608 0 100% /srv/backups\\n")[0]["pct"]
    100.0
    """
    rows = []
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


def _psql_error(text: str) -> str:
    # sudo -u postgres from root's home prints a harmless cd warning first
    lines = [ln for ln in text.strip().splitlines() if "could not change directory" not in ln]
    return " ".join(ln.strip() for ln in lines)[-300:]


def gather(s: Session, log_lines: int = 30) -> pd.DataFrame:
    """Measure every triage signal (read-only; all of them, even when one fails)."""
    v: dict[str, Any] = {}
    seen: dict[str, str] = {}
    with s.attempt() as a:
        deep = s.api.deep_health()
        v["deep_status"] = deep.get("status")
        pg = deep.get("postgres") or {}
        v["deep_postgres"] = pg.get("status")
        v["deep_postgres_detail"] = pg.get("detail")
        red = [
            k
            for k in ("postgres", "redis", "llm_providers")
            if (deep.get(k) or {}).get("status") not in (None, "green")
        ]
        v["deep_red_parts"] = ", ".join(red)
        seen["deep_status"] = f"{deep.get('status')} (HTTP {deep.get('http_status')})" + (
            f"; not green: {', '.join(red)}" if red else ""
        )
    if a.error is not None:
        v["deep_status_error"] = v["deep_postgres_error"] = str(a.error)[:200]
    for key, role in (("api_service", "api"), ("postgres_service", "postgres")):
        st = s.services.status(role)
        v[key] = st.active if key == "api_service" else st.words
        # The unit that runs the server (postgresql@15-main under Debian's wrapper).
        v[key.replace("_service", "_unit")] = st.name
        seen[key] = st.label + (f", pid {st.pid}" if st.pid else "")
    r = s.db.probe("SELECT 1", timeout=15)
    v["select1"] = r.ok
    v["select1_error"] = "" if r.ok else _psql_error(r.stderr or r.stdout)
    dirs = {"disk_data": s.profile.postgres.data_dir, "disk_backups": s.profile.backups.dir}
    for key, path in dirs.items():
        d = s.probe(["df", "-P", "-B1", path], warn=True)
        rows = parse_df(d.stdout)
        if rows:
            v[key] = rows[0]["pct"]
            v[f"{key}_free"] = _human(rows[0]["avail"])
            v[f"{key}_mount"] = rows[0]["mount"]
            seen[key] = (
                f"{rows[0]['pct']:.0f}% used, {_human(rows[0]['avail'])} free of "
                f"{_human(rows[0]['size'])} ({path} on {rows[0]['mount']})"
            )
        else:
            v[f"{key}_error"] = (d.stderr.strip() or "df gave no answer")[:200]
    # The postgres database, not dealix: this must answer even when dealix is damaged.
    q = s.db.probe(
        "SELECT st || '=' || n FROM (SELECT coalesce(state, 'unknown') AS st, count(*) AS n "
        "FROM pg_stat_activity WHERE backend_type = 'client backend' GROUP BY 1) x ORDER BY 1; "
        "SHOW max_connections; SHOW superuser_reserved_connections;",
        database="postgres",
        timeout=15,
    )
    if q.ok:
        lines = [ln.strip() for ln in q.stdout.splitlines() if ln.strip()]
        nums = [ln for ln in lines if ln.isdigit()]
        pairs = [ln.split("=", 1) for ln in lines if "=" in ln]
        client = [(k, int(n)) for k, n in pairs]
        v["connections"] = sum(n for _, n in client)
        v["connections_by_state"] = ", ".join(f"{k} {n}" for k, n in client)
        if len(nums) >= 2:
            v["connections_max"], v["connections_reserved"] = int(nums[-2]), int(nums[-1])
    else:
        v["connections_error"] = _psql_error(q.stderr) or "no answer"
    logs = s.services.logs("postgres", log_lines).stdout
    v["postgres_log"] = "\n".join(last_lines(logs, log_lines))
    seen["postgres_log"] = " | ".join(ln.strip()[-150:] for ln in last_lines(logs, 2)) or "(empty)"
    return signal_table(v, seen)


def triage(s: Session) -> tuple[pd.DataFrame, Branch]:
    """Gather, classify, record the branch as a decision and in triage.json; return both."""
    import json

    table = gather(s)
    branch = classify(table)
    s.decide("Triage: branch", branch.name, branch.reason)
    raw = {
        k: (v if isinstance(v, (str, int, float, bool, type(None))) else str(v))
        for k, v in table.attrs["raw"].items()
    }
    s.evidence.write_text(
        "triage.json",
        json.dumps(
            {"branch": branch.name, "reason": branch.reason, "signals": raw}, indent=2, default=str
        ),
    )
    return table, branch


# --------------------------------------------------------------------------- waiting


def wait_select1(
    s: Session,
    timeout: float = 60,
    interval: float = 1.0,
    give_up: Callable[[], bool] | None = None,
) -> bool:
    """Poll `SELECT 1` until it answers, `timeout` seconds pass, or `give_up()` says
    waiting is pointless (the service manager reports the service failed)."""
    ok, _ = wait_for(
        lambda: s.db.probe("SELECT 1", timeout=10).ok, timeout, interval, give_up=give_up
    )
    return ok


# --------------------------------------------------------------------------- branch: failed


def fix_service_failed(s: Session, wait_seconds: float = 60) -> dict[str, Any]:
    """Runbook step 2: recent logs, restart, wait, SELECT 1. Returns what happened.

    The restart runs as with `warn=True`: a failed start is what tells this
    branch from "will not start", so it is information, not an error.
    """
    logs = s.services.logs("postgres", 200)
    s.evidence.write_text("postgres-log-before-restart.txt", logs.stdout)
    try:
        r = s.services.restart("postgres")
    except CommandFailed as exc:
        r = exc.result  # recorded as a change and in commands.jsonl like any command
    if r.dry_run:
        return {"restarted": False, "dry_run": True, "select1": None}

    seen_after: list[str] = []
    gave_up: list[bool] = [False]

    def manager_gave_up() -> bool:
        # The unit that runs the server, not the restart's exit code: Debian's
        # `systemctl restart postgresql` restarts a wrapper (ExecStart=/bin/true) and exits
        # 0 even when postgresql@15-main fails to start. The restart returns only after
        # the member's start job ended (it is ordered Before= the wrapper), so "failed"
        # now is this start's failure; a good start is "activating" until it answers.
        st = s.services.status("postgres")
        seen_after[:] = [st.label]
        gave_up[0] = st.words.startswith("failed")
        return gave_up[0]

    ok = wait_select1(s, wait_seconds, give_up=manager_gave_up)
    res: dict[str, Any] = {
        "restarted": True,
        "dry_run": False,
        "restart_ok": r.ok,
        "restart_exit": r.exit_code,
        "restart_output": " ".join((r.stderr or r.stdout).split())[-300:],
        "select1": ok,
        "log_tail": logs.tail(10),
        "service_after": seen_after[0] if seen_after else "",
        "gave_up": not ok and gave_up[0],
    }
    if not ok:
        after = s.services.logs("postgres", 200)
        s.evidence.write_text("postgres-log-after-restart.txt", after.stdout)
        res["log_after"] = log_gist(after.stdout)
    return res


# --------------------------------------------------------------------------- branch: disk


def space_report(s: Session) -> pd.DataFrame:
    """`du` of the Postgres base and the backups dir, biggest first (read-only)."""
    import pandas as pd

    base = str(PurePosixPath(s.profile.postgres.data_dir).parent)
    targets = f"{shlex.quote(base)}/* {shlex.quote(s.profile.backups.dir)}/*"
    r = s.probe(f"du -sb {targets} 2>/dev/null | sort -n", shell=True, warn=True, accept=(0, 1))
    rows = []
    for line in r.stdout.splitlines():
        size, _, path = line.partition("\t")
        if size.isdigit():
            rows.append({"path": path, "bytes": int(size), "size": _human(int(size))})
    df = pd.DataFrame(rows, columns=["path", "bytes", "size"])
    return df.sort_values("bytes", ascending=False).reset_index(drop=True)


def list_backups(s: Session) -> pd.DataFrame:
    """Every file in the backups dir with its mtime and size (read-only): path, bytes, modified."""
    import pandas as pd

    files = backup_ops.list_backups(s, limit=None, every_file=True)
    return pd.DataFrame(
        {"path": files["path"], "bytes": files["size_bytes"], "modified": files["mtime"]},
        columns=["path", "bytes", "modified"],
    )


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


def delete_backups(s: Session, candidates: pd.DataFrame) -> Any:
    """Delete the listed old backups (changing: dry-run and confirmation apply)."""
    paths = [str(p) for p in candidates["path"]]
    if not paths:
        return None
    # Guards refuse pg_wal and do-not-touch paths on the command itself as well.
    return s.run(["rm", "-f", "--", *paths], label="rotate-old-backups")


def disk_usage(s: Session) -> pd.DataFrame:
    """df of the data and backups filesystems as a small table."""
    import pandas as pd

    rows = []
    for name, path in (("data", s.profile.postgres.data_dir), ("backups", s.profile.backups.dir)):
        r = s.probe(["df", "-P", "-B1", path], warn=True)
        for row in parse_df(r.stdout)[:1]:
            rows.append(
                {
                    "filesystem": name,
                    "path": path,
                    "used %": row["pct"],
                    "free": _human(row["avail"]),
                    "size": _human(row["size"]),
                }
            )
    return pd.DataFrame(rows)


# --------------------------------------------------------------------------- branch: pool


def connections_by_state(s: Session) -> pd.DataFrame:
    """The runbook's `SELECT count(*), state FROM pg_stat_activity GROUP BY state`."""
    return s.db.query(
        "SELECT count(*) AS connections, coalesce(state, 'background') AS state, "
        "coalesce(usename, '') AS role FROM pg_stat_activity GROUP BY 2, 3 ORDER BY 1 DESC",
        database="postgres",
    )


def fix_pool_exhausted(s: Session, wait_seconds: float = 60) -> dict[str, Any]:
    """Restart the API (drops its stale connections) and wait for deep health postgres green."""
    r = s.services.restart("api")
    if r.dry_run:
        return {"restarted": False, "dry_run": True}
    deep = s.api.wait_green("postgres", wait_seconds)
    return {"restarted": True, "dry_run": False, "deep_postgres": deep.get("postgres")}


# --------------------------------------------------------------------------- branch: corrupt


def restore_command(env: str, reason: str = "database corrupt or will not start") -> str:
    """The exact command that hands over to scenario 5 (restore_incident, newest backup).

    >>> restore_command("production", "invalid page in block 0")
    "runbook run restore_incident --env production --confirm production -p reason 'invalid page in block 0'"
    """
    confirm = "" if env == "sandbox" else f" --confirm {env}"
    return f"runbook run restore_incident --env {env}{confirm} -p reason {shlex.quote(reason)}"


# --------------------------------------------------------------------------- post-incident


def postmortem_summary(
    *,
    started: datetime,
    finished: datetime,
    branch: Branch,
    actions: list[str],
    webhooks: str,
) -> Summary:
    """The runbook's 5-line postmortem (for docs/incidents/YYYY-MM-DD.md) of this incident.

    >>> from datetime import datetime, UTC
    >>> t = datetime(2026, 11, 27, 3, 0, tzinfo=UTC)
    >>> lines = postmortem_summary(started=t, finished=t, branch=Branch("disk full", "x"),
    ...                            actions=["rm old"], webhooks="0 queued").lines()
    >>> len(lines), lines[0]
    (5, '1. **What happened:** disk full — x')
    """
    minutes = (finished - started).total_seconds() / 60
    return Summary(
        what_happened=f"{branch.name} — {branch.reason}",
        impact=f"Data: {webhooks}. TODO: who or what was affected, for how long.",
        detection=f"triage {started:%H:%M} UTC named the branch “{branch.name}”. "
        "TODO: which signal paged us.",
        resolution=f"{'; '.join(actions) or 'nothing: no action was needed'}; "
        + ("handed over to scenario 5" if branch.name == CORRUPT else "fixed")
        + f" by {finished:%H:%M} UTC ({minutes:.0f} min in this notebook)",
        follow_up="TODO: owner, action, due date (fill in before filing).",
    )


# --------------------------------------------------------------------------- the notebook's steps


def dlq_depths_or_none(s: Session) -> dict[str, int] | None:
    """DLQ depths, or None when the API cannot say (it may be the thing that is down)."""
    with s.attempt():
        return s.api.dlq_depths()
    return None  # it failed: the API cannot say


def changes_server(branch: Branch) -> bool:
    """Whether the branch's own steps change the server (restart, delete).

    >>> changes_server(Branch(DISK_FULL, "")), changes_server(Branch(CORRUPT, ""))
    (True, False)
    """
    return branch.name in CHANGING


def after_failed(s: Session, wait_seconds: float) -> dict[str, Any]:
    """Branch "service failed": logs, restart, wait, SELECT 1; recorded as a check.

    When the restart does not bring Postgres back (the start fails, SELECT 1
    never answers), the branch becomes "database corrupt or will not start":
    `res["branch"]` says so, with the log's last words, and the caller hands
    over to scenario 5 exactly as for a corrupt database.
    """
    res = fix_service_failed(s, wait_seconds)
    if res["dry_run"]:
        actual = ""  # judge() says "not run (dry run)": nothing was restarted
    elif res["select1"]:
        actual = "1"
    elif not res["restart_ok"]:
        actual = f"no answer: the restart failed (exit {res['restart_exit']})"
    elif res.get("gave_up"):
        actual = f"no answer: {res['service_after']}"
    else:
        actual = f"no answer within {wait_seconds:.0f} s"
    s.judge(
        "Postgres answers SELECT 1 after the restart",
        expected="1",
        ran=not res["dry_run"],
        actual=actual,
        passed=bool(res["select1"]),
        note="" if res["dry_run"] or res["select1"] else f"log: {res.get('log_after', '')}",
    )
    res["branch"] = Branch(SERVICE_FAILED, "restarted")
    if not res["dry_run"] and not res["select1"]:
        after = res.get("service_after") or ""
        if not res["restart_ok"]:
            how = "the restart failed" + (
                f" ({res['restart_output']})" if res["restart_output"] else ""
            )
        elif res.get("gave_up"):
            how = f"the restart exited 0 but {after}"
        else:
            how = f"it was restarted but does not answer SELECT 1 within {wait_seconds:.0f} s"
        branch = Branch(
            CORRUPT, f"{WONT_START}: {how}; its log ends: {res.get('log_after') or '(empty)'}"
        )
        s.decide("Branch after the restart", branch.name, branch.reason)
        res["branch"] = branch
    return res


def disk_full_candidates(s: Session, keep_newest: int) -> dict[str, Any]:
    """Branch "disk full", first half (read-only): the space report and the list of old
    backups that may be deleted, shown BEFORE anything is deleted.

    `kept` is the newest `keep_newest` backups: never candidates, checked
    again on the server after the deletion.
    """
    report = space_report(s)
    backups = list_backups(s)
    where = {
        "backups_dir": s.profile.backups.dir,
        "pattern": s.profile.backups.pattern,
        "data_dir": s.profile.postgres.data_dir,
    }
    candidates = rotation_candidates(backups, keep_newest=keep_newest, **where)
    kept = backup_files(backups, **where).head(keep_newest).reset_index(drop=True)
    s.evidence.append(
        {
            "kind": "rotation",
            "event": "candidates",
            "delete": list(candidates["path"]),
            "keep": list(kept["path"]),
        }
    )
    return {
        "report": report,
        "backups": backups,
        "candidates": candidates,
        "kept": kept,
        "keep_newest": keep_newest,
    }


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
            "size": [_human(int(b)) for b in backups["bytes"]],
            "modified": list(backups["modified"]),
        },
        columns=["file", "size", "modified"],
    )


def rotate_backups(s: Session, plan: dict[str, Any]) -> dict[str, Any]:
    """Branch "disk full", second half: delete exactly the listed candidates (changing:
    dry run, confirmation and the guards apply), then re-check from the server."""
    candidates, kept = plan["candidates"], plan["kept"]
    r = delete_backups(s, candidates)
    dry = r is not None and not r.ran
    usage = disk_usage(s)
    worst = float(usage["used %"].max()) if len(usage) else float("nan")
    s.check(
        "Data and backups filesystems below the full mark",
        expected=f"< {DISK_FULL_PCT:.0f}% used",
        actual=f"{worst:.0f}% used" + (" (nothing deleted: dry run)" if dry else ""),
        passed=worst < DISK_FULL_PCT,
        note=f"deleted {0 if dry else len(candidates)} old backups, "
        f"kept the newest {plan['keep_newest']}",
    )
    # Listed again after the deletion: the check reads the server, not the plan.
    after = list_backups(s)
    present = set(after["path"])
    newest = [str(p) for p in kept["path"]]
    missing = [p for p in newest if p not in present]
    gone = [str(p) for p in candidates["path"] if str(p) in present]
    s.judge(
        "Newest backups kept",
        ran=not dry,  # nothing was deleted: "kept" would say nothing
        expected=f"the newest {plan['keep_newest']} backups still on the server",
        actual=f"{len(newest) - len(missing)} of {len(newest)} still there"
        + (f"; MISSING: {', '.join(PurePosixPath(p).name for p in missing)}" if missing else "")
        + (f" ({', '.join(PurePosixPath(p).name for p in newest[:3])}, ...)" if newest else ""),
        passed=bool(newest) and not missing,
        note=f"{len(gone)} listed backups still present" + (" (dry run)" if dry else ""),
    )
    return {"usage": usage, "after": after, "deleted": [] if dry else list(candidates["path"])}


def after_pool_exhausted(s: Session, wait_seconds: float) -> dict[str, Any]:
    """Branch "pool exhausted": connections by state, restart the API, re-check."""
    before = connections_by_state(s)
    res = fix_pool_exhausted(s, wait_seconds)
    after = connections_by_state(s)
    if res["dry_run"]:
        # the restart was skipped: nothing to judge, and never a pass
        s.judge(
            "API gets database connections again", expected="deep health postgres green", ran=False
        )
    else:
        _check_postgres_green(
            s,
            "API gets database connections again",
            "deep health postgres green",
            res.get("deep_postgres"),
        )
    return {"before": before, "after": after, **res}


def _check_postgres_green(
    s: Session, name: str, expected: str, part: dict[str, Any] | None
) -> None:
    """A check that deep health's postgres part is green."""
    pg = part or {}
    s.check(
        name,
        expected=expected,
        actual=f"{pg.get('status')}: {pg.get('detail')}",
        passed=pg.get("status") == "green",
    )


def after_corrupt(s: Session, branch: Branch) -> str:
    """Branch "corrupt": stop here; the hand-off is a failed check naming the command."""
    cmd = restore_command(s.env, _reason_for_restore(branch))
    s.check(
        "Hand-off to scenario 5 (restore_incident)",
        expected="database readable",
        actual="corrupt or will not start: restore from backup",
        passed=False,
        note=f"run: {cmd}",
    )
    s.set_next_command(cmd)
    return cmd


def deep_postgres_check(s: Session, branch: Branch, wait_seconds: float) -> dict[str, Any]:
    """The runbook's DoD: /health/deep postgres green (waits a little after a fix)."""
    deep = s.api.wait_green("postgres", wait_seconds if branch.name != NO_INCIDENT else 0)
    _check_postgres_green(s, "Deep health postgres green", "green", deep.get("postgres"))
    return deep


# What the post-incident drain replays: check name, (api queue name, DLQ)
_DRAINS = (
    ("No lost webhooks", "webhooks", "WEBHOOKS_DLQ"),
    ("No lost LLM work", "outbound", "OUTBOUND_DLQ"),
    ("No lost LLM work", "enrichment", "ENRICHMENT_DLQ"),
)


def _stopped_because(batches: pd.DataFrame | None, max_batches: int) -> str:
    if batches is None or not len(batches):
        return "nothing to drain"
    last = batches.iloc[-1]
    if not last["remaining"]:
        return f"empty after {len(batches)} batch(es)"
    if not last["drained"]:
        return f"stopped: batch {len(batches)} made no progress ({last['failed']} failed)"
    return f"stopped after {max_batches} batches"


def drain_after_incident(
    s: Session,
    branch: Branch,
    webhooks_limit: int,
    llm_limit: int,
    max_batches: int = 200,
) -> dict[str, Any]:
    """Post-incident: replay what waited in the DLQs during the outage, depths before and after.

    WEBHOOKS_DLQ is drained whenever it holds something (batches of the
    runbook's webhooks limit). OUTBOUND_DLQ and ENRICHMENT_DLQ hold the LLM
    jobs the workload could not record while the database was down: after a
    database incident they are drained too when they hold anything (batches
    of the runbook's outbound limit). Each queue is drained until it is empty
    or a batch makes no progress; a check per queue says "0 left".
    """
    import pandas as pd

    before = dlq_depths_or_none(s) or {}
    queues: dict[str, dict[str, Any]] = {}
    rows = []
    for check, name, queue in _DRAINS:
        is_llm = queue != "WEBHOOKS_DLQ"
        if is_llm and branch.name not in (*CHANGING, CORRUPT):
            # No database incident: LLM jobs queued now are scenario 4's (provider down).
            continue
        limit = llm_limit if is_llm else webhooks_limit
        depth = before.get(queue)
        batches = None
        if depth:
            # draining changes the server's data (the lock is a Scenario method now)
            Scenario(s).take_lock("4. Take the host lock", once=True)
            batches = s.api.drain_all(name, limit, max_batches)
        left = (dlq_depths_or_none(s) or {}).get(queue)
        why = (
            "dry run: not drained"
            if s.dry_run and depth
            else _stopped_because(batches, max_batches)
        )
        s.judge(
            f"{check}: {queue} drained",
            expected="0 left",
            ran=not (s.dry_run and depth),
            actual=f"{depth} before, {left} after",
            passed=left == 0,
            note=f"batches of {limit}; {why}",
        )
        queues[queue] = {"before": depth, "after": left, "batches": batches, "stopped": why}
        rows.append({"queue": queue, "before": depth, "after": left, "limit": limit, "how": why})
    table = pd.DataFrame(rows, columns=["queue", "before", "after", "limit", "how"])
    return {"queues": queues, "table": table}


def _action_summary(what: str) -> str:
    """One short phrase per change for the postmortem line.

    >>> _action_summary("rm -f -- /b/dealix-2026-10-01.sql.gz /b/dealix-2026-10-02.sql.gz")
    'deleted 2 old backups (dealix-2026-10-01.sql.gz … dealix-2026-10-02.sql.gz)'
    """
    if what.startswith("rm -f -- "):
        names = [PurePosixPath(p).name for p in what.removeprefix("rm -f -- ").split()]
        return f"deleted {len(names)} old backups ({names[0]} … {names[-1]})"
    for verb in ("restart", "start", "stop"):
        m = re.search(rf"\b{verb}\s+(\S+)$", what)
        if m:
            return f"{verb} {m.group(1)}"
    return what if len(what) <= 100 else what[:97] + "..."


def _reason_for_restore(branch: Branch) -> str:
    """One line for restore_incident's `reason`: the error without paths or quotes.

    >>> _reason_for_restore(Branch(CORRUPT, 'Postgres runs but SELECT 1 fails: "invalid page"'))
    'database corrupt: Postgres runs but SELECT 1 fails: invalid page'
    >>> _reason_for_restore(Branch(CORRUPT, WONT_START + ": x; its log ends: FATAL:  bad"))
    'database will not start: FATAL: bad'
    """
    text = re.sub(r"[\"'`]", "", branch.reason.replace("…", " "))
    if text.startswith(WONT_START):
        return ("database will not start: " + " ".join(text.split("log ends:")[-1].split()))[:120]
    return ("database corrupt: " + " ".join(text.split("failed:")[-1].split()))[:120]


def write_postmortem(s: Session, branch: Branch, drained: dict[str, Any] | None = None) -> str:
    """Draft the postmortem (the 5 lines, the timeline, the checks, the evidence) and save
    it as `<YYYY-MM-DD>.md` in the evidence folder.

    `drained` is what `drain_after_incident` returned (None: nothing replayed).
    """
    from runbook.core.evidence import utc_now

    actions = [_action_summary(c.what) for c in s.changes] or [
        f"would run: {_action_summary(c.what)}" for c in s.would_change
    ]
    if branch.name == CORRUPT:
        actions.append(
            f"handed over to scenario 5: {restore_command(s.env, _reason_for_restore(branch))}"
        )
    if drained is None:
        data = "webhooks and queued LLM work: not replayed (database not restored yet)"
    else:
        depths = ", ".join(
            f"{q} {d['before']} → {d['after']}" for q, d in drained["queues"].items()
        )
        data = (
            f"DLQ depth before → after the drain: {depths} "
            "(work received during the outage was queued, then replayed)"
        )
    now = utc_now()
    summary = postmortem_summary(
        started=s.started, finished=now, branch=branch, actions=actions, webhooks=data
    )
    record = s.record()
    written = [f for f in _EVIDENCE if (s.run_dir / f[0]).exists()]
    text = postmortem.draft(
        record,
        subject=f"database incident: {branch.name}",
        by=f"written by the database_down notebook at {now:%H:%M} UTC",
        summary=summary,
        files=postmortem.run_files(record, *written),
    )
    name = f"{s.started:%Y-%m-%d}.md"
    s.evidence.write_text(name, f"<!-- draft for docs/incidents/{name} -->\n" + text)
    return text


# what this scenario writes into the evidence folder, linked from the postmortem when there
_EVIDENCE = (
    ("triage.json", "every signal triage read, and the branch"),
    ("postgres-log-before-restart.txt", "Postgres's log before the restart"),
    ("postgres-log-after-restart.txt", "Postgres's log after a restart that did not help"),
)


# --------------------------------------------------------------------------- the scenario


class DatabaseDown(Scenario):
    """Runbook scenario 3, one method per step: triage names the branch, only its steps act.

    Example (in a notebook)::

        s, dd = open_scenario("database_down")
        dd.triage(); dd.take_lock()
        dd.service_failed(); dd.disk_full_report(); dd.disk_full_rotate()
        dd.pool_exhausted(); dd.corrupt_hand_off(); dd.recheck_and_drain(); dd.postmortem()
        s.done()
    """

    def __init__(self, s: Session, *, keep_newest_backups: int = 7, wait_seconds: float = 60):
        super().__init__(s)
        self.keep_newest_backups = int(keep_newest_backups)
        self.wait_seconds = float(wait_seconds)
        self.table: pd.DataFrame | None = None
        self.branch: Branch | None = None
        self.disk: dict[str, Any] | None = None
        self.drained: dict[str, Any] | None = None

    def _on(self, *names: str) -> bool:
        assert self.branch is not None, "run triage() first"
        if self.branch.name in names:
            return True
        print(f"skipped: branch is {self.branch.name!r}")
        return False

    def triage(self) -> Branch:
        """Step 1: every signal at once, one table, one branch."""
        with self.s.step("1. Triage: every signal at once"):
            self.table, self.branch = triage(self.s)
        show(readable(self.table))
        return self.branch

    # Step 2, `take_lock()`: only on a branch that changes the server
    lock_step, lock_once = "2. Take the host lock", True

    def no_lock_needed(self) -> str | None:
        assert self.branch is not None, "run triage() first"
        nothing = f"{self.branch.name}: this branch changes nothing on the server, no lock needed"
        return None if changes_server(self.branch) else nothing

    def change_summary(self) -> list[str]:
        """What this branch will change, for the confirmation question (after `triage`)."""
        s = self.s
        name = self.branch.name if self.branch is not None else None
        manager = s.profile.services.manager
        fix = {
            SERVICE_FAILED: f"restart {s.services.unit('postgres')} ({manager}), then SELECT 1",
            DISK_FULL: "delete the old backups listed above (the newest "
            f"{self.keep_newest_backups} are never deleted)",
            POOL_EXHAUSTED: f"restart {s.services.unit('api')} ({manager}) to drop its "
            "stale connections",
        }.get(name or "", f"branch {name!r}: no change of its own")
        return [
            f"branch {name!r}: {fix}",
            "afterwards: drain the dead-letter queues that hold messages (admin API)",
        ]

    def service_failed(self) -> dict[str, Any] | None:
        """Branch service failed: recent logs, restart, wait, SELECT 1.

        A restart that does not bring it back means it will not start: the
        branch becomes "corrupt" and the run hands over to scenario 5.
        """
        if not self._on(SERVICE_FAILED):
            return None
        with self.s.step("2. Service failed: logs, restart, wait, SELECT 1"):
            failed = after_failed(self.s, self.wait_seconds)
        print(failed.get("log_tail") or "")
        if failed["branch"].name == CORRUPT:
            self.branch = failed["branch"]
            show(self.branch)
        return failed

    def disk_full_report(self) -> dict[str, Any] | None:
        """Branch disk full: the space report and the old backups to delete, BEFORE deleting."""
        if not self._on(DISK_FULL):
            return None
        with self.s.step("2. Disk full: space report and rotation candidates"):
            self.disk = disk_full_candidates(self.s, self.keep_newest_backups)
        show(self.disk["report"].head(20))
        print(f"Old backups to delete ({len(self.disk['candidates'])}), oldest first:")
        show(backups_table(self.disk["candidates"]))
        print(f"Never deleted: the newest {self.keep_newest_backups} backups:")
        show(backups_table(self.disk["kept"]))
        return self.disk

    def disk_full_rotate(self) -> pd.DataFrame | None:
        """Branch disk full: delete exactly the list shown (a changing call), re-check."""
        if not self._on(DISK_FULL):
            return None
        assert self.disk is not None, "run disk_full_report() first"
        with self.s.step("2. Disk full: delete the listed old backups, re-check"):
            rotated = rotate_backups(self.s, self.disk)
        return rotated["usage"]

    def pool_exhausted(self) -> dict[str, Any] | None:
        """Branch pool exhausted: pg_stat_activity by state, restart the API, re-check."""
        if not self._on(POOL_EXHAUSTED):
            return None
        with self.s.step("2. Pool exhausted: connections by state, restart the API, re-check"):
            pool = after_pool_exhausted(self.s, self.wait_seconds)
        show(pool["before"])
        show(pool["after"])
        return pool

    def corrupt_hand_off(self) -> str | None:
        """Branch corrupt or will not start: stop here, hand over to scenario 5 (restore_incident)."""
        assert self.branch is not None, "run triage() first"
        if self.branch.name in (NO_INCIDENT, NOT_THE_DATABASE):
            print(f"{self.branch.name}: {self.branch.reason}. Nothing was changed.")
            return None
        if not self._on(CORRUPT):
            return None
        with self.s.step("2. Corrupt: hand-off to restore_incident"):
            command = after_corrupt(self.s, self.branch)
        print("The database is corrupt or will not start. Do NOT restart it again and again.")
        print("Restore from backup with scenario 5 (notebooks/restore_incident.ipynb):")
        print()
        print("    " + command)
        return command

    def recheck_and_drain(self) -> pd.DataFrame | None:
        """Steps 3 and 4: deep health postgres again, then drain the DLQs (not after a hand-off)."""
        assert self.branch is not None, "run triage() first"
        if self.branch.name == CORRUPT:
            print("skipped: the database is handed over to restore_incident")
            return None
        t = self.s.profile.targets
        with self.s.step("3. Re-check: deep health postgres"):
            deep_postgres_check(self.s, self.branch, self.wait_seconds)
        with self.s.step("4. Post-incident: drain the DLQs (webhooks, queued LLM work)"):
            self.drained = drain_after_incident(
                self.s, self.branch, t.webhooks_drain_limit, t.outbound_drain_limit
            )
        return self.drained["table"]

    def postmortem(self) -> str | None:
        """The postmortem draft (none when no incident was found)."""
        assert self.branch is not None, "run triage() first"
        if self.branch.name == NO_INCIDENT:
            print("no incident found: no postmortem")
            return None
        draft = write_postmortem(
            self.s, self.branch, self.drained if self.branch.name != CORRUPT else None
        )
        print(draft)
        return draft
