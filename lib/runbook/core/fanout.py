"""Fan-out: one step over a group of hosts, in batches, with a failure threshold.

A fleet run does what Ansible's play keywords do, with the semantics its users
asked for over a decade written down here instead of discovered in production
(docs/fleet.md):

- `serial`: batch sizes, an int, a percentage of the group ("50%") or a list
  of them whose last entry repeats (`[1, "50%"]`: one canary host, then half
  the rest at a time). A percentage is of the whole group, rounded down, at
  least 1 host (Ansible's rule). None: the whole group is one batch.
- `max_fail_percentage`: after a batch, the run stops when the failed hosts of
  that batch are MORE than this share of it (Ansible: "must be exceeded").
  The default is 0: any failed host stops the run after its batch, so a bad
  canary never reaches the second host. Hosts of later batches are recorded
  as `not_started`, never silently skipped.
- `throttle`: at most this many hosts of a batch at once (a bounded pool;
  each host's work mostly waits on SSH, so threads are the right tool).
- `run_once(fn, hosts)`: once for the whole run, on the first host (or the
  one named by `delegate_to`), not once per batch (Ansible's `run_once` runs
  once per batch, which surprised its users: ansible#12170, #19855).
- A refusal (a host key that changed, a rule the guard refuses, a tripwire
  that tripped, an unconfirmed change) or an interrupted command stops the
  whole run at once: no new host starts, the hosts already running finish
  their current call, and the refusal is raised as it is, as on one host.

Every host's outcome (ok, failed, not_started) with its error's first line,
its batch and its timings is kept in `FanOut.hosts`; `FanOut.batches` lists
the batches with their hosts and verdicts; `recap()` is the host x step table
the notebook shows and `record()` the `hosts`/`batches` maps of record.json.

Example (plain functions stand in for a step on each host)::

    >>> plan_batches(["api1", "api2", "api3", "api4"], [1, "50%"])
    [('api1',), ('api2', 'api3'), ('api4',)]
    >>> fan = FanOut("restart", ["api1", "api2", "api3"], serial=1)
    >>> def restart(host):
    ...     if host == "api2":
    ...         raise RunbookError("systemctl restart dealix-api: exit 1")
    ...     return f"{host} restarted"
    >>> fan.run(restart)
    restart: 1 ok, 1 failed, 1 not started (stopped after batch 2 of 3: 1 of 1 failed > 0%)
    >>> fan.hosts["api2"].error
    'RunbookError: systemctl restart dealix-api: exit 1'
    >>> fan.hosts["api3"].outcome
    'not_started'
"""

from __future__ import annotations

import math
import threading
import time
from collections.abc import Callable, Iterable, Sequence
from concurrent.futures import ThreadPoolExecutor, wait
from dataclasses import dataclass, field
from typing import Any

from runbook.clock import iso, utc_now
from runbook.errors import STOPS_THE_RUN, ParameterError, RunbookError

Serial = int | str | Sequence[int | str] | None

OK, FAILED, REFUSED, NOT_STARTED = "ok", "failed", "refused", "not_started"
FIRST_LINE = 300


def _size(entry: int | str, total: int) -> int:
    """One `serial` entry as a number of hosts.

    >>> _size("50%", 5), _size("10%", 4), _size(2, 4)
    (2, 1, 2)
    """
    if isinstance(entry, bool):
        raise ParameterError(f"serial entry {entry!r} is not a host count or a percentage")
    if isinstance(entry, int):
        n = entry
    elif isinstance(entry, str) and entry.strip().endswith("%"):
        try:
            pct = float(entry.strip()[:-1])
        except ValueError:
            raise ParameterError(
                f"serial entry {entry!r} is not a percentage: write it like '50%'", key="serial"
            ) from None
        if not 0 < pct <= 100:
            raise ParameterError(
                f"serial entry {entry!r} must be above 0% and at most 100%", key="serial"
            )
        n = max(1, math.floor(total * pct / 100))
    elif isinstance(entry, str) and entry.strip().isdigit():
        n = int(entry)
    else:
        raise ParameterError(
            f"serial entry {entry!r} is neither a host count (2) nor a percentage ('50%')",
            key="serial",
        )
    if n < 1:
        raise ParameterError(f"serial entry {entry!r} must be at least 1 host", key="serial")
    return n


