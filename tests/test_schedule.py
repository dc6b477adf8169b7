"""What an engine may schedule and how an exit code reads as its state (no server, no sandbox).

The end-to-end proof against a real Prefect server is tests/test_prefect.py;
these hold the table itself, read from the catalog and errors.OUTCOMES, so a
new outcome or a new changing scenario cannot slip past it.
"""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest
from prefect.client.schemas.objects import StateType

from runbook.core.paths import notebooks_dir
from runbook.errors import OUTCOMES
from runbook.integrations import schedule

ROOT = Path(__file__).resolve().parents[1]

# outcome -> (state type, state name, retried on a read-only check)
TABLE = {
    "ok": ("COMPLETED", "Completed", False),
    "failed": ("FAILED", "Failed", True),
    "parameters": ("FAILED", "Failed", False),
    "dod_not_met": ("FAILED", "Failed", False),
    "refused": ("FAILED", "Refused", False),
    "interrupted": ("CANCELLED", "Cancelled", False),
    "timed_out": ("FAILED", "Failed", True),
    "kernel_died": ("FAILED", "Failed", True),
    "abandoned": ("CRASHED", "Abandoned", False),
    "tripped": ("FAILED", "Tripped", False),
}


def test_every_outcome_has_its_state() -> None:
    assert set(TABLE) == set(OUTCOMES)
    for outcome, code in OUTCOMES.items():
        state, name, retry = TABLE[outcome]
        check = schedule.verdict(code, {"outcome": outcome}, "health_check", "staging")
        drill = schedule.verdict(code, {"outcome": outcome}, "restore_drill", "staging")
        assert (check.state, check.name, check.retry) == (state, name, retry), outcome
        # a drill changes things: never tried again, whatever the outcome
        assert (drill.state, drill.name, drill.retry) == (state, name, False), outcome
        assert f"{outcome} (exit {code})" in check.message
        assert StateType(state)  # a state Prefect knows


def test_a_runner_killed_by_a_signal_is_abandoned_and_no_record_reads_the_exit_code() -> None:
    killed = schedule.verdict(-9, {"outcome": "running"}, "restore_drill", "staging")
    assert (killed.state, killed.name) == ("CRASHED", "Abandoned")
    refused_early = schedule.verdict(2, None, "restore_drill", "staging")
    assert (refused_early.state, refused_early.message) == (
        "FAILED",
        "restore_drill on staging: parameters (exit 2)",
    )


def test_only_drills_and_read_only_checks_may_be_scheduled() -> None:
    scenarios = sorted(p.stem for p in notebooks_dir().glob("*.ipynb"))
    refused = sorted(s for s in scenarios if schedule.refusal(s))
    assert refused == [
        "database_down",
        "deploy",
        "fleet_rollback",
        "llm_provider_down",
        "restore_incident",
        "rollback",
        "rolling_deploy",
        "security_incident",
    ]
    assert sorted(schedule.DEFAULT_CRONS) == sorted(set(scenarios) - set(refused))
    entries = schedule.plan(["sandbox"])
    assert {e.name: (e.kind, e.retries) for e in entries} == {
        "restore_drill-sandbox": ("drill", 0),
        "health_check-sandbox": ("check", 1),
        "review-sandbox": ("check", 1),
    }


def _schedule(*args: str) -> subprocess.CompletedProcess:
    return subprocess.run(
        [sys.executable, "-m", "runbook.cli", "schedule", *args],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=120,
    )


@pytest.mark.parametrize("scenario", ["deploy", "rollback=0 4 * * *", "database_down"])
def test_the_cli_refuses_a_changing_scenario_with_the_reason(scenario: str) -> None:
    proc = _schedule(
        "serve", "--env", "sandbox", "--scenario", "health_check", "--scenario", scenario
    )
    name = scenario.split("=")[0]
    assert proc.returncode == 2, proc
    assert f"refused, nothing registered: {name} changes the target" in proc.stderr
    # refused before Prefect is reached: no deployment table, no server needed
    assert proc.stdout == ""


def test_the_cli_plans_a_drill_with_its_confirmation_and_a_check_without() -> None:
    proc = _schedule("plan", "--env", "sandbox", "--scenario", "restore_drill=0 3 1 * *")
    assert proc.returncode == 0, proc
    line = next(x for x in proc.stdout.splitlines() if x.startswith("restore_drill-sandbox"))
    assert line.split()[1:7] == ["drill", "0", "3", "1", "*", "*"]
    assert line.endswith("runbook run restore_drill --env sandbox --confirm sandbox")
    bad = _schedule("plan", "--env", "sandbox", "--scenario", "health_check=*/5 * *")
    assert bad.returncode == 2 and "a cron schedule has 5 fields" in bad.stderr
