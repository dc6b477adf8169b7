"""Faults on the fleet twin (`runbook twin fault --fleet NAME`), each with its heal.

- `release`: a developer merges a healthy commit (the sandbox's new migration,
  table lead_tags) to main, CI green for it. The fleet twin has no GitHub: each
  API host's `https://github.com/VoXc2/dealix.git` is its own `/srv/git/dealix.git`,
  so the commit goes to every API host's origin (one GitHub, as the hosts see it).
- `bad-on:HOST`: HOST cannot start any code but what it runs now (a systemd
  drop-in whose ExecStartPre compares the checkout with the SHA pinned at fault
  time: a host-specific breakage, like a system library only that host lacks).
  With `release`, a rolling deploy passes the canary and fails on HOST.
- `down:HOST`: HOST stops serving (its nginx and dealix-api stopped; SSH stays).
- `drained:HOST`: HOST marked `down` in the load balancer's upstream and never
  put back (the Ansible user's story: a retry that forgot the put-back).
- `mixed-sha:HOST`: HOST runs the commit before its checkout's HEAD (the fleet
  runs two SHAs; a rolling deploy must refuse to record a last-good SHA).

Every heal undoes its fault; `release`'s puts the database revision (downgrade
with the new code still checked out), every API host's checkout, main,
origin/main, `.last_good_sha` and the origin's main back, and adds a green CI
run for the old HEAD.
"""

from __future__ import annotations

import shlex
import time
from collections.abc import Callable
from typing import TYPE_CHECKING, Any

from runbook.ops.lb import LB_CONF, UPSTREAM, set_down
from runbook.rehearsal.faults import UnknownFault
from runbook.rehearsal.faults import deploy as rehearsal_deploy
from runbook.twin.common import TwinError

if TYPE_CHECKING:
    from runbook.twin.fleet import Fleet

APP = "/opt/dealix"
ORIGIN = "/srv/git/dealix.git"
STATE_KEY = "fleet_faults"
PIN_DROPIN = "/etc/systemd/system/dealix-api.service.d/fleet-fault-pin.conf"
READY_S = 60.0


def _q(text: str) -> str:
    return shlex.quote(text)


def _api_host(f: Fleet, host: str) -> str:
    if host not in f.state["api_hosts"]:
        raise TwinError("fault", f"{host} is not an API host ({', '.join(f.state['api_hosts'])})")
    return host


def _remember(f: Fleet, name: str, info: dict[str, Any]) -> None:
    st = f.state
    faults = st.setdefault(STATE_KEY, {})
    if name in faults:
        raise TwinError(name, f"{name} is already applied (runbook twin heal --fleet first)")
    faults[name] = info
    f._save(st)


def _recorded(f: Fleet, name: str) -> dict[str, Any] | None:
    """The fault's record (None: it was not applied)."""
    return f.state.get(STATE_KEY, {}).get(name)


def _forget(f: Fleet, name: str) -> dict[str, Any] | None:
    """The fault's record, removed from the state once its heal is done."""
    st = f.state
    info = st.get(STATE_KEY, {}).pop(name, None)
    f._save(st)
    return info


def wait_serving(f: Fleet, host: str, sha: str | None = None, timeout: float = READY_S) -> None:
    """Until HOST's own nginx answers /health 200 (with `sha`, when given)."""
    ip = f.state["hosts"][host]["address"]
    deadline = time.monotonic() + timeout
    last = ""
    while time.monotonic() < deadline:
        try:
            code, _h, body = f.request("/health", ip=ip)
            last = f"{code} {body[:120]!r}"
            if code == 200 and (sha is None or sha.encode() in body):
                return
        except OSError as exc:
            last = str(exc)
        time.sleep(0.3)
    raise TwinError(host, f"/health not serving{f' {sha[:12]}' if sha else ''}: {last}")


def _restart_api(f: Fleet, host: str, sha: str | None = None) -> None:
    f.ssh_to(host, "systemctl daemon-reload && systemctl restart dealix-api")
    wait_serving(f, host, sha)


# ---------------------------------------------------------------------- release


