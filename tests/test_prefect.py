"""The Prefect 3 extra against a real local Prefect server (SQLite) and the real sandbox.

One server per module (`prefect server start` on a free port, PREFECT_HOME in a
temporary folder, the UI off) and one `runbook schedule serve --env sandbox`
process that registers the deployments and runs their flow runs, as it would
in production. The tests trigger the deployments as a person would from the
UI (`run_deployment`) and read back what the server holds: the state, the
artifacts, the deployment's schedule and concurrency limit. Every flow run
goes through `runbook run` as a subprocess, so each reads a real record.

In the sandbox lane (marked "sandbox": scripts/check's fast run leaves the
whole module out, the server included).
"""

from __future__ import annotations

import json
import os
import re
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest

# the extra is installed by scripts/setup.sh: a missing one fails here, never skips
from prefect.client.orchestration import get_client
from prefect.client.schemas.filters import (
    ArtifactFilter,
    ArtifactFilterFlowRunId,
    DeploymentFilter,
    DeploymentFilterId,
)
from prefect.deployments import run_deployment
from prefect.settings import PREFECT_API_URL, PREFECT_HOME, temporary_settings

from runbook.integrations import schedule

pytestmark = pytest.mark.sandbox

ROOT = Path(__file__).resolve().parents[1]
# generous bounds for a loaded 2-core machine; they end a hang, they time nothing
SERVER_READY_S = 180
DEPLOYED_S = 180
RUN_S = 900


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def _prefect_env(home: Path, url: str) -> dict[str, str]:
    return {
        **os.environ,
        "PREFECT_HOME": str(home),
        "PREFECT_API_URL": url,
        "PREFECT_UI_ENABLED": "false",
        "PREFECT_SERVER_ANALYTICS_ENABLED": "false",
        "DO_NOT_TRACK": "1",
        # the scheduler looks for due schedules every 5 s instead of 60 s: a run set for
        # "every minute" is created in time for the next minute (test_the_schedule_fires)
        "PREFECT_SERVER_SERVICES_SCHEDULER_LOOP_SECONDS": "5",
    }


def _stop(proc: subprocess.Popen, log: Path) -> None:
    proc.terminate()
    try:
        proc.wait(30)
    except subprocess.TimeoutExpired:
        proc.kill()
        proc.wait()


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[dict[str, Any]]:
    home = tmp_path_factory.mktemp("prefect-home")
    url = f"http://127.0.0.1:{_free_port()}/api"
    env = _prefect_env(home, url)
    log = home / "server.log"
    port = url.rsplit(":", 1)[1].split("/")[0]
    t0 = time.monotonic()
    with log.open("w") as out:
        proc = subprocess.Popen(
            [
                sys.executable,
                "-m",
                "prefect",
                "server",
                "start",
                "--host",
                "127.0.0.1",
                "--port",
                port,
            ],
            env=env,
            stdout=out,
            stderr=subprocess.STDOUT,
            stdin=subprocess.DEVNULL,
        )
    try:
        deadline = time.monotonic() + SERVER_READY_S
        while True:
            try:
                if httpx.get(f"{url}/health", timeout=2).status_code == 200:
                    break
            except httpx.HTTPError:
                pass
            if proc.poll() is not None or time.monotonic() > deadline:
                pytest.fail(f"the Prefect server did not start:\n{log.read_text()[-3000:]}")
            time.sleep(0.5)
        # measured, printed, never asserted on (`pytest -s` shows it)
        print(f"prefect server ready in {time.monotonic() - t0:.1f} s")
        with temporary_settings(updates={PREFECT_API_URL: url, PREFECT_HOME: str(home)}):
            yield {"url": url, "home": home, "env": env}
    finally:
        _stop(proc, log)


