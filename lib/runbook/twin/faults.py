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

from runbook.sandbox.faults import deploy as sandbox_deploy

if TYPE_CHECKING:
    from runbook.twin.instance import Twin


from runbook.twin._registry import Fault, UnknownFault, get, register, registry, says

__all__ = ["Fault", "UnknownFault", "get", "register", "registry"]


def _ssh(cmd: str) -> Callable[[Twin], None]:
    def go(t: Twin) -> None:
        t.ssh(cmd)

    return go


register(
    Fault(
        "postgres-down",
        "systemctl stop postgresql (the Debian wrapper stops postgresql@15-main): "
        "/health/deep turns red.",
        says(_ssh("systemctl stop postgresql"), "postgresql stopped (systemctl stop postgresql)"),
        _ssh("systemctl start postgresql"),
    )
)
register(
    Fault(
        "postgres-killed",
        "SIGKILL the cluster's postmaster: postgresql@15-main fails while the wrapper "
        "postgresql.service still says active (a Debian fidelity finding, TWIN_NOTES §1.6).",
        says(
            _ssh("kill -KILL $(head -1 /var/lib/postgresql/15/main/postmaster.pid)"),
            "postmaster SIGKILLed; postgresql@15-main is failed, postgresql still 'active'",
        ),
        _ssh("systemctl reset-failed postgresql@15-main; systemctl restart postgresql"),
    )
)


def _ci_run(t: Twin, conclusion: str, said: str) -> str:
    # faults_deploy is imported below, after these are registered (the --list order)
    faults_deploy.ci_run(conclusion)(t)
    return said


register(
    Fault(
        "ci-red",
        "Add a newest failed CI run on main at api.github.com (the stubs).",
        lambda t: _ci_run(t, "failure", "newest CI run on main: failure"),
        # as the sandbox's heal: one green run would leave the red one in the window
        lambda t: sandbox_deploy.ci_green_streak(lambda c: _ci_run(t, c, "")),
    )
)
register(
    Fault(
        "llm-anthropic-down",
        "api.anthropic.com answers 529 overloaded and its status page shows a major outage.",
        lambda t: says(faults_deploy.llm("anthropic", True), "anthropic down")(t),
        lambda t: faults_deploy.llm("anthropic", False)(t),
    )
)


# each scenario's faults live in a module of their own, which registers them in
# _registry on import (they never import this module, so there is no circle)
from runbook.twin import faults_deploy, faults_drill, faults_incidents  # noqa: E402, F401

for _spec in faults_drill.FAULTS:
    register(Fault(*_spec))
