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
    duration_s: float = 12.5,
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
        "duration_s": duration_s,
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


def _notifications(run_dir: Path, delivered: bool, ping: bool = True) -> None:
    """A run's notifications.json as runbook.core.notify writes it (targets masked)."""
    sent = {"target": "json://hook:[redacted]@alerts.internal/runbook/not…", "attempts": 3}
    sent |= {"delivered": delivered, "errors": [] if delivered else ["HTTP 500: boom"]}
    pinged = {"target": "https://hc-ping.com/5f1…", "event": "exit", "attempts": 1}
    pinged |= {"delivered": ping, "errors": [] if ping else ["ConnectError: refused"]}
    log = {"outcome": "dod_not_met", "due": True, "sent": [sent], "pings": [pinged]}
    (run_dir / "notifications.json").write_text(json.dumps(log))


def test_a_drill_whose_notification_failed_is_due(tmp_path: Path) -> None:
    root = tmp_path / "o"
    make_run(root, "review", "sandbox", 10, "ok")
    make_run(root, "restore_drill", "staging", 3, "ok")
    # since the last review, on staging: nobody heard of this failed drill
    told_nobody = make_run(root, "restore_drill", "staging", 6, "dod_not_met")
    _notifications(told_nobody, delivered=False)
    # delivered: nothing to flag; the sandbox's rehearsal and a drill already reviewed neither
    _notifications(make_run(root, "restore_drill", "staging", 8, "dod_not_met"), True)
    _notifications(make_run(root, "restore_drill", "sandbox", 2, "dod_not_met"), False)
    _notifications(make_run(root, "restore_drill", "staging", 12, "dod_not_met"), False)
    # a ping that failed alone counts too: the dead-man's switch did not hear the end
    ping_lost = make_run(root, "restore_drill", "staging", 4, "ok")
    _notifications(ping_lost, delivered=True, ping=False)
    r = rv.review(root, AS_OF, scenarios=["restore_drill"])
    told = r.due[r.due["kind"] == "notification failed"]
    assert sorted(told["run_dir"]) == sorted([str(told_nobody), str(ping_lost)])
    details = dict(zip(told["run_dir"], told["detail"], strict=True))
    assert (
        "json://hook:[redacted]@alerts.internal/runbook/not… (HTTP 500: boom)"
        in (details[str(told_nobody)])
    )
    assert "https://hc-ping.com/5f1… exit (ConnectError: refused)" in details[str(ping_lost)]
    assert list(r.due["kind"]) == ["notification failed"] * 2


def test_a_drill_much_slower_than_usual_is_due(tmp_path: Path) -> None:
    root = tmp_path / "o"
    make_run(root, "review", "sandbox", 10, "ok")
    for days in (100, 70, 40):
        make_run(root, "restore_drill", "staging", days, "ok", duration_s=600)
    # a failed drill's time is no "usual"; production has its own history (two runs: too few)
    make_run(root, "restore_drill", "staging", 20, "dod_not_met", duration_s=60)
    make_run(root, "restore_drill", "production", 50, "ok", duration_s=100)
    make_run(root, "restore_drill", "production", 30, "ok", duration_s=100)
    slow = make_run(root, "restore_drill", "staging", 5, "ok", duration_s=1000)
    make_run(root, "restore_drill", "production", 4, "ok", duration_s=1000)
    r = rv.review(root, AS_OF, scenarios=["restore_drill"])
    (row,) = r.due[r.due["kind"] == "drill slow"].to_dict("records")
    assert row["run_dir"] == str(slow) and row["environment"] == "staging"
    assert row["detail"] == (
        "took 16.7 min, usual 10.0 min (median of 3 earlier drills); more than 50 % over"
    )
    # within the margin (at most 900 s): not due; a wider margin lets 1000 s pass
    assert rv.review(root, AS_OF, scenarios=["restore_drill"], slow_margin_pct=70).due.empty


def test_the_drill_grace_moves_the_missed_drill_line(tmp_path: Path) -> None:
    root = tmp_path / "o"
    make_run(root, "restore_drill", "staging", 32, "ok")
    make_run(root, "restore_drill", "staging", 1, "dod_not_met")
    strict = rv.review(root, AS_OF, scenarios=["restore_drill"])
    assert list(strict.due["kind"]) == ["drill missed"]
    assert rv.review(root, AS_OF, scenarios=["restore_drill"], drill_grace_days=2).due.empty
    late = rv.review(
        root, AS_OF + timedelta(days=2), scenarios=["restore_drill"], drill_grace_days=2
    )
    assert late.due.set_index("kind").loc["drill missed", "detail"] == (
        "last successful drill 34 days ago (required: every 31 days + 2 days' grace)"
    )


def test_the_profiles_set_the_drill_grace_and_margin() -> None:
    from runbook.core.profile import load_profile

    for env in ("staging", "production"):
        t = load_profile(env).targets
        assert (t.drill_grace_days, t.drill_slow_margin_pct) == (2, 50), env


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
        "Every real drill's notifications delivered": "passed",
        "No real drill took much longer than usual": "passed",
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
