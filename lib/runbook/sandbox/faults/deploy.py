"""Deploy faults: commits merged to the origin's main ("GitHub"), and a Sentry error spike.

- `good-deploy`: a healthy commit with a new alembic migration lands on the
  origin's main, with a successful CI run for it (what a merged PR looks like).
- `bad-deploy`: a commit with a new migration and a code change that passes
  CI but breaks `/health/deep` once deployed: the migration creates the table
  `lead_score` while the new deep-health check reads `lead_scores`, so the
  postgres check reports red ("relation does not exist") after the restart.
  The rollback (downgrade, old code, restart) undoes it.
- `sentry-spike`: the Sentry stub reports an error-rate spike until the
  server's checkout leaves the bad deploy (a `post-checkout` hook in the app's
  checkout, sandbox only, stands in for "the errors came from the bad code").

The pushes go into the bare origin through a temporary clone. `heal` puts
the app back (database revision, checkout, `.last_good_sha`, API restarted)
and the origin's main back to where it was (the ref is set inside the bare
origin: that is the sandbox's GitHub, not a push from the server).

    >>> next_revision({"0001": None, "0002": "0001"})
    ('0003', '0002')
    >>> next_revision({})
    ('0001', None)
"""

from __future__ import annotations

import base64
import shlex
import shutil
import subprocess
from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING, Any

from runbook.sandbox.build.app import app_git
from runbook.sandbox.build.host import clean_env, run
from runbook.sandbox.faults._registry import Fault, register
from runbook.sandbox.procs import SandboxError
from runbook.scenarios._release import parse_migration

if TYPE_CHECKING:
    from runbook.sandbox.manager import Sandbox

STATE_KEY = "deploy_faults"
HOOK_MARK = "# runbook sandbox fault sentry-spike"
# the health check judges CI by the last runs on main, this many
CI_WINDOW = 3

MIGRATION = '''"""{title}

Revision ID: {rev}
Revises: {down}
Create Date: {date}

"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "{rev}"
down_revision: str | Sequence[str] | None = "{down}"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    op.create_table(
        "{table}",
        sa.Column("id", sa.BigInteger, primary_key=True, autoincrement=True),
        sa.Column(
            "lead_id",
            sa.BigInteger,
            sa.ForeignKey("leads.id", ondelete="CASCADE"),
            nullable=False,
        ),
        sa.Column("{column}", sa.{coltype}, nullable=False),
        sa.Column(
            "created_at", sa.DateTime(timezone=True), nullable=False, server_default=sa.text("now()")
        ),
    )


def downgrade() -> None:
    op.drop_table("{table}")
'''

# The bad change: deep health now also checks the new scoring table, under
# the wrong name (the migration creates `lead_score`).
_PG_CHECK_OLD = 'conn.execute("SELECT 1").fetchone()'
_PG_CHECK_BAD = (
    "# Scoring must be queryable before we call ourselves healthy.\n"
    '                conn.execute("SELECT count(*) FROM lead_scores").fetchone()'
)


def next_revision(revisions: dict[str, str | None]) -> tuple[str, str | None]:
    """The next numbered revision id and the head it revises."""
    if not revisions:
        return "0001", None
    referenced = {d for d in revisions.values() if d}
    heads = sorted(r for r in revisions if r not in referenced)
    numbers = [int(r) for r in revisions if r.isdigit()]
    return f"{max(numbers, default=0) + 1:04d}", heads[-1]


def _revisions(work: Path) -> dict[str, str | None]:
    out: dict[str, str | None] = {}
    for path in sorted((work / "migrations" / "versions").glob("*.py")):
        rev, down = parse_migration(path.read_text())
        if rev:
            out[rev] = down
    return out


def _db_revision(sb: Sandbox) -> str | None:
    rows = sb.query("SELECT version_num FROM alembic_version")
    return rows[0][0] if rows else None


