"""The fault registry: named, reversible breakages of the sandbox.

A fault is registered once with a name, a description, `apply` and `heal`.
A fault may take a parameter, written `name:param` (`llm-down:anthropic`);
`choices` lists the accepted values. Active faults are kept in state.json
in the order they were applied; `heal` undoes them newest first.

Each scenario's module in this package adds its faults with `register`::

    >>> f = register(Fault("demo-noop", "does nothing", lambda sb, p: None,
    ...                    lambda sb, p: None))
    >>> parse("demo-noop")[0] is f
    True
    >>> del FAULTS["demo-noop"]
    >>> parse("no-such-fault")
    Traceback (most recent call last):
    ...
    runbook.sandbox.faults._registry.UnknownFault: unknown fault 'no-such-fault'; known: ...
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


def start_and_wait(sb: Sandbox, program: str, ready: Callable[[], object], part: str) -> None:
    """A heal's usual end: start `program`, wait until `ready()` and deep health `part` green."""
    sb.start(program)
    ready()
    sb.wait_deep(part, "green")


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
