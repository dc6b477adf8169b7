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


class Postgres:
    def __init__(self, ctx: OpsContext):
        self.ctx = ctx
        self.profile = ctx.profile.postgres

    def _psql(self, sql: str, database: str | None, csv: bool) -> str:
        args = ["-X", "-q", "-v", "ON_ERROR_STOP=1", "-d", database or self.profile.database]
        if csv:
            args += ["--csv"]
        args += ["-c", sql]
        return self.profile.psql + " " + " ".join(shlex.quote(a) for a in args)

    def query(self, sql: str, *, database: str | None = None, timeout: float = 60) -> pd.DataFrame:
        """A read-only query, as a DataFrame with typed columns."""
        import pandas as pd

        r = self.ctx.probe(
            self._psql(sql, database, True), shell=True, timeout=timeout, label="psql"
        )
        if not r.stdout.strip():
            return pd.DataFrame()
        return pd.read_csv(io.StringIO(r.stdout))

    def probe(self, sql: str, *, database: str | None = None, timeout: float = 30) -> Result:
        """A read-only query whose failure is information (`warn=True`)."""
        return self.ctx.probe(
            self._psql(sql, database, False), shell=True, timeout=timeout, warn=True, label="psql"
        )

    def execute(self, sql: str, *, database: str | None = None, timeout: float = 600) -> Result:
        """A changing statement (dry-run and confirmation apply)."""
        return self.ctx.run(
            self._psql(sql, database, False), shell=True, timeout=timeout, label="psql"
        )
