"""`runbook notify SCENARIO`: tell a person about the newest run, when the run itself could not.

systemd's `OnFailure=` starts it after the drill unit failed (the unit in
docs/scheduling/). A run that ended with a verdict has told its people itself
(notifications.json says so) and this says "already told" and sends nothing.
A run that was SIGKILLed or cut off by a timeout left a record stuck at
"running": it is finished as abandoned first (runbook.evidence.liveness, which
seals it), then told. A run that left no record at all (killed before its
folder existed, a profile that no longer loads) is told as such, with what
systemd says of the unit (`$MONITOR_SERVICE_RESULT`, `$MONITOR_EXIT_STATUS`,
set for units started by OnFailure=).

Exit codes: 0 told (or nothing to tell), 1 the message could not be delivered,
2 bad parameters or profile.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
from datetime import datetime, timedelta
from pathlib import Path
from typing import Any

from runbook.clock import utc_now
from runbook.core import notify as notifier
from runbook.core.paths import outputs_dir
from runbook.errors import ParameterError


def add_parser(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser(
        "notify",
        help="tell the profile's notify: targets about the newest run of SCENARIO "
        "(systemd OnFailure=); nothing when the run told them itself",
    )
    p.add_argument("scenario")
    p.add_argument("--env", default="sandbox", help="environment profile (default: sandbox)")
    p.add_argument("--notify", metavar="URL", action="append", default=[])
    p.add_argument("--ping", metavar="URL", action="append", default=[])
    p.add_argument(
        "--max-age",
        metavar="MINUTES",
        type=float,
        default=180.0,
        help="a newest record older than this is not the failed run's: the run left none "
        "(default 180, the drill unit's TimeoutStartSec plus margin)",
    )


def newest_run(env: str, scenario: str, root: Path | None = None) -> Path | None:
    """The newest run folder of `scenario` on `env` (folder names start with the UTC time)."""
    base = (root or outputs_dir()) / env / scenario
    found = sorted(p.parent for p in base.glob("*/record.json")) if base.is_dir() else []
    return found[-1] if found else None


def _age_minutes(record: dict[str, Any]) -> float | None:
    try:
        started = datetime.fromisoformat(str(record.get("started")).replace("Z", "+00:00"))
    except ValueError:
        return None
    return (utc_now() - started) / timedelta(minutes=1)


def _unit_words() -> str:
    """What systemd says of the failed unit, when it started us through OnFailure=."""
    unit = os.environ.get("MONITOR_UNIT")
    if not unit:
        return ""
    result = os.environ.get("MONITOR_SERVICE_RESULT", "?")
    status = os.environ.get("MONITOR_EXIT_STATUS", "?")
    return f"systemd: {unit} failed (result {result}, exit status {status})"


def _dead_lock(lock_path: str) -> str | None:
    """What to say when the host lock on this machine is held by a process that is gone.

    A SIGKILLed run never released it, so every later changing run on the host
    (next month's drill too) is refused until someone breaks it: the message
    says so, with the command. Breaking it stays a person's decision (the dead
    run may have left work half done), so this only reads; a dead drill's lock
    is the exception the lock itself makes (`SELF_CLEANING`), and the words say so.
    """
    from runbook.evidence.liveness import alive
    from runbook.safety.lock import SELF_CLEANING, STALE_S

    try:
        owner = json.loads((Path(lock_path) / "owner.json").read_text())
    except (OSError, ValueError):
        return None
    if not isinstance(owner, dict) or alive(owner.get("process")) is not False:
        return None
    held = (
        f"the host lock {lock_path} is still held by the dead run "
        f"({owner.get('scenario', '?')} since {owner.get('started', '?')})"
    )
    if owner.get("scenario") in SELF_CLEANING:
        return (
            f"{held}: the next changing run here breaks it by itself once its heartbeat is "
            f"{STALE_S // 60} minutes old (a drill's only change is its scratch database; "
            "recorded in that run)"
        )
    return f"{held}: every later changing run here is refused until a person breaks it (see next)"


def run_command(args: argparse.Namespace) -> int:
    from runbook.cli.run import notify_plan
    from runbook.core.profile import load_profile
    from runbook.evidence.liveness import finish_abandoned
    from runbook.evidence.seal import MANIFEST, evidence_digest_of_manifest

    try:
        plan = notify_plan(args.env, args.notify, args.ping, ["always"])
    except ParameterError as exc:
        print(f"runbook: {exc}", file=sys.stderr)
        return 2
    if plan.empty:
        print(
            f"runbook: nobody to tell: the profile {args.env!r} has no notify: section and no "
            "--notify/--ping was given",
            file=sys.stderr,
        )
        return 2
    unit = _unit_words()
    run_dir = newest_run(args.env, args.scenario)
    record: dict[str, Any] = {}
    if run_dir is not None:
        record = json.loads((run_dir / "record.json").read_text())
        age = _age_minutes(record)
        if age is None or age > args.max_age:
            run_dir, record = None, {}
    lock_words = None
    if run_dir is not None and record.get("outcome") == "running":
        # a run killed without a verdict: finish it as abandoned (and seal it) first
        profile = load_profile(args.env)
        finish_abandoned(args.env, profile.target.host, finisher="runbook notify")
        record = json.loads((run_dir / "record.json").read_text())
        if profile.target.transport == "local":
            lock_words = _dead_lock(profile.app.lock_path)
        if lock_words and "breaks it by itself" not in lock_words:
            # the next run (next month's drill) is refused until a person breaks it
            record["next_command"] = (
                f"runbook run {args.scenario} --env {args.env} --confirm {args.env} "
                "--break-stale-lock"
            )
    if run_dir is not None:
        told = run_dir / notifier.NOTIFICATIONS
        if told.exists():
            log = json.loads(told.read_text())
            if any(s.get("delivered") for s in log.get("sent") or []) or (
                not plan.urls and log.get("pings")
            ):
                print(f"already told by the run itself ({told}): nothing sent")
                return 0
        digest = evidence_digest_of_manifest(run_dir) if (run_dir / MANIFEST).exists() else None
        log = notifier.deliver_run(plan, {**record}, run_dir, digest, why=lock_words)
    else:
        record = {
            "scenario": args.scenario,
            "environment": args.env,
            "outcome": "no record",
            "exit_code": os.environ.get("MONITOR_EXIT_STATUS", "?"),
            "next_command": f"journalctl -u {os.environ.get('MONITOR_UNIT', '<the unit>')} -n 50",
        }
        title, body = notifier.message(
            record,
            None,
            None,
            why=(unit + "; " if unit else "")
            + f"the run left no record in the last {args.max_age:g} minutes under "
            f"{outputs_dir() / args.env / args.scenario}",
        )
        log = {"sent": notifier.send(plan, title, body, ok_run=False), "pings": []}
        if plan.pings:
            log["pings"] = notifier.ping(plan, "exit", code=None, body=body)
    lines = notifier.summary_lines(log)
    print("\n".join([f"{'run:':<13} {run_dir or 'none (the run left no record)'}", *lines]))
    if unit:
        print(f"{'unit:':<13} {unit}")
    delivered = [s.get("delivered") for s in log.get("sent") or []] + [
        p.get("delivered") for p in log.get("pings") or []
    ]
    return 0 if delivered and all(delivered) else 1
