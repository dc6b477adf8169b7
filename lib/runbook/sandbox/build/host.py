"""The machine the sandbox is built on: who we are, a clean environment, local commands.

`run_command` is the one way the sandbox and the twin run a local command
for a build step: its output goes to a log, and a failure (or a timeout)
raises the caller's error type with the output's last lines. `run` is the
sandbox's use of it, `git` the one local git wrapper (the app repository's
builder and the twin's deploy faults).

Example::

    >>> run(["true"], "example").returncode
    0
    >>> try:
    ...     run(["sh", "-c", "echo why; exit 3"], "example")
    ... except SandboxError as err:
    ...     print(err)
    example: `sh -c 'echo why; exit 3'…` exited 3
      | why
"""

from __future__ import annotations

import contextlib
import os
import pwd
import shlex
import shutil
import signal
import socket
import subprocess
import sys
from collections.abc import Callable
from pathlib import Path
from typing import IO

from runbook.sandbox.layout import project_root
from runbook.sandbox.procs import SandboxError

# A minimal environment for everything the sandbox starts: the operator's
# shell may export DATABASE_URL, PYTHONPATH or VIRTUAL_ENV for another
# project, and supervisord hands its environment to every program.
CLEAN_PATH = "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin"

# How a layer reports a failed step: SandboxError(part, message, log_tail) or
# TwinError(step, message, log_tail).
StepError = Callable[[str, str, list[str]], Exception]


def is_root() -> bool:
    return os.geteuid() == 0


def current_user() -> str:
    return pwd.getpwuid(os.geteuid()).pw_name


def clean_env(**extra: str) -> dict[str, str]:
    """The environment for programs the sandbox runs (see CLEAN_PATH)."""
    user = current_user()
    env = {
        "PATH": CLEAN_PATH,
        "LANG": "C.UTF-8",
        "LC_ALL": "C.UTF-8",
        "HOME": pwd.getpwuid(os.geteuid()).pw_dir,
        "USER": user,
        "LOGNAME": user,
        "TZ": "UTC",
    }
    env.update(extra)
    return env


def project_python() -> Path:
    """The project venv's interpreter (the one running us, if it is a venv)."""
    if sys.prefix != sys.base_prefix:
        return Path(sys.prefix) / "bin" / "python"
    candidate = project_root() / ".venv" / "bin" / "python"
    return candidate if candidate.exists() else Path(sys.executable)


def run_command(
    argv: list[str],
    part: str,
    *,
    error: StepError = SandboxError,
    log: Path | None = None,
    cwd: Path | None = None,
    env: dict[str, str] | None = None,
    input: bytes | None = None,
    stdin: IO[bytes] | None = None,
    timeout: float = 120,
    what: str | None = None,
) -> subprocess.CompletedProcess[bytes]:
    """Run one local command; append it and its output to `log`; on a non-zero exit or a
    timeout raise `error(part, message, last lines)`. `what` names the command in the
    message (default: the command line, cut at 200 characters); `env=None` inherits ours.
    """
    what = what or f"`{shlex.join(argv)[:200]}`"
    if stdin is None:
        stdin_arg: IO[bytes] | int = subprocess.PIPE if input is not None else subprocess.DEVNULL
    else:
        stdin_arg = stdin
    # its own process group, so that a timeout ends the whole tree (debootstrap's
    # wget, apt's methods, pip's builds), not just the command at its top
    with subprocess.Popen(
        argv,
        cwd=cwd,
        env=env,
        stdin=stdin_arg,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        start_new_session=True,
    ) as popen:
        try:
            stdout, stderr = popen.communicate(input, timeout=timeout)
        except subprocess.TimeoutExpired:
            _kill_group(popen)
            stdout, stderr = popen.communicate()
            out = (stdout + stderr).decode(errors="replace")
            _log(log, argv, out + f"\n(timed out after {timeout:.0f} s)")
            raise error(
                part,
                f"{what} timed out after {timeout:.0f} s and was killed",
                out.splitlines()[-15:],
            ) from None
        except BaseException:
            # an interrupted build leaves no orphan group behind (the tree is not ours to keep)
            _kill_group(popen)
            raise
    proc = subprocess.CompletedProcess(argv, popen.returncode, stdout, stderr)
    out = (stdout + stderr).decode(errors="replace")
    _log(log, argv, out)
    if proc.returncode != 0:
        raise error(part, f"{what} exited {proc.returncode}", out.splitlines()[-15:])
    return proc


def _kill_group(popen: subprocess.Popen[bytes]) -> None:
    with contextlib.suppress(ProcessLookupError):
        os.killpg(popen.pid, signal.SIGKILL)


def _log(log: Path | None, argv: list[str], out: str) -> None:
    if log is not None:
        log.parent.mkdir(parents=True, exist_ok=True)
        with log.open("a") as fh:
            fh.write(f"$ {shlex.join(argv)}\n{out}\n")


def run(
    argv: list[str],
    part: str,
    log: Path | None = None,
    *,
    cwd: Path | None = None,
    env: dict[str, str] | None = None,
    input: bytes | None = None,
    timeout: float = 120,
) -> subprocess.CompletedProcess[bytes]:
    """Run one sandbox build command in `clean_env()`; failure raises SandboxError."""
    return run_command(
        argv,
        part,
        log=log,
        cwd=cwd,
        env=env or clean_env(),
        input=input,
        timeout=timeout,
        # the first words only: later arguments may be long paths or values
        what=f"`{shlex.join(argv[:4])}…`",
    )


def git(
    *args: str,
    env: dict[str, str],
    cwd: Path | None = None,
    log: Path | None = None,
    config: dict[str, str] | None = None,
    error: StepError = SandboxError,
    timeout: float = 120,
) -> str:
    """Local `git ARGS` (with `-c KEY=VALUE` for each of `config`); returns its stdout, stripped.

    The caller's `env` is the whole environment: git reads no config or identity
    from the operator's.
    """
    options = [arg for key, value in (config or {}).items() for arg in ("-c", f"{key}={value}")]
    proc = run_command(
        ["git", *options, *args],
        "git",
        error=error,
        log=log,
        cwd=cwd,
        env=env,
        timeout=timeout,
        what=f"`git {' '.join(args)[:120]}`",
    )
    return proc.stdout.decode(errors="replace").strip()


def write_private(path: Path, text: str) -> None:
    """Write a file only its owner can read, never briefly world-readable."""
    path.parent.mkdir(parents=True, exist_ok=True)
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "w") as fh:
        fh.write(text)
    os.chmod(path, 0o600)


def free_ports(names: list[str]) -> dict[str, int]:
    """One free loopback port per name (all sockets held open until every port is picked)."""
    socks = []
    ports: dict[str, int] = {}
    try:
        for name in names:
            s = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
            s.bind(("127.0.0.1", 0))
            socks.append(s)
            ports[name] = s.getsockname()[1]
    finally:
        for s in socks:
            s.close()
    return ports


def lift_armor(root: Path) -> None:
    """Clear the immutable attribute the runbook's armor put on files under `root`.

    The armor (runbook.ops.armor) makes the do-not-touch files and the evidence
    dumps immutable, for root too. Throwing a whole sandbox (`up --fresh`) or a
    twin instance (`down`, a fresh `up`) away are the places that lift it, as
    root, on purpose; nothing else does.
    """
    if not root.exists() or shutil.which("chattr") is None:
        return
    # -f: quiet on files without the attribute or filesystems that lack it
    subprocess.run(["chattr", "-R", "-f", "-i", str(root)], check=False, capture_output=True)