def origin_main(f: Fleet, host: str) -> str:
    return f.ssh_to(host, f"git --git-dir={ORIGIN} rev-parse refs/heads/main").stdout.strip()


def apply_release(f: Fleet) -> str:
    st = f.state
    apis = st["api_hosts"]
    before = origin_main(f, apis[0])
    app_before = {
        h: {
            "head": f.ssh_to(h, f"git -C {APP} rev-parse HEAD").stdout.strip(),
            "last_good": f.ssh_to(h, f"cat {APP}/.last_good_sha").stdout.strip(),
        }
        for h in apis
    }
    revision = f.ssh_to(
        st["db_host"],
        "cd / && sudo -n -u postgres psql -d dealix -Atc 'SELECT version_num FROM alembic_version'",
    ).stdout.strip()
    first = st["hosts"][apis[0]]["address"]
    work = f.dir / "tmp" / "fault-release"

    def merge(sha: str) -> None:
        # GitHub's merge button, on every API host's origin (the others get the commit
        # first, on a pull-request ref: their hook refuses a push to main)
        for h in apis[1:]:
            addr = st["hosts"][h]["address"]
            f.developer_git(
                "push", "-q", f"root@{addr}:{ORIGIN}", f"+{sha}:refs/pull/fleet/head", cwd=work
            )
        for h in apis:
            f.ssh_to(h, f"git --git-dir={ORIGIN} update-ref refs/heads/main {sha}")

    sha, rev = rehearsal_deploy.commit_and_push(
        f.developer_git,
        f"root@{first}:{ORIGIN}",
        work,
        rehearsal_deploy._good_change,
        "Lead tags (migration {rev})",
        merge,
    )
    for h in apis:
        if origin_main(f, h) != sha:
            raise TwinError("release", f"{h}'s origin main is not {sha[:12]}")
    f.add_ci_run("success", sha)
    _remember(
        f,
        "release",
        {"origin_before": before, "pushed": sha, "revision": rev, "db_revision": revision,
         "app_before": app_before},
    )  # fmt: skip
    return f"release: merged {sha[:12]} (migration {rev}) to main on every API host's origin"


def heal_release(f: Fleet) -> None:
    info = _recorded(f, "release")
    if info is None:
        return
    st = f.state
    apis = st["api_hosts"]
    before, pushed = info["origin_before"], info["pushed"]
    now = f.ssh_to(
        st["db_host"],
        "cd / && sudo -n -u postgres psql -d dealix -Atc 'SELECT version_num FROM alembic_version'",
    ).stdout.strip()
    if now != info["db_revision"]:
        # downgrade first, with the new code (which holds the migration) checked out
        f.ssh_to(
            apis[0],
            f"cd {APP} && git fetch -q origin && git checkout -q {pushed} && "
            f".venv/bin/alembic downgrade {_q(info['db_revision'])}",
        )
    for h in apis:
        was = info["app_before"][h]
        f.ssh_to(
            h,
            f"git --git-dir={ORIGIN} update-ref refs/heads/main {before} && cd {APP} && "
            f"git checkout -q main && git reset -q --hard {was['head']} && "
            f"git update-ref refs/remotes/origin/main {before} && "
            f"printf '%s\\n' {was['last_good']} > .last_good_sha",
        )
        _restart_api(f, h, was["head"])
    f.add_ci_run("success", before)
    _forget(f, "release")


# ---------------------------------------------------------------------- one host


