"""Transports: SSH (paramiko, one reused connection) and local (subprocess).

Both take a shell command string and stream its output to callbacks; the
session above builds the string (quoting, env, sudo) and turns the outcome
into a `Result`. Both stop a command that outlives its timeout for real:
the local one kills the process group, the SSH one learns the remote PID
from a marker the wrapper prints and kills that process group over a
second channel (closing a channel does not stop a remote command).

What the SSH transport does that paramiko does not by default (see
docs/development.md): TCP_NODELAY on the socket (a reused connection otherwise
waits ~40 ms per command), TCP keepalive, a timeout on every network call,
host keys checked against pinned keys only (no AutoAddPolicy, no system
known_hosts), no agent and no key search unless asked, at most the server's
channel limit in flight, the remote exit signal kept, and a transparent
reconnect when the connection is found dead before a command starts.
"""

from __future__ import annotations

import base64
import contextlib
import hashlib
import logging
import os
import re
import select
import selectors
import shlex
import signal as signal_mod
import socket
import subprocess
import threading
import time
import uuid
from abc import ABC, abstractmethod
from collections import deque
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING

import paramiko
from paramiko.buffered_pipe import BufferedPipe
from paramiko.common import MSG_CHANNEL_REQUEST

from runbook.errors import ConnectionFailed, HostKeyMismatch, HostKeyUnknown, ParameterError

if TYPE_CHECKING:
    from runbook.core.profile import Profile

Sink = Callable[[bytes], None]

# The wrapper prints this on stderr before exec'ing the command, so the
# transport knows which process group to kill on timeout.
_PID_MARKER = re.compile(rb"\x1eRBPID:(\d+)\n")
_MARKER_SCAN_LIMIT = 64 * 1024
PLACEHOLDER_PREFIX = "PLACEHOLDER"


@dataclass
class ExecOutcome:
    exit_code: int | None
    signal: str | None = None
    timed_out: bool = False
    interrupted: str | None = None
    pid: int | None = None


class Transport(ABC):
    """Runs shell command strings on one target."""

    target: str

    @abstractmethod
    def execute(
        self,
        command: str,
        *,
        on_stdout: Sink,
        on_stderr: Sink,
        timeout: float | None,
        stdin: bytes | None = None,
    ) -> ExecOutcome: ...

    @abstractmethod
    def read_file(self, path: str) -> bytes: ...

    @abstractmethod
    def write_file(self, path: str, data: bytes, mode: int | None = None) -> None:
        """Write atomically: a temp file in the same directory, then rename."""

    @abstractmethod
    def exists(self, path: str) -> bool: ...

    def close(self) -> None:  # noqa: B027 - optional for transports without state
        pass


def kill_script(pid: int, grace: float = 3.0) -> str:
    """Shell that stops a process group: TERM, a grace period, then KILL."""
    steps = max(1, int(grace / 0.1))
    return (
        f"p={pid}; kill -TERM -- -$p 2>/dev/null || kill -TERM $p 2>/dev/null; i=0; "
        f"while [ $i -lt {steps} ] && kill -0 -- -$p 2>/dev/null; do sleep 0.1; i=$((i+1)); done; "
        "kill -KILL -- -$p 2>/dev/null; true"
    )


def wrap_for_kill(command: str) -> str:
    """Prefix a command so that it reports its PID (= its process group) first."""
    return "printf '\\036RBPID:%s\\n' \"$$\" >&2; " + command


class _MarkerFilter:
    """Removes the PID marker from the start of stderr, passing everything else on."""

    def __init__(self, sink: Sink):
        self.sink = sink
        self.pid: int | None = None
        self._buf = b""
        self._done = False

    def feed(self, data: bytes) -> None:
        if self._done:
            self.sink(data)
            return
        self._buf += data
        m = _PID_MARKER.search(self._buf)
        if m:
            self.pid = int(m.group(1))
            rest = self._buf[: m.start()] + self._buf[m.end() :]
            self._buf, self._done = b"", True
            if rest:
                self.sink(rest)
        elif len(self._buf) > _MARKER_SCAN_LIMIT:
            self.flush()

    def flush(self) -> None:
        if self._buf:
            self.sink(self._buf)
        self._buf, self._done = b"", True


