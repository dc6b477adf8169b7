"""`runbook resume`: a failed deploy continued from its failed step, and every refusal.

One real deploy on the sandbox fails at step 4 (the origin unreachable for
`git fetch`) after its snapshot; the refusals are tried against that parent
while it is failed, then the fault is healed and the resume completes it
without snapshotting again. Unit tests of the plan use copies of that parent.
"""

from __future__ import annotations

import json
import re
import shutil
import subprocess
import sys
from pathlib import Path
from typing import Any

import jsonschema
import pytest

from runbook.cli import main as cli_main
from runbook.cli import run as runner
from runbook.core.catalog import notebook_path
from runbook.errors import Forbidden, ParameterError
from runbook.evidence import history, resume
from runbook.evidence.seal import verify_run
from runbook.rehearsal.faults import parse
from runbook.sandbox import Sandbox
from runbook.scenarios import review
from runbook.scenarios.deploy import Deploy

WATCH = 0.05  # minutes
PULL = "4. Pull + install + migrate"
SNAPSHOT = "3. Snapshot current state"


@pytest.fixture(autouse=True)
def outputs(tmp_path, monkeypatch):
    monkeypatch.setenv("RUNBOOK_OUTPUTS", str(tmp_path / "outputs"))
    return tmp_path / "outputs"


def server(sb: Sandbox) -> dict[str, Any]:
    app = Path(sb.state["app_dir"])
    head = git(sb, "rev-parse", "HEAD").strip()
    last_good = app / ".last_good_sha"
    return {
        "head": head,
        "revision": sb.query("SELECT version_num FROM alembic_version")[0][0],
        "last_good": last_good.read_text().strip() if last_good.exists() else None,
        "env_backups": sorted(p.name for p in app.glob(".env.bak.*")),
    }


def git(sb: Sandbox, *args: str) -> str:
    return subprocess.run(
        # someone else on the server, past the armor's repo hooks (as a root shell could)
        [
            "git",
            "-C",
            sb.state["app_dir"],
            "-c",
            "user.name=t",
            "-c",
            "user.email=t@t",
            "-c",
            "core.hooksPath=/dev/null",
            *args,
        ],
        capture_output=True,
        text=True,
        check=True,
    ).stdout


def record_of(run_dir: Path) -> dict[str, Any]:
    return json.loads((run_dir / "record.json").read_text())


def runs(outputs: Path) -> list[Path]:
    return sorted(p.parent for p in outputs.glob("*/*/*/record.json"))


def cli(*argv: str) -> int:
    return cli_main(["resume", *argv])


def copy_with(parent: Path, tmp: Path, **changes: Any) -> Path:
    """A copy of `parent` with record fields changed (for refusals of the plan)."""
    copy = tmp / f"copy-{len(list(tmp.glob('copy-*')))}" / parent.name
    shutil.copytree(parent, copy)
    rec = record_of(copy)
    rec.update(changes)
    (copy / "record.json").write_text(json.dumps(rec))
    return copy


