"""Building the sandbox's parts: keys, secrets, the cluster, the app, configs.

Each function does one part and is safe to call again: the one-off parts
(keys, cluster, origin, venv, app `.env`) are made once, configs are
rewritten from state.json at every non-trivial `up` so that a newer
version of this code takes effect without `--fresh`.

Example::

    >>> cfg = sshd_config_text({"ssh_port": 2222, "ssh_user": "root"},
    ...                        Layout(Path("/sb")))
    >>> "MaxSessions 10" in cfg and "ListenAddress 127.0.0.1" in cfg
    True
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import json
import os
import pwd
import secrets
import shlex
import shutil
import socket
import string
import subprocess
import sys
import sysconfig
from pathlib import Path
from typing import Any

from runbook.sandbox.layout import BACKUP_BRANCH, GITHUB_REPO, Layout, project_root
from runbook.sandbox.procs import SandboxError, tail

# A minimal environment for everything the sandbox starts: the operator's
# shell may export DATABASE_URL, PYTHONPATH or VIRTUAL_ENV for another
# project, and supervisord hands its environment to every program.
CLEAN_PATH = "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin"

GIT_AUTHOR = ("Sami Assiri", "sami@dealix.me")
# Fixed dates make the origin's SHAs reproducible for a given template.
GIT_DATES = ("2026-04-22T21:03:11+03:00", "2026-04-23T11:05:27+03:00")


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
    """Run one build command; output goes to `log`; failure raises SandboxError with its tail."""
    if log is not None:
        log.parent.mkdir(parents=True, exist_ok=True)
        with log.open("ab") as fh:
            fh.write(f"$ {shlex.join(argv)}\n".encode())
            proc = subprocess.run(
                argv,
                cwd=cwd,
                env=env or clean_env(),
                input=input,
                stdout=fh,
                stderr=subprocess.STDOUT,
                timeout=timeout,
                check=False,
            )
    else:
        proc = subprocess.run(
            argv,
            cwd=cwd,
            env=env or clean_env(),
            input=input,
            capture_output=True,
            timeout=timeout,
            check=False,
        )
    if proc.returncode != 0:
        lines = (
            tail(log)
            if log is not None
            else (proc.stdout or b"").decode(errors="replace").splitlines()[-15:]
        )
        raise SandboxError(
            part, f"`{shlex.join(argv[:4])}…` exited {proc.returncode}", log_tail=lines
        )
    return proc


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


# --------------------------------------------------------------------------
# secrets


def _alnum(n: int) -> str:
    alphabet = string.ascii_letters + string.digits
    return "".join(secrets.choice(alphabet) for _ in range(n))


def generate_secrets() -> dict[str, str]:
    """The operator's secrets, shaped like the real tokens (so redaction patterns see them).

    Example::

        >>> s = generate_secrets()
        >>> s["GITHUB_TOKEN"].startswith("ghp_"), len(s["GITHUB_TOKEN"])
        (True, 40)
    """
    return {
        "DEALIX_ADMIN_KEY": "dlx_admin_" + secrets.token_urlsafe(32),
        "DEALIX_WEBHOOK_SECRET": "whsec_" + secrets.token_urlsafe(32),
        "GITHUB_TOKEN": "ghp_" + _alnum(36),
        "SENTRY_AUTH_TOKEN": "sntrys_" + secrets.token_urlsafe(48),
        "POSTHOG_PERSONAL_API_KEY": "phx_" + _alnum(43),
        "POSTHOG_PROJECT_API_KEY": "phc_" + _alnum(43),
        "ANTHROPIC_API_KEY": "sk-ant-api03-" + secrets.token_urlsafe(70),
        "OPENAI_API_KEY": "sk-proj-" + secrets.token_urlsafe(48),
        "GOOGLE_API_KEY": "AIza" + secrets.token_urlsafe(27)[:35],
    }


def read_env_file(path: Path) -> dict[str, str]:
    """KEY=VALUE lines (optionally quoted), as written by `write_env_file`."""
    out: dict[str, str] = {}
    for line in path.read_text().splitlines():
        line = line.strip()
        if not line or line.startswith("#") or "=" not in line:
            continue
        key, _, value = line.partition("=")
        value = value.strip()
        if len(value) >= 2 and value[0] == value[-1] and value[0] in "\"'":
            value = value[1:-1]
        out[key.strip()] = value
    return out


def write_env_file(path: Path, values: dict[str, str], header: str = "") -> None:
    lines = [f"# {h}" for h in header.splitlines()] if header else []
    for key, value in values.items():
        needs_quotes = any(c in value for c in " ,#$\"'")
        lines.append(f'{key}="{value}"' if needs_quotes else f"{key}={value}")
    write_private(path, "\n".join(lines) + "\n")


# --------------------------------------------------------------------------
# SSH


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


# --------------------------------------------------------------------------
# PostgreSQL


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


# --------------------------------------------------------------------------
# the app: origin, clone, venv, .env


def _template() -> Path:
    return project_root() / "sandbox" / "app"


def _git(
    *args: str, cwd: Path | None = None, log: Path | None = None, date: str | None = None
) -> str:
    env = clean_env(GIT_CONFIG_NOSYSTEM="1", GIT_TERMINAL_PROMPT="0")
    # Never read or write the operator's global git config.
    env["GIT_CONFIG_GLOBAL"] = "/dev/null"
    if date:
        env["GIT_AUTHOR_DATE"] = env["GIT_COMMITTER_DATE"] = date
    name, email = GIT_AUTHOR
    argv = [
        "git",
        "-c",
        f"user.name={name}",
        "-c",
        f"user.email={email}",
        "-c",
        "init.defaultBranch=main",
        *args,
    ]
    proc = subprocess.run(argv, cwd=cwd, env=env, capture_output=True, text=True, check=False)
    if log is not None:
        with log.open("a") as fh:
            fh.write(f"$ {shlex.join(argv)}\n{proc.stdout}{proc.stderr}")
    if proc.returncode != 0:
        raise SandboxError(
            "git",
            f"git {' '.join(args[:2])} exited {proc.returncode}",
            log_tail=(proc.stdout + proc.stderr).splitlines()[-15:],
        )
    return proc.stdout.strip()


def _split_history(work: Path) -> tuple[list[str], list[str]]:
    """Files of commit 1 and of commit 2: the newest migration lands in commit 2."""
    files = sorted(
        str(p.relative_to(work))
        for p in work.rglob("*")
        if p.is_file() and ".git" not in p.relative_to(work).parts
    )
    migrations = sorted(
        f for f in files if f.startswith("migrations/versions/") and f.endswith(".py")
    )
    later = migrations[-1:] if len(migrations) > 1 else []
    return [f for f in files if f not in later], later


def build_app_repo(lay: Layout) -> str:
    """Commit the template into a bare origin as a short history; clone it. Returns HEAD."""
    template = _template()
    if not (template / "dealix").is_dir():
        raise SandboxError("app", f"the app template is missing: {template}/dealix")
    log = lay.root / "build.log"
    for d in (lay.origin_dir, lay.app_dir):
        if d.exists():
            shutil.rmtree(d)
    lay.origin_dir.parent.mkdir(parents=True, exist_ok=True)
    lay.app_dir.parent.mkdir(parents=True, exist_ok=True)
    _git("init", "-q", "--bare", "-b", "main", str(lay.origin_dir), log=log)

    work = lay.root / "tmp" / "app-history"
    if work.exists():
        shutil.rmtree(work)
    shutil.copytree(
        template,
        work,
        ignore=shutil.ignore_patterns(
            "__pycache__", "*.pyc", ".venv", ".env", ".pytest_cache", ".last_good_sha"
        ),
    )
    for script in work.glob("scripts/*.sh"):
        script.chmod(0o755)
    first, later = _split_history(work)
    _git("init", "-q", "-b", "main", cwd=work, log=log)
    _git("add", "--", *first, cwd=work, log=log)
    _git(
        "commit",
        "-q",
        "-m",
        "Dealix API v3.0.0: primitive launch",
        cwd=work,
        log=log,
        date=GIT_DATES[0],
    )
    sha1 = _git("rev-parse", "HEAD", cwd=work)
    if later:
        msg = f"Add migration {Path(later[0]).stem}"
    else:
        (work / "CHANGELOG.md").write_text("# Changelog\n\n## v3.0.0\n\n- Primitive launch.\n")
        later = ["CHANGELOG.md"]
        msg = "Add changelog"
    _git("add", "--", *later, cwd=work, log=log)
    _git("commit", "-q", "-m", msg, cwd=work, log=log, date=GIT_DATES[1])
    _git("push", "-q", str(lay.origin_dir), "main:main", cwd=work, log=log)
    _git("--git-dir", str(lay.origin_dir), "branch", BACKUP_BRANCH, sha1, log=log)
    shutil.rmtree(work)

    _git("clone", "-q", str(lay.origin_dir), str(lay.app_dir), log=log)
    _git("branch", "-q", BACKUP_BRANCH, f"origin/{BACKUP_BRANCH}", cwd=lay.app_dir, log=log)
    # Deploy-local files must not show up as drift in `git status`.
    exclude = lay.app_dir / ".git" / "info" / "exclude"
    with exclude.open("a") as fh:
        fh.write(".venv/\n.env\n.env.*.bak\n.last_good_sha\n__pycache__/\n")
    return _git("rev-parse", "HEAD", cwd=lay.app_dir)


def build_app_venv(lay: Layout) -> None:
    """A venv with system site packages that also sees the project venv's packages.

    A venv made from a venv inherits the *base* interpreter's site-packages,
    not the project venv's: a .pth file adds those, so the app's
    requirements are satisfied offline and `pip install -r` is a no-op.
    """
    venv = lay.app_venv
    if venv.exists():
        shutil.rmtree(venv)
    run(
        [str(project_python()), "-m", "venv", "--system-site-packages", "--without-pip", str(venv)],
        "app-venv",
        lay.root / "build.log",
    )
    purelib = sysconfig.get_paths()["purelib"] if sys.prefix != sys.base_prefix else None
    if purelib is None:
        out = run(
            [
                str(project_python()),
                "-c",
                "import sysconfig; print(sysconfig.get_paths()['purelib'])",
            ],
            "app-venv",
        )
        purelib = out.stdout.decode().strip()
    site_dirs = sorted(venv.glob("lib/python3*/site-packages"))
    if not site_dirs:
        raise SandboxError("app-venv", f"no site-packages in {venv}")
    # addsitedir (not a bare path) so the project venv's own .pth files run too.
    (site_dirs[0] / "dealix-runbook-project-venv.pth").write_text(
        f"import site; site.addsitedir({str(purelib)!r})\n"
    )
    # Offline by design: a missing requirement fails at once instead of
    # waiting on the network, and pip does not look for its own upgrade.
    (venv / "pip.conf").write_text("[global]\nno-index = true\ndisable-pip-version-check = true\n")
    py = venv / "bin" / "python"
    for tool, module in (("alembic", "alembic"), ("pip", "pip"), ("uvicorn", "uvicorn")):
        script = venv / "bin" / tool
        # The venv has no console scripts of its own (its packages come
        # through the .pth file): stand in for pip's entry points.
        script.write_text(f'#!/bin/sh\nexec {shlex.quote(str(py))} -m {module} "$@"\n')
        script.chmod(0o755)


def app_env(state: dict[str, Any], sec: dict[str, str], internal: dict[str, str]) -> dict[str, str]:
    stubs = state["stubs_url"]
    return {
        "APP_ENV": "sandbox",
        "APP_VERSION": "3.0.0",
        "DATABASE_URL": (
            f"postgresql://dealix:{internal['DB_PASSWORD']}@127.0.0.1:{state['pg_port']}/dealix"
        ),
        "REDIS_URL": state["redis_url"],
        "ADMIN_KEY": sec["DEALIX_ADMIN_KEY"],
        "WEBHOOK_SECRET": sec["DEALIX_WEBHOOK_SECRET"],
        "ANTHROPIC_API_KEY": sec["ANTHROPIC_API_KEY"],
        "OPENAI_API_KEY": sec["OPENAI_API_KEY"],
        "GOOGLE_API_KEY": sec["GOOGLE_API_KEY"],
        "ANTHROPIC_BASE_URL": f"{stubs}/anthropic",
        "OPENAI_BASE_URL": f"{stubs}/openai",
        "GOOGLE_BASE_URL": f"{stubs}/google",
        "LLM_PROVIDER_PRIORITY": "anthropic,openai,google",
        "BREAKER_FAILURE_THRESHOLD": "3",
        # Production waits 60 s before a half-open probe; drills cannot.
        "BREAKER_RESET_SECONDS": "3",
        "WORKLOAD_INTERVAL_SECONDS": "2",
        "SENTRY_DSN": (
            f"http://{state['sentry_public_key']}@127.0.0.1:{state['stubs_port']}"
            f"/sentry/{state['sentry_project_id']}"
        ),
        "POSTHOG_API_KEY": sec["POSTHOG_PROJECT_API_KEY"],
        "POSTHOG_HOST": f"{stubs}/posthog",
    }


def write_app_env(lay: Layout, state: dict[str, Any], sec: dict[str, str], head: str) -> None:
    internal = {"DB_PASSWORD": secrets.token_urlsafe(24)}
    env = app_env(state, sec, internal)
    write_env_file(
        lay.app_dir / ".env",
        env,
        header="Dealix API configuration (sandbox). Never edit on the server:\n"
        "changes flow through GitHub PR -> deploy script.",
    )
    # The pre-v3 file predates the provider priority and the breakers, and
    # holds the secrets that were rotated at the v3.0.0 launch.
    old = {
        k: v
        for k, v in env.items()
        if not k.startswith(("BREAKER_", "LLM_", "WORKLOAD_", "POSTHOG_", "APP_VERSION"))
    }
    old.update(
        {
            "APP_ENV": "production",
            "ADMIN_KEY": "dlx_admin_" + secrets.token_urlsafe(32),
            "ANTHROPIC_API_KEY": "sk-ant-api03-" + secrets.token_urlsafe(70),
            "OPENAI_API_KEY": "sk-" + secrets.token_urlsafe(36),
        }
    )
    old.pop("GOOGLE_API_KEY", None)
    old.pop("GOOGLE_BASE_URL", None)
    bak = lay.app_dir / ".env.pre-v3.0.0.bak"
    write_env_file(
        bak,
        old,
        header="Backup taken 2026-04-23 08:44:42 before the v3.0.0 launch."
        "\nEmergency reference: never delete.",
    )
    stamp = 1776923082.0  # 2026-04-23T08:44:42+03:00, when the backup was taken
    os.utime(bak, (stamp, stamp))
    (lay.app_dir / ".last_good_sha").write_text(head + "\n")


def read_app_env(lay: Layout) -> dict[str, str]:
    return read_env_file(lay.app_dir / ".env")


# --------------------------------------------------------------------------
# redis, nginx, stubs, supervisord


def write_redis_config(state: dict[str, Any], lay: Layout) -> None:
    lay.redis_conf.parent.mkdir(parents=True, exist_ok=True)
    lay.redis_data.mkdir(parents=True, exist_ok=True)
    (lay.log_dir / "redis").mkdir(parents=True, exist_ok=True)
    lay.redis_conf.write_text(f"""\
