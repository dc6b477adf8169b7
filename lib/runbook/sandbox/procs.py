"""Processes: supervisord over its unix socket, process trees, probes, waiting.

Probes are small and dependency-light on purpose: an idempotent `up` runs
them all and must come back within about a second, so Redis is asked with
a raw `PING` and HTTP goes through `http.client`.

Example::

    >>> wait_for("nothing", lambda: True, timeout=1)
    >>> alive(os.getpid(), start_time(os.getpid()))
    True
"""

from __future__ import annotations

import http.client
import json
import os
import signal
import socket
import time
import xmlrpc.client
from collections.abc import Callable, Iterable
from pathlib import Path
from typing import Any

from runbook.rehearsal.target import RehearsalError


class SandboxError(RehearsalError):
    """A part of the sandbox failed; `part` names it, `log_tail` shows why.

    Example::

        >>> str(SandboxError("redis", "no PONG", log_tail=["oops"]))
        'redis: no PONG\\n  | oops'
    """


# --------------------------------------------------------------------------
# supervisord


class _UnixHTTPConnection(http.client.HTTPConnection):
    def __init__(self, path: str, timeout: float):
        super().__init__("localhost", timeout=timeout)
        self._path = path

    def connect(self) -> None:
        sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        sock.settimeout(self.timeout)
        sock.connect(self._path)
        self.sock = sock


class _UnixTransport(xmlrpc.client.Transport):
    """XML-RPC over supervisord's unix socket.

    Ours instead of supervisor.xmlrpc's so that every call has a timeout: a
    wedged supervisord must not hang `status` forever.
    """

    def __init__(self, path: str, timeout: float):
        super().__init__()
        self._path = path
        self._timeout = timeout

    def make_connection(self, host: Any) -> http.client.HTTPConnection:
        return _UnixHTTPConnection(self._path, self._timeout)


def supervisor_rpc(sock: Path, timeout: float = 10.0) -> Any:
    """A proxy to supervisord's XML-RPC API (`.supervisor.getState()` …)."""
    return xmlrpc.client.ServerProxy(
        "http://localhost/RPC2", transport=_UnixTransport(str(sock), timeout), allow_none=True
    )


def supervisor_state(sock: Path) -> str | None:
    """supervisord's state name (RUNNING, …), or None when it does not answer."""
    if not sock.exists():
        return None
    try:
        return str(supervisor_rpc(sock, timeout=3).supervisor.getState()["statename"])
    except (OSError, xmlrpc.client.Error, http.client.HTTPException):
        return None


# --------------------------------------------------------------------------
# processes


def start_time(pid: int) -> int | None:
    """The process's start time in clock ticks since boot (guards against PID reuse)."""
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return None
    # The command name may hold spaces and parentheses: split after the last ')'.
    fields = stat.rsplit(")", 1)[1].split()
    return int(fields[19])


def alive(pid: int, started: int | None = None) -> bool:
    """True while `pid` exists, is not a zombie, and (if given) started at `started`."""
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return False
    fields = stat.rsplit(")", 1)[1].split()
    if fields[0] == "Z":
        return False
    return started is None or int(fields[19]) == started


def children_map() -> dict[int, list[int]]:
    """Parent PID → child PIDs, for every process visible in /proc."""
    tree: dict[int, list[int]] = {}
    for entry in os.scandir("/proc"):
        if not entry.name.isdigit():
            continue
        try:
            stat = Path(entry.path, "stat").read_text()
        except OSError:
            continue
        ppid = int(stat.rsplit(")", 1)[1].split()[1])
        tree.setdefault(ppid, []).append(int(entry.name))
    return tree


def descendants(pid: int, tree: dict[int, list[int]] | None = None) -> list[int]:
    """Every process below `pid` (children, grandchildren, …)."""
    tree = children_map() if tree is None else tree
    out: list[int] = []
    stack = list(tree.get(pid, []))
    while stack:
        child = stack.pop()
        out.append(child)
        stack.extend(tree.get(child, []))
    return out


def proc_name(pid: int) -> str:
    try:
        return Path(f"/proc/{pid}/cmdline").read_bytes().replace(b"\0", b" ").decode().strip()
    except OSError:
        return "?"


