"""`runbook resume RUN`: continue a failed run from the step that failed, in a new run.

RUN is a run folder or a run id (the folder's name, as `runbook history`
shows it). The new run takes the parent's parameters (an override must be
named with --override), re-runs the setup and the read-only steps, skips
the steps the parent completed and continues from the failed one; its
record names the parent under `resume.from`. What is refused, and why, is
runbook.evidence.resume; the exit codes are `runbook run`'s (2: the RUN or an
override is wrong; 4: refused; nothing ran in either case).

Example::

    runbook resume outputs/sandbox/deploy/20261207T044501Z-deploy
    runbook resume 20261207T044501Z-deploy --confirm production
"""

from __future__ import annotations

import argparse
import json
import os
import sys
from typing import Any

from runbook.core.catalog import notebook_path
from runbook.errors import OUTCOMES, Forbidden, ParameterError
from runbook.evidence.resume import (
    FREE_PARAMETERS,
    RESUME_ENV,
    RESUME_FLAGS_ENV,
    find_run,
    plan,
    read_record,
)


def add_parser(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("resume", help="continue a failed run from its failed step, as a new run")
    p.add_argument("run", help="the failed run: its folder, or its id (runbook history)")
    p.add_argument(
        "-p",
        "--parameter",
        nargs=2,
        action="append",
        default=[],
        metavar=("NAME", "VALUE"),
        help="a different value for one of the parent's parameters (needs --override NAME)",
    )
    p.add_argument(
        "--override",
        action="append",
        default=[],
        metavar="NAME",
        help="allow parameter NAME to differ from the parent's (recorded)",
    )
    p.add_argument(
        "--allow-interrupted",
        action="store_true",
        help="resume a run the operator interrupted (recorded)",
    )
    p.add_argument(
        "--accept-moved",
        action="append",
        default=[],
        metavar="FACT",
        help="resume although FACT (app_head, alembic_revision) moved since the parent stopped "
        "(recorded)",
    )
    p.add_argument("--confirm", metavar="ENV", help="confirm changes on ENV (asked again)")
    p.add_argument("--approved-by", metavar="NAME")
    p.add_argument("--break-stale-lock", action="store_true")
    p.add_argument("--timeout", type=float, default=None, help="per-cell timeout, seconds")


def resume_parameters(record: dict[str, Any], args: argparse.Namespace) -> dict[str, Any]:
    """The parent's parameters (session-only ones out), the given overrides and flags in."""
    from runbook.cli.run import parse_value

    params = {k: v for k, v in (record.get("parameters") or {}).items() if k not in FREE_PARAMETERS}
    params.update({name: parse_value(value) for name, value in args.parameter})
    if args.confirm:
        params["confirm"] = args.confirm
    if args.approved_by:
        params["approved_by"] = args.approved_by
    if args.break_stale_lock:
        params["break_stale_lock"] = True
    return params


def main(args: argparse.Namespace) -> int:
    from runbook.cli import run as runner
    from runbook.scenarios._base import scenario_class

    try:
        parent = find_run(args.run)
        record = read_record(parent)
        scenario = str(record.get("scenario"))
        params = resume_parameters(record, args)
        the_plan = plan(
            parent,
            notebook_path(scenario),
            scenario_class(scenario).resume_rules(),
            params=params,
            allow_interrupted=args.allow_interrupted,
            overrides=args.override,
            accept_moved=args.accept_moved,
        )
    except Forbidden as exc:
        details = exc.details()
        print(f"runbook: resume refused: {details.get('reason', exc)}", file=sys.stderr)
        if details.get("fix"):
            print(f"fix: {details['fix']}")
        return OUTCOMES["refused"]
    except ParameterError as exc:
        print(f"runbook: resume: {exc}", file=sys.stderr)
        return OUTCOMES["parameters"]
    print(
        f"resuming {scenario} run {the_plan.parent_id} from {the_plan.failed_step!r}; "
        f"skipping {', '.join(the_plan.skip_methods) or 'nothing'}"
    )
    flags = {
        "allow_interrupted": args.allow_interrupted,
        "overrides": args.override,
        "accept_moved": args.accept_moved,
    }
    os.environ[RESUME_ENV] = str(parent)
    os.environ[RESUME_FLAGS_ENV] = json.dumps(flags)
    try:
        code, run_dir = runner.run(scenario, params, timeout=args.timeout)
    except ParameterError as exc:
        print(f"runbook: {exc}", file=sys.stderr)
        return OUTCOMES["parameters"]
    finally:
        os.environ.pop(RESUME_ENV, None)
        os.environ.pop(RESUME_FLAGS_ENV, None)
    print(f"resumed run {the_plan.parent_id} -> {run_dir.name}")
    return code