# Written by `runbook sandbox`; rewritten at every `up`.
bind 127.0.0.1
port {state["redis_port"]}
protected-mode yes
daemonize no
supervised no
# A queue/cache that starts empty: no RDB snapshots, no AOF.
save ""
appendonly no
dir {lay.redis_data}
logfile {lay.log_dir / "redis" / "redis-server.log"}
""")


def write_nginx_config(state: dict[str, Any], lay: Layout) -> None:
    tmp = lay.nginx_dir / "tmp"
    tmp.mkdir(parents=True, exist_ok=True)
    logs = lay.log_dir / "nginx"
    logs.mkdir(parents=True, exist_ok=True)
    user = ""
    if is_root():
        # nginx's master keeps root; workers drop to www-data as on Debian.
        user = "user www-data;\n" if _user_exists("www-data") else "user root;\n"
    iso = state.get("isolated") or {}
    # isolated mode: nginx listens on every address of the server namespace (as
    # production's on :80), where the namespace's firewall governs who reaches it
    extra_listen = f"\n        listen {state['nginx_port']};" if iso.get("services_ns") else ""
    (lay.nginx_dir / "nginx.conf").write_text(f"""\
# Written by `runbook sandbox`; rewritten at every `up`.
{user}worker_processes 1;
daemon off;
pid {lay.run_dir / "nginx.pid"};
error_log {logs / "error.log"} warn;

