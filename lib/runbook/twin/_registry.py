"""The twin's fault registry: `Fault`, `register`, `get`, `registry`.

A module of its own so that the scenario fault modules (faults_deploy,
faults_incidents, ...) can register without importing `faults`, which
imports them.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import TYPE_CHECKING

from runbook.twin.common import TwinError

if TYPE_CHECKING:
    from runbook.twin.instance import Twin


class UnknownFault(TwinError):
    pass


@dataclass(frozen=True)
class Fault:
    name: str
    description: str
    apply: Callable[[Twin], str]
    heal: Callable[[Twin], None]


_REGISTRY: dict[str, Fault] = {}


def register(fault: Fault) -> Fault:
    _REGISTRY[fault.name] = fault
    return fault


def says(action: Callable[[Twin], object], said: str) -> Callable[[Twin], str]:
    """`action` as a fault's apply, which returns what it did in one line."""

    def go(t: Twin) -> str:
        action(t)
        return said

    return go


def registry() -> list[Fault]:
    return list(_REGISTRY.values())


def get(name: str) -> Fault:
    if name not in _REGISTRY:
        raise UnknownFault(
            "fault",
            f"unknown fault {name!r}; known: {', '.join(_REGISTRY)} (runbook twin fault --list)",
        )
    return _REGISTRY[name]
