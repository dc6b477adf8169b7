"""health_check.ipynb run headless by papermill against the sandbox; the record is read."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from conftest import plain_papermill

from runbook.cli import run as runner

ROOT = Path(__file__).resolve().parents[1]


@pytest.fixture(autouse=True)
def outputs(tmp_path, monkeypatch):
    monkeypatch.setenv("RUNBOOK_OUTPUTS", str(tmp_path / "outputs"))
    return tmp_path / "outputs"


def test_healthy_sandbox_exits_zero(sandbox, healed) -> None:
    code, run_dir = runner.run("health_check", {}, quiet=True)
    record = json.loads((run_dir / "record.json").read_text())
    assert code == 0, record
    assert record["outcome"] == "ok" and record["exit_code"] == 0
    status = {c["name"]: c["status"] for c in record["checks"]}
    assert status["Liveness"] == status["Deep health"] == status["CI status"] == "passed"
    assert status["Service status"] == status["Nginx"] == "passed"
    assert status["DLQ depth"] == status["Pending approvals"] == "passed"
    assert status["fail2ban"] == "not available"  # never "passed" on the loopback sandbox
    assert (run_dir / "health_check.ipynb").exists()
    assert run_dir.parts[-3:-1] == ("sandbox", "health_check")


def test_postgres_down_is_red_and_named(sandbox, healed) -> None:
    sandbox.fault("postgres-down")
    code, run_dir = runner.run("health_check", {}, quiet=True)
    record = json.loads((run_dir / "record.json").read_text())
    assert code == runner.EXIT["dod_not_met"], record
    assert record["outcome"] == "dod_not_met"
    red = [c for c in record["checks"] if c["status"] == "failed"]
    assert "Deep health" in [c["name"] for c in red]
    deep = next(c for c in red if c["name"] == "Deep health")
    assert "postgres red" in deep["actual"]


def test_redis_down_is_red_and_named(sandbox, healed) -> None:
    sandbox.fault("redis-down")
    code, run_dir = runner.run("health_check", {}, quiet=True)
    record = json.loads((run_dir / "record.json").read_text())
    assert code == runner.EXIT["dod_not_met"], record
    red = {c["name"]: c for c in record["checks"] if c["status"] == "failed"}
    assert "redis red" in red["Deep health"]["actual"]
    assert "postgres red" not in red["Deep health"]["actual"]


def test_ci_red_is_red(sandbox, healed) -> None:
    sandbox.fault("ci-red")
    code, run_dir = runner.run("health_check", {}, quiet=True)
    record = json.loads((run_dir / "record.json").read_text())
    assert code == 3
    assert [c["name"] for c in record["checks"] if c["status"] == "failed"] == ["CI status"]


def test_plain_papermill_run_exits_non_zero_and_leaves_a_record(sandbox, healed, tmp_path, outputs):
    sandbox.fault("postgres-down")
    out = tmp_path / "out.ipynb"
    proc = plain_papermill("health_check", out)
    assert proc.returncode != 0
    records = list(outputs.glob("sandbox/health_check/*/record.json"))
    assert len(records) == 1
    record = json.loads(records[0].read_text())
    assert record["outcome"] == "dod_not_met"
    nb = json.loads(out.read_text())
    assert nb["metadata"]["kernelspec"]["name"] == "dealix-runbook"


def test_unknown_parameter_is_refused_before_running(sandbox) -> None:
    with pytest.raises(runner.ParameterError, match="no parameter 'envv'"):
        runner.run("health_check", {"envv": "production"}, quiet=True)


def test_plain_papermill_refuses_an_unknown_parameter_before_any_command(
    sandbox, outputs, tmp_path
):
    """papermill only warns about `-p dryrun True` and runs on, for real; the
    session refuses it before the first command."""
    import subprocess
    import sys

    out = tmp_path / "typo.ipynb"
    proc = subprocess.run(
        [
            sys.executable,
            "-m",
            "papermill",
            "notebooks/health_check.ipynb",
            str(out),
            "-p",
            "dryrun",
            "True",
        ],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert proc.returncode != 0
    executed = out.read_text()
    assert "does not declare: dryrun" in executed and "ParameterError" in executed
    assert not list(outputs.rglob("commands.jsonl")), "a command ran despite the typo"
    # the declared name works the same way
    good = subprocess.run(
        [
            sys.executable,
            "-m",
            "papermill",
            "notebooks/health_check.ipynb",
            str(tmp_path / "ok.ipynb"),
            "-p",
            "dry_run",
            "True",
        ],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert good.returncode == 0, good.stderr[-2000:]
