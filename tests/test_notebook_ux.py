"""What an operator reads: the confirmation question, progress while a cell waits,
and the outputs of an executed notebook, end to end against the sandbox.

Each run goes through `runbook run` (papermill, a real kernel); the tests read
the executed notebook's outputs and the run's commands.jsonl, as a person
reading the evidence would.
"""

from __future__ import annotations

import json
import re
import shlex
import shutil
import subprocess
import sys
from pathlib import Path
from typing import Any

import nbformat
import pytest

ROOT = Path(__file__).resolve().parents[1]


@pytest.fixture(autouse=True)
def outputs(tmp_path, monkeypatch):
    monkeypatch.setenv("RUNBOOK_OUTPUTS", str(tmp_path / "outputs"))


def run(*args: str) -> tuple[int, str, Path]:
    p = subprocess.run(
        [sys.executable, "-m", "runbook.cli", "run", *args],
        capture_output=True,
        text=True,
        timeout=900,
        cwd=ROOT,
    )
    evidence = next(
        line.split(":", 1)[1].strip()
        for line in p.stdout.splitlines()
        if line.startswith("evidence:")
    )
    return p.returncode, p.stdout + p.stderr, Path(evidence)


def events(run_dir: Path, kind: str) -> list[dict[str, Any]]:
    lines = (run_dir / "commands.jsonl").read_text().splitlines()
    return [e for e in map(json.loads, lines) if e.get("kind") == kind]


def cell_outputs(notebook: Path, source: str) -> list[dict[str, Any]]:
    """The outputs of the one code cell whose source starts with `source`."""
    nb = nbformat.read(notebook, as_version=4)
    [cell] = [c for c in nb.cells if c.cell_type == "code" and c.source.startswith(source)]
    return list(cell.get("outputs", []))


def streams(outputs: list[dict[str, Any]]) -> list[str]:
    return [ln for o in outputs if o["output_type"] == "stream" for ln in o["text"].splitlines()]


def unreadable(notebook: Path) -> list[str]:
    """Cell results a person should not have to read: bare True/False, {}, an empty
    DataFrame, a float with many digits, a multi-line dict or list repr."""
    nb = nbformat.read(notebook, as_version=4)
    found = []
    for i, cell in enumerate(nb.cells):
        for out in cell.get("outputs", []):
            if out["output_type"] != "execute_result":
                continue
            text = out["data"].get("text/plain", "")
            if (
                text in ("True", "False", "{}", "[]", "None")
                or text.startswith("Empty DataFrame")
                or re.fullmatch(r"-?\d+\.\d{5,}", text)
                or (text[:1] in "{[" and "\n" in text)
            ):
                found.append(f"cell {i}: {text[:80]!r}")
    return found


def verdicts(notebook: Path) -> int:
    """How many times the definition-of-done table is shown."""
    nb = nbformat.read(notebook, as_version=4)
    return sum(
        "DEFINITION OF DONE"
        in (out.get("data") or {}).get("text/html", "")
        + (out.get("data") or {}).get("text/plain", "")
        + (out.get("text") or "")
        for cell in nb.cells
        for out in cell.get("outputs", [])
    ) + sum(
        # a returned table (execute_result) of the done() cell would show it a second time
        1
        for cell in nb.cells
        if cell.source.strip() == "s.done()"
        for out in cell.get("outputs", [])
        if out["output_type"] == "execute_result"
    )


# ------------------------------------------------------------- item 2: the question


@pytest.fixture
def rehearsal(sandbox, tmp_path, monkeypatch) -> str:
    """A non-sandbox environment (kind: staging) that points at the sandbox."""
    params = tmp_path / "parameters"
    shutil.copytree(ROOT / "parameters", params)
    text = (params / "sandbox.yaml").read_text()
    (params / "rehearsal.yaml").write_text(
        text.replace("name: sandbox", "name: rehearsal").replace("kind: sandbox", "kind: staging")
    )
    monkeypatch.setenv("RUNBOOK_PARAMETERS_DIR", str(params))
    return "rehearsal"


