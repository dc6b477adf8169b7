r"""supervisord: one [program:*] section per part, the isolated mode's network namespace,
supervisord's own config and its start.

Example::

    >>> lay = Layout(Path("/sb"))
    >>> section = program_section("redis", ["redis-server", "/sb/redis.conf"], lay, 10)
    >>> print("\n".join(section.splitlines()[:3]))
    [program:redis]
    command=redis-server /sb/redis.conf
    priority=10
"""

from __future__ import annotations

import shlex
from pathlib import Path
from typing import Any

from runbook.sandbox.build.host import clean_env, is_root, project_python, run_command
from runbook.sandbox.build.postgres import pg_bindir
from runbook.sandbox.build.stubs import stubs_command
from runbook.sandbox.layout import Layout
from runbook.sandbox.procs import SandboxError, tail


def program_section(
    name: str,
    command: list[str],
    lay: Layout,
    priority: int,
    *,
    directory: Path | None = None,
    user: str | None = None,
    extra: dict[str, str] | None = None,
) -> str:
    log = lay.program_log(name)
    lines = [
        f"[program:{name}]",
        f"command={shlex.join(command)}",
        f"priority={priority}",
        "autostart=true",
        "autorestart=unexpected",
        "startsecs=1",
        "startretries=3",
        "stopwaitsecs=15",
        f"stdout_logfile={log}",
        "redirect_stderr=true",
        "stdout_logfile_maxbytes=2MB",
        "stdout_logfile_backups=2",
    ]
    if directory is not None:
        lines.append(f"directory={directory}")
    if user is not None:
        lines.append(f"user={user}")
    for key, value in (extra or {}).items():
        lines.append(f"{key}={value}")
    return "\n".join(lines) + "\n"


# The server side: in isolated mode these run in the server's network namespace.
NETNS_PROGRAMS = ("postgresql", "redis", "dealix-api", "nginx")


def program_configs(state: dict[str, Any], lay: Layout) -> dict[str, str]:
    """supervisord [program:*] sections, one file per program.

    In isolated mode (`state["isolated"]["services_ns"]`) the NETNS_PROGRAMS'
    commands are wrapped in `ip netns exec <ns>` (which execs, so supervisord's
    pid and signals stay the program's) and the stubs also listen on the
    operator's end of the veth, where the namespace reaches "the internet"
    (their loopback-only control endpoints stay on 127.0.0.1).
    """
    iso = state.get("isolated") or {}
    ns = iso.get("services_ns")
    if ns:
        return _in_netns(_program_configs(state, lay, ["127.0.0.1", iso["operator_ip"]]), ns)
    return _program_configs(state, lay, ["127.0.0.1"])


def _in_netns(programs: dict[str, str], ns: str) -> dict[str, str]:
    out = dict(programs)
    for name in NETNS_PROGRAMS:
        lines = out[name].splitlines()
        user = next((ln[5:] for ln in lines if ln.startswith("user=")), None)
        wrapped = []
        for ln in lines:
            if ln.startswith("user="):
                continue  # `ip netns exec` needs root: drop privileges after it, with setpriv
            if ln.startswith("command="):
                drop = f"setpriv --reuid={user} --regid={user} --init-groups " if user else ""
                ln = f"command=ip netns exec {shlex.quote(ns)} {drop}{ln[8:]}"
            wrapped.append(ln)
        out[name] = "\n".join(wrapped) + "\n"
    return out


def _program_configs(state: dict[str, Any], lay: Layout, stubs_hosts: list[str]) -> dict[str, str]:
    pg = pg_bindir()
    root = is_root()
    return {
        "saas-stubs": program_section(
            "saas-stubs",
            stubs_command(state, lay, stubs_hosts),
            lay,
            5,
            directory=lay.stubs_dir,
        ),
        "postgresql": program_section(
            "postgresql",
            [str(pg / "postgres"), "-D", str(lay.pgdata)],
            lay,
            10,
            directory=lay.pgdata,
            user="postgres" if root else None,
            # SIGINT is Postgres' "fast" shutdown: roll back and exit at once.
            extra={"stopsignal": "INT", "stopwaitsecs": "30"},
        ),
        "redis": program_section("redis", ["/usr/bin/redis-server", str(lay.redis_conf)], lay, 10),
        "sshd": program_section(
            "sshd",
            ["/usr/sbin/sshd", "-D", "-E", str(lay.auth_log), "-f", str(lay.sshd_config)],
            lay,
            20,
        ),
        "dealix-api": program_section(
            "dealix-api",
            [
                str(lay.app_venv / "bin" / "python"),
                "-m",
                "uvicorn",
                "dealix.main:app",
                "--host",
                "127.0.0.1",
                "--port",
                str(state["api_port"]),
            ],
            lay,
            50,
            directory=lay.app_dir,
            extra={
                "stopasgroup": "true",
                "killasgroup": "true",
                "stopwaitsecs": "10",
                "environment": 'PYTHONUNBUFFERED="1"',
            },
        ),
        "nginx": program_section(
            "nginx",
            [
                "/usr/sbin/nginx",
                "-p",
                str(lay.nginx_dir),
                "-c",
                str(lay.nginx_dir / "nginx.conf"),
                "-e",
                str(lay.log_dir / "nginx" / "error.log"),
            ],
            lay,
            60,
            extra={"stopwaitsecs": "10"},
        ),
    }


def write_supervisor_config(state: dict[str, Any], lay: Layout, with_api: bool) -> None:
    lay.supervisor_logs.mkdir(parents=True, exist_ok=True)
    lay.programs_dir.mkdir(parents=True, exist_ok=True)
    lay.run_dir.mkdir(parents=True, exist_ok=True)
    user_line = "user=root\n" if is_root() else ""
    lay.supervisor_conf.write_text(f"""\
; Written by `runbook sandbox`; rewritten at every `up`.
[unix_http_server]
file={lay.supervisor_socket}
chmod=0700

[supervisord]
{user_line}logfile={lay.supervisor_dir / "supervisord.log"}
logfile_maxbytes=2MB
logfile_backups=2
loglevel=info
pidfile={lay.run_dir / "supervisord.pid"}
childlogdir={lay.supervisor_logs}
directory={lay.root}
identifier=dealix-sandbox

[rpcinterface:supervisor]
supervisor.rpcinterface_factory = supervisor.rpcinterface:make_main_rpcinterface

[supervisorctl]
serverurl=unix://{lay.supervisor_socket}

[include]
files = {lay.programs_dir}/*.conf
""")
    programs = program_configs(state, lay)
    for name, text in programs.items():
        path = lay.programs_dir / f"{name}.conf"
        if name == "dealix-api" and not with_api:
            path.unlink(missing_ok=True)
            continue
        path.write_text(text)


def supervisorctl_prefix(lay: Layout) -> str:
    return shlex.join(
        [str(project_python()), "-m", "supervisor.supervisorctl", "-c", str(lay.supervisor_conf)]
    )


def start_supervisord(lay: Layout) -> None:
    """Start supervisord; it daemonizes, so this returns once it has forked."""
    daemon_log = lay.supervisor_dir / "supervisord.log"

    def failed(part: str, message: str, lines: list[str]) -> SandboxError:
        # what it said before forking, then what the daemon logged before it died
        return SandboxError(part, f"{message} at start", [*lines, *tail(daemon_log)])

    run_command(
        [str(project_python()), "-m", "supervisor.supervisord", "-c", str(lay.supervisor_conf)],
        "supervisord",
        error=failed,
        log=lay.supervisor_dir / "start.log",
        cwd=lay.root,
        env=clean_env(),
        timeout=30,
        what="supervisord",
    )
