"""core/fanout.py: batches, the failure threshold, the bounded pool, run_once and the recap
(no server: each host's work is a plain function; the SSH side is in the fleet tests)."""

from __future__ import annotations

import threading
import time

import pytest

from runbook.core.fanout import FanOut, Recap, plan_batches, ranked, run_once
from runbook.errors import Forbidden, HostKeyMismatch, ParameterError, RunbookError

HOSTS = [f"api{i}" for i in range(1, 7)]


@pytest.mark.parametrize(
    ("serial", "sizes"),
    [
        (None, [6]),
        (1, [1, 1, 1, 1, 1, 1]),
        (4, [4, 2]),
        ("50%", [3, 3]),
        ("10%", [1, 1, 1, 1, 1, 1]),  # rounded down, at least one host (Ansible's rule)
        ([1, "50%"], [1, 3, 2]),  # a canary, then half the group at a time
        ([1, 2, 10], [1, 2, 3]),
        ("2", [2, 2, 2]),
    ],
)
def test_batches_follow_serial(serial, sizes) -> None:
    batches = plan_batches(HOSTS, serial)
    assert [len(b) for b in batches] == sizes
    assert [h for b in batches for h in b] == HOSTS  # in order, each host once


@pytest.mark.parametrize(
    ("serial", "words"),
    [
        (0, "at least 1 host"),
        ("0%", "above 0%"),
        ("150%", "at most 100%"),
        ("half", "neither a host count"),
        ([], "empty list"),
        (True, "not a host count"),
    ],
)
def test_a_bad_serial_is_a_parameter_error_naming_it(serial, words) -> None:
    with pytest.raises(ParameterError) as info:
        plan_batches(HOSTS, serial)
    assert words in str(info.value)


def test_bad_threshold_and_throttle_are_refused_before_anything_runs() -> None:
    ran: list[str] = []
    for kw in ({"max_fail_percentage": 120}, {"throttle": 0}):
        with pytest.raises(ParameterError):
            FanOut("x", HOSTS, **kw).run(ran.append)
    assert ran == []


def test_a_failed_canary_stops_the_run_before_the_second_host() -> None:
    ran: list[str] = []
    fan = FanOut("deploy", HOSTS, serial=[1, "50%"])

    def failing(host: str) -> None:
        ran.append(host)
        if host == "api1":
            raise RunbookError("health gate: /health/deep 503")

    fan.run(failing)
    assert ran == ["api1"]
    assert fan.hosts["api1"].outcome == "failed"
    assert fan.hosts["api1"].error == "RunbookError: health gate: /health/deep 503"
    assert {h for h in HOSTS[1:] if fan.hosts[h].outcome == "not_started"} == set(HOSTS[1:])
    assert [b.verdict for b in fan.batches] == ["stopped", "not_started", "not_started"]
    assert not fan.ok
    assert "stopped after batch 1 of 3: 1 of 1 failed > 0%" in repr(fan)


def test_max_fail_percentage_must_be_exceeded_to_stop() -> None:
    def one_bad(host: str) -> str:
        if host in ("api2",):
            raise RunbookError("exit 1")
        return host

    # batches of 3: api2 fails, 1 of 3 = 33% > 30%: stop after the first batch
    fan = FanOut("restart", HOSTS, serial=3, max_fail_percentage=30).run(one_bad)
    assert fan.outcomes("not_started") == HOSTS[3:]
    # 33% is not more than 34%: the run goes on, and says the batch failed within it
    fan = FanOut("restart", HOSTS, serial=3, max_fail_percentage=34).run(one_bad)
    assert fan.outcomes("not_started") == []
    assert [b.verdict for b in fan.batches] == ["failed-within-threshold", "ok"]
    assert fan.outcomes("failed") == ["api2"]


