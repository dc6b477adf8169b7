"""deploy.ipynb and rollback.ipynb against the sandbox: good and bad deploys, rollbacks.

Each notebook runs headless (papermill through `runbook.runner`), and the
test reads the run's record.json and the server itself (checkout, database
revision, `.last_good_sha`, the API's running SHA), not just the exit code.
The last test steps through both notebooks cell by cell in a live kernel,
as an operator in JupyterLab would.
"""

from __future__ import annotations

import json
import shlex
import subprocess
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import nbformat
import pytest
from nbclient import NotebookClient

from runbook.cli import run as runner
from runbook.ops import sentry
from runbook.sandbox import Sandbox
from runbook.sandbox.procs import http_get
from runbook.scenarios import _release as release

ROOT = Path(__file__).resolve().parents[1]
WATCH = 0.05  # minutes: three seconds of watching is enough to exercise the loop


@pytest.fixture(autouse=True)
def outputs(tmp_path, monkeypatch):
    monkeypatch.setenv("RUNBOOK_OUTPUTS", str(tmp_path / "outputs"))
    return tmp_path / "outputs"


def server(sb: Sandbox) -> dict[str, Any]:
    """What the server looks like now: checkout, database revision, last good SHA, API."""
    app = Path(sb.state["app_dir"])
    head = subprocess.run(
        ["git", "-C", str(app), "rev-parse", "HEAD"], capture_output=True, text=True, check=True
    ).stdout.strip()
    _, health = sb.api("/health")
    last_good = app / ".last_good_sha"
    return {
        "head": head,
        "revision": sb.query("SELECT version_num FROM alembic_version")[0][0],
        "last_good": last_good.read_text().strip() if last_good.exists() else None,
        "running": health.get("sha") if isinstance(health, dict) else None,
        "api_pid": sb.pid("dealix-api"),
        "env_backups": sorted(p.name for p in app.glob(".env.bak.*")),
    }


def run(scenario: str, **params: Any) -> tuple[int, dict[str, Any], Path]:
    code, run_dir = runner.run(scenario, params, quiet=True)
    record = json.loads((run_dir / "record.json").read_text())
    return code, record, run_dir


def checks(record: dict[str, Any]) -> dict[str, dict[str, Any]]:
    return {c["name"]: c for c in record["checks"]}


def shown(notebook: Path) -> str:
    """Everything the executed notebook's code cells printed or displayed."""
    nb = nbformat.read(notebook, as_version=4)
    return json.dumps([c.get("outputs", []) for c in nb.cells if c.cell_type == "code"])


def pushed(sb: Sandbox, fault: str) -> dict[str, Any]:
    return sb.state["deploy_faults"][fault]


# --------------------------------------------------------------------------
# unit tests of the pure helpers (no sandbox)


def test_snapshot_never_records_an_unhealthy_or_unrun_head() -> None:
    good, bad = "a" * 40, "b" * 40
    assert release.snapshot_decision(good, good, True)[0] is True
    # a half-failed deploy re-run: HEAD is the bad SHA and deep health is red
    assert release.snapshot_decision(bad, bad, False)[0] is False
    # checked out but the restart never happened (the API still runs the old code)
    write, why = release.snapshot_decision(bad, good, True)
    assert write is False and "not (successfully) deployed" in why
    assert release.snapshot_decision(good, None, True)[0] is False


def test_migration_chain_and_heads() -> None:
    revs = {"0001": None, "0002": "0001", "0003": "0002", "0004": "0003"}
    assert release.heads(revs) == ["0004"]
    assert release.migration_chain(revs, "0004", "0002") == ["0004", "0003"]
    assert release.migration_chain(revs, "0002", "0002") == []
    with pytest.raises(ValueError):
        release.migration_chain(revs, "0002", "0004")
    with pytest.raises(ValueError):
        release.migration_chain(revs, "0009", "0002")


def test_parse_migration_of_the_app_template() -> None:
    text = (ROOT / "sandbox/app/migrations/versions/0002_lead_notes.py").read_text()
    assert release.parse_migration(text) == ("0002", "0001")


def test_rollback_command_quotes_the_reason_and_confirms_off_the_sandbox() -> None:
    cmd = release.rollback_command("production", "it's red; rm -rf /", confirm=True)
    assert cmd.startswith("runbook run rollback --env production -p reason ")
    assert cmd.endswith("--confirm production")
    assert shlex.split(cmd)[7] == "it's red; rm -rf /"


