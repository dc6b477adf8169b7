"""Deploy and rollback: runbook scenarios 1 and 2, as steps a notebook calls.

The written runbook has two traps this module removes instead of copying:

- Its snapshot (`git rev-parse HEAD > .last_good_sha`) runs before every
  deploy, so re-running a half-failed deploy records the bad SHA as "last
  good" and the rollback returns to broken code. `Deploy.snapshot` writes
  `.last_good_sha` only when the current deployment is healthy: deep health
  green AND the checked-out HEAD is the SHA the API is running.
- Its rollback checks out the old SHA and then runs `alembic downgrade -1`;
  the old checkout no longer holds the migration being undone, so alembic
  cannot find it. `Rollback` downgrades first, with the bad code still
  checked out, then checks out the last good SHA.

Example (in a notebook)::

    dep = Deploy(s)                 # scenario 1
    dep.ci_gate()                   # aborts (Forbidden) before any change when CI is not green
    dep.take_lock()                 # step 2: one changing run per host
    dep.snapshot()
    dep.pull_install_migrate()
    dep.restart()
    dep.verify_health()
    dep.probes()
    dep.watch()
    dep.advice()                    # on failure: the exact rollback command line

    rb = Rollback(s, reason="deep health red after deploy")   # scenario 2
    rb.announce(); rb.plan(); rb.take_lock(); rb.downgrade(); rb.checkout()
    rb.restart(); rb.verify(); rb.error_rate()

The pure helpers are testable without a server:

    >>> deep_green({"postgres": {"status": "green"}, "redis": {"status": "green"},
    ...             "llm_providers": {"status": "green"}})
    (True, 'postgres green, redis green, llm_providers green')
    >>> snapshot_decision("abc", "abc", True)[0], snapshot_decision("abc", "def", True)[0]
    (True, False)
    >>> migration_chain({"0003": "0002", "0002": "0001", "0001": None}, "0003", "0001")
    ['0003', '0002']
"""

from __future__ import annotations

import contextlib
import json
import re
import shlex
import time
from collections.abc import Iterator
from datetime import UTC, datetime
from pathlib import Path
from typing import TYPE_CHECKING, Any

from runbook.errors import Forbidden, HTTPFailed, ParameterError, RunbookError
from runbook.evidence import iso, utc_now
from runbook.http import HttpClient
from runbook.paths import outputs_dir
from runbook.story import Text

if TYPE_CHECKING:
    import pandas as pd

    from runbook.session import Session

DEEP_PARTS = ("postgres", "redis", "llm_providers")
HEALTH_WAIT_S = 20.0
SENTRY_BUCKET_S = 10
MIGRATIONS_DIR = "migrations/versions"
DETECTED_EVENT = "bad deploy detected"
_SHA = re.compile(r"^[0-9a-f]{40}$")
_REV_RE = re.compile(r"^revision(?:\s*:\s*[^=]+)?\s*=\s*['\"]([^'\"]+)['\"]", re.M)
_DOWN_RE = re.compile(r"^down_revision(?:\s*:\s*[^=]+)?\s*=\s*(None|['\"]([^'\"]*)['\"])", re.M)


# --------------------------------------------------------------------------
# pure helpers


def parse_migration(text: str) -> tuple[str | None, str | None]:
    """(revision, down_revision) of an alembic migration file's text.

    >>> parse_migration('revision: str = "0003"\\ndown_revision: str | None = "0002"\\n')
    ('0003', '0002')
    >>> parse_migration("revision = '0001'\\ndown_revision = None\\n")
    ('0001', None)
    """
    rev = _REV_RE.search(text)
    down = _DOWN_RE.search(text)
    return (
        rev.group(1) if rev else None,
        down.group(2) if down and down.group(1) != "None" else None,
    )


def heads(revisions: dict[str, str | None]) -> list[str]:
    """Revisions nothing revises (alembic's heads).

    >>> heads({"0001": None, "0002": "0001", "0003": "0002"})
    ['0003']
    """
    referenced = {d for d in revisions.values() if d}
    return sorted(r for r in revisions if r not in referenced)


def migration_chain(
    revisions: dict[str, str | None], current: str | None, target: str | None
) -> list[str]:
    """The revisions to undo to get from `current` down to `target`, newest first.

    Walks `down_revision` links from `current`; raises ValueError when
    `target` is not below `current` (a branch, or an unknown revision).

    >>> migration_chain({"0002": "0001", "0001": None}, "0002", "0002")
    []
    >>> migration_chain({"0002": "0001", "0001": None}, "0001", "0002")
    Traceback (most recent call last):
    ...
    ValueError: revision 0002 is not below 0001 in this checkout's migrations
    """
    chain: list[str] = []
    rev = current
    seen: set[str] = set()
    while rev != target:
        if rev is None or rev not in revisions or rev in seen:
            raise ValueError(
                f"revision {target} is not below {current} in this checkout's migrations"
            )
        seen.add(rev)
        chain.append(rev)
        rev = revisions[rev]
    return chain


def deep_green(body: dict[str, Any]) -> tuple[bool, str]:
    """Whether postgres, redis and llm_providers are all green, and a one-line summary.

    >>> deep_green({"postgres": {"status": "red"}, "redis": {"status": "green"}})
    (False, 'postgres red, redis green, llm_providers missing')
    """
    parts = []
    ok = True
    for name in DEEP_PARTS:
        part = body.get(name)
        status = part.get("status") if isinstance(part, dict) else None
        ok = ok and status == "green"
        parts.append(f"{name} {status or 'missing'}")
    return ok, ", ".join(parts)


def snapshot_decision(head: str, running: str | None, healthy: bool) -> tuple[bool, str]:
    """Whether the snapshot may record `head` as the last good SHA, and why.

    Only a deployment that is healthy AND runs the checked-out code is
    "good": after a half-failed deploy HEAD is the bad SHA (red, or not
    what the API runs), and recording it would make the rollback return to it.

    >>> snapshot_decision("a" * 40, "a" * 40, False)
    (False, 'deep health is not green: the current deployment is not known to be good')
    """
    if not healthy:
        return False, "deep health is not green: the current deployment is not known to be good"
    if not running or running != head:
        return False, (
            f"the API runs {(running or 'unknown')[:12]} but HEAD is {head[:12]}: "
            "the checkout was changed and not (successfully) deployed"
        )
    return True, f"HEAD {head[:12]} is what the API runs and deep health is green"


