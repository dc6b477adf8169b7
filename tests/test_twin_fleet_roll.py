"""The rolling deploy and the fleet rollback (runbook.scenarios._rolling) on the fleet twin
(issue 21 items 4, 5 and 7): lb1 in front of api1 and api2, db1.

While each roll runs, a client hammers https://api.dealix.me through the load balancer
in a thread and counts the requests that failed: zero expected (a drained host gets no
request; nginx's graceful reload drops none). The numbers are printed (`-s` shows them).

Root and systemd-nspawn only (`-m twin`); skipped like the other twin tests.
"""

from __future__ import annotations

import json
import os
import shlex
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from conftest import twin_unavailable

from runbook.core.paths import project_root
from runbook.errors import Forbidden
from runbook.scenarios._rolling import Roller

pytestmark = pytest.mark.twin
RUNBOOK = str(Path(sys.executable).with_name("runbook"))


@pytest.fixture(scope="module")
def fleet() -> Iterator[Any]:
    why = twin_unavailable()
    if why:
        if os.environ.get("RUNBOOK_REQUIRE_TWIN") == "1":
            pytest.fail(f"RUNBOOK_REQUIRE_TWIN=1 but {why}")
        pytest.skip(why)
    from runbook.twin.fleet import Fleet

    env = os.environ.get("RUNBOOK_TEST_TWIN_FLEET_ROLL_DIR")
    f = Fleet(Path(env) if env else project_root() / ".twin-fleet-roll-test")
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


class Hammer:
    """A client sending GET /health through the lb as fast as it can, in a thread."""

    def __init__(self, fleet: Any):
        self.fleet = fleet
        self.ok = 0
        self.failed: list[str] = []
        self.by_upstream: dict[str, int] = {}
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._go, daemon=True)

    def _go(self) -> None:
        from runbook.twin.fleet import UPSTREAM_HEADER

        while not self._stop.is_set():
            try:
                code, headers, _ = self.fleet.request("/health")
            except OSError as exc:
                self.failed.append(repr(exc))
                continue
            if code == 200:
                self.ok += 1
                up = headers.get(UPSTREAM_HEADER, "?")
                self.by_upstream[up] = self.by_upstream.get(up, 0) + 1
            else:
                self.failed.append(str(code))

    def __enter__(self) -> Hammer:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        self._thread.join(timeout=30)

    def said(self) -> str:
        return f"{self.ok} ok, {len(self.failed)} failed {self.failed[:3]}, by upstream {self.by_upstream}"


@pytest.fixture
def roll(fleet: Any, tmp_path: Path) -> Iterator[Roller]:
    """The Roller of a rolling_deploy session on twin-fleet (one gate per host, `s.at`)."""
    from runbook import open_session
    from runbook.scenarios._rolling import FleetRelease

    s = open_session("rolling_deploy", "twin-fleet", confirm="twin-fleet", run_dir=tmp_path / "run")
    try:
        yield FleetRelease(s).roller
    finally:
        s.close()
        fleet.heal()


def _origin_main(fleet: Any) -> str:
    from runbook.twin.fleet_faults import origin_main

    return origin_main(fleet, fleet.state["api_hosts"][0])


def test_a_mixed_fleet_is_refused_naming_hosts_and_shas(fleet: Any, roll: Roller) -> None:
    fleet.fault("mixed-sha:api2")
    shas = roll.sha_by_host()
    with pytest.raises(Forbidden) as refused:
        roll.deploy(_origin_main(fleet))
    said = str(refused.value)
    assert "one-sha-before-a-roll" in said
    assert f"api1 {shas['api1'][:12]}" in said and f"api2 {shas['api2'][:12]}" in said
    assert shas["api1"] != shas["api2"]


def test_a_host_down_is_refused_before_anything_changes(fleet: Any, roll: Roller) -> None:
    fleet.fault("down:api2")
    with pytest.raises(Forbidden) as refused:
        roll.deploy(_origin_main(fleet))
    assert "api2 no answer" in str(refused.value)