def test_throttle_bounds_the_hosts_at_work_at_once() -> None:
    busy, peak = 0, 0
    gate = threading.Lock()

    def work(host: str) -> None:
        nonlocal busy, peak
        with gate:
            busy += 1
            peak = max(peak, busy)
        time.sleep(0.05)  # stands for an SSH round trip; only concurrency is asserted
        with gate:
            busy -= 1

    FanOut("probe", HOSTS, throttle=2).run(work)
    assert peak == 2
    busy, peak = 0, 0
    FanOut("probe", HOSTS).run(work)
    assert peak == 6  # one batch, no throttle: every host at once


@pytest.mark.parametrize(
    "refusal",
    [
        Forbidden("no-push-to-main", "git push origin main"),
        HostKeyMismatch(
            "api3's host key changed", target="api3", expected="SHA256:old", presented="SHA256:new"
        ),
    ],
)
def test_a_refusal_on_one_host_stops_the_whole_run(refusal) -> None:
    started: list[str] = []
    lock = threading.Lock()

    def step(host: str) -> None:
        with lock:
            started.append(host)
        if host == "api3":
            raise refusal
        time.sleep(0.02)

    fan = FanOut("pull", HOSTS, serial=3, throttle=1)
    with pytest.raises(type(refusal)):
        fan.run(step)
    assert started == ["api1", "api2", "api3"]  # nothing after the refusal started
    assert fan.hosts["api3"].outcome == "refused"
    assert fan.outcomes("not_started") == HOSTS[3:]
    assert "stopped in batch 1 of 2" in (fan.stopped or "")
    # in parallel: the hosts already running finish, none starts after the refusal
    fan = FanOut("pull", HOSTS, throttle=2)
    started.clear()
    with pytest.raises(type(refusal)):
        fan.run(step)
    assert "api3" in started and fan.hosts["api3"].outcome == "refused"
    assert all(fan.hosts[h].outcome in ("ok", "not_started") for h in HOSTS if h != "api3")
    assert len(started) < len(HOSTS)


def test_a_bug_is_not_a_failed_host_it_is_raised() -> None:
    def buggy(host: str) -> None:
        raise KeyError("oops")

    fan = FanOut("x", HOSTS[:2])
    with pytest.raises(KeyError):
        fan.run(buggy)


def test_run_once_runs_once_for_the_run_not_per_batch() -> None:
    ran: list[str] = []
    fan = run_once("migrate", ran.append, HOSTS)
    assert ran == ["api1"] and fan.ok
    ran.clear()
    run_once("migrate", ran.append, HOSTS, delegate_to="api4")
    assert ran == ["api4"]
    with pytest.raises(ParameterError, match="group is empty"):
        run_once("migrate", ran.append, [])


def test_the_recap_is_host_by_step_and_feeds_the_record() -> None:
    recap = Recap()
    recap.add(FanOut("pull", HOSTS[:3]).run(lambda h: h))
    recap.add(run_once("migrate", lambda h: h, HOSTS[:3]))

    def restart(host: str) -> None:
        if host == "api1":
            raise RunbookError("systemctl restart: exit 1")

    recap.add(FanOut("restart", HOSTS[:3], serial=1).run(restart))
    table = recap.frame()
    assert list(table.columns) == ["pull", "migrate", "restart"]
    assert table.loc["api1", "restart"] == "failed"
    assert table.loc["api2", "migrate"] == "-"
    assert table.loc["api3", "restart"] == "not started"
    rec = recap.record()
    assert rec["api1"] == {
        "outcome": "failed",
        "steps": {"pull": "ok", "migrate": "ok", "restart": "failed"},
    }
    assert rec["api3"]["outcome"] == "not_started"
    assert [b["verdict"] for b in recap.batches()[2]["batches"]] == [
        "stopped",
        "not_started",
        "not_started",
    ]
    assert "api1  ok    ok       failed" in recap.text()


def test_hosts_are_ranked_lowest_first_unranked_last() -> None:
    assert ranked([("db", None), ("api2", 20), ("api1", 10)]) == ["api1", "api2", "db"]


def test_a_host_named_twice_is_refused() -> None:
    with pytest.raises(ParameterError, match="listed twice"):
        FanOut("x", ["api1", "api1"])