def rollback_command(env: str, reason: str, *, confirm: bool) -> str:
    """The exact command line that runs the rollback notebook headless.

    >>> rollback_command("production", "deep health red after deploy of 1a2b3c4", confirm=True)
    "runbook run rollback --env production -p reason 'deep health red after deploy of 1a2b3c4' --confirm production"
    >>> rollback_command("sandbox", "x", confirm=False)
    'runbook run rollback --env sandbox -p reason x'
    """
    cmd = f"runbook run rollback --env {shlex.quote(env)} -p reason {shlex.quote(reason)}"
    if confirm:
        cmd += f" --confirm {shlex.quote(env)}"
    return cmd


def per_minute(buckets: list[list[float]], since: float, until: float) -> float | None:
    """Errors per minute over the whole Sentry stats buckets inside [since, until).

    `buckets` are `[bucket start (unix s), count]` with SENTRY_BUCKET_S
    seconds each. None when no whole bucket lies inside the window.

    >>> per_minute([[100, 5], [110, 1], [120, 7]], 100, 130)
    26.0
    >>> per_minute([[100, 5], [110, 1]], 101, 125) is None   # 110-120 is whole
    False
    >>> per_minute([[100, 5]], 101, 109) is None
    True
    """
    whole = [c for start, c in buckets if start >= since and start + SENTRY_BUCKET_S <= until]
    if not whole:
        return None
    return sum(whole) * 60.0 / (len(whole) * SENTRY_BUCKET_S)


def error_rate_ok(recent: float, baseline: float) -> bool:
    """Back to baseline: at most twice the baseline rate, with 5 errors/min of slack.

    >>> error_rate_ok(0.0, 0.0), error_rate_ok(120.0, 0.0), error_rate_ok(9.0, 4.0)
    (True, False, True)
    """
    return recent <= max(2.0 * baseline, baseline + 5.0)


def arrived_at(reflog: str, sha: str) -> float | None:
    """When HEAD became `sha` and stayed there, from `git reflog --date=unix --format='%H %gd'`.

    Newest entry first; re-checking out the same SHA (a re-run deploy) does not move it.

    >>> arrived_at("b HEAD@{300}\\nb HEAD@{200}\\na HEAD@{100}\\n", "b")
    200.0
    >>> arrived_at("a HEAD@{100}\\n", "b") is None
    True
    """
    when = None
    for line in reflog.splitlines():
        parts = line.split()
        m = re.search(r"\{(\d+)\}", line)
        if not parts or not m or parts[0] != sha:
            break
        when = float(m.group(1))
    return when


def _parse_ts(text: Any) -> float | None:
    """Unix time of an evidence timestamp ("2026-11-27T10:00:00.123Z"), None if unreadable."""
    try:
        ts = datetime.fromisoformat(str(text).replace("Z", "+00:00"))
    except ValueError:
        return None
    return (ts if ts.tzinfo else ts.replace(tzinfo=UTC)).timestamp()


def find_detection(
    deploy_runs: Path, sha: str | None, *, until: float | None = None
) -> dict[str, Any] | None:
    """The newest deploy run's "bad deploy detected" event for `sha`, or None.

    `deploy_runs` is `outputs/<env>/deploy/`; each run folder's
    commands.jsonl is read newest run first (folder names start with the UTC
    time). Only an event about `sha` (the SHA being rolled back) counts, and
    only one logged before `until`: never a guess.

    >>> import json, tempfile
    >>> d = Path(tempfile.mkdtemp())
    >>> run = d / "20261127T100000Z-deploy"; run.mkdir()
    >>> _ = (run / "commands.jsonl").write_text(json.dumps({"ts": "2026-11-27T10:01:00.000Z",
    ...     "kind": "deploy", "event": "bad deploy detected", "sha": "b" * 40}) + "\\n")
    >>> find_detection(d, "b" * 40)["ts"], find_detection(d, "c" * 40)
    ('2026-11-27T10:01:00.000Z', None)
    """
    if not sha or not deploy_runs.is_dir():
        return None
    for run in sorted((p for p in deploy_runs.iterdir() if p.is_dir()), reverse=True):
        log = run / "commands.jsonl"
        if not log.is_file():
            continue
        found: dict[str, Any] | None = None
        for line in log.read_text(encoding="utf-8", errors="replace").splitlines():
            try:
                event = json.loads(line)
            except ValueError:
                continue  # a line cut short by a crash
            if not isinstance(event, dict) or event.get("event") != DETECTED_EVENT:
                continue
            about = event.get("sha")
            # runs logged before the event carried the SHA name it in the rollback command
            if about != sha and not (
                about is None and f"of {sha[:7]}:" in str(event.get("rollback"))
            ):
                continue
            at = _parse_ts(event.get("ts"))
            if at is None or (until is not None and at > until):
                continue
            found = {
                "ts": event["ts"],
                "at": at,
                "run_dir": str(run),
                "failure": event.get("failure"),
            }
        if found:
            return found
    return None


def _show(obj: Any) -> None:
    """Display in a kernel (tables, figures); print elsewhere."""
    try:
        from IPython import get_ipython
        from IPython.display import display

        if get_ipython() is not None:
            display(obj)
            return
    except ImportError:
        pass
    print(obj)


# --------------------------------------------------------------------------
# Sentry and PostHog through their APIs


class Sentry(HttpClient):
    """Sentry's REST API (events, stats) with the auth token from the secrets."""

    def __init__(self, session: Session):
        p = session.profile.sentry
        super().__init__(session, "sentry", p.api_url)
        self.org, self.project = p.org, p.project

    def _auth(self) -> dict[str, str]:
        token = self.session.secrets.get(self.session.profile.secrets.sentry_token)
        return {"Authorization": f"Bearer {token}"}

    def _base(self) -> str:
        return f"/api/0/projects/{self.org}/{self.project}"

    def events(self, period: str = "15m", query: str = "") -> list[dict[str, Any]]:
        params = {"statsPeriod": period, **({"query": query} if query else {})}
        body = self.get(f"{self._base()}/events/", params=params, headers=self._auth()).json()
        return body if isinstance(body, list) else []

    def has_event(self, event_id: str) -> bool:
        want = event_id.replace("-", "")
        return any(
            str(e.get("eventID") or e.get("id")).replace("-", "") == want
            for e in self.events("15m")
        )

    def stats(self, since: float, until: float) -> list[list[float]]:
        """Received errors per 10-second bucket: `[[bucket start, count], ...]`."""
        body = self.get(
            f"{self._base()}/stats/",
            params={
                "stat": "received",
                "since": int(since),
                "until": int(until),
                "resolution": f"{SENTRY_BUCKET_S}s",
            },
            headers=self._auth(),
        ).json()
        return body if isinstance(body, list) else []

    def rate(self, since: float, until: float) -> float | None:
        return per_minute(self.stats(since, until), since, until)


