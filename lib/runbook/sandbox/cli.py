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

from runbook.sandbox.faults import UnknownFault
from runbook.sandbox.manager import Sandbox
from runbook.sandbox.procs import SandboxError


def _parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog="runbook sandbox", description="The disposable Dealix server (see sandbox/README.md)."
    )
    p.add_argument("--dir", help="state dir (default: $RUNBOOK_SANDBOX_DIR or <project>/.sandbox)")
    sub = p.add_subparsers(dest="cmd", required=True)
    up = sub.add_parser("up", help="build and start (idempotent)")
    up.add_argument("--fresh", action="store_true", help="down, wipe the state dir, then up")
    up.add_argument(
        "--isolated",
        action="store_true",
        help="root only: SSH, firewall and fail2ban in a network namespace (lib/runbook/sandbox/isolated.py)",
    )
    sub.add_parser("down", help="stop everything; no process is left behind")
    st = sub.add_parser("status", help="every component; non-zero exit if one is unhealthy")
    st.add_argument("--json", action="store_true")
    f = sub.add_parser("fault", help="apply a fault by name")
    f.add_argument("name", nargs="?")
    f.add_argument("--list", action="store_true", help="list the known faults")
    sub.add_parser("heal", help="undo every active fault")
    return p


def _table(rows: list[dict[str, object]]) -> str:
    width = max(len(str(r["name"])) for r in rows)
    lines = []
    for r in rows:
        mark = "ok  " if r["healthy"] else "FAIL"
        lines.append(f"{mark}  {r['name']!s:<{width}}  {r['detail']}")
    return "\n".join(lines)


def main(argv: list[str]) -> int:
    args = _parser().parse_args(argv)
    sb = Sandbox(args.dir, echo=lambda line: print(line, flush=True))
    try:
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
        if args.cmd == "status":
            rows = sb.status()
            print(json.dumps(rows, indent=2) if args.json else _table(rows))
            return 0 if all(r["healthy"] for r in rows) else 1
        if args.cmd == "fault":
            if args.list or not args.name:
                for fault in Sandbox.fault_registry():
                    print(f"{fault.usage}")
                    print(
                        textwrap.fill(
                            fault.description, 78, initial_indent="    ", subsequent_indent="    "
                        )
                    )
                return 0 if args.list else 2
            print(sb.fault(args.name))
            return 0
        if args.cmd == "heal":
            healed = sb.heal()
            print(f"healed: {', '.join(healed)}" if healed else "no active faults")
            return 0
    except UnknownFault as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    except SandboxError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 1
    return 2