def test_deploy_failed_at_pull_resumes_without_a_second_snapshot(
    sandbox, healed, outputs, tmp_path, capsys
) -> None:
    healed.fault("good-deploy")
    new = healed.state["deploy_faults"]["good-deploy"]
    healed.fault("origin-unreachable")
    before = server(healed)

    # the parent: CI gate, lock and snapshot done; step 4 fails at `git fetch`
    code, parent = runner.run("deploy", {"watch_minutes": WATCH}, quiet=True)
    rec = record_of(parent)
    assert code == runner.EXIT["failed"], rec["error"]
    assert rec["failed_step"] == PULL
    status = {s["name"]: s["status"] for s in rec["steps"]}
    assert status[SNAPSHOT] == "ok" and status[PULL] == "failed"
    assert {s["method"] for s in rec["steps"]} >= {"ci_gate", "snapshot", "pull_install_migrate"}
    assert rec["target_facts"] == {
        "app_head": before["head"],
        "alembic_revision": before["revision"],
    }
    assert len(rec["parameters_sha256"]) == 64
    after_parent = server(healed)
    assert after_parent["head"] == before["head"]  # nothing pulled
    assert len(after_parent["env_backups"]) == len(before["env_backups"]) + 1  # snapshot ran

    # refused while the parameters differ (exit 2), unless the override is named
    assert cli(str(parent), "-p", "watch_minutes", "1") == runner.EXIT["parameters"]
    assert "watch_minutes" in capsys.readouterr().err

    # refused when the app's HEAD moved since the parent stopped (checked in the kernel)
    git(healed, "commit", "--allow-empty", "--quiet", "-m", "someone else's change")
    try:
        assert cli(str(parent)) == runner.EXIT["refused"]
    finally:
        git(healed, "reset", "--quiet", "--hard", before["head"])
    refused = record_of(runs(outputs)[-1])
    assert refused["outcome"] == "refused" and refused["resume"]["from"] == parent.name
    assert "app_head" in refused["error"]["message"]
    assert "--accept-moved" in refused["error"]["message"]
    assert [s for s in refused["steps"] if s["status"] != "skipped"] == []  # nothing ran
    assert server(healed) == after_parent

    # healed: the resume skips the snapshot, pulls and completes the deploy
    fault, param = parse("origin-unreachable")
    fault.heal(healed, param)
    assert cli(parent.name) == runner.EXIT["ok"]
    child = runs(outputs)[-1]
    crec = record_of(child)
    assert crec["outcome"] == "ok", crec["error"]
    assert crec["resume"]["from"] == parent.name
    assert crec["resume"]["failed_step"] == PULL
    assert crec["resume"]["skipped_steps"] == [SNAPSHOT]
    steps = {s["name"]: s for s in crec["steps"]}
    assert steps[SNAPSHOT]["status"] == "skipped"
    assert steps[SNAPSHOT]["note"] == f"done in run {parent.name}"
    assert steps["1. Verify CI green on main"]["status"] == "ok"  # read-only: run again
    assert steps["2. Take the host lock"]["status"] == "ok"  # the lock taken again
    assert steps[PULL]["status"] == "ok"
    assert "run it again" in crec["decisions"][f"resume: {PULL}"]["choice"]
    assert "HEAD" in crec["decisions"][f"resume: {PULL}"]["reason"]
    done = server(healed)
    assert done["head"] == new["pushed"] and done["revision"] == new["revision"]
    # the snapshot did not run twice: no second .env backup, last good SHA as the parent left it
    assert done["env_backups"] == after_parent["env_backups"]
    assert done["last_good"] == after_parent["last_good"]
    schema = json.loads(
        (notebook_path("deploy").parents[1] / "docs/record.schema.json").read_text()
    )
    validator = jsonschema.Draft202012Validator(schema)
    assert [e.message for r in (crec, refused, rec) for e in validator.iter_errors(r)] == []
    assert f"resumed from</th><td>{parent.name}" in (child / "deploy.html").read_text()
    # the parent's sealed folder is untouched; the chain is derived
    assert verify_run(parent).ok
    df = history.load(outputs)
    by_id = {Path(r).name: row for r, row in zip(df["run_dir"], df.to_dict("records"), strict=True)}
    assert by_id[parent.name]["resumed_by"] == child.name
    assert by_id[child.name]["resumed_from"] == parent.name
    assert "counted with their resume" in history.outcome_counts(df)
    seen = set(review.load_runs(outputs)["run_dir"].map(lambda p: Path(p).name))
    assert parent.name not in seen and child.name in seen

    # refused: resuming the resume that succeeded
    assert cli(str(child)) == runner.EXIT["refused"]
    assert "succeeded" in capsys.readouterr().err

    # plan refusals on copies of the failed parent
    rules = Deploy.resume_rules()
    nb = notebook_path("deploy")
    changed = json.loads(nb.read_text())
    code_cells = [c for c in changed["cells"] if c["cell_type"] == "code"]
    code_cells[2]["source"] = "dep.ci_gate()  # edited"
    edited = tmp_path / "deploy.ipynb"
    edited.write_text(json.dumps(changed))
    with pytest.raises(Forbidden, match="code cell"):
        resume.plan(parent, edited, rules)
    # a later cell may change: recorded
    original = [c for c in json.loads(nb.read_text())["cells"] if c["cell_type"] == "code"]
    code_cells[2]["source"] = original[2]["source"]
    code_cells[-2]["source"] = "dep.advice()  # edited later"
    edited.write_text(json.dumps(changed))
    assert resume.plan(parent, edited, rules).later_cells_changed == [len(code_cells) - 2]
    with pytest.raises(Forbidden, match="interrupted"):
        resume.plan(copy_with(parent, tmp_path, outcome="interrupted"), nb, rules)
    allowed = resume.plan(
        copy_with(parent, tmp_path, outcome="interrupted"), nb, rules, allow_interrupted=True
    )
    assert allowed.to_record()["allow_interrupted"] is True
    for outcome in ("refused", "parameters", "abandoned"):
        with pytest.raises(Forbidden, match=outcome):
            resume.plan(copy_with(parent, tmp_path, outcome=outcome), nb, rules)
    # a parameter may differ only when named, and then it is recorded
    changed_params = {**rec["parameters"], "watch_minutes": 1}
    with pytest.raises(ParameterError, match="watch_minutes"):
        resume.plan(parent, nb, rules, params=changed_params)
    named = resume.plan(parent, nb, rules, params=changed_params, overrides=["watch_minutes"])
    assert named.to_record()["overrides"] == ["watch_minutes"]
    with pytest.raises(ParameterError, match="does not differ"):
        resume.plan(parent, nb, rules, overrides=["watch_minutes"])
    # the failed step is not safe to repeat and has no postcondition
    with pytest.raises(Forbidden, match="not safe to repeat"):
        resume.plan(copy_with(parent, tmp_path, failed_step=SNAPSHOT), nb, rules)


