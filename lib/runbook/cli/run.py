"""`runbook run`: execute a scenario notebook headless into its evidence folder.

What it adds over plain papermill (docs/development.md): parameter names are
checked against the notebook's declared parameters (papermill only warns,
and does not escape names); a parameter equal to a loaded secret is
refused; the executed notebook always lands in the run's evidence folder
(never stdout); and record.json always ends with the true outcome and exit
code, whatever happened to the kernel.

Exit codes:

====  =========================================================
0     ok: every step ran, the definition of done is met
1     failed: a step failed (the record names it)
2     bad parameters or profile: refused before anything ran
3     definition of done not met
4     refused: a runbook rule, missing confirmation, or the server's SSH
      host key is not the pinned one (both fingerprints in the record)
5     interrupted (SIGINT or SIGTERM); the notebook is saved
6     timed out
7     the kernel died
8     abandoned: the run's process died without a verdict (SIGKILL, power);
      set by the next run on the same host, never by the run itself
9     tripped: a protected object changed under a changing command (the
      tripwire); the record names the command, the object, what was put back
====  =========================================================
"""

from __future__ import annotations

import contextlib
import json
import logging
import os
import shutil
import signal
import sys
import tempfile
import threading
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from runbook.clock import iso, utc_now
from runbook.core import notify as notifier
from runbook.core.catalog import declared_parameters, notebook_path, required_secrets
from runbook.core.paths import notebooks_dir
from runbook.core.profile import load_profile
from runbook.core.redact import Redactor
from runbook.core.secrets import SecretStore, refuse_secret_parameters, secret_values
from runbook.errors import OUTCOMES, ParameterError, outcome_of
from runbook.evidence.writer import RECORD_SCHEMA, Evidence, new_run_dir

KERNEL_NAME = "dealix-runbook"
# the one table of outcomes and exit codes lives with the errors
EXIT = OUTCOMES


def validate_parameters(
    scenario: str, params: dict[str, Any], *, path: Path | None = None
) -> dict[str, Any]:
    """Refuse unknown names and secret values before anything runs."""
    declared = declared_parameters(path or notebook_path(scenario))
    for name in params:
        if not name.isidentifier():
            raise ParameterError(f"parameter name {name!r} is not a Python identifier", key=name)
        if name not in declared:
            raise ParameterError(
                f"{scenario} has no parameter {name!r}; it declares: {', '.join(declared)}",
                key=name,
            )
    env = str(params.get("env", declared.get("env", {}).get("default", "'sandbox'")).strip("'\""))
    profile = load_profile(env)
    store = SecretStore(Redactor(), profile.secrets.file, source=profile.source)
    # the secrets file and every environment variable the profile or the scenario
    # names as a secret; lists and dicts are looked into
    values = secret_values(profile, store, required_secrets(scenario, profile))
    refuse_secret_parameters(params, values)
    return params


def parse_value(text: str) -> Any:
    """`-p` values as papermill's CLI reads them: int, float, bool, None, else str."""
    low = text.lower()
    if low in ("true", "false"):
        return low == "true"
    if low in ("none", "null"):
        return None
    for cast in (int, float):
        try:
            return cast(text)
        except ValueError:
            pass
    return text


def run(
    scenario: str,
    params: dict[str, Any],
    *,
    timeout: float | None = None,
    quiet: bool = False,
    notify: Sequence[str] = (),
    ping: Sequence[str] = (),
    notify_when: Sequence[str] = (),
) -> tuple[int, Path]:
    """Run one scenario; returns (exit code, run folder).

    `notify` (Apprise URLs), `ping` (healthchecks.io or Cronitor URLs) and
    `notify_when` come on top of the profile's `notify:` section
    (runbook.core.notify); a malformed one is refused before anything runs.
    """
    return run_notebook(
        notebook_path(scenario),
        scenario,
        params,
        timeout=timeout,
        quiet=quiet,
        notify=notify,
        ping=ping,
        notify_when=notify_when,
    )