def _app_snapshot(sb: Sandbox) -> dict[str, Any]:
    state = sb.state
    app = Path(state["app_dir"])
    last_good = app / ".last_good_sha"
    branch = subprocess.run(
        ["git", "-C", str(app), "symbolic-ref", "--short", "-q", "HEAD"],
        capture_output=True,
        text=True,
        check=False,
    ).stdout.strip()
    return {
        "head": app_git("-C", str(app), "rev-parse", "HEAD"),
        "origin_main": app_git("-C", str(app), "rev-parse", "refs/remotes/origin/main"),
        "branch": branch or None,
        "revision": _db_revision(sb),
        # base64 keeps the file byte for byte, as the twin's snapshot does (heal_script)
        "last_good_b64": (
            base64.b64encode(last_good.read_bytes()).decode() if last_good.exists() else None
        ),
    }


def _origin_main(sb: Sandbox) -> str:
    return app_git("--git-dir", sb.state["origin_dir"], "rev-parse", "refs/heads/main")


Git = Callable[..., str]
Change = Callable[[Path, str, "str | None"], None]


def commit_and_push(
    git: Git, origin: str, work: Path, change: Change, message: str, merge: Callable[[str], Any]
) -> tuple[str, str]:
    """Clone `origin` into `work`, let `change(work, rev, down)` edit it, commit, merge to main.

    The origin protects main as GitHub does (its pre-receive hook refuses a push
    to it, runbook.ops.armor), so the commit is pushed to a pull request's ref
    (`refs/pull/<rev>/head`) and `merge(sha)` moves main on the origin's own host,
    as GitHub's merge button does. `git(*args, cwd=...)` runs git the target's way
    (the sandbox's local origin, the twin's over SSH); `work` is removed afterwards.
    Returns (merged sha, migration rev).
    """
    if work.exists():
        shutil.rmtree(work)
    work.parent.mkdir(parents=True, exist_ok=True)
    try:
        git("clone", "-q", "--branch", "main", origin, str(work))
        rev, down = next_revision(_revisions(work))
        change(work, rev, down)
        git("add", "-A", cwd=work)
        git("commit", "-q", "-m", message.format(rev=rev), cwd=work)
        sha = git("rev-parse", "HEAD", cwd=work)
        # forced: a healed fault leaves its pull-request ref behind, as GitHub does
        git("push", "-q", "origin", f"+HEAD:refs/pull/{rev}/head", cwd=work)
        merge(sha)
    finally:
        shutil.rmtree(work, ignore_errors=True)
    return sha, rev


def push_record(before: str, sha: str, rev: str, app_before: dict[str, Any]) -> dict[str, Any]:
    """What a deploy fault keeps in state (under STATE_KEY) for its heal."""
    return {"origin_before": before, "pushed": sha, "revision": rev, "app_before": app_before}


def ci_green_streak(add_run: Callable[[str], object]) -> None:
    """Green CI runs as many as the health check's window (the last 3 runs), so a healed
    ci-red leaves no red run among them for the next drill; `add_run(conclusion)` adds one."""
    for _run in range(CI_WINDOW):
        add_run("success")


def _push_commit(sb: Sandbox, name: str, change: Change, message: str) -> str:
    """Push `change` to the origin's main (commit_and_push), CI green for it; recorded for heal."""
    state = sb.state
    if name in state.get(STATE_KEY, {}):
        raise SandboxError(name, f"{name} is already applied")
    before = _origin_main(sb)
    app_before = _app_snapshot(sb)
    work = sb.state_dir / "tmp" / f"fault-{name}"
    origin = state["origin_dir"]
    sha, rev = commit_and_push(
        app_git,
        origin,
        work,
        change,
        message,
        lambda sha: app_git("--git-dir", origin, "update-ref", "refs/heads/main", sha),
    )
    # CI passed for the merged commit (for the bad one too: the bug only
    # shows against the real schema after the restart).
    sb.add_ci_run("success", head_sha=sha)
    faults = dict(sb.state.get(STATE_KEY, {}))
    faults[name] = push_record(before, sha, rev, app_before)
    sb._update(**{STATE_KEY: faults})
    return sha


def _write_migration(
    work: Path, rev: str, down: str | None, slug: str, title: str, table: str, column: str
) -> None:
    coltype = "Integer" if column == "score" else "Text"
    path = work / "migrations" / "versions" / f"{rev}_{slug}.py"
    path.write_text(
        MIGRATION.format(
            title=title,
            rev=rev,
            down=down,
            date="2026-11-27 08:00:00",
            table=table,
            column=column,
            coltype=coltype,
        )
    )