events {{
    worker_connections 256;
}}

http {{
    access_log {logs / "access.log"};
    server_tokens off;
    client_body_temp_path {tmp / "client_body"};
    proxy_temp_path {tmp / "proxy"};
    fastcgi_temp_path {tmp / "fastcgi"};
    uwsgi_temp_path {tmp / "uwsgi"};
    scgi_temp_path {tmp / "scgi"};

    # api.dealix.me -> 127.0.0.1:8001 on production
    server {{
        listen 127.0.0.1:{state["nginx_port"]};{extra_listen}
        server_name api.dealix.me;

        location / {{
            proxy_pass http://127.0.0.1:{state["api_port"]};
            proxy_http_version 1.1;
            proxy_set_header Host $host;
            proxy_set_header X-Real-IP $remote_addr;
            proxy_set_header X-Forwarded-For $proxy_add_x_forwarded_for;
            proxy_set_header X-Forwarded-Proto $scheme;
            proxy_read_timeout 60s;
        }}
    }}
}}
""")


def _user_exists(name: str) -> bool:
    try:
        pwd.getpwnam(name)
        return True
    except KeyError:
        return False


def stubs_config(state: dict[str, Any], sec: dict[str, str]) -> dict[str, str]:
    """The SaaS stubs' configuration: which credentials each fake service accepts."""
    return {
        "github_repo": GITHUB_REPO,
        "github_token": sec["GITHUB_TOKEN"],
        "sentry_org": "dealix",
        "sentry_project": "dealix-api",
        "sentry_project_id": state["sentry_project_id"],
        "sentry_public_key": state["sentry_public_key"],
        "sentry_auth_token": sec["SENTRY_AUTH_TOKEN"],
        "posthog_project_id": state["posthog_project_id"],
        "posthog_project_api_key": sec["POSTHOG_PROJECT_API_KEY"],
        "posthog_personal_api_key": sec["POSTHOG_PERSONAL_API_KEY"],
        "anthropic_api_key": sec["ANTHROPIC_API_KEY"],
        "openai_api_key": sec["OPENAI_API_KEY"],
        "google_api_key": sec["GOOGLE_API_KEY"],
    }


