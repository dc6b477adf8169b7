"""What an engine may schedule, the `runbook run` it starts, and how its exit code reads.

Nothing here imports an engine: `runbook schedule plan` and the refusals work
without the extra, and the Prefect flow (`runbook.integrations.prefect_flow`)
reads the same table.

Only two kinds of scenario run on a schedule:

- read-only checks (the catalog's ``changes: false``: health_check, review);
- drills: restore_drill, which changes nothing but a scratch database it drops
  again (scenario 5 asks for it monthly, unattended).

Every other scenario changes the target (deploy, rollback, rolling_deploy,
fleet_rollback, restore_incident, security_incident, database_down,
llm_provider_down) and runs when a person
decides, never from a clock: scheduling one is refused with the reason (exit 2).

An exit code as an engine's state (the outcomes are errors.OUTCOMES)::

    exit  outcome       state                 retried (read-only checks only)
    0     ok            Completed
    1     failed        Failed                yes
    2     parameters    Failed                no
    3     dod_not_met   Failed                no: the run's verdict
    4     refused       Failed, "Refused"     no
    5     interrupted   Cancelled             no
    6     timed_out     Failed                yes
    7     kernel_died   Failed                yes
    8     abandoned     Crashed, "Abandoned"  no  (also a runner killed by a signal)
    9     tripped       Failed, "Tripped"     no

    >>> verdict(3, {"outcome": "dod_not_met"}, "restore_drill", "staging").state
    'FAILED'
    >>> [verdict(c, None, "health_check", "staging").retry for c in (1, 2, 3, 6)]
    [True, False, False, True]
"""

from __future__ import annotations

import json
import re
import sys
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from runbook.core.catalog import declared, notebook_path
from runbook.core.paths import outputs_dir, parameters_dir
from runbook.errors import OUTCOMES, ParameterError

# A drill changes nothing the service uses: the one changing scenario a clock may start.
DRILLS = {
    "restore_drill": "it restores the newest backup into a scratch database that it drops "
    "again and never writes production; scenario 5 asks for it every month",
}
# Each schedulable scenario's default: the drill monthly (the documented timer's
# 04:00 UTC on the 1st), the health check every 30 minutes, the review weekly
# (it exits 3 only when something is due, so a weekly look costs nothing).
DEFAULT_CRONS = {
    "restore_drill": "0 4 1 * *",
    "health_check": "*/30 * * * *",
    "review": "0 6 * * 1",
}
# Errors of the run, not verdicts: worth one more try on a read-only check.
RETRYABLE = frozenset({OUTCOMES["failed"], OUTCOMES["timed_out"], OUTCOMES["kernel_died"]})
READ_ONLY_RETRIES = 1
_NAMES = {code: name for name, code in OUTCOMES.items()}


def refusal(scenario: str) -> str | None:
    """Why `scenario` may never be scheduled, or None when it may (unknown: ParameterError).

    >>> refusal("health_check") is None, refusal("restore_drill") is None
    (True, True)
    >>> print(refusal("rollback"))
    rollback changes the target (its notebook declares changes: true) and is not a drill: it runs when a person decides, never on a schedule (run it by hand: runbook run rollback --env ENV --confirm ENV)
    """
    if not declared(notebook_path(scenario)).get("changes", False) or scenario in DRILLS:
        return None
    return (
        f"{scenario} changes the target (its notebook declares changes: true) and is not a "
        "drill: it runs when a person decides, never on a schedule (run it by hand: "
        f"runbook run {scenario} --env ENV --confirm ENV)"
    )


def changes(scenario: str) -> bool:
    """Whether the scenario changes anything (a drill does: a confirmation off the sandbox)."""
    return bool(declared(notebook_path(scenario)).get("changes", False))


@dataclass(frozen=True)
class Entry:
    """One deployment: a scenario on an environment on a cron schedule (UTC)."""

    scenario: str
    env: str
    cron: str
    retries: int

    @property
    def name(self) -> str:
        return f"{self.scenario}-{self.env}"

    @property
    def kind(self) -> str:
        return "drill" if self.scenario in DRILLS else "check"


