"""Deploy and LLM faults on the twin, with the sandbox's names and meanings, done the production way.

- `good-deploy` / `bad-deploy`: a developer pushes a commit to the origin's main
  (`/srv/git/dealix.git` on the server, which `https://github.com/VoXc2/dealix.git`
  is rewritten to) over SSH, with a green CI run for it at api.github.com. The
  commit's content is the sandbox's (runbook.sandbox.faults.deploy): a new
  migration, and for the bad one a deep-health check that reads a table the
  migration does not create.
- `sentry-spike`: real error events, sent from the server to https://sentry.io
  (the internet container) with the app's own DSN by a transient systemd unit,
  about 100 a minute, for as long as the checkout holds the bad deploy (or the
  HEAD at the time the fault was applied): the unit stops on its own when a
  rollback leaves it, as the real errors would.
- `llm-down:PROVIDER` / `llm-recover:PROVIDER`: the provider's API (a SaaS, so
  the stubs behind the internet container) fails / answers again.

Every heal undoes its fault: the deploy heals put the database revision, the
checkout, `.last_good_sha`, the app clone's `origin/main` and the origin's main
back, add a green CI run for the old HEAD, restart dealix-api and wait for
green deep health.

Example::

    >>> from runbook.twin import faults
    >>> [f for f in ("good-deploy", "bad-deploy", "sentry-spike", "llm-down:openai")
    ...  if faults.get(f)] == ["good-deploy", "bad-deploy", "sentry-spike", "llm-down:openai"]
    True
"""

from __future__ import annotations

import json
import shlex
import time
from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING, Any

from runbook.sandbox.build.host import git
from runbook.sandbox.faults import deploy as sandbox_deploy
from runbook.sandbox.layout import CI_RUNS_CONTROL, ci_run_body
from runbook.twin._registry import Fault, register, says
from runbook.twin.common import TwinError
from runbook.twin.internet import stub_control

if TYPE_CHECKING:
    from runbook.twin.instance import Twin

APP = "/opt/dealix"
ORIGIN = "/srv/git/dealix.git"
STATE_KEY = "deploy_faults"
SPIKE_UNIT = "dealix-sentry-spike"
PROVIDERS = ("anthropic", "openai", "google")
DEEP_WAIT_S = 60.0


def _q(text: str) -> str:
    return shlex.quote(text)


def origin_main(t: Twin) -> str:
    """The origin's main on the server (what GitHub's main is for the twin)."""
    return t.ssh(f"git --git-dir={ORIGIN} rev-parse refs/heads/main").stdout.strip()


def app_snapshot(t: Twin) -> dict[str, Any]:
    """Checkout, branch, the clone's origin/main, alembic revision and .last_good_sha."""
    out = t.ssh(
        f"cd {APP} && git rev-parse HEAD && git rev-parse refs/remotes/origin/main && "  # noqa: S608
        "(git symbolic-ref --short -q HEAD || echo -) && "
        "(cd / && sudo -n -u postgres psql -d dealix -Atc 'SELECT version_num FROM alembic_version') "
        f"&& if [ -e {APP}/.last_good_sha ]; then base64 -w0 {APP}/.last_good_sha; echo; "
        "else echo -; fi"
    ).stdout.split("\n")
    last_good = out[4].strip() if len(out) > 4 else "-"
    return {
        "head": out[0].strip(),
        "origin_main": out[1].strip(),
        "branch": None if out[2].strip() == "-" else out[2].strip(),
        "revision": out[3].strip() or None,
        # base64 keeps the file byte for byte (trailing newline or not)
        "last_good_b64": None if last_good == "-" else last_good,
    }


def _git_env(t: Twin) -> dict[str, str]:
    ssh = shlex.join(["ssh", *t.ssh_options()])
    return {
        "PATH": "/usr/local/bin:/usr/bin:/bin",
        "HOME": str(t.dir),
        "GIT_SSH_COMMAND": ssh,
        "GIT_AUTHOR_NAME": "Dealix developer",
        "GIT_AUTHOR_EMAIL": "dev@dealix.me",
        "GIT_COMMITTER_NAME": "GitHub",
        "GIT_COMMITTER_EMAIL": "noreply@github.com",
        "GIT_CONFIG_NOSYSTEM": "1",
        "LC_ALL": "C.UTF-8",
    }


def _git(t: Twin, *args: str, cwd: Path | None = None) -> str:
    return git(*args, env=_git_env(t), cwd=cwd, error=TwinError)


def add_ci_run(t: Twin, conclusion: str, head_sha: str) -> None:
    stub_control(t.state["stubs_url"], CI_RUNS_CONTROL, ci_run_body(conclusion, head_sha))


def _push_commit(t: Twin, name: str, change: sandbox_deploy.Change, message: str) -> str:
    """Push `change` to the origin's main over SSH (the sandbox's commit_and_push), CI green."""
    st = t.state
    if name in st.get(STATE_KEY, {}):
        raise TwinError(name, f"{name} is already applied (runbook twin heal first)")
    before = origin_main(t)
    app_before = app_snapshot(t)
    sha, rev = sandbox_deploy.commit_and_push(
        lambda *args, cwd=None: _git(t, *args, cwd=cwd),
        f"root@{st['host']}:{ORIGIN}",
        t.dir / "tmp" / f"fault-{name}",
        change,
        message,
        # GitHub's merge button: main moves on the origin itself (its hook refuses pushes)
        lambda sha: t.ssh(f"git --git-dir={ORIGIN} update-ref refs/heads/main {sha}"),
    )
    # CI passed for the merged commit (the bad one too: its bug shows only after the restart)
    add_ci_run(t, "success", sha)
    st = t.state
    st.setdefault(STATE_KEY, {})[name] = sandbox_deploy.push_record(before, sha, rev, app_before)
    t._save(st)
    return f"{name}: pushed {sha[:12]} (migration {rev}) to the origin's main, CI green for it"