def test_error_rate_and_buckets() -> None:
    buckets = [[100, 20], [110, 20], [120, 0], [130, 0]]
    assert sentry.per_minute(buckets, 100, 120) == 120.0
    assert sentry.per_minute(buckets, 120, 140) == 0.0
    assert sentry.per_minute(buckets, 121, 139) is None
    assert not release.error_rate_ok(120.0, 0.5)
    assert release.error_rate_ok(0.0, 0.5)


def _deploy_run(root: Path, name: str, *events: dict[str, Any]) -> Path:
    run_dir = root / name
    run_dir.mkdir(parents=True)
    lines = [json.dumps(e) for e in events]
    (run_dir / "commands.jsonl").write_text("\n".join(lines) + '\n{"ts": "2026-11-27T1')
    return run_dir


def test_find_detection_reads_the_newest_run_about_that_sha(tmp_path) -> None:
    bad, other = "b" * 40, "c" * 40

    def detected(ts: str, sha: str) -> dict[str, Any]:
        return {"ts": ts, "kind": "deploy", "event": "bad deploy detected", "sha": sha}

    _deploy_run(tmp_path, "20261127T100000Z-deploy", detected("2026-11-27T10:00:30.000Z", bad))
    rerun = _deploy_run(
        tmp_path,
        "20261127T101000Z-deploy",
        {"ts": "2026-11-27T10:10:00.000Z", "kind": "session", "event": "open"},
        detected("2026-11-27T10:10:40.500Z", bad),
    )
    _deploy_run(tmp_path, "20261127T102000Z-deploy", detected("2026-11-27T10:20:10.000Z", other))
    found = release.find_detection(tmp_path, bad)
    assert found is not None and found["run_dir"] == str(rerun)
    assert found["ts"] == "2026-11-27T10:10:40.500Z"
    assert found["at"] == datetime(2026, 11, 27, 10, 10, 40, 500000, tzinfo=UTC).timestamp()
    # only detections logged before the rollback completed
    until = datetime(2026, 11, 27, 10, 5, tzinfo=UTC).timestamp()
    assert release.find_detection(tmp_path, bad, until=until)["run_dir"].endswith("T100000Z-deploy")
    # never invented: no run about that SHA, no folder, no SHA
    assert release.find_detection(tmp_path, "d" * 40) is None
    assert release.find_detection(tmp_path / "missing", bad) is None
    assert release.find_detection(tmp_path, None) is None


def test_deep_green_needs_all_three_parts() -> None:
    body = {p: {"status": "green"} for p in release.DEEP_PARTS}
    assert release.deep_green(body)[0]
    body["llm_providers"]["status"] = "yellow"
    assert release.deep_green(body) == (
        False,
        "postgres green, redis green, llm_providers yellow",
    )


# --------------------------------------------------------------------------
# end to end against the sandbox


def test_good_deploy(sandbox, healed) -> None:
    before = server(healed)
    healed.fault("good-deploy")
    new = pushed(healed, "good-deploy")
    code, record, run_dir = run("deploy", watch_minutes=WATCH)
    assert code == 0, record["error"]
    assert record["outcome"] == "ok"
    assert all(c["status"] == "passed" for c in record["checks"]), record["checks"]
    # pull (main fast-forwards to origin's), migrate, restart: watched, none trips
    assert record["tripwire"]["checks"] >= 3 and record["tripwire"]["tripped"] is None
    after = server(healed)
    assert after["head"] == after["running"] == new["pushed"]  # the new SHA is live
    assert after["revision"] == new["revision"] != before["revision"]  # migration applied
    assert after["last_good"] == before["head"]  # the previous, healthy SHA
    assert len(after["env_backups"]) == len(before["env_backups"]) + 1
    c = checks(record)
    assert f"{before['revision']} -> {new['revision']}" in c["Migrations at head"]["actual"]
    assert "after" in c["Sentry probe received"]["actual"]
    assert "after" in c["PostHog probe received"]["actual"]
    steps = [s["name"] for s in record["steps"]]
    assert steps[0] == "1. Verify CI green on main" and "DoD. Watch window" in steps
    assert steps[1] == "2. Take the host lock" and steps[3] == "3. Snapshot current state"
    # the armor on the server, installed and read back right after the lock (runbook.ops.armor)
    assert steps[2] == "Preflight: armor on the server"
    armor = [c for c in record["checks"] if c["name"].startswith("Armor: ")]
    assert armor and all(c["status"] == "passed" for c in armor), armor
    assert (run_dir / "watch.png").stat().st_size > 1000
    assert record["lock"]["held"] is False  # released by done()