def plan_batches(hosts: Sequence[str], serial: Serial = None) -> list[tuple[str, ...]]:
    """The batches `serial` makes of `hosts`, in order; the last entry of a list repeats.

    >>> plan_batches(["a", "b", "c"])
    [('a', 'b', 'c')]
    >>> plan_batches(["a", "b", "c", "d", "e"], [1, 2])
    [('a',), ('b', 'c'), ('d', 'e')]
    >>> plan_batches(["a", "b", "c"], "34%")
    [('a',), ('b',), ('c',)]
    >>> plan_batches(["a", "a"])
    Traceback (most recent call last):
    ...
    runbook.errors.ParameterError: host 'a' is listed twice in one fan-out
    """
    seen: set[str] = set()
    for h in hosts:
        if h in seen:
            raise ParameterError(f"host {h!r} is listed twice in one fan-out", key="hosts")
        seen.add(h)
    if not hosts:
        return []
    if serial is None:
        return [tuple(hosts)]
    entries: list[int | str] = [serial] if isinstance(serial, (int, str)) else list(serial)
    if not entries:
        raise ParameterError("serial is an empty list: give at least one batch size", key="serial")
    sizes = [_size(e, len(hosts)) for e in entries]
    out: list[tuple[str, ...]] = []
    i = 0
    while i < len(hosts):
        n = sizes[min(len(out), len(sizes) - 1)]
        out.append(tuple(hosts[i : i + n]))
        i += n
    return out


@dataclass
class HostRun:
    """One host's part in a fan-out."""

    host: str
    outcome: str = NOT_STARTED
    batch: int | None = None
    value: Any = None
    error: str | None = None
    started: str | None = None
    seconds: float | None = None

    def as_record(self) -> dict[str, Any]:
        return {
            "outcome": self.outcome,
            "batch": self.batch,
            "error": self.error,
            "started": self.started,
            "seconds": None if self.seconds is None else round(self.seconds, 3),
        }


@dataclass
class Batch:
    index: int
    hosts: tuple[str, ...]
    failed: list[str] = field(default_factory=list)
    verdict: str = "pending"  # ok | failed-within-threshold | stopped | not_started

    def as_record(self) -> dict[str, Any]:
        return {
            "index": self.index,
            "hosts": list(self.hosts),
            "failed": list(self.failed),
            "verdict": self.verdict,
        }


def _first_line(exc: BaseException) -> str:
    lines = str(exc).splitlines()
    return f"{type(exc).__name__}: {(lines[0] if lines else '')[:FIRST_LINE]}"


