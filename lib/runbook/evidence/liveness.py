"""Runs that died: tell a dead run from a live one, and finish its record as "abandoned".

A run killed with SIGKILL (runner or kernel), or whose machine lost power,
never writes its verdict: record.json stays at outcome "running". Each record
therefore holds the process that runs the session (`process`: host, pid, its
start time and boot id, so a reused pid is not mistaken for it, and the pid of
`runbook run` when there is one). The runner, and every session when it opens,
look for records of the same environment and target left "running" whose
processes are gone on this host, and finish them: outcome "abandoned" (exit 8),
the last step and last command known from commands.jsonl, who finished it and
when. The host lock uses the same test to say at once that its holder is dead.

Example::

    >>> me = this_process()
    >>> alive(me), alive({**me, "pid": 2**22 + 1, "runner_pid": None})
    (True, False)
    >>> alive({**me, "host": "another-machine"}) is None   # cannot tell from here
    True
"""

from __future__ import annotations

import contextlib
import json
import os
import socket
from collections.abc import Callable
from pathlib import Path
from typing import Any

from runbook.clock import iso, utc_now
from runbook.core.paths import outputs_dir
from runbook.core.redact import Redactor
from runbook.evidence.writer import Evidence

ABANDONED = "abandoned"
EXIT_ABANDONED = 8
RUNNER_PID_ENV = "RUNBOOK_RUNNER_PID"


def _boot_id() -> str | None:
    try:
        return Path("/proc/sys/kernel/random/boot_id").read_text().strip()
    except OSError:
        return None


def _stat(pid: int) -> tuple[str, int] | None:
    """(state, start time in clock ticks since boot) of a process, None if there is none."""
    try:
        text = Path(f"/proc/{pid}/stat").read_text()
    except (OSError, ValueError):
        return None
    # the command name is in parentheses and may hold spaces: split after it
    fields = text.rsplit(")", 1)[1].split()
    return fields[0], int(fields[19])


def _process(pid: int) -> dict[str, Any]:
    stat = _stat(pid)
    return {"pid": pid, "start": stat[1] if stat else None}


def this_process() -> dict[str, Any]:
    """The process that runs this session, and the `runbook run` above it if any."""
    me = _process(os.getpid())
    runner = os.environ.get(RUNNER_PID_ENV)
    parent = _process(int(runner)) if runner and runner.isdigit() else None
    return {
        "host": socket.gethostname(),
        "pid": me["pid"],
        "start": me["start"],
        "boot_id": _boot_id(),
        "runner_pid": parent["pid"] if parent else None,
        "runner_start": parent["start"] if parent else None,
    }


def _pid_alive(pid: int | None, start: int | None) -> bool:
    if not pid:
        return False
    stat = _stat(int(pid))
    if stat is None:
        if Path("/proc/self/stat").exists():
            return False  # Linux: no /proc entry, no process
        try:
            os.kill(int(pid), 0)
        except ProcessLookupError:
            return False
        except PermissionError:
            return True
        return True
    state, started = stat
    if state in ("Z", "X"):
        return False  # a zombie runs nothing: its parent has not reaped it yet
    # same pid, another process: the one we knew is gone
    return start is None or started == int(start)


def alive(process: dict[str, Any] | None) -> bool | None:
    """True/False for a process of this host; None when it cannot be told from here."""
    if not process or not process.get("pid"):
        return None
    if process.get("host") != socket.gethostname():
        return None
    boot = process.get("boot_id")
    if boot and _boot_id() and boot != _boot_id():
        return False  # the machine rebooted since
    return _pid_alive(process.get("pid"), process.get("start")) or _pid_alive(
        process.get("runner_pid"), process.get("runner_start")
    )


def describe(process: dict[str, Any]) -> str:
    """The process in words.

    >>> describe({"pid": 12, "host": "ops1", "runner_pid": 10})
    'pid 12 (runner 10) on ops1'
    """
    runner = f" (runner {process['runner_pid']})" if process.get("runner_pid") else ""
    return f"pid {process.get('pid')}{runner} on {process.get('host')}"


def last_known(run_dir: Path) -> dict[str, Any]:
    """From commands.jsonl: the step left open, the last command, the last sign of life."""
    # step_open too when there is no log: a run killed before its first event (its
    # finishing failed on the missing key, unseen while the constructor swallowed it)
    out: dict[str, Any] = {
        "last_step": None,
        "last_command": None,
        "last_event_at": None,
        "step_open": False,
    }
    path = Path(run_dir) / "commands.jsonl"
    if not path.exists():
        return out
    open_steps: list[str] = []
    last_step = None
    for line in path.read_text(encoding="utf-8", errors="replace").splitlines():
        try:
            event = json.loads(line)
        except ValueError:
            continue  # the line the kill cut short
        out["last_event_at"] = event.get("ts") or out["last_event_at"]
        kind = event.get("kind")
        if kind == "step":
            name = event.get("step")
            if event.get("event") == "start":
                open_steps.append(name)
                last_step = name
                out.setdefault("step_started", {})[name] = event.get("ts")
            else:
                open_steps = [s for s in open_steps if s != name]
        elif kind in ("command", "http"):
            what = event.get("command") or event.get("request")
            out["last_command"] = {
                "kind": kind,
                "command": what,
                "step": event.get("step"),
                "at": event.get("ts"),
                "result": event.get("status") or event.get("exit_code") or event.get("error"),
            }
    out["last_step"] = open_steps[-1] if open_steps else last_step
    out["step_open"] = bool(open_steps)
    return out


