"""What scenario 6 makes of what it read and did: pure, no Session, no server.

The logs are read by runbook.ops.logs and fail2ban by runbook.ops.fail2ban;
here they become tables (logins by address and user, admin API calls from
unknown addresses), the attackers, and the records each step keeps of what
it did (`Rotation`, `Lockdown`, `Preserved`) for the documents.

Example::

    >>> ssh_client_address("198.51.100.7 52144 10.0.0.2 22")
    '198.51.100.7'
    >>> lockdown_address("198.51.100.7", None)
    '198.51.100.7'
"""

from __future__ import annotations

import ipaddress
import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pandas as pd

from runbook.errors import Forbidden

#: the runbook's line a refused lockdown cites
SOURCE = "Scenario 6 step 2 (restrict SSH to your IP)"
ADMIN_PREFIX = "/api/v1/admin"
# The app's .env keys rotate_secrets.sh changes → the operator's secret variable names.
ROTATED = {"ADMIN_KEY": None, "WEBHOOK_SECRET": "DEALIX_WEBHOOK_SECRET"}


# ------------------------------------------------------------------ 1. rotation


@dataclass
class Rotation:
    """What the rotation did and proved (never the keys themselves)."""

    rotated: bool
    output: str
    old_accepted_before: int | None
    new_status: int | None
    old_status: int | None
    changed: bool
    operator_secrets_updated: str
    # per rotated .env key: "replaced", "added", "unchanged" or "missing" (never a value)
    keys: dict[str, str] = field(default_factory=dict)

    @property
    def proved(self) -> bool:
        """Rotated, the new admin key accepted and the old one refused."""
        return self.rotated and self.old_status == 401 and self.new_status == 200


def rotation_states(before: dict[str, str], after: dict[str, str]) -> dict[str, str]:
    """Each key the rotation must change, compared before/after; the values never leave here.

    >>> rotation_states({"ADMIN_KEY": "a", "WEBHOOK_SECRET": "w"},
    ...                 {"ADMIN_KEY": "b", "WEBHOOK_SECRET": "w"})
    {'ADMIN_KEY': 'replaced', 'WEBHOOK_SECRET': 'unchanged'}
    >>> rotation_states({}, {"ADMIN_KEY": "b"})
    {'ADMIN_KEY': 'added', 'WEBHOOK_SECRET': 'missing'}
    """
    out: dict[str, str] = {}
    for key in ROTATED:
        old, new = before.get(key), after.get(key)
        if not new:
            out[key] = "missing"
        elif old is None:
            out[key] = "added"
        else:
            out[key] = "replaced" if new != old else "unchanged"
    return out


def operator_values(admin_var: str, new_key: str, env: dict[str, str]) -> dict[str, str]:
    """The operator's secret variables → their new values, from the server's rotated .env.

    >>> operator_values("DEALIX_ADMIN_KEY", "k2", {"ADMIN_KEY": "k2", "WEBHOOK_SECRET": "w2"})
    {'DEALIX_ADMIN_KEY': 'k2', 'DEALIX_WEBHOOK_SECRET': 'w2'}
    """
    return {admin_var: new_key, **{v: env[k] for k, v in ROTATED.items() if v and k in env}}


# ------------------------------------------------------------------ 2. lockdown


def ssh_client_address(ssh_connection: str) -> str | None:
    """The client address from `$SSH_CONNECTION` ("client port server port").

    >>> ssh_client_address(""), ssh_client_address("not-an-ip 1 2 3")
    (None, None)
    """
    parts = ssh_connection.split()
    if len(parts) != 4:
        return None
    try:
        return str(ipaddress.ip_address(parts[0]))
    except ValueError:
        return None