def test_a_done_step_that_must_run_again_and_is_not_repeatable_is_refused(tmp_path) -> None:
    """A method that opened a done, once-only step and a step still to run: refused."""
    run_dir = tmp_path / "20261207T000000Z-deploy"
    run_dir.mkdir()
    nb = json.loads(notebook_path("deploy").read_text())
    for c in nb["cells"]:
        if c["cell_type"] == "code":
            c.setdefault("metadata", {})["papermill"] = {"status": "completed"}
    (run_dir / "deploy.ipynb").write_text(json.dumps(nb))
    steps = [
        {"name": SNAPSHOT, "status": "ok", "method": "snapshot", "started": "x"},
        {"name": "3b. after", "status": "failed", "method": "snapshot", "started": "x"},
    ]
    rec = {
        "scenario": "deploy",
        "outcome": "failed",
        "parameters": {},
        "steps": steps,
        "failed_step": "3b. after",
        "runner": {"notebook": "deploy.ipynb"},
    }
    (run_dir / "record.json").write_text(json.dumps(rec))
    with pytest.raises(Forbidden, match="not safe to repeat"):
        resume.plan(run_dir, notebook_path("deploy"), Deploy.resume_rules())
    steps[0]["name"] = "3a. repeatable"
    (run_dir / "record.json").write_text(json.dumps(rec))
    plan = resume.plan(run_dir, notebook_path("deploy"), Deploy.resume_rules())
    assert plan.skip_methods == [] and plan.failed_step == "3b. after"


def test_a_scenario_without_declarations_is_not_resumed(tmp_path) -> None:
    from runbook.scenarios._base import Scenario

    class Undeclared(Scenario):
        """A scenario that has not said which of its steps are safe to repeat."""

    run_dir = tmp_path / "20261207T000000Z-database_down"
    run_dir.mkdir()
    (run_dir / "record.json").write_text(json.dumps({"scenario": "database_down"}))
    with pytest.raises(Forbidden, match="safe to repeat"):
        resume.plan(run_dir, notebook_path("database_down"), Undeclared.resume_rules())


def test_incident_restore_failed_after_the_swap_resumes_without_renaming_again(
    sandbox, healed, outputs
) -> None:
    from runbook.scenarios.restore_incident import RENAMED_DECISION, SWAP_STEP

    def corrupt() -> list[str]:
        rows = healed.query(
            "SELECT datname FROM pg_database WHERE datname LIKE 'dealix_corrupt_%' ORDER BY 1"
        )
        return [r[0] for r in rows]

    before = corrupt()
    # the parent: restored, validated, swapped; the API comes back red (Redis stopped)
    healed.fault("redis-down")
    params = {"reason": "resume test: the API stays red after the swap"}
    code, parent = runner.run("restore_incident", params, quiet=True)
    rec = record_of(parent)
    # the API's deep health check failed: a run that failed its definition of done
    assert code == runner.EXIT["dod_not_met"], rec["error"]
    status = {s["name"]: s["status"] for s in rec["steps"]}
    assert status[SWAP_STEP] == "ok"
    renamed = rec["decisions"][RENAMED_DECISION]["choice"]
    assert corrupt() == sorted([*before, renamed])

    fault, param = parse("redis-down")
    fault.heal(healed, param)
    assert cli(parent.name) == runner.EXIT["ok"]
    child = runs(outputs)[-1]
    crec = record_of(child)
    assert crec["outcome"] == "ok", crec["error"]
    assert crec["resume"]["from"] == parent.name
    assert crec["resume"]["failed_step"] == "5. Restart API + verify"
    steps = {s["name"]: s for s in crec["steps"]}
    assert steps[SWAP_STEP]["status"] == "skipped"
    assert steps[SWAP_STEP]["note"] == f"done in run {parent.name}"
    assert steps["2. Restore into a clone"]["status"] == "skipped"
    assert steps["Preflight"]["status"] == "ok"  # read-only: run again
    assert steps["5. Restart API + verify"]["status"] == "ok"
    # never renamed again: the same one damaged database, and production answers
    assert corrupt() == sorted([*before, renamed])
    assert healed.api("/health/deep")[1]["status"] == "green"
    # the resume's postmortem names the database the parent renamed (read from its record)
    assert f"Damaged database kept as `{renamed}`" in (child / "postmortem.md").read_text()


