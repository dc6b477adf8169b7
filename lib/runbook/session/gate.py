"""The gate: the one way out to a server, for commands, files and HTTP.

Everything a run sends to its target passes here, and every safety rule is
applied here, once, for every caller (scenarios, operations, the host lock)::

    probe(cmd)             read-only: always runs, recorded
    run(cmd)               changing: the guards, the change check (dry run,
                           confirmation), the host lock before the first
                           change, the tripwire around it; recorded
    read_file / write_file the same rules for files
    verify_target()        the host key, before the first call of any kind
                           (HTTP calls check it here too, with allow_change)
    poll(cmd, kind=...)    the one logged-off probe, for progress pollers and
                           the lock's heartbeat: on a SECOND connection, so a
                           long command on the first is never in its way;
                           the record counts polls per kind, not each poll
    new_connection()       a fresh connection, pinned like the first (scenario
                           6 tests that the operator can still log in)

A host-key refusal latches: once the gate has met one (on any connection),
nothing more goes out in this run (`stop_if_refused`, `latch`).

One gate serves one host; the session keeps them in `gates`, keyed by host
name: one for a single-host profile, one per inventory host for a fleet
(`Gate(run, profile, host=NAME)`: that host's pinned transport from
`transport_for_host`, its own connections, lock and tripwire; connected on
first use). A step over a group is runbook.core.fanout's `FanOut` calling
each host's gate through the session (`s.on("api", fn)`, runbook.session.fleet);
every command event names its `host` (the inventory name) beside its
`target`. The guard's questions go to the host whose command it is judging
(`asking_gate`, per thread). Before a fleet host's first lock the run takes
the environment lock (`Run.take_environment_lock`). A host-key refusal
latches the gate that met it; what it means for the other hosts (stop the
run) is the fan-out's rule, not a gate's.

The lock's own commands (its mkdir, breaking a stale lock) go through
`_execute(..., internal=True)`: the change check and the guards apply, the
lock and the tripwire do not (the lock is what is being taken), with no
re-entry flag.
"""

from __future__ import annotations

import contextlib
import shlex
import threading
import time
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any, Protocol

from runbook.clock import utc_now
from runbook.core.command import Command, build_command, command_label
from runbook.core.profile import Profile
from runbook.core.server_secrets import EXAMPLES
from runbook.core.transport import ExecOutcome, Transport, transport_for, transport_for_host
from runbook.errors import (
    ConnectionFailed,
    Forbidden,
    HostKeyMismatch,
    HostKeyUnknown,
    Refusal,
    RunbookError,
    Tripped,
)
from runbook.evidence.record import Change
from runbook.result import Result, raise_for_ending
from runbook.safety.lock import HostLock
from runbook.safety.tripwire import Tripwire
from runbook.session.capture import StreamCapture

if TYPE_CHECKING:
    from runbook.core.redact import Redactor
    from runbook.evidence.writer import Evidence
    from runbook.safety.change import ChangeCheck
    from runbook.safety.guards import Guards

# the largest file the guard reads from the server to see what a command runs (psql -f)
GUARD_READ_LIMIT = 16 * 1024 * 1024
# a poll answers in seconds or says nothing this time
POLL_TIMEOUT_S = 15
# Polls that ride on the run's own connection, open since its start: the lock's release
# comes after scenario 6's lockdown, which may refuse a NEW connection, and a release
# that could not connect left the lock held for every run after it (CI: 28 tests refused).
ON_FIRST_CONNECTION = frozenset({"lock-release"})

HostKeyRefusal = HostKeyMismatch | HostKeyUnknown

# the gate whose command the guard is judging now, per thread (a fleet's hosts run at
# once): the guard's questions to the server go to that host
_asking = threading.local()


def asking_gate(default: Gate) -> Gate:
    """The gate whose command the guard is judging in this thread, else `default`."""
    gate: Gate | None = getattr(_asking, "gate", None)
    return gate if gate is not None else default


