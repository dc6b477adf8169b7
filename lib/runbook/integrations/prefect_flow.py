"""The runbook on Prefect 3 (the optional extra: `pip install .[prefect]`), self-hosted.

One flow, `runbook`, runs `runbook run SCENARIO --env ENV` as a subprocess
(never papermill: the runner's lock, record, seal, notifications and redaction
all hold) and ends in the state its exit code means (the table is
runbook.integrations.schedule's). Each attempt is a task run; a read-only
check is tried once more after an error of the run (exit 1, 6, 7), a drill
never. The record's story and the evidence folder become a markdown artifact,
its checks a table artifact, both keyed per scenario and environment.

The flow refuses a changing scenario itself, before anything runs: a person
can start a deployment with other parameters from the UI, and the schedule's
refusal must hold there too.

`runbook schedule serve --env staging --env production` builds one deployment
per scenario and environment (cron in UTC, concurrency limit 1) and serves them
from this process (`prefect.serve`): each run is a subprocess of it.

    PREFECT_API_URL=http://127.0.0.1:4200/api runbook schedule serve --env staging
"""

from __future__ import annotations

import os
import signal
import subprocess
from pathlib import Path
from typing import Any, cast

from prefect import flow, serve, task
from prefect.artifacts import create_markdown_artifact, create_table_artifact
from prefect.client.schemas.objects import State
from prefect.deployments.runner import RunnerDeployment
from prefect.schedules import Cron
from prefect.states import Cancelled, Completed, Crashed, Failed

from runbook.evidence import liveness
from runbook.evidence.record import read_record
from runbook.integrations import schedule

FLOW_NAME = "runbook"
# what the flow's log shows of the runner's terminal story (it is redacted already)
OUTPUT_TAIL_LINES = 40


@task(name="runbook-run", retries=0)
def run_once(scenario: str, env: str) -> dict[str, Any]:
    """One `runbook run`: its exit code, its folder (if it made one) and its output's tail."""
    argv = schedule.command(scenario, env)
    print("$ runbook " + " ".join(argv[3:]))
    proc = subprocess.Popen(
        argv,
        stdin=subprocess.DEVNULL,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
    )
    try:
        output, _ = proc.communicate()
    except BaseException:
        # the flow is being stopped (cancelled from the UI, the serve process ends): the
        # runner ends cleanly on SIGINT (teardown, record), as under systemd's KillSignal
        proc.send_signal(signal.SIGINT)
        output, _ = proc.communicate()
        raise
    tail = "\n".join(output.splitlines()[-OUTPUT_TAIL_LINES:])
    print(tail)
    run_dir = schedule.run_dir_of(output, scenario, env, proc.pid)
    record = read_record(run_dir)
    if proc.returncode < 0 and run_dir is not None and (record or {}).get("outcome") == "running":
        # killed without a verdict: finish its record as abandoned, as the next run would
        liveness.finish(run_dir, finisher=f"prefect flow run (pid {os.getpid()})")
        record = read_record(run_dir)
    return {
        "code": proc.returncode,
        "run_dir": str(run_dir) if run_dir else None,
        "record": record,
        "tail": tail,
    }


@flow(name=FLOW_NAME, retries=0, log_prints=True, validate_parameters=True)
def runbook_flow(scenario: str, env: str, retries: int = 0) -> State:
    """Run one scenario on one environment; the state is the run's verdict."""
    why = schedule.refusal(scenario)
    if why is None and retries and schedule.changes(scenario):
        why = f"{scenario} changes things: it is never retried (retries must be 0, not {retries})"
    if why is not None:
        # nothing ran: said in the artifact too, so the UI shows why
        create_markdown_artifact(
            markdown=f"## {scenario} on {env}: refused, nothing ran\n\n{why}\n",
            key=schedule.artifact_key(scenario, env),
            description="refused before it ran",
        )
        return Failed(name="Refused", message=f"refused: {why}")
    attempts = 0
    while True:
        attempts += 1
        result = run_once.with_options(task_run_name=f"runbook run {scenario} #{attempts}")(
            scenario, env
        )
        verdict = schedule.verdict(result["code"], result["record"], scenario, env)
        if not (verdict.retry and attempts <= retries):
            break
        print(f"{verdict.message}: trying again ({attempts} of {retries + 1})")
    run_dir = result["run_dir"]
    folder = Path(run_dir) if run_dir else None
    key = schedule.artifact_key(scenario, env)
    create_markdown_artifact(
        markdown=schedule.summary_markdown(
            verdict, result["record"], folder, result["tail"], attempts
        ),
        key=key,
        description=verdict.message,
    )
    rows = schedule.checks_table(result["record"])
    if rows:
        create_table_artifact(table=rows, key=f"{key}-checks", description=verdict.message)
    message = verdict.message + (f"; evidence: {run_dir}" if run_dir else "")
    make = {"COMPLETED": Completed, "CANCELLED": Cancelled, "CRASHED": Crashed}.get(
        verdict.state, Failed
    )
    return make(name=verdict.name, message=message)


def deployments(entries: list[schedule.Entry]) -> list[RunnerDeployment]:
    """One deployment per entry: cron in UTC, concurrency limit 1, its scenario's retries."""
    # to_deployment dispatches on the caller: from sync code it returns the deployment,
    # a coroutine only when awaited from async code (its type says both)
    return [
        cast(
            RunnerDeployment,
            runbook_flow.to_deployment(
                name=e.name,
                schedules=[Cron(e.cron, timezone="UTC")],
                parameters={"scenario": e.scenario, "env": e.env, "retries": e.retries},
                concurrency_limit=1,
                tags=["runbook", e.kind, f"env-{e.env}"],
                description=f"runbook run {e.scenario} --env {e.env} ({e.kind}), cron {e.cron} UTC",
            ),
        )
        for e in entries
    ]


def serve_entries(entries: list[schedule.Entry]) -> None:
    """Register the deployments and run their flow runs from this process until stopped.

    Schedules stay active when it stops (a restart of the serve unit must not pause
    next month's drill); `prefect deployment pause` pauses one deliberately."""
    serve(*deployments(entries), pause_on_shutdown=False)