def run_notebook(
    path: Path,
    scenario: str,
    params: dict[str, Any],
    *,
    timeout: float | None = None,
    quiet: bool = False,
    grace: float = 20.0,
    notify: Sequence[str] = (),
    ping: Sequence[str] = (),
    notify_when: Sequence[str] = (),
) -> tuple[int, Path]:
    """Run the notebook at `path` as `scenario` (tests use it for generated notebooks).

    SIGINT and SIGTERM interrupt the kernel (a KeyboardInterrupt in the running
    cell, which the session records), stop before the next cell, and give up
    on the kernel after `grace` seconds or at a second signal; in every case
    papermill saves the notebook as far as it got and the record says
    "interrupted" (exit 5).
    """
    import papermill
    from papermill.exceptions import PapermillExecutionError
    from traitlets.config import Config

    params = validate_parameters(scenario, params, path=path)
    env = str(params.get("env", "sandbox"))
    # a malformed URL is a parameters error: refused here, before the run has a folder
    plan = notify_plan(env, notify, ping, notify_when)
    run_dir = new_run_dir(env, scenario)
    start_pings: list[dict[str, Any]] = []
    pinger = None
    if plan.pings:
        # the dead-man's switch learns the run began; the run does not wait for it
        pinger = threading.Thread(
            target=lambda: start_pings.extend(
                notifier.ping(plan, "start", body=f"{scenario} on {env}: started, {run_dir}")
            ),
            name="runbook-ping-start",
            daemon=True,
        )
        pinger.start()
    output = run_dir / f"{scenario}.ipynb"
    from runbook.evidence.liveness import RUNNER_PID_ENV, finish_abandoned

    with contextlib.suppress(Exception):
        # runs on this machine that died without a verdict get theirs now
        finish_abandoned(env, load_profile(env).target.host, finisher=run_dir)
    os.environ["RUNBOOK_RUN_DIR"] = str(run_dir)
    # the kernel records it: while this process lives, its run is not abandoned
    os.environ[RUNNER_PID_ENV] = str(os.getpid())
    started = utc_now()
    t0 = time.monotonic()
    outcome, error = "ok", None
    _register_engine()
    from runbook.evidence import seal as evidence_tools

    evidence_tools.prewarm()
    control = _Control(grace=grace)
    global _CONTROL
    _CONTROL = control
    old = control.install()
    # short on purpose: a Unix socket path has at most 107 bytes
    sockets = tempfile.mkdtemp(prefix="rb-kernel-")
    try:
        papermill.execute_notebook(
            str(path),
            str(output),
            parameters=params,
            engine_name=ENGINE_NAME,
            kernel_name=KERNEL_NAME,
            cwd=str(notebooks_dir()),
            progress_bar=False,
            log_output=False,
            request_save_on_cell_execute=True,
            execution_timeout=timeout,
            # Unix sockets in a private folder, instead of TCP ports any local
            # user can reach (and the kernel's warning about them). The path
            # is explicit: jupyter_client's default is "kernel-ipc" in the
            # working directory, shared by every run started there at once.
            config=Config({"KernelManager": {"transport": "ipc", "ip": f"{sockets}/kernel"}}),
        )
    except PapermillExecutionError as exc:
        outcome = outcome_of(exc.ename)
        error = {"type": exc.ename, "message": str(exc.evalue)[:2000]}
    except KeyboardInterrupt as exc:
        outcome, error = "interrupted", {"type": "KeyboardInterrupt", "message": str(exc)}
    except Exception as exc:
        name = type(exc).__name__
        outcome = (
            "kernel_died"
            if "DeadKernel" in name
            else ("timed_out" if "Timeout" in name else "failed")
        )
        error = {"type": name, "message": str(exc)[:2000]}
    finally:
        shutil.rmtree(sockets, ignore_errors=True)
        control.restore(old)
        _CONTROL = None
        os.environ.pop("RUNBOOK_RUN_DIR", None)
        os.environ.pop(RUNNER_PID_ENV, None)
    if control.signal:
        # whatever the cell raised on its way out, the operator stopped the run
        outcome = "interrupted"
        error = {"type": "KeyboardInterrupt", "message": f"run stopped by {control.signal}"}
    if pinger is not None:
        pinger.join()
    code = finalize_record(
        run_dir,
        scenario,
        env,
        params,
        outcome,
        error,
        started,
        time.monotonic() - t0,
        output,
        stopped_by=control.signal,
        notify=plan,
        start_pings=start_pings,
    )
    delivery: dict[str, Any] = {}

    def deliver(digest: str | None) -> None:
        # never raises: a notification that fails is recorded, never the run's outcome
        try:
            delivery.update(notifier.deliver_run(plan, _record(run_dir), run_dir, digest))
        except Exception as exc:
            delivery.update({"error": plan.redactor.redact(f"{type(exc).__name__}: {exc}")})
        (run_dir / notifier.NOTIFICATIONS).write_text(
            json.dumps(plan.redactor.redact_obj(delivery), indent=2) + "\n"
        )

    try:
        evidence_tools.seal(run_dir, env=env, before_manifest=None if plan.empty else deliver)
    except Exception as exc:
        # the run's outcome stands; an unsealed folder is said out loud
        print(
            f"runbook: WARNING: {run_dir} not sealed ({type(exc).__name__}: {exc}); "
            "seal it with `runbook seal`",
            file=sys.stderr,
        )
    if not plan.empty and not delivery:
        # the seal failed before it reached the notification: send it all the same
        deliver(None)
    notes = notifier.summary_lines(delivery)
    if delivery.get("error"):
        notes.append(f"notify:       failed: {delivery['error']}")
    if not quiet:
        from runbook.evidence.story import story

        # the terminal tells the whole story: an operator at 3 a.m. reads only this
        print(story(_record(run_dir), run_dir))
        print(f"notebook:     {output}")
        print(f"html:         {run_dir / (scenario + '.html')}")
        print(f"record:       {run_dir / 'record.json'}")
        print(f"manifest:     {run_dir / 'MANIFEST.sha256'}")
        for note in notes:
            print(note)
    failed = [n for n in notes if "NOT delivered" in n or "failed:" in n]
    if failed:
        # a person must hear that nobody heard: on stderr too, even when quiet
        print("\n".join(failed), file=sys.stderr)
    return code, run_dir


