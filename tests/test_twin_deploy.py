"""deploy, rollback, llm_provider_down, health_check and review against the production twin.

Each notebook runs as the operator would run it on production:
`runbook twin exec -- runbook run NOTEBOOK --env twin [--confirm twin] -p ...`, a
subprocess with the twin's names and CA. The tests read the run's record AND
the twin itself over SSH (git HEAD in /opt/dealix, alembic's revision through
`sudo -n -u postgres psql`, `systemctl is-active dealix-api`, .last_good_sha,
.env and its backups), the API's DLQ depths at https://api.dealix.me, and what
the SaaS stubs received through the "internet" container at the real
hostnames (its nginx access log, the stubs' state).

Faults are the rehearsal wing's (lib/runbook/rehearsal/faults/deploy.py), the sandbox's
names; every test heals what it applied.
"""

from __future__ import annotations

import base64
import csv
import json
import subprocess
import sys
import threading
import time
import urllib.request
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from conftest import twin_exec

pytestmark = pytest.mark.twin

RUNBOOK = str(Path(sys.executable).with_name("runbook"))
WATCH = "0.05"  # minutes: three seconds of watching exercises the loop


@pytest.fixture(scope="module")
def outputs(tmp_path_factory) -> Path:
    """One outputs/ for the module: the review at the end reads the runs before it."""
    return tmp_path_factory.mktemp("twin-deploy") / "outputs"


@pytest.fixture
def healed(twin) -> Iterator[Any]:
    yield twin
    twin.heal()


def run(
    twin, outputs: Path, scenario: str, *params: str, confirm: bool = True, timeout: float = 900
) -> tuple[subprocess.CompletedProcess, dict[str, Any], Path]:
    """`runbook run SCENARIO --env twin [--confirm twin] -p K V ...` on the runner side."""
    argv = [RUNBOOK, "run", scenario, "--env", "twin"]
    it = iter(params)
    for name in it:
        argv += ["-p", name, next(it)]
    if confirm:
        argv += ["--confirm", "twin"]
    before = set(outputs.glob(f"twin/{scenario}/*/record.json"))
    got = twin_exec(
        twin,
        argv,
        env={"RUNBOOK_OUTPUTS": str(outputs), "PYTHONDONTWRITEBYTECODE": "1"},
        timeout=timeout,
    )
    new = sorted(set(outputs.glob(f"twin/{scenario}/*/record.json")) - before)
    assert new, f"no record written\n{got.stdout[-3000:]}\n{got.stderr[-3000:]}"
    return got, json.loads(new[-1].read_text()), new[-1].parent


def checks(record: dict[str, Any]) -> dict[str, dict[str, Any]]:
    return {c["name"]: c for c in record["checks"]}


def failed(record: dict[str, Any]) -> list[Any]:
    """The failed checks (name, actual), and the error if the run stopped on one."""
    out: list[Any] = [(c["name"], c["actual"]) for c in record["checks"] if c["status"] == "failed"]
    if (record.get("error") or {}).get("type") not in (None, "DefinitionOfDoneNotMet"):
        out.append((record.get("failed_step"), record["error"]))
    return out


def server(twin) -> dict[str, Any]:
    """The twin as it is now, read over SSH and through https://api.dealix.me."""
    out = twin.ssh(
        "cd /opt/dealix && git rev-parse HEAD && "
        "(cd / && sudo -n -u postgres psql -d dealix -Atc 'SELECT version_num FROM alembic_version')"
        " && (cat .last_good_sha 2>/dev/null || echo -) && "
        "(systemctl is-active dealix-api || true) && systemctl show -p MainPID --value dealix-api"
        " && (ls -1 .env.bak.* 2>/dev/null | paste -sd' ' || true) && echo END && "
        "grep '^LLM_PROVIDER_PRIORITY=' .env && git --git-dir=/srv/git/dealix.git rev-parse main"
    ).stdout.splitlines()
    code, body = twin.https_get("/health")
    return {
        "head": out[0],
        "revision": out[1],
        "last_good": None if out[2] == "-" else out[2],
        "api": out[3],
        "api_pid": out[4],
        "env_backups": out[5].split() if out[5] != "END" else [],
        "priority": out[-2].split("=", 1)[1].strip('"'),
        "origin_main": out[-1],
        "running": json.loads(body).get("sha") if code == 200 else None,
    }


