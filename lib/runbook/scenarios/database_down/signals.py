"""Scenario 3's judging: the triage table, the branch it names and why (pure: no Session).

`signal_table(values)` turns what `DatabaseDown.triage` measured into ONE
table a person reads left to right; `classify(table)` names the runbook
branch from it. Both are pure, so they are unit-tested on crafted tables.

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
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from runbook.ops.logs import recent_errors

if TYPE_CHECKING:
    import pandas as pd

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

    def __repr__(self) -> str:
        # one line where no markdown is shown (the saved notebook's text, a terminal)
        return f"branch: {self.name}: {self.reason}"


# --------------------------------------------------------------------------- the table


def signal_table(values: dict[str, Any], seen: dict[str, str] | None = None) -> pd.DataFrame:
    """Build the triage table from raw values (`DatabaseDown.triage` does this from the server).

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


def changes_server(branch: Branch) -> bool:
    """Whether the branch's own steps change the server (restart, delete).

    >>> changes_server(Branch(DISK_FULL, "")), changes_server(Branch(CORRUPT, ""))
    (True, False)
    """
    return branch.name in CHANGING


# --------------------------------------------------------------------------- hand-off


def reason_for_restore(branch: Branch) -> str:
    """One line for restore_incident's `reason`: the error without paths or quotes.

    >>> reason_for_restore(Branch(CORRUPT, 'Postgres runs but SELECT 1 fails: "invalid page"'))
    'database corrupt: Postgres runs but SELECT 1 fails: invalid page'
    >>> reason_for_restore(Branch(CORRUPT, WONT_START + ": x; its log ends: FATAL:  bad"))
    'database will not start: FATAL: bad'
    """
    text = re.sub(r"[\"'`]", "", branch.reason.replace("…", " "))
    if text.startswith(WONT_START):
        return ("database will not start: " + " ".join(text.split("log ends:")[-1].split()))[:120]
    return ("database corrupt: " + " ".join(text.split("failed:")[-1].split()))[:120]


def handoff_command(env: str, reason: str = "database corrupt or will not start") -> str:
    """The exact command that hands over to scenario 5 (restore_incident, newest backup).

    >>> handoff_command("production", "invalid page in block 0")
    "runbook run restore_incident --env production --confirm production -p reason 'invalid page in block 0'"
    """
    confirm = "" if env == "sandbox" else f" --confirm {env}"
    return f"runbook run restore_incident --env {env}{confirm} -p reason {shlex.quote(reason)}"