def write_stubs_config(state: dict[str, Any], lay: Layout, sec: dict[str, str]) -> None:
    lay.stubs_dir.mkdir(parents=True, exist_ok=True)
    write_private(lay.stubs_config, json.dumps(stubs_config(state, sec), indent=2) + "\n")


def _program(
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
    py = str(project_python())
    pg = pg_bindir()
    root = is_root()
    return {
        "saas-stubs": _program(
            "saas-stubs",
            [
                py,
                str(project_root() / "sandbox" / "stubs" / "saas.py"),
                *(arg for h in stubs_hosts for arg in ("--host", h)),
                "--port",
                str(state["stubs_port"]),
                "--config",
                str(lay.stubs_config),
                "--state",
                str(lay.stubs_state),
            ],
            lay,
            5,
            directory=lay.stubs_dir,
        ),
        "postgresql": _program(
            "postgresql",
            [str(pg / "postgres"), "-D", str(lay.pgdata)],
            lay,
            10,
            directory=lay.pgdata,
            user="postgres" if root else None,
            # SIGINT is Postgres' "fast" shutdown: roll back and exit at once.
            extra={"stopsignal": "INT", "stopwaitsecs": "30"},
        ),
        "redis": _program("redis", ["/usr/bin/redis-server", str(lay.redis_conf)], lay, 10),
        "sshd": _program(
            "sshd",
            ["/usr/sbin/sshd", "-D", "-E", str(lay.auth_log), "-f", str(lay.sshd_config)],
            lay,
            20,
        ),
        "dealix-api": _program(
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
        "nginx": _program(
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
    log = lay.supervisor_dir / "start.log"
    with log.open("ab") as fh:
        proc = subprocess.run(
            [str(project_python()), "-m", "supervisor.supervisord", "-c", str(lay.supervisor_conf)],
            cwd=lay.root,
            env=clean_env(),
            stdin=subprocess.DEVNULL,
            stdout=fh,
            stderr=subprocess.STDOUT,
            timeout=30,
            check=False,
        )
    if proc.returncode != 0:
        raise SandboxError(
            "supervisord",
            f"exited {proc.returncode} at start",
            log_tail=tail([log, lay.supervisor_dir / "supervisord.log"]),
        )