def test_rollback_failed_after_the_downgrade_resumes_without_downgrading_again(
    sandbox, healed, outputs
) -> None:
    from runbook.scenarios.rollback import DOWNGRADE_STEP

    def downgrades(run_dir: Path) -> list[str]:
        lines = (run_dir / "commands.jsonl").read_text().splitlines()
        entries = [json.loads(ln) for ln in lines if ln.strip()]
        return [
            str(e["command"])
            for e in entries
            if e.get("kind") == "command" and "alembic downgrade" in str(e.get("command"))
        ]

    before = server(healed)
    healed.fault("good-deploy")
    code, deployed = runner.run("deploy", {"watch_minutes": WATCH}, quiet=True)
    assert code == runner.EXIT["ok"], record_of(deployed)["error"]
    bad = server(healed)
    assert bad["revision"] != before["revision"] and bad["last_good"] == before["head"]

    # the parent: announced, planned, downgraded, checked out; the API comes back red
    healed.fault("redis-down")
    code, parent = runner.run("rollback", {"reason": "resume test: red after deploy"}, quiet=True)
    rec = record_of(parent)
    assert code in (runner.EXIT["failed"], runner.EXIT["dod_not_met"]), rec["error"]
    status = {s["name"]: s["status"] for s in rec["steps"]}
    assert status[DOWNGRADE_STEP] == "ok"
    assert rec["failed_step"] not in (DOWNGRADE_STEP, "1. Announce")
    assert downgrades(parent)  # the parent downgraded (the child below must not)
    assert server(healed)["revision"] == before["revision"]

    fault, param = parse("redis-down")
    fault.heal(healed, param)
    assert cli(str(parent)) == runner.EXIT["ok"]
    child = runs(outputs)[-1]
    crec = record_of(child)
    assert crec["outcome"] == "ok", crec["error"]
    assert crec["resume"]["from"] == parent.name
    steps = {s["name"]: s for s in crec["steps"]}
    assert steps[DOWNGRADE_STEP]["status"] == "skipped"
    assert steps["1. Announce"]["status"] == "skipped"
    assert steps["2. Determine what the bad deploy added"]["status"] == "ok"  # read again
    assert steps["6. Verify deep health on the old SHA"]["status"] == "ok"
    # not downgraded again, not announced again; on the last good SHA and its revision
    assert downgrades(child) == []
    assert not (child / "announcement.txt").exists()
    after = server(healed)
    assert after["head"] == before["head"] and after["revision"] == before["revision"]