@pytest.fixture(scope="module")
def served(
    server: dict[str, Any], sandbox: Any, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[dict[str, Any]]:
    """`runbook schedule serve --env sandbox` (the drill and the health check), running."""
    outputs = tmp_path_factory.mktemp("prefect-outputs")
    log = server["home"] / "serve.log"
    env = {**server["env"], "RUNBOOK_OUTPUTS": str(outputs)}
    argv = [sys.executable, "-m", "runbook.cli", "schedule", "serve", "--env", "sandbox"]
    argv += ["--scenario", "restore_drill", "--scenario", "health_check"]
    with log.open("w") as out:
        proc = subprocess.Popen(
            argv, cwd=ROOT, env=env, stdout=out, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL
        )
    try:
        deadline = time.monotonic() + DEPLOYED_S
        with get_client(sync_client=True) as client:
            while True:
                try:
                    client.read_deployment_by_name("runbook/health_check-sandbox")
                    break
                except Exception:
                    if proc.poll() is not None or time.monotonic() > deadline:
                        pytest.fail(f"runbook schedule serve did not deploy:\n{log.read_text()}")
                    time.sleep(1)
        yield {"outputs": outputs, "log": log}
    finally:
        _stop(proc, log)


def _run(name: str, **parameters: Any) -> tuple[Any, dict[str, Any]]:
    """Trigger a deployment as the UI does, wait for its end; its flow run and artifacts."""
    t0 = time.monotonic()
    flow_run = run_deployment(
        f"runbook/{name}", parameters=parameters or None, timeout=RUN_S, poll_interval=2
    )
    print(f"{name} {parameters or ''}: {flow_run.state.name} in {time.monotonic() - t0:.1f} s")
    with get_client(sync_client=True) as client:
        artifacts = client.read_artifacts(
            artifact_filter=ArtifactFilter(flow_run_id=ArtifactFilterFlowRunId(any_=[flow_run.id]))
        )
    return flow_run, {a.key: a for a in artifacts}


def _evidence(markdown: str) -> Path:
    line = next(x for x in markdown.splitlines() if x.startswith("- evidence: `"))
    return Path(line.split("`")[1])


def test_the_deployments_have_their_cron_and_a_concurrency_limit_of_one(served) -> None:
    with get_client(sync_client=True) as client:
        drill = client.read_deployment_by_name("runbook/restore_drill-sandbox")
        check = client.read_deployment_by_name("runbook/health_check-sandbox")
    for dep, cron, retries in ((drill, "0 4 1 * *", 0), (check, "*/30 * * * *", 1)):
        # the deployment's own global concurrency limit: a second run waits for the first
        assert dep.global_concurrency_limit is not None
        assert dep.global_concurrency_limit.limit == 1 and dep.global_concurrency_limit.active
        assert [(s.schedule.cron, s.schedule.timezone, s.active) for s in dep.schedules] == [
            (cron, "UTC", True)
        ]
        assert dep.parameters == {"scenario": dep.name.split("-")[0], "env": "sandbox"} | {
            "retries": retries
        }


def test_two_runs_of_one_deployment_never_overlap(served, healed) -> None:
    """The concurrency limit at work: two health checks started at once run one after
    the other; the second waits for a slot. A read-only check, end to end."""
    first = run_deployment("runbook/health_check-sandbox", timeout=0)
    second = run_deployment("runbook/health_check-sandbox", timeout=0)
    deadline = time.monotonic() + 2 * RUN_S
    with get_client(sync_client=True) as client:
        runs = [client.read_flow_run(r.id) for r in (first, second)]
        while not all(r.state and r.state.is_final() for r in runs):
            assert time.monotonic() < deadline, [r.state for r in runs]
            time.sleep(2)
            runs = [client.read_flow_run(r.id) for r in (first, second)]
        histories = [[st.name for st in client.read_flow_run_states(r.id)] for r in runs]
    print(f"health_check twice: {[r.state.name for r in runs]}, {histories}")
    for run in runs:
        # each ran `runbook run health_check` and ended in the state its exit code means
        assert run.state.message.startswith("health_check on sandbox: "), run.state
    early, late = sorted(runs, key=lambda r: r.start_time)
    assert early.end_time <= late.start_time, (early.end_time, late.start_time)
    assert any("AwaitingConcurrencySlot" in h for h in histories), histories


def test_a_deployment_runs_the_drill_on_the_sandbox_and_completes(served, healed) -> None:
    flow_run, artifacts = _run("restore_drill-sandbox")
    key = schedule.artifact_key("restore_drill", "sandbox")
    assert flow_run.state.type.value == "COMPLETED", (flow_run.state, served["log"].read_text())
    assert flow_run.state.message.startswith("restore_drill on sandbox: ok (exit 0)")
    summary = artifacts[key].data
    run_dir = _evidence(summary)
    record = json.loads((run_dir / "record.json").read_text())
    # the run was `runbook run`'s own: its record, sealed, in the serve process's outputs
    assert record["outcome"] == "ok" and record["exit_code"] == 0
    assert run_dir.is_relative_to(served["outputs"]) and (run_dir / "MANIFEST.sha256").is_file()
    assert re.search(r"^outcome: +ok \(exit 0\)$", summary, re.M), summary
    rows = json.loads(artifacts[f"{key}-checks"].data)
    assert {r["check"]: r["status"] for r in rows}["Restore completed"] == "passed"


def test_a_failing_drill_ends_failed_with_its_record_attached(served, healed) -> None:
    healed.fault("corrupt-backup")
    flow_run, artifacts = _run("restore_drill-sandbox")
    key = schedule.artifact_key("restore_drill", "sandbox")
    state = flow_run.state
    assert (state.type.value, state.name) == ("FAILED", "Failed"), state
    assert "dod_not_met (exit 3)" in state.message and "Restore completed" in state.message
    summary = artifacts[key].data
    record = json.loads((_evidence(summary) / "record.json").read_text())
    assert record["outcome"] == "dod_not_met"
    assert "check failed: Restore completed" in summary and "- record: `" in summary
    failed = [r for r in json.loads(artifacts[f"{key}-checks"].data) if r["status"] == "failed"]
    assert [r["check"] for r in failed] == ["Restore completed"]
    assert "unexpected end of file" in failed[0]["actual"]
    # a drill is never retried: one attempt, one task run
    assert "- attempts: 1" in summary


def test_a_changing_scenario_is_refused_by_the_flow_and_by_the_cli(served, server) -> None:
    # a person starts the drill's deployment from the UI with another scenario
    flow_run, artifacts = _run("restore_drill-sandbox", scenario="deploy")
    assert (flow_run.state.type.value, flow_run.state.name) == ("FAILED", "Refused")
    assert "deploy changes the target" in flow_run.state.message
    assert "nothing ran" in artifacts[schedule.artifact_key("deploy", "sandbox")].data
    assert not (served["outputs"] / "sandbox" / "deploy").exists()
    # a drill's retries stay 0 whatever the run's parameters say
    flow_run, _ = _run("restore_drill-sandbox", retries=2)
    assert flow_run.state.name == "Refused" and "never retried" in flow_run.state.message
    # and the schedule itself: refused with the reason, exit 2, nothing registered
    proc = subprocess.run(
        [
            *(sys.executable, "-m", "runbook.cli", "schedule", "serve", "--env", "sandbox"),
            *("--scenario", "health_check", "--scenario", "rollback=0 4 * * *"),
        ],
        cwd=ROOT,
        env=server["env"],
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert proc.returncode == 2, proc
    assert "rollback changes the target" in proc.stderr and "nothing registered" in proc.stderr
    with get_client(sync_client=True) as client:
        names = {d.name for d in client.read_deployments()}
    assert "rollback-sandbox" not in names
    assert names == {"restore_drill-sandbox", "health_check-sandbox"}


def test_no_sandbox_secret_reaches_the_prefect_server_or_its_logs(served, server) -> None:
    """Last in the file: what the runs above left on the server (flow run logs, states,
    artifacts: its SQLite database) and in the serve process's log holds no secret."""
    from runbook.core.profile import load_profile
    from runbook.core.secrets import read_env_file

    secrets = {
        k: v for k, v in read_env_file(Path(load_profile("sandbox").secrets.file)).items() if v
    }
    assert len(secrets) >= 5, secrets.keys()
    files = [*sorted(Path(server["home"]).glob("*.db*")), served["log"]]
    assert any(f.name.endswith(".db") and f.stat().st_size > 0 for f in files), files
    # the flow runs' logs are there to scan: the runner's story reached them (a flow run's
    # process sends its last logs as it exits, just after its final state: waited for)
    deadline = time.monotonic() + 60
    with get_client(sync_client=True) as client:
        while not any("outcome:" in log.message for log in client.read_logs()):
            assert time.monotonic() < deadline, "no flow run log reached the server"
            time.sleep(1)
    leaks = [
        f"{name} in {path}"
        for path in files
        for name, value in secrets.items()
        if len(value) >= 8 and value.encode() in path.read_bytes()
    ]
    assert not leaks, leaks


def test_the_schedule_fires_by_itself_and_the_state_is_the_records(server, sandbox) -> None:
    """Nobody triggers it: a deployment on a one-minute cron is run by the server's
    scheduler and the serve process, and its state is the one the record's exit code maps to."""
    outputs = server["home"] / "scheduled-outputs"
    log = server["home"] / "serve-review.log"
    env = {**server["env"], "RUNBOOK_OUTPUTS": str(outputs)}
    argv = [sys.executable, "-m", "runbook.cli", "schedule", "serve", "--env", "sandbox"]
    argv += ["--scenario", "review=* * * * *"]
    with log.open("w") as out:
        proc = subprocess.Popen(
            argv, cwd=ROOT, env=env, stdout=out, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL
        )
    name = "runbook/review-sandbox"
    try:
        deadline = time.monotonic() + DEPLOYED_S + 240  # deployed, then the next minute comes
        done = None
        with get_client(sync_client=True) as client:
            while done is None:
                assert proc.poll() is None, log.read_text()[-3000:]
                assert time.monotonic() < deadline, log.read_text()[-3000:]
                try:
                    dep = client.read_deployment_by_name(name)
                except Exception:
                    time.sleep(1)
                    continue
                runs = client.read_flow_runs(
                    deployment_filter=DeploymentFilter(id=DeploymentFilterId(any_=[dep.id]))
                )
                done = next(
                    (r for r in runs if r.auto_scheduled and r.state and r.state.is_final()), None
                )
                time.sleep(2)
        assert [s.schedule.cron for s in dep.schedules] == ["* * * * *"]
        assert done.auto_scheduled  # the scheduler made it, not a person or this test
        with get_client(sync_client=True) as client:
            artifacts = client.read_artifacts(
                artifact_filter=ArtifactFilter(flow_run_id=ArtifactFilterFlowRunId(any_=[done.id]))
            )
        summary = {a.key: a for a in artifacts}[schedule.artifact_key("review", "sandbox")].data
        run_dir = _evidence(summary)
        assert run_dir.is_relative_to(outputs)
        record = json.loads((run_dir / "record.json").read_text())
        want = schedule.verdict(record["exit_code"], record, "review", "sandbox")
        assert (done.state.type.value, done.state.name) == (want.state, want.name), done.state
        assert done.state.message.startswith(f"review on sandbox: {record['outcome']} (exit ")
    finally:
        _stop(proc, log)
        with get_client(sync_client=True) as client:
            try:
                client.delete_deployment(client.read_deployment_by_name(name).id)
            except Exception as exc:  # cleanup only: say why, never hide a test failure
                print(f"could not delete {name}: {exc}")