def test_a_rehearsal_deploy_confirms_the_change_it_will_make_not_the_lock(
    sandbox, healed, rehearsal
) -> None:
    healed.heal()
    for _ in range(3):
        healed.add_ci_run("success")
    healed.fault("good-deploy")
    new = healed.state["deploy_faults"]["good-deploy"]
    code, out, run_dir = run(
        "deploy", "--env", rehearsal, "--confirm", rehearsal, "-p", "watch_minutes", "0.05"
    )
    assert code == 0, out
    [confirmed] = events(run_dir, "confirmation")
    assert confirmed["how"] == "parameter" and confirmed["environment"] == rehearsal
    summary = confirmed["summary"]
    assert re.fullmatch(
        rf"deploy [0-9a-f]{{12}} -> {new['pushed'][:12]} \(origin/main\), "
        r"pip install -r requirements",
        summary[0],
    ), summary
    assert summary[1].startswith("migrations to apply (from "), summary
    assert summary[1].endswith(f": {new['revision']} ({new['revision']}_lead_tags.py)"), summary
    assert summary[2] == "restart dealix-api (supervisor)", summary
    assert not any("mkdir" in line or "owner.json" in line for line in summary), summary
    # headless, the log says what the parameter confirmed, before the first change
    take = cell_outputs(run_dir / "deploy.ipynb", "dep.take_lock()")
    shown = streams(take)
    assert shown[0] == f"confirmed by confirm='{rehearsal}':", shown
    assert shown[1:4] == [f"  - {line}" for line in summary[:3]], shown
    first_change = next(
        e for e in events(run_dir, "command") if e.get("changing") and "exit_code" in e
    )
    log = (run_dir / "commands.jsonl").read_text()
    assert log.index('"kind": "confirmation"') < log.index(json.dumps(first_change["command"]))


# ------------------------------------------------- items 3 and 4: progress, outputs


def test_the_watch_stops_at_the_first_red_poll_and_says_so(sandbox, healed) -> None:
    healed.heal()
    for _ in range(3):
        healed.add_ci_run("success")
    healed.fault("good-deploy")
    healed.fault("sentry-spike")  # 120 errors/min from now on, whatever is deployed
    code, out, run_dir = run("deploy", "-p", "watch_minutes", "0.5")
    assert code == 3, out
    watch = cell_outputs(run_dir / "deploy.ipynb", "dep.watch()")
    lines = [ln for ln in streams(watch) if ln.startswith("watch")]
    polls = [ln for ln in lines if ln.startswith("watch (0.5 min on sandbox):")]
    # a line per poll, and the last poll is the red one: nothing was polled after it
    rates = [
        tuple(map(float, re.search(r"errors ([\d.]+)/min \(baseline ([\d.]+)\)", ln).groups()))
        for ln in polls
    ]

    def red(rate: float, baseline: float) -> bool:
        return rate > max(2 * baseline, baseline + 5)

    assert rates and red(*rates[-1]), lines
    assert not any(red(*r) for r in rates[:-1]), lines
    assert lines[-1].startswith("watch stopped at the first red poll"), lines
    assert f"errors {rates[-1][0]:.1f}/min over baseline" in lines[-1], lines
    [stopped] = [e for e in events(run_dir, "deploy") if e.get("event") == "watch stopped"]
    assert stopped["why"].startswith("stopped at the first red poll")
    record = json.loads((run_dir / "record.json").read_text())
    checks = {c["name"]: c for c in record["checks"]}
    assert checks["No error spike during the watch"]["status"] == "failed"
    result = [o for o in watch if o["output_type"] == "execute_result"]
    assert result[0]["data"]["text/plain"].startswith("watch: stopped at the first red poll")
    # the rest of the notebook reads as sentences, the verdict once
    assert unreadable(run_dir / "deploy.ipynb") == []
    assert verdicts(run_dir / "deploy.ipynb") == 1