class PostHog(HttpClient):
    """PostHog's events API with the personal API key from the secrets."""

    def __init__(self, session: Session):
        p = session.profile.posthog
        super().__init__(session, "posthog", p.api_url)
        self.project_id = p.project_id

    def has_event(self, event: str, after: datetime, **props: str) -> bool:
        key = self.session.secrets.get(self.session.profile.secrets.posthog_key)
        params: dict[str, Any] = {"event": event, "after": iso(after)}
        if props:
            params["properties"] = json.dumps(
                [{"key": k, "value": v, "type": "event"} for k, v in props.items()]
            )
        body = self.get(
            f"/api/projects/{self.project_id}/events/",
            params=params,
            headers={"Authorization": f"Bearer {key}"},
        ).json()
        return bool(isinstance(body, dict) and body.get("results"))


def _wait(seconds: float, probe: Any, interval: float = 1.0) -> tuple[bool, float]:
    """Call `probe()` until it is truthy or `seconds` pass; (ok, seconds waited)."""
    t0 = time.monotonic()
    while True:
        if probe():
            return True, time.monotonic() - t0
        if time.monotonic() - t0 >= seconds:
            return False, time.monotonic() - t0
        time.sleep(interval)


# --------------------------------------------------------------------------
# shared server reads


class _Ops:
    def __init__(self, session: Session, health_wait: float | None = None):
        self.s = session
        self.app = session.profile.app
        self.health_wait = HEALTH_WAIT_S if health_wait is None else float(health_wait)

    def _git(self, *args: str) -> list[str]:
        return ["git", "-C", self.app.dir, *args]

    def running_sha(self) -> str | None:
        try:
            resp = self.s.api.health()
        except HTTPFailed:
            return None
        body = resp.json() if resp.status == 200 else None
        return body.get("sha") if isinstance(body, dict) else None

    def read_last_good(self) -> str | None:
        r = self.s.probe(["cat", self.app.last_good_sha_file], warn=True, label="last-good-sha")
        sha = r.stdout.strip() if r.ok else ""
        return sha or None

    def revisions_at(self, rev: str) -> dict[str, str | None]:
        """{revision: down_revision} of the migration files in commit `rev` (no checkout)."""
        return {r: down for r, (down, _) in self.migration_files_at(rev).items()}

    def migration_files_at(self, rev: str) -> dict[str, tuple[str | None, str]]:
        """{revision: (down_revision, file name)} of the migrations in commit `rev`."""
        listing = self.s.probe(
            self._git("ls-tree", "--name-only", f"{rev}:{MIGRATIONS_DIR}"), label="git-ls-tree"
        ).stdout.split()
        out: dict[str, tuple[str | None, str]] = {}
        for name in listing:
            if not name.endswith(".py"):
                continue
            text = self.s.probe(
                self._git("show", f"{rev}:{MIGRATIONS_DIR}/{name}"), label="git-show"
            ).stdout
            r, d = parse_migration(text)
            if r:
                out[r] = (d, name)
        return out

    def preview_unchanged_env_and_restart(self, what: str) -> None:
        """Dry run: the two sections every deploy and rollback share."""
        s = self.s
        s.preview_change(
            ".env keys",
            [f"none: {what} never edits {self.app.env_file} (only scenario 4 changes one key)"],
        )
        unit = s.services.unit("api")
        s.preview_change(
            "services to restart", [f"{unit} ({s.profile.services.manager} restart)"]
        )

    def wait_running(self, sha: str) -> tuple[bool, float]:
        """Until /health answers 200 with `sha` (the restarted API runs the new code)."""
        return _wait(self.health_wait, lambda: self.running_sha() == sha, 0.5)

    def wait_deep_green(self) -> tuple[bool, dict[str, Any], float]:
        last: dict[str, Any] = {}

        def probe() -> bool:
            nonlocal last
            last = self.s.api.deep_health()
            return deep_green(last)[0]

        ok, waited = _wait(self.health_wait, probe, 1.0)
        return ok, last, waited

    def pip_install(self) -> None:
        self.s.run(
            [f"{self.app.venv}/bin/pip", "install", "-q", "-r", "requirements.txt"],
            cwd=self.app.dir,
            label="pip-install",
        )

    def restart_api(self, sha: str | None) -> None:
        s = self.s
        s.services.restart("api")
        if s.dry_run:
            s.check("Service restarted", expected="active (running)", actual="dry run", passed=None)
            return
        state = s.services.status("api")
        s.check(
            "Service restarted",
            expected="active (running)",
            actual=f"{state.words}, pid {state.pid}",
            passed=state.active,
        )
        if sha:
            ok, waited = self.wait_running(sha)
            s.check(
                "API runs the checked-out SHA",
                expected=sha[:12],
                actual=f"{(self.running_sha() or 'no answer')[:12]} after {waited:.1f} s",
                passed=ok,
            )


# --------------------------------------------------------------------------
# scenario 1: deploy


