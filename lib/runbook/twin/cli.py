"""`runbook twin build | up [--fresh] | down | status [--json] | fault NAME | fault --list
| heal | exec -- CMD ...`: the production twin, with `runbook sandbox`'s vocabulary.

Exit codes: 0 done / all healthy, 1 a component is unhealthy or a step failed (not
root, nspawn missing: the message says what to install or how to run), 2 usage
error (unknown fault, bad arguments). `exec` exits with CMD's own code.

Example::

    >>> main(["fault", "--list"])        # doctest: +ELLIPSIS, +NORMALIZE_WHITESPACE
    postgres-down
    ...
    0
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import textwrap
import time

from runbook.twin import faults
from runbook.twin.common import TwinError, require_root_and_tools
from runbook.twin.instance import Twin


def _parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog="runbook twin",
        description="The production twin: a systemd-booted Debian 12 server (root only).",
    )
    p.add_argument("--dir", help="state dir (default: $RUNBOOK_TWIN_DIR or <project>/.twin)")
    sub = p.add_subparsers(dest="cmd", required=True)
    sub.add_parser(
        "build",
        help="build or refresh the cached OS and app layers only, boot nothing "
        "(CI starts it early, beside the sandbox tests)",
    )
    up = sub.add_parser("up", help="build (cached layers) and boot; idempotent")
    up.add_argument("--fresh", action="store_true", help="down first, then a new instance")
    sub.add_parser("down", help="stop and remove the instance; nothing is left behind")
    st = sub.add_parser("status", help="every component; non-zero exit if one is unhealthy")
    st.add_argument("--json", action="store_true")
    f = sub.add_parser("fault", help="apply a fault by name")
    f.add_argument("name", nargs="?")
    f.add_argument("--list", action="store_true", help="list the known faults")
    sub.add_parser("heal", help="undo every active fault")
    ex = sub.add_parser(
        "exec",
        help="run CMD with the twin's names (api.dealix.me, the SaaS) and CA "
        "(private mount namespace; the machine's /etc/hosts is untouched)",
    )
    ex.add_argument("command", nargs=argparse.REMAINDER)
    return p


def _table(rows: list[dict[str, object]]) -> str:
    width = max(len(str(r["name"])) for r in rows)
    return "\n".join(
        f"{'ok  ' if r['healthy'] else 'FAIL'}  {r['name']!s:<{width}}  {r['detail']}" for r in rows
    )


def main(argv: list[str]) -> int:
    args = _parser().parse_args(argv)
    twin = Twin(args.dir, echo=lambda line: print(line, flush=True))
    try:
        if args.cmd == "fault" and (args.list or not args.name):
            for fault in faults.registry():
                print(fault.name)
                print(
                    textwrap.fill(
                        fault.description, 78, initial_indent="    ", subsequent_indent="    "
                    )
                )
            return 0 if args.list else 2
        require_root_and_tools()
        if args.cmd == "build":
            from runbook.twin.build import ensure_layers

            t0 = time.monotonic()
            layers = ensure_layers(echo=lambda line: print(line, flush=True))
            print(
                f"twin layers ready in {time.monotonic() - t0:.1f} s: "
                f"os {layers.os_key}, app {layers.app_key}"
            )
            return 0
        if args.cmd == "up":
            t0 = time.monotonic()
            st = twin.up(fresh=args.fresh)
            print(
                f"twin up in {time.monotonic() - t0:.1f} s: ssh root@{st['host']} "
                f"(host key {st['host_key_fingerprint']}), {st['base_url']} via "
                f"`runbook twin exec`; internet {st['internet_ip']}; state in {twin.state_file}"
            )
            return 0
        if args.cmd == "down":
            t0 = time.monotonic()
            done = twin.down()
            stopped = ", ".join(f"{k} ({v})" for k, v in done.get("stopped", {}).items())
            print(
                f"twin down in {time.monotonic() - t0:.1f} s"
                + (f": {stopped}" if stopped else ": nothing was running")
            )
            return 0
        if args.cmd == "status":
            rows = twin.status()
            print(json.dumps(rows, indent=2) if args.json else _table(rows))
            return 0 if all(r["healthy"] for r in rows) else 1
        if args.cmd == "fault":
            print(twin.fault(args.name))
            return 0
        if args.cmd == "heal":
            healed = twin.heal()
            print(f"healed: {', '.join(healed)}" if healed else "no active faults")
            return 0
        if args.cmd == "exec":
            cmd = args.command[1:] if args.command[:1] == ["--"] else args.command
            if not cmd:
                print(
                    "error: runbook twin exec -- CMD [ARGS...]: name the command to run",
                    file=sys.stderr,
                )
                return 2
            argv_, env = twin.exec_argv(cmd)
            os.execvpe(argv_[0], argv_, env)  # noqa: S606 (argv from exec_argv, no shell)
    except faults.UnknownFault as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    except TwinError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 1
    return 2