def stub_state(twin) -> dict[str, Any]:
    """What the SaaS stubs hold (loopback-only control endpoint)."""
    with urllib.request.urlopen(twin.state["stubs_url"] + "/_stub/state", timeout=10) as r:  # noqa: S310
        return json.loads(r.read())


def internet_log(twin) -> list[str]:
    """The internet container's nginx access log: every request that came in by a real name."""
    log = twin.dir / "internet" / "root" / "var" / "log" / "nginx" / "access.log"
    return log.read_text(errors="replace").splitlines() if log.exists() else []


def dlq_depths(twin) -> dict[str, int]:
    """OUTBOUND_DLQ / ENRICHMENT_DLQ lengths through the API on the twin (admin key)."""
    key = twin.secrets()["DEALIX_ADMIN_KEY"]
    # the key goes in on stdin (curl -H @-), never on a command line
    proc = subprocess.run(
        twin.ssh_argv("curl -sf -H @- https://api.dealix.me/api/v1/admin/dlq/stats"),
        input=f"X-API-Key: {key}\n",
        capture_output=True,
        text=True,
        timeout=30,
        check=True,
    )
    queues = json.loads(proc.stdout)["queues"]
    return {q: int(queues[q]) for q in ("OUTBOUND_DLQ", "ENRICHMENT_DLQ")}


def drain_dlqs(twin) -> None:
    """Replay whatever the LLM DLQs hold, through the API's admin drain (the provider is up)."""
    key = twin.secrets()["DEALIX_ADMIN_KEY"]
    for queue in ("outbound", "enrichment"):
        subprocess.run(
            twin.ssh_argv(
                "curl -sf -X POST -H @- "
                f"'https://api.dealix.me/api/v1/admin/dlq/{queue}/drain?limit=1000'"
            ),
            input=f"X-API-Key: {key}\n",
            capture_output=True,
            text=True,
            timeout=120,
            check=True,
        )


def queued_jobs(twin) -> list[str]:
    """The job ids in the LLM DLQs, read with redis-cli on the twin."""
    out = twin.ssh(
        "redis-cli --raw LRANGE OUTBOUND_DLQ 0 -1; redis-cli --raw LRANGE ENRICHMENT_DLQ 0 -1"
    ).stdout
    return [json.loads(line)["job_id"] for line in out.splitlines() if line.startswith("{")]


def replayed(twin, jobs: list[str]) -> set[str]:
    """Which of `jobs` the API recorded in llm_calls (psql on the twin)."""
    ids = ",".join("'" + j.replace("'", "") + "'" for j in jobs)
    out = twin.ssh(
        "cd / && sudo -n -u postgres psql -d dealix -Atc "  # noqa: S608 (ids we read)
        f'"SELECT job_id FROM llm_calls WHERE job_id IN ({ids})"'
    ).stdout
    return set(out.split())


# ------------------------------------------------------------------ deploy


def test_ci_red_aborts_the_deploy_before_any_change(twin, healed, outputs) -> None:
    twin.fault("good-deploy")
    twin.fault("ci-red")
    before = server(twin)
    log_before = len(internet_log(twin))
    got, record, _ = run(twin, outputs, "deploy", "watch_minutes", WATCH)
    assert got.returncode == 4 or record["outcome"] == "refused", (got.returncode, record)
    assert record["outcome"] == "refused" and record["changes"] == []
    assert checks(record)["CI green on main"]["status"] == "failed"
    assert "ci-green-before-deploy" in record["error"]["message"]
    assert server(twin) == before
    # the query reached "GitHub" by its real name, through the internet container
    seen = internet_log(twin)[log_before:]
    assert any("/repos/VoXc2/dealix/actions/runs" in line for line in seen), seen[-5:]