class Deploy(_Ops):
    """Runbook scenario 1, one method per step; checks land in the session."""

    def __init__(
        self,
        session: Session,
        *,
        watch_minutes: float | None = None,
        health_wait: float | None = None,
    ):
        super().__init__(session, health_wait)
        targets = session.profile.targets
        self.watch_minutes = float(
            targets.watch_minutes if watch_minutes is None else watch_minutes
        )
        if self.watch_minutes < 0:
            raise ParameterError("watch_minutes must be >= 0", key="watch_minutes")
        self.probe_seconds = float(targets.sentry_probe_seconds)
        self.target_sha: str | None = None
        self.previous_sha: str | None = None
        self.head_before: str | None = None
        self.rev_before: str | None = None
        self.running_before: str | None = None
        self.started_at = time.time()
        self.changes_started = False
        self.healthy: bool | None = None
        self.failure: str | None = None
        self.hint_shown = False

    # -- failure handling ------------------------------------------------
    def rollback_hint(self) -> str:
        reason = self.failure or "deploy failed"
        sha = (self.target_sha or "?")[:7]
        return rollback_command(
            self.s.env, f"deploy of {sha}: {reason}", confirm=not self.s.profile.is_sandbox
        )

    def _say_rollback(self) -> None:
        if self.hint_shown:
            return
        self.hint_shown = True
        cmd = self.rollback_hint()
        self.s.evidence.append(
            {
                "kind": "deploy",
                "event": DETECTED_EVENT,
                # the rollback's clock reads this line: which SHA went bad, and when
                "sha": self.target_sha,
                "failure": self.failure,
                "rollback": cmd,
            }
        )
        print(
            "DEPLOY FAILED: " + (self.failure or "see above") + "\n"
            "Roll back now (runbook scenario 2, target < 5 min): run the next command below "
            "headless, or step through notebooks/rollback.ipynb with the same parameters."
        )
        self.s.set_next_command(cmd)

    @contextlib.contextmanager
    def step(self, name: str) -> Iterator[None]:
        """`session.step`, and on an error after the first change: the rollback command."""
        with self.s.step(name):
            try:
                yield
            except Exception as exc:
                if self.changes_started and not self.s.dry_run:
                    self.failure = self.failure or f"{name} failed ({type(exc).__name__})"
                    if self._untouched():
                        self._say_nothing_deployed()
                    else:
                        self._say_rollback()
                raise

    def _untouched(self) -> bool:
        """True when the failed step left the server as the snapshot saw it (nothing live)."""
        try:
            head = self.s.git.head()
            return (
                self.head_before is not None
                and head == self.head_before
                and self.running_sha() == self.running_before
                and self.s.alembic.current() == self.rev_before
            )
        except Exception:  # cannot tell: assume the worst and say how to roll back
            return False

    def _say_nothing_deployed(self) -> None:
        sha = (self.running_before or "?")[:12]
        self.s.evidence.append(
            {"kind": "deploy", "event": "stopped, nothing deployed", "failure": self.failure}
        )
        print(
            f"DEPLOY STOPPED: {self.failure}\n"
            f"Nothing went live: the server still runs {sha}, checkout and migrations unchanged. "
            "No rollback needed: fix the cause (for a failed `pull --ff-only`, commits on the "
            "server that are not on main: drift, which goes through a PR) and deploy again."
        )

    # -- step 1 -----------------------------------------------------------
    def ci_gate(self) -> pd.DataFrame:
        """CI green on main (the last three runs completed/success, one of them on the commit
        to deploy); otherwise abort before any change, showing the runs."""
        s = self.s
        with s.step("1. Verify CI green on main"):
            branch = s.profile.github.branch
            r = s.probe(self._git("ls-remote", "origin", f"refs/heads/{branch}"), label="ls-remote")
            self.target_sha = r.stdout.split()[0] if r.stdout.split() else None
            green, runs = s.github.ci_green(3)
            covered = bool(self.target_sha) and self.target_sha in set(runs["head_sha"])
            s.check(
                "CI green on main",
                expected="last 3 runs completed / success",
                actual=", ".join(
                    f"{a}/{b}" for a, b in zip(runs["status"], runs["conclusion"], strict=True)
                )
                or "no runs",
                passed=green,
            )
            s.check(
                "CI ran on the commit to deploy",
                expected=f"a run on {(self.target_sha or '?')[:12]} (origin/{branch})",
                actual="yes" if covered else "no run on it among the last 3",
                passed=covered,
            )
            if not (green and covered):
                _show(runs)  # the cell raises: show the runs that made us abort
                raise Forbidden(
                    "ci-green-before-deploy",
                    f"deploy {(self.target_sha or '?')[:12]} to {s.env}",
                    source="Scenario 1 step 1: all three latest must be completed/success. "
                    "If not, abort.",
                    why="CI is not green for the commit on main; nothing was changed",
                )
            return runs

    # -- step 2 -----------------------------------------------------------
    def take_lock(self) -> dict[str, Any]:
        """SSH to the server and take the host lock (one changing run per host), as a step."""
        with self.s.step("2. Take the host lock"):
            return self.s.acquire_lock().info()

    # -- step 3 -----------------------------------------------------------
    def snapshot(self) -> dict[str, Any]:
        """`.last_good_sha` only when the current deployment is healthy; `.env` backed up."""
        s = self.s
        with self.step("3. Snapshot current state"):
            head = s.git.head()
            running = self.running_sha()
            deep = s.api.deep_health()
            healthy, summary = deep_green(deep)
            before = self.read_last_good()
            write, why = snapshot_decision(head, running, healthy)
            self.previous_sha = head if write else before
            if write and before != head:
                s.write_file(self.app.last_good_sha_file, (head + "\n").encode())
            s.check(
                "Snapshot: .last_good_sha is a healthy SHA",
                expected="written only when deep health is green and HEAD is running",
                actual=(
                    (f"dry run: would record {head[:12]}" if s.dry_run else f"{head[:12]} recorded")
                    if write and before != head
                    else f"{head[:12]} already recorded"
                    if write
                    else f"kept {(before or 'none')[:12]}"
                ),
                passed=(
                    (None if s.dry_run and before != head else True)
                    if write
                    else (before is not None and before != head)
                ),
                note=why + f" (deep health: {summary})",
            )
            backup = s.backup_file(self.app.env_file)
            s.check(
                ".env backed up",
                expected=".env.bak.<UTC time>",
                actual=backup if not s.dry_run else f"dry run: would copy to {backup}",
                passed=None if s.dry_run else True,
            )
            info = {
                "head": head,
                "running": running,
                "deep_health": summary,
                "last_good_before": before,
                "last_good_after": head if write else before,
                "env_backup": backup,
            }
            s.evidence.append({"kind": "deploy", "event": "snapshot", **info})
            return info

    # -- step 4 -----------------------------------------------------------
    def pull_install_migrate(self) -> dict[str, Any]:
        """fetch, checkout main, pull --ff-only, pip install -r, alembic upgrade head."""
        s = self.s
        branch = s.profile.github.branch
        with self.step("4. Pull + install + migrate"):
            rev_before = s.alembic.current()
            self.head_before, self.rev_before = s.git.head(), rev_before
            self.running_before = self.running_sha()
            self.changes_started = True
            if s.dry_run:
                self.preview()
            s.git.fetch()
            s.git.checkout(branch)
            s.git.pull_ff_only("origin", branch)
            self.pip_install()
            s.alembic.upgrade("head")
            rev_after = s.alembic.current()
            head = s.git.head()
            heads_now = s.alembic.heads()
            try:
                applied = migration_chain(self.revisions_at("HEAD"), rev_after, rev_before)
            except ValueError:
                applied = []
            if s.dry_run:
                s.check(
                    "Checked out the commit to deploy",
                    expected=(self.target_sha or "?")[:12],
                    actual=f"dry run: still {head[:12]}",
                    passed=None,
                )
                s.check(
                    "Migrations at head",
                    expected=", ".join(heads_now),
                    actual=f"dry run: {rev_before}",
                    passed=None,
                )
            else:
                s.check(
                    "Checked out the commit to deploy",
                    expected=(self.target_sha or "?")[:12],
                    actual=head[:12],
                    passed=head == self.target_sha,
                )
                s.check(
                    "Migrations at head",
                    expected=", ".join(heads_now),
                    actual=f"{rev_before} -> {rev_after}"
                    + (f" (applied {', '.join(reversed(applied))})" if applied else " (none new)"),
                    passed=rev_after in heads_now,
                )
            info = {
                "migrations_before": rev_before,
                "migrations_after": rev_after,
                "applied": list(reversed(applied)),
                "head": head,
            }
            s.evidence.append({"kind": "deploy", "event": "migrated", **info})
            return info

    def preview(self) -> dict[str, list[str]]:
        """Dry run: what step 4 and 5 would change, read on the server without changing it.

        The commits come from the origin's objects, fetched without touching a
        ref (`--refmap=` and no FETCH_HEAD: HEAD, branches, remote-tracking refs
        and the working tree stay as they are; the unreferenced objects are
        git's to prune). The migrations are read from the commit to deploy
        (`git show`, no checkout), compared with the database's revision.
        """
        s = self.s
        branch = s.profile.github.branch
        target = self.target_sha
        if target is None:
            r = s.probe(self._git("ls-remote", "origin", f"refs/heads/{branch}"), label="ls-remote")
            target = r.stdout.split()[0] if r.stdout.split() else None
        if target is None:
            s.preview_change("commits", [f"cannot tell: origin has no branch {branch}"])
            return dict(s.preview)
        s.probe(
            self._git(
                "fetch", "--quiet", "--no-write-fetch-head", "--refmap=", "origin",
                f"refs/heads/{branch}",
            ),
            label="git-fetch-objects",
        )
        head = s.git.head()
        log = s.probe(self._git("log", "--oneline", f"HEAD..{target}"), label="git-log").stdout
        s.preview_change(
            f"commits (git log HEAD..origin/{branch} --oneline)",
            log.splitlines() or [f"none: HEAD {head[:12]} already is origin/{branch}"],
        )
        s.preview_change("checkout", [f"{head[:12]} -> {target[:12]} (origin/{branch})"])
        current = s.alembic.current()
        files = self.migration_files_at(target)
        revs = {r: down for r, (down, _) in files.items()}
        found = heads(revs)
        try:
            if len(found) != 1:
                raise ValueError(f"{len(found)} alembic heads at {target[:12]}: {found}")
            todo = list(reversed(migration_chain(revs, found[0], current)))
            items = [f"{r} ({files[r][1]})" for r in todo] or [f"none: the database is at {current}"]
        except ValueError as exc:
            items = [f"cannot tell: {exc}"]
        s.preview_change(f"migrations to apply (alembic upgrade head, from {current})", items)
        self.preview_unchanged_env_and_restart("the deploy")
        return dict(s.preview)

    # -- step 5 -----------------------------------------------------------
    def restart(self) -> None:
        with self.step("5. Restart service"):
            self.restart_api(self.target_sha)

    # -- step 6 -----------------------------------------------------------
    def verify_health(self) -> bool:
        """/health, /health/deep (postgres, redis, llm_providers green), pricing plans > 0."""
        s = self.s
        with self.step("6. Health verification"):
            live = s.api.health()
            s.check("Liveness", expected="200 OK", actual=live.status, passed=live.status == 200)
            ok, deep, waited = self.wait_deep_green()
            summary = deep_green(deep)[1]
            s.check(
                "Deep health",
                expected="postgres + redis + llm_providers green",
                actual=f"{deep.get('http_status')}: {summary}"
                + ("" if ok else f" (waited {waited:.0f} s)"),
                passed=ok,
            )
            try:
                plans = len(s.api.pricing_plans())
            except (HTTPFailed, KeyError, TypeError) as exc:
                plans, note = 0, f"{type(exc).__name__}"
            else:
                note = ""
            s.check("Pricing plans", expected="> 0", actual=plans, passed=plans > 0, note=note)
            self.healthy = live.status == 200 and ok and plans > 0
            if not self.healthy and not s.dry_run:
                bad = [c.name for c in s.checks[-3:] if c.passed is False]
                self.failure = f"{' and '.join(bad) or 'health'} red after deploy"
                self._say_rollback()
            return self.healthy

    # -- step 7 -----------------------------------------------------------
    def probes(self) -> dict[str, Any]:
        """Trigger admin/sentry-check; confirm through Sentry's and PostHog's APIs."""
        s = self.s
        with self.step("7. Sentry + PostHog probes"):
            if self.healthy is False and not s.dry_run:
                for name in ("Sentry probe received", "PostHog probe received"):
                    s.check(
                        name,
                        expected="event via API",
                        actual="skipped: health red",
                        passed=False,
                        note="roll back first",
                    )
                return {}
            sent_at = utc_now()
            resp = s.api.sentry_check()
            if resp.dry_run:
                for name in ("Sentry probe received", "PostHog probe received"):
                    s.check(name, expected="event via API", actual="dry run", passed=None)
                return {}
            event_id = (resp.json() or {}).get("sentry_event_id", "")
            sentry, posthog = Sentry(s), PostHog(s)
            try:
                got, waited = _wait(self.probe_seconds, lambda: sentry.has_event(event_id))
                s.check(
                    "Sentry probe received",
                    expected=f"event {event_id[:12]} in Sentry within {self.probe_seconds:.0f} s",
                    actual=f"after {waited:.1f} s" if got else "not seen",
                    passed=got,
                )
                got_ph, waited_ph = _wait(
                    self.probe_seconds,
                    lambda: posthog.has_event("sentry_check", sent_at, sentry_event_id=event_id),
                )
                s.check(
                    "PostHog probe received",
                    expected=f"sentry_check event within {self.probe_seconds:.0f} s",
                    actual=f"after {waited_ph:.1f} s" if got_ph else "not seen",
                    passed=got_ph,
                )
            finally:
                sentry.close()
                posthog.close()
            return {"event_id": event_id}

    # -- definition of done: the watch window ---------------------------
    def watch(self, interval: float | None = None) -> pd.DataFrame:
        """Poll deep health and Sentry's error count for `watch_minutes`; plot; check."""
        import pandas as pd

        s = self.s
        cols = ["t_s", "deep_green", "errors_per_min"]
        with s.step("DoD. Watch window"):
            if s.dry_run or self.healthy is False:
                why = "dry run" if s.dry_run else "skipped: health red, roll back first"
                s.check(
                    "No error spike during the watch",
                    expected="rate at baseline",
                    actual=why,
                    passed=None if s.dry_run else False,
                )
                return pd.DataFrame(columns=cols)
            seconds = self.watch_minutes * 60
            step = interval or max(1.0, min(30.0, seconds / 10))
            sentry = Sentry(s)
            try:
                baseline = sentry.rate(self.started_at - 1800, self.started_at) or 0.0
                rows = []
                t0 = time.time()
                while True:
                    now = time.time()
                    deep = s.api.deep_health()
                    buckets = sentry.stats(now - 60, now)
                    # the last whole bucket, as errors per minute
                    rate = per_minute(buckets, now - 2 * SENTRY_BUCKET_S - 1, now) or 0.0
                    rows.append(
                        {
                            "t_s": round(now - t0, 1),
                            "deep_green": deep_green(deep)[0],
                            "errors_per_min": rate,
                        }
                    )
                    if now - t0 >= seconds:
                        break
                    time.sleep(min(step, max(0.0, seconds - (time.time() - t0))))
                whole = sentry.rate(t0, time.time())
            finally:
                sentry.close()
            df = pd.DataFrame(rows, columns=cols)
            self._plot(df, baseline)
            s.check(
                "Deep health green during the watch",
                expected=f"green for {self.watch_minutes:g} min",
                actual=f"{int(df['deep_green'].sum())}/{len(df)} polls green",
                passed=bool(df["deep_green"].all()),
            )
            peak = float(df["errors_per_min"].max()) if len(df) else 0.0
            worst = max(peak, whole or 0.0)
            s.check(
                "No error spike during the watch",
                expected=f"<= max(2 x baseline, baseline + 5)/min (baseline {baseline:.1f}/min)",
                actual=f"peak {worst:.1f}/min",
                passed=error_rate_ok(worst, baseline),
            )
            return df

    def _plot(self, df: pd.DataFrame, baseline: float) -> None:
        import matplotlib

        if not _in_kernel():
            matplotlib.use("Agg")  # no display outside a kernel (tests, cron)
        import matplotlib.pyplot as plt

        fig, ax = plt.subplots(figsize=(6, 2.2))
        ax.plot(df["t_s"], df["errors_per_min"], marker="o", label="Sentry errors/min")
        ax.axhline(baseline, linestyle="--", color="grey", label="baseline")
        red = df[~df["deep_green"].astype(bool)]
        if len(red):
            ax.scatter(
                red["t_s"],
                red["errors_per_min"],
                color="red",
                zorder=3,
                label="deep health not green",
            )
        ax.set_xlabel("seconds into the watch")
        ax.set_ylabel("errors / min")
        ax.set_title(f"Watch window: {self.watch_minutes:g} min on {self.s.env}")
        ax.legend(loc="upper right", fontsize="small")
        fig.tight_layout()
        fig.savefig(self.s.run_dir / "watch.png", dpi=80)
        if _in_kernel():
            _show(fig)
        plt.close(fig)

    def advice(self) -> Text:
        """What to do now: all good, or the exact rollback command line (plain text)."""
        failed = [c.name for c in self.s.checks if c.passed is False]
        if self.s.dry_run:
            msg = "Dry run: nothing was changed. Run again without dry_run to deploy."
        elif not failed:
            msg = f"Deploy of {(self.target_sha or '?')[:12]} is healthy. Keep watching Sentry."
        else:
            self.failure = self.failure or f"{', '.join(failed)} failed"
            self._say_rollback()
            msg = f"next: {self.rollback_hint()}"
        return Text(msg)