def running_records(env: str, target: str | None = None, root: Path | None = None) -> list[Path]:
    """Folders under outputs/<env>/ whose record says "running" (for `target` if given)."""
    base = (root or outputs_dir()) / env
    found = []
    for path in base.glob("*/*/record.json") if base.is_dir() else []:
        try:
            rec = json.loads(path.read_bytes())
        except (OSError, ValueError):
            continue
        if rec.get("outcome") != "running":
            continue
        if target is not None and rec.get("target") not in (None, target):
            continue
        found.append(path.parent)
    return found


def finish(run_dir: Path, *, finisher: str | Path | None = None) -> dict[str, Any] | None:
    """Finish one dead run's record as abandoned (atomic rewrite); None if it is not dead."""
    run_dir = Path(run_dir)
    path = run_dir / "record.json"
    try:
        rec = json.loads(path.read_bytes())
    except (OSError, ValueError):
        return None
    proc = rec.get("process")
    if rec.get("outcome") != "running" or alive(proc) is not False:
        return None
    known = last_known(run_dir)
    me = this_process()
    now = iso(utc_now())
    last = known["last_command"] or {}
    why = (
        f"the process that ran it ({describe(proc)}) is gone and left no verdict "
        "(killed, or its machine stopped)"
    )
    rec["outcome"] = ABANDONED
    rec["exit_code"] = EXIT_ABANDONED
    rec["finished"] = known["last_event_at"] or rec.get("updated") or now
    if known["step_open"] and not rec.get("failed_step"):
        rec["failed_step"] = known["last_step"]
    for step in rec.get("steps") or []:
        if step.get("status") == "running":
            step["status"] = ABANDONED
            step["finished"] = rec["finished"]
    if known["step_open"] and not any(
        s.get("name") == known["last_step"] for s in rec.get("steps") or []
    ):
        rec.setdefault("steps", []).append(
            {
                "name": known["last_step"],
                # the schema wants a time: the step's start event, else the run's start
                "started": (known.get("step_started") or {}).get(known["last_step"])
                or rec.get("started")
                or rec["finished"],
                "finished": rec["finished"],
                "duration_s": None,
                "status": ABANDONED,
                "error": None,
            }
        )
    if not rec.get("error"):
        rec["error"] = {
            "type": "Abandoned",
            "message": f"{why}; last step {known['last_step']!r}, last command "
            f"{last.get('command')!r}",
            "details": {
                "process": describe(proc),
                "last_step": str(known["last_step"]),
                "last_command": str(last.get("command")),
            },
        }
    rec["abandoned"] = {
        "detected_at": now,
        "detected_by": {
            "host": me["host"],
            "pid": me["pid"],
            "run_dir": str(finisher) if finisher else None,
        },
        "why": why,
        "last_step": known["last_step"],
        "last_command": known["last_command"],
        "last_event_at": known["last_event_at"],
    }
    # the records and logs were redacted when written; this redacts once more on the way out
    ev = Evidence(run_dir, Redactor())
    ev.write_record(rec)
    with contextlib.suppress(OSError):
        ev.append({"kind": "abandoned", **rec["abandoned"]})
    return rec


def finish_abandoned(
    env: str,
    target: str | None,
    *,
    finisher: str | Path | None = None,
    root: Path | None = None,
    on_error: Callable[[Path, BaseException], None] | None = None,
) -> list[Path]:
    """Finish every dead run of `env` (and `target`) on this host; returns their folders.

    A run that cannot be finished or sealed is passed to `on_error` (the
    session records it); without one it is skipped, as the runner does.
    """

    def failed(run_dir: Path, exc: BaseException) -> None:
        if on_error is not None:
            on_error(run_dir, exc)

    done = []
    for run_dir in running_records(env, target, root):
        if finisher is not None and Path(run_dir).resolve() == Path(finisher).resolve():
            continue
        try:
            if finish(run_dir, finisher=finisher) is not None:
                done.append(run_dir)
                print(f"runbook: finished a run that died as abandoned: {run_dir}")
        except Exception as exc:  # one dead run that cannot be finished does not stop the others
            failed(run_dir, exc)
    for run_dir in done:
        from runbook.evidence import seal as evidence_tools

        # its own run never sealed it: seal what it left, so `runbook verify` covers it
        try:
            if not (run_dir / evidence_tools.MANIFEST).exists():
                evidence_tools.seal(run_dir, env=env)
        except Exception as exc:  # one run's seal failing does not stop the others
            failed(run_dir, exc)
    return done
