"""`runbook twin build | up [--fresh] | down | status [--json] | fault NAME | fault --list
| heal | exec -- CMD ...`: the production twin, with `runbook sandbox`'s vocabulary.
`--fleet` on up, down, status, exec, fault and heal: the fleet twin instead
(lib/runbook/twin/fleet.py; its faults: runbook.twin.fleet_faults).

Exit codes: 0 done / all healthy, 1 a component is unhealthy or a step failed (not
root, nspawn missing: the message says what to install or how to run), 2 usage
error (unknown fault, bad arguments). `exec` exits with CMD's own code.

Example::

    >>> main(["fault", "--list"])        # doctest: +ELLIPSIS, +NORMALIZE_WHITESPACE
    bad-deploy
    ...
    cluster-corrupt  (twin only)
    ...
    0
"""

from __future__ import annotations

import argparse
import os
import sys
import time

from runbook.rehearsal.faults import UnknownFault
from runbook.rehearsal.target import RehearsalError
from runbook.sandbox.cli import add_target_commands, guarded, list_faults, run_common
from runbook.twin.common import require_root_and_tools
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
    add_target_commands(
        sub,
        up_help="build (cached layers) and boot; idempotent",
        fresh_help="down first, then a new instance",
        down_help="stop and remove the instance; nothing is left behind",
    )
    ex = sub.add_parser(
        "exec",
        help="run CMD with the twin's names (api.dealix.me, the SaaS) and CA "
        "(private mount namespace; the machine's /etc/hosts is untouched)",
    )
    ex.add_argument("command", nargs=argparse.REMAINDER)
    for name in ("up", "down", "status", "exec", "fault", "heal"):
        sub.choices[name].add_argument(
            "--fleet",
            action="store_true",
            help="the fleet twin (lib/runbook/twin/fleet.py): load balancer, two API servers, "
            "database server; state in $RUNBOOK_TWIN_FLEET_DIR or <project>/.twin-fleet",
        )
    return p


def main(argv: list[str]) -> int:
    args = _parser().parse_args(argv)
    echo = lambda line: print(line, flush=True)  # noqa: E731
    if getattr(args, "fleet", False):
        from runbook.twin.fleet import Fleet

        twin: Twin = Fleet(args.dir, echo=echo)
    else:
        twin = Twin(args.dir, echo=echo)
    return guarded(lambda: _run(args, twin), UnknownFault, RehearsalError)


def _run(args: argparse.Namespace, twin: Twin) -> int:
    # the list needs no root: it is the registry, not the twin
    listed = list_faults(args)
    if listed is not None:
        return listed
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
        if st.get("kind") == "fleet":
            print(
                f"fleet twin up in {time.monotonic() - t0:.1f} s: "
                + ", ".join(
                    f"{n} {h['address']} ({'+'.join(h['groups'])})" for n, h in st["hosts"].items()
                )
                + f"; {st['base_url']} through {st['lb_host']} via `runbook twin exec --fleet`; "
                f"profile twin-fleet; state in {twin.state_file}"
            )
            return 0
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
            ("fleet twin" if getattr(args, "fleet", False) else "twin")
            + f" down in {time.monotonic() - t0:.1f} s"
            + (f": {stopped}" if stopped else ": nothing was running")
        )
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
    code = run_common(args, twin)
    return 2 if code is None else code