def bad_on(host: str) -> tuple[Callable[[Fleet], str], Callable[[Fleet], None]]:
    def apply(f: Fleet) -> str:
        _api_host(f, host)
        sha = f.ssh_to(host, f"git -C {APP} rev-parse HEAD").stdout.strip()
        _remember(f, f"bad-on:{host}", {"pinned": sha})
        dropin = (
            "# runbook twin fault --fleet bad-on: this host starts only the code it ran then\n"
            "[Service]\n"
            f"ExecStartPre=/bin/sh -c 'test \"$$(git -C {APP} rev-parse HEAD)\" = {sha}'\n"
        )
        f.ssh_to(host, f"mkdir -p {PIN_DROPIN.rsplit('/', 1)[0]} && printf %s {_q(dropin)} > {PIN_DROPIN}"
                 " && systemctl daemon-reload")  # fmt: skip
        return f"bad-on:{host}: {host} starts only {sha[:12]}; any other code fails to start"

    def heal(f: Fleet) -> None:
        if _forget(f, f"bad-on:{host}") is not None:
            f.ssh_to(host, f"rm -f {PIN_DROPIN} && systemctl daemon-reload")
            # a deploy may have left it failed on the new code: it starts again now (and
            # serves, unless another fault stopped its nginx)
            f.ssh_to(host, "systemctl reset-failed dealix-api; systemctl restart dealix-api")
            if f.ssh_to(host, "systemctl is-active -q nginx", check=False).returncode == 0:
                wait_serving(f, host)

    return apply, heal


def down(host: str) -> tuple[Callable[[Fleet], str], Callable[[Fleet], None]]:
    def apply(f: Fleet) -> str:
        _api_host(f, host)
        _remember(f, f"down:{host}", {})
        f.ssh_to(host, "systemctl stop nginx dealix-api")
        return f"down:{host}: nginx and dealix-api stopped on {host}"

    def heal(f: Fleet) -> None:
        if _forget(f, f"down:{host}") is not None:
            f.ssh_to(host, "systemctl start dealix-api nginx")
            wait_serving(f, host)

    return apply, heal


def _lb_edit(f: Fleet, host: str, drained: bool) -> None:
    st = f.state
    server = f"{st['hosts'][host]['address']}:443"
    conf = f.dir / st["lb_host"] / "root" / LB_CONF.lstrip("/")
    conf.write_text(set_down(conf.read_text(), UPSTREAM, server, drained))
    f.ssh_to(st["lb_host"], "nginx -t -q && systemctl reload nginx")


def drained(host: str) -> tuple[Callable[[Fleet], str], Callable[[Fleet], None]]:
    def apply(f: Fleet) -> str:
        _api_host(f, host)
        _remember(f, f"drained:{host}", {})
        _lb_edit(f, host, True)
        return f"drained:{host}: {host} marked down in the load balancer's upstream, left so"

    def heal(f: Fleet) -> None:
        if _forget(f, f"drained:{host}") is not None:
            _lb_edit(f, host, False)

    return apply, heal


def mixed_sha(host: str) -> tuple[Callable[[Fleet], str], Callable[[Fleet], None]]:
    def apply(f: Fleet) -> str:
        _api_host(f, host)
        head = f.ssh_to(host, f"git -C {APP} rev-parse HEAD").stdout.strip()
        older = f.ssh_to(host, f"git -C {APP} rev-parse HEAD~1").stdout.strip()
        _remember(f, f"mixed-sha:{host}", {"head": head})
        f.ssh_to(host, f"git -C {APP} checkout -q {older}")
        _restart_api(f, host, older)
        return f"mixed-sha:{host}: {host} runs {older[:12]}, the others {head[:12]}"

    def heal(f: Fleet) -> None:
        info = _forget(f, f"mixed-sha:{host}")
        if info is not None:
            f.ssh_to(
                host,
                f"git -C {APP} checkout -q main && git -C {APP} reset -q --hard {info['head']}",
            )
            _restart_api(f, host, info["head"])

    return apply, heal


def get(name: str) -> tuple[Callable[[Fleet], str], Callable[[Fleet], None]]:
    """The (apply, heal) of fault `name`; a TwinError naming the faults otherwise."""
    if name == "release":
        return apply_release, heal_release
    kind, _, host = name.partition(":")
    makers = {"bad-on": bad_on, "down": down, "drained": drained, "mixed-sha": mixed_sha}
    if kind in makers and host:
        return makers[kind](host)
    # a usage error (exit 2), as an unknown fault of the single twin
    raise UnknownFault(
        f"no fleet fault {name!r}: release, bad-on:HOST, down:HOST, drained:HOST, mixed-sha:HOST"
    )