def test_a_host_left_drained_is_refused_before_anything_changes(fleet: Any, roll: Roller) -> None:
    fleet.fault("drained:api2")
    with pytest.raises(Forbidden) as refused:
        roll.deploy(_origin_main(fleet))
    said = str(refused.value)
    assert "no-drained-host-before-a-roll" in said and "api2" in said


def test_a_good_rolling_deploy_moves_every_host_with_no_failed_request(
    fleet: Any, roll: Roller
) -> None:
    before = roll.fleet_sha()
    fleet.fault("release")
    target = _origin_main(fleet)
    t0 = time.monotonic()
    with Hammer(fleet) as hammer:
        report = roll.deploy(target)
    print(f"\ngood rolling deploy: {time.monotonic() - t0:.1f} s; through the lb: {hammer.said()}")
    print(report.fan)
    assert report.fan is not None and report.fan.ok, report.fan
    assert [b.hosts for b in report.fan.batches] == [("api1",), ("api2",)]
    assert report.last_good == before
    assert report.migrated == ["0003"]
    assert report.sha_by_host == {"api1": target, "api2": target}
    assert report.drained == []
    assert report.rollback_command is None
    assert hammer.failed == [] and hammer.ok > 0
    for h in ("api1", "api2"):
        assert fleet.ssh_to(h, "cat /opt/dealix/.last_good_sha").stdout.strip() == before


def test_a_bad_rolling_deploy_stops_after_the_failing_batch_and_the_fleet_rollback_returns(
    fleet: Any, roll: Roller
) -> None:
    before = roll.fleet_sha()
    fleet.fault("bad-on:api2")
    fleet.fault("release")
    target = _origin_main(fleet)
    with Hammer(fleet) as hammer:
        report = roll.deploy(target)
        api1 = fleet.state["hosts"]["api1"]["address"]
        during = dict(hammer.by_upstream)
    print(f"\nbad rolling deploy: through the lb: {hammer.said()}")
    print(report.fan, report.sha_by_host, report.drained, report.rollback_command, sep="\n")
    assert report.fan is not None
    assert report.fan.hosts["api1"].outcome == "ok"
    assert report.fan.hosts["api2"].outcome == "failed"
    # the failed host stays out of rotation; the canary serves the new code
    assert report.drained == [f"{fleet.state['hosts']['api2']['address']}:443"]
    assert report.sha_by_host["api1"] == target
    assert report.sha_by_host["api2"] != target
    assert report.rollback_command == (
        f"runbook run fleet_rollback --env twin-fleet -p to_sha {before} -p reason "
        f"'deploy of {target[:12]} failed on api2' --confirm twin-fleet"
    )
    assert hammer.failed == [] and during.get(f"{api1}:443", 0) > 0

    t0 = time.monotonic()
    with Hammer(fleet) as hammer:
        back = roll.rollback(before)
    took = time.monotonic() - t0
    print(f"fleet rollback: {took:.1f} s (target 300 s); through the lb: {hammer.said()}")
    print(back.fan, back.log, sep="\n")
    assert back.fan is not None and back.fan.ok, (back.fan, back.fan.hosts["api2"].error)
    assert back.log[-1] == "order: api2, api1"
    assert back.sha_by_host == {"api1": before, "api2": before}
    assert back.drained == []
    assert back.migrated == ["downgraded 0003 on api1"]
    assert hammer.failed == []


def _exec(fleet: Any, argv: list[str], outputs: Path) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [RUNBOOK, "twin", "--dir", str(fleet.dir), "exec", "--fleet", "--", RUNBOOK, *argv],
        capture_output=True,
        text=True,
        timeout=600,
        cwd=project_root(),
        env={**os.environ, "RUNBOOK_OUTPUTS": str(outputs), "PYTHONDONTWRITEBYTECODE": "1"},
    )


