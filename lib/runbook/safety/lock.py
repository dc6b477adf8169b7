"""The host lock: one changing run per host at a time.

A directory on the server (`mkdir` is atomic) holding `owner.json` (run,
scenario, operator, their host, start time, and in JupyterLab the notebook and
kernel id, so that a lock kept by a tab left open is named as such) and a `heartbeat` file the
holder touches every 30 s. A second changing run is refused with who holds
the lock and since when. A lock whose heartbeat is older than 2 minutes is
stale (its run died), and so is one whose holder ran on this machine and
whose process is gone (told at once, without waiting for the heartbeat). A
dead drill's lock is broken by itself on both proofs at once (this machine knows
the holder's process is gone, and its heartbeat stopped more than 2 minutes ago: a
drill killed by its timer; its scratch database is dropped by the next drill
anyway); any other is broken only when the run asks for it
(`runbook run SCENARIO --break-stale-lock`, papermill `-p break_stale_lock True`,
`break_stale_lock = True` in the notebook's parameters cell); either way the
record says whose lock it was, who broke it, and why.

The session takes the lock by itself before its first real change (after the
confirmation; dry runs and read-only runs take none) and releases it in
`done()`, `close()`, or when the kernel exits after a failed run.
"""

from __future__ import annotations

import atexit
import contextlib
import json
import shlex
import threading
import time
import uuid
from typing import TYPE_CHECKING, Any

from runbook.clock import iso, utc_now
from runbook.core.kernel import kernel_identity
from runbook.errors import Forbidden
from runbook.evidence.liveness import alive, describe

if TYPE_CHECKING:
    from runbook.core.context import LockContext

HEARTBEAT_S = 30
STALE_S = 120
RULE = "one-changing-run-per-host"
SOURCE = "Safety model: one mutating run per host at a time"
# scenarios whose only change is one their next run undoes first: the drill's
# scratch database, dropped before each restore ("exists from an earlier run")
SELF_CLEANING = frozenset({"restore_drill"})


def holder_command(path: str) -> str:
    """The read-only shell command that prints a lock's owner.json and heartbeat age."""
    q = shlex.quote(path)
    return (
        f"if [ -e {q}/owner.json ]; then cat {q}/owner.json && echo && "
        f"echo $(( $(date +%s) - $(stat -c %Y {q}/heartbeat 2>/dev/null || echo 0) )); fi"
    )


def parse_holder(stdout: str) -> dict[str, Any] | None:
    """What `holder_command` printed: the owner with `heartbeat_age_s`, None when free.

    >>> parse_holder("")
    >>> parse_holder('{"scenario": "deploy"}\\n12')
    {'scenario': 'deploy', 'heartbeat_age_s': 12}
    """
    if not stdout.strip():
        return None
    lines = stdout.strip().splitlines()
    try:
        owner = json.loads(lines[0])
    except ValueError:
        owner = {"raw": lines[0]}
    owner["heartbeat_age_s"] = int(lines[-1]) if lines[-1].strip().isdigit() else None
    return owner


def describe_holder(owner: dict[str, Any] | None) -> str:
    """A lock's holder in one line.

    >>> describe_holder(None)
    'free'
    >>> describe_holder({"scenario": "deploy", "run_id": "0123456789", "operator": "ana",
    ...     "operator_host": "ops1", "started": "2026-01-01T00:00:00Z", "heartbeat_age_s": 4})
    'held by deploy run 01234567 (ana@ops1, since 2026-01-01T00:00:00Z, heartbeat 4 s ago)'
    """
    if owner is None:
        return "free"
    if "raw" in owner:
        return f"held (owner.json unreadable: {str(owner['raw'])[:80]})"
    age = owner.get("heartbeat_age_s")
    beat = f"heartbeat {age} s ago" if age is not None else "no heartbeat"
    if age is not None and age > STALE_S:
        beat += f": stale (over {STALE_S} s)"
    return (
        f"held by {owner.get('scenario')} run {str(owner.get('run_id', ''))[:8]} "
        f"({owner.get('operator')}@{owner.get('operator_host')}, since {owner.get('started')}, "
        f"{beat})"
    )


