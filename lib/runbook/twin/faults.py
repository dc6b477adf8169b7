"""Faults on the twin, by name: real systemd units and the stubs behind the "internet".

Each fault is a command on the server (over SSH with the pinned key) or a call
to the stubs' loopback control endpoints, and its heal undoes it. Active
faults are kept in state.json; `heal` undoes them newest first. Later
scenarios add theirs here with `register`.

Example::

    >>> [f.name for f in registry()][:2]
    ['postgres-down', 'postgres-killed']
"""

from __future__ import annotations

from collections.abc import Callable
from typing import TYPE_CHECKING

from runbook.twin.internet import stub_control

if TYPE_CHECKING:
    from runbook.twin.instance import Twin


from runbook.twin._registry import Fault, UnknownFault, get, register, registry

__all__ = ["Fault", "UnknownFault", "get", "register", "registry"]


def _ssh(cmd: str) -> Callable[[Twin], None]:
    def go(t: Twin) -> None:
        t.ssh(cmd)

    return go


def _ssh_says(cmd: str, said: str) -> Callable[[Twin], str]:
    def go(t: Twin) -> str:
        t.ssh(cmd)
        return said

    return go


def _stub(path: str, body: object, said: str) -> Callable[[Twin], str]:
    def go(t: Twin) -> str:
        stub_control(t.state["stubs_url"], path, body)
        return said

    return go


register(
    Fault(
        "postgres-down",
        "systemctl stop postgresql (the Debian wrapper stops postgresql@15-main): "
        "/health/deep turns red.",
        _ssh_says("systemctl stop postgresql", "postgresql stopped (systemctl stop postgresql)"),
        _ssh("systemctl start postgresql"),
    )
)
register(
    Fault(
        "postgres-killed",
        "SIGKILL the cluster's postmaster: postgresql@15-main fails while the wrapper "
        "postgresql.service still says active (a Debian fidelity finding, TWIN_NOTES §1.6).",
        _ssh_says(
            "kill -KILL $(head -1 /var/lib/postgresql/15/main/postmaster.pid)",
            "postmaster SIGKILLed; postgresql@15-main is failed, postgresql still 'active'",
        ),
        _ssh("systemctl reset-failed postgresql@15-main; systemctl restart postgresql"),
    )
)


def _ci_red(t: Twin) -> str:
    _add_run(t, "failure")
    return "newest CI run on main: failure"


def _ci_green_streak(t: Twin) -> None:
    for _ in range(3):
        _add_run(t, "success")


register(
    Fault(
        "ci-red",
        "Add a newest failed CI run on main at api.github.com (the stubs).",
        _ci_red,
        # a green streak as long as the health check's window (the last 3 runs), as the
        # sandbox's heal: one green run would leave the red one among them
        _ci_green_streak,
    )
)
register(
    Fault(
        "llm-anthropic-down",
        "api.anthropic.com answers 529 overloaded and its status page shows a major outage.",
        _stub("/_stub/llm/anthropic", {"down": True}, "anthropic down"),
        lambda t: _llm(t, "anthropic", down=False),
    )
)


def _llm(t: Twin, provider: str, *, down: bool) -> None:
    stub_control(t.state["stubs_url"], f"/_stub/llm/{provider}", {"down": down})


def _add_run(t: Twin, conclusion: str) -> None:
    st = t.state
    # the origin's main as it is now: a pushed deploy (faults_deploy) moves it
    head = t.ssh("git --git-dir=/srv/git/dealix.git rev-parse refs/heads/main").stdout.strip()
    stub_control(
        st["stubs_url"],
        "/_stub/github/runs",
        {
            "head_sha": head,
            "conclusion": conclusion,
            "status": "completed",
            "name": "CI",
            "branch": "main",
        },
    )


# each scenario's faults live in a module of their own, which registers them in
# _registry on import (they never import this module, so there is no circle)
from runbook.twin import faults_deploy, faults_drill, faults_incidents  # noqa: E402, F401

for _spec in faults_drill.FAULTS:
    register(Fault(*_spec))