def test_good_deploy_goes_live_on_the_twin(twin, healed, outputs) -> None:
    before = server(twin)
    twin.fault("good-deploy")
    new = twin.state["deploy_faults"]["good-deploy"]
    stubs_before = stub_state(twin)
    log_before = len(internet_log(twin))
    got, record, _ = run(twin, outputs, "deploy", "watch_minutes", WATCH)
    assert got.returncode == 0 and record["outcome"] == "ok", (failed(record), got.stderr[-2000:])
    assert record["environment"] == "twin" and twin.state["host"] in str(record["target"])
    after = server(twin)
    # the pushed SHA is checked out, migrated and running under systemd
    assert after["head"] == after["running"] == new["pushed"] == after["origin_main"]
    assert after["revision"] == new["revision"] != before["revision"]
    assert after["api"] == "active" and after["api_pid"] != before["api_pid"]
    assert after["last_good"] == before["head"]
    assert len(after["env_backups"]) == len(before["env_backups"]) + 1
    c = checks(record)
    assert f"{before['revision']} -> {new['revision']}" in c["Migrations at head"]["actual"]
    assert "after" in c["Sentry probe received"]["actual"]
    assert "after" in c["PostHog probe received"]["actual"]
    steps = [s["name"] for s in record["steps"]]
    assert steps[:4] == [
        "1. Verify CI green on main",
        "2. Take the host lock",
        "Preflight: armor on the server",
        "3. Snapshot current state",
    ]
    assert record["lock"]["held"] is False
    # the app's probe went out from the twin to sentry.io and eu.i.posthog.com, and the
    # runner read it back from both APIs
    stubs = stub_state(twin)
    event_ids = {e["event_id"] for e in stubs["sentry"]["events"]} - {
        e["event_id"] for e in stubs_before["sentry"]["events"]
    }
    assert event_ids, "no Sentry event arrived at sentry.io"
    assert any(e.get("event") == "sentry_check" for e in stubs["posthog"]["events"][-20:]), (
        "no sentry_check event at eu.i.posthog.com"
    )
    # and all of it went through the internet container: the app's event from the twin
    # (.2), the runner's reads of both APIs from this machine (.1)
    seen = internet_log(twin)[log_before:]
    server_ip, runner_ip = twin.state["host"], twin.state["operator_ip"]
    sentry_project = twin.state["sentry_project_id"]

    def saw(ip: str, request: str) -> bool:
        return any(line.startswith(ip + " ") and request in line for line in seen)

    assert saw(server_ip, f"POST /api/{sentry_project}/"), seen[-10:]
    assert saw(server_ip, "POST /capture/"), seen[-10:]
    assert saw(runner_ip, "GET /api/0/projects/dealix/dealix-api/events/"), seen[-10:]
    assert saw(runner_ip, "GET /api/projects/@current/events/"), seen[-10:]
    assert saw(runner_ip, "GET /repos/VoXc2/dealix/actions/runs"), seen[-10:]


def test_bad_deploy_then_rollback_on_the_twin(twin, healed, outputs) -> None:
    before = server(twin)
    twin.fault("bad-deploy")
    bad = twin.state["deploy_faults"]["bad-deploy"]
    got, record, run_dir = run(twin, outputs, "deploy", "watch_minutes", WATCH)
    assert got.returncode != 0 and record["outcome"] == "dod_not_met", failed(record)
    deep = checks(record)["Deep health"]
    assert deep["status"] == "failed" and "postgres red" in deep["actual"]
    now = server(twin)
    assert now["head"] == now["running"] == bad["pushed"] and now["revision"] == bad["revision"]
    assert now["last_good"] == before["head"]
    detected = [
        json.loads(ln)
        for ln in (run_dir / "commands.jsonl").read_text().splitlines()
        if '"bad deploy detected"' in ln
    ]
    assert detected and detected[0]["sha"] == bad["pushed"]
    assert "--env twin" in detected[0]["rollback"] and "--confirm twin" in detected[0]["rollback"]
    # the bad code's errors reach Sentry until the checkout leaves it
    twin.fault("sentry-spike")
    time.sleep(12)  # at least one whole 10 s Sentry bucket of the spike

    got, record, rb_dir = run(
        twin, outputs, "rollback", "reason", "deep health red after deploy", "issue_number", "42"
    )
    assert got.returncode == 0 and record["outcome"] == "ok", (failed(record), got.stderr[-2000:])
    after = server(twin)
    assert after["head"] == after["running"] == before["head"]
    assert after["revision"] == before["revision"]
    assert after["api"] == "active"
    c = checks(record)
    assert c["Healthy on the last good SHA"]["status"] == "passed"
    assert c["Sentry error rate at baseline"]["status"] == "passed"
    rates = next(
        json.loads(ln)
        for ln in (rb_dir / "commands.jsonl").read_text().splitlines()
        if '"error-rate"' in ln
    )
    assert rates["during_bad_deploy_per_min"] > rates["baseline_per_min"], rates
    assert rates["after_rollback_per_min"] < rates["during_bad_deploy_per_min"], rates
    # the spike unit on the twin ended on its own when the rollback left the bad SHA
    unit = twin.ssh("systemctl is-active dealix-sentry-spike || true").stdout.strip()
    assert unit in ("inactive", "failed", "unknown"), unit
    timing = json.loads((rb_dir / "rollback_timing.json").read_text())
    assert timing["bad_sha"] == bad["pushed"] and timing["detected_in_run"] == str(run_dir)
    assert 0 < timing["seconds_to_complete"] < timing["target_seconds"] == 300
    print(
        f"\nmeasured on the twin: {timing['seconds_from_detection']:.1f} s from 'bad deploy "
        f"detected' to 'rollback complete' ({timing['seconds_to_complete']:.1f} s in the rollback)"
    )
    names = [s["name"] for s in record["steps"]]
    assert names.index("3. Downgrade migrations (bad code still checked out)") < names.index(
        "4. Check out the last good SHA + pip install"
    )
    # the announcement is a comment on GitHub issue 42, at api.github.com
    comments = stub_state(twin)["github"]["comments"]
    assert any(
        str(x["issue_number"]) == "42" and "deep health red" in x["body"] for x in comments
    ), comments[-3:]
    assert any(
        '"POST /repos/VoXc2/dealix/issues/42/comments' in line for line in internet_log(twin)
    )


