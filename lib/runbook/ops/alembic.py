"""alembic on the server, in the app's directory and venv.

Example (in a notebook)::

    s.alembic.current()          # '0002'
    s.alembic.downgrade(1)       # more than one step needs approved_by
"""

from __future__ import annotations

import re
from typing import TYPE_CHECKING

from runbook.result import Result

if TYPE_CHECKING:
    from runbook.core.context import OpsContext

_REV = re.compile(r"^([0-9a-zA-Z_]+)(?: \((.*)\))?")


class Alembic:
    def __init__(self, ctx: OpsContext):
        self.ctx = ctx
        app = ctx.profile.app
        self.dir = app.dir
        self.bin = f"{app.venv}/bin/alembic"

    def _probe(self, *args: str) -> Result:
        return self.ctx.probe([self.bin, *args], cwd=self.dir, label="alembic")

    def current(self) -> str | None:
        """The database's revision (None when the database has none)."""
        for line in self._probe("current").stdout.splitlines():
            m = _REV.match(line.strip())
            if m and not line.startswith("INFO"):
                return m.group(1)
        return None

    def heads(self) -> list[str]:
        """The head revision(s) of the migrations in the current checkout."""
        return [
            m.group(1)
            for line in self._probe("heads").stdout.splitlines()
            if (m := _REV.match(line.strip())) and not line.startswith("INFO")
        ]

    def history(self) -> str:
        return self._probe("history").stdout

    def upgrade(self, target: str = "head") -> Result:
        return self.ctx.run([self.bin, "upgrade", target], cwd=self.dir, label="alembic-upgrade")

    def downgrade(self, steps: int = 1) -> Result:
        """Undo `steps` migrations; more than one needs `approved_by` (runbook scenario 2)."""
        self.ctx.guards.check_downgrade(steps, f"alembic downgrade -{steps}")
        return self.ctx.run(
            [self.bin, "downgrade", f"-{int(steps)}"], cwd=self.dir, label="alembic-downgrade"
        )