def notify_plan(
    env: str, urls: Sequence[str], pings: Sequence[str], when: Sequence[str]
) -> notifier.Plan:
    """The profile's `notify:` section and the command line's URLs, checked; the plan's
    redactor knows the environment's secrets and every URL's secret parts."""
    from runbook.evidence.seal import secrets_redactor

    profile = load_profile(env)
    section = profile.notify
    anyone = urls or pings or section.urls or section.url_secrets or section.ping
    if not (anyone or section.ping_secret):
        # nobody to tell: skip building the secrets redactor (~40 ms of every run)
        return notifier.Plan(when=notifier.check_when(when or section.when, "--notify-when"))
    redactor = secrets_redactor(env)
    store = SecretStore(redactor, profile.secrets.file, source=profile.source)
    return notifier.build_plan(
        profile,
        urls=urls,
        pings=pings,
        when=when,
        secret=lambda name: store.get(name, required=False),
        redactor=redactor,
    )


class _Control:
    """What the signal handler and the engine share during one run."""

    def __init__(self, grace: float) -> None:
        self.grace = grace
        self.signal: str | None = None
        self.count = 0
        self.cell_index: int | None = None
        self._timer: threading.Timer | None = None

    def install(self) -> dict[int, Any]:
        old: dict[int, Any] = {}
        if threading.current_thread() is threading.main_thread():
            for sig in (signal.SIGINT, signal.SIGTERM):
                old[sig] = signal.signal(sig, self._on_signal)
        return old

    def restore(self, old: dict[int, Any]) -> None:
        if self._timer is not None:
            self._timer.cancel()
        for sig, handler in old.items():
            signal.signal(sig, handler)

    def _on_signal(self, signum: int, _frame: Any) -> None:
        self.count += 1
        if self.count == 1:
            self.signal = signal.Signals(signum).name
            # the kernel runs in a session of its own, so a terminal's Ctrl-C
            # never reaches it: pass it on, the cell gets a KeyboardInterrupt
            for pid in kernel_pids():
                with contextlib.suppress(OSError):
                    os.kill(pid, signal.SIGINT)
            self._timer = threading.Timer(self.grace, self._give_up)
            self._timer.daemon = True
            self._timer.start()
            return
        # a second signal, or the kernel ignored the first for `grace` seconds
        raise KeyboardInterrupt(f"signal {self.signal}; the kernel did not stop in time")

    def _give_up(self) -> None:
        os.kill(os.getpid(), signal.SIGINT)


