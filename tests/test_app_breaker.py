"""The stand-in app's per-provider circuit breaker, on a controlled clock.

The llm_provider_down scenario reads these states from /health/deep, so the
transitions are pinned here directly: closed → open after the threshold of
consecutive failures, open fails fast, half-open after `reset_seconds` lets
exactly one trial through, its success closes the breaker and its failure
opens it for another period.
"""

from __future__ import annotations

import sys
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "sandbox" / "app"))

from dealix.breaker import CircuitBreaker, CircuitOpenError


class Clock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


def _fail() -> None:
    raise ConnectionError("provider down")


def _open(breaker: CircuitBreaker) -> None:
    for _ in range(breaker.failure_threshold):
        with pytest.raises(ConnectionError):
            breaker.call(_fail)


def test_threshold_opens_and_open_fails_fast() -> None:
    clock = Clock()
    b = CircuitBreaker("anthropic", failure_threshold=3, reset_seconds=60, clock=clock)
    for _ in range(2):
        with pytest.raises(ConnectionError):
            b.call(_fail)
    assert b.snapshot()["state"] == "closed" and b.snapshot()["consecutive_failures"] == 2
    assert b.call(lambda: "ok") == "ok"  # a success resets the count
    _open(b)
    snap = b.snapshot()
    assert snap["state"] == "open" and snap["status"] == "red" and snap["opened_at"]
    calls = []
    with pytest.raises(CircuitOpenError, match=r"next trial in 60\.0s"):
        b.call(lambda: calls.append(1))
    assert calls == [], "an open breaker must not call the provider"


def test_half_open_lets_one_trial_through_and_success_closes() -> None:
    clock = Clock()
    b = CircuitBreaker("openai", failure_threshold=2, reset_seconds=60, clock=clock)
    _open(b)
    clock.now += 59.9
    assert b.state == "open"
    clock.now += 0.1
    assert b.state == "half_open" and b.snapshot()["status"] == "yellow"
    b.before_call()  # the one trial
    with pytest.raises(CircuitOpenError, match="trial call is in flight"):
        b.before_call()
    b.record_success()
    snap = b.snapshot()
    assert snap["state"] == "closed" and snap["consecutive_failures"] == 0
    assert snap["opened_at"] is None


def test_failed_trial_opens_for_another_period() -> None:
    clock = Clock()
    b = CircuitBreaker("google", failure_threshold=3, reset_seconds=10, clock=clock)
    _open(b)
    clock.now += 10
    assert b.state == "half_open"
    with pytest.raises(ConnectionError):
        b.call(_fail)  # the trial fails: open again at once, not after 3 more
    assert b.state == "open"
    clock.now += 9.9
    assert b.state == "open"
    clock.now += 0.1
    assert b.state == "half_open"


def test_an_interrupted_trial_frees_the_slot() -> None:
    clock = Clock()
    b = CircuitBreaker("anthropic", failure_threshold=1, reset_seconds=5, clock=clock)
    _open(b)
    clock.now += 5

    def interrupted() -> None:
        raise KeyboardInterrupt

    with pytest.raises(KeyboardInterrupt):
        b.call(interrupted)
    assert b.state == "half_open"
    assert b.call(lambda: "recovered") == "recovered"
    assert b.state == "closed"
