"""Per-provider circuit breaker.

Closed: calls go through; `failure_threshold` consecutive failures open it.
Open: calls fail at once with CircuitOpenError, so a dead provider costs us
nothing and the work lands in a DLQ instead of piling up behind timeouts.
Half-open: after `reset_seconds` exactly one trial call is let through; its
success closes the breaker, its failure opens it again for another period.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable
from datetime import UTC, datetime
from typing import Any, TypeVar

T = TypeVar("T")

CLOSED = "closed"
OPEN = "open"
HALF_OPEN = "half_open"

STATUS_BY_STATE = {CLOSED: "green", HALF_OPEN: "yellow", OPEN: "red"}


class CircuitOpenError(Exception):
    """Raised instead of calling a provider whose breaker is open."""

    def __init__(self, name: str, retry_in: float, trial_in_flight: bool = False) -> None:
        if trial_in_flight:
            message = f"circuit for {name} is half-open and its trial call is in flight"
        else:
            message = f"circuit for {name} is open; next trial in {max(retry_in, 0.0):.1f}s"
        super().__init__(message)
        self.name = name
        self.retry_in = retry_in


class CircuitBreaker:
    def __init__(
        self,
        name: str,
        failure_threshold: int = 3,
        reset_seconds: float = 60.0,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.name = name
        self.failure_threshold = max(1, failure_threshold)
        self.reset_seconds = reset_seconds
        self._clock = clock
        self._lock = threading.Lock()
        self._state = CLOSED
        self._consecutive_failures = 0
        self._opened_mono: float | None = None
        self._opened_at: datetime | None = None
        self._trial_in_flight = False

    def _current_state(self) -> str:
        # Open turns into half-open by the passage of time alone, so that
        # /health/deep reports half_open even before a trial call is made.
        if self._state == OPEN and self._opened_mono is not None:
            if self._clock() - self._opened_mono >= self.reset_seconds:
                return HALF_OPEN
        return self._state

    @property
    def state(self) -> str:
        with self._lock:
            return self._current_state()

    def before_call(self) -> None:
        """Reserve permission for one call, or raise CircuitOpenError."""
        with self._lock:
            state = self._current_state()
            if state == CLOSED:
                return
            if state == HALF_OPEN and not self._trial_in_flight:
                self._state = HALF_OPEN
                self._trial_in_flight = True
                return
            elapsed = self._clock() - (self._opened_mono or 0.0)
            raise CircuitOpenError(
                self.name, self.reset_seconds - elapsed, trial_in_flight=state == HALF_OPEN
            )

    def record_success(self) -> None:
        with self._lock:
            self._state = CLOSED
            self._consecutive_failures = 0
            self._opened_mono = None
            self._opened_at = None
            self._trial_in_flight = False

    def record_failure(self) -> None:
        with self._lock:
            self._consecutive_failures += 1
            if self._state == HALF_OPEN or self._consecutive_failures >= self.failure_threshold:
                self._state = OPEN
                self._opened_mono = self._clock()
                self._opened_at = datetime.now(UTC)
            self._trial_in_flight = False

    def call(self, fn: Callable[..., T], *args: Any, **kwargs: Any) -> T:
        self.before_call()
        try:
            result = fn(*args, **kwargs)
        except Exception:
            self.record_failure()
            raise
        except BaseException:
            # An interrupt says nothing about the provider; just free the
            # half-open trial slot so the breaker cannot stay stuck.
            with self._lock:
                self._trial_in_flight = False
            raise
        self.record_success()
        return result

    def snapshot(self) -> dict[str, Any]:
        with self._lock:
            state = self._current_state()
            return {
                "state": state,
                "status": STATUS_BY_STATE[state],
                "consecutive_failures": self._consecutive_failures,
                "opened_at": self._opened_at.isoformat() if self._opened_at else None,
            }
