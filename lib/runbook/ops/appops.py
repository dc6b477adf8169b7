"""git and alembic on the server, in the app's directory and venv.

Example (in a notebook)::

    s.git.head()                 # '4f1c…' (read-only)
    s.git.pull_ff_only()         # changing: dry-run, confirmation and guards apply
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


class Git:
    def __init__(self, ctx: OpsContext):
        self.ctx = ctx
        self.dir = ctx.profile.app.dir

    def _git(self, *args: str) -> list[str]:
        return ["git", "-C", self.dir, *args]

    def head(self) -> str:
        return self.ctx.probe(self._git("rev-parse", "HEAD")).stdout.strip()

    def rev_parse(self, ref: str) -> str:
        return self.ctx.probe(
            self._git("rev-parse", "--verify", f"{ref}^{{commit}}")
        ).stdout.strip()

    def branch(self) -> str | None:
        """The checked-out branch, or None on a detached HEAD."""
        r = self.ctx.probe(self._git("symbolic-ref", "--short", "-q", "HEAD"), warn=True)
        return r.stdout.strip() or None

    def is_ancestor(self, older: str, newer: str) -> bool:
        r = self.ctx.probe(
            self._git("merge-base", "--is-ancestor", older, newer), accept=(0, 1)
        )
        return r.exit_code == 0

    def log(self, rev_range: str, limit: int = 20) -> list[str]:
        r = self.ctx.probe(self._git("log", "--oneline", f"-{limit}", rev_range))
        return r.stdout.splitlines()

    def fetch(self, remote: str = "origin") -> Result:
        return self.ctx.run(self._git("fetch", remote), label="git-fetch")

    def checkout(self, ref: str) -> Result:
        return self.ctx.run(self._git("checkout", "--quiet", ref), label="git-checkout")

    def pull_ff_only(self, remote: str = "origin", branch: str = "main") -> Result:
        return self.ctx.run(self._git("pull", "--ff-only", remote, branch), label="git-pull")


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
        return self.ctx.run(
            [self.bin, "upgrade", target], cwd=self.dir, label="alembic-upgrade"
        )

    def downgrade(self, steps: int = 1) -> Result:
        """Undo `steps` migrations; more than one needs `approved_by` (runbook scenario 2)."""
        self.ctx.guards.check_downgrade(steps, f"alembic downgrade -{steps}")
        return self.ctx.run(
            [self.bin, "downgrade", f"-{int(steps)}"], cwd=self.dir, label="alembic-downgrade"
        )