class Run(Protocol):
    """What a gate needs from the run it belongs to (the session implements it)."""

    scenario: str
    env: str
    dry_run: bool
    redactor: Redactor
    evidence: Evidence
    guards: Guards
    change_check: ChangeCheck
    changes: list[Change]
    operator: str
    operator_host: str
    break_stale_lock: bool

    @property
    def process(self) -> dict[str, Any] | None: ...

    @property
    def current_step(self) -> str | None: ...

    @property
    def secrets_verified(self) -> bool: ...

    def verify_secrets(self) -> list[str]: ...

    def stopped(self, outcome: str, exc: BaseException) -> None:
        """The run ended `outcome` because of `exc`: say so in the record now."""
        ...

    def write_record(self) -> None: ...

    def take_environment_lock(self) -> None:
        """Before a host's first change: the fleet's environment lock (no-op on one host)."""
        ...

    def rerun_command(self, *, add: dict[str, Any] | None = None) -> str: ...

    def set_next_command(self, command: str | None) -> str | None: ...


@dataclass(frozen=True)
class Polled:
    """What one poll read: the exit code and stdout (stderr is dropped)."""

    exit_code: int | None
    stdout: str


class Connection:
    """A fresh connection to the gate's host (`Gate.new_connection`), closed on exit."""

    def __init__(self, gate: Gate, transport: Transport):
        self._gate = gate
        self._transport = transport

    def execute(self, command: str, *, timeout: float = 20) -> ExecOutcome:
        """Run `command` on this connection, output dropped (a refusal latches the gate)."""
        with self._gate._latching():
            return self._transport.execute(
                command, on_stdout=lambda _b: None, on_stderr=lambda _b: None, timeout=timeout
            )

    def close(self) -> None:
        self._transport.close()