def test_a_bad_deploy_and_its_rollback_read_as_lines_with_one_rollback_time(
    sandbox, healed
) -> None:
    healed.heal()
    for _ in range(3):
        healed.add_ci_run("success")
    healed.fault("bad-deploy")
    code, out, deploy_dir = run("deploy", "-p", "watch_minutes", "0.05")
    assert code == 3, out
    nb = deploy_dir / "deploy.ipynb"
    # the deep-health wait after the restart is not silent: a line per poll
    waits = [
        ln
        for ln in streams(cell_outputs(nb, "dep.verify_health()"))
        if ln.startswith("waiting for deep health green: ")
    ]
    assert len(waits) >= 3 and all("postgres red" in ln for ln in waits), waits
    assert unreadable(nb) == [] and verdicts(nb) == 1
    take = cell_outputs(nb, "dep.take_lock()")
    assert not any("mkdir" in ln for ln in streams(take)), take
    [lock] = [o["data"]["text/plain"] for o in take if o["output_type"] == "execute_result"]
    assert lock.startswith("host lock taken: ") and "\n" not in lock

    nxt = next(ln for ln in out.splitlines() if ln.startswith("next:")).split(":", 1)[1].strip()
    code, out, rb_dir = run(*shlex.split(nxt)[2:])
    assert code == 0, out
    nb = rb_dir / "rollback.ipynb"
    assert unreadable(nb) == [] and verdicts(nb) == 1
    # one rollback time on the page
    texts = [
        o.get("text", "") + (o.get("data") or {}).get("text/plain", "")
        for cell in nbformat.read(nb, as_version=4).cells
        if not cell.source.startswith("s.done()")
        for o in cell.get("outputs", [])
    ]
    times = [t for t in texts if "rollback complete" in t.lower() or "to rollback complete" in t]
    assert len(times) == 1 and times[0].startswith("rollback complete: "), times
    # the error-rate read says what it sees while it waits
    rates = streams(cell_outputs(nb, "rb.error_rate()"))
    assert rates and all(ln.startswith("Sentry error rate (baseline ") for ln in rates), rates


def test_the_health_check_shows_its_verdict_once(sandbox, healed) -> None:
    healed.heal()
    for _ in range(3):
        healed.add_ci_run("success")
    code, out, run_dir = run("health_check")
    assert code == 0, out
    nb = run_dir / "health_check.ipynb"
    assert verdicts(nb) == 1 and unreadable(nb) == []


def test_the_restore_drill_reads_as_lines(sandbox, healed) -> None:
    code, out, run_dir = run("restore_drill")
    assert code == 0, out
    nb = run_dir / "restore_drill.ipynb"
    assert verdicts(nb) == 1 and unreadable(nb) == []
    [pre] = [
        o for o in cell_outputs(nb, "drill.preflight()") if o["output_type"] == "execute_result"
    ]
    assert pre["data"]["text/plain"].startswith("preflight: dealix-")
    [numbers] = [
        o for o in cell_outputs(nb, "drill.teardown()") if o["output_type"] == "execute_result"
    ]
    assert numbers["data"]["text/plain"].startswith("drill numbers: ")
    assert "0 failed check(s)" in numbers["data"]["text/plain"]


def test_an_incident_restore_reads_as_lines(sandbox, healed) -> None:
    healed.fault("db-corrupt")
    code, out, run_dir = run("restore_incident", "-p", "reason", "page 0 unreadable")
    assert code == 0, out
    nb = run_dir / "restore_incident.ipynb"
    assert verdicts(nb) == 1 and unreadable(nb) == []
    lines = {
        c.source.splitlines()[0]: o["data"]["text/plain"]
        for c in nbformat.read(nb, as_version=4).cells
        for o in c.get("outputs", [])
        if o["output_type"] == "execute_result"
    }
    assert lines["incident.snapshot()"].endswith("the damage took them")
    assert lines["incident.swap()"].startswith("swap: dealix renamed to dealix_corrupt_")
    assert lines["incident.start_api()"] == "API: /health/deep 200 green"
    assert lines["incident.loss_window()"].startswith("data-loss window: ")


def results(notebook: Path) -> dict[str, str]:
    """Each code cell's returned line, by the cell's statement (its comments left out)."""
    out = {}
    for c in nbformat.read(notebook, as_version=4).cells:
        code = [ln for ln in c.source.splitlines() if ln.strip() and not ln.startswith("#")]
        for o in c.get("outputs", []):
            if code and o["output_type"] == "execute_result":
                out[code[-1].split("  #")[0].rstrip(";")] = o["data"]["text/plain"]
    return out


def test_database_down_reads_as_lines(sandbox, healed) -> None:
    healed.fault("postgres-down")
    code, out, run_dir = run("database_down")
    assert code == 0, out
    nb = run_dir / "database_down.ipynb"
    assert unreadable(nb) == [] and verdicts(nb) == 1
    lines = results(nb)
    assert lines["dd.triage()"].startswith("branch: service failed: the Postgres service")
    assert lines["dd.service_failed()"].startswith(
        "service failed: postgres restarted, SELECT 1 answers"
    )
    assert lines["dd.recheck()"].startswith("re-check: deep health postgres green")
    # the postmortem's five lines and where the whole draft is, not its timeline
    said = streams(cell_outputs(nb, "dd.postmortem()"))
    assert (
        said[0].startswith("# ") and "## Timeline (UTC: steps, decisions and changes)" not in said
    )
    assert said[-1].startswith("the whole draft (timeline, checks, evidence): ")
    # its resolution names the fix, not the host lock's mkdir
    [resolution] = [ln for ln in said if ln.startswith("4. **Resolution:**")]
    assert "restart postgresql" in resolution and "lock" not in resolution, resolution


