"""PostgreSQL: the binaries, the cluster (initdb), its config and socket dir, SCRAM verifiers.

Example::

    >>> as_db_superuser(["psql"]) in (["psql"], ["runuser", "-u", "postgres", "--", "psql"])
    True
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import os
import secrets
import shlex
import shutil
import subprocess
from pathlib import Path
from typing import Any

from runbook.sandbox.build.host import clean_env, current_user, is_root
from runbook.sandbox.layout import Layout
from runbook.sandbox.procs import SandboxError, tail


def pg_bindir() -> Path:
    """PostgreSQL 15's binaries (Debian keeps them out of PATH)."""
    others = sorted(Path("/usr/lib/postgresql").glob("*/bin"))
    for cand in (Path("/usr/lib/postgresql/15/bin"), *others):
        if (cand / "postgres").exists():
            return cand
    found = shutil.which("pg_config")
    if found:
        out = subprocess.run([found, "--bindir"], capture_output=True, text=True, check=False)
        if out.returncode == 0 and Path(out.stdout.strip(), "postgres").exists():
            return Path(out.stdout.strip())
    raise SandboxError(
        "postgresql", "PostgreSQL server binaries not found (apt-get install postgresql)"
    )


def as_db_superuser(argv: list[str]) -> list[str]:
    """Prefix a command so it runs as the cluster's OS owner (postgres refuses root)."""
    return ["runuser", "-u", "postgres", "--", *argv] if is_root() else argv


def scram_verifier(password: str, iterations: int = 4096, salt: bytes | None = None) -> str:
    """The SCRAM-SHA-256 verifier PostgreSQL stores for `password` (RFC 5802/7677).

    Example::

        >>> scram_verifier("pw", salt=b"0123456789abcdef").split("$")[1]
        '4096:MDEyMzQ1Njc4OWFiY2RlZg=='
    """
    salt = salt or secrets.token_bytes(16)
    salted = hashlib.pbkdf2_hmac("sha256", password.encode(), salt, iterations)
    client_key = hmac.new(salted, b"Client Key", hashlib.sha256).digest()
    stored_key = hashlib.sha256(client_key).digest()
    server_key = hmac.new(salted, b"Server Key", hashlib.sha256).digest()
    b64 = base64.b64encode
    return (
        f"SCRAM-SHA-256${iterations}:{b64(salt).decode()}"
        f"${b64(stored_key).decode()}:{b64(server_key).decode()}"
    )


def chown_to_db_owner(*paths: Path) -> None:
    if is_root():
        for p in paths:
            shutil.chown(p, "postgres", "postgres")


def start_initdb(lay: Layout, superuser: str) -> subprocess.Popen[bytes]:
    """Start initdb in the background (the slowest one-off step; other work overlaps it)."""
    if lay.pgdata.exists():
        shutil.rmtree(lay.pgdata)
    lay.pgdata.mkdir(parents=True, mode=0o700)
    lay.pg_log_dir.mkdir(parents=True, exist_ok=True)
    chown_to_db_owner(lay.pg_base, lay.pgdata.parent, lay.pgdata, lay.pg_log_dir)
    log = lay.root / "build.log"
    fh = log.open("ab")
    argv = as_db_superuser(
        [
            str(pg_bindir() / "initdb"),
            "-D",
            str(lay.pgdata),
            "-U",
            superuser,
            "--auth-local=peer",
            "--auth-host=scram-sha-256",
            "-E",
            "UTF8",
            "--locale=C.UTF-8",
            "--no-sync",
        ]
    )
    fh.write(f"$ {shlex.join(argv)}\n".encode())
    fh.flush()
    # cwd=/ : postgres' tools complain when the cwd is unreadable for their user.
    return subprocess.Popen(argv, cwd="/", env=clean_env(), stdout=fh, stderr=subprocess.STDOUT)


def finish_initdb(lay: Layout, proc: subprocess.Popen[bytes]) -> None:
    rc = proc.wait(timeout=120)
    if rc != 0:
        raise SandboxError(
            "postgresql", f"initdb exited {rc}", log_tail=tail(lay.root / "build.log")
        )
    conf = lay.pgdata / "postgresql.conf"
    with conf.open("a") as fh:
        fh.write(
            "\n# The sandbox's settings (ports, sockets, logging) live here:\n"
            "include_if_exists = 'sandbox.conf'\n"
        )


def write_pg_config(state: dict[str, Any], lay: Layout) -> None:
    superuser = state["pg_superuser"]
    os_user = current_user()
    sandbox_conf = f"""\
# Written by `runbook sandbox`; rewritten at every `up`.
listen_addresses = '127.0.0.1'
port = {state["pg_port"]}
unix_socket_directories = '{lay.pg_socket_dir}'
# Small on purpose: the pool-exhausted fault fills it in a second.
max_connections = 40
superuser_reserved_connections = 3
shared_buffers = 32MB
# The sandbox is disposable: crash safety buys nothing here and costs seconds.
fsync = off
synchronous_commit = off
full_page_writes = off
logging_collector = on
log_directory = '{lay.pg_log_dir}'
log_filename = 'postgresql-15-main.log'
log_rotation_age = 0
log_rotation_size = 0
log_line_prefix = '%m [%p] %q%u@%d '
timezone = 'UTC'
log_timezone = 'UTC'
"""
    hba = f"""\
# Written by `runbook sandbox`.
# TYPE  DATABASE  USER          ADDRESS        METHOD
# The superuser through the socket, as `sudo -u postgres psql` on production;
# the map also lets the operator running the sandbox ({os_user}) in as {superuser}.
local   all       {superuser:<13} peer map=sandbox
# The app's role over TCP with a password, as in DATABASE_URL.
host    all       dealix        127.0.0.1/32   scram-sha-256
"""
    ident = f"""\
# MAPNAME  SYSTEM-USERNAME  PG-USERNAME
sandbox    {superuser:<16} {superuser}
sandbox    {os_user:<16} {superuser}
"""
    files = (("sandbox.conf", sandbox_conf), ("pg_hba.conf", hba), ("pg_ident.conf", ident))
    for name, text in files:
        path = lay.pgdata / name
        path.write_text(text)
        os.chmod(path, 0o600)
        chown_to_db_owner(path)


def prepare_sockets(lay: Layout) -> None:
    """The short socket dir under /tmp; refuse one that someone else owns."""
    sock = lay.sock_dir
    try:
        sock.mkdir(mode=0o755)
    except FileExistsError:
        st = sock.lstat()
        if sock.is_symlink() or st.st_uid != os.geteuid():
            raise SandboxError("sockets", f"{sock} exists and is not ours: remove it") from None
    # 0755: the postgres user (when we are root) must reach its socket dir below.
    os.chmod(sock, 0o755)  # noqa: S103
    lay.pg_socket_dir.mkdir(mode=0o755, exist_ok=True)
    chown_to_db_owner(lay.pg_socket_dir)
