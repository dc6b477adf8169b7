"""The fleet twin (lib/runbook/twin/fleet.py, issue 21 item 7's machines): an nginx load
balancer, two API servers and a database server as systemd-booted Debian machines on one
bridge, reached through the profile twin-fleet with each host's pinned key.

Root and systemd-nspawn only (`-m twin`); skipped like the single twin's tests, or failed
with RUNBOOK_REQUIRE_TWIN=1. The last test takes the fleet down and checks that nothing
is left (machines, stubs, mounts, cgroups, veths, the bridge).
"""

from __future__ import annotations

import json
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest
from conftest import fleet_twin

from runbook.core.paths import project_root
from runbook.core.profile import load_profile
from runbook.core.transport import SSHTarget, SSHTransport, transport_for_host
from runbook.errors import HostKeyMismatch

pytestmark = pytest.mark.twin


@pytest.fixture(scope="module")
def fleet() -> Iterator[object]:
    with fleet_twin("RUNBOOK_TEST_TWIN_FLEET_DIR", ".twin-fleet-test") as f:
        yield f


def _run(t: SSHTransport, command: str) -> tuple[int | None, str]:
    out: list[bytes] = []
    try:
        done = t.execute(command, on_stdout=out.append, on_stderr=lambda _b: None, timeout=30)
    finally:
        t.close()
    return done.exit_code, b"".join(out).decode()


def test_the_fleet_is_up_as_the_example_profile_names_it(fleet) -> None:
    st = fleet.state
    example = load_profile("production-fleet").fleet
    assert {n: tuple(h["groups"]) for n, h in st["hosts"].items()} == {
        n: h.groups for n, h in example.hosts.items()
    }
    rows = fleet.status()
    assert all(r["healthy"] for r in rows), rows


def test_requests_through_the_load_balancer_reach_both_api_servers(fleet) -> None:
    from runbook.twin.fleet import UPSTREAM_HEADER

    st = fleet.state
    answered: dict[str, int] = {}
    for _ in range(12):
        code, headers, body = fleet.request("/health/deep")
        assert code == 200 and json.loads(body)["status"] == "green", body[:200]
        upstream = headers[UPSTREAM_HEADER].rsplit(":", 1)[0]
        answered[upstream] = answered.get(upstream, 0) + 1
    assert set(answered) == {st["hosts"][a]["address"] for a in st["api_hosts"]}, answered
    # and from the runner side, by name, as a scenario reaches it (`runbook twin exec --fleet`)
    runbook = str(Path(sys.executable).with_name("runbook"))
    probe = "import httpx; print(httpx.get('https://api.dealix.me/health/deep').json()['status'])"
    proc = subprocess.run(
        [
            runbook,
            "twin",
            "--dir",
            str(fleet.dir),
            "exec",
            "--fleet",
            "--",
            sys.executable,
            "-c",
            probe,
        ],
        capture_output=True,
        text=True,
        timeout=60,
        cwd=project_root(),
    )
    assert proc.returncode == 0 and proc.stdout.strip() == "green", proc.stderr[-600:]


def test_the_api_servers_use_the_database_servers_postgres_and_redis(fleet) -> None:
    st = fleet.state
    db, api_ips = st["db_host"], {st["hosts"][a]["address"] for a in st["api_hosts"]}
    clients = fleet.ssh_to(db, "redis-cli client list").stdout
    assert api_ips <= {
        w.split("=", 1)[1].rsplit(":", 1)[0] for w in clients.split() if w.startswith("addr=")
    }
    rules = fleet.ssh_to(db, "ufw status").stdout
    for ip in api_ips:
        assert f"5432/tcp                   ALLOW       {ip}" in rules, rules
    for api in st["api_hosts"]:
        # no database of its own: the green /health/deep above came from the db server
        local = fleet.ssh_to(
            api, "systemctl is-enabled postgresql@15-main redis-server", check=False
        )
        assert local.stdout.split() == ["masked", "masked"], local.stdout


def test_each_host_is_reached_over_ssh_with_its_pinned_key_through_the_profile(fleet) -> None:
    profile = load_profile("twin-fleet")
    hosts = profile.require_groups("lb", "api", "db", "redis", scenario="the test").hosts
    assert set(hosts) == set(fleet.state["hosts"])
    for name in hosts:
        code, out = _run(transport_for_host(profile, name), "hostname")
        assert (code, out.strip()) == (0, name)
    # another host's key pinned for api2 is refused: the pins are per host
    h = hosts["api2"]
    wrong = SSHTransport(
        SSHTarget(host=h.address, user=h.user, key_path=h.key, host_keys=hosts["api1"].host_key)
    )
    with pytest.raises(HostKeyMismatch):
        _run(wrong, "true")


def test_down_leaves_nothing_behind(fleet) -> None:
    st = fleet.state
    pids = [p for p in st["pids"].values() if p]
    for d in st["cgroups"]:
        for procs in Path(d).rglob("cgroup.procs"):
            pids += [int(x) for x in procs.read_text().split()]
    done = fleet.down()
    assert set(done["stopped"]) == {*st["machines"], "stubs"}
    assert all("SIGTERM" in v for k, v in done["stopped"].items() if k != "stubs"), done
    alive = [p for p in pids if Path(f"/proc/{p}").exists() and _not_zombie(p)]
    assert not alive, f"processes left behind: {alive}"
    links = subprocess.run(["ip", "-o", "link"], capture_output=True, text=True).stdout
    for name in (st["bridge"], *(f"vb-{m}" for m in st["machines"].values())):
        assert f" {name}:" not in links and f" {name}@" not in links, name
    with open("/proc/mounts") as fh:
        assert str(fleet.dir) not in fh.read()
    assert not [d for d in st["cgroups"] if Path(d).exists()]
    assert not [p for p in fleet.dir.iterdir() if p.name in st["machines"]]
    assert not fleet.state_file.exists()


def _not_zombie(pid: int) -> bool:
    try:
        with open(f"/proc/{pid}/stat") as fh:
            return fh.read().rsplit(")", 1)[1].split()[0] != "Z"
    except OSError:
        return False
