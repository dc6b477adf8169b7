"""Appendix C review: on a crafted set of records it flags exactly what is due."""

from __future__ import annotations

import json
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest

from runbook.cli import run as runner
from runbook.scenarios import review as rv

AS_OF = datetime(2026, 11, 27, 8, 0, tzinfo=UTC)
SCENARIOS = ["deploy", "health_check", "restore_drill"]


def _iso(ts: datetime) -> str:
    return ts.isoformat(timespec="milliseconds").replace("+00:00", "Z")


def make_run(
    root: Path,
    scenario: str,
    env: str,
    days_ago: float,
    outcome: str = "ok",
    *,
    dry_run: bool = False,
    commands: list[dict] | None = None,
) -> Path:
    started = AS_OF - timedelta(days=days_ago)
    d = root / env / scenario / f"{started:%Y%m%dT%H%M%SZ}-{scenario}"
    d.mkdir(parents=True)
    kind = env if env in ("sandbox", "staging", "production") else "production"
    record = {
        "schema": "runbook.record/1",
        "scenario": scenario,
        "environment": env,
        "environment_kind": kind,
        "dry_run": dry_run,
        "parameters": {"env": env, "dry_run": dry_run},
        "started": _iso(started),
        "outcome": outcome,
        "exit_code": runner.EXIT.get(outcome, 1),
        "duration_s": 12.5,
        "checks": [],
        "steps": [],
    }
    (d / "record.json").write_text(json.dumps(record))
    lines = [{"kind": "session", "event": "open"}, *(commands or [])]
    (d / "commands.jsonl").write_text("\n".join(json.dumps(e) for e in lines) + "\n")
    return d


def ok_cmd(cmd: str, code: int = 0) -> dict:
    return {"kind": "command", "command": cmd, "exit_code": code, "ok": True, "step": "1. x"}


def bad_cmd(cmd: str, code: int = 1, step: str = "4. Pull + install + migrate") -> dict:
    return {"kind": "command", "command": cmd, "exit_code": code, "ok": False, "step": step}


@pytest.fixture
def crafted(tmp_path: Path) -> Path:
    """Overdue drill + one failed production command; everything else in order."""
    root = tmp_path / "crafted"
    # the last review, 10 days ago: failures before it were already reviewed
    make_run(root, "review", "sandbox", 10, "dod_not_met")
    make_run(root, "deploy", "production", 20, "failed", commands=[bad_cmd("git pull --ff-only")])
    # the one that must be flagged
    make_run(
        root,
        "deploy",
        "production",
        5,
        "failed",
        commands=[
            ok_cmd("git rev-parse HEAD"),
            ok_cmd("grep -c x /opt/dealix/.env", 1),  # exit 1 accepted: information
            bad_cmd("/opt/dealix/.venv/bin/alembic upgrade head"),
        ],
    )
    # failures that are not real incidents: sandbox rehearsal, production dry run
    make_run(root, "deploy", "sandbox", 3, "failed", commands=[bad_cmd("systemctl restart x")])
    make_run(root, "deploy", "production", 2, "ok", dry_run=True, commands=[bad_cmd("false")])
    make_run(root, "health_check", "production", 1, "ok", commands=[ok_cmd("systemctl status")])
    # the drill: last real success 40 days ago; a sandbox drill 2 days ago does not count
    make_run(root, "restore_drill", "staging", 40, "ok")
    make_run(root, "restore_drill", "staging", 20, "dod_not_met")
    make_run(root, "restore_drill", "sandbox", 2, "ok")
    # a run after as_of is ignored
    make_run(root, "deploy", "production", -3, "failed", commands=[bad_cmd("rm -rf /")])
    return root


def test_crafted_records_flag_exactly_the_overdue_drill_and_the_failed_command(crafted) -> None:
    r = rv.review(crafted, AS_OF, scenarios=SCENARIOS)
    due = sorted(zip(r.due["kind"], r.due["scenario"], strict=True))
    assert due == [("drill missed", "restore_drill"), ("runbook update", "deploy")]
    assert list(r.failed["command"]) == ["/opt/dealix/.venv/bin/alembic upgrade head"]
    assert r.failed.iloc[0]["environment"] == "production"
    assert r.since == AS_OF - timedelta(days=10)
    assert r.drill_ok == AS_OF - timedelta(days=40)
    last = r.last_runs.set_index("scenario")
    assert last.loc["deploy", "environment"] == "production"  # the dry run 2 days ago
    assert last.loc["restore_drill", "environment"] == "sandbox"
    assert not last["due"].any()
    assert "40 days" in r.due.set_index("kind").loc["drill missed", "detail"]


