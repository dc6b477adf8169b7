"""PostgreSQL through the profile's psql invocation, results as pandas DataFrames.

Example (in a notebook)::

    s.db.query("SELECT count(*) AS n FROM leads")["n"][0]
    s.db.query("SELECT 1 AS ok", database="postgres")
"""

from __future__ import annotations

import io
import shlex
from typing import TYPE_CHECKING

from runbook.result import Result

if TYPE_CHECKING:
    import pandas as pd

    from runbook.core.context import OpsContext


#: what every read-only call sets first (`query`, `probe`)
READ_ONLY = "SET default_transaction_read_only = on"


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

    def execute(self, sql: str, *, database: str | None = None, timeout: float = 600) -> Result:
        """A changing statement (dry-run and confirmation apply)."""
        return self.ctx.run(
            self._psql(sql, database, False), shell=True, timeout=timeout, label="psql"
        )
