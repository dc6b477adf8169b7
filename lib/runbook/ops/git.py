"""git on the server, in the app's checkout: the one git wrapper.

Example (in a notebook)::

    s.git.head()                 # '4f1c…' (read-only)
    s.git.read("log", "-1", "--format=%ct", "HEAD").stdout
    s.git.pull_ff_only()         # changing: dry-run, confirmation and guards apply
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from runbook.result import Result

if TYPE_CHECKING:
    from runbook.core.context import OpsContext


class Git:
    def __init__(self, ctx: OpsContext):
        self.ctx = ctx
        self.dir = ctx.profile.app.dir

    def _git(self, *args: str) -> list[str]:
        return ["git", "-C", self.dir, *args]

    def read(self, *args: str, label: str = "git", **kw: Any) -> Result:
        """Any read-only git command in the checkout (`warn=True` etc. pass through)."""
        return self.ctx.probe(self._git(*args), label=label, **kw)

    def show(self, rev: str, path: str) -> str:
        """The file `path` as commit `rev` has it (no checkout)."""
        return self.read("show", f"{rev}:{path}", label="git-show").stdout

    def ls_tree(self, rev: str, path: str) -> list[str]:
        """The names in directory `path` of commit `rev` (no checkout)."""
        return self.read(
            "ls-tree", "--name-only", f"{rev}:{path}", label="git-ls-tree"
        ).stdout.split()

    def origin_sha(self, branch: str) -> str | None:
        """The commit `branch` points at on the origin (`git ls-remote`), or None."""
        words = self.read("ls-remote", "origin", f"refs/heads/{branch}", label="ls-remote").stdout
        return words.split()[0] if words.split() else None

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
        r = self.ctx.probe(self._git("merge-base", "--is-ancestor", older, newer), accept=(0, 1))
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
