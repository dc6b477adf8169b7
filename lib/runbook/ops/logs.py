"""The server's logs: one reader per log, and the pure parsers that make sense of them.

Readers (read-only, they take an `OpsContext`):

- `journal(ctx, units, lines)`: systemd's journal of some units, plus, for
  Postgres, the tail of each cluster's own log file (`pg_lsclusters` names it);
- `supervisor_tail(ctx, control, name, lines)`: a supervised program's log;
  `Services.logs(role)` picks one of the two for a role;
- `read_log(ctx, path)`: a whole log file ("" when it is not there or not readable);
- `auth_log(ctx)` and `access_log(ctx)`: sshd's logins and the API's requests
  as tables, from the paths in the profile's `security` section;
- `preserved_paths(security)`: the logs a security incident preserves, as
  shell words for `tar`; `archive(ctx, remote)` tars them on the server.

Parsers (pure, tested without a server): `recent_errors` and `log_gist` for
Postgres's log, `parse_auth_log` for sshd's, `parse_access_log` for the app's
access lines and nginx's combined log.

Example::

    >>> parse_auth_log("Accepted publickey for root from 127.0.0.1 port 1 ssh2\\n")[
    ...     ["address", "user", "result"]]
         address  user    result
    0  127.0.0.1  root  accepted
"""

from __future__ import annotations

import re
import shlex
from datetime import UTC, datetime
from typing import TYPE_CHECKING

from runbook.clock import utc_now
from runbook.core.context import OpsContext

if TYPE_CHECKING:
    import pandas as pd

    from runbook.core.profile import Security
    from runbook.result import Result


# ----------------------------------------------------------------- service logs


def journal(ctx: OpsContext, units: list[str], lines: int, *, cluster_logs: bool = False) -> Result:
    """The last `lines` journal lines of `units`; with `cluster_logs`, then each Postgres
    cluster's own log file, printed last because the server's own words (FATAL, PANIC)
    are there: Debian's clusters log to /var/log/postgresql/postgresql-15-main.log and
    journald only holds systemd's start/stop lines."""
    n = int(lines)
    cmd = f"journalctl {' '.join(f'-u {shlex.quote(u)}' for u in units)} -n {n} --no-pager"
    if cluster_logs:
        # pg_lsclusters' 7th column is the log file; absent off Debian (journal only).
        cmd += (
            "; if command -v pg_lsclusters >/dev/null 2>&1; then "
            "for f in $(pg_lsclusters --no-header | awk '{print $7}'); do "
            f'[ -r "$f" ] && echo "==> $f <==" && tail -n {n} "$f"; '
            "done; fi"
        )
    return ctx.probe(cmd, shell=True, warn=True)


def supervisor_tail(ctx: OpsContext, control: str, name: str, lines: int) -> Result:
    """The last `lines` lines of a supervised program's log (`control` is supervisorctl's
    invocation from the profile)."""
    # supervisorctl tails bytes, not lines: take enough bytes, then cut
    n = int(lines)
    cmd = f"{control} tail -{n * 200} {shlex.quote(name)} | tail -n {n}"
    return ctx.probe(cmd, shell=True, warn=True)


def last_lines(text: str, lines: int) -> list[str]:
    """The last `lines` lines of a log's text, without the trailing blank ones.

    >>> last_lines("a\\nb\\nc\\n\\n", 2)
    ['b', 'c']
    """
    return text.strip().splitlines()[-lines:] if lines > 0 else []


# ----------------------------------------------------------------- Postgres's log

# "2026-11-27 03:00:01.123 UTC [4242] " before each Postgres log line: group 1 is the pid
_PG_PREFIX = re.compile(r"^\d{4}-\d\d-\d\d \d\d:\d\d:\d\d(?:\.\d+)? \S+ \[(\d+)\]\s*")
_SEVERE = re.compile(r"\b(PANIC|FATAL|ERROR)\b")
_READY = "database system is ready to accept connections"


def recent_errors(log_text: str) -> str:
    """The log lines that can tell of corruption: errors logged since the server last
    came up (a cluster's own log file keeps every past lifetime).

    Only PANIC/FATAL/ERROR lines count: crash recovery logs "invalid record length at
    0/32513C0: wanted 24, got 0" at LOG level as the normal end of the WAL it replays.

    >>> recent_errors("LOG:  invalid record length at 0/3: wanted 24, got 0\\n"
    ...               "LOG:  database system is ready to accept connections\\n"
    ...               "FATAL:  the database system is shutting down\\n")
    'FATAL:  the database system is shutting down'
    """
    lines = log_text.splitlines()
    ready = [i for i, ln in enumerate(lines) if _READY in ln]
    since = lines[ready[-1] + 1 :] if ready else lines
    return "\n".join(ln for ln in since if _SEVERE.search(ln))