class FanOut:
    """One step over `hosts` (host names, in order; rank them before) in batches.

    `run(fn)` calls `fn(host)` for each host; a `RunbookError` fails that host
    only (its first line is kept); a refusal or an interrupted command stops
    the run and is raised; anything else outside the error tree is a bug and is
    raised too, after the hosts already running have finished.
    """

    def __init__(
        self,
        step: str,
        hosts: Sequence[str],
        *,
        serial: Serial = None,
        max_fail_percentage: float = 0,
        throttle: int | None = None,
    ):
        if not 0 <= max_fail_percentage <= 100:
            raise ParameterError(
                f"max_fail_percentage={max_fail_percentage!r} must be between 0 and 100",
                key="max_fail_percentage",
            )
        if throttle is not None and throttle < 1:
            raise ParameterError(f"throttle={throttle!r} must be at least 1", key="throttle")
        self.step = step
        self.plan = plan_batches(list(hosts), serial)
        self.max_fail_percentage = max_fail_percentage
        self.throttle = throttle
        self.hosts: dict[str, HostRun] = {h: HostRun(h) for b in self.plan for h in b}
        self.batches = [Batch(i + 1, b) for i, b in enumerate(self.plan)]
        self.stopped: str | None = None
        self._lock = threading.Lock()

    # ------------------------------------------------------------------ running
    def _one(self, fn: Callable[[str], Any], host: str, batch: int) -> None:
        run = self.hosts[host]
        run.batch, run.started = batch, iso(utc_now())
        t0 = time.monotonic()
        try:
            run.value = fn(host)
            run.outcome = OK
        except RunbookError as exc:
            refused = isinstance(exc, STOPS_THE_RUN)
            run.outcome, run.error = (REFUSED if refused else FAILED), _first_line(exc)
            if refused:
                raise
        except BaseException as exc:  # a bug or an interrupt: recorded, then raised as it is
            run.outcome, run.error = FAILED, _first_line(exc)
            raise
        finally:
            run.seconds = time.monotonic() - t0

    def _batch(self, fn: Callable[[str], Any], batch: Batch) -> None:
        workers = min(len(batch.hosts), self.throttle or len(batch.hosts))
        if workers == 1:
            for h in batch.hosts:
                self._one(fn, h, batch.index)
            return
        stop = threading.Event()

        def guarded(h: str) -> None:
            if stop.is_set():
                return  # a refusal elsewhere: this host never starts
            try:
                self._one(fn, h, batch.index)
            except BaseException:
                stop.set()
                raise

        with ThreadPoolExecutor(max_workers=workers, thread_name_prefix="runbook-fanout") as pool:
            futures = [pool.submit(guarded, h) for h in batch.hosts]
            wait(futures)  # the hosts already running finish their call
        errors = [e for e in (f.exception() for f in futures) if e is not None]
        if errors:
            # a refusal is the reason to give; a bug found beside it is recorded on its host
            raise next((e for e in errors if isinstance(e, STOPS_THE_RUN)), errors[0])

    def run(self, fn: Callable[[str], Any]) -> FanOut:
        """Run `fn` on every host, batch by batch; returns self (its repr is the summary)."""
        for batch in self.batches:
            try:
                self._batch(fn, batch)
            except BaseException as exc:
                batch.failed = [h for h in batch.hosts if self.hosts[h].outcome != OK]
                batch.verdict = "stopped"
                self.stopped = (
                    f"stopped in batch {batch.index} of {len(self.batches)}: {_first_line(exc)}"
                )
                self._mark_rest(batch.index)
                raise
            batch.failed = [h for h in batch.hosts if self.hosts[h].outcome == FAILED]
            share = 100 * len(batch.failed) / len(batch.hosts)
            if batch.failed and share > self.max_fail_percentage:
                batch.verdict = "stopped"
                self.stopped = (
                    f"stopped after batch {batch.index} of {len(self.batches)}: "
                    f"{len(batch.failed)} of {len(batch.hosts)} failed > "
                    f"{self.max_fail_percentage:g}%"
                )
                self._mark_rest(batch.index)
                break
            batch.verdict = "failed-within-threshold" if batch.failed else "ok"
        return self

    def _mark_rest(self, after: int) -> None:
        for b in self.batches[after:]:
            b.verdict = "not_started"

    # ------------------------------------------------------------------ reading
    def outcomes(self, outcome: str) -> list[str]:
        return [h for h, r in self.hosts.items() if r.outcome == outcome]

    @property
    def ok(self) -> bool:
        """Every host ran and none failed."""
        return all(r.outcome == OK for r in self.hosts.values())

    def __repr__(self) -> str:
        counts = [
            f"{len(self.outcomes(OK))} ok",
            f"{len(self.outcomes(FAILED))} failed",
            f"{len(self.outcomes(NOT_STARTED))} not started",
        ]
        if self.outcomes(REFUSED):
            counts.insert(2, f"{len(self.outcomes(REFUSED))} refused")
        tail = f" ({self.stopped})" if self.stopped else ""
        return f"{self.step}: {', '.join(counts)}{tail}"

    def record(self) -> dict[str, Any]:
        """This step's part of record.json's `hosts` and `batches` maps."""
        return {
            "step": self.step,
            "hosts": {h: r.as_record() for h, r in self.hosts.items()},
            "batches": [b.as_record() for b in self.batches],
            "stopped": self.stopped,
        }