def lockdown_address(
    seen: str | None, requested: str | None = None, *, override: bool = False
) -> str:
    """The address SSH may be restricted to; refuses one that would lock the operator out.

    `requested` defaults to `seen` (the address the server sees this
    connection come from). Another address is refused (rule
    `no-self-lockout`) unless `override` is True; the caller records the override.

    >>> lockdown_address("198.51.100.7", "192.0.2.10")
    Traceback (most recent call last):
    ...
    runbook.errors.Forbidden: refused by rule 'no-self-lockout': restrict SSH to 192.0.2.10 ...
    >>> lockdown_address("198.51.100.7", "192.0.2.10", override=True)
    '192.0.2.10'
    """
    if requested:
        try:
            requested = str(ipaddress.ip_address(requested.strip()))
        except ValueError:
            raise Forbidden(
                "no-self-lockout",
                f"restrict SSH to {requested!r}",
                source=SOURCE,
                why="not an IP address",
            ) from None
    if seen is None and not override:
        raise Forbidden(
            "no-self-lockout",
            f"restrict SSH to {requested or '(unknown)'}",
            source=SOURCE,
            why="cannot tell which address this connection comes from ($SSH_CONNECTION is "
            "empty: not an SSH session?); pass override_lockout_check=True only if you are sure",
        )
    target = requested or seen
    assert target is not None
    if target != seen and not override:
        raise Forbidden(
            "no-self-lockout",
            f"restrict SSH to {target}",
            source=SOURCE,
            why=f"the server sees this connection coming from {seen}; locking SSH to "
            f"another address would lock you out. Pass override_lockout_check=True to do "
            "it anyway (you keep only this connection and the revert timer)",
        )
    return target


@dataclass
class Lockdown:
    """What the lockdown did: whether the target has a firewall, the saved rules, the proofs."""

    available: bool
    target: str
    saved: str | None = None
    new_connection: str = ""
    outside_before: bool | None = None
    steps: list[dict[str, Any]] = field(default_factory=list)

    def table(self) -> pd.DataFrame:
        return pd.DataFrame(self.steps, columns=["step", "command", "result"])


# --------------------------------------------------------------- 3. investigate


def _to_second(times: pd.Series) -> pd.Series:
    """Times to the second: the sandbox's auth log has microseconds no reader needs
    (``08:36:18.902397+00:00`` in every cell of the table)."""
    return times.dt.floor("s") if pd.api.types.is_datetime64_any_dtype(times) else times


def login_summary(logins: pd.DataFrame, known: set[str]) -> pd.DataFrame:
    """Accepted and failed logins by address and user, first and last seen.

    >>> from runbook.ops.logs import parse_auth_log
    >>> df = parse_auth_log("Accepted publickey for root from 127.0.0.1 port 1 ssh2\\n" * 2)
    >>> login_summary(df, {"127.0.0.1"})[["address", "user", "accepted", "failed", "known"]]
         address  user  accepted  failed  known
    0  127.0.0.1  root         2       0   True
    """
    cols = ["address", "user", "accepted", "failed", "first_seen", "last_seen", "known"]
    if logins.empty:
        return pd.DataFrame(columns=cols)
    g = logins.groupby(["address", "user"], sort=True)
    out = pd.DataFrame(
        {
            "accepted": g["result"].apply(lambda r: int((r == "accepted").sum())),
            "failed": g["result"].apply(lambda r: int((r == "failed").sum())),
            "first_seen": _to_second(g["time"].min()),
            "last_seen": _to_second(g["time"].max()),
        }
    ).reset_index()
    out["known"] = out["address"].isin(known)
    out = out[cols].sort_values(["known", "accepted", "failed"], ascending=[True, False, False])
    return out.reset_index(drop=True)


def unexpected_admin_calls(requests: pd.DataFrame, known: set[str]) -> pd.DataFrame:
    """Admin API calls from addresses not known (the operator's and `known`), grouped.

    `granted` counts the calls the API answered below 400: from an unknown
    address that means a working admin key is in someone else's hands.
    """
    cols = ["address", "path", "calls", "granted", "refused", "first_seen", "last_seen", "why"]
    admin = requests[requests["path"].str.startswith(ADMIN_PREFIX)] if len(requests) else requests
    if admin.empty:
        return pd.DataFrame(columns=cols)
    admin = admin.assign(
        unknown=~admin["address"].isin(known), badkey=admin["key"].isin(["invalid"])
    )
    # An invalid key from a known address is the operator (this run proves the old
    # key is refused that way); from an unknown one it is probing.
    odd = admin[admin["unknown"]]
    if odd.empty:
        return pd.DataFrame(columns=cols)
    g = odd.groupby(["address", "path"], sort=True)
    out = pd.DataFrame(
        {
            "calls": g.size(),
            "granted": g["status"].apply(lambda st: int((st < 400).sum())),
            "refused": g["status"].apply(lambda st: int((st >= 400).sum())),
            "first_seen": g["time"].min(),
            "last_seen": g["time"].max(),
            "unknown": g["unknown"].any(),
            "badkey": g["badkey"].any(),
        }
    ).reset_index()
    out["why"] = [
        ", ".join(
            w
            for w, on in (("unknown address", u), ("invalid admin key", b), ("key worked", g > 0))
            if on
        )
        for u, b, g in zip(out["unknown"], out["badkey"], out["granted"], strict=True)
    ]
    return out[cols].sort_values(["granted", "calls"], ascending=False).reset_index(drop=True)


