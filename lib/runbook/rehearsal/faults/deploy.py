"""Deploy faults: commits merged to the origin's main ("GitHub"), and a Sentry error spike.

- `good-deploy`: a healthy commit with a new alembic migration lands on the
  origin's main, with a successful CI run for it (what a merged PR looks like).
- `bad-deploy`: a commit with a new migration and a code change that passes
  CI but breaks `/health/deep` once deployed: the migration creates the table
  `lead_score` while the new deep-health check reads `lead_scores`, so the
  postgres check reports red ("relation does not exist") after the restart.
  The rollback (downgrade, old code, restart) undoes it.
- `sentry-spike`: Sentry sees an error-rate spike until the server's checkout
  leaves the bad deploy. The two targets truly differ here (two adapters below):
  the sandbox's Sentry is a stub with a spike switch, ended by a `post-checkout`
  hook in the app's checkout; the twin's server sends real events to sentry.io.
- `ci-red`: a newest failed CI run for the origin's main.
- `origin-unreachable` (sandbox): the checkout's `git fetch origin` fails.

Written once against the Target: a developer clones the origin on this machine
(`t.developer_git`; the twin's origin is reached over SSH), commits and pushes to a
pull request's ref; main moves on the origin's own host (`t.sh`), as GitHub's merge
button does. `heal` puts the app back (database revision, checkout,
`.last_good_sha`, API restarted) and the origin's main back to where it was, with
one shell script run on the server (`heal_script`).

    >>> next_revision({"0001": None, "0002": "0001"})
    ('0003', '0002')
    >>> next_revision({})
    ('0001', None)
"""

from __future__ import annotations

import shlex
import shutil
import tempfile
from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING, Any

from runbook.rehearsal.faults.registry import Fault, by_target, register
from runbook.rehearsal.target import RehearsalError, Target
from runbook.scenarios._release import parse_migration

if TYPE_CHECKING:
    from runbook.sandbox.manager import Sandbox
    from runbook.twin.instance import Twin

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


def _db_revision(t: Target) -> str | None:
    rows = t.sql("SELECT version_num FROM alembic_version")
    return str(rows[0][0]) if rows else None


def app_snapshot(t: Target) -> dict[str, Any]:
    """Checkout, branch, the clone's origin/main, alembic revision and .last_good_sha."""
    out = t.sh(
        f"cd {shlex.quote(str(t.app_dir))} && git rev-parse HEAD && "
        "git rev-parse refs/remotes/origin/main && (git symbolic-ref --short -q HEAD || echo -) "
        "&& if [ -e .last_good_sha ]; then base64 -w0 .last_good_sha; echo; else echo -; fi"
    ).stdout.split("\n")
    last_good = out[3].strip() if len(out) > 3 else "-"
    return {
        "head": out[0].strip(),
        "origin_main": out[1].strip(),
        "branch": None if out[2].strip() == "-" else out[2].strip(),
        "revision": _db_revision(t),
        # base64 keeps the file byte for byte (trailing newline or not)
        "last_good_b64": None if last_good == "-" else last_good,
    }


def origin_main(t: Target) -> str:
    """The origin's main ("GitHub's main"), read on the origin's own host."""
    return t.sh(
        f"git --git-dir={shlex.quote(str(t.origin_dir))} rev-parse refs/heads/main"
    ).stdout.strip()


Git = Callable[..., str]
Change = Callable[[Path, str, "str | None"], None]


def commit_and_push(
    git: Git, origin: str, work: Path, change: Change, message: str, merge: Callable[[str], Any]
) -> tuple[str, str]:
    """Clone `origin` into `work`, let `change(work, rev, down)` edit it, commit, merge to main.

    The origin protects main as GitHub does (its pre-receive hook refuses a push
    to it, runbook.ops.armor), so the commit is pushed to a pull request's ref
    (`refs/pull/<rev>/head`) and `merge(sha)` moves main on the origin's own host,
    as GitHub's merge button does. `git(*args, cwd=...)` is the developer's git on
    this machine (the twin's reaches its origin over SSH); `work` is removed afterwards.
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


def _push_commit(t: Target, name: str, change: Change, message: str) -> str:
    """Push `change` to the origin's main (commit_and_push), CI green for it; recorded for heal."""
    if name in t.state.get(STATE_KEY, {}):
        raise RehearsalError(name, f"{name} is already applied (heal first)")
    before = origin_main(t)
    app_before = app_snapshot(t)
    origin = shlex.quote(str(t.origin_dir))
    with tempfile.TemporaryDirectory(prefix=f"runbook-fault-{name}-") as tmp:
        sha, rev = commit_and_push(
            t.developer_git,
            t.origin_url,
            Path(tmp) / "work",
            change,
            message,
            # GitHub's merge button: main moves on the origin itself (its hook refuses pushes)
            lambda sha: t.sh(f"git --git-dir={origin} update-ref refs/heads/main {sha}"),
        )
    # CI passed for the merged commit (for the bad one too: the bug only
    # shows against the real schema after the restart).
    t.add_ci_run("success", sha)
    faults = dict(t.state.get(STATE_KEY, {}))
    faults[name] = push_record(before, sha, rev, app_before)
    t.update_state(**{STATE_KEY: faults})
    return f"pushed {sha[:12]} (migration {rev}) to the origin's main, CI green for it"


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
        raise RehearsalError("bad-deploy", f"cannot find the postgres check in {main}")
    main.write_text(text.replace(_PG_CHECK_OLD, _PG_CHECK_BAD, 1))


