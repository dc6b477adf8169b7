"""The `runbook` command line (layer 7): this module is the entry point (`runbook.cli:main`).

Its parts: runbook.cli.run (the notebook runner), runbook.cli.evidence
(verify, history, postmortem, seal), runbook.cli.lock (who holds each lock);
`runbook sandbox` is runbook.sandbox.cli.

runbook sandbox up | down | status | fault NAME | fault --list | heal
runbook twin up | down | status | fault NAME | fault --list | heal | exec -- CMD  (root)
runbook run SCENARIO [--env ENV] [-p NAME VALUE ...] [--dry-run] [--confirm ENV]
            [--approved-by NAME] [--break-stale-lock] [--parameters-dir DIR]
            [--notify URL ...] [--notify-when WHEN] [--ping URL ...]
runbook list
runbook lock [--env ENV]  (who holds each host lock, and a fleet's environment lock)
runbook notify SCENARIO [--env ENV] [--notify URL ...] [--ping URL ...] [--max-age MINUTES]
runbook schedule plan | serve --env ENV ... [--scenario NAME[=CRON] ...]  (Prefect 3 extra)
runbook verify RUN_DIR | --chain [OUTPUTS]
runbook history [--scenario S] [--env E] [--since DATE] [--format table|csv|json] [--plot FILE]
runbook postmortem RUN_DIR
runbook seal RUN_DIR [--notebook OUTPUT]  (seal a plain papermill run: HTML, manifest, chain)
"""

from __future__ import annotations

import argparse
import contextlib
import sys
from pathlib import Path

from runbook.core.redact import Redactor
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
    parser = build_parser()
    args = parser.parse_args(argv)
    problem = _use_parameters_dir(getattr(args, "parameters_dir", None))
    if problem:
        print(f"runbook: {problem}", file=sys.stderr)
        return 2
    if args.command == "resume":
        from runbook.cli.resume import main as resume_main

        return resume_main(args)
    if args.command == "notify":
        from runbook.cli.notify import run_command as notify_command

        return notify_command(args)
    if args.command == "lock":
        from runbook.cli.lock import run_command as lock_command

        return lock_command(args)
    if args.command == "schedule":
        from runbook.cli.schedule import run_command as schedule_command

        return schedule_command(args)
    if args.command in ("verify", "history", "postmortem", "seal"):
        from runbook.cli.evidence import run_command

        return run_command(args)

    from runbook.cli import run as runner

    if args.command == "list":
        print(list_scenarios())
        return 0
    params = run_parameters(args)
    try:
        code, _ = runner.run(
            args.scenario,
            params,
            timeout=args.timeout,
            notify=args.notify,
            ping=args.ping,
            notify_when=args.notify_when,
        )
    except ParameterError as exc:
        print(f"runbook: {exc}", file=sys.stderr)
        print(_refused_before_run(args.scenario, params, exc))
        for line in _tell_refused(args, params, exc):
            print(line, file=sys.stderr)
        return runner.EXIT["parameters"]
    return code


def _tell_refused(args: argparse.Namespace, params: dict, exc: ParameterError) -> list[str]:
    """A run refused before it had a folder still tells the command line's URLs and pings:
    an unattended drill whose profile broke says so now, not when a ping service's grace
    ends. The profile's own notify: section may be what failed to load: only the flags."""
    from runbook.core import notify as notifier

    if exc.key in ("notify", "ping", "notify.when") or not (args.notify or args.ping):
        return []
    try:
        for url in args.notify:
            notifier.check_notify_url(url, "--notify")
        for url in args.ping:
            notifier.check_ping_url(url, "--ping")
        when = notifier.check_when(args.notify_when, "--notify-when")
    except ParameterError:
        return []
    redactor = Redactor()
    for url in [*args.notify, *args.ping]:
        for part in notifier.url_secrets(url):
            with contextlib.suppress(ValueError):
                redactor.register("notify-url", part)
    plan = notifier.Plan(
        urls=tuple(args.notify), pings=tuple(args.ping), when=when, redactor=redactor
    )
    record = {
        "scenario": args.scenario,
        "environment": params.get("env", "sandbox"),
        "outcome": "parameters",
        "exit_code": 2,
        "error": {"type": "ParameterError", "message": str(exc)},
        "next_command": "none: fix what the error names, then run it again",
    }
    log = notifier.deliver_run(plan, record, None, None)
    return notifier.summary_lines(log)


def list_scenarios() -> str:
    """`runbook list`: every notebook from the catalog, sandbox or not. The secrets' variable
    names come from the sandbox's profile, which resolves only once a sandbox is set up;
    without one they are shown as the declared roles, and one line says so."""
    from runbook.core.catalog import list_text
    from runbook.core.paths import notebooks_dir
    from runbook.core.profile import load_profile

    notebooks = sorted(notebooks_dir().glob("*.ipynb"))
    try:
        profile = load_profile("sandbox")
    except ParameterError as exc:
        return (
            list_text(notebooks)
            + "\nsecrets are shown as profile roles, not the sandbox's variable names: "
            + str(exc)
        )
    return list_text(notebooks, profile)


