"""`runbook resume` of scenario 3: a drain that stopped midway is resumed, never repeated.

The parent run: Postgres stopped while webhooks arrived (queued in
WEBHOOKS_DLQ), and an item no replay can take sits in OUTBOUND_DLQ
(`dlq-poison`). The runbook restarts Postgres and drains: the webhooks are
replayed, the outbound queue stops with the poison left, so the drain step's
check fails. The operator removes the poison; meanwhile a second short outage
queues new webhooks. The resume checks the drain's postcondition (says what it
found), drains only what the parent left, and never drains WEBHOOKS_DLQ again.
"""

from __future__ import annotations

import json
import time
import uuid
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
import redis

from runbook.cli import main as cli_main
from runbook.cli import run as runner
from runbook.evidence.seal import verify_run
from runbook.rehearsal.faults import parse
from runbook.rehearsal.faults.database_down import send_webhook, webhook_events_file
from runbook.scenarios.database_down import DRAIN_STEP, TRIAGE_STEP


@pytest.fixture(autouse=True)
def outputs(tmp_path, monkeypatch):
    monkeypatch.setenv("RUNBOOK_OUTPUTS", str(tmp_path / "outputs"))
    return tmp_path / "outputs"


def record_of(run_dir: Path) -> dict[str, Any]:
    return json.loads((run_dir / "record.json").read_text())


def runs(outputs: Path) -> list[Path]:
    return sorted(p.parent for p in outputs.glob("*/*/*/record.json"))


def dlq_ids(sandbox, queue: str) -> list[str]:
    r = redis.Redis(port=sandbox.state["redis_port"], decode_responses=True)
    try:
        items = [json.loads(x) for x in r.lrange(queue, 0, -1)]
    finally:
        r.close()
    return [str(i.get("event_id")) for i in items if isinstance(i, dict)]


def wait_for(pred: Callable[[], bool], what: str, timeout: float = 60) -> None:
    deadline = time.monotonic() + timeout
    while not pred():
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out waiting for {what}")
        time.sleep(0.5)


def drain_calls(run_dir: Path, queue: str) -> list[str]:
    """The run's drain requests of one queue, from its HTTP log."""
    lines = (run_dir / "commands.jsonl").read_text().splitlines()
    entries = [json.loads(ln) for ln in lines if ln.strip()]
    return [
        str(e["request"])
        for e in entries
        if e.get("kind") == "http" and f"/dlq/{queue}/drain" in str(e.get("request"))
    ]


def checks(record: dict[str, Any]) -> dict[str, dict[str, Any]]:
    return {c["name"]: c for c in record["checks"]}


