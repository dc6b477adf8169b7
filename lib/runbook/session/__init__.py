"""The session: one per notebook run, opened in the first cell after the parameters.

It knows the environment (profile), the target, the secrets, dry-run and
confirmation state, the evidence folder and the clock; everything else
hangs off it::

    s = open_session("health_check", env="sandbox")
    with s.step("1. Liveness"):
        r = s.api.get("/health", accept=(200, 503))
        s.check("Liveness", expected="200 OK", actual=r.status, passed=r.status == 200)
    s.probe(["git", "-C", s.profile.app.dir, "rev-parse", "HEAD"]).stdout
    s.done()        # the definition-of-done table; raises if a check failed

The session is a facade: its steps, checks, metrics, decisions and the
verdict are its own; everything that goes to the server goes through its
gate (`s.gate`, runbook.session.gate), which applies the guards, the change
check, the host lock and the tripwire. `probe`, `run`, `read_file`,
`write_file`, `allow_change` and `verify_target` are the gate's.

Read-only calls (`probe`) always run. Changing calls (`run`) are skipped in
dry-run and shown as what would run; on any environment but sandbox they
need the operator's confirmation (typed interactively, or the parameter
`confirm="<environment>"` headless), once per run: the change check,
runbook.safety.change.

Before the first change the gate also checks that every secret the run
needs is set (`require_secrets=["sentry_token", ...]`, profile roles or
variable names, plus what the scenario's notebook declares), and takes the
host lock (one changing run per host; `break_stale_lock=True` breaks the
lock of a run that died, recorded).

Runs on this machine that died without a verdict are finished (and sealed)
by `finish_abandoned_runs()`, a step of its own that `open_session` and
`open_scenario` call and the evidence records, failures included.
"""

from __future__ import annotations

import contextlib
import getpass
import os
import socket
import threading
import time
from collections.abc import Callable, Iterator, Sequence
from functools import cached_property
from pathlib import Path
from typing import TYPE_CHECKING, Any

from runbook.checks import FAILED, Check, checks_frame
from runbook.clock import iso, utc_now
from runbook.core.context import HttpCall
from runbook.core.kernel import ipython
from runbook.core.paths import runbook_sha
from runbook.core.profile import Profile, load_profile
from runbook.core.redact import Redactor
from runbook.core.secrets import (
    SecretStore,
    parse_env_text,
    refuse_secret_parameters,
    replace_env_line,
    secret_values,
)
from runbook.errors import (
    DefinitionOfDoneNotMet,
    Forbidden,
    ParameterError,
    Refusal,
    outcome_of,
)
from runbook.evidence.record import Change, Step, error_dict
from runbook.evidence.resume import Plan, StepRules
from runbook.evidence.writer import Evidence, new_run_dir
from runbook.ops.alembic import Alembic
from runbook.ops.api import DealixAPI
from runbook.ops.armor import Armor
from runbook.ops.git import Git
from runbook.ops.github import GitHub
from runbook.ops.postgres import Postgres
from runbook.ops.services import Services
from runbook.safety import attempt as _attempt
from runbook.safety.change import ChangeCheck
from runbook.safety.guards import Guards, check_procedure, check_provider_priority, forbid
from runbook.safety.lock import HostLock as HostLockClass
from runbook.session import resume as _resume
from runbook.session.assembly import assemble
from runbook.session.fleet import FLEET_SCENARIOS, FleetRun, HostSpec, HostView
from runbook.session.fleet import environment_lock_host as _environment_lock_host
from runbook.session.gate import Gate, Polled, asking_gate
from runbook.session.notebook import (
    display_recap,
    display_verdict,
    install_error_hook,
    redact_kernel_output,
)
from runbook.session.parameters import check_papermill_injection

if TYPE_CHECKING:
    from runbook.core.command import Command
    from runbook.core.fanout import FanOut, Serial
    from runbook.result import Result
    from runbook.safety.lock import HostLock
    from runbook.safety.tripwire import Tripwire

__all__ = ["Session", "open_session"]

# the session's HTTP clients (cached properties) that close() closes
HTTP_CLIENTS = ("api", "github")