# --------------------------------------------------------------------------- local


class LocalTransport(Transport):
    """Runs commands on this machine with /bin/sh, in their own process group."""

    def __init__(self, target: str = "local"):
        self.target = target

    def execute(
        self,
        command: str,
        *,
        on_stdout: Sink,
        on_stderr: Sink,
        timeout: float | None,
        stdin: bytes | None = None,
    ) -> ExecOutcome:
        proc = subprocess.Popen(
            ["/bin/sh", "-c", command],
            stdin=subprocess.PIPE if stdin is not None else subprocess.DEVNULL,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            start_new_session=True,
        )
        if stdin is not None:
            # a writer thread: writing all of stdin first could deadlock on full pipes
            def _feed() -> None:
                with contextlib.suppress(BrokenPipeError, OSError):
                    assert proc.stdin is not None
                    proc.stdin.write(stdin)
                    proc.stdin.close()

            threading.Thread(target=_feed, daemon=True).start()
        sel = selectors.DefaultSelector()
        assert proc.stdout is not None and proc.stderr is not None
        sel.register(proc.stdout, selectors.EVENT_READ, on_stdout)
        sel.register(proc.stderr, selectors.EVENT_READ, on_stderr)
        deadline = None if timeout is None else time.monotonic() + timeout
        timed_out = False
        open_streams = 2
        try:
            while open_streams:
                wait = None if deadline is None else max(0.0, deadline - time.monotonic())
                if deadline is not None and wait == 0.0:
                    timed_out = True
                    break
                for key, _ in sel.select(wait):
                    data = os.read(key.fileobj.fileno(), 1 << 20)  # type: ignore[union-attr]
                    if data:
                        key.data(data)
                    else:
                        sel.unregister(key.fileobj)
                        open_streams -= 1
            if not timed_out:
                # a command may close its output and run on (a detached
                # daemon): its timeout still holds after the streams end
                wait = None if deadline is None else max(0.0, deadline - time.monotonic())
                try:
                    proc.wait(wait)
                except subprocess.TimeoutExpired:
                    timed_out = True
        except BaseException:
            # interrupted: the command must not live on unobserved
            _killpg(proc.pid)
            proc.wait()
            raise
        if timed_out:
            _killpg(proc.pid)
        sel.close()
        proc.stdout.close()
        proc.stderr.close()
        code = proc.wait()
        if code < 0:
            return ExecOutcome(None, _signal_name(-code), timed_out=timed_out, pid=proc.pid)
        return ExecOutcome(code, timed_out=timed_out, pid=proc.pid)

    def read_file(self, path: str) -> bytes:
        return Path(path).read_bytes()

    def write_file(self, path: str, data: bytes, mode: int | None = None) -> None:
        target = Path(path)
        tmp = target.with_name(f".{target.name}.tmp-{uuid.uuid4().hex[:8]}")
        if mode is None and target.exists():
            mode = target.stat().st_mode & 0o7777
        fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
        try:
            with os.fdopen(fd, "wb") as fh:
                fh.write(data)
            if mode is not None:
                os.chmod(tmp, mode)
            os.replace(tmp, target)
        except BaseException:
            with contextlib.suppress(OSError):
                tmp.unlink()
            raise

    def exists(self, path: str) -> bool:
        return Path(path).exists()


def _killpg(pid: int, grace: float = 3.0) -> None:
    with contextlib.suppress(ProcessLookupError, PermissionError):
        os.killpg(pid, signal_mod.SIGTERM)
    end = time.monotonic() + grace
    while time.monotonic() < end:
        try:
            os.killpg(pid, 0)
        except (ProcessLookupError, PermissionError):
            return
        time.sleep(0.05)
    with contextlib.suppress(ProcessLookupError, PermissionError):
        os.killpg(pid, signal_mod.SIGKILL)


