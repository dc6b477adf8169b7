"""Issue 12, parts 4 and 5: `runbook run` tells the story; a dry run shows what would change.

Every run here is `runbook run` as a subprocess against the sandbox, as an
operator at a terminal runs it, and the tests read what it printed: the
outcome, the failed step, each failed check as ``name: expected X, actual Y``,
the error and its details, and ``next: COMMAND``. Each next command is parsed
with shlex and by runbook's own argument parser, and its parameters pass the
runner's checks; the rollback and the lock-breaking ones are then run as
printed.
"""

from __future__ import annotations

import hashlib
import json
import os
import shlex
import shutil
import subprocess
import sys
from pathlib import Path
from typing import Any

import nbformat
import pytest

from runbook import cli
from runbook.cli import run as runner
from runbook.sandbox import Sandbox

ROOT = Path(__file__).resolve().parents[1]
RUNBOOK = [sys.executable, "-m", "runbook.cli"]
WATCH = "0.05"


@pytest.fixture(autouse=True)
def outputs(tmp_path, monkeypatch):
    monkeypatch.setenv("RUNBOOK_OUTPUTS", str(tmp_path / "outputs"))
    return tmp_path / "outputs"


def runbook(*args: str) -> tuple[int, str, dict[str, str]]:
    """`runbook ARGS` as a subprocess: exit code, stdout, and its `label: value` lines."""
    p = subprocess.run([*RUNBOOK, *args], capture_output=True, text=True, timeout=900, cwd=ROOT)
    facts: dict[str, str] = {}
    for line in p.stdout.splitlines():
        if line and not line.startswith(" ") and ":" in line:
            label, _, value = line.partition(":")
            facts.setdefault(label.strip(), value.strip())
    return p.returncode, p.stdout + p.stderr, facts


def record(facts: dict[str, str]) -> dict[str, Any]:
    return json.loads((Path(facts["evidence"]) / "record.json").read_text())


def valid_invocation(command: str) -> dict[str, Any]:
    """`command` is a `runbook run` line runbook accepts: returns its scenario and parameters."""
    words = shlex.split(command)
    assert words[:2] == ["runbook", "run"], command
    args = cli.build_parser().parse_args(words[1:])
    params = cli.run_parameters(args)
    runner.validate_parameters(args.scenario, params)
    return {"scenario": args.scenario, **params}


def run_as_printed(command: str, *extra: str) -> tuple[int, str, dict[str, str]]:
    return runbook(*shlex.split(command)[1:], *extra)


def server(sb: Sandbox) -> dict[str, Any]:
    """HEAD, every ref, the database's revision, .env's hash and the API's pid."""
    app = Path(sb.state["app_dir"])

    def git(*a: str) -> str:
        return subprocess.run(
            ["git", "-C", str(app), *a], capture_output=True, text=True, check=True
        ).stdout

    return {
        "head": git("rev-parse", "HEAD").strip(),
        "refs": git("for-each-ref"),
        "revision": sb.query("SELECT version_num FROM alembic_version")[0][0],
        "env_sha256": hashlib.sha256((app / ".env").read_bytes()).hexdigest(),
        "last_good": (app / ".last_good_sha").read_text()
        if (app / ".last_good_sha").exists()
        else None,
        "api_pid": sb.pid("dealix-api"),
    }


def origin_oneline(sb: Sandbox, sha: str) -> str:
    return subprocess.run(
        ["git", "-C", sb.state["app_dir"], "log", "--oneline", "-1", sha],
        capture_output=True,
        text=True,
        check=True,
    ).stdout.strip()


def lock_dir(sb: Sandbox) -> Path:
    return Path(sb.state["log_dir"]).parent / "lock" / "dealix-runbook.lock"


def plain_outputs(notebook: Path) -> list[str]:
    """Every text an executed notebook shows: streams and text/plain results."""
    nb = nbformat.read(notebook, as_version=4)
    texts = []
    for cell in nb.cells:
        for out in cell.get("outputs", []):
            if out.get("output_type") == "stream":
                texts.append(out["text"])
            elif "data" in out:
                texts.append(out["data"].get("text/plain", ""))
    return texts


# --------------------------------------------------------------------------


