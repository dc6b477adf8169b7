"""`runbook sandbox up [--fresh] | down | status [--json] | fault NAME | fault --list | heal`.

Exit codes: 0 done / all healthy, 1 a component is unhealthy or a step
failed, 2 usage error (unknown fault, bad arguments).

Example::

    >>> main(["fault", "--list"])        # doctest: +ELLIPSIS, +NORMALIZE_WHITESPACE
    bad-deploy
    ...
    ci-red
        Add a newest failed CI run on main ...
    0
"""

from __future__ import annotations

import argparse
import json
import sys
import textwrap
import time
from collections.abc import Callable
from typing import Any, Protocol

from runbook.rehearsal.faults import UnknownFault, listing
from runbook.rehearsal.target import RehearsalError
from runbook.sandbox.manager import Sandbox


class Target(Protocol):
    """What `runbook sandbox` and `runbook twin` both drive: the sandbox or the twin."""

    def status(self) -> list[dict[str, Any]]: ...

    def fault(self, name: str) -> str: ...

    def heal(self) -> list[str]: ...


def add_target_commands(
    sub: argparse._SubParsersAction[argparse.ArgumentParser],
    *,
    up_help: str,
    fresh_help: str,
    down_help: str,
) -> argparse.ArgumentParser:
    """The subcommands both CLIs share (up, down, status, fault, heal); returns `up`'s parser."""
    up = sub.add_parser("up", help=up_help)
    up.add_argument("--fresh", action="store_true", help=fresh_help)
    sub.add_parser("down", help=down_help)
    st = sub.add_parser("status", help="every component; non-zero exit if one is unhealthy")
    st.add_argument("--json", action="store_true")
    f = sub.add_parser("fault", help="apply a fault by name")
    f.add_argument("name", nargs="?")
    f.add_argument("--list", action="store_true", help="list the known faults")
    sub.add_parser("heal", help="undo every active fault")
    return up


def list_faults(args: argparse.Namespace) -> int | None:
    """`fault --list` (or `fault` alone, a usage error): the one registry, for both
    `runbook sandbox` and `runbook twin`, a fault one target cannot do marked so; else None."""
    if args.cmd != "fault" or (args.name and not args.list):
        return None
    for f in listing():
        print(f"{f.usage}  ({f.only})" if f.only else f.usage)
        print(textwrap.fill(f.description, 78, initial_indent="    ", subsequent_indent="    "))
    return 0 if args.list else 2


def run_common(args: argparse.Namespace, target: Target) -> int | None:
    """status, fault NAME and heal, the same on both targets; None for any other command."""
    if args.cmd == "status":
        rows = target.status()
        print(json.dumps(rows, indent=2) if args.json else table(rows))
        return 0 if all(r["healthy"] for r in rows) else 1
    if args.cmd == "fault":
        print(target.fault(args.name))
        return 0
    if args.cmd == "heal":
        healed = target.heal()
        print(f"healed: {', '.join(healed)}" if healed else "no active faults")
        return 0
    return None


def _parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog="runbook sandbox", description="The disposable Dealix server (see sandbox/README.md)."
    )
    p.add_argument("--dir", help="state dir (default: $RUNBOOK_SANDBOX_DIR or <project>/.sandbox)")
    sub = p.add_subparsers(dest="cmd", required=True)
    up = add_target_commands(
        sub,
        up_help="build and start (idempotent)",
        fresh_help="down, wipe the state dir, then up",
        down_help="stop everything; no process is left behind",
    )
    up.add_argument(
        "--isolated",
        action="store_true",
        help="root only: SSH, firewall and fail2ban in a network namespace (lib/runbook/sandbox/isolated.py)",
    )
    return p


def guarded(
    command: Callable[[], int], usage_error: type[Exception], failure: type[Exception]
) -> int:
    """Run `command`; a usage error (unknown fault) exits 2, a failed step 1, with the message."""
    try:
        return command()
    except usage_error as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    except failure as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 1


def table(rows: list[dict[str, object]]) -> str:
    """`status` as aligned lines: ok/FAIL, the component, its detail."""
    width = max(len(str(r["name"])) for r in rows)
    return "\n".join(
        f"{'ok  ' if r['healthy'] else 'FAIL'}  {r['name']!s:<{width}}  {r['detail']}" for r in rows
    )


def main(argv: list[str]) -> int:
    args = _parser().parse_args(argv)
    sb = Sandbox(args.dir, echo=lambda line: print(line, flush=True))
    return guarded(lambda: _run(args, sb), UnknownFault, RehearsalError)


def _run(args: argparse.Namespace, sb: Sandbox) -> int:
    if args.cmd == "up":
        t0 = time.monotonic()
        state = sb.up(fresh=args.fresh)
        if args.isolated:
            from runbook.sandbox import isolated

            iso = isolated.up(sb)
            state = sb.state
            print(
                f"isolated: ssh root@{iso['server_ip']} (port 22, namespace {iso['server_ns']}, "
                f"firewall + fail2ban; Postgres, Redis, API, nginx inside); outside client: "
                f"namespace {iso['outside_ns']} "
                f"({iso['outside_ip']})"
            )
        print(
            f"sandbox up in {time.monotonic() - t0:.1f} s: {state['base_url']} "
            f"(ssh {state['ssh_user']}@127.0.0.1 -p {state['ssh_port']}); "
            f"state in {sb.layout.state_file}"
        )
        return 0
    if args.cmd == "down":
        sb.down()
        return 0
    listed = list_faults(args)
    if listed is not None:
        return listed
    code = run_common(args, sb)
    return 2 if code is None else code
