"""The one fault registry of the rehearsal wing, for the sandbox and the twin alike.

A fault is registered once, with a name, a description, `apply` and `heal`, and
the targets it can break (`targets`, both unless said otherwise). `apply(target,
param)` breaks the target and may return one line saying what it did; `heal(target,
param)` undoes exactly that and waits until the part is healthy again. A fault may
take a parameter, written `name:param` (`llm-down:anthropic`); `choices` lists the
accepted values. Where the sandbox and the twin truly differ, `by_target` joins two
adapters into one apply (or heal), side by side in the fault's module.

This module imports nothing of the targets: the scenario modules register here,
`runbook.rehearsal.state` applies and heals.

    >>> f = register(Fault("demo-noop", "does nothing", lambda t, p: None,
    ...                    lambda t, p: None, targets=("sandbox",)))
    >>> parse("demo-noop")[0] is f, f.only
    (True, 'sandbox only')
    >>> register(Fault("demo-noop", "again", lambda t, p: None, lambda t, p: None))
    Traceback (most recent call last):
    ...
    runbook.rehearsal.faults.registry.DuplicateFault: fault 'demo-noop' is registered twice ...
    >>> del FAULTS["demo-noop"]
    >>> parse("no-such-fault")
    Traceback (most recent call last):
    ...
    runbook.rehearsal.faults.registry.UnknownFault: unknown fault 'no-such-fault'; known: ...
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

TARGETS = ("sandbox", "twin")

# (target, param) -> what it did in one line, or None; the target is a Sandbox or a
# Twin (runbook.rehearsal.target.Target): Any here so that this module imports neither
Action = Callable[[Any, "str | None"], "str | None"]


class UnknownFault(ValueError):
    """The name (or its parameter) is not in the registry, or not for this target."""


class DuplicateFault(ValueError):
    """Two faults under one name: the second would silently replace the first."""


@dataclass(frozen=True)
class Fault:
    """One fault: `apply(target, param)` breaks, `heal(target, param)` repairs and waits."""

    name: str
    description: str
    apply: Action
    heal: Action
    param: str | None = None
    choices: tuple[str, ...] = ()
    targets: tuple[str, ...] = TARGETS

    @property
    def usage(self) -> str:
        """`name` or `name:PARAM` as typed on the command line."""
        return f"{self.name}:{self.param}" if self.param else self.name

    @property
    def only(self) -> str:
        """'' for a fault of both targets, else 'sandbox only' or 'twin only'."""
        return "" if set(self.targets) == set(TARGETS) else f"{'/'.join(self.targets)} only"


FAULTS: dict[str, Fault] = {}


def register(fault: Fault) -> Fault:
    if fault.name in FAULTS:
        raise DuplicateFault(
            f"fault {fault.name!r} is registered twice (write it once; where the sandbox and "
            "the twin differ, join two adapters with by_target)"
        )
    unknown = set(fault.targets) - set(TARGETS)
    if unknown or not fault.targets:
        raise ValueError(f"fault {fault.name!r}: targets must be among {TARGETS}, not {unknown}")
    FAULTS[fault.name] = fault
    return fault


def by_target(*, sandbox: Action, twin: Action) -> Action:
    """One action made of an adapter per target, chosen by the target's `kind`."""

    def go(target: Any, param: str | None) -> str | None:
        return (sandbox if target.kind == "sandbox" else twin)(target, param)

    return go


def nothing(_target: object, _param: str | None) -> None:
    """The heal of a fault that leaves nothing to undo (llm-recover)."""
    return None


def listing() -> list[Fault]:
    """Every fault, by name: what `runbook sandbox fault --list` and `runbook twin fault
    --list` both print."""
    return sorted(FAULTS.values(), key=lambda f: f.name)


def parse(spec: str, kind: str | None = None) -> tuple[Fault, str | None]:
    """`name` or `name:param` → (fault, param); raises UnknownFault naming the known ones.
    With `kind` ("sandbox" or "twin"), a fault the target cannot do is refused too."""
    name, sep, param = spec.strip().partition(":")
    fault = FAULTS.get(name)
    known = ", ".join(f.usage for f in listing() if kind is None or kind in f.targets)
    if fault is None:
        raise UnknownFault(f"unknown fault {spec!r}; known: {known}")
    if kind is not None and kind not in fault.targets:
        raise UnknownFault(f"fault {name!r} is {fault.only}; known on the {kind}: {known}")
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


def canonical(spec: str, kind: str | None = None) -> str:
    fault, param = parse(spec, kind)
    return f"{fault.name}:{param}" if param else fault.name