def parse_addresses(value: Any) -> list[str]:
    """`known_addresses` as a list, from a list or a string (`-p` passes strings).

    >>> parse_addresses('["192.0.2.10"]'), parse_addresses("192.0.2.1, 192.0.2.2"), parse_addresses(None)
    (['192.0.2.10'], ['192.0.2.1', '192.0.2.2'], [])
    """
    if value is None or value == "":
        return []
    if isinstance(value, str):
        words = re.split(r"[\s,\[\]\"']+", value)
    else:
        words = [str(v) for v in value]
    out = []
    for w in words:
        if w.strip():
            out.append(str(ipaddress.ip_address(w.strip())))
    return out


def is_loopback(address: str) -> bool:
    """>>> is_loopback("127.0.0.1"), is_loopback("::1"), is_loopback("-")
    (True, True, False)
    """
    try:
        return ipaddress.ip_address(address).is_loopback
    except ValueError:
        return False


@dataclass
class Findings:
    """The investigation's tables; `known` addresses are never flagged, never banned."""

    logins: pd.DataFrame
    summary: pd.DataFrame
    fail2ban: dict[str, Any] | None
    banned: pd.DataFrame
    admin_calls: pd.DataFrame
    known: set[str]

    @classmethod
    def of(
        cls,
        logins: pd.DataFrame,
        fail2ban: dict[str, Any] | None,
        requests: pd.DataFrame,
        operator: str | None,
        known: Any = None,
    ) -> Findings:
        """The findings from the auth log's logins, fail2ban's status and the API's requests.

        Known: the operator's address, `known` (`known_addresses`), and loopback
        (the server itself: nginx in front of the API, local health checks).
        """
        known_set = {a for a in [operator, *parse_addresses(known)] if a}
        known_set |= {a for a in set(logins["address"]) if is_loopback(a)}
        summary = login_summary(logins, known_set)
        banned = pd.DataFrame(
            [
                {"address": a, "authorized": a in known_set}
                for a in (fail2ban or {}).get("banned", [])
            ],
            columns=["address", "authorized"],
        )
        known_set |= {a for a in set(requests["address"]) if is_loopback(a)}
        calls = unexpected_admin_calls(requests, known_set)
        return cls(logins, summary, fail2ban, banned, calls, known_set)

    @property
    def attackers(self) -> list[str]:
        """Unknown addresses that logged in, failed to, or called the admin API."""
        found = (
            set(self.summary.loc[~self.summary["known"], "address"]) if len(self.summary) else set()
        )
        if len(self.admin_calls):
            found |= set(self.admin_calls["address"]) - self.known
        return sorted(found)

    @property
    def authorized_banned(self) -> list[str]:
        return (
            sorted(set(self.banned.loc[self.banned["authorized"], "address"]))
            if len(self.banned)
            else []
        )

    @property
    def granted(self) -> pd.DataFrame:
        """The admin calls the API granted to unknown addresses."""
        calls = self.admin_calls
        return calls[calls["granted"] > 0] if len(calls) else calls


def ban_outcome(
    attackers: list[str], authorized: list[str], banned_now: list[str]
) -> dict[str, list[str]]:
    """After banning: the attackers banned, those not banned, authorized addresses still banned.

    >>> ban_outcome(["203.0.113.5", "203.0.113.6"], ["192.0.2.1"], ["203.0.113.5", "192.0.2.1"])
    {'banned': ['203.0.113.5'], 'missing': ['203.0.113.6'], 'still': ['192.0.2.1']}
    """
    now = set(banned_now)
    return {
        "banned": sorted(set(attackers) & now),
        "missing": sorted(set(attackers) - now),
        "still": sorted(set(authorized) & now),
    }


# ------------------------------------------------------------------ 4. preserve


@dataclass
class Preserved:
    """The evidence tarball: where it is on the server, its hash, and the checked local copy."""

    remote: str | None
    sha256: str | None
    local: Path | None
    local_sha256: str | None
    size: int = 0