def test_ok_tells_the_outcome_no_next_and_the_evidence(sandbox, healed) -> None:
    code, out, facts = runbook("run", "health_check")
    assert code == 0, out
    assert facts["outcome"] == "ok (exit 0)"
    assert facts["next"] == "none: the run met its definition of done"
    assert Path(facts["evidence"]).is_dir() and "check failed" not in facts
    assert record(facts)["next_command"] is None


def test_bad_deploy_prints_the_failed_check_and_the_rollback_it_then_runs(sandbox, healed) -> None:
    before = server(healed)
    healed.fault("bad-deploy")
    bad = healed.state["deploy_faults"]["bad-deploy"]
    code, out, facts = runbook("run", "deploy", "-p", "watch_minutes", WATCH)
    assert code == runner.EXIT["dod_not_met"], out
    assert facts["outcome"] == "dod_not_met (exit 3)"
    assert facts["failed step"] == "6. Health verification"
    deep = next(ln for ln in out.splitlines() if ln.startswith("check failed: Deep health:"))
    assert "expected postgres + redis + llm_providers green, actual " in deep
    assert "postgres red" in deep
    nxt = facts["next"]
    assert nxt == record(facts)["next_command"]
    params = valid_invocation(nxt)
    assert (params["scenario"], params["env"]) == ("rollback", "sandbox")
    assert params["reason"].startswith(f"deploy of {bad['pushed'][:7]}: Deep health")
    # the notebook shows it as a plain line, never as a Python string repr
    shown = plain_outputs(Path(facts["evidence"]) / "deploy.ipynb")
    assert any(f"next: {nxt}\n" in t for t in shown), shown
    assert not any(t.startswith(("'", '"')) and "runbook run" in t for t in shown), shown

    # part 5: the rollback's dry run says what it would undo, and changes nothing
    broken = server(healed)
    code, out, facts = run_as_printed(nxt, "--dry-run")
    assert code == 0, out
    preview = record(facts)["preview"]
    leave = next(v for k, v in preview.items() if k.startswith("commits to leave"))
    assert leave == [origin_oneline(healed, bad["pushed"])]
    undo = next(v for k, v in preview.items() if k.startswith("migrations to undo"))
    assert undo == [bad["revision"]]
    assert preview["services to restart"] == ["dealix-api (supervisor restart)"]
    assert f"  {bad['revision']}" in out and "would change:" in out
    assert server(healed) == broken

    # the printed command, as printed, rolls back
    code, out, facts = run_as_printed(nxt)
    assert code == 0, out
    after = server(healed)
    assert after["head"] == before["head"] and after["revision"] == before["revision"]


def test_deploy_dry_run_previews_exactly_the_new_commit_and_migration(sandbox, healed) -> None:
    healed.fault("good-deploy")
    new = healed.state["deploy_faults"]["good-deploy"]
    before = server(healed)
    code, out, facts = runbook("run", "deploy", "--dry-run", "-p", "watch_minutes", WATCH)
    assert code == 0, out
    assert server(healed) == before  # HEAD, refs, alembic, .env, the API: untouched
    preview = record(facts)["preview"]
    commits = preview["commits (git log HEAD..origin/main --oneline)"]
    assert commits == [origin_oneline(healed, new["pushed"])]
    assert commits[0].endswith(f"Lead tags (migration {new['revision']})")
    migrations = next(v for k, v in preview.items() if k.startswith("migrations to apply"))
    assert migrations == [f"{new['revision']} ({new['revision']}_lead_tags.py)"]
    assert preview["services to restart"] == ["dealix-api (supervisor restart)"]
    assert preview[".env keys"][0].startswith("none: the deploy never edits")
    assert preview["checkout"] == [f"{before['head'][:12]} -> {new['pushed'][:12]} (origin/main)"]
    # the terminal shows the same, and the real run as the next command
    assert f"  {commits[0]}\n" in out and f"  {migrations[0]}\n" in out
    assert facts["mode"] == "dry run: nothing was changed"
    assert facts["next"] == f"runbook run deploy -p watch_minutes {WATCH}"
    valid_invocation(facts["next"])