def test_error_spike_during_the_watch_fails_the_deploy(twin, healed, outputs) -> None:
    before = server(twin)
    twin.fault("good-deploy")
    twin.fault("sentry-spike")  # errors from now on, for as long as the old HEAD is in the checkout
    new = twin.state["deploy_faults"]["good-deploy"]
    got, record, _ = run(twin, outputs, "deploy", "watch_minutes", "0.5")
    assert record["outcome"] == "dod_not_met" and got.returncode != 0, failed(record)
    assert [f[0] for f in failed(record)] == ["No error spike during the watch"], failed(record)
    after = server(twin)
    assert after["running"] == new["pushed"] and after["last_good"] == before["head"]


# ------------------------------------------------------------------ llm_provider_down


@pytest.fixture
def env_restored(twin) -> Iterator[Any]:
    """.env on the twin as it was (a failover edits it), its backups removed, the API restarted."""
    original = twin.ssh("base64 -w0 /opt/dealix/.env").stdout.strip()
    yield twin
    twin.heal()
    # what a failed run left queued would make the next test's health check red
    drain_dlqs(twin)
    twin.ssh(
        f'cd /opt/dealix && if [ "$(base64 -w0 .env)" != {original!r} ]; then '
        f"echo {original} | base64 -d > .env && systemctl restart dealix-api; fi; rm -f .env.bak.*"
    )
    from runbook.rehearsal.state import settle

    settle(twin)


def wait_for(pred, timeout: float = 90, what: str = "condition") -> None:
    deadline = time.monotonic() + timeout
    while not pred():
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out waiting for {what}")
        time.sleep(1)


def test_llm_down_long_enough_fails_over_on_the_twin(twin, env_restored, outputs) -> None:
    env_before = twin.ssh("base64 -w0 /opt/dealix/.env").stdout.strip()
    twin.fault("llm-down:anthropic")
    wait_for(lambda: sum(dlq_depths(twin).values()) >= 4, what="LLM jobs in the DLQs")
    jobs = queued_jobs(twin)
    got, record, run_dir = run(twin, outputs, "llm_provider_down", "failover_after_minutes", "0")
    assert record["decisions"]["Decision"]["choice"] == "failover", failed(record)
    assert got.returncode == 0 and record["outcome"] == "ok", (failed(record), got.stderr[-2000:])
    c = checks(record)
    assert c["API serves from the new primary"]["actual"] == "openai"
    assert c["OUTBOUND_DLQ back to zero"]["status"] == "passed"
    assert c["ENRICHMENT_DLQ back to zero"]["status"] == "passed"
    now = server(twin)
    assert now["priority"] == "openai,google,anthropic" and now["api"] == "active"
    assert dlq_depths(twin) == {"OUTBOUND_DLQ": 0, "ENRICHMENT_DLQ": 0}
    assert jobs and replayed(twin, jobs) == set(jobs)  # every queued job was replayed
    # the old .env was backed up, byte for byte, before the edit
    backups = now["env_backups"]
    assert backups
    old = twin.ssh(f"base64 -w0 /opt/dealix/{backups[-1]}").stdout.strip()
    assert old == env_before
    assert base64.b64decode(old) != base64.b64decode(twin.ssh("base64 -w0 /opt/dealix/.env").stdout)
    # the direct calls went to the providers' real names, and no key is in the evidence
    log = (run_dir / "commands.jsonl").read_text()
    assert "https://api.anthropic.com/v1/messages" in log
    sec = twin.secrets()
    for name in ("ANTHROPIC_API_KEY", "OPENAI_API_KEY", "GOOGLE_API_KEY"):
        for p in run_dir.rglob("*"):
            if p.is_file():
                assert sec[name] not in p.read_text(errors="replace"), (name, p)


