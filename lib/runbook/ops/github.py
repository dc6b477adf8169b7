"""GitHub Actions status through the REST API (the runbook's `gh run list`).

Example (in a notebook)::

    green, runs = s.github.ci_green()   # last three runs on main completed/success?
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from runbook.ops.http import HttpClient

if TYPE_CHECKING:
    import pandas as pd

    from runbook.core.context import OpsContext


class GitHub(HttpClient):
    def __init__(self, ctx: OpsContext):
        p = ctx.profile.github
        super().__init__(
            ctx,
            "github",
            p.api_url,
            headers={"Accept": "application/vnd.github+json", "X-GitHub-Api-Version": "2022-11-28"},
        )
        self.repo = p.repo
        self.branch = p.branch

    def _auth(self) -> dict[str, str]:
        token = self.ctx.secrets.get(self.ctx.profile.secrets.github_token)
        return {"Authorization": f"Bearer {token}"}

    def workflow_runs(self, branch: str | None = None, limit: int = 3) -> pd.DataFrame:
        """The latest workflow runs on a branch, newest first."""
        import pandas as pd

        resp = self.get(
            f"/repos/{self.repo}/actions/runs",
            params={"branch": branch or self.branch, "per_page": limit},
            headers=self._auth(),
        )
        runs: list[dict[str, Any]] = resp.json().get("workflow_runs", [])[:limit]
        cols = ["name", "status", "conclusion", "head_sha", "created_at", "html_url"]
        return pd.DataFrame([{c: r.get(c) for c in cols} for r in runs], columns=cols)

    def ci_green(self, limit: int = 3) -> tuple[bool, pd.DataFrame]:
        """True when the last `limit` runs on the branch are all completed/success."""
        runs = self.workflow_runs(limit=limit)
        ok = len(runs) == limit and bool(
            ((runs["status"] == "completed") & (runs["conclusion"] == "success")).all()
        )
        return ok, runs