def test_ci_red_aborts_before_any_change(sandbox, healed) -> None:
    healed.fault("good-deploy")
    healed.fault("ci-red")
    before = server(healed)
    code, record, run_dir = run("deploy", watch_minutes=WATCH)
    assert code == runner.EXIT["refused"], record
    assert record["outcome"] == "refused"
    assert record["changes"] == []  # not even the host lock
    assert checks(record)["CI green on main"]["status"] == "failed"
    assert "ci-green-before-deploy" in record["error"]["message"]
    assert server(healed) == before
    # the runs were shown as a table
    assert "failure" in (run_dir / "deploy.ipynb").read_text()


def test_bad_deploy_rerun_and_rollback(sandbox, healed) -> None:
    before = server(healed)
    healed.fault("bad-deploy")
    bad = pushed(healed, "bad-deploy")

    code, record, run_dir = run("deploy", watch_minutes=WATCH)
    assert code != 0 and record["outcome"] == "dod_not_met"
    assert checks(record)["Deep health"]["status"] == "failed"
    assert "postgres red" in checks(record)["Deep health"]["actual"]
    out = shown(run_dir / "deploy.ipynb")
    assert "runbook run rollback --env sandbox -p reason" in out and "DEPLOY FAILED" in out
    now = server(healed)
    assert now["head"] == now["running"] == bad["pushed"]
    assert now["last_good"] == before["head"]
    # the bad code also throws errors: Sentry's rate spikes until the rollback
    healed.fault("sentry-spike")

    # The written runbook would now record the bad SHA as last good.
    code, record, rerun_dir = run("deploy", watch_minutes=WATCH)
    assert code != 0
    detected = [
        json.loads(ln)
        for ln in (rerun_dir / "commands.jsonl").read_text().splitlines()
        if '"bad deploy detected"' in ln
    ]
    assert len(detected) == 1 and detected[0]["sha"] == bad["pushed"]
    snap = checks(record)["Snapshot: .last_good_sha is a healthy SHA"]
    assert snap["actual"] == f"kept {before['head'][:12]}" and snap["status"] == "passed"
    assert server(healed)["last_good"] == before["head"] != bad["pushed"]

    code, record, run_dir = run("rollback", reason="deep health red after deploy", issue_number=42)
    assert code == 0, (record["error"], record["checks"])
    # one downgrade step and the checkout of the last good SHA do not trip
    assert record["tripwire"]["checks"] >= 2 and record["tripwire"]["tripped"] is None
    after = server(healed)
    assert after["head"] == after["running"] == before["head"]  # on the last good SHA
    assert after["revision"] == before["revision"]  # alembic at the previous head
    c = checks(record)
    assert c["Healthy on the last good SHA"]["status"] == "passed"
    assert c["Rollback time"]["status"] == "passed"
    timing = json.loads((run_dir / "rollback_timing.json").read_text())
    assert 0 < timing["seconds_to_complete"] < timing["target_seconds"] == 300
    # "bad deploy detected" (the re-run's line in its commands.jsonl) to "rollback complete"
    assert timing["bad_sha"] == bad["pushed"] and timing["detected_in_run"] == str(rerun_dir)
    assert timing["seconds_from_detection"] > timing["seconds_to_complete"]
    assert record["metrics"]["seconds_from_detection"]["value"] == timing["seconds_from_detection"]
    print(
        f"\nmeasured: {timing['seconds_from_detection']:.1f} s from 'bad deploy detected' "
        f"to 'rollback complete' ({timing['seconds_to_complete']:.1f} s in the rollback)"
    )
    assert c["Sentry error rate at baseline"]["status"] == "passed"
    # the spike was seen during the bad deploy, then the rate went back to the baseline
    rates = next(
        json.loads(ln)
        for ln in (run_dir / "commands.jsonl").read_text().splitlines()
        if '"error-rate"' in ln
    )
    assert rates["during_bad_deploy_per_min"] > rates["baseline_per_min"], rates
    assert rates["after_rollback_per_min"] < rates["during_bad_deploy_per_min"], rates
    assert "Downgrades allowed" not in c  # a decision, not a check that could not fail
    assert record["decisions"]["Downgrades"]["choice"] == "1 step(s)"
    names = [s["name"] for s in record["steps"]]
    assert (
        names.index("2. Determine what the bad deploy added")
        < names.index("3. Take the host lock")
        < names.index("3. Downgrade migrations (bad code still checked out)")
    )
    assert "commented on issue #42" in c["Announced"]["actual"]
    assert record["parameters"]["reason"] == "deep health red after deploy"
    assert "deep health red" in (run_dir / "announcement.txt").read_text()
    # the comment is on the (stub's) GitHub issue
    state = healed.state
    status, comments = http_get(
        f"{state['stubs_url']}/github/repos/{state['github_repo']}/issues/42/comments",
        headers={"Authorization": f"Bearer {healed.secrets()['GITHUB_TOKEN']}"},
    )
    assert status == 200 and any("deep health red" in x["body"] for x in comments)
    # the downgrade came before the checkout of the old code
    steps = [s["name"] for s in record["steps"]]
    assert steps.index("3. Downgrade migrations (bad code still checked out)") < steps.index(
        "4. Check out the last good SHA + pip install"
    )


