"""What every part of the twin shares: paths, root checks, running commands, cgroups.

Example::

    >>> cgroup_roots()[0].name in ("systemd", "cgroup", "unified")
    True
"""

from __future__ import annotations

import os
import shlex
import shutil
import subprocess
import sys
from collections.abc import Callable
from pathlib import Path

from runbook.core.paths import project_root
from runbook.rehearsal.target import RehearsalError
from runbook.sandbox.build.host import run_command

Echo = Callable[[str], None]

# Where the two hierarchies of a hybrid host are (TWIN_NOTES §1.3): systemd-nspawn
# needs a cgroup of its own in both, or every container lands in one /payload.
_HYBRID = (Path("/sys/fs/cgroup/systemd"), Path("/sys/fs/cgroup/unified"))
CGROUP_GROUP = "dealix-twin"


class TwinError(RehearsalError):
    """A step of the twin failed; the message names the step, the cause and the fix."""

    def __init__(self, step: str, message: str, log_tail: list[str] | None = None):
        self.step = self.part = step
        self.log_tail = log_tail or []
        tail = "".join(f"\n    {line}" for line in self.log_tail)
        # RuntimeError's own: the twin indents its log tail, the sandbox marks it with |
        RuntimeError.__init__(self, f"{step}: {message}{tail}")


def twin_cache_dir() -> Path:
    """Cached layers: `$RUNBOOK_TWIN_CACHE`, else /var/tmp/dealix-runbook-twin/cache."""
    env = os.environ.get("RUNBOOK_TWIN_CACHE")
    return Path(env).expanduser().resolve() if env else Path("/var/tmp/dealix-runbook-twin/cache")


def twin_files() -> Path:
    """sandbox/twin: the provision scripts and config files that go into the twin."""
    return project_root() / "sandbox" / "twin"


def require_root_and_tools() -> None:
    """Refuse early, with the fix, when the twin cannot run here."""
    if os.geteuid() != 0:
        raise TwinError(
            "twin",
            "needs root (systemd-nspawn, overlay mounts, cgroups and veths); run it as root, "
            "e.g. `sudo .venv/bin/runbook twin up`",
        )
    missing = [
        t
        for t in ("systemd-nspawn", "debootstrap", "zstd", "ip", "ssh-keygen", "openssl")
        if shutil.which(t) is None
    ]
    if missing:
        raise TwinError(
            "twin",
            f"missing on this machine: {', '.join(missing)}; install the packages "
            "systemd-container debootstrap zstd iproute2 openssh-client openssl "
            "(scripts/setup.sh does)",
        )


def run(
    argv: list[str],
    step: str,
    *,
    log: Path | None = None,
    timeout: float = 900,
    env: dict[str, str] | None = None,
    input: bytes | None = None,
) -> subprocess.CompletedProcess[bytes]:
    """Run one host command; on failure raise TwinError with the last lines of its output."""
    full_env = {
        "PATH": "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin",
        "LC_ALL": "C.UTF-8",
        "HOME": "/root",
    }
    full_env.update(env or {})
    return run_command(
        argv, step, error=TwinError, log=log, env=full_env, input=input, timeout=timeout
    )


def pip_download(
    requirements: list[Path],
    dest: Path,
    step: str,
    log: Path,
    *,
    timeout: float,
    python_version: str | None = None,
) -> None:
    """Wheels for `requirements` into `dest`, fetched by this machine's pip with this
    machine's configuration (index or local mirror, proxies, the certificates of a
    TLS-intercepting egress): the twin then installs offline and never sees them.
    `python_version` picks wheels for the twin's interpreter instead of ours."""
    dest.mkdir(parents=True, exist_ok=True)
    pinned = ["--python-version", python_version] if python_version else []
    run(
        [
            sys.executable,
            "-m",
            "pip",
            "download",
            "-q",
            "--only-binary=:all:",
            *pinned,
            *(arg for r in requirements for arg in ("-r", str(r))),
            "-d",
            str(dest),
        ],
        step,
        log=log,
        timeout=timeout,
        env={
            k: v
            for k, v in os.environ.items()
            if k.startswith(("PIP_", "SSL_", "REQUESTS_"))
            or k in ("HTTP_PROXY", "HTTPS_PROXY", "NO_PROXY", "http_proxy", "https_proxy")
        },
    )


def cgroup_roots() -> list[Path]:
    """The cgroup hierarchies a container needs its own directory in."""
    hybrid = [h for h in _HYBRID if (h / "cgroup.procs").exists()]
    if hybrid:
        return hybrid
    return [Path("/sys/fs/cgroup")]  # a pure cgroup2 host


def cgroup_dirs(name: str) -> list[Path]:
    return [root / CGROUP_GROUP / name for root in cgroup_roots()]


def make_cgroups(name: str) -> list[Path]:
    dirs = cgroup_dirs(name)
    for d in dirs:
        d.mkdir(parents=True, exist_ok=True)
    return dirs


def remove_cgroups(name: str) -> list[str]:
    """rmdir the container's cgroups, deepest first; returns those that would not go."""
    left: list[str] = []
    for d in cgroup_dirs(name):
        if not d.exists():
            continue
        for sub in sorted((p for p in d.rglob("*") if p.is_dir()), key=lambda p: -len(p.parts)):
            try:
                sub.rmdir()
            except OSError:
                left.append(str(sub))
        try:
            d.rmdir()
        except OSError:
            left.append(str(d))
    for root in cgroup_roots():
        try:
            (root / CGROUP_GROUP).rmdir()  # only when no other twin uses it
        except OSError:
            pass
    return left


def nspawn_argv(cgroup_name: str, args: list[str]) -> list[str]:
    """`systemd-nspawn ARGS`, first moved into the container's own cgroups (TWIN_NOTES §1.3)."""
    dirs = make_cgroups(cgroup_name)
    moves = "; ".join(f"echo $$ > {shlex.quote(str(d / 'cgroup.procs'))}" for d in dirs)
    return ["sh", "-c", f'{moves}; exec systemd-nspawn "$@"', "nspawn", *args]


def mounted(path: Path) -> bool:
    target = str(path)
    with open("/proc/mounts") as fh:
        return any(line.split()[1] == target for line in fh)


def mounts_under(path: Path) -> list[str]:
    prefix = str(path).rstrip("/") + "/"
    with open("/proc/mounts") as fh:
        return [
            line.split()[1]
            for line in fh
            if line.split()[1] == str(path) or line.split()[1].startswith(prefix)
        ]
