"""PostgreSQL through the profile's psql invocation, results as pandas DataFrames.

Example (in a notebook)::

    s.db.query("SELECT count(*) AS n FROM leads")["n"][0]
    s.db.query("SELECT 1 AS ok", database="postgres")
    s.db.select1().ok
    s.db.connections()           # client connections by state against max_connections
"""

from __future__ import annotations

import io
import shlex
from dataclasses import dataclass, field
from typing import TYPE_CHECKING

from runbook.result import Result

if TYPE_CHECKING:
    import pandas as pd

    from runbook.core.context import OpsContext


#: what every read-only call sets first (`query`, `probe`)
READ_ONLY = "SET default_transaction_read_only = on"

# client connections by state, then the limits: one psql call, in the postgres database
_CONNECTIONS = (
    "SELECT st || '=' || n FROM (SELECT coalesce(state, 'unknown') AS st, count(*) AS n "
    "FROM pg_stat_activity WHERE backend_type = 'client backend' GROUP BY 1) x ORDER BY 1; "
    "SHOW max_connections; SHOW superuser_reserved_connections;"
)


def psql_error(text: str) -> str:
    """psql's error output in one line, without the harmless noise around it.

    >>> psql_error('could not change directory to "/root"\\npsql: error: connection refused')
    'psql: error: connection refused'
    """
    # sudo -u postgres from root's home prints a harmless cd warning first
    lines = [ln for ln in text.strip().splitlines() if "could not change directory" not in ln]
    return " ".join(ln.strip() for ln in lines)[-300:]


@dataclass(frozen=True)
class Connections:
    """Client connections by state against the server's limits; `error` when psql failed."""

    by_state: list[tuple[str, int]] = field(default_factory=list)
    max: int | None = None
    reserved: int | None = None
    error: str | None = None

    @property
    def used(self) -> int:
        return sum(n for _, n in self.by_state)

    @classmethod
    def parse(cls, stdout: str) -> Connections:
        """The answer to `_CONNECTIONS`.

        >>> c = Connections.parse("active=2\\nidle=5\\n40\\n3\\n")
        >>> c.used, c.max, c.reserved, c.by_state[0]
        (7, 40, 3, ('active', 2))
        """
        lines = [ln.strip() for ln in stdout.splitlines() if ln.strip()]
        nums = [ln for ln in lines if ln.isdigit()]
        pairs = [ln.split("=", 1) for ln in lines if "=" in ln]
        top, reserved = (int(nums[-2]), int(nums[-1])) if len(nums) >= 2 else (None, None)
        return cls([(k, int(n)) for k, n in pairs], top, reserved)


class Postgres:
    def __init__(self, ctx: OpsContext):
        self.ctx = ctx
        self.profile = ctx.profile.postgres

    def _psql(self, sql: str, database: str | None, csv: bool, *, readonly: bool = False) -> str:
        args = ["-X", "-q", "-v", "ON_ERROR_STOP=1", "-d", database or self.profile.database]
        if csv:
            args += ["--csv"]
        if readonly:
            # least privilege for a read (server armor, runbook.ops.armor): the same
            # connection runs the SQL in read-only transactions, so a read that would
            # write fails instead. Not a role: the profile's psql is the superuser, and a
            # lesser role would hide other sessions' state in pg_stat_activity.
            args += ["-c", READ_ONLY]
        args += ["-c", sql]
        return self.profile.psql + " " + " ".join(shlex.quote(a) for a in args)

    def query(self, sql: str, *, database: str | None = None, timeout: float = 60) -> pd.DataFrame:
        """A read-only query, as a DataFrame with typed columns (in read-only transactions)."""
        import pandas as pd

        r = self.ctx.probe(
            self._psql(sql, database, True, readonly=True),
            shell=True,
            timeout=timeout,
            label="psql",
        )
        if not r.stdout.strip():
            return pd.DataFrame()
        return pd.read_csv(io.StringIO(r.stdout))

    def probe(self, sql: str, *, database: str | None = None, timeout: float = 30) -> Result:
        """A read-only query whose failure is information (`warn=True`)."""
        return self.ctx.probe(
            self._psql(sql, database, False, readonly=True),
            shell=True,
            timeout=timeout,
            warn=True,
            label="psql",
        )

    def select1(self, *, timeout: float = 15) -> Result:
        """`SELECT 1` as the profile's psql user (its failure is information)."""
        return self.probe("SELECT 1", timeout=timeout)

    def connections(self, *, timeout: float = 15) -> Connections:
        """Client connections by state, max_connections and the superuser's reserve.

        Read in the postgres database, not the app's: this must answer even
        when the app's database is damaged.
        """
        r = self.probe(_CONNECTIONS, database="postgres", timeout=timeout)
        if not r.ok:
            return Connections(error=psql_error(r.stderr) or "no answer")
        return Connections.parse(r.stdout)

    def connections_by_state(self) -> pd.DataFrame:
        """The runbook's `SELECT count(*), state FROM pg_stat_activity GROUP BY state`, by role."""
        return self.query(
            "SELECT count(*) AS connections, coalesce(state, 'background') AS state, "
            "coalesce(usename, '') AS role FROM pg_stat_activity GROUP BY 2, 3 ORDER BY 1 DESC",
            database="postgres",
        )

    def execute(self, sql: str, *, database: str | None = None, timeout: float = 600) -> Result:
        """A changing statement (dry-run and confirmation apply)."""
        return self.ctx.run(
            self._psql(sql, database, False), shell=True, timeout=timeout, label="psql"
        )