def test_database_down_resumed_after_a_stopped_drain_never_drains_twice(
    sandbox, healed, outputs
) -> None:
    healed.fault("webhooks-during-outage")
    sent = json.loads(webhook_events_file(healed).read_text())["event_ids"]
    healed.fault("dlq-poison")

    # the parent: service failed, restarted, re-checked; the drain stops on the poison
    code, parent = runner.run("database_down", {}, quiet=True)
    rec = record_of(parent)
    assert code == runner.EXIT["dod_not_met"], rec["error"]
    c = checks(rec)
    assert c["No lost webhooks: WEBHOOKS_DLQ drained"]["status"] == "passed"
    assert c["No lost LLM work: OUTBOUND_DLQ drained"]["status"] == "failed"
    assert c["No lost LLM work: OUTBOUND_DLQ drained"]["actual"].endswith("1 after")
    assert len(drain_calls(parent, "webhooks")) >= 1
    stored = healed.query("SELECT event_id FROM webhook_events WHERE event_id = ANY(%s)", (sent,))
    assert {r[0] for r in stored} == set(sent)

    # the operator removes the poison; a second short outage queues new webhooks
    fault, param = parse("dlq-poison")
    fault.heal(healed, param)
    healed.fault("postgres-down")
    late = [f"evt_late_{uuid.uuid4().hex[:12]}" for _ in range(3)]
    for event_id in late:
        assert send_webhook(healed, "stripe", {"event_id": event_id, "type": "x"}) == 202
    # and the workload's LLM jobs wait in OUTBOUND_DLQ, the queue the parent did not empty
    wait_for(lambda: len(dlq_ids(healed, "OUTBOUND_DLQ")) >= 1, "a job in OUTBOUND_DLQ")
    down, param = parse("postgres-down")
    down.heal(healed, param)
    assert set(late) <= set(dlq_ids(healed, "WEBHOOKS_DLQ"))

    assert cli_main(["resume", parent.name]) == runner.EXIT["ok"]
    child = runs(outputs)[-1]
    crec = record_of(child)
    assert crec["outcome"] == "ok", crec["error"]
    # linked to the parent, resumed at the drain
    assert crec["resume"]["from"] == parent.name
    assert crec["resume"]["failed_step"] == DRAIN_STEP
    assert verify_run(parent).ok  # the parent's sealed folder is untouched
    steps = {s["name"]: s for s in crec["steps"]}
    assert steps[TRIAGE_STEP]["status"] == "skipped"
    assert steps[TRIAGE_STEP]["note"] == f"done in run {parent.name}"
    # not triaged again: the parent's branch, recorded as such
    branch = crec["decisions"]["Triage: branch"]
    assert branch["choice"] == "service failed"
    assert branch["reason"].startswith(f"from run {parent.name}")
    # the drains the parent completed did not run twice: the late webhooks still wait
    assert drain_calls(child, "webhooks") == [] and drain_calls(child, "enrichment") == []
    assert "No lost webhooks: WEBHOOKS_DLQ drained" not in checks(crec)
    assert set(late) <= set(dlq_ids(healed, "WEBHOOKS_DLQ"))
    # the drain's postcondition was read first, and says what it found
    decision = crec["decisions"][f"resume: {DRAIN_STEP}"]
    assert decision["choice"] == "run it again"
    assert f"WEBHOOKS_DLQ drained in run {parent.name}" in decision["reason"]
    # what the parent left is drained
    assert checks(crec)["No lost LLM work: OUTBOUND_DLQ drained"]["status"] == "passed"
    assert drain_calls(child, "outbound")
    # the late webhooks are not lost: a drain of their own stores them
    status, _ = healed.api("/api/v1/admin/dlq/webhooks/drain?limit=100", method="POST", admin=True)
    assert status == 200
    rows = healed.query("SELECT event_id FROM webhook_events WHERE event_id = ANY(%s)", (late,))
    assert {r[0] for r in rows} == set(late)


def test_database_down_resumed_after_a_failed_restart_checks_before_restarting_again(
    sandbox, healed, outputs
) -> None:
    from runbook.scenarios.database_down import SERVICE_STEP

    # the parent: Postgres will not start, the runbook's restart fails, it hands over
    healed.fault("postgres-crash")
    code, parent = runner.run("database_down", {}, quiet=True)
    rec = record_of(parent)
    assert code == runner.EXIT["dod_not_met"], rec["error"]
    assert rec["decisions"]["Branch after the restart"]["choice"].startswith("database corrupt")
    assert checks(rec)["Postgres answers SELECT 1 after the restart"]["status"] == "failed"

    # someone fixes the setting and starts Postgres by hand; then the run is resumed
    fault, param = parse("postgres-crash")
    fault.heal(healed, param)
    assert cli_main(["resume", str(parent)]) == runner.EXIT["ok"]
    child = runs(outputs)[-1]
    crec = record_of(child)
    assert crec["outcome"] == "ok", crec["error"]
    assert crec["resume"]["from"] == parent.name
    assert crec["resume"]["failed_step"] == SERVICE_STEP
    # the restart's postcondition was checked first: Postgres answers, so no second restart
    assert [c["what"] for c in crec["changes"] if "restart" in c["what"]] == []
    decision = crec["decisions"][f"resume: {SERVICE_STEP}"]
    assert decision["choice"] == "skip: its effect is already there"
    assert "SELECT 1 answers" in decision["reason"]
    steps = {s["name"]: s for s in crec["steps"]}
    assert steps[SERVICE_STEP]["status"] == "skipped"
    assert "its effect is already there" in steps[SERVICE_STEP]["note"]
    # the branch is the parent's triage's, and the steps after the fix now run
    assert crec["decisions"]["Triage: branch"]["choice"] == "service failed"
    assert checks(crec)["Deep health postgres green"]["status"] == "passed"
