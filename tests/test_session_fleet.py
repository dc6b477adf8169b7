"""The session's fan-out on the sandbox's real sshd, a fleet of one: a step over a group,
a step once, the host on every command event, the recap and record.json's hosts/batches."""

from __future__ import annotations

import json
from pathlib import Path

import jsonschema
import pytest

from runbook import open_session
from runbook.core.paths import project_root
from runbook.errors import DefinitionOfDoneNotMet, Forbidden, RunbookError
from runbook.evidence.seal import header_html


def _events(run_dir: Path) -> list[dict]:
    return [json.loads(line) for line in (run_dir / "commands.jsonl").read_text().splitlines()]


def _record(run_dir: Path) -> dict:
    rec = json.loads((run_dir / "record.json").read_text())
    schema = json.loads((project_root() / "docs" / "record.schema.json").read_text())
    jsonschema.validate(rec, schema)
    return rec


def test_a_step_over_a_group_on_a_fleet_of_one_names_its_host(sandbox, tmp_path) -> None:
    run = tmp_path / "run"
    s = open_session("health_check", env="sandbox", run_dir=run)
    try:
        (name,) = s.fleet.hosts  # the sandbox's one host, in every group
        with s.step("1. Uptime"):
            fan = s.on("api", lambda h: h.probe(["uptime"]).ok, serial=[1, "50%"], throttle=2)
        assert fan.ok and fan.hosts[name].value is True
        with s.step("2. Once"):
            once = s.once("db", lambda h: h.probe(["hostname"]).stdout.strip())
        assert once.hosts[name].outcome == "ok"
        with s.step("3. Check"):
            s.at(name).check("Uptime read", expected="exit 0", actual="exit 0", passed=True)
        commands = [e for e in _events(run) if e["kind"] == "command"]
        assert [e["host"] for e in commands] == [name, name]
        s.done()
        rec = _record(run)
        assert rec["hosts"] == {
            name: {
                "outcome": "ok",
                "steps": {"1. Uptime": "ok", "2. Once": "ok"},
                "checks": {"Uptime read": "passed"},
            }
        }
        assert rec["batches"][0] == {
            "step": "1. Uptime",
            "batches": [{"index": 1, "hosts": [name], "failed": [], "verdict": "ok"}],
        }
        assert [c["name"] for c in rec["checks"]][-1] == "Every host ran every step"
        assert s.recap_table().loc[name, "1. Uptime"] == "ok"
        # the HTML report shows the recap at the top, above the step timeline
        page = header_html(rec, ["record.json"])
        assert "class='runbook-recap'" in page
        assert page.index("Recap: host x step") < page.index("Step timeline")
    finally:
        s.close()


def test_a_failed_host_makes_the_run_red_and_a_refusal_stops_it(sandbox, tmp_path) -> None:
    run = tmp_path / "run"
    s = open_session("health_check", env="sandbox", run_dir=run)
    try:
        (name,) = s.fleet.hosts
        with s.step("1. False"):
            fan = s.on("api", lambda h: h.probe(["false"]))
        assert fan.hosts[name].outcome == "failed" and "CommandFailed" in (
            fan.hosts[name].error or ""
        )
        # a guard refusal on any host stops the run: raised, not a failed host
        with pytest.raises(Forbidden), s.step("2. Refused"):
            s.on("api", lambda h: h.run(["rm", "-rf", "/"]))
        with pytest.raises(DefinitionOfDoneNotMet):
            s.done()
        rec = _record(run)
        assert rec["hosts"][name]["outcome"] == "refused"
        assert rec["hosts"][name]["steps"] == {"1. False": "failed", "2. Refused": "refused"}
        every = next(c for c in rec["checks"] if c["name"] == "Every host ran every step")
        assert every["status"] == "failed" and "1. False" in every["actual"]
    finally:
        s.close()
    assert issubclass(Forbidden, RunbookError)