def _good_change(work: Path, rev: str, down: str | None) -> None:
    _write_migration(work, rev, down, "lead_tags", "lead tags", "lead_tags", "tag")
    changelog = work / "CHANGELOG.md"
    old = changelog.read_text() if changelog.exists() else "# Changelog\n"
    changelog.write_text(old.rstrip("\n") + f"\n\n- Lead tags (migration {rev}).\n")


def _bad_change(work: Path, rev: str, down: str | None) -> None:
    _write_migration(work, rev, down, "lead_score", "lead score", "lead_score", "score")
    main = work / "dealix" / "main.py"
    text = main.read_text()
    if _PG_CHECK_OLD not in text:
        raise SandboxError("bad-deploy", f"cannot find the postgres check in {main}")
    main.write_text(text.replace(_PG_CHECK_OLD, _PG_CHECK_BAD, 1))


def _apply_good(sb: Sandbox, _: str | None) -> None:
    _push_commit(sb, "good-deploy", _good_change, "Lead tags (migration {rev})")


def _apply_bad(sb: Sandbox, _: str | None) -> None:
    _push_commit(
        sb, "bad-deploy", _bad_change, "Lead scoring (migration {rev}); deep health checks it"
    )


def heal_script(app: str, origin: str, info: dict[str, Any], downgrade_if: str) -> str:
    """The shell, run on the target's host in either case, that puts the app and the origin
    back as before a deploy fault (`info` is its push_record).

    When the shell test `downgrade_if` holds (the database is not at the old revision),
    alembic downgrades with the pushed code checked out, which still holds the migration,
    then the old checkout: the order the rollback notebook keeps. Then the clone's
    origin/main, .last_good_sha and the origin's main as they were.
    """
    b = info["app_before"]
    q = shlex.quote
    checkout = (
        f"git checkout -q -f -B {q(b['branch'])} {b['head']}"
        if b["branch"]
        else f"git checkout -q -f --detach {b['head']}"
    )
    last_good = (
        f"echo {b['last_good_b64']} | base64 -d > .last_good_sha"
        if b["last_good_b64"]
        else "rm -f .last_good_sha"
    )
    return (
        f"set -e; cd {q(app)}; "
        f"if {downgrade_if}; then git fetch -q origin; "
        f"git checkout -q -f --detach {info['pushed']}; "
        f".venv/bin/alembic downgrade {q(b['revision'] or 'base')} >/dev/null; fi; "
        f"{checkout}; git update-ref refs/remotes/origin/main {b['origin_main']}; {last_good}; "
        f"git --git-dir={q(origin)} update-ref refs/heads/main {info['origin_before']}"
    )


def _heal_push(sb: Sandbox, name: str) -> None:
    """Database, checkout, .last_good_sha and the API as before `name`; origin main as before."""
    state = sb.state
    info = state.get(STATE_KEY, {}).get(name)
    if info is None:
        return
    downgrade = _db_revision(sb) != info["app_before"]["revision"]
    script = heal_script(
        state["app_dir"], state["origin_dir"], info, "true" if downgrade else "false"
    )
    env = clean_env(GIT_CONFIG_NOSYSTEM="1", GIT_TERMINAL_PROMPT="0")
    env["GIT_CONFIG_GLOBAL"] = "/dev/null"  # never the operator's global git config
    run(["sh", "-c", script], "heal", env=env, timeout=300)
    # The origin's HEAD is green again for the next deploy's CI gate.
    sb.add_ci_run("success", head_sha=info["origin_before"])
    faults = dict(sb.state.get(STATE_KEY, {}))
    faults.pop(name, None)
    sb._update(**{STATE_KEY: faults})
    sb.restart("dealix-api")
    sb.wait_api()
    sb.wait_deep("postgres", "green")


def _heal_good(sb: Sandbox, _: str | None) -> None:
    _heal_push(sb, "good-deploy")


def _heal_bad(sb: Sandbox, _: str | None) -> None:
    _heal_push(sb, "bad-deploy")


