"""`runbook schedule plan|serve`: drills and read-only checks per environment on Prefect 3.

`plan` prints the deployments (no engine needed); `serve` registers them on the
Prefect server that `PREFECT_API_URL` names and runs their flow runs from this
process until it is stopped (the optional extra: `pip install .[prefect]`).
A changing scenario is refused with the reason before anything is registered
(exit 2). docs/scheduling.md says when an engine fits better than cron or a
systemd timer.

Exit codes: 0 (plan printed; serve stopped), 2 bad parameters, a refused
scenario or the extra missing.
"""

from __future__ import annotations

import argparse
import sys

from runbook.errors import ParameterError


def add_parser(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser(
        "schedule",
        help="drills and read-only checks per environment on a Prefect 3 server (plan, serve)",
    )
    p.add_argument("action", choices=("plan", "serve"))
    p.add_argument(
        "--env",
        metavar="ENV",
        action="append",
        default=[],
        help="an environment profile to schedule on; repeatable, at least one",
    )
    p.add_argument(
        "--scenario",
        metavar="NAME[=CRON]",
        action="append",
        default=[],
        help="a scenario to schedule, with its cron (5 fields, UTC); repeatable; default: "
        "restore_drill monthly, health_check every 30 minutes, review weekly",
    )


def run_command(args: argparse.Namespace) -> int:
    from runbook.integrations import schedule

    try:
        entries = schedule.plan(args.env, args.scenario)
    except ParameterError as exc:
        print(f"runbook schedule: refused, nothing registered: {exc}", file=sys.stderr)
        for key, value in exc.details().items():
            print(f"  {key + ':':<6} {value}", file=sys.stderr)
        return 2
    print(schedule.plan_text(entries))
    if args.action == "plan":
        return 0
    try:
        from runbook.integrations.prefect_flow import serve_entries
    except ImportError as exc:
        print(
            f"runbook schedule: Prefect is not installed ({exc}): pip install '.[prefect]'",
            file=sys.stderr,
        )
        return 2
    serve_entries(entries)
    return 0
