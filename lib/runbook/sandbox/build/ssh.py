"""SSH: the host and operator keys, known_hosts, sshd's config and what sshd needs to start.

Example::

    >>> cfg = sshd_config_text({"ssh_port": 2222, "ssh_user": "root"},
    ...                        Layout(Path("/sb")))
    >>> "MaxSessions 10" in cfg and "ListenAddress 127.0.0.1" in cfg
    True
"""

from __future__ import annotations

import base64
import hashlib
import os
from pathlib import Path
from typing import Any

from runbook.sandbox.build.host import is_root, run
from runbook.sandbox.layout import Layout
from runbook.sandbox.procs import SandboxError


def ensure_ssh_keys(lay: Layout) -> None:
    lay.ssh_dir.mkdir(parents=True, exist_ok=True)
    keys = ((lay.host_key, "dealix-sandbox-host"), (lay.client_key, "dealix-sandbox-operator"))
    for key, comment in keys:
        if not key.exists():
            for stale in (key, key.with_suffix(".pub")):
                stale.unlink(missing_ok=True)
            run(
                ["ssh-keygen", "-q", "-t", "ed25519", "-N", "", "-C", comment, "-f", str(key)],
                "ssh",
            )
    pub = lay.client_key.with_name(lay.client_key.name + ".pub").read_text().strip()
    lay.authorized_keys.write_text(pub + "\n")
    os.chmod(lay.authorized_keys, 0o600)


def host_key_line(lay: Layout) -> tuple[str, str]:
    """(key type, base64 blob) of the host's public key."""
    kind, blob = lay.host_key.with_name(lay.host_key.name + ".pub").read_text().split()[:2]
    return kind, blob


def host_key_fingerprint(lay: Layout) -> str:
    """`SHA256:…` as `ssh-keygen -l` prints it."""
    _, blob = host_key_line(lay)
    digest = hashlib.sha256(base64.b64decode(blob)).digest()
    return "SHA256:" + base64.b64encode(digest).decode().rstrip("=")


def write_known_hosts(lay: Layout, port: int) -> None:
    kind, blob = host_key_line(lay)
    lay.known_hosts.write_text(f"[127.0.0.1]:{port} {kind} {blob}\n")


def sshd_config_text(state: dict[str, Any], lay: Layout) -> str:
    return f"""\
# Written by `runbook sandbox`; rewritten at every `up`.
Port {state["ssh_port"]}
ListenAddress 127.0.0.1
HostKey {lay.host_key}
PidFile {lay.run_dir / "sshd.pid"}
AuthorizedKeysFile {lay.authorized_keys}
# No PAM: there is no login stack to go through for a key-only test host.
UsePAM no
# The state dir may sit under a group-writable path; sshd would refuse it.
StrictModes no
PubkeyAuthentication yes
PasswordAuthentication no
KbdInteractiveAuthentication no
PermitRootLogin prohibit-password
AllowUsers {state["ssh_user"]}
# Production's default: the library must keep to 10 channels per connection.
MaxSessions 10
Subsystem sftp internal-sftp
# VERBOSE records every login with the key's fingerprint in auth.log.
LogLevel VERBOSE
PrintMotd no
# Bash sources ~/.bashrc for commands run over SSH only in a top-level shell
# (SHLVL < 2). This machine's root .bashrc (pyenv init) adds ~100 ms to every
# command, which a production server's stock .bashrc does not; starting one
# level down keeps the sandbox's per-command cost like production's.
SetEnv SHLVL=1
"""


def ensure_privsep_dir() -> None:
    """sshd refuses to start without /run/sshd (made by systemd on a real host)."""
    if is_root():
        os.makedirs("/run/sshd", mode=0o755, exist_ok=True)
    elif not Path("/run/sshd").is_dir():
        raise SandboxError(
            "sshd",
            "/run/sshd is missing and only root can create it: "
            "run `sudo mkdir -p -m0755 /run/sshd` once",
        )


def check_account_usable(user: str) -> None:
    """Refuse early when sshd would refuse `user` whatever the key.

    Without PAM, sshd treats an account whose password field starts with
    "!" as locked (a fresh `useradd` account, some images' root). Only root
    can read /etc/shadow; unprivileged, the login check in `status` tells.
    We never change accounts ourselves: the fix is the operator's.
    """
    if not is_root():
        return
    try:
        lines = Path("/etc/shadow").read_text().splitlines()
    except OSError:
        return
    for line in lines:
        name, _, rest = line.partition(":")
        if name == user and rest.startswith("!"):
            raise SandboxError(
                "sshd",
                f"the account {user!r} is locked (its /etc/shadow password "
                "field starts with '!'), so sshd refuses it even with a valid key; "
                f"allow key logins with `usermod -p '*' {user}`",
            )


def check_sshd_config(lay: Layout) -> None:
    run(["/usr/sbin/sshd", "-t", "-f", str(lay.sshd_config)], "sshd")