class Session:
    """See the module docstring. Use `open_session()` to make one."""

    def __init__(
        self,
        scenario: str,
        env: str = "sandbox",
        *,
        dry_run: bool = False,
        confirm: str | None = None,
        parameters: dict[str, Any] | None = None,
        run_dir: Path | str | None = None,
        profile: Profile | None = None,
        interactive: bool | None = None,
        approved_by: str | None = None,
        procedure: str | None = None,
        break_stale_lock: bool = False,
        require_secrets: Sequence[str] = (),
    ):
        self.started = utc_now()
        # read once, when the run opens (the record is written many times)
        self.runbook_sha = runbook_sha()
        self._t0 = time.monotonic()
        self.scenario = scenario
        # known once, when the run opens: the record and the lock's owner file read them
        self.operator = _operator()
        self.operator_host = socket.gethostname()
        self.redactor = Redactor()
        self.profile = profile or load_profile(env)
        self.env = self.profile.name
        self.dry_run = bool(dry_run)
        self.interactive = interactive
        self.secrets = SecretStore(
            self.redactor, self.profile.secrets.file, source=self.profile.source
        )
        self.parameters = {
            "env": self.env,
            "dry_run": self.dry_run,
            **({"confirm": confirm} if confirm else {}),
            **({"approved_by": approved_by} if approved_by else {}),
            **({"break_stale_lock": True} if break_stale_lock else {}),
            **dict(parameters or {}),
        }
        self.require_secrets = [str(n) for n in require_secrets]
        self._needed_secrets = self._required_secret_names()
        self._injected = check_papermill_injection(ipython())
        # the hosts by group (a single-host profile: its target, a fleet of one)
        self.fleet = self.profile.fleet
        if scenario not in FLEET_SCENARIOS:
            # a scenario not yet written for a fleet would reach one server of many
            self.profile.require_one_host(scenario)
        self._check_parameters()
        check_procedure(procedure, scenario)
        self.approved_by = approved_by
        # the guard's questions to the server go through the gate (made below)
        self.guards = Guards(
            self.profile,
            approved_by=approved_by,
            procedure=procedure,
            # asked on the host whose command the guard is judging (runbook.session.gate)
            ask=lambda command: asking_gate(self.gate)._guard_ask(command),
            read=lambda path: asking_gate(self.gate)._guard_read(path),
        )
        self.break_stale_lock = break_stale_lock
        self._secrets_verified = False
        chosen = run_dir or os.environ.get("RUNBOOK_RUN_DIR")
        path = Path(chosen) if chosen else new_run_dir(self.env, scenario)
        self.evidence = Evidence(path, self.redactor)
        self.run_dir = path
        self.steps: list[Step] = []
        self.checks: list[Check] = []
        self.changes: list[Change] = []
        self.change_check = ChangeCheck(
            self.env,
            sandbox=self.profile.is_sandbox,
            host=self.profile.target.host,
            dry_run=self.dry_run,
            confirm=confirm,
            evidence=self.evidence,
            interactive=interactive,
            suggest=lambda add: self.set_next_command(self.rerun_command(add=add)),
            scenario=scenario,
        )
        self.next_command: str | None = None
        self.metrics: dict[str, dict[str, Any]] = {}
        self.decisions: dict[str, dict[str, Any]] = {}
        self._current: Step | None = None
        self._outcome = "running"
        self._error: dict[str, str] | None = None
        self._failed_step: str | None = None
        # a resume of a failed run (runbook.evidence.resume): set by `begin_resume`
        self.resume: Any = None
        self.resume_relies_on: tuple[str, ...] = ()
        self.target_facts: dict[str, Any] | None = None
        # the scenario method running now (runbook.scenarios._base), named in its steps
        self.method: str | None = None
        from runbook.evidence.liveness import this_process

        # who runs this session, so that a later run can tell it died (liveness.py)
        self._process = this_process()
        # the one way out to the server, one gate per host keyed by host name
        # (runbook.session.gate); a fleet: one per inventory host, connected on first use,
        # and `gate` is the environment lock's host (runbook.session.fleet)
        if self.profile.inventory is None:
            self.gate = Gate(self, self.profile)
            self.gates: dict[str, Gate] = {self.gate.host: self.gate}
        else:
            self.gates = {n: Gate(self, self.profile, host=n) for n in self.fleet.hosts}
            self.gate = self.gates[_environment_lock_host(self.fleet.hosts, self.fleet.groups)]
        # the environment lock (a fleet: on `gate`'s host, before the first change anywhere)
        self.environment_lock: HostLock | None = None
        self._env_lock_guard = threading.RLock()
        self.fleet_run = FleetRun(self)
        # runs that died, finished by finish_abandoned_runs(): folders, and what failed
        self.abandoned_runs: dict[str, Any] | None = None
        self.evidence.append(
            {
                "kind": "session",
                "event": "open",
                "scenario": scenario,
                "environment": self.env,
                "dry_run": self.dry_run,
            }
        )
        self.write_record()
        install_error_hook(self.record_failure)
        redact_kernel_output(self.redactor)

    # ----------------------------------------------------------------- basics
    @property
    def process(self) -> dict[str, Any] | None:
        """This run's pid and start time (runbook.evidence.liveness), as the lock's owner file holds it."""
        return self._process

    def __repr__(self) -> str:
        mode = " dry-run" if self.dry_run else ""
        return f"<Session {self.scenario} on {self.env}{mode}, evidence in {self.run_dir}>"

    @property
    def outcome(self) -> str:
        """The outcome so far ("running" until the run ends), as record.json holds it."""
        return self._outcome

    @property
    def error(self) -> dict[str, str] | None:
        return self._error

    @property
    def failed_step(self) -> str | None:
        return self._failed_step

    @property
    def secrets_verified(self) -> bool:
        """True once `verify_secrets` found every secret this run needs."""
        return self._secrets_verified

    @property
    def would_change(self) -> list[Change]:
        """What a dry run would have changed, call by call (the change check keeps it)."""
        return self.change_check.would_change

    @property
    def preview(self) -> dict[str, list[str]]:
        """Dry run: what would change, by section (see `preview_change`)."""
        return self.change_check.preview

    @property
    def elapsed(self) -> float:
        """Seconds since the session opened."""
        return time.monotonic() - self._t0

    @property
    def current_step(self) -> str | None:
        return self._current.name if self._current else None

    def _check_parameters(self) -> None:
        # every documented source: the secrets file, the environment variables the
        # profile names (and this run requires), and secrets read so far
        values = secret_values(self.profile, self.secrets, self._needed_secrets)
        # what papermill injected counts too, also the names the notebook does
        # not hand to open_session (papermill writes them into the output)
        refuse_secret_parameters(
            {**self._injected, **self.parameters}, values, self.redactor.is_secret
        )

    def _required_secret_names(self) -> list[str]:
        """The variables named by `require_secrets` (profile roles like "sentry_token"
        resolved to this environment's variable names) and by the scenario's notebook."""
        from runbook.core.catalog import required_secrets

        return required_secrets(self.scenario, self.profile, self.require_secrets)

    def verify_secrets(self) -> list[str]:
        """Check that every secret this run needs is set; called before the first change.

        Raises `ParameterError` naming each missing variable and where to put it,
        so a run never stops half-way (deploy reads the Sentry token in step 7,
        after pull, migrate and restart). Returns the names checked.
        """
        names = self._needed_secrets
        self.secrets.require(names)
        if not self._secrets_verified:
            self._secrets_verified = True
            self.evidence.append({"kind": "secrets", "event": "verified", "names": names})
        return names

    def backup_file(self, path: str) -> str:
        """Copy `path` to `path.bak.<UTC time>` on the target (changing); returns the copy's path."""
        stamp = utc_now().strftime("%Y%m%dT%H%M%SZ")
        copy = f"{path}.bak.{stamp}"
        self.run(["cp", "-p", path, copy], label="backup")
        return copy

    def edit_env_var(self, key: str, value: str) -> dict[str, str]:
        """The ONLY allowed in-place .env edit (runbook scenario 4 step 4).

        Backs `.env` up to `.env.bak.<UTC>` first, changes the one line, writes
        atomically keeping the file's mode, and returns the masked diff.
        """
        if key != "LLM_PROVIDER_PRIORITY":
            raise forbid(
                "env-edit-only-llm-priority",
                f"edit {key} in .env",
                "every other .env change goes through a PR and the deploy",
            )
        path = self.profile.app.env_file
        old = self.read_file(path).decode()
        check_provider_priority(value, self.profile, current=parse_env_text(old).get(key))
        new, before = replace_env_line(old, key, value)
        backup = self.backup_file(path)
        self.guards.env_edit_allowed = True  # the one write the guards let through
        try:
            self.write_file(path, new.encode())
        finally:
            self.guards.env_edit_allowed = False
        diff = {
            "key": key,
            "before": self.redactor.redact(before or "(unset)"),
            "after": self.redactor.redact(value),
            "backup": backup,
        }
        self.evidence.append({"kind": "env-edit", "step": self.current_step, **diff})
        return diff

    # ------------------------------------------------------- the way out
    # the gate's, for the scenarios, the operations (OpsContext) and notebooks
    @property
    def is_fleet(self) -> bool:
        """True for a profile with an inventory (many hosts; a step names its hosts)."""
        return self.profile.inventory is not None

    def _one_server(self, what: str) -> Gate:
        """The gate of the one server; a fleet has none: the step names its host."""
        if self.is_fleet:
            raise ParameterError(
                f"{self.env} is a fleet ({', '.join(self.fleet.hosts)}): {what} needs the host "
                "it goes to",
                key="hosts",
                source=self.profile.source,
                fix=f"s.at(HOST).{what}(...), or s.on(GROUP, fn) for a step over a group "
                "(runbook.session.fleet)",
            )
        return self.gate

    def probe(self, command: Command, **kw: Any) -> Result:
        """Run a read-only command: always runs, in dry-run too (`Gate.probe`)."""
        return self._one_server("probe").probe(command, **kw)

    def run(self, command: Command, **kw: Any) -> Result:
        """Run a changing command: skipped in dry-run, needs confirmation off the sandbox."""
        return self._one_server("run").run(command, **kw)

    def poll(self, command: str, *, kind: str) -> Polled:
        """The logged-off probe for pollers and the heartbeat (`Gate.poll`)."""
        return self._one_server("poll").poll(command, kind=kind)

    def read_file(self, path: str) -> bytes:
        """Read a file on the target (read-only)."""
        return self._one_server("read_file").read_file(path)

    def write_file(self, path: str, data: bytes, *, mode: int | None = None) -> bool:
        """Write a file on the target atomically (changing). False in dry-run."""
        return self._one_server("write_file").write_file(path, data, mode=mode)

    def verify_target(self) -> None:
        """Check the target's SSH host key before the first call of any kind.

        A fleet: every load balancer's (HTTP calls reach the service through it)."""
        if not self.is_fleet:
            self.gate.verify_target()
            return
        for name in self.fleet.names("lb") or list(self.fleet.hosts):
            self.fleet_run.gate_of(name).verify_target()

    # ------------------------------------------------------------- the fleet
    def at(self, host: str) -> HostView:
        """One host's way out (`probe`, `run`, `services`, `db`, ...), by inventory name.

        On a single-host profile the one host answers to its own name
        (`s.fleet.names("api")[0]`). See runbook.session.fleet."""
        return self.fleet_run.at(host)

    def on(
        self,
        hosts: HostSpec,
        fn: Any,
        *,
        step: str | None = None,
        serial: Serial = None,
        max_fail_percentage: float = 0,
        throttle: int | None = None,
    ) -> FanOut:
        """Run `fn(host_view)` on each host of a group ("api") or list, in batches.

        `serial` ([1, "50%"]: a canary first), `max_fail_percentage` (default 0:
        a failed host stops the run after its batch) and `throttle` (at most N
        at once) are FanOut's (docs/fleet.md). Returns the FanOut (`.ok`,
        `.hosts[name].outcome`); the recap and record.json keep it. A refusal
        on any host stops every host and is raised::

            fan = s.on("api", lambda h: h.services.restart("api"), serial=1)
        """
        return self.fleet_run.on(
            hosts,
            fn,
            step=step,
            serial=serial,
            max_fail_percentage=max_fail_percentage,
            throttle=throttle,
        )

    def once(
        self, hosts: HostSpec, fn: Any, *, step: str | None = None, delegate_to: str | None = None
    ) -> FanOut:
        """Run `fn(host_view)` once for the whole run: on the group's first host, or
        `delegate_to` (one of its hosts). Ansible's run_once, but never once per batch."""
        return self.fleet_run.once(hosts, fn, step=step, delegate_to=delegate_to)

    def recap_table(self):  # -> pandas.DataFrame
        """The host x step table of this run's steps over groups (and host checks)."""
        return self.fleet_run.recap_frame()

    def take_environment_lock(self) -> None:
        """Before the first change on any host of a fleet: the environment lock on
        `self.gate`'s host (runbook.session.fleet). One host: its host lock is the one."""
        if not self.is_fleet:
            return
        with self._env_lock_guard:
            if self.environment_lock is not None and self.environment_lock.held:
                return
            from runbook.session.gate import _LockChannel

            self.environment_lock = HostLockClass(
                _LockChannel(self.gate),
                break_stale=self.break_stale_lock,
                path=f"{self.profile.app.lock_path}.environment",
            )
            self.environment_lock.acquire()
            self.evidence.append(
                {"kind": "lock", "event": "environment", "host": self.gate.name,
                 "path": self.environment_lock.path}
            )  # fmt: skip
            self.write_record()

    def release_locks(self) -> None:
        """Every host lock, then the environment lock (done(), close())."""
        for gate in self.gates.values():
            with contextlib.suppress(Exception):
                gate.release_lock()
        if self.environment_lock is not None:
            self.environment_lock.release()

    def allow_change(self, what: str, *, kind: str) -> bool:
        """True if a changing call may go ahead now; False in dry-run (recorded)."""
        return self.gate.allow_change(what, kind=kind)

    def enforce(self, check: Callable[..., Any], *args: Any) -> None:
        """Apply one of the guards' rules outside a command (`s.guards.check_downgrade`):
        a refusal is recorded in the evidence as the gate records a refused command,
        then raised. A scenario never catches a refusal itself (tests/test_architecture.py).
        """
        try:
            check(*args)
        except Forbidden as exc:
            self.evidence.append(
                {
                    "kind": "refused",
                    "step": self.current_step,
                    "rule": exc.rule,
                    "message": str(exc),
                }
            )
            raise

    def require_confirmation(self, what: str = "a change") -> None:
        """Fail closed unless the operator confirmed changes on this environment.

        Raises `NotConfirmed` and names the rerun command with `confirm` set.
        """
        self.change_check.require_confirmation(what)

    def acquire_lock(self) -> HostLock:
        """Take the host lock now (the gate takes it by itself before the first change);
        for a step that must not start while another run works on the host. Idempotent.
        A fleet: the environment lock (each host's own is taken before its first change)."""
        if self.is_fleet:
            if not self.secrets_verified:
                self.verify_secrets()  # a run that cannot finish does not take the fleet
            self.take_environment_lock()
            assert self.environment_lock is not None
            return self.environment_lock
        return self.gate.acquire_lock()

    def release_lock(self) -> None:
        if self.is_fleet:
            self.release_locks()
        else:
            self.gate.release_lock()

    @property
    def lock(self) -> HostLock | None:
        """The host lock; a fleet: the environment lock (each host's: `s.gates[name].lock`)."""
        return self.environment_lock if self.is_fleet else self.gate.lock

    @property
    def tripwire(self) -> Tripwire | None:
        return self.gate.tripwire

    @property
    def commands_run(self) -> int:
        return sum(g.commands_run for g in self.gates.values())

    @property
    def server_secrets(self) -> Any:
        return self.gate.server_secrets

    def tripwire_allows(
        self, env_keys: Sequence[str], why: str
    ) -> contextlib.AbstractContextManager[None]:
        """Within: the tripwire lets these `.env` keys change (a step's own change).

        Scenario 6 rotates secrets with the app's script, which rewrites ADMIN_KEY
        and WEBHOOK_SECRET in `.env`; any other line changing still trips::

            with s.tripwire_allows(["ADMIN_KEY", "WEBHOOK_SECRET"], "scenario 6 step 1"):
                s.run(["bash", "scripts/rotate_secrets.sh"], cwd=app)
        """
        return self.gate.tripwire_allows(env_keys, why)

    def stopped(self, outcome: str, exc: BaseException) -> None:
        """The gate's word that the run ended (a host-key refusal, a trip): recorded now."""
        self._outcome = outcome
        self._error = error_dict(exc, self.redactor)
        self.write_record()

    # ------------------------------------------------- next command, preview
    def set_next_command(self, command: str | None) -> str | None:
        """Name the exact command the operator should run next (None: no longer any).

        The one place a notebook or the library says what comes next: written
        to record.json as `next_command`, printed by `runbook run`, and shown
        here as a plain line (`next: ...`), never as a Python repr.

            s.set_next_command("runbook run rollback --env sandbox -p reason 'red'")
        """
        shown = None if command is None else self.redactor.redact(str(command))
        self.next_command = shown
        self.evidence.append({"kind": "next", "step": self.current_step, "command": shown})
        self.write_record()
        if shown:
            print(f"next: {shown}")
        return shown

    def rerun_command(self, *, add: dict[str, Any] | None = None, drop: Sequence[str] = ()) -> str:
        """This run's own `runbook run` command line, with parameters added or dropped.

        Built from what papermill injected (the parameters the run was given),
        or from the flags of this session when the notebook runs by hand.
        """
        from runbook.evidence.story import FLAGS, rerun_command

        base = dict(self._injected) or {
            k: v for k, v in self.parameters.items() if k in FLAGS and v not in (None, False)
        }
        base["env"] = self.env
        return rerun_command(self.scenario, base, add=add, drop=drop)

    def preview_change(self, section: str, items: Sequence[str]) -> list[str]:
        """Dry run: record what a step would change, one section at a time.

        `section` names what changes ("commits", "migrations to apply", ".env keys",
        "services to restart"), `items` one line each (.env values never: key names
        only). Recorded in record.json under `preview`, printed here and by
        `runbook run`. Outside a dry run it records nothing and returns [].
        """
        lines = self.change_check.preview_section(section, items, step=self.current_step)
        if lines:
            self.write_record()
        return lines

    # ---------------------------------------------------- steps and checks
    @contextlib.contextmanager
    def step(self, name: str) -> Iterator[Step]:
        """Time a runbook step; a failure inside marks it failed and is re-raised."""
        step = Step(name, utc_now(), method=self.method)
        self.steps.append(step)
        outer, self._current = self._current, step
        self.evidence.append({"kind": "step", "event": "start", "step": name})
        try:
            yield step
        except BaseException as exc:
            step.status = "failed"
            step.error = self.redactor.redact(f"{type(exc).__name__}: {exc}")
            if self._failed_step is None:
                self._failed_step = name
            raise
        else:
            step.status = "ok"
        finally:
            step.finished = utc_now()
            self._current = outer
            self.evidence.append(
                {
                    "kind": "step",
                    "event": "end",
                    "step": name,
                    "status": step.status,
                    "duration_s": step.duration,
                }
            )
            self.write_record()

    def check(
        self,
        name: str,
        *,
        expected: Any,
        actual: Any,
        passed: bool | None,
        note: str = "",
    ) -> Check:
        """Record a check (passed True/False, or None when not available here)."""
        c = Check(
            name=name,
            expected=self.redactor.redact(str(expected)),
            actual=self.redactor.redact(str(actual)),
            passed=passed,
            note=self.redactor.redact(note),
            step=self.current_step,
        )
        self.checks.append(c)
        self.evidence.append({"kind": "check", **c.to_dict()})
        return c

    def attempt(
        self,
        name: str | None = None,
        *,
        expected: Any = "",
        note: str = "",
        also: tuple[type[Exception], ...] = (),
    ) -> contextlib.AbstractContextManager[_attempt.Attempt]:
        """Run a block whose `RunbookError` becomes the failed check `name` (type, first line).

        Refusals (Forbidden, NotConfirmed, a host-key refusal), an interrupted
        command and KeyboardInterrupt pass through and stop the run. Without a
        name nothing is recorded; the error waits in `a.error` (runbook.safety.attempt)::

            with s.attempt("Restore completed", expected="exit 0") as a:
                r = restore(s, backup, scratch)
            if a.failed:
                return None
        """
        return _attempt.attempt(
            self.check if name is not None else None,
            name,
            expected=expected,
            note=note,
            also=also,
        )

    def judge(
        self,
        name: str,
        *,
        expected: Any,
        result: Any = None,
        actual: Any = _attempt.FROM_RESULT,
        passed: Any = _attempt.FROM_RESULT,
        note: str = "",
        ran: bool | None = None,
    ) -> Check:
        """Record a check on a result; a call a dry run skipped is "not run (dry run)", never passed.

        `passed` defaults to the result's `ok`, `actual` to its `status`; both may
        be functions of the result::

            r = s.services.restart("api")
            s.judge("API restarted", expected="exit 0", result=r)
        """
        c: Check = _attempt.judge(
            self.check,
            name,
            expected=expected,
            result=result,
            actual=actual,
            passed=passed,
            note=note,
            ran=ran,
        )
        return c

    def metric(
        self, name: str, value: float | None, unit: str = "", target: float | None = None
    ) -> None:
        """Record a measured number for `runbook history` (e.g. "restore_minutes", 7.2, "min", 15).

        None records that the number could not be measured (the key is still there).

        Recorded in record.json under "metrics" (and in commands.jsonl as it happens).
        """
        self.metrics[name] = {
            "value": None if value is None else float(value),
            "unit": unit,
            "target": target,
            "step": self.current_step,
        }
        self.evidence.append({"kind": "metric", "name": name, **self.metrics[name]})
        self.write_record()

    def decide(self, name: str, choice: str, reason: str) -> None:
        """Record a decision the notebook made (which runbook branch, failover or not).

        A decision is not a check: it cannot pass or fail, so it is kept apart
        from the definition of done, under "decisions" in record.json.
        """
        self.decisions[name] = {
            "choice": choice,
            "reason": self.redactor.redact(reason),
            "step": self.current_step,
            "at": iso(utc_now()),
        }
        self.evidence.append({"kind": "decision", "name": name, **self.decisions[name]})
        self.write_record()

    def checks_table(self):  # -> pandas.DataFrame
        return checks_frame(self.checks)

    def steps_table(self):  # -> pandas.DataFrame
        import pandas as pd

        rows = [s.to_dict() for s in self.steps]
        return pd.DataFrame(rows, columns=["name", "started", "finished", "duration_s", "status"])

    # ------------------------------------------------------------- verdict
    def done(self) -> None:
        """Render the definition of done, write the record, raise if a check failed.

        Call it in the notebook's last cell, after cleanup cells, so cleanup
        always runs before the verdict. It returns None: the table is displayed
        once (a returned table would be shown again as the cell's result);
        `checks_table()` gives it as a DataFrame.
        """
        for gate in self.gates.values():
            gate.stop_if_refused()  # a caught host-key refusal still ends the run refused
            gate.stop_if_tripped()  # so does a caught trip
        self._check_every_host()
        failed = [c for c in self.checks if c.status == FAILED]
        self._outcome = "dod_not_met" if failed else "ok"
        if failed:
            self._note_target_facts()
        for gate in self.gates.values():
            gate.discard_copies()
        self.release_lock()
        record = self.record()
        self.evidence.write_record(record)
        table = self.checks_table()
        if self.fleet_run.recap.steps or self.fleet_run.host_checks:
            display_recap(self.recap_table())
        display_verdict(table, record, self.evidence.record_path)
        if failed:
            raise DefinitionOfDoneNotMet(self.checks)

    def _check_every_host(self) -> None:
        """A fleet step that left a host failed or not started is a red check of the run:
        the other hosts going on is no success (Ansible's recap, as the verdict)."""
        steps = self.fleet_run.recap.record()
        bad = {h: e for h, e in steps.items() if e["outcome"] != "ok"}
        if not self.fleet_run.recap.steps:
            return
        actual = "; ".join(
            f"{h} {e['outcome'].replace('_', ' ')} ("
            + ", ".join(st for st, o in e["steps"].items() if o != "ok")
            + ")"
            for h, e in bad.items()
        )
        self.check(
            "Every host ran every step",
            expected="ok on every host",
            actual=actual or f"ok on {len(steps)} host(s)",
            passed=not bad,
        )

    def record_failure(self, exc: BaseException) -> None:
        """Note an uncaught error in the record (called from the IPython hook)."""
        outcome = outcome_of(exc)
        tripped = next((g.tripped for g in self.gates.values() if g.tripped is not None), None)
        refused = next((g.refused for g in self.gates.values() if g.refused is not None), None)
        if tripped is not None:
            outcome, exc = "tripped", tripped  # the trip stopped the run, whatever came after
        elif refused is not None and outcome != "dod_not_met":
            outcome = "refused"  # a latched refusal stopped the run, whatever came after
        self._outcome = outcome
        if refused is not None and not isinstance(exc, Refusal):
            exc = refused  # what stopped the run, not what a caller made of it
        self._error = error_dict(exc, self.redactor)
        # not after an interrupt: the operator is stopping the run, no more commands
        # (a resume of it then needs --accept-moved for what it could not record)
        if outcome not in ("refused", "parameters", "interrupted"):
            self._note_target_facts()
        self.write_record()

    def record(self) -> dict[str, Any]:
        """The machine-readable record (what record.json holds)."""
        return assemble(self)

    # ---------------------------------------------------------------- resume
    def begin_resume(self, rules: StepRules) -> Plan | None:
        """Make this run a resume when `RUNBOOK_RESUME_FROM` names the parent run folder.

        Called by `open_scenario` before the scenario's first step. Refuses
        (`Forbidden`, nothing has run) as `runbook.evidence.resume.plan` says,
        and when what the parent's completed steps rely on moved since it
        stopped. Returns the plan, None when this run is no resume.
        """
        return _resume.begin(self, rules)

    def resume_skip(self, method: str, postcondition: Any = None) -> bool:
        """True when a resume skips scenario method `method` (its steps recorded as skipped).

        `postcondition`, for the method that holds the parent's failed step:
        a callable returning (effect already there, what it found); when the
        effect is there, the method is skipped too.
        """
        return _resume.skip(self, method, postcondition)

    def read_target_facts(self, names: Sequence[str]) -> dict[str, Any]:
        """What the named FACTS read now on the target (None: could not be read)."""
        readers = {"app_head": lambda: self.git.head(), "alembic_revision": self.alembic.current}
        out: dict[str, Any] = {}
        for name in names:
            try:
                out[name] = readers[name]()
            except Exception:  # recorded as unknown: a resume refuses an unknown fact
                out[name] = None
        return out

    def _note_target_facts(self) -> None:
        """Record, as the run stops, what its completed steps rely on (for a resume)."""
        if (
            not self.resume_relies_on
            or self.dry_run
            or self.is_fleet
            or self.gate.refused is not None
        ):
            return
        with contextlib.suppress(Exception):
            self.target_facts = self.read_target_facts(self.resume_relies_on)

    # --------------------------------------------------------- runs that died
    def finish_abandoned_runs(self) -> list[Path]:
        """Finish (outcome "abandoned") and seal the runs of this environment that died.

        A run killed without a verdict (SIGKILL, power) stays "running" until
        a later run on this machine finishes it. A step of its own, called by
        `open_session` and `open_scenario` after the session opened: what it
        finished and anything that failed are in the evidence and in
        record.json (`abandoned_runs`), and printed; a failure never stops
        this run. Returns the folders it finished.
        """
        from runbook.evidence.liveness import finish_abandoned

        failures: list[dict[str, str]] = []

        def failed(run_dir: Path, exc: BaseException) -> None:
            why = self.redactor.redact(f"{type(exc).__name__}: {exc}")[:500]
            failures.append({"run_dir": str(run_dir), "error": why})
            print(f"runbook: WARNING: could not finish the dead run {run_dir}: {why}")

        try:
            done = finish_abandoned(
                self.env, self.profile.target.host, finisher=self.run_dir, on_error=failed
            )
        except Exception as exc:  # reading the outputs folder itself failed: said, not hidden
            failed(Path(os.environ.get("RUNBOOK_OUTPUTS") or "outputs"), exc)
            done = []
        self.abandoned_runs = {"finished": [str(d) for d in done], "failed": failures}
        self.evidence.append({"kind": "abandoned-runs", **self.abandoned_runs})
        self.write_record()
        return done

    def write_record(self) -> None:
        self.evidence.write_record(self.record())

    _write_record = write_record

    def close(self) -> None:
        """Release the lock and close connections (the record stays as written)."""
        for gate in self.gates.values():
            gate.discard_copies()
        with contextlib.suppress(Exception):
            self.release_locks()
        # the HTTP clients are cached properties: stored under their own names
        for client in HTTP_CLIENTS:
            obj = self.__dict__.get(client)
            if obj is not None:
                with contextlib.suppress(Exception):
                    obj.close()
        for gate in self.gates.values():
            gate.close()

    # ------------------------------------------------------ log helpers
    def log_http(self, call: HttpCall) -> None:
        """Record one HTTP call (already redacted); a changing one that got an answer is a change."""
        self.evidence.append(
            {
                "kind": "http",
                "service": call.service,
                "step": self.current_step,
                "request": call.request,
                "status": call.status,
                "duration_s": round(call.duration, 4),
                "bytes": call.size,
                "changing": call.changing,
                "error": call.error,
            }
        )
        if call.changing and call.status is not None:
            self.changes.append(Change("http", call.request, self.current_step))

    # ------------------------------------------------------- operations
    # built on first use from the session (their OpsContext) and kept for the run
    api = cached_property(DealixAPI)
    services = cached_property(Services)
    db = cached_property(Postgres)
    git = cached_property(Git)
    alembic = cached_property(Alembic)
    github = cached_property(GitHub)
    armor = cached_property(Armor)


def open_session(scenario: str, env: str = "sandbox", **kw: Any) -> Session:
    """Open the session of a notebook run. See `Session` for the keywords.

    Then finishes the runs on this machine that died (`finish_abandoned_runs`).
    """
    s = Session(scenario, env, **kw)
    s.finish_abandoned_runs()
    return s


def _operator() -> str:
    try:
        return getpass.getuser()
    except Exception:
        return "unknown"