class HostLock:
    def __init__(self, ctx: LockContext, *, break_stale: bool = False, path: str | None = None):
        self.ctx = ctx
        # `path`: another lock on the same host (a fleet's environment lock)
        self.path = path or ctx.profile.app.lock_path
        self.break_stale = break_stale
        self.run_id = uuid.uuid4().hex
        self.held = False
        self.broken: dict[str, Any] | None = None
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        self.owner = {
            "run_id": self.run_id,
            "scenario": ctx.scenario,
            "environment": ctx.env,
            "operator": ctx.operator,
            "operator_host": ctx.operator_host,
            "started": iso(utc_now()),
            # pid and start time: a run on this machine can tell at once that we died
            "process": ctx.process,
            # a notebook in JupyterLab: which one and which kernel holds the lock (a tab
            # left open keeps it), so that the next run can say what to shut down
            "kernel": kernel_identity(),
        }

    def info(self) -> dict[str, Any]:
        return {"path": self.path, "held": self.held, "owner": self.owner, "broken": self.broken}

    def holder(self) -> dict[str, Any] | None:
        """Who holds the lock now (read-only), with the heartbeat's age in seconds."""
        # No lock is the usual answer, and it exits 0: a probe that exited 1 for it was
        # recorded as a failed command, and the review (appendix C) then asked for a
        # runbook update after every changing run on a real environment (found on the twin)
        r = self.ctx.probe(holder_command(self.path), shell=True, warn=True, label="lock-holder")
        if not r.ok:
            return None
        return parse_holder(r.stdout)

    def acquire(self) -> None:
        if self.held:
            return
        s = self.ctx
        q = shlex.quote(self.path)
        body = shlex.quote(json.dumps(self.owner))
        cmd = (
            f"mkdir -p \"$(dirname {q})\" && mkdir {q} && printf '%s' {body} > {q}/owner.json"
            f" && touch {q}/heartbeat"
        )
        for _attempt in (1, 2):
            current = self.holder()
            if current is None:
                # not echoed: the lock's mkdir/printf tells the operator nothing (take_lock
                # says "host lock taken"); commands.jsonl has it
                r = s.run(cmd, shell=True, warn=True, label="lock-acquire", echo=False)
                if r.dry_run:
                    return
                if r.ok:
                    self.held = True
                    self._start_heartbeat()
                    atexit.register(self.release)
                    s.evidence.append({"kind": "lock", "event": "acquired", "path": self.path})
                    return
                continue  # lost a race: read the new holder
            age = current.get("heartbeat_age_s")
            # None: the holder ran on another machine, only the heartbeat can tell
            living = alive(current.get("process"))
            dead = living is False
            stale = age is None or age > STALE_S or dead
            who = (
                f"{current.get('operator', '?')}@{current.get('operator_host', '?')} running "
                f"{current.get('scenario', '?')} on {current.get('environment', '?')} since "
                f"{current.get('started', '?')} (heartbeat {age}s ago)"
            )
            flag = (
                f"`runbook run {s.scenario} --break-stale-lock` (papermill: "
                "`-p break_stale_lock True`)"
            )
            # Broken without being asked only on two proofs (this machine knows the holder's
            # process is gone: pid, start time, boot; AND its heartbeat stopped) and only
            # for a holder whose half-done work its next run cleans up by itself. A drill
            # SIGKILLed by its timer's timeout otherwise refused every drill after it until
            # a person came (found on the twin); a dead deploy or incident run may have
            # left the server half changed, which a person must look at first.
            automatic = (
                dead
                and (age is None or age > STALE_S)
                and current.get("scenario") in SELF_CLEANING
                and not self.break_stale
            )
            if (stale and self.break_stale) or automatic:
                s.run(["rm", "-rf", self.path], label="lock-break")
                by = {k: self.owner[k] for k in ("operator", "operator_host", "scenario", "run_id")}
                why = (
                    f"its process ({describe(current['process'])}) is gone and its heartbeat "
                    f"stopped {age}s ago"
                    if automatic
                    else "break_stale_lock=True"
                )
                self.broken = {
                    "previous_holder": current,
                    "at": iso(utc_now()),
                    "by": by,
                    "automatic": automatic,
                    "why": why,
                }
                s.evidence.append(
                    {
                        "kind": "lock",
                        "event": "broken",
                        "previous_holder": current,
                        "by": by,
                        "automatic": automatic,
                        "why": why,
                    }
                )
                print(f"broke the stale host lock of {who}: {why} (recorded)")
                continue
            if dead:
                hint = (
                    f" The holder looks dead: its process ({describe(current['process'])}) is "
                    f"gone. Break the lock: {flag}; in a notebook: `break_stale_lock = True` "
                    "in the parameters cell). Breaking it is recorded."
                )
            elif stale:
                hint = (
                    " It looks stale (its run died). Make sure that run is gone, then break "
                    f"it: {flag}; in a notebook: `break_stale_lock = True` "
                    "in the parameters cell). Breaking it is recorded."
                )
            elif current.get("kernel"):
                k = current["kernel"]
                hint = (
                    f" It is held by a notebook kernel: {k.get('notebook') or 'a notebook'} "
                    f"(kernel {k.get('id') or '?'}), which keeps the lock until that notebook "
                    "reaches s.done() or its kernel stops. If nobody is stepping through it (an "
                    "idle kernel, a tab left open), open that notebook and use Kernel > Shut "
                    "Down Kernel (the lock is released as the kernel exits), or shut it down "
                    "from JupyterLab's Running Terminals and Kernels panel; if the kernel was "
                    f"killed and the lock stays, break it: {flag}."
                )
            else:
                hint = " Wait for that run to finish."
            proc = current.get("process") or {}
            extra = {
                "holder": f"{current.get('operator', '?')}@{current.get('operator_host', '?')}",
                "holder_scenario": str(current.get("scenario", "?")),
                "holder_host": str(current.get("operator_host", "?")),
                "holder_pid": str(proc.get("pid", "?")),
                "since": str(current.get("started", "?")),
                "heartbeat_age_s": str(age),
                "holder_state": "dead"
                if dead
                else ("stale" if stale else ("alive" if living else "unknown")),
            }
            if current.get("kernel"):
                k = current["kernel"]
                extra["holder_kernel"] = f"{k.get('notebook') or '?'} (kernel {k.get('id') or '?'})"
                extra["free_it"] = "Kernel > Shut Down Kernel in that notebook"
            if stale:
                extra["fix"] = flag.replace("`", "")
            raise Forbidden(
                RULE,
                f"take the host lock {self.path}",
                source=SOURCE,
                why=f"held by {who}.{hint}",
                extra=extra,
            )
        raise Forbidden(
            RULE,
            f"take the host lock {self.path}",
            source=SOURCE,
            why="could not take it after two attempts",
        )

    def _unlogged(self, command: str, kind: str) -> None:
        """Run a lock command as the gate's logged-off poll (its second connection).

        The heartbeat runs in a thread every 30 s and the release at exit or
        after a failure: neither is one of the run's commands; the record
        counts them (`polls`), and the release is in the evidence.
        """
        self.ctx.poll(command, kind=kind)

    def _start_heartbeat(self) -> None:
        q = shlex.quote(self.path)

        def beat() -> None:
            while not self._stop.wait(HEARTBEAT_S):
                with contextlib.suppress(Exception):
                    self._unlogged(f"touch {q}/heartbeat", "lock-heartbeat")

        self._thread = threading.Thread(target=beat, daemon=True, name="runbook-lock-heartbeat")
        self._thread.start()

    def release(self) -> None:
        """Release the lock if this run holds it (idempotent)."""
        if not self.held:
            return
        self._stop.set()
        q = shlex.quote(self.path)
        with contextlib.suppress(Exception):
            self._unlogged(
                f"grep -q {shlex.quote(self.run_id)} {q}/owner.json && rm -rf {q}", "lock-release"
            )
            self.ctx.evidence.append({"kind": "lock", "event": "released", "path": self.path})
        self.held = False
        with contextlib.suppress(Exception):
            atexit.unregister(self.release)
        time.sleep(0)