def test_without_a_previous_review_every_real_failure_counts(crafted) -> None:
    for d in (crafted / "sandbox" / "review").iterdir():
        for f in d.iterdir():
            f.unlink()
        d.rmdir()
    r = rv.review(crafted, AS_OF, scenarios=SCENARIOS)
    assert sorted(r.failed["command"]) == [
        "/opt/dealix/.venv/bin/alembic upgrade head",
        "git pull --ff-only",
    ]
    assert r.since is None


def test_stale_and_never_run_scenarios_are_due(tmp_path: Path) -> None:
    root = tmp_path / "o"
    make_run(root, "deploy", "sandbox", 29, "ok")
    make_run(root, "health_check", "sandbox", 27, "ok")
    make_run(root, "restore_drill", "staging", 20, "ok")
    r = rv.review(root, AS_OF, scenarios=[*SCENARIOS, "rollback"])
    due = sorted(zip(r.due["kind"], r.due["scenario"], strict=True))
    assert due == [("stale", "deploy"), ("stale", "rollback")]
    assert r.last_runs.set_index("scenario").loc["rollback", "outcome"] == "never run"


def test_nothing_due_is_clean(tmp_path: Path) -> None:
    root = tmp_path / "o"
    for name in SCENARIOS:
        make_run(root, name, "staging", 3, "ok", commands=[ok_cmd("true")])
    r = rv.review(root, AS_OF, scenarios=SCENARIOS)
    assert r.due.empty and r.failed.empty
    fig = r.plot()
    assert len(fig.axes[0].get_yticklabels()) == 3


def test_known_scenarios_excludes_the_review_itself() -> None:
    names = rv.known_scenarios()
    assert "review" not in names and "health_check" in names


# ---------------------------------------------------------------- the notebook


def _run_notebook(root: Path, out: Path, monkeypatch) -> tuple[int, dict, Path]:
    monkeypatch.setenv("RUNBOOK_OUTPUTS", str(out))
    code, run_dir = runner.run(
        "review",
        {"outputs_dir": str(root), "as_of": _iso(AS_OF), "scenarios": SCENARIOS},
        quiet=True,
    )
    return code, json.loads((run_dir / "record.json").read_text()), run_dir


def test_review_notebook_flags_the_crafted_records(sandbox, crafted, tmp_path, monkeypatch):
    code, record, run_dir = _run_notebook(crafted, tmp_path / "out", monkeypatch)
    assert code == runner.EXIT["dod_not_met"], record
    status = {c["name"]: c["status"] for c in record["checks"]}
    assert status == {
        "Every scenario ran within 28 days": "passed",
        "Restore drill within 31 days": "failed",
        "No command failed in a real incident since the last review": "failed",
        "No real run abandoned since the last review": "passed",
    }
    due = (run_dir / "review_due.csv").read_text()
    assert "alembic upgrade head" in due and "drill missed" in due
    assert (run_dir / "review.png").stat().st_size > 1000


def test_review_notebook_exits_zero_when_nothing_is_due(sandbox, tmp_path, monkeypatch):
    root = tmp_path / "clean"
    for name in SCENARIOS:
        make_run(root, name, "staging", 3, "ok", commands=[ok_cmd("true")])
    code, record, _ = _run_notebook(root, tmp_path / "out", monkeypatch)
    assert code == 0, record
    assert all(c["status"] == "passed" for c in record["checks"])


def test_the_drill_counts_on_staging_as_cron_runs_it_never_on_a_sandbox(tmp_path: Path) -> None:
    """The README's cron/timer run `restore_drill --env staging`: the review must count
    that, and never a rehearsal on a sandbox profile (kind sandbox, e.g. sandbox-isolated)."""
    from runbook.core.profile import load_profile

    staging = load_profile("staging")
    assert staging.kind == "staging"
    root = tmp_path / "o"
    d = make_run(root, "restore_drill", "staging", 3, "ok")
    record = json.loads((d / "record.json").read_text())
    assert record["environment_kind"] == staging.kind
    r = rv.review(root, AS_OF, scenarios=["restore_drill"])
    assert r.drill_ok == AS_OF - timedelta(days=3) and r.due.empty

    rehearsal = tmp_path / "r"
    d = make_run(rehearsal, "restore_drill", "sandbox-isolated", 3, "ok")
    record = json.loads((d / "record.json").read_text())
    record["environment_kind"] = "sandbox"  # what the session writes: the profile's kind
    (d / "record.json").write_text(json.dumps(record))
    r = rv.review(rehearsal, AS_OF, scenarios=["restore_drill"])
    assert r.drill_ok is None
    assert list(r.due["kind"]) == ["drill missed"]