def _signal_name(num: int) -> str:
    try:
        return signal_mod.Signals(num).name.removeprefix("SIG")
    except ValueError:
        return str(num)


# --------------------------------------------------------------------------- ssh


@dataclass
class SSHTarget:
    """Where and how to log in. `host_keys` are pinned known_hosts-style lines
    (`keytype base64`) or `SHA256:` fingerprints."""

    host: str
    user: str
    port: int = 22
    key_path: str | None = None
    host_keys: list[str] = field(default_factory=list)
    known_hosts: str | None = None
    jump: SSHTarget | None = None
    connect_timeout: float = 10.0
    keepalive: int = 15
    max_sessions: int = 10
    use_agent: bool = False
    source: str = "profile"

    @property
    def display(self) -> str:
        return f"{self.user}@{self.host}:{self.port}"

    @property
    def known_hosts_name(self) -> str:
        return self.host if self.port == 22 else f"[{self.host}]:{self.port}"


def fingerprint(key: paramiko.PKey) -> str:
    """OpenSSH's SHA256 fingerprint of a key, as `ssh-keygen -lf` prints it."""
    digest = hashlib.sha256(key.asbytes()).digest()
    return "SHA256:" + base64.b64encode(digest).decode().rstrip("=")


def pin_commands(target: SSHTarget) -> str:
    """The commands that fetch a server's key to check before pinning it (one line).

    >>> t = SSHTarget(host="203.0.113.5", port=2222, user="root")
    >>> pin_commands(t)
    'ssh-keyscan -p 2222 -t ed25519 203.0.113.5 > /tmp/hostkey && ssh-keygen -lf /tmp/hostkey'
    """
    host = shlex.quote(target.host)
    return (
        f"ssh-keyscan -p {int(target.port)} -t ed25519 {host} > /tmp/hostkey && "
        "ssh-keygen -lf /tmp/hostkey"
    )


def pinned_fingerprints(target: SSHTarget) -> list[str]:
    """Every fingerprint the profile pins for this target."""
    prints: list[str] = []
    lines = list(target.host_keys)
    if target.known_hosts:
        path = Path(os.path.expanduser(target.known_hosts))
        if not path.exists():
            raise ParameterError(
                f"known_hosts file {path} does not exist; pin the host key there or in "
                "target.host_key",
                key="target.known_hosts",
                source=target.source,
            )
        names = {target.known_hosts_name, target.host}
        for raw in path.read_text().splitlines():
            parts = raw.split()
            if len(parts) >= 3 and not raw.startswith("#") and not raw.startswith("@"):
                if names & set(parts[0].split(",")):
                    lines.append(" ".join(parts[1:3]))
    for line in lines:
        line = line.strip()
        if not line or line.startswith(PLACEHOLDER_PREFIX):
            continue
        if line.startswith("SHA256:"):
            prints.append(line)
            continue
        parts = line.split()
        if len(parts) < 2:
            raise ParameterError(
                f"pinned host key {line!r} is neither 'keytype base64' nor a SHA256: fingerprint",
                key="target.host_key",
                source=target.source,
            )
        digest = hashlib.sha256(base64.b64decode(parts[1])).digest()
        prints.append("SHA256:" + base64.b64encode(digest).decode().rstrip("="))
    return prints


def _channel_request(chan: paramiko.Channel, m: paramiko.Message) -> None:
    # paramiko drops "exit-signal"; peek at it so a killed command can say
    # which signal killed it instead of "-1".
    pos = m.packet.tell()
    try:
        if m.get_text() == "exit-signal":
            m.get_boolean()
            chan._rb_signal = m.get_text()  # type: ignore[attr-defined]
    except Exception:  # noqa: S110 - a malformed request is paramiko's to reject
        pass
    m.packet.seek(pos)
    paramiko.Channel._handle_request(chan, m)  # type: ignore[attr-defined]  # private, not in the stubs