def test_error_spike_during_the_watch_fails_the_deploy(sandbox, healed) -> None:
    before = server(healed)
    healed.fault("good-deploy")
    healed.fault("sentry-spike")  # 120 errors/min from now on, whatever is deployed
    new = pushed(healed, "good-deploy")
    # Sentry counts in 10 s buckets and only whole ones count: watch long enough for some
    code, record, run_dir = run("deploy", watch_minutes=0.5)
    assert code == runner.EXIT["dod_not_met"] and record["outcome"] == "dod_not_met", record
    c = checks(record)
    spike = c["No error spike during the watch"]
    assert spike["status"] == "failed", spike
    peak = float(spike["actual"].split()[1].removesuffix("/min"))
    baseline = float(spike["expected"].split("baseline ")[-1].split("/min")[0])
    assert peak > max(2 * baseline, baseline + 5)  # the stub's spike, above the threshold
    # everything else was fine: only the spike fails the definition of done
    assert [n for n, x in c.items() if x["status"] == "failed"] == [
        "No error spike during the watch"
    ]
    assert c["Deep health"]["status"] == "passed"
    out = shown(run_dir / "deploy.ipynb")
    assert "runbook run rollback --env sandbox -p reason" in out
    after = server(healed)
    assert after["running"] == new["pushed"] and after["last_good"] == before["head"]


def test_two_downgrades_need_approval(sandbox, healed) -> None:
    before = server(healed)
    healed.fault("good-deploy")
    healed.fault("bad-deploy")
    code, record, _ = run("deploy", watch_minutes=WATCH)
    assert code != 0
    broken = server(healed)
    assert broken["revision"] == pushed(healed, "bad-deploy")["revision"]

    code, record, _ = run("rollback", reason="two migrations to undo")
    assert code == runner.EXIT["refused"], record
    assert record["outcome"] == "refused" and record["changes"] == []
    assert "one-downgrade-step" in record["error"]["message"]
    assert server(healed) == broken

    # a dry run with the approval: would change, changes nothing
    code, record, _ = run(
        "rollback", reason="two migrations to undo", approved_by="Sami Assiri", dry_run=True
    )
    assert code == 0, record["error"]
    assert record["changes"] == [] and record["would_change"]
    assert any("downgrade -2" in w["what"] for w in record["would_change"])
    assert server(healed) == broken

    code, record, _ = run("rollback", reason="two migrations to undo", approved_by="Sami Assiri")
    assert code == 0, (record["error"], record["checks"])
    assert record["approved_by"] == "Sami Assiri"
    assert record["tripwire"]["tripped"] is None  # two steps, approved
    after = server(healed)
    assert after["head"] == after["running"] == before["head"]
    assert after["revision"] == before["revision"]


