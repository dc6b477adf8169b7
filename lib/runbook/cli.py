"""The `runbook` command line.

runbook sandbox up | down | status | fault NAME | fault --list | heal
runbook run SCENARIO [--env ENV] [-p NAME VALUE ...] [--dry-run] [--confirm ENV]
runbook list
"""

from __future__ import annotations

import argparse
import sys

from runbook.errors import ParameterError


def main(argv: list[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    if argv and argv[0] == "sandbox":
        from runbook.sandbox.cli import main as sandbox_main

        return sandbox_main(argv[1:])
    parser = argparse.ArgumentParser(prog="runbook", description=__doc__.splitlines()[0])
    sub = parser.add_subparsers(dest="command", required=True)
    sub.add_parser("sandbox", help="the disposable stand-in server (runbook sandbox --help)")
    p_run = sub.add_parser("run", help="run a scenario notebook headless into its evidence folder")
    p_run.add_argument("scenario")
    p_run.add_argument("--env", default=None, help="environment profile (default: sandbox)")
    p_run.add_argument(
        "-p", "--parameter", nargs=2, action="append", default=[], metavar=("NAME", "VALUE")
    )
    p_run.add_argument("--dry-run", action="store_true")
    p_run.add_argument("--confirm", metavar="ENV", help="confirm changes on ENV (headless)")
    p_run.add_argument("--approved-by", metavar="NAME")
    p_run.add_argument("--timeout", type=float, default=None, help="per-cell timeout, seconds")
    sub.add_parser("list", help="the scenarios and their parameters")
    args = parser.parse_args(argv)

    from runbook import runner

    if args.command == "list":
        from runbook.paths import notebooks_dir

        for nb in sorted(notebooks_dir().glob("*.ipynb")):
            declared = runner.declared_parameters(nb)
            params = ", ".join(f"{k}={v.get('default')}" for k, v in declared.items())
            print(f"{nb.stem:20s} {params}")
        return 0
    params = {name: runner.parse_value(value) for name, value in args.parameter}
    for flag, name in (("env", "env"), ("confirm", "confirm"), ("approved_by", "approved_by")):
        value = getattr(args, flag)
        if value is not None:
            params[name] = value
    if args.dry_run:
        params["dry_run"] = True
    try:
        code, _ = runner.run(args.scenario, params, timeout=args.timeout)
    except ParameterError as exc:
        print(f"runbook: {exc}", file=sys.stderr)
        return runner.EXIT["parameters"]
    return code


if __name__ == "__main__":
    sys.exit(main())