class _Transport(paramiko.Transport):
    _channel_handler_table = {  # noqa: RUF012 - mirrors paramiko's class attribute
        **paramiko.Transport._channel_handler_table,  # type: ignore[attr-defined]  # private, not in the stubs
        MSG_CHANNEL_REQUEST: _channel_request,
    }


class _Chunks:
    """The byte store of `_ChunkPipe`: the packets as they came, joined once.

    paramiko's pipe keeps an `array` that every packet is copied into and
    every read copies out of twice (slice, then tobytes); at hundreds of MB/s
    those copies cost more than the decryption.
    """

    __slots__ = ("_parts", "_size")

    def __init__(self) -> None:
        self._parts: deque[bytes] = deque()
        self._size = 0

    def __len__(self) -> int:
        return self._size

    def frombytes(self, data: bytes) -> None:
        if data:
            self._parts.append(bytes(data))
            self._size += len(data)

    def take(self, limit: int | None) -> bytes:
        parts = self._parts
        if len(parts) == 1 and (limit is None or limit >= self._size):
            return parts[0]
        if limit is None or limit >= self._size:
            return b"".join(parts)
        out = bytearray()
        for part in parts:
            out += part[: limit - len(out)]
            if len(out) >= limit:
                break
        return bytes(out)

    def __delitem__(self, key: slice) -> None:
        n = self._size if key.stop is None else min(key.stop, self._size)
        self._size -= n
        parts = self._parts
        while n and parts:
            first = parts[0]
            if len(first) <= n:
                parts.popleft()
                n -= len(first)
            else:
                parts[0] = first[n:]
                n = 0


class _ChunkPipe(BufferedPipe):
    """paramiko's BufferedPipe with the same locking and events, minus the copies."""

    def __init__(self) -> None:
        super().__init__()
        self._buffer = _Chunks()

    def _buffer_frombytes(self, data: bytes) -> None:
        self._buffer.frombytes(data)

    def _buffer_tobytes(self, limit: int | None = None) -> bytes:
        return self._buffer.take(limit)


def _fast_pipes(chan: paramiko.Channel) -> paramiko.Channel:
    # before exec_command: nothing can have arrived on a fresh session yet
    chan.in_buffer = _ChunkPipe()
    chan.in_stderr_buffer = _ChunkPipe()
    return chan


class _QuietRefusals(logging.Filter):
    """paramiko logs a refused channel at ERROR; `_open_channel` waits for a
    free slot instead, so in a notebook the line would only alarm the reader."""

    def filter(self, record: logging.LogRecord) -> bool:
        return "open FAILED" not in record.getMessage()


logging.getLogger("paramiko.transport").addFilter(_QuietRefusals())


def _refused(t: paramiko.Transport, exc: BaseException) -> str | None:
    """Why the server refused to open a channel on a live connection, or None.

    paramiko keeps the refusal in one transport-wide slot, so when several
    threads are refused at once some of them only see "Unable to open
    channel."; a connection that is still active and did not time out was
    refused all the same.
    """
    if isinstance(exc, paramiko.ChannelException):
        return exc.text or "open failed"
    if t.is_active() and isinstance(exc, paramiko.SSHException) and "Timeout" not in str(exc):
        return str(exc) or "open failed"
    return None