def spike_hook(bad_sha: str, stubs_url: str) -> str:
    """The post-checkout hook that ends the spike once the checkout no longer holds `bad_sha`."""
    url = shlex.quote(f"{stubs_url}/_stub/sentry/spike")
    return (
        "#!/bin/sh\n"
        f"{HOOK_MARK}: the spike lasts while the bad deploy is checked out\n"
        f"if ! git merge-base --is-ancestor {bad_sha} HEAD 2>/dev/null; then\n"
        f"  curl -s -o /dev/null -X POST -H 'Content-Type: application/json' "
        f"-d '{{\"on\": false}}' {url} || true\n"
        "fi\n"
    )


def _apply_spike(sb: Sandbox, _: str | None) -> None:
    state = sb.state
    app = Path(state["app_dir"])
    bad = state.get(STATE_KEY, {}).get("bad-deploy", {}).get("pushed") or app_git(
        "-C", str(app), "rev-parse", "HEAD"
    )
    hook = app / ".git" / "hooks" / "post-checkout"
    hook.parent.mkdir(parents=True, exist_ok=True)
    if hook.exists() and HOOK_MARK not in hook.read_text():
        raise SandboxError("sentry-spike", f"{hook} exists and is not ours")
    hook.write_text(spike_hook(bad, state["stubs_url"]))
    hook.chmod(0o755)
    sb.stub_control("/_stub/sentry/spike", {"on": True, "errors_per_minute": 120})


def _heal_spike(sb: Sandbox, _: str | None) -> None:
    hook = Path(sb.state["app_dir"]) / ".git" / "hooks" / "post-checkout"
    if hook.exists() and HOOK_MARK in hook.read_text():
        hook.unlink()
    sb.stub_control("/_stub/sentry/spike", {"on": False})


def _ci_red(sb: Sandbox, _: str | None) -> None:
    sb.add_ci_run("failure")


def _ci_green(sb: Sandbox, _: str | None) -> None:
    ci_green_streak(sb.add_ci_run)


register(
    Fault(
        "good-deploy",
        "Merge a healthy commit with a new alembic migration (table lead_tags) to the origin's "
        "main, with a successful CI run for it. Heal: database revision, checkout, "
        ".last_good_sha and the API as before; the origin's main back to its old HEAD.",
        _apply_good,
        _heal_good,
    )
)

register(
    Fault(
        "bad-deploy",
        "Merge a commit that passes CI but breaks /health/deep once deployed: its migration "
        "creates lead_score while the new deep-health check reads lead_scores (postgres red). "
        "Heal: as good-deploy.",
        _apply_bad,
        _heal_bad,
    )
)

register(
    Fault(
        "sentry-spike",
        "The Sentry stub reports an error spike (120 errors/min) until the server's checkout "
        "leaves the bad deploy (a post-checkout hook in the app's checkout ends it). "
        "Heal: spike off, hook removed.",
        _apply_spike,
        _heal_spike,
    )
)
register(
    Fault(
        "ci-red",
        "Add a newest failed CI run on main for the origin's HEAD (GitHub Actions stub). "
        "Heal: add a newer successful run.",
        _ci_red,
        _ci_green,
    )
)


# The app checkout fetches a branch the origin does not have: `git fetch origin` fails
# as it would with the origin unreachable, while `git ls-remote` (the CI gate, step 1)
# still answers, so a deploy gets past its snapshot and fails at step 4 (pull).
UNREACHABLE_REFSPEC = "+refs/heads/runbook-fault-origin-unreachable:refs/remotes/origin/fault"
DEFAULT_REFSPEC = "+refs/heads/*:refs/remotes/origin/*"


def _set_fetch_refspec(sb: Sandbox, refspec: str) -> None:
    app = str(Path(sb.state["app_dir"]))
    subprocess.run(
        ["git", "-C", app, "config", "remote.origin.fetch", refspec],
        check=True,
        capture_output=True,
        env=clean_env(GIT_CONFIG_NOSYSTEM="1"),
    )


register(
    Fault(
        "origin-unreachable",
        "The app checkout's `git fetch origin` fails (its fetch refspec names a branch the "
        "origin lacks), while `git ls-remote origin` still answers: a deploy passes its CI "
        "gate and snapshot, then fails at step 4. Heal: the default fetch refspec.",
        lambda sb, _: _set_fetch_refspec(sb, UNREACHABLE_REFSPEC),
        lambda sb, _: _set_fetch_refspec(sb, DEFAULT_REFSPEC),
    )
)
