"""The inventory: which hosts a profile names, in which groups, with which variables.

A profile may hold an `inventory:` block (parameters/production-fleet.yaml)::

    inventory:
      vars: {}                        # every host's variables
      hosts:                          # every machine once
        lb1:  {address: 10.0.0.10, host_key: ["ssh-ed25519 AAAA..."]}
        api1: {address: 10.0.0.11, host_key: [...], rank: 1}
        api2: {address: 10.0.0.12, host_key: [...], rank: 2, vars: {weight: 2}}
        db1:  {address: 10.0.0.20, host_key: [...]}
      groups:                         # which machines play which role
        lb:    {hosts: [lb1]}
        api:   {hosts: [api1, api2], vars: {drain_seconds: 10}}
        db:    {hosts: [db1]}
        redis: {hosts: [db1]}          # Redis beside PostgreSQL

Each host's `port`, `user` and `key` default to the profile's `target`; its pinned
host key (`host_key` lines, or a `known_hosts` file) is its own and never inherited.
A profile without `inventory:` (every single-host profile) reads as a fleet of one:
`target` is the one host, in every role group. `load_profile` refuses, before
anything runs and with the fix named: a host without a pinned key, a host in two
role groups where that is not allowed, two hosts at one address and port, a group
naming an unknown host, a host in no group, two groups giving one host different
values for a variable. `Fleet.require_groups(...)` refuses an empty group a
scenario needs.

Example::

    >>> one = Fleet.of_one(name="188.245.55.180", address="188.245.55.180", port=22,
    ...                    user="root", key=None, host_key=["ssh-ed25519 AAAA"])
    >>> one.names("api"), one.names("lb"), one.is_single
    (['188.245.55.180'], ['188.245.55.180'], True)
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from typing import Any

from runbook.errors import ParameterError

# The groups the scenarios know. Other group names (canary, eu, ...) are allowed and
# may overlap freely: they are labels. These four are roles.
ROLE_GROUPS = ("lb", "api", "db", "redis")
# Role groups that may share a host in a fleet of several hosts, and why. Any other
# pair is refused: a rolling deploy restarts API hosts one at a time and drains each
# from the load balancer, so a host that is also the load balancer or the database
# would take the whole service down with it.
SHARED_ROLES: dict[frozenset[str], str] = {
    frozenset({"db", "redis"}): "Redis beside PostgreSQL, as on today's single server",
}
_NAME = re.compile(r"[A-Za-z0-9][A-Za-z0-9_.-]*")


@dataclass(frozen=True)
class InventoryHost:
    """One machine as the profile states it (defaults filled later from `target`)."""

    address: str
    port: int | None = None
    user: str | None = None
    key: str | None = None
    host_key: list[str] = field(default_factory=list)
    known_hosts: str | None = None
    rank: int | None = None
    vars: dict[str, Any] = field(default_factory=dict)


@dataclass(frozen=True)
class InventoryGroup:
    hosts: list[str] = field(default_factory=list)
    vars: dict[str, Any] = field(default_factory=dict)


@dataclass(frozen=True)
class Inventory:
    """`inventory:` in a profile, as written (validated by `build_fleet`)."""

    hosts: dict[str, InventoryHost] = field(default_factory=dict)
    groups: dict[str, InventoryGroup] = field(default_factory=dict)
    vars: dict[str, Any] = field(default_factory=dict)


@dataclass(frozen=True)
class Host:
    """One host of the fleet, ready to connect to: every default filled in."""

    name: str
    address: str
    port: int
    user: str
    key: str | None
    host_key: list[str]
    known_hosts: str | None
    rank: int | None
    groups: tuple[str, ...]
    vars: dict[str, Any]


@dataclass(frozen=True)
class Fleet:
    """The hosts of a profile by name, and its groups (each in rank order)."""

    hosts: dict[str, Host]
    groups: dict[str, list[str]]
    source: str = ""

    @classmethod
    def of_one(
        cls,
        *,
        name: str,
        address: str,
        port: int,
        user: str,
        key: str | None,
        host_key: list[str],
        known_hosts: str | None = None,
        source: str = "",
    ) -> Fleet:
        """A single-host profile: its target is the one host, in every role group."""
        host = Host(
            name=name,
            address=address,
            port=port,
            user=user,
            key=key,
            host_key=list(host_key),
            known_hosts=known_hosts,
            rank=None,
            groups=ROLE_GROUPS,
            vars={},
        )
        return cls({name: host}, {g: [name] for g in ROLE_GROUPS}, source)

    @property
    def is_single(self) -> bool:
        return len(self.hosts) == 1

    def names(self, group: str) -> list[str]:
        """The hosts of `group` in rank order (unranked last, then as listed); [] if none."""
        return list(self.groups.get(group, []))

    def group(self, group: str) -> list[Host]:
        return [self.hosts[n] for n in self.names(group)]

    def require_groups(self, *groups: str, scenario: str = "this scenario") -> None:
        """Refuse, before anything runs, when a group `scenario` needs is empty or missing."""
        empty = [g for g in groups if not self.groups.get(g)]
        if not empty:
            return
        have = ", ".join(f"{g} ({len(h)})" for g, h in self.groups.items()) or "none"
        raise ParameterError(
            f"{scenario} needs at least one host in group(s) {', '.join(empty)}, and "
            f"{self.source or 'the profile'} has none there (groups: {have})",
            key=f"inventory.groups.{empty[0]}",
            source=self.source,
            fix=f"list a host under inventory.groups.{empty[0]}.hosts "
            "(docs/inventory.md), or run it with a profile that has one",
        )


def build_fleet(inv: Inventory, defaults: Any, source: str) -> Fleet:
    """Validate `inv` and fill each host's port/user/key from `defaults` (the profile's
    target). Every refusal is a ParameterError naming the key and the fix."""

    def refuse(message: str, key: str, fix: str) -> ParameterError:
        return ParameterError(f"{message} in {source}", key=key, source=source, fix=fix)

    if not inv.hosts:
        raise refuse(
            "inventory has no hosts",
            "inventory.hosts",
            "name each machine under inventory.hosts (address, host_key), or remove "
            "inventory: to keep a single-host profile",
        )
    for name, h in inv.hosts.items():
        if not _NAME.fullmatch(name):
            raise refuse(
                f"host name {name!r} is not valid",
                f"inventory.hosts.{name}",
                "use letters, digits, '.', '_' or '-' (e.g. api1)",
            )
        if not h.address:
            raise refuse(
                f"inventory.hosts.{name} has no address",
                f"inventory.hosts.{name}.address",
                "give its IP address or DNS name",
            )
        if not h.host_key and not h.known_hosts:
            port = h.port or defaults.port
            scan = f"ssh-keyscan{f' -p {port}' if port != 22 else ''} -t ed25519 {h.address}"
            raise refuse(
                f"inventory.hosts.{name} has no pinned host key (the runbook never trusts "
                "whoever answers)",
                f"inventory.hosts.{name}.host_key",
                f"from a trusted channel: {scan} > /tmp/hostkey; ssh-keygen -lf /tmp/hostkey "
                "(compare with the provider's console), then paste the "
                f'"ssh-ed25519 AAAA..." part under inventory.hosts.{name}.host_key (or name a '
                f"pinned known_hosts file in inventory.hosts.{name}.known_hosts)",
            )
    seen: dict[tuple[str, int], str] = {}
    for name, h in inv.hosts.items():
        where = (h.address, h.port or defaults.port)
        if where in seen:
            raise refuse(
                f"inventory.hosts.{seen[where]} and inventory.hosts.{name} are both "
                f"{where[0]} port {where[1]}",
                f"inventory.hosts.{name}.address",
                "one machine is one host: list it once and put that name in every group it "
                "belongs to (a second sshd on the machine needs its own port)",
            )
        seen[where] = name

    groups_of: dict[str, list[str]] = {n: [] for n in inv.hosts}
    for g, grp in inv.groups.items():
        if not _NAME.fullmatch(g):
            raise refuse(
                f"group name {g!r} is not valid",
                f"inventory.groups.{g}",
                "use letters, digits, '.', '_' or '-' (lb, api, db, redis, ...)",
            )
        for n in grp.hosts:
            if n not in inv.hosts:
                raise refuse(
                    f"inventory.groups.{g} lists {n!r}, which is not under inventory.hosts",
                    f"inventory.groups.{g}.hosts",
                    f"add {n} under inventory.hosts (address, host_key) or fix the name "
                    f"(hosts: {', '.join(inv.hosts)})",
                )
            if g in groups_of[n]:
                raise refuse(
                    f"inventory.groups.{g} lists {n!r} twice",
                    f"inventory.groups.{g}.hosts",
                    "list each host once per group",
                )
            groups_of[n].append(g)
    lonely = [n for n, gs in groups_of.items() if not gs]
    if lonely:
        raise refuse(
            f"inventory.hosts.{lonely[0]} is in no group",
            f"inventory.hosts.{lonely[0]}",
            f"add {lonely[0]} to the group(s) it serves (lb, api, db, redis) or remove it",
        )
    if len(inv.hosts) > 1:
        for n, gs in groups_of.items():
            roles = [g for g in gs if g in ROLE_GROUPS]
            for i, a in enumerate(roles):
                for b in roles[i + 1 :]:
                    if frozenset({a, b}) not in SHARED_ROLES:
                        allowed = "; ".join(
                            f"{'+'.join(sorted(pair))} ({why})"
                            for pair, why in SHARED_ROLES.items()
                        )
                        raise refuse(
                            f"host {n!r} is in groups {a} and {b}: in a fleet of several "
                            "hosts a host has one role (a rolling deploy drains and restarts "
                            "API hosts one by one, and must not take the load balancer or "
                            "the database with them)",
                            f"inventory.groups.{b}.hosts",
                            f"give {b} its own host, or keep {n} in one of them. Allowed to "
                            f"share a host: {allowed}; and a single host in every group "
                            "(a fleet of one)",
                        )

    hosts: dict[str, Host] = {}
    for n, h in inv.hosts.items():
        merged = dict(inv.vars)
        from_group: dict[str, tuple[str, Any]] = {}
        for g in groups_of[n]:
            for k, v in inv.groups[g].vars.items():
                if k in from_group and from_group[k][1] != v and k not in h.vars:
                    raise refuse(
                        f"host {n!r} gets {k}={from_group[k][1]!r} from group "
                        f"{from_group[k][0]} and {k}={v!r} from group {g}",
                        f"inventory.hosts.{n}.vars.{k}",
                        f"set {k} under inventory.hosts.{n}.vars (a host's own value wins), "
                        "or make the groups agree",
                    )
                from_group.setdefault(k, (g, v))
        merged.update({k: v for k, (_g, v) in from_group.items()})
        merged.update(h.vars)
        hosts[n] = Host(
            name=n,
            address=h.address,
            port=h.port or defaults.port,
            user=h.user or defaults.user,
            key=h.key or defaults.key,
            host_key=list(h.host_key),
            known_hosts=h.known_hosts,
            rank=h.rank,
            groups=tuple(groups_of[n]),
            vars=merged,
        )
    order = {n: i for i, n in enumerate(inv.hosts)}
    groups = {
        g: sorted(
            grp.hosts,
            key=lambda n: (hosts[n].rank is None, hosts[n].rank or 0, order[n]),
        )
        for g, grp in inv.groups.items()
    }
    return Fleet(hosts, groups, source)