def test_an_llm_failover_reads_as_lines(sandbox, env_restored) -> None:
    env_restored.fault("llm-down:anthropic")
    code, out, run_dir = run("llm_provider_down", "-p", "failover_after_minutes", "0")
    assert code == 0, out
    nb = run_dir / "llm_provider_down.ipynb"
    assert unreadable(nb) == [] and verdicts(nb) == 1
    lines = results(nb)
    assert lines["llm.assess()"].startswith("decision: failover: the primary anthropic")
    assert lines["llm.assess()"].endswith("new LLM_PROVIDER_PRIORITY openai,google,anthropic")
    assert "→ openai,google,anthropic" in lines["llm.failover()"]
    assert lines["llm.failover()"].endswith("the API serves from openai")
    assert lines["llm.recover()"].startswith("recovery: llm_providers green; OUTBOUND_DLQ ")
    assert lines["llm.no_new_failures()"].startswith("no new failures: LLM DLQs ")
    # the sampling wait says what it waits for
    said = streams(cell_outputs(nb, "llm.assess()"))
    assert any("reading again in" in ln for ln in said), said


def test_a_security_response_reads_as_lines(sandbox, healed) -> None:
    healed.fault("intrusion")
    code, out, run_dir = run("security_incident")
    assert code == 0, out
    nb = run_dir / "security_incident.ipynb"
    assert unreadable(nb) == [] and verdicts(nb) == 1
    lines = results(nb)
    assert lines["sec.preflight()"].startswith("preflight: the server sees this connection from ")
    assert lines["sec.rotate()"].startswith(
        "rotation: ADMIN_KEY replaced, WEBHOOK_SECRET replaced; new admin key 200, "
        "old admin key 401"
    )
    assert lines["sec.lock_down()"].startswith("lockdown: ")
    assert lines["sec.ban()"].startswith("ban: attackers 198.51.100.23, 203.0.113.66")
    # the logins table reads to the second (the auth log's microseconds left out)
    [logins] = [
        o["data"]["text/plain"]
        for o in cell_outputs(nb, "findings = sec.investigate()")
        if o["output_type"] == "execute_result"
    ]
    assert "203.0.113.66" in logins and not re.search(r"\d\d:\d\d:\d\d\.\d", logins), logins


def test_progress_updates_one_line_in_place_in_a_jupyterlab_kernel(tmp_path) -> None:
    """In a kernel a Jupyter server started (JPY_SESSION_NAME set), a wait's progress is one
    display updated in place, not a stream of lines; headless it is a line per poll."""
    import os

    from jupyter_client.manager import start_new_kernel

    code = (
        "from runbook.core.output import Progress\n"
        "p = Progress('watch', seconds=30)\n"
        "for t in (4, 8, 12):\n"
        "    p.say('deep health green', waited=t)\n"
    )
    env = {k: v for k, v in os.environ.items() if k != "RUNBOOK_RUN_DIR"}
    km, kc = start_new_kernel(
        kernel_name="dealix-runbook", env={**env, "JPY_SESSION_NAME": "lab/deploy.ipynb"}
    )
    try:
        msgs: list[dict[str, Any]] = []
        reply = kc.execute_interactive(code, timeout=60, output_hook=msgs.append)
        assert reply["content"]["status"] == "ok", reply["content"]
    finally:
        kc.stop_channels()
        km.shutdown_kernel(now=True)
    kinds = [m["msg_type"] for m in msgs if m["msg_type"] not in ("status", "execute_input")]
    assert kinds == ["display_data", "update_display_data", "update_display_data"], kinds
    last = [m for m in msgs if m["msg_type"] == "update_display_data"][-1]
    assert last["content"]["data"]["text/plain"] == "watch: deep health green (12 s of 30 s)"
    # headless (papermill, runbook run): a line per poll
    p = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, env=env, check=True
    )
    assert p.stdout.splitlines() == [
        f"watch: deep health green ({t} s of 30 s)" for t in (4, 8, 12)
    ]