_CONTROL: _Control | None = None
ENGINE_NAME = "runbook"


def kernel_pids() -> list[int]:
    """Direct child processes of this one that are Jupyter kernels."""
    me = os.getpid()
    found = []
    for entry in os.scandir("/proc"):
        if not entry.name.isdigit():
            continue
        try:
            stat = Path(entry.path, "stat").read_text()
            ppid = int(stat.rsplit(")", 1)[1].split()[1])
            if ppid != me:
                continue
            cmdline = Path(entry.path, "cmdline").read_bytes()
        except (OSError, ValueError, IndexError):
            continue
        if b"ipykernel" in cmdline:
            found.append(int(entry.name))
    return found


def _register_engine() -> None:
    """papermill's nbclient engine, plus: stop between cells once a signal came, and
    mark the cell that was running when the kernel died or timed out (papermill
    itself only marks cells that raised, and leaves `exception: null` otherwise)."""
    from papermill.clientwrap import PapermillNotebookClient
    from papermill.engines import NBClientEngine, papermill_engines

    class RunbookClient(PapermillNotebookClient):
        def papermill_execute_cells(self) -> None:
            super().papermill_execute_cells()
            # Every cell ran and the session said ok and let go of the host
            # lock: the kernel has nothing left to do at exit, so skip the
            # graceful shutdown (about 0.25 s of every run). After a failure
            # the graceful path stays, so the kernel's exit hooks still run.
            run_dir = os.environ.get("RUNBOOK_RUN_DIR")
            record = _record(Path(run_dir)) if run_dir else {}
            if record.get("outcome") == "ok" and not (record.get("lock") or {}).get("held"):
                self.shutdown_kernel = "immediate"

    class RunbookEngine(NBClientEngine):
        @classmethod
        def execute_managed_notebook(cls, nb_man, kernel_name, **kwargs):
            control = _CONTROL
            start = nb_man.cell_start

            def cell_start(cell: Any, cell_index: int | None = None, **kw: Any) -> Any:
                if control is not None:
                    if control.signal:
                        raise KeyboardInterrupt(f"signal {control.signal}: stopped before cell")
                    control.cell_index = cell_index
                return start(cell, cell_index, **kw)

            nb_man.cell_start = cell_start
            try:
                return cls._execute(nb_man, kernel_name, **kwargs)
            except BaseException as exc:
                index = control.cell_index if control is not None else None
                if index is not None and index < len(nb_man.nb.cells):
                    meta = nb_man.nb.cells[index].metadata.setdefault("papermill", {})
                    meta["exception"] = True
                    meta["status"] = "failed"
                nb_man.nb.metadata.setdefault("papermill", {})["exception"] = True
                nb_man.nb.metadata["runbook"] = {
                    "stopped_by": type(exc).__name__,
                    "cell_index": index,
                }
                raise

        @classmethod
        def _execute(
            cls,
            nb_man,
            kernel_name,
            log_output=False,
            stdout_file=None,
            stderr_file=None,
            start_timeout=60,
            execution_timeout=None,
            **kwargs,
        ):
            # NBClientEngine.execute_managed_notebook, with our client class
            kwargs.pop("input_path", None)
            timeout = kwargs.pop("timeout", None)
            kwargs.pop("startup_timeout", None)
            return RunbookClient(
                nb_man,
                **kwargs,
                timeout=execution_timeout or timeout,
                startup_timeout=start_timeout,
                kernel_name=kernel_name,
                log=logging.getLogger("papermill"),
                log_output=log_output,
                stdout_file=stdout_file,
                stderr_file=stderr_file,
            ).execute()

    if ENGINE_NAME not in papermill_engines._engines:
        papermill_engines.register(ENGINE_NAME, RunbookEngine)


