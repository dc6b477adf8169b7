"""The GitHub stub: Actions workflow runs and issue comments of the one repository.

Public API under ``/github`` (``api.github.com``), a bearer or ``token``
credential, GitHub's error bodies; control endpoints ``/_stub/github/runs``
(add a run), ``/_stub/github/ci`` (conclude the newest run) and
``/_stub/github/protection`` (protect or unprotect a branch; main starts
protected, as Dealix's is: a pull request required, no force push, no deletion).
"""

from __future__ import annotations

import base64
import hashlib
import random
import re
import secrets
from collections.abc import Mapping
from typing import Any

from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import Route

from .common import (
    EVERY_METHOD,
    BodyError,
    Service,
    as_dict,
    ceil_div,
    int_param,
    iso_seconds,
    now_ms,
    parse_time,
    read_json,
    secret_eq,
    stable_int,
)
from .control import control_body, control_error, local

MAX_COMMENTS = 1_000

WORKFLOWS = {
    "CI": (".github/workflows/ci.yml", 98_765_401),
    "Lint": (".github/workflows/lint.yml", 98_765_402),
    "Tests": (".github/workflows/tests.yml", 98_765_403),
}
WORKFLOW_CYCLE = ("CI", "Lint", "Tests")
COMMIT_TITLES = (
    "Merge pull request #118 from VoXc2/feat/pricing-cache",
    "Merge pull request #121 from VoXc2/fix/webhook-dedupe",
    "Merge pull request #124 from VoXc2/chore/deps",
    "Merge pull request #127 from VoXc2/feat/lead-scoring",
    "Merge pull request #130 from VoXc2/fix/breaker-reset",
)


def workflow_for(name: str) -> tuple[str, int]:
    if name in WORKFLOWS:
        return WORKFLOWS[name]
    slug = re.sub(r"[^a-z0-9]+", "-", name.lower()).strip("-") or "workflow"
    return f".github/workflows/{slug}.yml", stable_int("workflow:" + name, 8)


def random_sha() -> str:
    return secrets.token_hex(20)


def new_run(
    github: dict[str, Any],
    *,
    name: str,
    head_sha: str,
    branch: str,
    status: str,
    conclusion: str | None,
    created_ms: int,
    updated_ms: int,
    display_title: str,
) -> dict[str, Any]:
    run_id = github["next_run_id"]
    # Real run ids are sparse; a random stride keeps them looking that way.
    github["next_run_id"] = run_id + random.randint(40, 4_000)
    path, workflow_id = workflow_for(name)
    previous = [r["run_number"] for r in github["runs"] if r["name"] == name]
    return {
        "id": run_id,
        "name": name,
        "head_branch": branch,
        "head_sha": head_sha,
        "path": path,
        "display_title": display_title,
        "run_number": (max(previous) + 1) if previous else 140 + len(github["runs"]),
        "event": "push",
        "status": status,
        "conclusion": conclusion,
        "workflow_id": workflow_id,
        "check_suite_id": run_id * 3 + 11,
        "created_at": iso_seconds(created_ms),
        "updated_at": iso_seconds(updated_ms),
        "run_started_at": iso_seconds(created_ms),
    }


def default_section(now: int) -> dict[str, Any]:
    """Green CI on main: five completed runs, the newest first."""
    github: dict[str, Any] = {
        "runs": [],
        "comments": [],
        "next_run_id": 9_100_000_000 + random.randint(0, 99_999_999),
        "next_comment_id": 2_400_000_000 + random.randint(0, 99_999_999),
    }
    # Oldest first, so that the names alternate CI, Lint, Tests in time order
    # and a run added later continues the cycle.
    for j in range(5):
        created = now - (4 - j) * 18 * 3_600_000 - 3_600_000 - random.randint(0, 900_000)
        run = new_run(
            github,
            name=WORKFLOW_CYCLE[j % 3],
            head_sha=random_sha(),
            branch="main",
            status="completed",
            conclusion="success",
            created_ms=created,
            updated_ms=created + random.randint(150_000, 420_000),
            display_title=COMMIT_TITLES[j],
        )
        github["runs"].insert(0, run)
    return github