def test_drift_on_the_server_stops_the_deploy_before_anything_goes_live(sandbox, healed) -> None:
    healed.fault("good-deploy")
    # someone committed on the server (the runbook's "untracked production drift"); the
    # server's armor refuses that (runbook.ops.armor), so this root shell lifts it for the
    # one command, deliberately: core.hooksPath=/dev/null runs none of the armor's hooks
    subprocess.run(
        [
            "git",
            "-C",
            healed.state["app_dir"],
            "-c",
            "core.hooksPath=/dev/null",
            "-c",
            "user.name=someone",
            "-c",
            "user.email=someone@example.com",
            "commit",
            "-q",
            "--allow-empty",
            "-m",
            "hotfix",
        ],
        check=True,
    )
    before = server(healed)
    code, record, run_dir = run("deploy", watch_minutes=WATCH)
    assert code == runner.EXIT["failed"], record
    assert record["failed_step"] == "4. Pull + install + migrate"
    assert record["error"]["type"] == "CommandFailed" and "pull" in record["error"]["message"]
    out = shown(run_dir / "deploy.ipynb")
    assert "DEPLOY STOPPED" in out and "runbook run rollback" not in out
    after = server(healed)
    for key in ("head", "revision", "last_good", "running", "api_pid"):
        assert after[key] == before[key], key


def test_deploy_dry_run_changes_nothing(sandbox, healed) -> None:
    healed.fault("good-deploy")
    before = server(healed)
    code, record, _ = run("deploy", dry_run=True, watch_minutes=WATCH)
    assert code == 0, record["error"]
    assert record["changes"] == []
    kinds = " ".join(w["what"] for w in record["would_change"])
    assert "git" in kinds and "alembic" in kinds and "restart" in kinds
    assert server(healed) == before
    # the changes it skipped are "not run", never passed
    st = {c["name"]: (c["status"], c["actual"]) for c in record["checks"]}
    for name in (".env backed up", "Checked out the commit to deploy", "Migrations at head"):
        assert st[name] == ("not available", "not run (dry run)"), st
    assert st["Service restarted"] == ("not available", "not run (dry run)"), st


def test_rollback_needs_a_reason(sandbox, healed) -> None:
    before = server(healed)
    code, record, _ = run("rollback")
    assert code == runner.EXIT["parameters"]
    assert record["error"]["type"] == "ParameterError"
    assert "reason is required" in record["error"]["message"]
    assert record["changes"] == []
    assert server(healed) == before


def _step_through(path: Path, params: dict[str, Any]) -> nbformat.NotebookNode:
    """Execute a notebook cell by cell in a live kernel, as an operator would."""
    nb = nbformat.read(path, as_version=4)
    cell = next(c for c in nb.cells if "parameters" in c.metadata.get("tags", []))
    cell.source += "\n" + "\n".join(f"{k} = {v!r}" for k, v in params.items())
    client = NotebookClient(
        nb,
        kernel_name=runner.KERNEL_NAME,
        timeout=300,
        resources={"metadata": {"path": str(ROOT / "notebooks")}},
    )
    with client.setup_kernel():
        for index, c in enumerate(nb.cells):
            if c.cell_type == "code":
                client.execute_cell(c, index)  # raises CellExecutionError on an error
    return nb


def test_notebooks_step_through_in_a_live_kernel(sandbox, healed, outputs) -> None:
    before = server(healed)
    healed.fault("good-deploy")
    new = pushed(healed, "good-deploy")
    nb = _step_through(ROOT / "notebooks/deploy.ipynb", {"watch_minutes": WATCH})
    shown = json.dumps([c.get("outputs", []) for c in nb.cells])
    assert "DEFINITION OF DONE MET" in shown and "image/png" in shown
    assert server(healed)["running"] == new["pushed"]
    records = sorted(outputs.glob("sandbox/deploy/*/record.json"))
    assert json.loads(records[-1].read_text())["outcome"] == "ok"

    _step_through(ROOT / "notebooks/rollback.ipynb", {"reason": "rehearsal from JupyterLab"})
    after = server(healed)
    assert after["head"] == after["running"] == before["head"]
    assert after["revision"] == before["revision"]
    records = sorted(outputs.glob("sandbox/rollback/*/record.json"))
    assert json.loads(records[-1].read_text())["outcome"] == "ok"
    # a rehearsal of a healthy deploy: no "bad deploy detected" to measure from, and none invented
    timing = json.loads((records[-1].parent / "rollback_timing.json").read_text())
    assert timing["seconds_from_detection"] is None and timing["detected"] is None