# --------------------------------------------------------------------------
# scenario 2: rollback


class Rollback(_Ops):
    """Runbook scenario 2, one method per step; the clock is the session's (first cell)."""

    def __init__(
        self,
        session: Session,
        reason: str | None,
        *,
        issue_number: int | None = None,
        health_wait: float | None = None,
        error_rate_minutes: float | None = None,
    ):
        super().__init__(session, health_wait)
        reason = (reason or "").strip()
        if not reason:
            raise ParameterError(
                "reason is required: why are we rolling back? e.g. "
                '-p reason "/health/deep red after deploy of 1a2b3c4" (it is announced and '
                "recorded in the evidence)",
                key="reason",
            )
        self.reason = reason
        self.issue_number = int(issue_number) if issue_number not in (None, "", 0) else None
        targets = session.profile.targets
        self.target_s = float(targets.rollback_minutes) * 60
        minutes = targets.watch_minutes if error_rate_minutes is None else error_rate_minutes
        # at least two whole Sentry buckets, so a stopped spike can show as stopped
        self.error_rate_wait = max(float(minutes) * 60, 3.0 * SENTRY_BUCKET_S)
        self.last_good: str | None = None
        self.head: str | None = None
        self.current: str | None = None
        self.target_rev: str | None = None
        self.to_undo: list[str] = []
        self.complete_s: float | None = None
        self.complete_at: float | None = None
        self.deployed_at: float | None = None

    # -- step 1 -----------------------------------------------------------
    def announce(self) -> str:
        s = self.s
        with s.step("1. Announce"):
            text = f"Rolling back {s.env} to last good SHA due to {self.reason}."
            s.evidence.write_text(
                "announcement.txt",
                f"{iso(utc_now())} {text}\nOperator: {s.record()['operator']}\n",
            )
            s.evidence.append({"kind": "announce", "text": text})
            print(text)
            where = "recorded in the evidence (announcement.txt)"
            if self.issue_number:
                token = s.secrets.get(s.profile.secrets.github_token, required=False)
                if not token:
                    s.check(
                        "Announced",
                        expected="comment on the GitHub issue",
                        actual="no GitHub token in the secrets",
                        passed=False,
                    )
                    return text
                resp = s.github.post(
                    f"/repos/{s.profile.github.repo}/issues/{self.issue_number}/comments",
                    json={"body": text},
                    headers={"Authorization": f"Bearer {token}"},
                    changing=True,
                    accept=(201,),
                )
                if resp.dry_run:
                    where += f"; dry run: would comment on issue #{self.issue_number}"
                else:
                    url = (resp.json() or {}).get("html_url", "")
                    where += f"; commented on issue #{self.issue_number} {url}".rstrip()
            s.check("Announced", expected="reason recorded", actual=where, passed=True)
            return text

    # -- step 2: what to undo ----------------------------------------------
    def plan(self) -> pd.DataFrame:
        """Last good SHA, the bad deploy's migrations, and the approval rule: before any change."""
        import pandas as pd

        s = self.s
        with s.step("2. Determine what the bad deploy added"):
            last_good = self.read_last_good()
            if not last_good or not _SHA.match(last_good):
                raise ParameterError(
                    f"{self.app.last_good_sha_file} holds no SHA ({last_good!r}): find the last "
                    "good commit in the deploy records (outputs/<env>/deploy/*/record.json)",
                    key="last_good_sha",
                )
            s.git.rev_parse(last_good)  # the commit must be in the server's checkout
            self.last_good = last_good
            self.head = s.git.head()
            self.current = s.alembic.current()
            head_revs = self.revisions_at("HEAD")
            good_revs = self.revisions_at(last_good)
            good_heads = heads(good_revs)
            if len(good_heads) > 1:
                raise ParameterError(f"the last good SHA has several alembic heads: {good_heads}")
            self.target_rev = good_heads[0] if good_heads else None
            added = s.probe(
                self._git(
                    "diff",
                    "--name-only",
                    "--diff-filter=A",
                    last_good,
                    "HEAD",
                    "--",
                    MIGRATIONS_DIR,
                ),
                label="git-diff",
            ).stdout.split()
            try:
                self.to_undo = migration_chain(head_revs, self.current, self.target_rev)
            except ValueError as exc:
                raise ParameterError(
                    f"cannot get from the database's revision {self.current} down to the last "
                    f"good SHA's head {self.target_rev} with this checkout's migrations ({exc}); "
                    "stop and ask for help: this needs a hand-made plan",
                    key="migrations",
                ) from None
            r = s.probe(self._git("log", "-1", "--format=%ct", "HEAD"), label="git-log")
            reflog = s.probe(
                self._git("reflog", "-50", "--date=unix", "--format=%H %gd", "HEAD"),
                warn=True,
                label="git-reflog",
            ).stdout
            when = arrived_at(reflog, self.head)
            self.deployed_at = when if when is not None else float(r.stdout.strip() or time.time())
            plan = pd.DataFrame(
                [
                    ("last good SHA (.last_good_sha)", last_good[:12]),
                    ("checked out now (bad deploy)", self.head[:12]),
                    ("running now", (self.running_sha() or "no answer")[:12]),
                    ("database revision now", self.current),
                    ("last good SHA's alembic head", self.target_rev),
                    ("migration files the bad deploy added", ", ".join(added) or "none"),
                    ("downgrades needed (newest first)", ", ".join(self.to_undo) or "none"),
                ],
                columns=["what", "value"],
            )
            _show(plan)
            if s.dry_run:
                self.preview()
            s.evidence.append(
                {
                    "kind": "rollback",
                    "event": "plan",
                    "last_good": last_good,
                    "head": self.head,
                    "current": self.current,
                    "target": self.target_rev,
                    "to_undo": self.to_undo,
                    "added_files": added,
                }
            )
            steps = len(self.to_undo)
            if steps > 1:
                try:
                    s.guards.check_downgrade(steps, f"alembic downgrade -{steps}")
                except Forbidden as exc:
                    s.evidence.append(
                        {
                            "kind": "refused",
                            "step": s.current_step,
                            "rule": exc.rule,
                            "message": str(exc),
                        }
                    )
                    raise
            # Not a check: a refusal raised above, so "allowed" could never fail here.
            s.decide(
                "Downgrades",
                f"{steps} step(s)",
                "none needed: the bad deploy added no applied migration"
                if not steps
                else "one step: allowed without approval (runbook scenario 2, step 3)"
                if steps == 1
                else f"{steps} steps: approved by {s.approved_by}",
            )
            return plan

    def preview(self) -> dict[str, list[str]]:
        """Dry run: what the rollback would change (after `plan`, read-only)."""
        s = self.s
        good, head = self.last_good or "", self.head or ""
        log = s.probe(self._git("log", "--oneline", f"{good}..{head}"), label="git-log").stdout
        s.preview_change(
            f"commits to leave (git log {good[:7]}..HEAD --oneline)",
            log.splitlines() or [f"none: HEAD already is {good[:12]}"],
        )
        s.preview_change("checkout", [f"{head[:12]} -> {good[:12]} (last good SHA, detached)"])
        s.preview_change(
            f"migrations to undo (alembic downgrade -{len(self.to_undo)}, to {self.target_rev})",
            self.to_undo or [f"none: the database is at {self.current}"],
        )
        self.preview_unchanged_env_and_restart("the rollback")
        return dict(s.preview)

    def confirm_plan(self) -> None:
        """Under the lock: the server is still as planned (nobody deployed meanwhile)."""
        s = self.s
        head, current = s.git.head(), s.alembic.current()
        if (head, current) != (self.head, self.current):
            raise RunbookError(
                f"the server changed since the plan (HEAD {self.head[:12] if self.head else '?'} -> "
                f"{head[:12]}, revision {self.current} -> {current}): run the plan again"
            )

    # -- step 3: the lock, then downgrade first, with the bad code still checked out
    def take_lock(self) -> dict[str, Any]:
        """Take the host lock (one changing run per host), after the plan, before any change."""
        with self.s.step("3. Take the host lock"):
            return self.s.acquire_lock().info()

    def downgrade(self) -> None:
        s = self.s
        with s.step("3. Downgrade migrations (bad code still checked out)"):
            self.confirm_plan()
            if not self.to_undo:
                s.check(
                    "Migrations rolled back",
                    expected=f"at {self.target_rev}",
                    actual=f"{self.current}: the bad deploy added none applied",
                    passed=True,
                )
                return
            s.alembic.downgrade(len(self.to_undo))
            now = s.alembic.current()
            s.check(
                "Migrations rolled back",
                expected=f"at {self.target_rev} (undo {', '.join(self.to_undo)})",
                actual=f"dry run: still {now}" if s.dry_run else now,
                passed=None if s.dry_run else now == self.target_rev,
            )

    # -- step 4: old code ----------------------------------------------------
    def checkout(self) -> None:
        s = self.s
        with s.step("4. Check out the last good SHA + pip install"):
            s.git.checkout(self.last_good or "")
            self.pip_install()

    # -- step 5: restart and verify ---------------------------------------
    def restart(self) -> None:
        with self.s.step("5. Restart service"):
            self.restart_api(self.last_good)

    def verify(self) -> float | None:
        """Deep health green on the old SHA; the clock stops here (rollback complete)."""
        s = self.s
        with s.step("6. Verify deep health on the old SHA"):
            if s.dry_run:
                for name in ("Healthy on the last good SHA", "Rollback time"):
                    s.check(name, expected="see the runbook", actual="dry run", passed=None)
                return None
            ok, deep, _ = self.wait_deep_green()
            head, running = s.git.head(), self.running_sha()
            on_old = head == self.last_good and running == self.last_good
            self.complete_s = s.elapsed
            self.complete_at = time.time()
            s.check(
                "Healthy on the last good SHA",
                expected=f"deep health green, HEAD and API on {(self.last_good or '?')[:12]}",
                actual=f"{deep_green(deep)[1]}; HEAD {head[:12]}, API {(running or '?')[:12]}",
                passed=ok and on_old,
            )
            rev = s.alembic.current()
            s.check(
                "Alembic at the last good head",
                expected=self.target_rev,
                actual=rev,
                passed=rev == self.target_rev,
            )
            s.metric("rollback_minutes", self.complete_s / 60, "min", target=self.target_s / 60)
            s.check(
                "Rollback time",
                expected=f"< {self.target_s / 60:g} min from the first cell",
                actual=f"{self.complete_s:.1f} s",
                passed=self.complete_s < self.target_s,
            )
            detected = self.detection()
            from_detection = (
                None if detected is None else round(self.complete_at - detected["at"], 3)
            )
            # A measurement, not a check: the time before the rollback started
            # (someone reading the alert, deciding) is not the notebook's to pass or fail.
            s.metric("seconds_from_detection", from_detection, "s", target=self.target_s)
            print(
                "From 'bad deploy detected' to rollback complete: "
                + (
                    f"{from_detection:.1f} s (deploy run {Path(detected['run_dir']).name})"
                    if detected is not None and from_detection is not None
                    else "not measured: no deploy run of this environment logged the detection "
                    f"of {(self.head or '?')[:12]}"
                )
            )
            s.evidence.write_text(
                "rollback_timing.json",
                json.dumps(
                    {
                        "started": iso(s.started),
                        "complete": iso(datetime.fromtimestamp(self.complete_at, UTC)),
                        "seconds_to_complete": round(self.complete_s, 3),
                        "target_seconds": self.target_s,
                        "bad_sha": self.head,
                        "detected": None if detected is None else detected["ts"],
                        "detected_in_run": None if detected is None else detected["run_dir"],
                        "seconds_from_detection": from_detection,
                    },
                    indent=2,
                ),
            )
            return self.complete_s

    def detection(self) -> dict[str, Any] | None:
        """When a deploy run of this environment logged "bad deploy detected" for the SHA
        being rolled back (`find_detection`), looked up in the outputs folder of the evidence."""
        s = self.s
        places = [outputs_dir() / s.env / "deploy", s.run_dir.parent.parent / "deploy"]
        seen: set[Path] = set()
        for place in places:
            place = place.resolve()
            if place in seen:
                continue
            seen.add(place)
            found = find_detection(place, self.head, until=self.complete_at)
            if found is not None:
                return found
        return None

    # -- DoD: Sentry error rate back to baseline --------------------------
    def error_rate(self) -> dict[str, Any]:
        s = self.s
        with s.step("DoD. Sentry error rate back to baseline"):
            if s.dry_run or self.complete_at is None:
                s.check(
                    "Sentry error rate at baseline",
                    expected="<= baseline",
                    actual="dry run" if s.dry_run else "rollback not complete",
                    passed=None,
                )
                return {}
            sentry = Sentry(s)
            try:
                deployed = self.deployed_at or self.complete_at
                baseline = sentry.rate(deployed - 1800, deployed - SENTRY_BUCKET_S) or 0.0
                spike = sentry.rate(deployed, self.complete_at)
                since = self.complete_at
                recent: float | None = None

                def settled() -> bool:
                    nonlocal recent
                    recent = sentry.rate(since, time.time())
                    return recent is not None and error_rate_ok(recent, baseline)

                ok, waited = _wait(self.error_rate_wait, settled, 2.0)
            finally:
                sentry.close()
            numbers = {
                "baseline_per_min": round(baseline, 2),
                "during_bad_deploy_per_min": None if spike is None else round(spike, 2),
                "after_rollback_per_min": None if recent is None else round(recent, 2),
                "waited_s": round(waited, 1),
            }
            s.evidence.append({"kind": "rollback", "event": "error-rate", **numbers})
            s.check(
                "Sentry error rate at baseline",
                expected=f"<= max(2 x baseline, baseline + 5)/min, baseline {baseline:.1f}/min",
                actual=(
                    f"{'n/a' if recent is None else f'{recent:.1f}'}/min after the rollback "
                    f"(during the bad deploy {'n/a' if spike is None else f'{spike:.1f}'}/min)"
                ),
                passed=ok,
            )
            return numbers

    def reminder(self) -> Text:
        text = (
            "Rollback done. The fix goes through a PR to main (main is protected: no commits or "
            "pushes from the server), then the deploy notebook. The server is on a detached HEAD "
            f"at {(self.last_good or '?')[:12]} until then."
        )
        return Text(text)


def _in_kernel() -> bool:
    try:
        from IPython import get_ipython

        return get_ipython() is not None
    except ImportError:
        return False
