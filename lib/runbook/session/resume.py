"""A resume of a failed run, as the session runs it (the plan itself: runbook.evidence.resume).

`Session.begin_resume` and `Session.resume_skip` call these: the first plans
(or refuses) the resume before the scenario's first step, the second skips
what the parent run already did.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import TYPE_CHECKING, Any

from runbook.clock import utc_now
from runbook.evidence.record import Step
from runbook.evidence.resume import (
    RESUME_ENV,
    RESUME_FLAGS_ENV,
    Plan,
    StepRules,
    flags_from_env,
    moved_facts,
)
from runbook.evidence.resume import plan as resume_plan
from runbook.evidence.resume import refusal as resume_refusal

if TYPE_CHECKING:
    from runbook.session import Session


def begin(s: Session, rules: StepRules) -> Plan | None:
    """Make this run a resume when `RUNBOOK_RESUME_FROM` names the parent run folder.

    Called by `open_scenario` before the scenario's first step. Refuses
    (`Forbidden`, nothing has run) as `runbook.evidence.resume.plan` says,
    and when what the parent's completed steps rely on moved since it
    stopped. Returns the plan, None when this run is no resume.
    """
    # every run records these facts as it stops, so that it can be resumed
    s.resume_relies_on = rules.relies_on
    parent = os.environ.get(RESUME_ENV)
    if not parent:
        return None
    from runbook.core.catalog import notebook_path

    flags = flags_from_env(os.environ.get(RESUME_FLAGS_ENV))
    plan = resume_plan(
        Path(parent),
        notebook_path(s.scenario),
        rules,
        params=s.parameters,
        allow_interrupted=bool(flags.get("allow_interrupted")),
        overrides=list(flags.get("overrides") or ()),
        accept_moved=list(flags.get("accept_moved") or ()),
    )
    s.resume = plan
    s.evidence.append({"kind": "resume", "event": "plan", **plan.to_record()})
    print(
        f"resuming run {plan.parent_id} (it ended {plan.record.get('outcome')} at "
        f"{plan.failed_step!r}); skipping {', '.join(plan.skip_methods) or 'nothing'}"
    )
    if rules.relies_on:
        now = s.read_target_facts(rules.relies_on)
        before = plan.record.get("target_facts") or {}
        moved = moved_facts(before, now, rules.relies_on, plan.accept_moved)
        s.evidence.append({"kind": "resume", "event": "facts", "parent": before, "now": now})
        if moved:
            raise resume_refusal(
                "the target moved since run "
                f"{plan.parent_id} stopped, so its completed steps may no longer hold: "
                + "; ".join(moved),
                "find out who changed it; start a new run, or name what you checked "
                "with --accept-moved NAME (recorded)",
            )
    s.write_record()
    return plan


def skip(s: Session, method: str, postcondition: Any = None) -> bool:
    """True when a resume skips scenario method `method` (its steps recorded as skipped).

    `postcondition`, for the method that holds the parent's failed step:
    a callable returning (effect already there, what it found); when the
    effect is there, the method is skipped too.
    """
    plan = s.resume
    if plan is None or method not in plan.methods:
        return False
    why = f"done in run {plan.parent_id}"
    if method not in plan.skip_methods:
        if postcondition is None:
            return False
        held, found = postcondition()
        s.decide(
            f"resume: {plan.failed_step}",
            "skip: its effect is already there" if held else "run it again",
            f"postcondition: {found}",
        )
        print(f"postcondition of {plan.failed_step!r}: {found}")
        if not held or any(
            n not in plan.done and n != plan.failed_step for n in plan.methods[method]
        ):
            return False
        why = f"its effect is already there ({found}); it failed in run {plan.parent_id}"
    for name in plan.methods[method]:
        now = utc_now()
        s.steps.append(Step(name, now, now, "skipped", method=method, note=why))
        s.evidence.append({"kind": "step", "event": "skipped", "step": name, "note": why})
        print(f"skipped: {name}: {why}")
    s.write_record()
    return True