def _check_cron(cron: str, scenario: str) -> str:
    fields = cron.split()
    if len(fields) != 5 or not all(re.fullmatch(r"[0-9A-Za-z*/,\-?LW#]+", f) for f in fields):
        raise ParameterError(
            f"--scenario {scenario}={cron!r}: a cron schedule has 5 fields "
            "(minute hour day-of-month month day-of-week), in UTC",
            key="scenario",
            fix=f"--scenario {scenario}='{DEFAULT_CRONS.get(scenario, '0 4 1 * *')}'",
        )
    return " ".join(fields)


def plan(envs: Sequence[str], scenarios: Iterable[str] = ()) -> list[Entry]:
    """The deployments for `envs`: each `NAME` or `NAME=CRON` of `scenarios` (default: every
    schedulable scenario at its default time). Refuses before anything is registered.

    >>> [e.name for e in plan(["sandbox"], ["restore_drill", "health_check=0 * * * *"])]
    ['restore_drill-sandbox', 'health_check-sandbox']
    >>> plan(["sandbox"], ["deploy=0 4 * * *"])
    Traceback (most recent call last):
    ...
    runbook.errors.ParameterError: deploy changes the target ...
    """
    if not envs:
        raise ParameterError("name at least one environment", key="env", fix="--env staging")
    chosen: dict[str, str] = {}
    for item in scenarios or DEFAULT_CRONS:
        name, _, cron = item.partition("=")
        name = name.strip()
        why = refusal(name)
        if why:
            raise ParameterError(why, key="scenario")
        if name not in DEFAULT_CRONS and not cron:
            raise ParameterError(
                f"--scenario {name}: no default schedule; give one",
                key="scenario",
                fix=f"--scenario {name}='0 6 * * *'",
            )
        chosen[name] = _check_cron(cron or DEFAULT_CRONS[name], name)
    profiles = parameters_dir()
    for env in envs:
        if not (profiles / f"{env}.yaml").is_file():
            raise ParameterError(
                f"no profile {env}.yaml in {profiles}", key="env", fix="--parameters-dir DIR"
            )
    return [
        Entry(name, env, cron, 0 if changes(name) else READ_ONLY_RETRIES)
        for env in envs
        for name, cron in chosen.items()
    ]


def plan_text(entries: Sequence[Entry]) -> str:
    """`runbook schedule plan`: one line per deployment."""
    lines = [f"{'deployment':<28} {'kind':<6} {'cron (UTC)':<16} retries  command"]
    for e in entries:
        argv = " ".join(command(e.scenario, e.env)[3:])
        lines.append(f"{e.name:<28} {e.kind:<6} {e.cron:<16} {e.retries:<8} runbook {argv}")
    lines.append("each deployment: concurrency limit 1 (a run waits for the one before it)")
    return "\n".join(lines)


def command(scenario: str, env: str) -> list[str]:
    """The `runbook run` an engine starts, with this interpreter (the project's venv).

    A drill needs its confirmation off the sandbox, as the documented timer gives it:
    the schedule is the person's standing decision.

    >>> command("restore_drill", "staging")[3:]
    ['run', 'restore_drill', '--env', 'staging', '--confirm', 'staging']
    >>> command("health_check", "staging")[3:]
    ['run', 'health_check', '--env', 'staging']
    """
    argv = [sys.executable, "-m", "runbook.cli", "run", scenario, "--env", env]
    if changes(scenario):
        argv += ["--confirm", env]
    return argv


@dataclass(frozen=True)
class Verdict:
    """The engine's terminal state for one run: a Prefect state type, its name, the message."""

    state: str
    name: str
    message: str
    retry: bool