class SSHTransport(Transport):
    """One SSH connection per session, reused for every command."""

    # The window bounds what the server may send before we read it: wide enough
    # to stream at full speed (4 MB covers ~40 MB/s at 100 ms RTT), small
    # enough that memory stays flat whatever the output size.
    WINDOW = 4 * 1024 * 1024
    PACKET = 131072
    # Read everything buffered in one call: paramiko's buffer shifts its whole
    # content on a partial read, which makes small reads of a full buffer slow.
    READ = WINDOW

    def __init__(self, target: SSHTarget):
        self.spec = target
        self.target = target.display
        self._t: paramiko.Transport | None = None
        self._jump: SSHTransport | None = None
        self._sftp: paramiko.SFTPClient | None = None
        self._lock = threading.RLock()
        # keep one channel free for the kill request and one for SFTP
        self._slots = threading.BoundedSemaphore(max(1, target.max_sessions - 2))
        self.connects = 0
        # set once the server presented a key that is not the pinned one
        self.refusal: HostKeyMismatch | HostKeyUnknown | None = None

    # -- connection ---------------------------------------------------------
    def _connect(self) -> paramiko.Transport:
        spec = self.spec
        expected = pinned_fingerprints(spec)
        if not expected:
            # refused like a key that is not pinned (README: exit 4), with the
            # commands that fetch the key to check as the next step
            raise HostKeyUnknown(
                f"no host key pinned for {spec.known_hosts_name} in {spec.source}: refusing to "
                "connect. Get the key out of band and check it before pinning it:\n"
                f"  ssh-keyscan -p {spec.port} -t ed25519 {spec.host} > /tmp/hostkey\n"
                "  ssh-keygen -lf /tmp/hostkey   # compare with the fingerprint your provider's "
                "console shows\n"
                "then put the 'ssh-ed25519 AAAA…' part into target.host_key of the profile.",
                target=self.target,
                presented="(not asked: nothing is pinned)",
                fix=f"pin the host key in target.host_key of {spec.source}",
                pin=pin_commands(spec),
            )
        try:
            if spec.jump is not None:
                self._jump = SSHTransport(spec.jump)
                jt = self._jump.connection()
                sock: socket.socket | paramiko.Channel = jt.open_channel(
                    "direct-tcpip",
                    (spec.host, spec.port),
                    ("127.0.0.1", 0),
                    timeout=spec.connect_timeout,
                )
            else:
                raw = socket.create_connection((spec.host, spec.port), timeout=spec.connect_timeout)
                raw.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
                raw.setsockopt(socket.SOL_SOCKET, socket.SO_KEEPALIVE, 1)
                sock = raw
            t = _Transport(
                sock, default_window_size=self.WINDOW, default_max_packet_size=self.PACKET
            )
            # AES-GCM is several times faster than paramiko's default ctr+hmac
            opts = t.get_security_options()
            opts.ciphers = _prefer(
                opts.ciphers, ("aes128-gcm@openssh.com", "aes256-gcm@openssh.com")
            )
            t.banner_timeout = spec.connect_timeout
            t.handshake_timeout = spec.connect_timeout
            t.auth_timeout = spec.connect_timeout
            t.start_client(timeout=spec.connect_timeout)
        except (OSError, paramiko.SSHException, EOFError) as exc:
            raise ConnectionFailed(
                f"cannot connect to {self.target}: {exc}", target=self.target
            ) from None
        presented = fingerprint(t.get_remote_server_key())
        if presented not in expected:
            t.close()
            where = spec.known_hosts or "target.host_key"
            if spec.known_hosts and not _has_entry(spec):
                fix = f"verify {presented} out of band, then add the key to {where}"
                self.refusal = HostKeyUnknown(
                    f"host key of {spec.known_hosts_name} is not pinned (presented {presented}); "
                    f"refusing to connect. Verify it out of band, then add it to {where}.",
                    target=self.target,
                    presented=presented,
                    fix=fix,
                    pin=pin_commands(spec),
                )
                raise self.refusal
            fix = (
                "do not proceed until the new key is verified out of band (provider console); "
                f"then update {where} in {spec.source}"
            )
            self.refusal = HostKeyMismatch(
                f"HOST KEY MISMATCH for {spec.known_hosts_name}: pinned {', '.join(expected)}, "
                f"presented {presented}. Someone may be intercepting the connection, or the "
                f"server was rebuilt. Do not proceed until the new key is verified out of band; "
                f"then update {where} in {spec.source}.",
                target=self.target,
                expected=", ".join(expected),
                presented=presented,
                fix=fix,
                pin=pin_commands(spec),
            )
            raise self.refusal
        try:
            self._authenticate(t)
        except paramiko.SSHException as exc:
            t.close()
            raise ConnectionFailed(
                f"login to {self.target} refused: {exc}", target=self.target
            ) from None
        t.set_keepalive(spec.keepalive)
        self.connects += 1
        return t

    def _authenticate(self, t: paramiko.Transport) -> None:
        spec = self.spec
        if spec.key_path:
            path = os.path.expanduser(spec.key_path)
            try:
                pkey = paramiko.PKey.from_path(path)
            except (OSError, paramiko.SSHException) as exc:
                raise ParameterError(
                    f"cannot read SSH key {path}: {exc}", key="target.key", source=spec.source
                ) from None
            t.auth_publickey(spec.user, pkey)
        elif spec.use_agent:
            for key in paramiko.Agent().get_keys():
                with contextlib.suppress(paramiko.AuthenticationException):
                    t.auth_publickey(spec.user, key)
                    break
        if not t.is_authenticated():
            raise paramiko.AuthenticationException("no key was accepted")

    def connection(self) -> paramiko.Transport:
        """The live connection, (re)connecting when there is none or it died."""
        with self._lock:
            if self.refusal is not None:
                # a server that once showed the wrong key is not asked again in
                # this run: it may be an interceptor, and nothing more goes to it
                raise self.refusal.with_traceback(None)
            if self._t is None or not self._t.is_active():
                self._drop()
                try:
                    self._t = self._connect()
                except (HostKeyMismatch, HostKeyUnknown) as exc:
                    self.refusal = exc  # also when it was the jump host's key
                    raise
            return self._t

    def _drop(self) -> None:
        if self._sftp is not None:
            with contextlib.suppress(Exception):
                self._sftp.close()
            self._sftp = None
        if self._t is not None:
            with contextlib.suppress(Exception):
                self._t.close()
            self._t = None

    def _open_channel(self) -> paramiko.Channel:
        # A channel that cannot be opened means the command never started, so
        # reconnecting and trying once more cannot run anything twice.
        refused_until: float | None = None
        delay = 0.02
        failures = 0
        while True:
            t = self.connection()
            try:
                return t.open_session(timeout=self.spec.connect_timeout)
            except (paramiko.SSHException, EOFError, OSError) as exc:
                refused = _refused(t, exc)
                if refused is None:
                    failures += 1
                    with self._lock:
                        # drop only the connection that failed: another thread
                        # may already have replaced it with a live one
                        if self._t is t:
                            self._drop()
                    if failures >= 2:
                        raise ConnectionFailed(
                            f"cannot open a channel on {self.target}: {exc}", target=self.target
                        ) from None
                    continue
            # The server said no (MaxSessions) on a live connection. sshd frees
            # a session slot a little after the client sees the channel close,
            # so this passes: wait, and keep the connection, because other
            # commands are running on it.
            now = time.monotonic()
            refused_until = refused_until or now + self.spec.connect_timeout
            if now >= refused_until:
                raise ConnectionFailed(
                    f"cannot open a channel on {self.target}: the server keeps refusing "
                    f"({refused}); set target.max_sessions in {self.spec.source} to at most "
                    "the server's MaxSessions",
                    target=self.target,
                )
            time.sleep(delay)
            delay = min(delay * 2, 0.5)

    # -- commands -----------------------------------------------------------
    def execute(
        self,
        command: str,
        *,
        on_stdout: Sink,
        on_stderr: Sink,
        timeout: float | None,
        stdin: bytes | None = None,
    ) -> ExecOutcome:
        with self._slots:
            chan = _fast_pipes(self._open_channel())
            marker = _MarkerFilter(on_stderr)
            try:
                chan.exec_command(wrap_for_kill(command))
                if stdin is not None:
                    threading.Thread(target=_send_stdin, args=(chan, stdin), daemon=True).start()
                else:
                    chan.shutdown_write()
                try:
                    return self._drain(chan, on_stdout, marker, timeout)
                except BaseException:
                    # Ctrl-C, SIGTERM turned into KeyboardInterrupt, a failing
                    # callback: the remote command must not live on unobserved
                    self._kill(marker.pid)
                    raise
            finally:
                marker.flush()
                with contextlib.suppress(Exception):
                    chan.close()

    def _drain(
        self,
        chan: paramiko.Channel,
        on_stdout: Sink,
        marker: _MarkerFilter,
        timeout: float | None,
    ) -> ExecOutcome:
        deadline = None if timeout is None else time.monotonic() + timeout
        fd = chan.fileno()
        t = chan.get_transport()
        while True:
            while chan.recv_ready():
                on_stdout(chan.recv(self.READ))
            while chan.recv_stderr_ready():
                marker.feed(chan.recv_stderr(self.READ))
            # sshd may send the exit status before all output has crossed the
            # window: only the EOF says the output is complete
            eof = chan.eof_received and not chan.recv_ready() and not chan.recv_stderr_ready()
            if eof and chan.exit_status_ready():
                break
            if t is None or not t.is_active():
                return ExecOutcome(
                    None, interrupted="connection lost while the command ran", pid=marker.pid
                )
            now = time.monotonic()
            if deadline is not None and now >= deadline:
                self._kill(marker.pid)
                # give the killed command a moment to report its end
                end = time.monotonic() + 5
                while not chan.exit_status_ready() and time.monotonic() < end:
                    select.select([fd], [], [], 0.1)
                    while chan.recv_ready():
                        on_stdout(chan.recv(self.READ))
                    while chan.recv_stderr_ready():
                        marker.feed(chan.recv_stderr(self.READ))
                return ExecOutcome(
                    None, getattr(chan, "_rb_signal", None), timed_out=True, pid=marker.pid
                )
            wait = 1.0 if deadline is None else min(1.0, deadline - now)
            if eof:
                # no data follows an EOF and its event pipe stays readable from
                # now on, so select would spin: wait for the exit status instead
                chan.status_event.wait(wait)
            else:
                select.select([fd], [], [], wait)
        # all data sent before the exit status is buffered by now: drain it
        while chan.recv_ready():
            on_stdout(chan.recv(self.READ))
        while chan.recv_stderr_ready():
            marker.feed(chan.recv_stderr(self.READ))
        sig = getattr(chan, "_rb_signal", None)
        if sig is not None:
            return ExecOutcome(None, sig, pid=marker.pid)
        status = chan.recv_exit_status()
        if status == -1:
            if t is not None and not t.is_active():
                return ExecOutcome(
                    None, interrupted="connection lost while the command ran", pid=marker.pid
                )
            return ExecOutcome(None, None, pid=marker.pid)
        return ExecOutcome(status, pid=marker.pid)

    def _kill(self, pid: int | None) -> None:
        if pid is None:
            return
        try:
            chan = self._open_channel()
            chan.exec_command(kill_script(pid))
            chan.settimeout(10)
            chan.recv_exit_status()
            chan.close()
        except Exception:  # noqa: S110 - best effort; the caller reports the timeout anyway
            pass

    # -- files ----------------------------------------------------------------
    def _sftp_client(self) -> paramiko.SFTPClient:
        with self._lock:
            t = self.connection()
            sftp = self._sftp
            current = sftp.get_channel() if sftp is not None else None
            if sftp is None or current is None or current.get_transport() is not t:
                client = paramiko.SFTPClient.from_transport(t)
                channel = client.get_channel() if client is not None else None
                if client is None or channel is None:
                    raise ConnectionFailed("the server opened no SFTP channel", target=self.target)
                channel.settimeout(self.spec.connect_timeout * 3)
                self._sftp = sftp = client
            return sftp

    def read_file(self, path: str) -> bytes:
        with self._sftp_client().open(path, "rb") as fh:
            return fh.read()

    def write_file(self, path: str, data: bytes, mode: int | None = None) -> None:
        sftp = self._sftp_client()
        directory, name = os.path.split(path)
        tmp = f"{directory}/.{name}.tmp-{uuid.uuid4().hex[:8]}"
        if mode is None:
            with contextlib.suppress(OSError):
                mode = (sftp.stat(path).st_mode or 0) & 0o7777
        try:
            with sftp.open(tmp, "wb") as fh:
                fh.set_pipelined(True)
                fh.write(data)
            sftp.chmod(tmp, mode if mode is not None else 0o644)
            sftp.posix_rename(tmp, path)
        except BaseException:
            with contextlib.suppress(Exception):
                sftp.remove(tmp)
            raise

    def exists(self, path: str) -> bool:
        try:
            self._sftp_client().stat(path)
            return True
        except FileNotFoundError:
            return False

    def close(self) -> None:
        with self._lock:
            self._drop()
        if self._jump is not None:
            self._jump.close()