def run_once(
    step: str,
    fn: Callable[[str], Any],
    hosts: Sequence[str],
    *,
    delegate_to: str | None = None,
) -> FanOut:
    """`fn` once for the whole run, on the first of `hosts` or on `delegate_to`.

    >>> run_once("migrate", lambda h: f"alembic upgrade head on {h}", ["api1", "api2"])
    migrate: 1 ok, 0 failed, 0 not started
    >>> run_once("migrate", print, ["api1"], delegate_to="db9")
    Traceback (most recent call last):
    ...
    runbook.errors.ParameterError: delegate_to='db9' is not one of the hosts: api1
    """
    if not hosts:
        raise ParameterError(f"{step}: no host to run on (the group is empty)", key="hosts")
    target = delegate_to or hosts[0]
    if target not in hosts:
        raise ParameterError(
            f"delegate_to={delegate_to!r} is not one of the hosts: {', '.join(hosts)}",
            key="delegate_to",
        )
    fan = FanOut(step, [target])
    fan.run(fn)
    return fan


class Recap:
    """The host x step table of a fleet run (Ansible's PLAY RECAP, per step).

    >>> r = Recap()
    >>> r.add(FanOut("pull", ["api1", "api2"]).run(lambda h: h))
    >>> r.add(run_once("migrate", lambda h: h, ["api1", "api2"]))
    >>> print(r.text())
    host  pull  migrate
    api1  ok    ok
    api2  ok    -
    >>> r.record()["api2"]
    {'outcome': 'ok', 'steps': {'pull': 'ok'}}
    """

    def __init__(self) -> None:
        self.steps: list[FanOut] = []

    def add(self, fan: FanOut) -> None:
        self.steps.append(fan)

    def host_names(self) -> list[str]:
        seen: dict[str, None] = {}
        for f in self.steps:
            for h in f.hosts:
                seen.setdefault(h, None)
        return list(seen)

    def rows(self) -> list[dict[str, str]]:
        out = []
        for h in self.host_names():
            row = {"host": h}
            for f in self.steps:
                run = f.hosts.get(h)
                row[f.step] = "-" if run is None else run.outcome.replace("_", " ")
            out.append(row)
        return out

    def text(self) -> str:
        rows = self.rows()
        cols = ["host", *[f.step for f in self.steps]]
        width = {c: max(len(c), *(len(r[c]) for r in rows)) for c in cols}
        lines = ["  ".join(c.ljust(width[c]) for c in cols).rstrip()]
        lines += ["  ".join(r[c].ljust(width[c]) for c in cols).rstrip() for r in rows]
        return "\n".join(lines)

    def frame(self) -> Any:
        import pandas as pd

        return pd.DataFrame(self.rows()).set_index("host")

    def record(self) -> dict[str, Any]:
        """record.json's `hosts` map: per host, the worst outcome and each step's."""
        order = {OK: 0, NOT_STARTED: 1, FAILED: 2, REFUSED: 3}
        out: dict[str, Any] = {}
        for h in self.host_names():
            steps = {f.step: f.hosts[h].outcome for f in self.steps if h in f.hosts}
            worst = max(steps.values(), key=lambda o: order.get(o, 2))
            out[h] = {"outcome": worst, "steps": steps}
        return out

    def batches(self) -> list[dict[str, Any]]:
        return [{"step": f.step, "batches": [b.as_record() for b in f.batches]} for f in self.steps]


def ranked(hosts: Iterable[tuple[str, int | None]]) -> list[str]:
    """Host names by rank (lowest first; unranked last), stable otherwise.

    >>> ranked([("api2", None), ("api1", 2), ("api3", 1)])
    ['api3', 'api1', 'api2']
    """
    items = list(hosts)
    return [
        h
        for h, _ in sorted(items, key=lambda hr: (hr[1] is None, hr[1] if hr[1] is not None else 0))
    ]