def node_id(prefix: str, number: int) -> str:
    """GitHub-style global node id (opaque base64 after a type prefix)."""
    raw = number.to_bytes(8, "big")
    return prefix + base64.urlsafe_b64encode(raw).decode().rstrip("=")


class GitHub(Service):
    """``/github/repos/{owner}/{repo}/...`` and its control endpoints."""

    def routes(self) -> list[Route]:
        gh = "/github/repos/{owner}/{repo}"
        return [
            Route(f"{gh}/actions/runs", self.github_runs, methods=["GET"]),
            Route(
                f"{gh}/issues/{{number:int}}/comments", self.github_create_comment, methods=["POST"]
            ),
            Route(
                f"{gh}/issues/{{number:int}}/comments", self.github_list_comments, methods=["GET"]
            ),
            Route(
                f"{gh}/branches/{{branch}}/protection",
                self.github_branch_protection,
                methods=["GET"],
            ),
            Route("/_stub/github/runs", local(self.control_github_runs), methods=["POST"]),
            Route(
                "/_stub/github/protection", local(self.control_github_protection), methods=["POST"]
            ),
            Route("/_stub/github/ci", local(self.control_github_ci), methods=["POST"]),
        ]

    def fallbacks(self) -> list[Route]:
        # Unknown paths answer in GitHub's shape.
        return [Route("/github/{rest:path}", self.github_not_found, methods=EVERY_METHOD)]

    GITHUB_DOCS = "https://docs.github.com/rest"

    def github_error(self, status: int, message: str, docs: str | None = None) -> Response:
        return JSONResponse(
            {
                "message": message,
                "documentation_url": docs or self.GITHUB_DOCS,
                "status": str(status),
            },
            status,
        )

    def github_denied(self, request: Request) -> Response | None:
        header = request.headers.get("authorization", "").strip()
        if not header:
            return self.github_error(401, "Requires authentication")
        scheme, _, token = header.partition(" ")
        if scheme.lower() not in ("bearer", "token") or not secret_eq(
            token.strip(), self.cfg["github_token"]
        ):
            return self.github_error(401, "Bad credentials")
        return None

    def github_repo_ok(self, request: Request) -> bool:
        full = f"{request.path_params['owner']}/{request.path_params['repo']}"
        return full.lower() == self.cfg["github_repo"].lower()

    def github_refused(self, request: Request, docs: str) -> Response | None:
        """401 without the token; then 404, pointing at `docs`, for another repository."""
        denied = self.github_denied(request)
        if denied:
            return denied
        if not self.github_repo_ok(request):
            return self.github_error(404, "Not Found", docs)
        return None

    def github_user(self) -> dict[str, Any]:
        login = self.cfg["github_repo"].split("/")[0]
        return {
            "login": login,
            "id": stable_int("user:" + login, 8),
            "node_id": node_id("MDQ6VXNlcj", stable_int("user:" + login, 8)),
            "type": "User",
            "site_admin": False,
            "html_url": f"https://github.com/{login}",
        }

    def render_run(self, run: Mapping[str, Any]) -> dict[str, Any]:
        repo = self.cfg["github_repo"]
        api = f"https://api.github.com/repos/{repo}"
        run_url = f"{api}/actions/runs/{run['id']}"
        owner = self.github_user()
        repository = {
            "id": stable_int("repo:" + repo, 9),
            "node_id": node_id("R_kgDO", stable_int("repo:" + repo, 9)),
            "name": repo.split("/")[-1],
            "full_name": repo,
            "private": True,
            "owner": owner,
            "html_url": f"https://github.com/{repo}",
            "url": api,
        }
        return {
            "id": run["id"],
            "name": run["name"],
            "node_id": node_id("WFR_kwLO", run["id"]),
            "head_branch": run["head_branch"],
            "head_sha": run["head_sha"],
            "path": run["path"],
            "display_title": run["display_title"],
            "run_number": run["run_number"],
            "event": run["event"],
            "status": run["status"],
            "conclusion": run["conclusion"],
            "workflow_id": run["workflow_id"],
            "check_suite_id": run["check_suite_id"],
            "check_suite_node_id": node_id("CS_kwDO", run["check_suite_id"]),
            "url": run_url,
            "html_url": f"https://github.com/{repo}/actions/runs/{run['id']}",
            "pull_requests": [],
            "created_at": run["created_at"],
            "updated_at": run["updated_at"],
            "actor": owner,
            "run_attempt": 1,
            "referenced_workflows": [],
            "run_started_at": run["run_started_at"],
            "triggering_actor": owner,
            "jobs_url": f"{run_url}/jobs",
            "logs_url": f"{run_url}/logs",
            "check_suite_url": f"{api}/check-suites/{run['check_suite_id']}",
            "artifacts_url": f"{run_url}/artifacts",
            "cancel_url": f"{run_url}/cancel",
            "rerun_url": f"{run_url}/rerun",
            "previous_attempt_url": None,
            "workflow_url": f"{api}/actions/workflows/{run['workflow_id']}",
            "head_commit": {
                "id": run["head_sha"],
                "tree_id": hashlib.sha256(run["head_sha"].encode()).hexdigest()[:40],
                "message": run["display_title"],
                "timestamp": run["created_at"],
                "author": {
                    "name": owner["login"],
                    "email": f"{owner['login']}@users.noreply.github.com",
                },
                "committer": {"name": "GitHub", "email": "noreply@github.com"},
            },
            "repository": repository,
            "head_repository": repository,
        }

    @staticmethod
    def link_header(request: Request, page: int, last: int) -> str | None:
        if last <= 1:
            return None
        links = []
        if page > 1:
            links.append((page - 1, "prev"))
        if page < last:
            links.append((page + 1, "next"))
            links.append((last, "last"))
        if page > 1:
            links.append((1, "first"))
        return ", ".join(
            f'<{request.url.include_query_params(page=n)}>; rel="{rel}"' for n, rel in links
        )

    @classmethod
    def paginate(
        cls, request: Request, items: list[dict[str, Any]]
    ) -> tuple[list[dict[str, Any]], dict[str, str]]:
        """The page asked for (``page``, ``per_page``: 30, at most 100) and its Link header."""
        q = request.query_params
        per_page = min(max(int_param(q, "per_page", 30), 1), 100)
        page = max(int_param(q, "page", 1), 1)
        chunk = items[(page - 1) * per_page : page * per_page]
        link = cls.link_header(request, page, ceil_div(len(items), per_page))
        return chunk, {"Link": link} if link else {}

    RUN_STATUSES = frozenset(
        {"completed", "in_progress", "queued", "requested", "waiting", "pending", "action_required"}
    )

    async def github_runs(self, request: Request) -> Response:
        refused = self.github_refused(
            request,
            "https://docs.github.com/rest/actions/workflow-runs#list-workflow-runs-for-a-repository",
        )
        if refused:
            return refused
        q = request.query_params
        runs: list[dict[str, Any]] = self.state["github"]["runs"]
        if q.get("branch"):
            runs = [r for r in runs if r["head_branch"] == q["branch"]]
        if q.get("status"):
            # GitHub's status filter takes statuses and conclusions alike.
            wanted = q["status"]
            key = "status" if wanted in self.RUN_STATUSES else "conclusion"
            runs = [r for r in runs if r[key] == wanted]
        for name in ("event", "head_sha"):
            if q.get(name):
                runs = [r for r in runs if r[name] == q[name]]
        total = len(runs)
        chunk, headers = self.paginate(request, runs)
        return JSONResponse(
            {"total_count": total, "workflow_runs": [self.render_run(r) for r in chunk]},
            headers=headers,
        )

    def render_comment(self, comment: Mapping[str, Any]) -> dict[str, Any]:
        repo = self.cfg["github_repo"]
        api = f"https://api.github.com/repos/{repo}"
        number = comment["issue_number"]
        return {
            "id": comment["id"],
            "node_id": node_id("IC_kwDO", comment["id"]),
            "url": f"{api}/issues/comments/{comment['id']}",
            "html_url": f"https://github.com/{repo}/issues/{number}#issuecomment-{comment['id']}",
            "issue_url": f"{api}/issues/{number}",
            "body": comment["body"],
            "user": self.github_user(),
            "created_at": comment["created_at"],
            "updated_at": comment["updated_at"],
            "author_association": "OWNER",
        }

    COMMENT_DOCS = "https://docs.github.com/rest/issues/comments#create-an-issue-comment"

    async def github_create_comment(self, request: Request) -> Response:
        refused = self.github_refused(request, self.COMMENT_DOCS)
        if refused:
            return refused
        try:
            payload = await read_json(request)
        except BodyError:
            return self.github_error(400, "Problems parsing JSON", self.COMMENT_DOCS)
        body = as_dict(payload).get("body")
        if not isinstance(body, str):
            return self.github_error(
                422, 'Invalid request.\n\n"body" wasn\'t supplied.', self.COMMENT_DOCS
            )
        github = self.state["github"]
        stamp = iso_seconds(now_ms())
        comment = {
            "id": github["next_comment_id"],
            "issue_number": request.path_params["number"],
            "body": body,
            "created_at": stamp,
            "updated_at": stamp,
        }
        github["next_comment_id"] += random.randint(1, 500)
        github["comments"].append(comment)
        del github["comments"][:-MAX_COMMENTS]
        self.store.save()
        rendered = self.render_comment(comment)
        return JSONResponse(rendered, 201, headers={"Location": rendered["url"]})

    async def github_list_comments(self, request: Request) -> Response:
        refused = self.github_refused(
            request, "https://docs.github.com/rest/issues/comments#list-issue-comments"
        )
        if refused:
            return refused
        q = request.query_params
        number = request.path_params["number"]
        comments = [c for c in self.state["github"]["comments"] if c["issue_number"] == number]
        since = parse_time(q.get("since"))
        if since is not None:
            comments = [c for c in comments if (parse_time(c["updated_at"]) or 0) >= since]
        chunk, headers = self.paginate(request, comments)
        return JSONResponse([self.render_comment(c) for c in chunk], headers=headers)

    async def github_not_found(self, request: Request) -> Response:
        return self.github_error(404, "Not Found")

    # -- Control ----------------------------------------------------------

    CONCLUSIONS = frozenset(
        {
            "success",
            "failure",
            "cancelled",
            "skipped",
            "timed_out",
            "neutral",
            "action_required",
            "stale",
        }
    )

    async def control_github_runs(self, request: Request) -> Response:
        body = await control_body(request)
        runs = self.state["github"]["runs"]
        head_sha = body.get("head_sha") or random_sha()
        if not isinstance(head_sha, str) or not re.fullmatch(r"[0-9a-f]{40}", head_sha):
            return control_error("head_sha must be 40 lowercase hex characters")
        has_conclusion = "conclusion" in body
        conclusion = body.get("conclusion")
        status = body.get("status")
        if status is None:
            # An explicit null conclusion means "still running"; no conclusion at all, green.
            running = has_conclusion and conclusion is None
            status = "in_progress" if running else "completed"
        if status not in ("completed", "in_progress", "queued", "requested", "waiting", "pending"):
            return control_error(f"unknown status {status!r}")
        if status == "completed":
            if conclusion is None:
                if has_conclusion:
                    return control_error("a completed run needs a conclusion")
                conclusion = "success"
            if conclusion not in self.CONCLUSIONS:
                return control_error(f"unknown conclusion {conclusion!r}")
        elif conclusion is not None:
            return control_error("only a completed run has a conclusion")
        name = body.get("name")
        if name is None:
            newest = runs[0]["name"] if runs else WORKFLOW_CYCLE[-1]
            cycle_at = WORKFLOW_CYCLE.index(newest) if newest in WORKFLOW_CYCLE else -1
            name = WORKFLOW_CYCLE[(cycle_at + 1) % len(WORKFLOW_CYCLE)]
        branch = body.get("branch") or "main"
        title = body.get("display_title") or f"Deploy {head_sha[:7]}"
        if not all(isinstance(v, str) and v for v in (name, branch, title)):
            return control_error("name, branch and display_title must be strings")
        now = now_ms()
        run = new_run(
            self.state["github"],
            name=name,
            head_sha=head_sha,
            branch=branch,
            status=status,
            conclusion=conclusion,
            created_ms=now,
            updated_ms=now,
            display_title=title,
        )
        runs.insert(0, run)
        self.store.save()
        return JSONResponse(self.render_run(run), 201)

    def protected_branches(self) -> list[str]:
        # a state saved before the key existed: main protected, as on GitHub
        return list(self.state["github"].get("protected_branches", ["main"]))

    async def github_branch_protection(self, request: Request) -> Response:
        """``GET /repos/{owner}/{repo}/branches/{branch}/protection``, GitHub's shape."""
        docs = "https://docs.github.com/rest/branches/branch-protection#get-branch-protection"
        refused = self.github_refused(request, docs)
        if refused:
            return refused
        branch = request.path_params["branch"]
        if branch not in self.protected_branches():
            return self.github_error(404, "Branch not protected", docs)
        api = f"https://api.github.com/repos/{self.cfg['github_repo']}/branches/{branch}/protection"
        return JSONResponse(
            {
                "url": api,
                "required_status_checks": {
                    "url": f"{api}/required_status_checks",
                    "strict": True,
                    "contexts": ["CI"],
                    "contexts_url": f"{api}/required_status_checks/contexts",
                    "checks": [{"context": "CI", "app_id": None}],
                },
                "required_pull_request_reviews": {
                    "url": f"{api}/required_pull_request_reviews",
                    "dismiss_stale_reviews": True,
                    "require_code_owner_reviews": False,
                    "require_last_push_approval": False,
                    "required_approving_review_count": 1,
                },
                "required_signatures": {"url": f"{api}/required_signatures", "enabled": False},
                "enforce_admins": {"url": f"{api}/enforce_admins", "enabled": True},
                "required_linear_history": {"enabled": False},
                "allow_force_pushes": {"enabled": False},
                "allow_deletions": {"enabled": False},
                "block_creations": {"enabled": False},
                "required_conversation_resolution": {"enabled": False},
                "lock_branch": {"enabled": False},
                "allow_fork_syncing": {"enabled": False},
            }
        )

    async def control_github_protection(self, request: Request) -> Response:
        body = await control_body(request)
        branch, protected = body.get("branch", "main"), body.get("protected")
        if not isinstance(branch, str) or not branch or not isinstance(protected, bool):
            return control_error('body: {"branch": "main", "protected": true|false}')
        branches = [b for b in self.protected_branches() if b != branch]
        if protected:
            branches.append(branch)
        self.state["github"]["protected_branches"] = branches
        self.store.save()
        return JSONResponse({"protected_branches": branches})

    async def control_github_ci(self, request: Request) -> Response:
        body = await control_body(request)
        conclusion = body.get("conclusion")
        if conclusion not in self.CONCLUSIONS:
            return control_error(
                "conclusion must be 'success' or 'failure' (or another GitHub conclusion)"
            )
        runs = self.state["github"]["runs"]
        if not runs:
            return control_error("there is no run to mark", 409)
        run = runs[0]
        run["status"] = "completed"
        run["conclusion"] = conclusion
        run["updated_at"] = iso_seconds(now_ms())
        self.store.save()
        return JSONResponse(self.render_run(run))
