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

Read-only calls (`probe`) always run. Changing calls (`run`) are skipped in
dry-run and shown as what would run; on any environment but sandbox they
need the operator's confirmation (typed interactively, or the parameter
`confirm="<environment>"` headless), once per run: the change check,
runbook.safety.change, which `allow_change`, `require_confirmation` and
`preview_change` call.

Before the first change the session also checks that every secret the run
needs is set (`require_secrets=["sentry_token", ...]`, profile roles or
variable names, plus what the scenario's notebook declares), and takes the
host lock (one changing run per host; `break_stale_lock=True` breaks the
lock of a run that died, recorded).
"""

from __future__ import annotations

import contextlib
import getpass
import os
import shlex
import socket
import time
from collections.abc import Iterator, Sequence
from functools import cached_property
from pathlib import Path
from typing import Any

from runbook.checks import FAILED, Check, checks_frame
from runbook.core.command import Command, build_command, command_label
from runbook.core.context import HttpCall
from runbook.core.evidence import RECORD_SCHEMA, Evidence, iso, new_run_dir, utc_now
from runbook.core.kernel import display_verdict, install_error_hook, ipython, redact_kernel_output
from runbook.core.output import StreamCapture
from runbook.core.parameters import check_papermill_injection
from runbook.core.paths import runbook_sha
from runbook.core.profile import Profile, load_profile
from runbook.core.record import Change, Step, error_dict
from runbook.core.redact import Redactor
from runbook.core.resume import (
    RESUME_ENV,
    RESUME_FLAGS_ENV,
    Plan,
    StepRules,
    flags_from_env,
    moved_facts,
    parameters_hash,
)
from runbook.core.resume import plan as resume_plan
from runbook.core.resume import refusal as resume_refusal
from runbook.core.secrets import (
    SecretStore,
    parse_env_text,
    refuse_secret_parameters,
    replace_env_line,
    secret_values,
)
from runbook.core.server_secrets import EXAMPLES
from runbook.core.transport import Transport, transport_for
from runbook.errors import (
    ConnectionFailed,
    DefinitionOfDoneNotMet,
    Forbidden,
    HostKeyMismatch,
    HostKeyUnknown,
    Refusal,
    RunbookError,
    Tripped,
    outcome_of,
)
from runbook.ops.alembic import Alembic
from runbook.ops.api import DealixAPI
from runbook.ops.armor import Armor
from runbook.ops.git import Git
from runbook.ops.github import GitHub
from runbook.ops.postgres import Postgres
from runbook.ops.services import Services
from runbook.result import Result, raise_for_ending
from runbook.safety import attempt as _attempt
from runbook.safety.change import ChangeCheck
from runbook.safety.guards import Guards, check_procedure, check_provider_priority, forbid
from runbook.safety.lock import HostLock
from runbook.safety.tripwire import Tripwire

# the session's HTTP clients (cached properties) that close() closes
HTTP_CLIENTS = ("api", "github")


# the largest file the guard reads from the server to see what a command runs (psql -f)
GUARD_READ_LIMIT = 16 * 1024 * 1024


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
        self.profile.require_one_host(scenario)
        self._check_parameters()
        check_procedure(procedure, scenario)
        self.approved_by = approved_by
        self.guards = Guards(
            self.profile,
            approved_by=approved_by,
            procedure=procedure,
            ask=self._guard_ask,
            read=self._guard_read,
        )
        self.break_stale_lock = break_stale_lock
        self.lock: HostLock | None = None
        # armed before the first real change; checks after each (runbook.safety.tripwire)
        self.tripwire: Tripwire | None = None
        # the host lock is taken on the first real change (see allow_change)
        self._taking_lock = False
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
        self._transport: Transport | None = None
        # a host-key refusal: once set, nothing more goes out in this run
        self._refusal: HostKeyMismatch | HostKeyUnknown | None = None
        self._target_verified = False
        self._outcome = "running"
        self._error: dict[str, str] | None = None
        self._failed_step: str | None = None
        self.commands_run = 0
        # a resume of a failed run (runbook.core.resume): set by `begin_resume`
        self.resume: Any = None
        self.resume_relies_on: tuple[str, ...] = ()
        self.target_facts: dict[str, Any] | None = None
        # the scenario method running now (runbook.scenarios._base), named in its steps
        self.method: str | None = None
        from runbook.core.liveness import this_process

        # who runs this session, so that a later run can tell it died (liveness.py)
        self._process = this_process()
        self.server_secrets: Any = None  # server_secrets.Learned, once connected
        self.evidence.append(
            {
                "kind": "session",
                "event": "open",
                "scenario": scenario,
                "environment": self.env,
                "dry_run": self.dry_run,
            }
        )
        self._write_record()
        install_error_hook(self.record_failure)
        redact_kernel_output(self.redactor)
        from runbook.core.liveness import finish_abandoned

        # runs on this machine that died (SIGKILL, power) without a verdict
        with contextlib.suppress(Exception):
            finish_abandoned(self.env, self.profile.target.host, finisher=self.run_dir)

    # ----------------------------------------------------------------- basics
    @property
    def process(self) -> dict[str, Any] | None:
        """This run's pid and start time (runbook.core.liveness), as the lock's owner file holds it."""
        return self._process

    def __repr__(self) -> str:
        mode = " dry-run" if self.dry_run else ""
        return f"<Session {self.scenario} on {self.env}{mode}, evidence in {self.run_dir}>"

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

    @cached_property
    def transport(self) -> Transport:
        """The connection to the target, opened on first use."""
        self._transport = transport_for(self.profile)
        try:
            self._learn_server_secrets()
        except (HostKeyMismatch, HostKeyUnknown) as exc:
            # not cached: the latch makes every later access refuse at once
            self._note_refusal(exc)
            raise
        return self._transport

    def _learn_server_secrets(self, after: str | None = None) -> None:
        """Register the values of the server's env files before any output can show them.

        Runs right after connecting, before the first command (whose output
        could be `cat .env`), and again after each change (a rotation writes
        new keys). Only names reach the evidence (see server_secrets.py).
        """
        from runbook.core.server_secrets import learn

        assert self._transport is not None
        learned = learn(self.redactor, self._transport, self.profile)
        self.server_secrets = learned
        if after is None or learned.new:
            self.evidence.append({"kind": "server-secrets", "after": after, **learned.to_dict()})
        if learned.unmaskable and after is None:
            print(
                f"runbook: WARNING: {', '.join(learned.unmaskable)} in the server's env "
                f"files {'is' if len(learned.unmaskable) == 1 else 'are'} shorter than "
                "6 characters and cannot be masked in the evidence: rotate to a longer value"
            )

    # ------------------------------------------------------------- commands
    def probe(self, command: Command, **kw: Any) -> Result:
        """Run a read-only command: always runs, in dry-run too."""
        return self._execute(command, changing=False, **kw)

    def run(self, command: Command, **kw: Any) -> Result:
        """Run a changing command: skipped in dry-run, needs confirmation off the sandbox."""
        return self._execute(command, changing=True, **kw)

    def _execute(
        self,
        command: Command,
        *,
        changing: bool,
        shell: bool = False,
        cwd: str | None = None,
        env: dict[str, str] | None = None,
        sudo: bool | str = False,
        timeout: float | None = None,
        warn: bool = False,
        accept: Sequence[int] = (0,),
        stdin: bytes | None = None,
        label: str | None = None,
        echo: bool | None = None,
    ) -> Result:
        self._stop_if_refused()
        if changing:
            self._stop_if_tripped()
        text = build_command(command, shell=shell, cwd=cwd, env=env, sudo=sudo)
        shown = self.redactor.redact(text)
        target = (self.profile.target.transport == "local" and f"local:{self.env}") or (
            f"{self.profile.target.user}@{self.profile.target.host}:{self.profile.target.port}"
        )
        self.guard_command(text, changing=changing, stdin=stdin)
        if changing and not self.allow_change(shown, kind="command"):
            return Result(
                command=shown,
                target=target,
                exit_code=None,
                stdout="",
                stderr="",
                started=utc_now(),
                duration=0.0,
                dry_run=True,
            )
        watched = changing and not self._taking_lock
        if watched:
            self._arm_tripwire()
        seq = self.evidence.next_seq()
        name = label or command_label(command)
        out = StreamCapture(self.redactor, log_path=self.evidence.log_path(seq, name, "stdout"))
        err = StreamCapture(self.redactor, log_path=self.evidence.log_path(seq, name, "stderr"))
        started = utc_now()
        t0 = time.monotonic()
        limit = self.profile.target.command_timeout if timeout is None else timeout
        if echo if echo is not None else changing:
            print(f"$ {shown}")

        def log(**how: Any) -> None:
            self.evidence.append(
                {
                    "kind": "command",
                    "seq": seq,
                    "step": self.current_step,
                    "target": target,
                    "command": shown,
                    "changing": changing,
                    **how,
                }
            )

        try:
            outcome = self.transport.execute(
                text, on_stdout=out.feed, on_stderr=err.feed, timeout=limit, stdin=stdin
            )
        except RunbookError as exc:
            log(error=str(exc))
            self._note_refusal(exc)
            if watched and not isinstance(exc, Refusal):
                with contextlib.suppress(RunbookError, OSError):
                    self._check_tripwire(shown)
            raise
        except KeyboardInterrupt:
            # the operator stopped the run mid-command: the transport has stopped
            # the command on the target; say so in the log
            log(
                status="interrupted",
                error="interrupted by the operator while it ran; the command was stopped on "
                "the target",
                duration_s=round(time.monotonic() - t0, 4),
            )
            raise
        duration = time.monotonic() - t0
        if changing:
            # it may have written new secrets (a rotation): know them before the
            # captured output is shown
            self._learn_server_secrets(after=shown)
        stdout, stderr = out.close(), err.close()
        self.commands_run += 1
        result = Result(
            command=shown,
            target=target,
            exit_code=outcome.exit_code,
            signal=outcome.signal,
            stdout=stdout,
            stderr=stderr,
            started=started,
            duration=duration,
            accepted=tuple(accept),
            stdout_bytes=out.bytes,
            stderr_bytes=err.bytes,
            stdout_lines=out.lines,
            stderr_lines=err.lines,
            stdout_log=out.full_log,
            stderr_log=err.full_log,
            timed_out=outcome.timed_out,
            interrupted=outcome.interrupted,
        )
        log(
            exit_code=outcome.exit_code,
            signal=outcome.signal,
            status=result.status,
            # accepted exit codes differ per call: the review (appendix C) needs the verdict
            ok=result.ok,
            duration_s=round(duration, 4),
            bytes_out=out.bytes,
            bytes_err=err.bytes,
            log=[str(p.relative_to(self.run_dir)) for p in (out.full_log, err.full_log) if p],
        )
        if changing:
            self.changes.append(Change("command", shown, self.current_step))
        if watched:
            # a failed command may have changed things too: checked before its error
            self._check_tripwire(shown)
        return raise_for_ending(result, timeout=limit, warn=warn)

    def _guard_ask(self, command: str) -> str | None:
        """A read-only question the guard asks the server (the branch HEAD is on, the
        current migration's parent); recorded like every probe. None when it fails."""
        try:
            r = self.probe(command, shell=True, warn=True, label="guard-ask", echo=False)
        except RunbookError:
            return None
        return r.stdout if r.ok else None

    def _guard_read(self, path: str) -> bytes | None:
        """A file the guard reads to see what a command runs (psql -f, \\i); None when it
        cannot be read or is larger than GUARD_READ_LIMIT (a dump: the guard refuses it
        as opaque rather than pull gigabytes over SSH)."""
        size = self._guard_ask(f"stat -L -c %s -- {shlex.quote(path)}")
        if size is None or not size.strip().isdigit() or int(size) > GUARD_READ_LIMIT:
            return None
        try:
            return self.read_file(path)
        except RunbookError:
            return None

    def guard_command(self, command: str, *, changing: bool, stdin: bytes | None = None) -> None:
        """Apply the runbook's rules to a command before it runs (in dry-run too)."""
        try:
            self.guards.check_command(command, stdin=stdin)
        except Forbidden as exc:
            self.evidence.append(
                {
                    "kind": "refused",
                    "step": self.current_step,
                    "rule": exc.rule,
                    "command": self.redactor.redact(command),
                    "message": str(exc),
                }
            )
            raise Forbidden(exc.rule, self.redactor.redact(exc.action), source=exc.source) from None

    # ------------------------------------------------------------- tripwire
    def _new_tripwire(self) -> Tripwire:
        return Tripwire(
            lambda: self.transport,
            self.profile,
            self.guards,
            run_id=self.run_dir.name,
            log=self.evidence.append,
        )

    def _arm_tripwire(self) -> None:
        """Record every protected object before the first real change (once per run)."""
        if self.tripwire is None:
            self.tripwire = self._new_tripwire()
        if not self.tripwire.armed:
            self.tripwire.arm()
            self._write_record()

    def _check_tripwire(self, shown: str) -> None:
        """Read the protected objects again after a change; a trip ends the run (`Tripped`)."""
        if self.tripwire is None or not self.tripwire.armed:
            return
        try:
            self.tripwire.check(shown)
        except Tripped as exc:
            self._outcome = "tripped"
            self._error = error_dict(exc, self.redactor)
            self._write_record()
            print(f"runbook: {self.redactor.redact(str(exc))}")
            raise

    @contextlib.contextmanager
    def tripwire_allows(self, env_keys: Sequence[str], why: str) -> Iterator[None]:
        """Within: the tripwire lets these `.env` keys change (a step's own change).

        Scenario 6 rotates secrets with the app's script, which rewrites ADMIN_KEY
        and WEBHOOK_SECRET in `.env`; any other line changing still trips::

            with s.tripwire_allows(["ADMIN_KEY", "WEBHOOK_SECRET"], "scenario 6 step 1"):
                s.run(["bash", "scripts/rotate_secrets.sh"], cwd=app)
        """
        if self.tripwire is None:
            self.tripwire = self._new_tripwire()
        self.tripwire.allow_env(tuple(env_keys), self.redactor.redact(why))
        try:
            yield
        finally:
            self.tripwire.allow_env((), "")

    def _stop_if_tripped(self) -> None:
        """After a trip no change goes out: raise the trip again."""
        if self.tripwire is not None and self.tripwire.tripped is not None:
            raise self.tripwire.tripped.with_traceback(None)

    # ----------------------------------------------------- host-key refusal
    def _note_refusal(self, exc: BaseException) -> None:
        if isinstance(exc, (HostKeyMismatch, HostKeyUnknown)) and self._refusal is None:
            self._refusal = exc
            self.evidence.append(
                {
                    "kind": "refused",
                    "step": self.current_step,
                    "rule": "pinned-host-key",
                    "error": type(exc).__name__,
                    "message": str(exc),
                    "details": exc.details(),
                }
            )
            # the record says it now: a notebook that catches it cannot hide it
            self._outcome = "refused"
            self._error = error_dict(exc, self.redactor)
            self._write_record()

    def _stop_if_refused(self) -> None:
        """Raise the host-key refusal again if this run already got one (nothing goes out)."""
        if self._refusal is None and self._transport is not None:
            latched = getattr(self._transport, "refusal", None)
            if latched is not None:
                self._note_refusal(latched)
        if self._refusal is not None:
            raise self._refusal.with_traceback(None)

    def verify_target(self) -> None:
        """Check the target's SSH host key before the first call of any kind.

        HTTP calls go to the same server (or say things about it), so a run that
        would be refused at its first command must not make one HTTP call first.
        Raises `HostKeyMismatch`/`HostKeyUnknown`; any other connection problem
        is left to the call that needs the connection (health checks still
        measure an API whose server does not answer SSH).
        """
        self._stop_if_refused()
        if self._target_verified or self.profile.target.transport == "local":
            return
        try:
            # the first access connects (it reads the server's env files)
            connect = getattr(self.transport, "connection", None)
            if connect is None:
                return
            connect()
        except (HostKeyMismatch, HostKeyUnknown) as exc:
            self._note_refusal(exc)
            raise
        except ConnectionFailed:
            return
        self._target_verified = True

    # ------------------------------------------------------------------ files
    def read_file(self, path: str) -> bytes:
        """Read a file on the target (read-only)."""
        self._stop_if_refused()
        try:
            data = self.transport.read_file(path)
        except RunbookError as exc:
            self._note_refusal(exc)
            raise
        if ".env" in Path(path).name and not path.endswith(EXAMPLES):
            # an env file the session did not know of (or one changed since)
            from runbook.core.server_secrets import Learned, register_env_text

            register_env_text(self.redactor, data.decode("utf-8", "replace"), Learned())
        self.evidence.append(
            {
                "kind": "file",
                "op": "read",
                "path": path,
                "bytes": len(data),
                "step": self.current_step,
            }
        )
        return data

    def write_file(self, path: str, data: bytes, *, mode: int | None = None) -> bool:
        """Write a file on the target atomically (changing). False in dry-run."""
        self._stop_if_refused()
        self._stop_if_tripped()
        self.guards.check_write(path, f"write {path}")
        if not self.allow_change(f"write {len(data)} bytes to {path}", kind="file"):
            return False
        self._arm_tripwire()
        try:
            self.transport.write_file(path, data, mode)
        except RunbookError as exc:
            self._note_refusal(exc)
            raise
        self.changes.append(Change("file", f"write {path}", self.current_step))
        self.evidence.append(
            {
                "kind": "file",
                "op": "write",
                "path": path,
                "bytes": len(data),
                "step": self.current_step,
                "changing": True,
            }
        )
        self._check_tripwire(f"write {path}")
        return True

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
        self.guards.env_edit_allowed = True
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

    # ------------------------------------------------------------------- lock
    def acquire_lock(self) -> HostLock:
        """Take the host lock: one changing run per host at a time.

        The session takes it by itself before its first real change; calling it
        earlier (before the first step that must not start while another run
        works on the host) is allowed and idempotent.
        """
        if self.lock is None:
            self.lock = HostLock(self, break_stale=self.break_stale_lock)
        if self.lock.held:
            return self.lock
        if not self._secrets_verified:
            self.verify_secrets()  # a run that cannot finish does not take the host
        # the lock's own commands are changes too: they must not try to take it
        self._taking_lock = True
        try:
            self.lock.acquire()
        except Forbidden as exc:
            # the flag is the next command only when the holder looks dead or stale
            state = exc.details().get("holder_state")
            if state in ("dead", "stale") and not self.break_stale_lock:
                self.set_next_command(self.rerun_command(add={"break_stale_lock": True}))
            raise
        finally:
            self._taking_lock = False
        return self.lock

    def release_lock(self) -> None:
        if self.lock is not None:
            self.lock.release()

    # ------------------------------------------------------- confirmation
    def allow_change(self, what: str, *, kind: str) -> bool:
        """True if a changing call may go ahead now; False in dry-run (recorded).

        Before the first change: every secret the run needs must be set (in dry-run
        too: the plan would stop there), the operator must have confirmed (off the
        sandbox; the rules are in runbook.safety.change), and the session takes the
        host lock.
        """
        if not self._taking_lock and not self._secrets_verified:
            self.verify_secrets()
        if self._taking_lock and not self.dry_run and not self.change_check.confirmed:
            # a question about the lock's own mkdir tells the operator nothing: without a
            # scenario's summary, say what the lock is for
            question = f"{self.scenario}: take the host lock, then change the server"
            self.change_check.require_confirmation(question)
        if not self.change_check.allow(what, kind=kind, step=self.current_step):
            return False
        if not self._taking_lock and (self.lock is None or not self.lock.held):
            self.acquire_lock()
        return True

    def require_confirmation(self, what: str = "a change") -> None:
        """Fail closed unless the operator confirmed changes on this environment.

        Raises `NotConfirmed` and names the rerun command with `confirm` set.
        """
        self.change_check.require_confirmation(what)

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
        self._write_record()
        if shown:
            print(f"next: {shown}")
        return shown

    def rerun_command(self, *, add: dict[str, Any] | None = None, drop: Sequence[str] = ()) -> str:
        """This run's own `runbook run` command line, with parameters added or dropped.

        Built from what papermill injected (the parameters the run was given),
        or from the flags of this session when the notebook runs by hand.
        """
        from runbook.core.story import FLAGS, rerun_command

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
            self._write_record()
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
            self._write_record()

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
        self._write_record()

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
        self._write_record()

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
        self._stop_if_refused()  # a caught host-key refusal still ends the run refused
        self._stop_if_tripped()  # so does a caught trip
        failed = [c for c in self.checks if c.status == FAILED]
        self._outcome = "dod_not_met" if failed else "ok"
        if failed:
            self._note_target_facts()
        self._discard_copies()
        self.release_lock()
        record = self.record()
        self.evidence.write_record(record)
        table = self.checks_table()
        display_verdict(table, record, self.evidence.record_path)
        if failed:
            raise DefinitionOfDoneNotMet(self.checks)

    def record_failure(self, exc: BaseException) -> None:
        """Note an uncaught error in the record (called from the IPython hook)."""
        outcome = outcome_of(exc)
        tripped = self.tripwire.tripped if self.tripwire is not None else None
        if tripped is not None:
            outcome, exc = "tripped", tripped  # the trip stopped the run, whatever came after
        elif self._refusal is not None and outcome != "dod_not_met":
            outcome = "refused"  # a latched refusal stopped the run, whatever came after
        self._outcome = outcome
        if self._refusal is not None and not isinstance(exc, Refusal):
            exc = self._refusal  # what stopped the run, not what a caller made of it
        self._error = error_dict(exc, self.redactor)
        # not after an interrupt: the operator is stopping the run, no more commands
        # (a resume of it then needs --accept-moved for what it could not record)
        if outcome not in ("refused", "parameters", "interrupted"):
            self._note_target_facts()
        self._write_record()

    def record(self) -> dict[str, Any]:
        """The machine-readable record (what record.json holds)."""
        finished = utc_now()
        return {
            "schema": RECORD_SCHEMA,
            "scenario": self.scenario,
            "environment": self.env,
            "environment_kind": self.profile.kind,
            "target": self.profile.target.host,
            "run_dir": str(self.run_dir),
            "operator": self.operator,
            "operator_host": self.operator_host,
            "process": self._process,
            "runbook_sha": runbook_sha(),
            "parameters": self.parameters,
            "dry_run": self.dry_run,
            "started": iso(self.started),
            "updated": iso(finished),
            "duration_s": round(self.elapsed, 3),
            "outcome": self._outcome,
            "failed_step": self._failed_step,
            "error": self._error,
            "steps": [s.to_dict() for s in self.steps],
            "checks": [c.to_dict() for c in self.checks],
            "metrics": self.metrics,
            "decisions": self.decisions,
            "changes": [c.to_dict() for c in self.changes],
            "would_change": [c.to_dict() for c in self.would_change],
            "preview": self.preview,
            "next_command": self.next_command,
            "commands_run": self.commands_run,
            "approved_by": self.approved_by,
            "lock": self.lock.info() if self.lock is not None else None,
            "tripwire": self.tripwire.summary() if self.tripwire is not None else None,
            # names only: which server-held values the redactor learned, from where
            "server_secrets": (
                self.server_secrets.to_dict() if self.server_secrets is not None else None
            ),
            # for a resume (runbook.core.resume): secret-free, session-only names left out
            "parameters_sha256": parameters_hash(self.parameters),
            "resume": self.resume.to_record() if self.resume is not None else None,
            "target_facts": self.target_facts,
        }

    # ---------------------------------------------------------------- resume
    def begin_resume(self, rules: StepRules) -> Plan | None:
        """Make this run a resume when `RUNBOOK_RESUME_FROM` names the parent run folder.

        Called by `open_scenario` before the scenario's first step. Refuses
        (`Forbidden`, nothing has run) as `runbook.core.resume.plan` says,
        and when what the parent's completed steps rely on moved since it
        stopped. Returns the plan, None when this run is no resume.
        """
        # every run records these facts as it stops, so that it can be resumed
        self.resume_relies_on = rules.relies_on
        parent = os.environ.get(RESUME_ENV)
        if not parent:
            return None
        from runbook.core.catalog import notebook_path

        flags = flags_from_env(os.environ.get(RESUME_FLAGS_ENV))
        plan = resume_plan(
            Path(parent),
            notebook_path(self.scenario),
            rules,
            params=self.parameters,
            allow_interrupted=bool(flags.get("allow_interrupted")),
            overrides=list(flags.get("overrides") or ()),
            accept_moved=list(flags.get("accept_moved") or ()),
        )
        self.resume = plan
        self.evidence.append({"kind": "resume", "event": "plan", **plan.to_record()})
        print(
            f"resuming run {plan.parent_id} (it ended {plan.record.get('outcome')} at "
            f"{plan.failed_step!r}); skipping {', '.join(plan.skip_methods) or 'nothing'}"
        )
        if rules.relies_on:
            now = self.read_target_facts(rules.relies_on)
            before = plan.record.get("target_facts") or {}
            moved = moved_facts(before, now, rules.relies_on, plan.accept_moved)
            self.evidence.append({"kind": "resume", "event": "facts", "parent": before, "now": now})
            if moved:
                raise resume_refusal(
                    "the target moved since run "
                    f"{plan.parent_id} stopped, so its completed steps may no longer hold: "
                    + "; ".join(moved),
                    "find out who changed it; start a new run, or name what you checked "
                    "with --accept-moved NAME (recorded)",
                )
        self._write_record()
        return plan

    def resume_skip(self, method: str, postcondition: Any = None) -> bool:
        """True when a resume skips scenario method `method` (its steps recorded as skipped).

        `postcondition`, for the method that holds the parent's failed step:
        a callable returning (effect already there, what it found); when the
        effect is there, the method is skipped too.
        """
        plan = self.resume
        if plan is None or method not in plan.methods:
            return False
        why = f"done in run {plan.parent_id}"
        if method not in plan.skip_methods:
            if postcondition is None:
                return False
            held, found = postcondition()
            self.decide(
                f"resume: {plan.failed_step}",
                "skip: its effect is already there" if held else "run it again",
                f"postcondition: {found}",
            )
            print(f"postcondition of {plan.failed_step!r}: {found}")
            if not held or any(
                n not in plan.done and n != plan.failed_step for n in plan.methods[method]
            ):
                return False
            why = f"its effect is already there ({found}); it failed in run {plan.parent_id}"
        for name in plan.methods[method]:
            now = utc_now()
            self.steps.append(Step(name, now, now, "skipped", method=method, note=why))
            self.evidence.append({"kind": "step", "event": "skipped", "step": name, "note": why})
            print(f"skipped: {name}: {why}")
        self._write_record()
        return True

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
        if not self.resume_relies_on or self.dry_run or self._refusal is not None:
            return
        with contextlib.suppress(Exception):
            self.target_facts = self.read_target_facts(self.resume_relies_on)

    def _discard_copies(self) -> None:
        """Remove the tripwire's copies of protected files (kept after a trip)."""
        if self.tripwire is not None:
            with contextlib.suppress(Exception):
                self.tripwire.discard()

    def _write_record(self) -> None:
        self.evidence.write_record(self.record())

    def close(self) -> None:
        """Release the lock and close connections (the record stays as written)."""
        self._discard_copies()
        with contextlib.suppress(Exception):
            self.release_lock()
        # the HTTP clients are cached properties: stored under their own names
        for client in HTTP_CLIENTS:
            obj = self.__dict__.get(client)
            if obj is not None:
                with contextlib.suppress(Exception):
                    obj.close()
        if self._transport is not None:
            self._transport.close()

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
    """Open the session of a notebook run. See `Session` for the keywords."""
    return Session(scenario, env, **kw)


def _operator() -> str:
    try:
        return getpass.getuser()
    except Exception:
        return "unknown"
