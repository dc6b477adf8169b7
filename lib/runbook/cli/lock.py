"""`runbook lock --env ENV`: who holds each lock of an environment, read-only.

One line per host (its host lock: free, or held by which run, operator and
since when, with the heartbeat's age) and, on a fleet, one for the environment
lock on its designated host (runbook.session.fleet: the first db host). Each
host is asked over its own pinned connection, all at once; nothing is changed
and no evidence folder is made. Exit 0, or 1 when a host could not be asked.

    $ runbook lock --env production-fleet
    environment lock  db1   free
    lb1               host lock /var/lock/dealix-runbook  free
    api1              host lock /var/lock/dealix-runbook  held by deploy run 3f2a...
"""

from __future__ import annotations

import argparse
import contextlib
from concurrent.futures import ThreadPoolExecutor
from typing import Any

from runbook.core.profile import Profile, load_profile
from runbook.errors import ParameterError, RunbookError
from runbook.safety.lock import describe_holder, holder_command, parse_holder
from runbook.session.fleet import environment_lock_host

ENVIRONMENT_SUFFIX = ".environment"


def _ask(profile: Profile, host: str, paths: list[str]) -> dict[str, str]:
    """Each lock path's holder on `host`, in words (or why it could not be asked)."""
    from runbook.core.transport import transport_for_host

    out: dict[str, str] = {}
    transport = transport_for_host(profile, host)
    try:
        for path in paths:
            got: list[bytes] = []
            done = transport.execute(
                holder_command(path), on_stdout=got.append, on_stderr=lambda _b: None, timeout=20
            )
            text = b"".join(got).decode("utf-8", "replace")
            out[path] = (
                describe_holder(parse_holder(text))
                if done.exit_code == 0
                else f"could not read it (exit {done.exit_code})"
            )
    finally:
        with contextlib.suppress(Exception):
            transport.close()
    return out


def holders(profile: Profile) -> list[dict[str, Any]]:
    """One row per lock: kind, host, path, holder (in words), ok (the host answered)."""
    fleet = profile.fleet
    host_path = profile.app.lock_path
    env_host = environment_lock_host(fleet.hosts, fleet.groups) if not fleet.is_single else None
    env_path = host_path + ENVIRONMENT_SUFFIX

    def one(name: str) -> tuple[str, dict[str, str] | str]:
        paths = [host_path] + ([env_path] if name == env_host else [])
        try:
            return name, _ask(profile, name, paths)
        except (RunbookError, OSError) as exc:
            return name, f"unreachable: {type(exc).__name__}: {str(exc).splitlines()[0][:160]}"

    with ThreadPoolExecutor(max_workers=min(8, len(fleet.hosts))) as pool:
        answers = dict(pool.map(one, list(fleet.hosts)))
    rows: list[dict[str, Any]] = []
    if env_host is not None:
        got = answers[env_host]
        rows.append({
            "kind": "environment", "host": env_host, "path": env_path,
            "holder": got if isinstance(got, str) else got[env_path],
            "ok": not isinstance(got, str),
        })  # fmt: skip
    for name in fleet.hosts:
        got = answers[name]
        rows.append({
            "kind": "host", "host": name, "path": host_path,
            "holder": got if isinstance(got, str) else got[host_path],
            "ok": not isinstance(got, str),
        })  # fmt: skip
    return rows


def lines(rows: list[dict[str, Any]]) -> list[str]:
    width = max(len(r["host"]) for r in rows)
    out = []
    for r in rows:
        if r["kind"] == "environment":
            out.append(f"environment lock  {r['host']:<{width}}  {r['path']}  {r['holder']}")
        else:
            out.append(f"{r['host']:<{width}}  host lock {r['path']}  {r['holder']}")
    return out


def run_command(args: argparse.Namespace) -> int:
    try:
        profile = load_profile(args.env)
        rows = holders(profile)
    except ParameterError as exc:
        print(f"runbook: {exc}")
        return 2
    for line in lines(rows):
        print(line)
    return 0 if all(r["ok"] for r in rows) else 1