def log_gist(text: str, lines: int = 3) -> str:
    """Why it failed, on one line: the last FATAL/PANIC/ERROR line and the lines the same
    process logged just before it (Postgres logs the cause first, then FATAL).

    >>> log_gist("LOG:  starting\\nFATAL:  invalid value for parameter shared_buffers\\nLOG:  done\\n")
    'FATAL:  invalid value for parameter shared_buffers'
    """
    rows = [ln.strip() for ln in text.strip().splitlines() if ln.strip()]
    bad = [i for i, ln in enumerate(rows) if _SEVERE.search(ln)]
    if not bad:
        pick = rows[-lines:]
    else:
        last = bad[-1]
        m = _PG_PREFIX.match(rows[last])
        if m is None:  # no pids to tell attempts apart: the last few bad lines
            pick = [rows[i] for i in bad[-lines:]]
        else:
            pick = [rows[last]]
            for ln in reversed(rows[max(0, last - lines + 1) : last]):
                prev = _PG_PREFIX.match(ln)
                if prev is None or prev.group(1) != m.group(1):
                    break
                pick.insert(0, ln)
    return " | ".join(_PG_PREFIX.sub("", ln) for ln in pick)[:300]


# ----------------------------------------------------------------- log files


def read_log(ctx: OpsContext, path: str) -> str:
    """A log file's text; "" when it is missing or unreadable (a target may not keep it)."""
    r = ctx.probe(["test", "-r", path], warn=True, label="readable")
    if not r.ok:
        return ""
    return ctx.read_file(path).decode("utf-8", "replace")


def auth_log(ctx: OpsContext, *, year: int | None = None) -> pd.DataFrame:
    """sshd's logins from the profile's `security.auth_log` (see `parse_auth_log`)."""
    return parse_auth_log(read_log(ctx, ctx.profile.security.auth_log), year=year)


def access_log(ctx: OpsContext) -> pd.DataFrame:
    """The API's requests from the profile's `security.api_access_log` (see `parse_access_log`)."""
    return parse_access_log(read_log(ctx, ctx.profile.security.api_access_log))


def preserved_paths(security: Security) -> str:
    """The nginx, auth and app logs as shell words: globs (/var/log/dealix*) are left for
    the server's shell to expand, fixed paths are quoted.

    >>> from runbook.core.profile import Security
    >>> preserved_paths(Security(app_logs=["/var/log/dealix*", "/srv/my app.log"]))
    "/var/log/nginx /var/log/auth.log /var/log/dealix* '/srv/my app.log'"
    """
    paths = [security.nginx_logs, security.auth_log, *security.app_logs]
    return " ".join(p if any(c in p for c in "*?[") else shlex.quote(p) for p in paths)


def archive(ctx: OpsContext, remote: str) -> Result:
    """Tar the logs a security incident preserves (`preserved_paths`) into `remote` on the
    server, in `security.evidence_dir`, owner-only. A change: dry run, confirmation and the
    lock apply. Exit 1 is accepted: a log grew while tar read it, the copy is still good."""
    sec = ctx.profile.security
    return ctx.run(
        f"mkdir -p {shlex.quote(sec.evidence_dir)} && umask 077 && "
        "tar --ignore-failed-read --warning=no-file-changed "
        f"-czf {shlex.quote(remote)} {preserved_paths(sec)}",
        shell=True,
        accept=(0, 1),
        label="evidence-tarball",
    )


# ----------------------------------------------------------------- sshd's auth log

_ISO = r"(?P<iso>\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d(?:\.\d+)?(?:Z|[+-]\d\d:?\d\d)?)"
_SYSLOG = r"(?P<sys>[A-Z][a-z]{2} [ \d]\d \d\d:\d\d:\d\d)"
_PREFIX = re.compile(rf"^(?:{_ISO}|{_SYSLOG})\s")
_ACCEPTED = re.compile(r"Accepted (?P<method>\S+) for (?P<user>\S+) from (?P<addr>\S+) port (\d+)")
_FAILED = re.compile(
    r"Failed (?P<method>\S+) for (?:invalid user )?(?P<user>\S*) from (?P<addr>\S+) port (\d+)"
)


