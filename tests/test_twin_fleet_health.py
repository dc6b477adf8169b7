"""health_check across the fleet twin (issue 21 item 6): every signal of appendix A on
every host whose role has it, all hosts at once, plus through the load balancer; the host x
signal table in the notebook and record.json's `hosts`. And the locks a fleet change takes
(item 3): each changed host's lock plus the environment lock on db1, shown by `runbook lock`.

Root and systemd-nspawn only (`-m twin`), like tests/test_twin_fleet.py; a fleet twin of
its own (<project>/.twin-fleet-health-test, or $RUNBOOK_TEST_TWIN_FLEET_HEALTH_DIR).
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import jsonschema
import pytest
from conftest import twin_unavailable

from runbook.core.paths import project_root

pytestmark = pytest.mark.twin
RUNBOOK = str(Path(sys.executable).with_name("runbook"))


@pytest.fixture(scope="module")
def fleet() -> Iterator[object]:
    why = twin_unavailable()
    if why:
        if os.environ.get("RUNBOOK_REQUIRE_TWIN") == "1":
            pytest.fail(f"RUNBOOK_REQUIRE_TWIN=1 but {why}")
        pytest.skip(why)
    from runbook.twin.fleet import Fleet

    env = os.environ.get("RUNBOOK_TEST_TWIN_FLEET_HEALTH_DIR")
    f = Fleet(Path(env) if env else project_root() / ".twin-fleet-health-test")
    previous = os.environ.get("RUNBOOK_TWIN_FLEET_DIR")
    os.environ["RUNBOOK_TWIN_FLEET_DIR"] = str(f.dir)
    try:
        f.up(fresh=True)
        yield f
    finally:
        f.down()
        if previous is None:
            os.environ.pop("RUNBOOK_TWIN_FLEET_DIR", None)
        else:
            os.environ["RUNBOOK_TWIN_FLEET_DIR"] = previous


def _exec(fleet, argv: list[str], outputs: Path) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [RUNBOOK, "twin", "--dir", str(fleet.dir), "exec", "--fleet", "--", *argv],
        capture_output=True,
        text=True,
        timeout=600,
        cwd=project_root(),
        env={**os.environ, "RUNBOOK_OUTPUTS": str(outputs), "PYTHONDONTWRITEBYTECODE": "1"},
    )


def _record(outputs: Path, scenario: str) -> dict:
    (path,) = sorted(outputs.glob(f"twin-fleet/{scenario}/*/record.json"))[-1:]
    rec = json.loads(path.read_text())
    schema = json.loads((project_root() / "docs" / "record.schema.json").read_text())
    jsonschema.validate(rec, schema)
    return rec


@pytest.fixture(scope="module")
def armored(fleet) -> dict:
    """The app servers' armor, installed as a changing scenario's preflight would, through a
    fleet session: each API host's lock, and the environment lock on db1 first."""
    from runbook import open_session

    s = open_session(
        "health_check", "twin-fleet", confirm="twin-fleet", run_dir=fleet.dir / "armor-run"
    )
    try:
        fan = s.on("api", lambda h: h.armor.install(), step="Install the armor")
        assert fan.ok, fan
        held = {n: g.lock.held for n, g in s.gates.items() if g.lock is not None}
        assert held == {"api1": True, "api2": True}  # only the hosts this run changed
        assert s.environment_lock is not None and s.environment_lock.held
        shown = subprocess.run(
            [RUNBOOK, "lock", "--env", "twin-fleet"],
            capture_output=True,
            text=True,
            timeout=120,
            cwd=project_root(),
        )
        s.done()
        record = json.loads((fleet.dir / "armor-run" / "record.json").read_text())
    finally:
        s.close()
    return {"record": record, "shown": shown}


def test_a_fleet_change_takes_each_changed_hosts_lock_and_the_environment_lock(armored) -> None:
    record, shown = armored["record"], armored["shown"]
    assert set(record["locks"]) == {"api1", "api2"}
    assert record["environment_lock"]["host"] == "db1"
    assert record["environment_lock"]["path"].endswith(".environment")
    assert not record["environment_lock"]["held"]  # released when the run ended
    # while it ran, `runbook lock` named the holder of each lock, by host
    assert shown.returncode == 0, shown.stderr[-1500:]
    lines = shown.stdout.splitlines()
    env_line = next(x for x in lines if x.startswith("environment lock"))
    assert "db1" in env_line and "health_check" in env_line, shown.stdout
    for host in ("api1", "api2"):
        line = next(x for x in lines if x.split()[:1] == [host])
        assert "held by" in line and "health_check" in line, shown.stdout
    lb = next(x for x in lines if x.split()[:1] == ["lb1"])
    assert "free" in lb, shown.stdout


def test_health_check_across_a_healthy_fleet_is_green_on_every_host(
    fleet, armored, tmp_path
) -> None:
    got = _exec(fleet, [RUNBOOK, "run", "health_check", "--env", "twin-fleet"], tmp_path)
    record = _record(tmp_path, "health_check")
    failed = [c for c in record["checks"] if c["status"] == "failed"]
    assert got.returncode == 0 and record["outcome"] == "ok", (failed, got.stderr[-2000:])
    hosts = record["hosts"]
    assert set(hosts) == {"lb1", "api1", "api2", "db1"}
    assert all(h["outcome"] == "ok" for h in hosts.values()), hosts
    # each host measured the signals of its role
    assert set(hosts["api1"]["checks"]) >= {"Liveness", "Deep health", "Service status", "Nginx"}
    assert "Nginx" in hosts["lb1"]["checks"] and "Liveness" not in hosts["lb1"]["checks"]
    assert {"PostgreSQL", "Redis"} <= set(hosts["db1"]["checks"])
    names = {c["name"] for c in record["checks"]}
    assert "Liveness @ through the load balancer" in names
    assert "DLQ depth @ through the load balancer" in names
    # every command names its host, and all four hosts were reached
    run_dir = Path(record["run_dir"])
    events = [json.loads(x) for x in (run_dir / "commands.jsonl").read_text().splitlines()]
    commands = [e for e in events if e["kind"] == "command"]
    assert {e["host"] for e in commands} == {"lb1", "api1", "api2", "db1"}
    # the notebook shows the host x signal table (the cell's output)
    nb = json.loads((run_dir / "health_check.ipynb").read_text())
    shown = json.dumps([c.get("outputs", []) for c in nb["cells"]])
    assert "through the load balancer" in shown and "api2" in shown


def test_a_stopped_api_on_api2_is_red_on_api2_and_the_run_not_ok(fleet, armored, tmp_path) -> None:
    fleet.ssh_to("api2", "systemctl stop dealix-api")
    try:
        got = _exec(fleet, [RUNBOOK, "run", "health_check", "--env", "twin-fleet"], tmp_path)
    finally:
        fleet.ssh_to("api2", "systemctl start dealix-api")
    record = _record(tmp_path, "health_check")
    assert got.returncode != 0 and record["outcome"] == "dod_not_met", got.stderr[-1500:]
    hosts = record["hosts"]
    assert hosts["api2"]["outcome"] == "failed"
    assert hosts["api2"]["checks"]["Service status"] == "failed"
    assert hosts["api2"]["checks"]["Liveness"] == "failed"
    assert hosts["api1"]["outcome"] == "ok" and hosts["api1"]["checks"]["Liveness"] == "passed"
    # through the load balancer the signal is measured too: red or green depending on
    # which API server nginx picked (the twin's lb retries no 502), so only its presence
    lb = {c["name"]: c["status"] for c in record["checks"]}
    assert lb["Liveness @ through the load balancer"] in ("passed", "failed")