def build_parser() -> argparse.ArgumentParser:
    """The parser of `runbook` (tests parse the printed `next:` commands with it)."""
    parser = argparse.ArgumentParser(prog="runbook", description=__doc__.splitlines()[0])
    sub = parser.add_subparsers(dest="command", required=True)
    sub.add_parser("sandbox", help="the disposable stand-in server (runbook sandbox --help)")
    sub.add_parser("twin", help="the production twin, root only (runbook twin --help)")
    p_lock = sub.add_parser(
        "lock",
        help="who holds each lock of an environment (host locks, a fleet's environment lock)",
    )
    p_lock.add_argument("--env", default="sandbox", help="the profile (default: sandbox)")
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
    p_run.add_argument(
        "--notify",
        metavar="URL",
        action="append",
        default=[],
        help="an Apprise URL to tell when the run ends (json://, slack://, mailtos://...); "
        "repeatable; on top of the profile's notify: section",
    )
    p_run.add_argument(
        "--notify-when",
        metavar="WHEN",
        action="append",
        default=[],
        help="failure (any outcome but ok, the default), always, or outcome names "
        "(dod_not_met,refused,...)",
    )
    p_run.add_argument(
        "--ping",
        metavar="URL",
        action="append",
        default=[],
        help="a dead-man's switch: healthchecks.io protocol (URL/start, URL, URL/<exit code>), "
        "or a Cronitor telemetry URL; repeatable",
    )
    _add_parameters_dir(p_run)
    sub.add_parser("list", help="the scenarios and their parameters")
    from runbook.cli.resume import add_parser as add_resume

    add_resume(sub)
    from runbook.cli.notify import add_parser as add_notify

    add_notify(sub)
    _add_parameters_dir(sub.choices["notify"])
    from runbook.cli.schedule import add_parser as add_schedule

    add_schedule(sub)
    _add_parameters_dir(sub.choices["schedule"])
    _add_evidence_commands(sub)
    return parser


def run_parameters(args: argparse.Namespace) -> dict:
    """The notebook parameters of a parsed `runbook run` command line.

    >>> run_parameters(build_parser().parse_args(["run", "rollback", "-p", "reason", "x",
    ...     "--env", "staging", "--confirm", "staging"]))
    {'reason': 'x', 'env': 'staging', 'confirm': 'staging'}
    """
    from runbook.cli import run as runner

    params = {name: runner.parse_value(value) for name, value in args.parameter}
    for flag, name in (("env", "env"), ("confirm", "confirm"), ("approved_by", "approved_by")):
        value = getattr(args, flag)
        if value is not None:
            params[name] = value
    if args.dry_run:
        params["dry_run"] = True
    if args.break_stale_lock:
        params["break_stale_lock"] = True
    return params


def _refused_before_run(scenario: str, params: dict, exc: ParameterError) -> str:
    """The story of a run refused before it had a folder: the error, its details, the fix."""
    import difflib

    from runbook.cli import run as runner
    from runbook.core.paths import notebooks_dir
    from runbook.evidence.story import parameter_fix, rerun_command

    fixed: tuple[str, dict] | None = None
    if exc.key == "scenario":
        known = [p.stem for p in notebooks_dir().glob("*.ipynb")]
        close = difflib.get_close_matches(scenario, known, n=1)
        fixed = (close[0], params) if close else None
    elif exc.key and exc.key in params:
        try:
            declared = list(runner.declared_parameters(runner.notebook_path(scenario)))
        except ParameterError:
            declared = []
        if exc.key not in declared:
            renamed = parameter_fix(params, exc.key, declared)
            fixed = (scenario, renamed) if renamed is not None else None
    nxt = None
    if fixed is not None:
        # offered only if the fixed command passes every check, the secret check
        # too: a secret in another parameter is never echoed back
        try:
            runner.validate_parameters(*fixed)
            nxt = rerun_command(*fixed)
        except ParameterError:
            nxt = None
    lines = [
        f"{'outcome:':<13} parameters (exit {runner.EXIT['parameters']}): nothing ran",
        f"{'error:':<13} ParameterError: {exc}",
        *(f"  {k + ':':<11} {v}" for k, v in exc.details().items()),
        f"{'next:':<13} {nxt or 'none: fix the parameter named above'}",
    ]
    return "\n".join(lines)


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
    p.add_argument(
        "--notebook",
        metavar="OUTPUT",
        type=Path,
        help="the executed notebook papermill wrote (copied into the run folder first)",
    )
    _add_parameters_dir(p)


def _add_parameters_dir(p: argparse.ArgumentParser) -> None:
    p.add_argument(
        "--parameters-dir",
        metavar="DIR",
        type=Path,
        help="where the environment profiles (<env>.yaml) are; default: "
        "$RUNBOOK_PARAMETERS_DIR, else parameters/ in the checkout",
    )


def _use_parameters_dir(path: Path | None) -> str | None:
    """Point this process and the kernels it starts at `path`; why not, if it cannot be."""
    import os

    if path is None:
        return None
    if not path.is_dir():
        return f"--parameters-dir {path}: no such directory (it holds the <env>.yaml profiles)"
    if not any(path.glob("*.yaml")):
        return f"--parameters-dir {path}: no <env>.yaml profile in it"
    # the kernel is a child process: it reads the same variable
    os.environ["RUNBOOK_PARAMETERS_DIR"] = str(path.resolve())
    return None
