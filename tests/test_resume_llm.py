"""`runbook resume` of scenario 4: a failover run that fails after its DLQ drain, resumed.

The parent fails over (anthropic down long enough), drains the LLM DLQs, and
then loses Redis while it measures that no new work fails (step 6): a fault
from outside the runbook, healed by hand. The resume measures again (read-only),
never fails over again (no second .env backup, no second restart) and never
drains again (no drain call in its commands log), and finishes step 6.
"""

from __future__ import annotations

import json
import threading
import time
from pathlib import Path
from typing import Any

import pytest
import redis

from runbook.cli import main as cli_main
from runbook.cli import run as runner
from runbook.evidence import history
from runbook.evidence.seal import verify_run
from runbook.rehearsal.faults import parse
from runbook.scenarios.llm_provider_down import (
    ASSESS_STEP,
    FAILOVER_STEP,
    ORDER_DECISION,
    RECOVERY_STEP,
    VERIFY_STEP,
)

# long enough for the fault to land inside step 6's two readings
SAMPLE = 20.0


@pytest.fixture(autouse=True)
def outputs(tmp_path, monkeypatch):
    monkeypatch.setenv("RUNBOOK_OUTPUTS", str(tmp_path / "outputs"))
    return tmp_path / "outputs"


def record_of(run_dir: Path) -> dict[str, Any]:
    return json.loads((run_dir / "record.json").read_text())


def llm_dlq_depth(sb) -> int:
    r = redis.Redis(port=sb.state["redis_port"], decode_responses=True)
    try:
        return int(r.llen("OUTBOUND_DLQ")) + int(r.llen("ENRICHMENT_DLQ"))
    finally:
        r.close()


def wait_for(pred, timeout: float, what: str) -> None:
    deadline = time.monotonic() + timeout
    while not pred():
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out waiting for {what}")
        time.sleep(0.2)


def stop_redis_after_the_drain(sb, outputs: Path) -> threading.Thread:
    """Stop Redis as soon as the running parent's record shows step 5 done."""

    def drained() -> bool:
        for rec in outputs.glob("sandbox/llm_provider_down/*/record.json"):
            try:
                steps = json.loads(rec.read_text()).get("steps") or []
            except (OSError, ValueError):
                continue
            if any(st["name"] == RECOVERY_STEP and st["status"] == "ok" for st in steps):
                return True
        return False

    def watch() -> None:
        wait_for(drained, timeout=600, what="the parent's step 5")
        sb.fault("redis-down")

    helper = threading.Thread(target=watch, daemon=True)
    helper.start()
    return helper


def drain_calls(run_dir: Path) -> list[str]:
    lines = (run_dir / "commands.jsonl").read_text().splitlines()
    return [line for line in lines if "/drain" in line]


def test_llm_failover_failed_after_the_drain_resumes_without_failing_over_or_draining_again(
    sandbox, env_restored, outputs
) -> None:
    sb = env_restored
    app = Path(sb.state["app_dir"])
    earlier = set(app.glob(".env.bak.*"))  # other runs' backups (a deploy's snapshot)
    sb.fault("llm-down:anthropic")
    wait_for(lambda: llm_dlq_depth(sb) >= 2, timeout=60, what="jobs in the LLM DLQs")

    # the parent: failover and drain done; Redis goes away while step 6 measures
    helper = stop_redis_after_the_drain(sb, outputs)
    params = {"failover_after_minutes": 0, "sample_seconds": SAMPLE}
    code, parent = runner.run("llm_provider_down", params, quiet=True)
    helper.join(5)
    rec = record_of(parent)
    assert code == runner.EXIT["failed"], rec["error"]
    assert rec["failed_step"] == VERIFY_STEP
    status = {s["name"]: s["status"] for s in rec["steps"]}
    assert status[FAILOVER_STEP] == "ok" and status[RECOVERY_STEP] == "ok"
    assert rec["decisions"][ORDER_DECISION]["choice"] == "openai,google,anthropic"
    assert drain_calls(parent)  # the parent drained
    backups = sorted(p.name for p in set(app.glob(".env.bak.*")) - earlier)
    assert len(backups) == 1  # the failover backed .env up once

    # healed by hand: Redis back; anthropic stays down
    fault, param = parse("redis-down")
    fault.heal(sb, param)
    assert cli_main(["resume", str(parent)]) == runner.EXIT["ok"]
    child = sorted(p.parent for p in outputs.glob("*/*/*/record.json"))[-1]
    crec = record_of(child)
    assert crec["outcome"] == "ok", crec["error"]
    assert crec["resume"]["from"] == parent.name
    assert crec["resume"]["failed_step"] == VERIFY_STEP
    assert crec["resume"]["skipped_steps"] == [FAILOVER_STEP, RECOVERY_STEP]
    steps = {s["name"]: s for s in crec["steps"]}
    for once in (FAILOVER_STEP, RECOVERY_STEP):
        assert steps[once]["status"] == "skipped", steps[once]
        assert steps[once]["note"] == f"done in run {parent.name}"
    assert steps[ASSESS_STEP]["status"] == "ok"  # read-only: measured again
    assert steps[VERIFY_STEP]["status"] == "ok"
    # neither done twice: no second .env backup or edit, no drain call in the resume
    assert sorted(p.name for p in set(app.glob(".env.bak.*")) - earlier) == backups
    assert 'LLM_PROVIDER_PRIORITY="openai,google,anthropic"' in (app / ".env").read_text()
    assert drain_calls(child) == []
    assert ORDER_DECISION not in crec["decisions"]
    # the records link both ways; the parent's sealed folder is untouched
    assert verify_run(parent).ok
    df = history.load(outputs)
    by_id = {Path(r).name: row for r, row in zip(df["run_dir"], df.to_dict("records"), strict=True)}
    assert by_id[parent.name]["resumed_by"] == child.name
    assert by_id[child.name]["resumed_from"] == parent.name
