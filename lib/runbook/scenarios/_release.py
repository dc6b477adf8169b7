"""What deploy and rollback (runbook scenarios 1 and 2) share: the app on the server.

The scenarios themselves are runbook.scenarios.deploy (Deploy) and
runbook.scenarios.rollback (Rollback).

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

    s, dep = open_scenario("deploy")   # scenario 1
    dep.ci_gate()                   # aborts (Forbidden) before any change when CI is not green
    dep.take_lock()                 # step 2: one changing run per host
    dep.snapshot()
    dep.pull_install_migrate()
    dep.restart()
    dep.verify_health()
    dep.probes()
    dep.watch()
    dep.advice()                    # on failure: the exact rollback command line

    s, rb = open_scenario("rollback")  # scenario 2, -p reason "deep health red after deploy"
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

import json
import re
import shlex
from pathlib import Path
from typing import TYPE_CHECKING, Any

from runbook.clock import parse_time, wait_for
from runbook.core.output import Progress
from runbook.errors import HTTPFailed
from runbook.scenarios._base import Scenario

if TYPE_CHECKING:
    from runbook.session import Session

DEEP_PARTS = ("postgres", "redis", "llm_providers")
HEALTH_WAIT_S = 20.0
MIGRATIONS_DIR = "migrations/versions"
DETECTED_EVENT = "bad deploy detected"
SHA = re.compile(r"^[0-9a-f]{40}$")
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
    ts = parse_time(text)
    return None if ts is None else ts.timestamp()


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


# --------------------------------------------------------------------------
# shared server reads


class Release(Scenario):
    """What deploy and rollback share: the app on the server, its health, its migrations."""

    def __init__(self, session: Session, health_wait: float | None = None):
        super().__init__(session)
        self.app = session.profile.app
        self.health_wait = HEALTH_WAIT_S if health_wait is None else float(health_wait)

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
        listing = self.s.git.ls_tree(rev, MIGRATIONS_DIR)
        out: dict[str, tuple[str | None, str]] = {}
        for name in listing:
            if not name.endswith(".py"):
                continue
            text = self.s.git.show(rev, f"{MIGRATIONS_DIR}/{name}")
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
        s.preview_change("services to restart", [f"{unit} ({s.profile.services.manager} restart)"])

    def wait_running(self, sha: str) -> tuple[bool, float]:
        """Until /health answers 200 with `sha` (the restarted API runs the new code)."""
        progress = Progress(f"waiting for the API to run {sha[:12]}", seconds=self.health_wait)
        return wait_for(
            lambda: self.running_sha() == sha, self.health_wait, 0.5, on_poll=progress.poll
        )

    def wait_deep_green(self) -> tuple[bool, dict[str, Any], float]:
        last: dict[str, Any] = {}

        def probe() -> bool:
            nonlocal last
            last = self.s.api.deep_health()
            return deep_green(last)[0]

        progress = Progress("waiting for deep health green", seconds=self.health_wait)

        def said(ok: bool, waited: float) -> None:
            summary = deep_green(last)[1] if last else "no answer"
            progress.say(summary, waited=waited, final=ok and progress.lines > 0)

        ok, waited = wait_for(probe, self.health_wait, 1.0, on_poll=said)
        return ok, last, waited

    def pip_install(self) -> None:
        self.s.run(
            [f"{self.app.venv}/bin/pip", "install", "-q", "-r", "requirements.txt"],
            cwd=self.app.dir,
            label="pip-install",
        )

    def restart_api(self, sha: str | None) -> None:
        s = self.s
        r = s.services.restart("api")
        if not r.ran:
            s.judge("Service restarted", expected="active (running)", result=r)
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