def test_llm_down_briefly_breaker_protects_then_recovers(twin, env_restored, outputs) -> None:
    twin.fault("llm-down:anthropic")
    wait_for(lambda: sum(dlq_depths(twin).values()) >= 2, what="LLM jobs in the DLQs")
    jobs = queued_jobs(twin)

    def recover_after_decision() -> None:
        def decided() -> bool:
            for rec in outputs.glob("twin/llm_provider_down/*/record.json"):
                try:
                    if rec.stat().st_mtime > started and "Decision" in json.loads(
                        rec.read_text()
                    ).get("decisions", {}):
                        return True
                except (ValueError, OSError):
                    continue
            return False

        wait_for(decided, timeout=300, what="the notebook's decision")
        twin.fault("llm-recover:anthropic")

    started = time.time()
    helper = threading.Thread(target=recover_after_decision, daemon=True)
    helper.start()
    got, record, _ = run(twin, outputs, "llm_provider_down", "recovery_wait_minutes", "2")
    helper.join(5)
    assert record["decisions"]["Decision"]["choice"] == "breaker is protecting us, no action"
    assert got.returncode == 0 and record["outcome"] == "ok", (failed(record), got.stderr[-2000:])
    now = server(twin)
    assert now["priority"] == "anthropic,openai,google" and now["env_backups"] == []
    assert dlq_depths(twin) == {"OUTBOUND_DLQ": 0, "ENRICHMENT_DLQ": 0}
    assert jobs and replayed(twin, jobs) == set(jobs)


# ------------------------------------------------------------------ health_check, review


def test_health_check_on_the_twin_names_the_red_ci(twin, healed, outputs) -> None:
    twin.fault("ci-red")
    got, record, _ = run(twin, outputs, "health_check", confirm=False)
    assert got.returncode == 3 and record["outcome"] == "dod_not_met", record["checks"]
    assert [f[0] for f in failed(record)] == ["CI status"], failed(record)
    status = {c["name"]: c["status"] for c in record["checks"]}
    # systemd, nginx and fail2ban are real on the twin: passed, not "not available"
    assert status["Service status"] == status["Nginx"] == status["fail2ban"] == "passed", status


def test_review_reads_the_twin_runs(twin, outputs) -> None:
    """Appendix C over this module's twin runs (a real environment: kind production)."""
    runs = {
        p.parent.name: json.loads(p.read_text())
        for p in outputs.glob("twin/*/*/record.json")
        if "/review/" not in str(p)
    }
    assert runs, "run the other tests of this module first (the review reads their records)"
    _, record, run_dir = run(twin, outputs, "review", "outputs_dir", str(outputs), confirm=False)
    assert record["environment"] == "twin" and record["environment_kind"] == "production"
    c = checks(record)
    # every command of the twin runs ended as accepted: nothing for the runbook to fix,
    # and the host lock's "is anyone holding it?" probe is not a failed command
    clean = c["No command failed in a real incident since the last review"]
    assert clean["status"] == "passed", clean
    # the review saw each scenario's newest twin run with its outcome
    with (run_dir / "last_runs.csv").open() as fh:
        last = {row["scenario"]: row for row in csv.DictReader(fh)}
    for rec in runs.values():
        row = last[rec["scenario"]]
        assert row["environment"] == "twin" and row["due"] == "False", row
    newest = {}
    for rec in sorted(runs.values(), key=lambda r: r["started"]):
        newest[rec["scenario"]] = rec["outcome"]
    assert {s: last[s]["outcome"] for s in newest} == newest