def wait_deep_green(t: Twin, timeout: float = DEEP_WAIT_S) -> None:
    deadline = time.monotonic() + timeout
    last = ""
    while time.monotonic() < deadline:
        try:
            code, body = t.https_get("/health/deep")
            if code == 200 and json.loads(body).get("status") == "green":
                return
            last = f"{code} {body[:200]!r}"
        except (OSError, ValueError) as exc:
            last = str(exc)
        time.sleep(1)
    raise TwinError("heal", f"/health/deep not green after {timeout:.0f} s (last: {last})")


def _heal_push(t: Twin, name: str) -> None:
    """Database, checkout, .last_good_sha and the API as before `name`; origin main as before."""
    st = t.state
    info = st.get(STATE_KEY, {}).get(name)
    if info is None:
        return
    current = "$(cd / && sudo -n -u postgres psql -d dealix -Atc 'SELECT version_num FROM alembic_version')"
    downgrade_if = f'[ "{current}" != {_q(info["app_before"]["revision"] or "")} ]'
    t.ssh(
        sandbox_deploy.heal_script(APP, ORIGIN, info, downgrade_if)
        + "; systemctl restart dealix-api",
        timeout=300,
    )
    # the origin's HEAD is green again for the next deploy's CI gate
    add_ci_run(t, "success", info["origin_before"])
    st = t.state
    st.get(STATE_KEY, {}).pop(name, None)
    t._save(st)
    wait_deep_green(t)


# The unit's script: the DSN is read from the app's .env on the box at run time, so
# no key is ever on a command line of this machine or in the twin's journal.
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


def _apply_spike(t: Twin) -> str:
    st = t.state
    bad = (
        st.get(STATE_KEY, {}).get("bad-deploy", {}).get("pushed")
        or t.ssh(f"git -C {APP} rev-parse HEAD").stdout.strip()
    )
    script = SPIKE_SCRIPT.format(bad=bad, app=APP, unit=SPIKE_UNIT)
    t.ssh(
        f"systemctl is-active -q {SPIKE_UNIT} && exit 3; "
        f"systemctl reset-failed {SPIKE_UNIT} 2>/dev/null; "
        f"printf '%s' {_q(script)} > /run/{SPIKE_UNIT}.sh && chmod 700 /run/{SPIKE_UNIT}.sh && "
        f"systemd-run -q --unit={SPIKE_UNIT} --description='runbook twin fault sentry-spike' "
        f"/run/{SPIKE_UNIT}.sh"
    )
    return f"sentry-spike: {SPIKE_UNIT}.service sends errors to sentry.io while {bad[:12]} is checked out"


def _heal_spike(t: Twin) -> None:
    t.ssh(
        f"systemctl stop {SPIKE_UNIT} 2>/dev/null; systemctl reset-failed {SPIKE_UNIT} "
        f"2>/dev/null; rm -f /run/{SPIKE_UNIT}.sh /run/{SPIKE_UNIT}.hdr; true"
    )


def llm(provider: str, down: bool) -> Callable[[Twin], None]:
    """The fault action that takes `provider`'s API (a SaaS stub) down or back up."""

    def go(t: Twin) -> None:
        stub_control(t.state["stubs_url"], f"/_stub/llm/{provider}", {"down": down})

    return go


def ci_run(conclusion: str) -> Callable[[Twin], None]:
    """The fault action that adds a newest CI run for the origin's main as it is now
    (a pushed deploy moves it)."""

    def go(t: Twin) -> None:
        add_ci_run(t, conclusion, origin_main(t))

    return go


register(
    Fault(
        "good-deploy",
        "Push a healthy commit with a new alembic migration (table lead_tags) to the origin's "
        f"main ({ORIGIN} on the server, over SSH), with a green CI run for it. Heal: database "
        "revision, checkout, .last_good_sha and dealix-api as before; the origin's main back.",
        lambda t: _push_commit(
            t, "good-deploy", sandbox_deploy._good_change, "Lead tags (migration {rev})"
        ),
        lambda t: _heal_push(t, "good-deploy"),
    )
)
register(
    Fault(
        "bad-deploy",
        "Push a commit that passes CI but breaks /health/deep once deployed: its migration "
        "creates lead_score while the new deep-health check reads lead_scores (postgres red). "
        "Heal: as good-deploy.",
        lambda t: _push_commit(
            t,
            "bad-deploy",
            sandbox_deploy._bad_change,
            "Lead scoring (migration {rev}); deep health checks it",
        ),
        lambda t: _heal_push(t, "bad-deploy"),
    )
)
register(
    Fault(
        "sentry-spike",
        f"A transient unit {SPIKE_UNIT}.service on the server sends real error events to "
        "https://sentry.io with the app's DSN (~100/min) while the checkout holds the bad "
        "deploy (or the HEAD at apply time); it ends on its own when a rollback leaves it. "
        "Heal: the unit stopped.",
        _apply_spike,
        _heal_spike,
    )
)
for _p in PROVIDERS:
    register(
        Fault(
            f"llm-down:{_p}",
            f"{_p}'s API fails (5xx) and its status page shows an incident: the API's breaker "
            "for it opens after BREAKER_FAILURE_THRESHOLD failures. Heal: it answers again.",
            says(llm(_p, True), f"{_p} down"),
            llm(_p, False),
        )
    )
    register(
        Fault(
            f"llm-recover:{_p}",
            f"{_p} answers again and its status page is operational (ends llm-down:{_p}). "
            "Heal: nothing to undo.",
            says(llm(_p, False), f"{_p} recovered"),
            lambda t: None,
        )
    )