def _apply_good(t: Target, _: str | None) -> str:
    return _push_commit(t, "good-deploy", _good_change, "Lead tags (migration {rev})")


def _apply_bad(t: Target, _: str | None) -> str:
    return _push_commit(
        t, "bad-deploy", _bad_change, "Lead scoring (migration {rev}); deep health checks it"
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


def _heal_push(t: Target, name: str) -> None:
    """Database, checkout, .last_good_sha and the API as before `name`; origin main as before."""
    info = t.state.get(STATE_KEY, {}).get(name)
    if info is None:
        return
    downgrade = _db_revision(t) != info["app_before"]["revision"]
    t.sh(
        heal_script(str(t.app_dir), str(t.origin_dir), info, "true" if downgrade else "false"),
        timeout=300,
    )
    # The origin's HEAD is green again for the next deploy's CI gate.
    t.add_ci_run("success", info["origin_before"])
    faults = dict(t.state.get(STATE_KEY, {}))
    faults.pop(name, None)
    t.update_state(**{STATE_KEY: faults})
    t.service_restart("api")
    t.wait_deep("postgres", "green")


def _heal_good(t: Target, _: str | None) -> None:
    _heal_push(t, "good-deploy")


def _heal_bad(t: Target, _: str | None) -> None:
    _heal_push(t, "bad-deploy")


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


def _sandbox_spike(sb: Sandbox, _: str | None) -> str:
    # The sandbox's Sentry is a stub with a spike switch; a post-checkout hook in the
    # app's checkout stands in for "the errors came from the bad code".
    state = sb.state
    app = Path(state["app_dir"])
    bad = (
        state.get(STATE_KEY, {}).get("bad-deploy", {}).get("pushed")
        or sb.sh(f"git -C {shlex.quote(str(app))} rev-parse HEAD").stdout.strip()
    )
    hook = app / ".git" / "hooks" / "post-checkout"
    hook.parent.mkdir(parents=True, exist_ok=True)
    if hook.exists() and HOOK_MARK not in hook.read_text():
        raise RehearsalError("sentry-spike", f"{hook} exists and is not ours")
    hook.write_text(spike_hook(bad, state["stubs_url"]))
    hook.chmod(0o755)
    sb.stub_control("/_stub/sentry/spike", {"on": True, "errors_per_minute": 120})
    return f"the Sentry stub spikes while {bad[:12]} is checked out"


def _sandbox_spike_heal(sb: Sandbox, _: str | None) -> None:
    hook = Path(sb.state["app_dir"]) / ".git" / "hooks" / "post-checkout"
    if hook.exists() and HOOK_MARK in hook.read_text():
        hook.unlink()
    sb.stub_control("/_stub/sentry/spike", {"on": False})


SPIKE_UNIT = "dealix-sentry-spike"

# The twin's errors are real events sent to https://sentry.io (the internet container)
# with the app's own DSN, by a transient unit on the server: the DSN is read from the
# app's .env there at run time, so no key is ever on a command line of this machine
# or in the twin's journal.
SPIKE_SCRIPT = """#!/bin/sh
# runbook twin fault sentry-spike: real error events to Sentry while {bad} is checked out
set -u
dsn=$(sed -n 's/^SENTRY_DSN=//p' {app}/.env | tr -d "\\"'")
key=${{dsn#https://}}; key=${{key%%@*}}
host=${{dsn#*@}}; host=${{host%%/*}}
project=${{dsn##*/}}
umask 077
printf 'X-Sentry-Auth: Sentry sentry_version=7, sentry_client=dealix-api/3.0.0, sentry_key=%s\\n' \\
  "$key" > /run/{unit}.hdr
n=0
while git -C {app} merge-base --is-ancestor {bad} HEAD 2>/dev/null; do
  n=$((n + 1))
  id=$(tr -d - < /proc/sys/kernel/random/uuid)
  curl -s -o /dev/null -m 5 -X POST -H 'Content-Type: application/json' -H @/run/{unit}.hdr \\
    --data '{{"event_id":"'"$id"'","level":"error","platform":"python",'\\
'"environment":"production","logger":"dealix.api",'\\
'"exception":{{"values":[{{"type":"KeyError","value":"lead_scores","module":"dealix.main"}}]}},'\\
'"tags":{{"spike":"runbook-twin"}}}}' \\
    "https://$host/api/$project/store/" || true
  sleep 0.5
done
echo "left {bad}: spike over after $n errors"
"""


def _twin_spike(t: Twin, _: str | None) -> str:
    # No stub on the twin's side: a transient systemd unit sends real error events
    # (~100 a minute) and stops on its own when a rollback leaves the bad deploy.
    app = str(t.app_dir)
    bad = (
        t.state.get(STATE_KEY, {}).get("bad-deploy", {}).get("pushed")
        or t.sh(f"git -C {app} rev-parse HEAD").stdout.strip()
    )
    script = SPIKE_SCRIPT.format(bad=bad, app=app, unit=SPIKE_UNIT)
    t.sh(
        f"systemctl is-active -q {SPIKE_UNIT} && exit 3; "
        f"systemctl reset-failed {SPIKE_UNIT} 2>/dev/null; "
        f"printf '%s' {shlex.quote(script)} > /run/{SPIKE_UNIT}.sh && "
        f"chmod 700 /run/{SPIKE_UNIT}.sh && systemd-run -q --unit={SPIKE_UNIT} "
        f"--description='runbook twin fault sentry-spike' /run/{SPIKE_UNIT}.sh"
    )
    return f"{SPIKE_UNIT}.service sends errors to sentry.io while {bad[:12]} is checked out"


def _twin_spike_heal(t: Twin, _: str | None) -> None:
    t.sh(
        f"systemctl stop {SPIKE_UNIT} 2>/dev/null; systemctl reset-failed {SPIKE_UNIT} "
        f"2>/dev/null; rm -f /run/{SPIKE_UNIT}.sh /run/{SPIKE_UNIT}.hdr; true"
    )


def _ci_red(t: Target, _: str | None) -> str:
    head = origin_main(t)
    t.add_ci_run("failure", head)
    return f"newest CI run on main ({head[:12]}): failure"


def _ci_green(t: Target, _: str | None) -> None:
    # the origin's main as it is now: a deploy fault pushed after ci-red moves it
    ci_green_streak(lambda conclusion: t.add_ci_run(conclusion, origin_main(t)))


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
        "Sentry sees an error spike (~100-120 errors/min) until the server's checkout leaves "
        "the bad deploy (or the HEAD at apply time): the sandbox's Sentry stub, ended by a "
        f"post-checkout hook; on the twin, real events from a transient {SPIKE_UNIT}.service. "
        "Heal: spike off, hook or unit removed.",
        by_target(sandbox=_sandbox_spike, twin=_twin_spike),
        by_target(sandbox=_sandbox_spike_heal, twin=_twin_spike_heal),
    )
)
register(
    Fault(
        "ci-red",
        "Add a newest failed CI run on main for the origin's HEAD (GitHub Actions). "
        "Heal: add newer successful runs, as many as the health check's window.",
        _ci_red,
        _ci_green,
    )
)


# The app checkout fetches a branch the origin does not have: `git fetch origin` fails
# as it would with the origin unreachable, while `git ls-remote` (the CI gate, step 1)
# still answers, so a deploy gets past its snapshot and fails at step 4 (pull).
UNREACHABLE_REFSPEC = "+refs/heads/runbook-fault-origin-unreachable:refs/remotes/origin/fault"
DEFAULT_REFSPEC = "+refs/heads/*:refs/remotes/origin/*"


def _fetch_refspec(refspec: str):
    def go(t: Target, _: str | None) -> None:
        t.sh(
            f"git -C {shlex.quote(str(t.app_dir))} config remote.origin.fetch {shlex.quote(refspec)}"
        )

    return go


register(
    Fault(
        "origin-unreachable",
        "The app checkout's `git fetch origin` fails (its fetch refspec names a branch the "
        "origin lacks), while `git ls-remote origin` still answers: a deploy passes its CI "
        "gate and snapshot, then fails at step 4. Heal: the default fetch refspec.",
        _fetch_refspec(UNREACHABLE_REFSPEC),
        _fetch_refspec(DEFAULT_REFSPEC),
        # not yet rehearsed on the twin, whose checkout belongs to the app's user
        targets=("sandbox",),
    )
)