def _record(outputs: Path, scenario: str) -> dict[str, Any]:
    (path,) = sorted(outputs.glob(f"twin-fleet/{scenario}/*/record.json"))[-1:]
    return json.loads(path.read_text())


def test_the_notebooks_headless_a_stopped_roll_then_the_printed_fleet_rollback(
    fleet: Any, tmp_path: Path
) -> None:
    """`runbook run rolling_deploy` stops after api2 and names the fleet rollback; running
    that very command brings the fleet back to one SHA (record.json: hosts, batches, time)."""
    from runbook.twin.fleet_faults import origin_main

    before = origin_main(fleet, "api1")
    fleet.fault("bad-on:api2")
    fleet.fault("release")
    try:
        target = origin_main(fleet, "api1")
        with Hammer(fleet) as hammer:
            got = _exec(fleet, ["run", "rolling_deploy", "--env", "twin-fleet", "--confirm",
                                "twin-fleet", "-p", "watch_minutes", "0"], tmp_path)  # fmt: skip
        dep = _record(tmp_path, "rolling_deploy")
        print(f"\nrolling_deploy headless: exit {got.returncode}; lb: {hammer.said()}")
        assert got.returncode != 0 and dep["outcome"] != "ok", got.stdout[-2000:]
        assert dep["hosts"]["api1"]["outcome"] == "ok", dep["hosts"]
        assert dep["hosts"]["api2"]["outcome"] == "failed", dep["hosts"]
        checks = {c["name"]: c["status"] for c in dep["checks"]}
        assert checks[f"runs {target[:12]} @ api1"] == "passed"
        assert checks[f"runs {target[:12]} @ api2"] == "failed"
        assert checks["Out of rotation: only the hosts that failed"] == "passed"
        command = dep["next_command"]
        assert command.startswith(f"runbook run fleet_rollback --env twin-fleet -p to_sha {before}")
        assert hammer.failed == []

        argv = shlex.split(command)[1:]
        with Hammer(fleet) as hammer:
            back = _exec(fleet, argv, tmp_path)
        rb = _record(tmp_path, "fleet_rollback")
        print(
            f"fleet_rollback headless: exit {back.returncode}; {rb['metrics']}; lb: {hammer.said()}"
        )
        failed = [c for c in rb["checks"] if c["status"] == "failed"]
        assert back.returncode == 0 and rb["outcome"] == "ok", (failed, back.stdout[-2000:])
        assert {h: v["outcome"] for h, v in rb["hosts"].items() if h.startswith("api")} == {
            "api1": "ok",
            "api2": "ok",
        }
        assert rb["metrics"]["rollback_minutes"]["target"] == 5
        assert hammer.failed == []
    finally:
        fleet.heal()


def test_the_fleet_rollback_refuses_hosts_that_disagree_on_the_last_good_sha(
    fleet: Any, tmp_path: Path
) -> None:
    """Never "the previous release on each host": without -p to_sha the hosts' recorded
    last good SHAs must agree, or the plan refuses, naming each, before anything changes."""
    from runbook import open_session
    from runbook.scenarios.fleet_rollback import FleetRollback

    f = "/opt/dealix/.last_good_sha"
    kept = fleet.ssh_to("api2", f"cat {f}").stdout.strip()
    older = fleet.ssh_to("api2", "git -C /opt/dealix rev-parse HEAD~1").stdout.strip()
    fleet.ssh_to("api2", f"printf '%s\\n' {older} > {f}")
    s = open_session("fleet_rollback", "twin-fleet", confirm="twin-fleet", run_dir=tmp_path / "r")
    try:
        rb = FleetRollback(s, reason="a test")
        with pytest.raises(Forbidden) as refused:
            rb.plan()
        said = str(refused.value)
        assert "one-last-good-sha-for-the-fleet" in said
        assert f"api1 {kept[:12]}" in said and f"api2 {older[:12]}" in said
        assert s.changes == []
    finally:
        s.close()
        fleet.ssh_to("api2", f"printf '%s\\n' {kept} > {f}")