def verdict(code: int | None, record: Mapping[str, Any] | None, scenario: str, env: str) -> Verdict:
    """The state of a run that exited `code` (None or negative: killed by a signal).

    >>> verdict(0, {"outcome": "ok"}, "health_check", "sandbox")
    Verdict(state='COMPLETED', name='Completed', message='health_check on sandbox: ok (exit 0)', retry=False)
    >>> verdict(4, None, "restore_drill", "staging").name
    'Refused'
    >>> v = verdict(-9, {"outcome": "abandoned"}, "restore_drill", "staging")
    >>> v.state, v.name, v.message
    ('CRASHED', 'Abandoned', 'restore_drill on staging: abandoned (exit 8)')
    """
    outcome = (record or {}).get("outcome")
    if code is None or code < 0 or outcome == "abandoned":
        outcome, code = "abandoned", OUTCOMES["abandoned"]
    elif outcome not in OUTCOMES or OUTCOMES[outcome] != code:
        # no record, or one that disagrees with the exit code: the exit code is the verdict
        outcome = _NAMES.get(code, "failed")
    message = f"{scenario} on {env}: {outcome} (exit {code})"
    failed = [c for c in (record or {}).get("checks") or [] if c.get("status") == "failed"]
    if failed:
        message += "; failed: " + ", ".join(str(c.get("name")) for c in failed)
    if outcome == "ok":
        return Verdict("COMPLETED", "Completed", message, False)
    if outcome == "interrupted":
        return Verdict("CANCELLED", "Cancelled", message, False)
    if outcome == "abandoned":
        return Verdict("CRASHED", "Abandoned", message, False)
    name = {"refused": "Refused", "tripped": "Tripped"}.get(outcome, "Failed")
    retry = code in RETRYABLE and not changes(scenario)
    return Verdict("FAILED", name, message, retry)


def run_dir_of(stdout: str, scenario: str, env: str, pid: int) -> Path | None:
    """The run's folder: the runner's `record:` line, else (a runner killed before it
    printed) the record under outputs/<env>/<scenario>/ whose runner was `pid`."""
    for line in reversed(stdout.splitlines()):
        if line.startswith("record:"):
            path = Path(line.split(":", 1)[1].strip())
            if path.is_file():
                return path.parent
    base = outputs_dir() / env / scenario
    for record in sorted(base.glob("*/record.json"), reverse=True) if base.is_dir() else []:
        try:
            process = json.loads(record.read_bytes()).get("process") or {}
        except (OSError, ValueError):
            continue
        if pid in (process.get("runner_pid"), process.get("pid")):
            return record.parent
    return None


def summary_markdown(
    verdict_: Verdict,
    record: Mapping[str, Any] | None,
    run_dir: Path | None,
    output_tail: str,
    attempts: int,
) -> str:
    """The artifact: the run's story (the runner's terminal summary) and where its evidence is.

    The record and the runner's output have passed the run's redactor already.
    """
    from runbook.evidence.story import story

    lines = [f"## {verdict_.message}", ""]
    if record is not None:
        lines += ["```", story(record, run_dir), "```", ""]
    else:
        lines += ["No record: the run was refused before it had a folder.", ""]
        lines += ["```", output_tail.strip() or "(no output)", "```", ""]
    lines.append(f"- evidence: `{run_dir}`" if run_dir else "- evidence: none")
    if run_dir is not None:
        lines.append(f"- record: `{run_dir / 'record.json'}`")
        lines.append(f"- verify: `runbook verify {run_dir}`")
    lines.append(f"- attempts: {attempts}")
    return "\n".join(lines)


def checks_table(record: Mapping[str, Any] | None) -> list[dict[str, str]]:
    """The record's checks as rows (step, check, status, expected, actual).

    >>> checks_table({"checks": [{"name": "Backup size", "status": "failed", "expected": "> 0",
    ...     "actual": "0 B", "step": "2. Backup"}]})
    [{'step': '2. Backup', 'check': 'Backup size', 'status': 'failed', 'expected': '> 0', 'actual': '0 B'}]
    """
    return [
        {
            "step": str(c.get("step") or ""),
            "check": str(c.get("name")),
            "status": str(c.get("status")),
            "expected": str(c.get("expected")),
            "actual": str(c.get("actual")),
        }
        for c in (record or {}).get("checks") or []
    ]


def artifact_key(scenario: str, env: str) -> str:
    """An artifact key (lowercase letters, digits, dashes), one per scenario and environment.

    >>> artifact_key("restore_drill", "Staging.EU")
    'runbook-restore-drill-staging-eu'
    """
    return re.sub(r"[^a-z0-9]+", "-", f"runbook-{scenario}-{env}".lower()).strip("-")