def test_security_incident_failed_after_the_rotation_resumes_without_rotating_again(
    sandbox, healed, outputs
) -> None:
    from runbook.sandbox.build.app import read_app_env
    from runbook.scenarios.security_incident import ROTATE_STEP, ROTATION_FILE

    before = read_app_env(healed.layout)
    healed.fault("intrusion")
    # the parent: rotated; then the server's evidence folder cannot be written
    healed.fault("evidence-dir-blocked")
    code, parent = runner.run("security_incident", {}, quiet=True)
    rec = record_of(parent)
    assert code == runner.EXIT["failed"], rec["error"]
    status = {s["name"]: s["status"] for s in rec["steps"]}
    assert status[ROTATE_STEP] == "ok"
    assert rec["failed_step"] in ("2. Lock down SSH", "4. Preserve evidence")
    rotated = read_app_env(healed.layout)
    assert rotated["ADMIN_KEY"] != before["ADMIN_KEY"]
    assert (parent / ROTATION_FILE).exists()

    fault, param = parse("evidence-dir-blocked")
    fault.heal(healed, param)
    assert cli(str(parent)) == runner.EXIT["ok"]
    child = runs(outputs)[-1]
    crec = record_of(child)
    assert crec["outcome"] == "ok", crec["error"]
    assert crec["resume"]["from"] == parent.name
    steps = {s["name"]: s for s in crec["steps"]}
    assert steps[ROTATE_STEP]["status"] == "skipped"
    assert steps[ROTATE_STEP]["note"] == f"done in run {parent.name}"
    assert steps["3. Investigate"]["status"] == "ok"  # read-only: run again
    assert steps["4. Preserve evidence"]["status"] == "ok"
    # never rotated again: the key the parent made still works, the operator's file has it
    after = read_app_env(healed.layout)
    assert after["ADMIN_KEY"] == rotated["ADMIN_KEY"]
    assert after["WEBHOOK_SECRET"] == rotated["WEBHOOK_SECRET"]
    assert not (child / ROTATION_FILE).exists()
    assert "Secrets rotated" not in {c["name"] for c in crec["checks"]}
    # the incident document still says what the parent's rotation proved
    docs = "".join(p.read_text() for p in child.glob("*.md"))
    assert "Secrets rotated: yes, proved" in docs


def test_restore_drill_resumed_restores_the_parents_backup_or_refuses(
    sandbox, healed, outputs, capsys
) -> None:
    from runbook.scenarios.restore_drill import BACKUP_DECISION

    # the parent: the newest dump is cut short, its restore fails
    healed.fault("corrupt-backup")
    code, parent = runner.run("restore_drill", {}, quiet=True)
    rec = record_of(parent)
    assert code in (runner.EXIT["failed"], runner.EXIT["dod_not_met"]), rec["error"]
    checks = {c["name"]: c["status"] for c in rec["checks"]}
    assert checks["Restore completed"] == "failed"
    used = Path(rec["decisions"][BACKUP_DECISION]["choice"])
    fault, param = parse("corrupt-backup")
    fault.heal(healed, param)

    # a newer dump lands meanwhile: a new drill would take it, the resume must not
    newer = used.with_name("dealix-2099-01-01.sql.gz")
    shutil.copy(used, newer)
    aside = used.with_name(used.name + ".resume-test")
    try:
        assert cli(str(parent)) == runner.EXIT["ok"]
        child = runs(outputs)[-1]
        crec = record_of(child)
        assert crec["outcome"] == "ok", crec["error"]
        assert crec["resume"]["from"] == parent.name
        assert crec["decisions"][BACKUP_DECISION]["choice"] == str(used)
        assert {c["name"]: c["status"] for c in crec["checks"]}["Restore completed"] == "passed"
        assert json.loads((child / "restore_drill.json").read_text())["torn_down"] is True

        # refused once the parent's backup is gone, before anything runs
        used.rename(aside)
        assert cli(str(parent)) == runner.EXIT["refused"]
        refused = record_of(runs(outputs)[-1])
        assert refused["outcome"] == "refused"
        assert "no longer on the server" in refused["error"]["message"]
        assert not [s for s in refused["steps"] if s["status"] == "ok"]
    finally:
        newer.unlink(missing_ok=True)
        if aside.exists():
            aside.rename(used)


@pytest.mark.parametrize(
    "name",
    [
        "deploy",
        "rollback",
        "restore_incident",
        "security_incident",
        "restore_drill",
        "llm_provider_down",
        "database_down",
    ],
)
def test_declared_rules_name_real_steps_and_methods(name: str) -> None:
    """A typo in a declaration would silently re-run (or never protect) a step."""
    import inspect

    from runbook.scenarios._base import scenario_class

    cls = scenario_class(name)
    assert cls.resumable
    module = sys.modules[cls.__module__]
    source = inspect.getsource(module)
    # the steps the module opens: step("...") literals and step(CONSTANT)
    opened = set(re.findall(r'step\(\s*"([^"]+)"', source))
    opened |= {str(getattr(module, c)) for c in re.findall(r"step\(\s*([A-Z_]+)\s*\)", source)}
    rules = cls.resume_rules()
    for step in (*rules.once, *cls.resume_reruns, *rules.postconditions):
        assert step in opened, f"{name}: no step {step!r} opened in {module.__name__}"
    for step, method in rules.postconditions.items():
        assert callable(getattr(cls, method, None)), f"{name}: {step} -> no {method}()"
    assert not set(rules.once) & set(cls.resume_reruns)
