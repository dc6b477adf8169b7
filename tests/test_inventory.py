"""The inventory in a profile (issue 21, item 1): groups of hosts, each with its address,
user, key and pinned host key; single-host profiles read as a fleet of one, unchanged;
a bad inventory is refused by `load_profile`, before anything runs, with the fix named.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest
import yaml
from conftest import profile_keys

from runbook.core.inventory import ROLE_GROUPS
from runbook.core.paths import project_root
from runbook.core.profile import load_profile
from runbook.core.transport import SSHTransport, transport_for, transport_for_host
from runbook.errors import ParameterError

KEY = "ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAIExampleExampleExampleExampleExampleExample"

BASE = f"""\
name: base
kind: staging
description: "a single host"
target:
  transport: ssh
  host: base.example
  port: 2200
  user: deploy
  key: /keys/deploy
  host_key: ["{KEY}"]
do_not_touch:
  protected_branches: [main]
  files: [/srv/app/.env.pre-v3.0.0.bak]
"""


def _fleet_yaml(**changes: Any) -> dict[str, Any]:
    """A valid fleet profile extending BASE, with `changes` applied to its inventory."""
    inv: dict[str, Any] = {
        "vars": {"env_label": "prod"},
        "hosts": {
            "lb1": {"address": "10.0.0.10", "host_key": [KEY]},
            "api1": {"address": "10.0.0.11", "host_key": [KEY], "rank": 2},
            "api2": {"address": "10.0.0.12", "host_key": [KEY], "rank": 1, "vars": {"w": 2}},
            "api3": {"address": "10.0.0.13", "host_key": [KEY]},
            "db1": {"address": "10.0.0.20", "host_key": [KEY], "user": "admin", "port": 2222},
        },
        "groups": {
            "lb": {"hosts": ["lb1"]},
            "api": {"hosts": ["api1", "api2", "api3"], "vars": {"w": 1, "drain": 10}},
            "db": {"hosts": ["db1"]},
            "redis": {"hosts": ["db1"]},
            "canary": {"hosts": ["api2"], "vars": {"drain": 10}},
        },
    }
    for path, value in changes.items():
        node = inv
        *parents, last = path.split("__")
        for p in parents:
            node = node[p]
        if value is None:
            node.pop(last, None)
        else:
            node[last] = value
    return {
        "extends": "base",
        "name": "fleet",
        "target": {"host": "", "host_key": []},
        "inventory": inv,
    }


def _load(tmp_path: Path, data: dict[str, Any]) -> Any:
    (tmp_path / "base.yaml").write_text(BASE)
    (tmp_path / "fleet.yaml").write_text(yaml.safe_dump(data))
    return load_profile("fleet", directory=tmp_path)


def _refused(tmp_path: Path, data: dict[str, Any]) -> ParameterError:
    with pytest.raises(ParameterError) as err:
        _load(tmp_path, data)
    assert err.value.fix, "every refusal names its fix"
    return err.value


# ---------------------------------------------------------------- a fleet of one


@pytest.mark.parametrize("name", ["production", "staging", "twin-drill"])
def test_every_single_host_profile_reads_as_a_fleet_of_one(name: str) -> None:
    p = load_profile(name)
    assert p.inventory is None
    fleet = p.fleet
    assert fleet.is_single
    (host,) = fleet.hosts.values()
    t = p.target
    if t.transport == "ssh":
        assert (host.name, host.address, host.port, host.user, host.key) == (
            t.host,
            t.host,
            t.port,
            t.user,
            t.key,
        )
        assert host.host_key == t.host_key and host.known_hosts == t.known_hosts
    else:
        assert host.name == "localhost"
    # the one host is every role: lb, api, db and redis are the same box
    for group in ROLE_GROUPS:
        assert fleet.names(group) == [host.name]
    p.require_groups("lb", "api", "db", "redis", scenario="deploy")


def test_a_single_host_profile_still_connects_as_before(tmp_path: Path) -> None:
    (tmp_path / "base.yaml").write_text(BASE)
    p = load_profile("base", directory=tmp_path)
    by_name = transport_for_host(p, "base.example")
    plain = transport_for(p)
    assert isinstance(by_name, SSHTransport) and isinstance(plain, SSHTransport)
    assert by_name.target == plain.target == "deploy@base.example:2200"


# ---------------------------------------------------------------- a valid fleet


def test_a_fleet_profile_fills_defaults_orders_by_rank_and_merges_vars(tmp_path: Path) -> None:
    p = _load(tmp_path, _fleet_yaml())
    f = p.fleet
    assert not f.is_single
    assert f.names("api") == ["api2", "api1", "api3"]  # rank 1, rank 2, unranked
    api1, db1 = f.hosts["api1"], f.hosts["db1"]
    # port, user and key from target; the pin is the host's own
    assert (api1.address, api1.port, api1.user, api1.key) == (
        "10.0.0.11",
        2200,
        "deploy",
        "/keys/deploy",
    )
    assert (db1.port, db1.user) == (2222, "admin")
    assert db1.groups == ("db", "redis")  # allowed: Redis beside PostgreSQL
    # all < group < host; two groups agreeing on a value are fine
    assert f.hosts["api2"].vars == {"env_label": "prod", "w": 2, "drain": 10}
    assert api1.vars == {"env_label": "prod", "w": 1, "drain": 10}
    assert p.require_groups("api", "lb").names("lb") == ["lb1"]
    t = transport_for_host(p, "db1")
    assert isinstance(t, SSHTransport) and t.target == "admin@10.0.0.20:2222"


def test_a_single_host_in_every_group_of_an_inventory_is_a_fleet_of_one(tmp_path: Path) -> None:
    data = _fleet_yaml()
    data["inventory"]["hosts"] = {"box": {"address": "10.0.0.5", "host_key": [KEY]}}
    data["inventory"]["groups"] = {g: {"hosts": ["box"]} for g in ROLE_GROUPS}
    f = _load(tmp_path, data).fleet
    assert f.is_single and set(f.hosts["box"].groups) == set(ROLE_GROUPS)


def test_the_example_fleet_profile_loads_and_differs_from_production_only_in_hosts() -> None:
    p = load_profile("production-fleet")
    f = p.require_groups("lb", "api", "db", "redis", scenario="deploy")
    assert f.names("api") == ["api1", "api2"] and f.names("redis") == f.names("db") == ["db1"]
    prod, fleet = profile_keys("production"), profile_keys("production-fleet")
    differs = {
        k for k in prod.keys() | fleet.keys() if prod.get(k, "<absent>") != fleet.get(k, "<absent>")
    }
    assert {k for k in differs if not k.startswith("inventory.")} == {
        "name",
        "description",
        "target.host",
        "target.host_key",
        "redis.url",
    }
    # a single-server run cannot pick one host of a fleet by accident
    with pytest.raises(ParameterError, match="fleet profile"):
        transport_for(p)


# ---------------------------------------------------------------- refusals


def test_a_host_without_a_pinned_key_is_refused(tmp_path: Path) -> None:
    err = _refused(tmp_path, _fleet_yaml(hosts__api2__host_key=None))
    assert err.key == "inventory.hosts.api2.host_key"
    assert "no pinned host key" in str(err)
    assert "ssh-keyscan -p 2200 -t ed25519 10.0.0.12" in (err.fix or "")


def test_a_host_in_two_role_groups_is_refused_naming_what_may_share(tmp_path: Path) -> None:
    err = _refused(tmp_path, _fleet_yaml(groups__lb__hosts=["lb1", "api1"]))
    assert "'api1' is in groups" in str(err) and "lb" in str(err) and "api" in str(err)
    assert "db+redis" in (err.fix or "") and "fleet of one" in (err.fix or "")


def test_an_empty_group_a_scenario_needs_is_refused(tmp_path: Path) -> None:
    data = _fleet_yaml(groups__redis=None)
    data["inventory"]["groups"]["lb"] = {"hosts": []}
    data["inventory"]["hosts"].pop("lb1")
    p = _load(tmp_path, data)  # an inventory may leave a group empty ...
    with pytest.raises(ParameterError) as err:
        p.require_groups("api", "lb", "redis", scenario="deploy")  # ... a scenario may not
    assert "deploy needs at least one host in group(s) lb, redis" in str(err.value)
    assert err.value.key == "inventory.groups.lb" and "inventory.groups.lb.hosts" in (
        err.value.fix or ""
    )


def test_two_hosts_at_one_address_and_port_are_refused(tmp_path: Path) -> None:
    err = _refused(tmp_path, _fleet_yaml(hosts__api3__address="10.0.0.11"))
    assert "api1 and inventory.hosts.api3 are both 10.0.0.11 port 2200" in str(err)
    # the same address on another port is another sshd: allowed
    _load(tmp_path, _fleet_yaml(hosts__api3__address="10.0.0.11", hosts__api3__port=2201))


@pytest.mark.parametrize(
    ("changes", "says"),
    [
        ({"groups__api__hosts": ["api1", "api9"]}, "lists 'api9', which is not under"),
        ({"groups__canary": None, "groups__api__hosts": ["api1", "api3"]}, "api2 is in no group"),
        ({"groups__canary__vars": {"drain": 30}}, "drain=10 from group api and drain=30"),
        ({"hosts": {}}, "inventory has no hosts"),
    ],
)
def test_other_inventory_mistakes_are_refused(
    tmp_path: Path, changes: dict[str, Any], says: str
) -> None:
    assert says in str(_refused(tmp_path, _fleet_yaml(**changes)))


def test_an_inventory_beside_a_single_target_host_is_refused(tmp_path: Path) -> None:
    data = _fleet_yaml()
    data.pop("target")  # inherits base.example and its key
    err = _refused(tmp_path, data)
    assert err.key == "target.host" and 'target.host: ""' in (err.fix or "")


def test_a_bad_inventory_stops_runbook_run_with_exit_2(tmp_path: Path) -> None:
    (tmp_path / "base.yaml").write_text(BASE)
    (tmp_path / "fleet.yaml").write_text(yaml.safe_dump(_fleet_yaml(hosts__db1__host_key=None)))
    env = {**os.environ, "RUNBOOK_PARAMETERS_DIR": str(tmp_path)}
    proc = subprocess.run(
        [sys.executable, "-m", "runbook.cli", "run", "health_check", "--env", "fleet"],
        capture_output=True,
        text=True,
        env=env,
        timeout=120,
        cwd=project_root(),
    )
    assert proc.returncode == 2, proc.stdout + proc.stderr
    assert "inventory.hosts.db1 has no pinned host key" in proc.stdout + proc.stderr


# ---------------------------------------------------------------- the fleet twin's profile

# key (or key prefix) -> why twin-fleet.yaml overrides it (its comments say the same)
TWIN_FLEET_OVERRIDES = {
    "name": "a profile is named after its file",
    "description": "says what the target is",
    "target.key": "a client key made for the fleet twin, never production's deploy key",
    "inventory.hosts.*.address": "each machine's address on the twin's bridge",
    "inventory.hosts.*.host_key": "the host key generated for each machine at up",
    "redis.url": "the database server's address on the bridge",
    "secrets.file": "rotations write here: never the operator's production secrets",
}


def test_twin_fleet_differs_from_the_example_fleet_only_in_addresses_and_keys() -> None:
    example, twin = profile_keys("production-fleet"), profile_keys("twin-fleet")
    differs = {
        k
        for k in example.keys() | twin.keys()
        if example.get(k, "<absent>") != twin.get(k, "<absent>")
    }
    pattern = {
        ".".join(
            "*" if i == 2 and k.startswith("inventory.hosts.") else p
            for i, p in enumerate(k.split("."))
        )
        for k in differs
    }
    assert pattern == set(TWIN_FLEET_OVERRIDES)
    # the same hosts in the same groups, every override filled from the fleet twin's state
    for key in differs - {"name", "description"}:
        assert "${twin_fleet." in str(twin[key]), key
    assert twin["kind"] == "production"


def test_twin_fleet_loads_from_the_fleet_twin_state(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    state: dict[str, Any] = {"ssh_key": str(tmp_path / "id"), "secrets_file": str(tmp_path / "s")}
    for i, name in enumerate(("lb1", "api1", "api2", "db1")):
        state[f"{name}_address"] = f"10.231.40.{i + 2}"
        state[f"{name}_host_key"] = KEY
    (tmp_path / "state.json").write_text(json.dumps(state))
    monkeypatch.setenv("RUNBOOK_TWIN_FLEET_DIR", str(tmp_path))
    p = load_profile("twin-fleet")
    f = p.require_groups("lb", "api", "db", "redis", scenario="deploy")
    assert f.hosts["api2"].address == "10.231.40.4" and f.hosts["db1"].host_key == [KEY]
    assert f.hosts["lb1"].key == state["ssh_key"] and p.redis.url == "redis://10.231.40.5:6379/0"
    example = load_profile("production-fleet")
    assert p.api == example.api and p.services == example.services
    assert f.groups == example.fleet.groups
    monkeypatch.setenv("RUNBOOK_TWIN_FLEET_DIR", str(tmp_path / "none"))
    with pytest.raises(ParameterError, match=r"runbook twin up --fleet"):
        load_profile("twin-fleet")


def test_a_scenario_not_written_for_a_fleet_is_refused_before_anything_runs(
    tmp_path: Path,
) -> None:
    from runbook import open_session

    with pytest.raises(ParameterError, match="production-fleet is a fleet profile") as err:
        open_session("restore_drill", "production-fleet", run_dir=tmp_path / "run")
    assert "single-host profile" in (err.value.fix or "")
    assert not (tmp_path / "run").exists()  # no evidence folder: nothing ran


def test_a_fleet_session_holds_one_gate_per_host_and_connects_none_until_used(
    tmp_path: Path,
) -> None:
    import jsonschema

    from runbook import open_session
    from runbook.core.paths import project_root

    schema = json.loads((project_root() / "docs" / "record.schema.json").read_text())
    s = open_session("health_check", "production-fleet", run_dir=tmp_path / "run")
    try:
        assert set(s.gates) == {"lb1", "api1", "api2", "db1"}
        assert {n: g.target for n, g in s.gates.items()}["api2"] == "root@10.0.0.12:22"
        assert s.gate is s.gates["db1"]  # the environment lock's host: the first db host
        assert all(g._transport is None for g in s.gates.values())  # lazily connected
        # a step that does not name its host has nowhere to go on a fleet
        with pytest.raises(ParameterError, match="needs the host") as err:
            s.probe(["true"])
        assert "s.at(HOST)" in (err.value.fix or "")
        assert s.fleet_run.hosts_of("api") == ["api1", "api2"]
        with pytest.raises(ParameterError, match="no host 'api9'"):
            s.at("api9")
        record = s.record()
        jsonschema.validate(json.loads(json.dumps(record, default=str)), schema)
        assert record["hosts"] == {} and record["batches"] == []
    finally:
        s.close()