def _line_time(line: str, year: int) -> datetime | None:
    m = _PREFIX.match(line)
    if not m:
        return None
    if m.group("iso"):
        ts = datetime.fromisoformat(m.group("iso").replace("Z", "+00:00"))
        return ts.replace(tzinfo=UTC) if ts.tzinfo is None else ts.astimezone(UTC)
    # Traditional syslog has no year: assume `year` (the caller passes the current one).
    return datetime.strptime(f"{year} {m.group('sys')}", "%Y %b %d %H:%M:%S").replace(tzinfo=UTC)


def parse_auth_log(text: str, *, year: int | None = None) -> pd.DataFrame:
    """sshd's accepted and failed logins: one row per attempt.

    Lines with ISO (Debian 12 rsyslog) or traditional syslog timestamps get a
    time; lines without one (sshd -E, the loopback sandbox) get NaT.

    >>> df = parse_auth_log(
    ...     "2026-11-27T07:41:02.5+00:00 dealix sshd[7]: Failed password for invalid user "
    ...     "admin from 203.0.113.66 port 51234 ssh2\\n"
    ...     "Nov 27 07:43:10 dealix sshd[9]: Accepted password for deploy from 203.0.113.66 "
    ...     "port 51302 ssh2\\n", year=2026)
    >>> list(df["result"]), list(df["user"])
    (['failed', 'accepted'], ['admin', 'deploy'])
    """
    import pandas as pd

    year = year or utc_now().year
    rows = []
    for line in text.splitlines():
        for result, rx in (("accepted", _ACCEPTED), ("failed", _FAILED)):
            m = rx.search(line)
            if m:
                rows.append(
                    {
                        "time": _line_time(line, year),
                        "address": m.group("addr"),
                        "user": m.group("user") or "(empty)",
                        "result": result,
                        "method": m.group("method"),
                    }
                )
                break
    df = pd.DataFrame(rows, columns=["time", "address", "user", "result", "method"])
    df["time"] = pd.to_datetime(df["time"], utc=True)
    return df


# ----------------------------------------------------------------- the API's access log

# the app's own line: `<ts> INFO dealix.access <ip> "<METHOD> <path>" <status> <ms>ms key=<state>`
_APP_ACCESS = re.compile(
    r'dealix\.access (?P<addr>\S+) "(?P<method>[A-Z]+) (?P<path>[^"]*)" (?P<status>\d{3}) '
    r"\S+ key=(?P<key>\w+)"
)
# nginx's combined format (production: the API's access log is nginx's)
_NGINX = re.compile(
    r'^(?P<addr>\S+) \S+ \S+ \[(?P<ts>[^\]]+)\] "(?P<method>[A-Z]+) (?P<path>\S+)[^"]*" '
    r"(?P<status>\d{3})"
)


def parse_access_log(text: str) -> pd.DataFrame:
    """API requests from the app's access lines or nginx's combined log.

    >>> parse_access_log('2026-11-27T08:02:11+0000 INFO dealix.access 203.0.113.66 '
    ...     '"GET /api/v1/admin/dlq/stats" 200 1.2ms key=present')[["address", "status", "key"]]
            address  status      key
    0  203.0.113.66     200  present
    """
    import pandas as pd

    rows = []
    for line in text.splitlines():
        ts: datetime | None
        m = _APP_ACCESS.search(line)
        if m:
            parts = line.split(" ", 1)
            try:
                ts = datetime.strptime(parts[0], "%Y-%m-%dT%H:%M:%S%z").astimezone(UTC)
            except ValueError:
                ts = None
            key = m.group("key")
        else:
            m = _NGINX.search(line)
            if not m:
                continue
            try:
                ts = datetime.strptime(m.group("ts"), "%d/%b/%Y:%H:%M:%S %z").astimezone(UTC)
            except ValueError:
                ts = None
            key = None  # nginx does not know whether the key was valid: the status tells
        rows.append(
            {
                "time": ts,
                "address": m.group("addr"),
                "method": m.group("method"),
                "path": m.group("path").split("?", 1)[0],
                "status": int(m.group("status")),
                "key": key,
            }
        )
    df = pd.DataFrame(rows, columns=["time", "address", "method", "path", "status", "key"])
    df["time"] = pd.to_datetime(df["time"], utc=True)
    return df
