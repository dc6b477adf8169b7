"""The shell string of a command: what the session sends to the target's shell.

A command is an argument list (quoted here, so a value cannot turn into
shell syntax) or, on purpose, a raw shell string (`shell=True`). The
guards read the string this builds, wrappers included (runbook.safety.guards).

Example::

    >>> build_command(["git", "-C", "/srv/app", "log", "-1"], cwd="/tmp")
    'cd /tmp && git -C /srv/app log -1'
"""

from __future__ import annotations

import shlex
from collections.abc import Sequence
from pathlib import Path

from runbook.errors import ParameterError

Command = str | Sequence[str]


def quote_command(args: list[str] | tuple[str, ...]) -> str:
    """Quote an argument list for a POSIX shell."""
    return " ".join(shlex.quote(str(a)) for a in args)


def build_command(
    command: Command,
    *,
    shell: bool = False,
    cwd: str | None = None,
    env: dict[str, str] | None = None,
    sudo: bool | str = False,
) -> str:
    """The shell string for a command: arguments quoted, env as quoted `env K=V`.

    >>> build_command(["echo", "a b; rm -rf /"], env={"X": "1; touch y"})
    "env 'X=1; touch y' echo 'a b; rm -rf /'"
    >>> build_command(["systemctl", "restart", "dealix-api"], sudo=True)
    'sudo -n -- systemctl restart dealix-api'
    """
    if isinstance(command, str):
        if not shell:
            raise ParameterError(
                f"command {command!r} is a string: pass an argument list (quoted for you), or "
                "shell=True to run a raw shell string on purpose",
                key="command",
            )
        body = command
        if env or sudo:
            body = "sh -c " + quote_command([command])
    else:
        if shell:
            raise ParameterError("shell=True needs a string command", key="command")
        if not command:
            raise ParameterError("empty command", key="command")
        body = quote_command(list(command))
    if env:
        for key in env:
            if not key.replace("_", "a").isalnum() or key[0].isdigit():
                raise ParameterError(f"bad environment variable name {key!r}", key="env")
        body = "env " + quote_command([f"{k}={v}" for k, v in env.items()]) + " " + body
    if sudo:
        prefix = ["sudo", "-n"]
        if isinstance(sudo, str):
            prefix += ["-u", sudo]
        body = quote_command([*prefix, "--"]) + " " + body
    if cwd:
        body = f"cd {quote_command([cwd])} && " + body
    return body


def command_label(command: Command) -> str:
    """A short name for a command's log files.

    >>> command_label(["/usr/bin/git", "-C", "/srv/app"]), command_label("ls -l | wc")
    ('git--C', 'ls')
    """
    if isinstance(command, str):
        return command.split()[0] if command.split() else "shell"
    parts = [Path(str(p)).name for p in list(command)[:2]]
    return "-".join(parts)
