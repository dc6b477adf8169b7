"""The `runbook` command line.

runbook sandbox up | down | status | fault NAME | fault --list | heal
runbook twin up | down | status | fault NAME | fault --list | heal | exec -- CMD  (root)
runbook run SCENARIO [--env ENV] [-p NAME VALUE ...] [--dry-run] [--confirm ENV]
            [--approved-by NAME] [--break-stale-lock]
runbook list
runbook verify RUN_DIR | --chain [OUTPUTS]
runbook history [--scenario S] [--env E] [--since DATE] [--format table|csv|json] [--plot FILE]
runbook postmortem RUN_DIR
runbook seal RUN_DIR            (seal a plain papermill run: HTML, manifest, chain)
"""

from __future__ import annotations

import argparse
import sys

from runbook.errors import ParameterError


def main(argv: list[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    # nbformat -> jsonschema imports rfc3987_syntax (an optional IRI format checker)
    # when installed, and it builds a grammar at import: ~0.9 s of every `runbook run`.
    # No notebook schema uses IRI formats; jsonschema skips the checker without it.
    sys.modules.setdefault("rfc3987_syntax", None)  # type: ignore[arg-type]
    if argv and argv[0] == "sandbox":
        from runbook.sandbox.cli import main as sandbox_main

        return sandbox_main(argv[1:])
    if argv and argv[0] == "twin":
        from runbook.twin.cli import main as twin_main

        return twin_main(argv[1:])
    parser = argparse.ArgumentParser(prog="runbook", description=__doc__.splitlines()[0])
    sub = parser.add_subparsers(dest="command", required=True)
    sub.add_parser("sandbox", help="the disposable stand-in server (runbook sandbox --help)")
    sub.add_parser("twin", help="the production twin, root only (runbook twin --help)")
    p_run = sub.add_parser("run", help="run a scenario notebook headless into its evidence folder")
    p_run.add_argument("scenario")
    p_run.add_argument("--env", default=None, help="environment profile (default: sandbox)")
    p_run.add_argument(
        "-p", "--parameter", nargs=2, action="append", default=[], metavar=("NAME", "VALUE")
    )
    p_run.add_argument("--dry-run", action="store_true")
    p_run.add_argument("--confirm", metavar="ENV", help="confirm changes on ENV (headless)")
    p_run.add_argument("--approved-by", metavar="NAME")
    p_run.add_argument(
        "--break-stale-lock",
        action="store_true",
        help="break the host lock of a run that died (its heartbeat is stale); recorded",
    )
    p_run.add_argument("--timeout", type=float, default=None, help="per-cell timeout, seconds")
    sub.add_parser("list", help="the scenarios and their parameters")
    _add_evidence_commands(sub)
    args = parser.parse_args(argv)
    if args.command in ("verify", "history", "postmortem", "seal"):
        from runbook.cli.evidence import run_command

        return run_command(args)

    from runbook.cli import run as runner

    if args.command == "list":
        from runbook.core.catalog import list_text
        from runbook.core.paths import notebooks_dir

        print(list_text(sorted(notebooks_dir().glob("*.ipynb"))))
        return 0
    params = {name: runner.parse_value(value) for name, value in args.parameter}
    for flag, name in (("env", "env"), ("confirm", "confirm"), ("approved_by", "approved_by")):
        value = getattr(args, flag)
        if value is not None:
            params[name] = value
    if args.dry_run:
        params["dry_run"] = True
    if args.break_stale_lock:
        params["break_stale_lock"] = True
    try:
        code, _ = runner.run(args.scenario, params, timeout=args.timeout)
    except ParameterError as exc:
        print(f"runbook: {exc}", file=sys.stderr)
        return runner.EXIT["parameters"]
    return code


def _add_evidence_commands(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("verify", help="check a run folder against its manifest, or the chain")
    p.add_argument("run_dir", nargs="?", help="run folder (or, with --chain, the outputs folder)")
    p.add_argument("--chain", action="store_true", help="check <outputs>/CHAIN and every run")
    p = sub.add_parser("history", help="every record under outputs/, as a table, CSV or JSON")
    p.add_argument("--scenario")
    p.add_argument("--env")
    p.add_argument("--since", metavar="DATE", help="e.g. 2026-01-01")
    p.add_argument("--format", choices=("table", "csv", "json"), default="table")
    p.add_argument("--plot", metavar="FILE", help="PNG: drills and rollbacks against targets")
    p.add_argument("--outputs", metavar="DIR", help="default: $RUNBOOK_OUTPUTS or outputs/")
    p = sub.add_parser("postmortem", help="a docs/incidents draft from a run folder")
    p.add_argument("run_dir")
    p = sub.add_parser("seal", help="seal a run folder (plain papermill runs): HTML, manifest")
    p.add_argument("run_dir")


if __name__ == "__main__":
    sys.exit(main())