def test_drift_failure_names_the_step_and_the_command(sandbox, healed) -> None:
    healed.fault("good-deploy")
    # a commit on the server, which the armor refuses: this root shell lifts the hooks
    # for the one command (core.hooksPath=/dev/null), as tests/test_deploy.py's drift test
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
    code, out, facts = runbook("run", "deploy", "-p", "watch_minutes", WATCH)
    assert code == runner.EXIT["failed"], out
    assert facts["outcome"] == "failed (exit 1)"
    assert facts["failed step"] == "4. Pull + install + migrate"
    assert facts["error"].startswith("CommandFailed: ") and "pull" in out
    assert facts["next"].startswith("none: ")  # nothing went live: no rollback to offer


def _ghost_lock(sb: Sandbox, *, stale: bool) -> Path:
    lock = lock_dir(sb)
    lock.mkdir(parents=True)
    ghost = {
        "operator": "ghost",
        "operator_host": "gone.example",
        "scenario": "deploy",
        "environment": "sandbox",
        "started": "2026-01-01T00:00:00Z",
    }
    (lock / "owner.json").write_text(json.dumps(ghost))
    (lock / "heartbeat").touch()
    if stale:
        os.utime(lock / "heartbeat", (1_700_000_000, 1_700_000_000))
    return lock


def test_lock_refusals_name_the_holder_and_for_a_dead_one_the_flag(sandbox) -> None:
    lock = _ghost_lock(sandbox, stale=False)
    try:
        code, out, facts = runbook("run", "restore_drill")
        assert code == runner.EXIT["refused"], out
        assert facts["outcome"] == "refused (exit 4)"
        assert "one-changing-run-per-host" in facts["error"]
        assert "ghost@gone.example" in out and "2026-01-01T00:00:00Z" in out
        assert facts["next"].startswith("none: ")  # a live holder: wait, do not break it
        shutil.rmtree(lock)

        lock = _ghost_lock(sandbox, stale=True)
        code, out, facts = runbook("run", "restore_drill")
        assert code == runner.EXIT["refused"], out
        assert facts["next"] == "runbook run restore_drill --env sandbox --break-stale-lock"
        assert valid_invocation(facts["next"])["break_stale_lock"] is True
        code, out, facts = run_as_printed(facts["next"])
        assert code == 0, out
        assert record(facts)["lock"]["broken"]["previous_holder"]["operator"] == "ghost"
    finally:
        shutil.rmtree(lock, ignore_errors=True)


@pytest.fixture
def rehearsal(sandbox, tmp_path, monkeypatch):
    """A non-sandbox environment (kind: staging) that points at the sandbox."""
    params = tmp_path / "parameters"
    shutil.copytree(ROOT / "parameters", params)
    text = (params / "sandbox.yaml").read_text()
    text = text.replace("name: sandbox", "name: rehearsal").replace(
        "kind: sandbox", "kind: staging"
    )
    (params / "rehearsal.yaml").write_text(text)
    monkeypatch.setenv("RUNBOOK_PARAMETERS_DIR", str(params))
    return "rehearsal"


def test_not_confirmed_prints_the_command_with_confirm(sandbox, rehearsal) -> None:
    code, out, facts = runbook("run", "restore_drill", "--env", rehearsal)
    assert code == runner.EXIT["refused"], out
    assert facts["error"].startswith("NotConfirmed: ")
    assert f"  flag:       --confirm {rehearsal}" in out
    assert facts["next"] == f"runbook run restore_drill --env {rehearsal} --confirm {rehearsal}"
    assert valid_invocation(facts["next"])["confirm"] == rehearsal
    assert record(facts)["error"]["details"] == {
        "environment": rehearsal,
        "flag": f"--confirm {rehearsal}",
    }


def test_parameter_errors_print_the_key_and_the_fix(sandbox) -> None:
    code, out, facts = runbook("run", "rollback")
    assert code == runner.EXIT["parameters"], out
    assert facts["outcome"] == "parameters (exit 2)"
    assert "reason is required" in facts["error"] and "  key:        reason" in out
    assert facts["next"] == "runbook run rollback -p reason '<reason>'"
    valid_invocation(facts["next"])
    # refused before the run had a folder: a typo in a parameter name
    code, out, facts = runbook("run", "restore_drill", "-p", "bakup", "x.sql.gz")
    assert code == runner.EXIT["parameters"], out
    assert "no parameter 'bakup'" in facts["error"]
    assert facts["next"] == "runbook run restore_drill -p backup x.sql.gz"
    valid_invocation(facts["next"])
