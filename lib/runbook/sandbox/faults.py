"""Faults: named, reversible breakages of the sandbox.

A fault is registered once with a name, a description, `apply` and `heal`.
A fault may take a parameter, written `name:param` (`llm-down:anthropic`);
`choices` lists the accepted values. Active faults are kept in state.json
in the order they were applied; `heal` undoes them newest first.

Later issues add their faults with `register`::

    >>> f = register(Fault("demo-noop", "does nothing", lambda sb, p: None,
    ...                    lambda sb, p: None))
    >>> parse("demo-noop")[0] is f
    True
    >>> del FAULTS["demo-noop"]
    >>> parse("no-such-fault")
    Traceback (most recent call last):
    ...
    runbook.sandbox.faults.UnknownFault: unknown fault 'no-such-fault'; known: ...
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from runbook.sandbox.manager import Sandbox

Action = Callable[["Sandbox", "str | None"], object]


class UnknownFault(ValueError):
    """The name (or its parameter) is not in the registry."""


@dataclass(frozen=True)
class Fault:
    """One fault: `apply(sandbox, param)` breaks, `heal(sandbox, param)` repairs and waits."""

    name: str
    description: str
    apply: Action
    heal: Action
    param: str | None = None
    choices: tuple[str, ...] = ()

    @property
    def usage(self) -> str:
        """`name` or `name:PARAM` as typed on the command line."""
        return f"{self.name}:{self.param}" if self.param else self.name


FAULTS: dict[str, Fault] = {}


def register(fault: Fault) -> Fault:
    FAULTS[fault.name] = fault
    return fault


def parse(spec: str) -> tuple[Fault, str | None]:
    """`name` or `name:param` → (fault, param); raises UnknownFault naming the known ones."""
    name, sep, param = spec.strip().partition(":")
    fault = FAULTS.get(name)
    known = ", ".join(sorted(f.usage for f in FAULTS.values()))
    if fault is None:
        raise UnknownFault(f"unknown fault {spec!r}; known: {known}")
    if fault.param is None and sep:
        raise UnknownFault(f"fault {name!r} takes no parameter")
    if fault.param is not None:
        if not param:
            raise UnknownFault(
                f"fault {name!r} needs a parameter: {fault.usage}"
                + (f" ({'|'.join(fault.choices)})" if fault.choices else "")
            )
        if fault.choices and param not in fault.choices:
            raise UnknownFault(
                f"fault {name!r}: {param!r} is not one of {', '.join(fault.choices)}"
            )
    return fault, (param if fault.param is not None else None)


def canonical(spec: str) -> str:
    fault, param = parse(spec)
    return f"{fault.name}:{param}" if param else fault.name


# --------------------------------------------------------------------------
# the faults this project ships


def _postgres_down(sb: Sandbox, _: str | None) -> None:
    sb.stop("postgresql")


def _postgres_up(sb: Sandbox, _: str | None) -> None:
    sb.start("postgresql")
    sb.wait_postgres()
    sb.wait_deep("postgres", "green")


def _leak_connections(sb: Sandbox, _: str | None) -> None:
    status, body = sb.api(
        "/api/v1/admin/_sandbox/leak-connections", method="POST", admin=True, timeout=60
    )
    if status >= 300:
        raise RuntimeError(f"leak-connections answered {status}: {body}")
    sb.wait_deep("postgres", "red")


def _restart_api(sb: Sandbox, _: str | None) -> None:
    sb.restart("dealix-api")
    sb.wait_api()
    sb.wait_deep("postgres", "green")


def _ci_red(sb: Sandbox, _: str | None) -> None:
    sb.add_ci_run("failure")


def _ci_green(sb: Sandbox, _: str | None) -> None:
    # a green streak as long as the health check's window (the last 3 runs), so a
    # healed ci-red does not leave a red run among them for the next drill
    for _run in range(3):
        sb.add_ci_run("success")


def _redis_down(sb: Sandbox, _: str | None) -> None:
    sb.stop("redis")


def _redis_up(sb: Sandbox, _: str | None) -> None:
    sb.start("redis")
    sb.wait_redis()
    sb.wait_deep("redis", "green")


def _llm_down(sb: Sandbox, provider: str | None) -> None:
    sb.stub_control(f"/_stub/llm/{provider}", {"down": True})


def _llm_up(sb: Sandbox, provider: str | None) -> None:
    sb.stub_control(f"/_stub/llm/{provider}", {"down": False})


register(
    Fault(
        "postgres-down",
        "Stop PostgreSQL (supervisorctl stop postgresql): the API answers 500 OperationalError, "
        "webhooks go to WEBHOOKS_DLQ, /health/deep shows postgres red. "
        "Heal: start it and wait for SELECT 1 and deep health postgres green.",
        _postgres_down,
        _postgres_up,
    )
)

register(
    Fault(
        "pool-exhausted",
        "Make the API leak database connections until Postgres refuses more "
        "(max_connections 40, 3 reserved for the superuser): the API and Postgres are up, "
        "superuser psql works, but /health/deep shows postgres red. "
        "Heal: restart dealix-api, which drops the connections.",
        _leak_connections,
        _restart_api,
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

register(
    Fault(
        "redis-down",
        "Stop Redis (supervisorctl stop redis): /health/deep shows redis red. "
        "Heal: start it and wait for PING.",
        _redis_down,
        _redis_up,
    )
)

register(
    Fault(
        "llm-down",
        "Make one LLM provider's API fail (stub answers 5xx; its status page shows an incident): "
        "the API's breaker for it opens after BREAKER_FAILURE_THRESHOLD failures. "
        "Heal: the provider answers again (the breaker closes on its next half-open success).",
        _llm_down,
        _llm_up,
        param="PROVIDER",
        choices=("anthropic", "openai", "google"),
    )
)

# The scenario issues' faults live in their own modules and register on import.
from runbook.sandbox import (  # noqa: E402
    faults_deploy,  # noqa: F401
    faults_incidents,  # noqa: F401
    faults_restore,  # noqa: F401
    faults_security,  # noqa: F401
)