def reap(pids: dict[int, int | None], grace: float) -> list[int]:
    """Wait up to `grace` s for `pids` ({pid: start time}) to exit, then SIGKILL the rest.

    Returns the PIDs that had to be killed.
    """
    deadline = time.monotonic() + grace
    while time.monotonic() < deadline:
        if not any(alive(p, s) for p, s in pids.items()):
            return []
        time.sleep(0.05)
    killed = []
    for pid, started in pids.items():
        if alive(pid, started):
            try:
                os.kill(pid, signal.SIGKILL)
                killed.append(pid)
            except ProcessLookupError:
                pass
    deadline = time.monotonic() + 5
    while time.monotonic() < deadline and any(alive(p, s) for p, s in pids.items()):
        time.sleep(0.05)
    return killed


# --------------------------------------------------------------------------
# probes


def ssh_banner(port: int, timeout: float = 2.0) -> str:
    """The first line sshd sends (`SSH-2.0-OpenSSH_9.2p1 …`)."""
    with socket.create_connection(("127.0.0.1", port), timeout=timeout) as s:
        data = b""
        while b"\n" not in data and len(data) < 256:
            chunk = s.recv(256)
            if not chunk:
                break
            data += chunk
    return data.decode(errors="replace").strip()


def redis_ping(port: int, timeout: float = 2.0) -> bool:
    with socket.create_connection(("127.0.0.1", port), timeout=timeout) as s:
        s.sendall(b"PING\r\n")
        return s.recv(64).startswith(b"+PONG")


def http_get(
    url: str,
    headers: dict[str, str] | None = None,
    timeout: float = 5.0,
    method: str = "GET",
    body: Any = None,
) -> tuple[int, Any]:
    """(status, parsed JSON or text) for one request to a loopback URL."""
    assert url.startswith("http://"), url
    hostport, _, path = url[len("http://") :].partition("/")
    host, _, port = hostport.partition(":")
    conn = http.client.HTTPConnection(host, int(port or 80), timeout=timeout)
    try:
        data = None
        hdrs = dict(headers or {})
        if body is not None:
            data = json.dumps(body).encode()
            hdrs["Content-Type"] = "application/json"
        conn.request(method, "/" + path, body=data, headers=hdrs)
        resp = conn.getresponse()
        raw = resp.read()
    finally:
        conn.close()
    try:
        return resp.status, json.loads(raw)
    except ValueError:
        return resp.status, raw.decode(errors="replace")


def http_post(
    url: str, body: Any = None, headers: dict[str, str] | None = None, timeout: float = 10.0
) -> tuple[int, Any]:
    return http_get(
        url, headers=headers, timeout=timeout, method="POST", body={} if body is None else body
    )


def wait_for(
    part: str,
    probe: Callable[[], object],
    timeout: float,
    log: Path | Iterable[Path] | None = None,
    interval: float = 0.1,
    what: str = "not ready",
) -> None:
    """Call `probe` until it returns truthy; on timeout raise SandboxError with the log's tail.

    Exceptions from the probe count as "not yet"; the last one is quoted.
    """
    deadline = time.monotonic() + timeout
    last = ""
    while True:
        try:
            if probe():
                return
            last = what
        except Exception as exc:
            last = f"{type(exc).__name__}: {exc}"
        if time.monotonic() >= deadline:
            raise SandboxError(
                part, f"not ready after {timeout:.0f} s ({last})", log_tail=tail(log)
            )
        time.sleep(interval)


def tail(paths: Path | Iterable[Path] | None, lines: int = 15) -> list[str]:
    """The last lines of each existing log (labelled when there are several)."""
    if paths is None:
        return []
    paths = [paths] if isinstance(paths, Path) else list(paths)
    out: list[str] = []
    for path in paths:
        try:
            with path.open("rb") as fh:
                fh.seek(0, os.SEEK_END)
                size = fh.tell()
                fh.seek(max(0, size - 16384))
                text = fh.read().decode(errors="replace")
        except OSError:
            continue
        chunk = text.splitlines()[-lines:]
        if len(paths) > 1 and chunk:
            out.append(f"== {path}")
        out.extend(chunk)
    return out