def _prefer(available: Sequence[str], first: tuple[str, ...]) -> tuple[str, ...]:
    return tuple(c for c in first if c in available) + tuple(c for c in available if c not in first)


def _send_stdin(chan: paramiko.Channel, data: bytes) -> None:
    with contextlib.suppress(Exception):
        chan.sendall(data)
        chan.shutdown_write()


def _has_entry(spec: SSHTarget) -> bool:
    if not spec.known_hosts:
        return bool(spec.host_keys)
    path = Path(os.path.expanduser(spec.known_hosts))
    names = {spec.known_hosts_name, spec.host}
    for raw in path.read_text().splitlines():
        parts = raw.split()
        if len(parts) >= 3 and names & set(parts[0].split(",")):
            return True
    return bool(spec.host_keys)


def transport_for(profile: Profile) -> Transport:
    """The transport a profile's target needs: local, or SSH with its pinned host keys.

    The session builds its connection with it, and so does anything else that
    must reach the same server under the same pinning (the seal's read of the
    server's secrets).
    """
    t = profile.target
    if t.transport == "local":
        return LocalTransport(target=f"local:{profile.name}")
    if profile.inventory is not None:
        # a fleet names no single server: each host has its own address and pinned key
        raise ParameterError(
            f"{profile.name} is a fleet profile ({', '.join(profile.fleet.hosts)}): a "
            "connection goes to one of its hosts",
            key="env",
            source=profile.source,
            fix="reach a host with transport_for_host(profile, NAME) (the session's gates do)",
        )
    jump = None
    if t.jump:
        user, _, hostport = t.jump.rpartition("@")
        host, _, port = hostport.partition(":")
        jump = SSHTarget(
            host=host,
            user=user or t.user,
            port=int(port or 22),
            key_path=t.key,
            host_keys=list(t.host_key),
            known_hosts=t.known_hosts,
            source=profile.source,
        )
    return SSHTransport(
        SSHTarget(
            host=t.host,
            user=t.user,
            port=t.port,
            key_path=t.key,
            host_keys=list(t.host_key),
            known_hosts=t.known_hosts,
            jump=jump,
            connect_timeout=t.connect_timeout,
            max_sessions=t.max_sessions,
            use_agent=t.use_agent,
            source=profile.source,
        )
    )


def transport_for_host(profile: Profile, name: str) -> Transport:
    """An SSH transport to the fleet's host `name`, pinned to that host's own key
    (`profile.fleet`: the inventory, or the single target as a fleet of one)."""
    fleet = profile.fleet
    if name not in fleet.hosts:
        raise ParameterError(
            f"no host {name!r} in {profile.name} (hosts: {', '.join(fleet.hosts)})",
            key="host",
            source=profile.source,
        )
    if profile.inventory is None:
        return transport_for(profile)
    h, t = fleet.hosts[name], profile.target
    return SSHTransport(
        SSHTarget(
            host=h.address,
            user=h.user,
            port=h.port,
            key_path=h.key,
            host_keys=list(h.host_key),
            known_hosts=h.known_hosts,
            connect_timeout=t.connect_timeout,
            max_sessions=t.max_sessions,
            use_agent=t.use_agent,
            source=profile.source,
        )
    )