class Gate:
    """The one way out to one host. See the module docstring."""

    def __init__(self, run: Run, profile: Profile, *, host: str | None = None):
        self.run_ = run
        self.profile = profile
        # a fleet profile's gate serves one host of its inventory, named; a single-host
        # profile's gate serves its target (the fleet of one)
        self.fleet_host = None
        if profile.inventory is not None:
            if host is None:
                raise ValueError(f"{profile.name} is a fleet: name the host this gate serves")
            self.fleet_host = profile.fleet.hosts[host]
        elif host is not None:
            raise ValueError(f"{profile.name} has no inventory: its gate serves its target")
        self.host = host or profile.target.host or f"local:{profile.name}"
        # how commands.jsonl names the host: the inventory's name (the fleet of one's: the
        # target's address, or "localhost")
        self.name = host or next(iter(profile.fleet.hosts))
        self.redactor = run.redactor
        self.evidence = run.evidence
        self.guards = run.guards
        self.lock: HostLock | None = None
        # armed before the first real change; checks after each (runbook.safety.tripwire)
        self.tripwire: Tripwire | None = None
        self.server_secrets: Any = None  # server_secrets.Learned, once connected
        self.commands_run = 0
        self.polls: dict[str, int] = {}
        self._transport: Transport | None = None
        self._second: Transport | None = None
        self._first_lock = threading.RLock()
        self._second_lock = threading.Lock()
        self._refusal: HostKeyRefusal | None = None
        self._target_verified = False

    def __repr__(self) -> str:
        return f"<Gate to {self.host}>"

    @property
    def target(self) -> str:
        """How the evidence names the target of a command."""
        h = self.fleet_host
        if h is not None:
            return f"{h.user}@{h.address}:{h.port}"
        t = self.profile.target
        if t.transport == "local":
            return f"local:{self.profile.name}"
        return f"{t.user}@{t.host}:{t.port}"

    def _connect(self) -> Transport:
        """A new transport to this gate's host, pinned to its own key."""
        if self.fleet_host is not None:
            return transport_for_host(self.profile, self.fleet_host.name)
        return transport_for(self.profile)

    # ------------------------------------------------------------ connection
    @property
    def transport(self) -> Transport:
        """The first connection, opened on first use (it learns the server's secrets first)."""
        self.stop_if_refused()
        # threads may ask at once (parallel probes): one connection, made by the first
        with self._first_lock:
            if self._transport is None:
                transport = self._connect()
                try:
                    with self._latching():
                        self._learn_server_secrets(transport)
                except BaseException:
                    # not kept: the next use connects again (after a refusal, the latch refuses)
                    with contextlib.suppress(Exception):
                        transport.close()
                    raise
                self._transport = transport
            return self._transport

    def _learn_server_secrets(self, transport: Transport, after: str | None = None) -> None:
        """Register the values of the server's env files before any output can show them.

        Runs right after connecting, before the first command (whose output
        could be `cat .env`), and again after each change (a rotation writes
        new keys). Only names reach the evidence (see server_secrets.py).
        """
        from runbook.core.server_secrets import learn

        learned = learn(self.redactor, transport, self.profile)
        self.server_secrets = learned
        if after is None or learned.new:
            self.evidence.append({"kind": "server-secrets", "after": after, **learned.to_dict()})
        if learned.unmaskable and after is None:
            print(
                f"runbook: WARNING: {', '.join(learned.unmaskable)} in the server's env "
                f"files {'is' if len(learned.unmaskable) == 1 else 'are'} shorter than "
                "6 characters and cannot be masked in the evidence: rotate to a longer value"
            )

    def verify_target(self) -> None:
        """Check the target's SSH host key before the first call of any kind.

        HTTP calls go to the same server (or say things about it), so a run that
        would be refused at its first command must not make one HTTP call first.
        Raises `HostKeyMismatch`/`HostKeyUnknown`; any other connection problem
        is left to the call that needs the connection (health checks still
        measure an API whose server does not answer SSH).
        """
        self.stop_if_refused()
        if self._target_verified or self.profile.target.transport == "local":
            return
        try:
            # the first access connects (it reads the server's env files)
            connect = getattr(self.transport, "connection", None)
            if connect is None:
                return
            with self._latching():
                connect()
        except (HostKeyMismatch, HostKeyUnknown):
            raise  # latched above; a host-key refusal is a ConnectionFailed too
        except ConnectionFailed:
            return
        self._target_verified = True

    @contextlib.contextmanager
    def new_connection(self) -> Iterator[Connection]:
        """A NEW connection to this host, pinned like the first; closed on exit.

        For a test that the operator can still log in (scenario 6 after
        locking the firewall down): the first connection is already open and
        proves nothing. A host-key refusal on it latches the gate. Recorded::

            with s.gate.new_connection() as conn:
                ok = conn.execute("true").exit_code == 0
        """
        self.stop_if_refused()
        conn = Connection(self, self._connect())
        self.evidence.append({"kind": "connection", "event": "new", "step": self.run_.current_step})
        try:
            yield conn
        finally:
            conn.close()

    def close(self) -> None:
        """Close both connections."""
        for t in (self._second, self._transport):
            if t is not None:
                with contextlib.suppress(Exception):
                    t.close()
        self._second = self._transport = None

    # ------------------------------------------------------- refusal latch
    @property
    def refused(self) -> HostKeyRefusal | None:
        """The host-key refusal this run met, if any (then nothing more goes out)."""
        return self._refusal

    def latch(self, exc: BaseException) -> None:
        """Remember a host-key refusal (other errors are ignored): recorded, and the run
        ends refused whatever a caller does with the error."""
        if isinstance(exc, (HostKeyMismatch, HostKeyUnknown)) and self._refusal is None:
            self._refusal = exc
            self.evidence.append(
                {
                    "kind": "refused",
                    "step": self.run_.current_step,
                    "rule": "pinned-host-key",
                    "error": type(exc).__name__,
                    "message": str(exc),
                    "details": exc.details(),
                }
            )
            # the record says it now: a notebook that catches it cannot hide it
            self.run_.stopped("refused", exc)

    def stop_if_refused(self) -> None:
        """Raise the host-key refusal again if this run already got one (nothing goes out)."""
        if self._refusal is None:
            for t in (self._transport, self._second):
                latched = getattr(t, "refusal", None)
                if latched is not None:
                    self.latch(latched)
                    break
        if self._refusal is not None:
            raise self._refusal.with_traceback(None)

    @contextlib.contextmanager
    def _latching(self) -> Iterator[None]:
        try:
            yield
        except (HostKeyMismatch, HostKeyUnknown) as exc:
            self.latch(exc)
            raise

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
        internal: bool = False,
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
        self.stop_if_refused()
        if changing and not internal:
            self.stop_if_tripped()
        text = build_command(command, shell=shell, cwd=cwd, env=env, sudo=sudo)
        shown = self.redactor.redact(text)
        self.guard_command(text, changing=changing, stdin=stdin)
        if changing and not self.allow_change(shown, kind="command", internal=internal):
            return Result(
                command=shown,
                target=self.target,
                exit_code=None,
                stdout="",
                stderr="",
                started=utc_now(),
                duration=0.0,
                dry_run=True,
            )
        watched = changing and not internal
        if watched:
            self._arm_tripwire()
        limit = self.profile.target.command_timeout if timeout is None else timeout
        if echo if echo is not None else changing:
            print(f"$ {shown}")
        result = self._send(
            text, shown, changing=changing, stdin=stdin, limit=limit, accept=accept,
            label=label or command_label(command), watched=watched,
        )  # fmt: skip
        if changing:
            self.run_.changes.append(Change("command", shown, self.run_.current_step))
        if watched:
            # a failed command may have changed things too: checked before its error
            self._check_tripwire(shown)
        return raise_for_ending(result, timeout=limit, warn=warn)

    def _send(
        self,
        text: str,
        shown: str,
        *,
        changing: bool,
        stdin: bytes | None,
        limit: float | None,
        accept: Sequence[int],
        label: str,
        watched: bool,
    ) -> Result:
        """Send one command on the first connection; its output captured and logged."""
        seq = self.evidence.next_seq()
        out = StreamCapture(self.redactor, log_path=self.evidence.log_path(seq, label, "stdout"))
        err = StreamCapture(self.redactor, log_path=self.evidence.log_path(seq, label, "stderr"))
        started = utc_now()
        t0 = time.monotonic()
        step = self.run_.current_step

        def log(**how: Any) -> None:
            self.evidence.append(
                {
                    "kind": "command",
                    "seq": seq,
                    "step": step,
                    "host": self.name,
                    "target": self.target,
                    "command": shown,
                    "changing": changing,
                    **how,
                }
            )

        try:
            with self._latching():
                outcome = self.transport.execute(
                    text, on_stdout=out.feed, on_stderr=err.feed, timeout=limit, stdin=stdin
                )
        except RunbookError as exc:
            log(error=str(exc))
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
            self._learn_server_secrets(self.transport, after=shown)
        self.commands_run += 1
        result = _result(shown, self.target, outcome, out, err, started, duration, accept)
        log(
            exit_code=outcome.exit_code,
            signal=outcome.signal,
            status=result.status,
            # accepted exit codes differ per call: the review (appendix C) needs the verdict
            ok=result.ok,
            duration_s=round(duration, 4),
            bytes_out=out.bytes,
            bytes_err=err.bytes,
            log=[
                str(p.relative_to(self.evidence.run_dir)) for p in (out.full_log, err.full_log) if p
            ],
        )
        return result

    def poll(self, command: str, *, kind: str, timeout: float = POLL_TIMEOUT_S) -> Polled:
        """The one logged-off probe: on the second connection, counted per `kind`, not logged.

        For what runs every few seconds beside the run's own commands: a
        progress poller, the lock's heartbeat (and its release at exit). The
        guards still judge the command and a host-key refusal still latches;
        its output is dropped unless the caller reads `stdout`. Connection
        errors reach the caller (a poller says nothing that time).
        """
        self.stop_if_refused()
        self.guards.check_command(command)
        with self._second_lock:
            self.polls[kind] = self.polls.get(kind, 0) + 1
            if kind in ON_FIRST_CONNECTION and self._transport is not None:
                second = self._transport
            else:
                if self._second is None:
                    self._second = self._connect()
                second = self._second
        out: list[bytes] = []
        with self._latching():
            outcome = second.execute(
                command, on_stdout=out.append, on_stderr=lambda _b: None, timeout=timeout
            )
        text = b"".join(out).decode("utf-8", "replace")
        return Polled(outcome.exit_code, self.redactor.redact(text))

    # ---------------------------------------------------------------- guards
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
        outer = getattr(_asking, "gate", None)
        _asking.gate = self
        try:
            self.guards.check_command(command, stdin=stdin)
        except Forbidden as exc:
            self.evidence.append(
                {
                    "kind": "refused",
                    "step": self.run_.current_step,
                    "rule": exc.rule,
                    "command": self.redactor.redact(command),
                    "message": str(exc),
                }
            )
            raise Forbidden(exc.rule, self.redactor.redact(exc.action), source=exc.source) from None
        finally:
            _asking.gate = outer

    # ------------------------------------------------------------- tripwire
    def _raw(
        self, command: str, *, on_stdout: Any, on_stderr: Any, timeout: float | None
    ) -> ExecOutcome:
        """The tripwire's reads and put-backs: on the first connection, logged by the tripwire."""
        with self._latching():
            return self.transport.execute(
                command, on_stdout=on_stdout, on_stderr=on_stderr, timeout=timeout
            )

    def _new_tripwire(self) -> Tripwire:
        return Tripwire(
            self._raw,
            self.profile,
            self.guards,
            run_id=self.evidence.run_dir.name,
            log=self.evidence.append,
        )

    def _arm_tripwire(self) -> None:
        """Record every protected object before the first real change (once per run)."""
        if self.tripwire is None:
            self.tripwire = self._new_tripwire()
        if not self.tripwire.armed:
            self.tripwire.arm()
            self.run_.write_record()

    def _check_tripwire(self, shown: str) -> None:
        """Read the protected objects again after a change; a trip ends the run (`Tripped`)."""
        if self.tripwire is None or not self.tripwire.armed:
            return
        try:
            self.tripwire.check(shown)
        except Tripped as exc:
            self.run_.stopped("tripped", exc)
            print(f"runbook: {self.redactor.redact(str(exc))}")
            raise

    @contextlib.contextmanager
    def tripwire_allows(self, env_keys: Sequence[str], why: str) -> Iterator[None]:
        """Within: the tripwire lets these `.env` keys change (a step's own change)."""
        if self.tripwire is None:
            self.tripwire = self._new_tripwire()
        self.tripwire.allow_env(tuple(env_keys), self.redactor.redact(why))
        try:
            yield
        finally:
            self.tripwire.allow_env((), "")

    @property
    def tripped(self) -> Tripped | None:
        return self.tripwire.tripped if self.tripwire is not None else None

    def stop_if_tripped(self) -> None:
        """After a trip no change goes out: raise the trip again."""
        if self.tripped is not None:
            raise self.tripped.with_traceback(None)

    def discard_copies(self) -> None:
        """Remove the tripwire's copies of protected files (kept after a trip)."""
        if self.tripwire is not None:
            with contextlib.suppress(Exception):
                self.tripwire.discard()

    # ------------------------------------------------------------------ files
    def read_file(self, path: str) -> bytes:
        """Read a file on the target (read-only)."""
        self.stop_if_refused()
        with self._latching():
            data = self.transport.read_file(path)
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
                "step": self.run_.current_step,
            }
        )
        return data

    def write_file(self, path: str, data: bytes, *, mode: int | None = None) -> bool:
        """Write a file on the target atomically (changing). False in dry-run."""
        self.stop_if_refused()
        self.stop_if_tripped()
        self.guards.check_write(path, f"write {path}")
        if not self.allow_change(f"write {len(data)} bytes to {path}", kind="file"):
            return False
        self._arm_tripwire()
        with self._latching():
            self.transport.write_file(path, data, mode)
        step = self.run_.current_step
        self.run_.changes.append(Change("file", f"write {path}", step))
        self.evidence.append(
            {
                "kind": "file",
                "op": "write",
                "path": path,
                "bytes": len(data),
                "step": step,
                "changing": True,
            }
        )
        self._check_tripwire(f"write {path}")
        return True

    # ------------------------------------------------------------------- lock
    def acquire_lock(self) -> HostLock:
        """Take the host lock: one changing run per host at a time (idempotent)."""
        if self.lock is None:
            self.lock = HostLock(_LockChannel(self), break_stale=self.run_.break_stale_lock)
        if self.lock.held:
            return self.lock
        if not self.run_.secrets_verified:
            self.run_.verify_secrets()  # a run that cannot finish does not take the host
        # a fleet: the environment lock first, so two runs never split the fleet between them
        self.run_.take_environment_lock()
        try:
            self.lock.acquire()
        except Forbidden as exc:
            # the flag is the next command only when the holder looks dead or stale
            state = exc.details().get("holder_state")
            if state in ("dead", "stale") and not self.run_.break_stale_lock:
                self.run_.set_next_command(self.run_.rerun_command(add={"break_stale_lock": True}))
            raise
        return self.lock

    def release_lock(self) -> None:
        if self.lock is not None:
            self.lock.release()

    # ------------------------------------------------------- confirmation
    def allow_change(self, what: str, *, kind: str, internal: bool = False) -> bool:
        """True if a changing call may go ahead now; False in dry-run (recorded).

        Before the first change: every secret the run needs must be set (in dry-run
        too: the plan would stop there), the operator must have confirmed (off the
        sandbox; the rules are in runbook.safety.change), and the gate takes the
        host lock. `internal`: the lock's own commands (no lock, no secrets check).
        """
        run = self.run_
        if internal:
            if not run.dry_run and not run.change_check.confirmed:
                # a question about the lock's own mkdir tells the operator nothing: without a
                # scenario's summary, say what the lock is for
                question = f"{run.scenario}: take the host lock, then change the server"
                run.change_check.require_confirmation(question)
        elif not run.secrets_verified:
            run.verify_secrets()
        if not run.change_check.allow(what, kind=kind, step=run.current_step):
            return False
        if not internal and (self.lock is None or not self.lock.held):
            self.acquire_lock()
        return True

    def record(self) -> dict[str, Any]:
        """This host's part of record.json."""
        return {
            "commands_run": self.commands_run,
            "lock": self.lock.info() if self.lock is not None else None,
            "tripwire": self.tripwire.summary() if self.tripwire is not None else None,
            # names only: which server-held values the redactor learned, from where
            "server_secrets": (
                self.server_secrets.to_dict() if self.server_secrets is not None else None
            ),
            # logged-off probes on the second connection, counted per kind
            "polls": dict(self.polls),
        }


def _result(
    shown: str,
    target: str,
    outcome: ExecOutcome,
    out: StreamCapture,
    err: StreamCapture,
    started: Any,
    duration: float,
    accept: Sequence[int],
) -> Result:
    """The `Result` of a command that ran: its captured streams closed, their sizes and logs."""
    stdout, stderr = out.close(), err.close()
    return Result(
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


class _LockChannel:
    """The host lock's view of its gate: its mkdir and break go the internal path."""

    def __init__(self, gate: Gate):
        run = gate.run_
        self.profile = gate.profile
        self.evidence = gate.evidence
        self.scenario, self.env = run.scenario, run.env
        self.operator, self.operator_host = run.operator, run.operator_host
        self.process = run.process
        self.probe: Callable[..., Result] = gate.probe
        self.poll: Callable[..., Polled] = gate.poll
        self._gate = gate

    def run(self, command: Command, **kw: Any) -> Result:
        return self._gate._execute(command, changing=True, internal=True, **kw)