def _record(run_dir: Path) -> dict[str, Any]:
    path = run_dir / "record.json"
    return json.loads(path.read_text()) if path.exists() else {}


def finalize_record(
    run_dir: Path,
    scenario: str,
    env: str,
    params: dict[str, Any],
    outcome: str,
    error: dict[str, str] | None,
    started: Any,
    duration: float,
    notebook: Path,
    *,
    stopped_by: str | None = None,
    notify: notifier.Plan | None = None,
    start_pings: list[dict[str, Any]] | None = None,
) -> int:
    """Make record.json tell the true outcome, whatever the kernel managed to write."""
    record = _record(run_dir)
    if not record:
        # the kernel never got as far as opening a session
        record = {
            "schema": RECORD_SCHEMA,
            "scenario": scenario,
            "environment": env,
            "parameters": params,
            "started": iso(started),
            "steps": [],
            "checks": [],
            "changes": [],
            "would_change": [],
        }
    session_outcome = record.get("outcome")
    if outcome == "ok" and session_outcome not in (None, "ok", "running"):
        outcome = session_outcome
    elif outcome == "failed" and session_outcome in EXIT and session_outcome != "running":
        # the session knew better what kind of failure it was
        outcome = session_outcome if session_outcome != "ok" else outcome
    elif outcome == "ok" and session_outcome == "running":
        # the notebook finished without calling session.done(): not a verdict
        outcome = "failed"
        error = {"type": "NoVerdict", "message": "the notebook ended without session.done()"}
    record["outcome"] = outcome
    unfinished = open_step(run_dir) if outcome != "ok" else None
    if unfinished:
        # a dead, stuck or interrupted kernel never got to close its step:
        # commands.jsonl knows it started
        record["failed_step"] = record.get("failed_step") or unfinished["name"]
        steps = record.setdefault("steps", [])
        if not any(s.get("name") == unfinished["name"] and s.get("finished") for s in steps):
            steps[:] = [s for s in steps if s.get("name") != unfinished["name"]]
            steps.append({**unfinished, "finished": iso(utc_now()), "status": outcome})
    if error and not record.get("error"):
        record["error"] = error
    if stopped_by:
        record["stopped_by"] = stopped_by
    record["exit_code"] = EXIT.get(outcome, 1)
    if not record.get("next_command"):
        record["next_command"] = _default_next(record, scenario, params, notebook)
    record["finished"] = iso(utc_now())
    if notify is not None and not notify.empty:
        # the plan and the start ping; what the end sent is in notifications.json
        record["notify"] = {
            **notify.describe(),
            "due": notify.due(outcome) and bool(notify.urls),
            "start_pings": start_pings or [],
        }
    record["runner"] = {
        "notebook": notebook.name,
        "kernel": KERNEL_NAME,
        "duration_s": round(duration, 3),
        "python": sys.version.split()[0],
    }
    # redact once more: nothing unredacted reaches the disk
    Evidence(run_dir, Redactor()).write_record(record)
    return record["exit_code"]


def _default_next(
    record: dict[str, Any], scenario: str, params: dict[str, Any], notebook: Path
) -> str | None:
    """The next command when the notebook named none (story.default_next)."""
    from runbook.evidence.story import default_next

    declared: list[str] = []
    if record.get("outcome") == "parameters" and notebook.exists():
        with contextlib.suppress(Exception):
            declared = list(declared_parameters(notebook))
    return default_next(record, scenario, params, declared)


def open_step(run_dir: Path) -> dict[str, Any] | None:
    """The innermost step commands.jsonl shows started and never ended."""
    path = run_dir / "commands.jsonl"
    if not path.exists():
        return None
    running: list[dict[str, Any]] = []
    for line in path.read_text(encoding="utf-8", errors="replace").splitlines():
        try:
            event = json.loads(line)
        except ValueError:
            continue
        if event.get("kind") != "step":
            continue
        if event.get("event") == "start":
            running.append({"name": event.get("step"), "started": event.get("ts")})
        elif event.get("event") == "end":
            running = [s for s in running if s["name"] != event.get("step")]
    if not running:
        return None
    step = running[-1]
    return {"name": step["name"], "started": step["started"], "duration_s": None, "error": None}
