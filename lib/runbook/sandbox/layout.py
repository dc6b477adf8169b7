"""Where the sandbox keeps things: every path derives from the state dir.

The state dir mirrors the production server under `srv/` (so that paths
read like `/opt/dealix` and `/var/backups/postgres`), and keeps the
machinery (keys, configs, process manager) next to it. Unix sockets cannot
live there: a socket path is limited to 107 bytes, so they go to a short
directory under /tmp whose name is a hash of the state dir.

Example::

    >>> lay = Layout(Path("/srv/checkout/.sandbox"))
    >>> lay.app_dir
    PosixPath('/srv/checkout/.sandbox/srv/opt/dealix')
    >>> str(lay.sock_dir).startswith("/tmp/rbsb-")
    True
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass
from pathlib import Path

from runbook.core.paths import project_root as project_root
from runbook.core.paths import sandbox_state_dir

# Bumped when the layout changes incompatibly; an older state dir then asks
# for `up --fresh` instead of being half-reused.
LAYOUT_VERSION = 1

BACKUP_BRANCH = "server-backup-20260423-084442"
GITHUB_REPO = "VoXc2/dealix"
# The GitHub stub's control path that records a finished Actions run.
CI_RUNS_CONTROL = "/_stub/github/runs"


def ci_run_body(conclusion: str, head_sha: str) -> dict[str, str]:
    """The body of a completed CI run on main, as the GitHub stub's control API takes it.

    >>> ci_run_body("failure", "abc")["status"]
    'completed'
    """
    return {
        "head_sha": head_sha,
        "conclusion": conclusion,
        "status": "completed",
        "name": "CI",
        "branch": "main",
    }


PROGRAMS = ("saas-stubs", "postgresql", "redis", "sshd", "dealix-api", "nginx")


def default_state_dir() -> Path:
    """`$RUNBOOK_SANDBOX_DIR`, else `<project root>/.sandbox`."""
    return sandbox_state_dir()


@dataclass(frozen=True)
class Layout:
    """Paths of one sandbox, all derived from `root` (the state dir)."""

    root: Path

    # --- machinery -------------------------------------------------------
    @property
    def state_file(self) -> Path:
        return self.root / "state.json"

    @property
    def secrets_file(self) -> Path:
        return self.root / "secrets.env"

    @property
    def lock_file(self) -> Path:
        return self.root / ".lock"

    @property
    def run_dir(self) -> Path:
        """Pid files of the daemons that write one."""
        return self.root / "run"

    @property
    def ssh_dir(self) -> Path:
        return self.root / "ssh"

    @property
    def host_key(self) -> Path:
        return self.ssh_dir / "ssh_host_ed25519_key"

    @property
    def client_key(self) -> Path:
        return self.ssh_dir / "id_ed25519"

    @property
    def authorized_keys(self) -> Path:
        return self.ssh_dir / "authorized_keys"

    @property
    def known_hosts(self) -> Path:
        return self.ssh_dir / "known_hosts"

    @property
    def sshd_config(self) -> Path:
        return self.ssh_dir / "sshd_config"

    @property
    def supervisor_dir(self) -> Path:
        return self.root / "supervisor"

    @property
    def supervisor_conf(self) -> Path:
        return self.supervisor_dir / "supervisord.conf"

    @property
    def programs_dir(self) -> Path:
        return self.supervisor_dir / "programs"

    @property
    def supervisor_logs(self) -> Path:
        return self.supervisor_dir / "logs"

    @property
    def nginx_dir(self) -> Path:
        return self.root / "nginx"

    @property
    def redis_conf(self) -> Path:
        return self.root / "redis" / "redis.conf"

    @property
    def stubs_dir(self) -> Path:
        return self.root / "stubs"

    @property
    def stubs_config(self) -> Path:
        return self.stubs_dir / "config.json"

    @property
    def stubs_state(self) -> Path:
        return self.stubs_dir / "state.json"

    # --- the "server" ----------------------------------------------------
    @property
    def srv(self) -> Path:
        return self.root / "srv"

    @property
    def origin_dir(self) -> Path:
        return self.srv / "git" / "dealix.git"

    @property
    def app_dir(self) -> Path:
        return self.srv / "opt" / "dealix"

    @property
    def app_venv(self) -> Path:
        return self.app_dir / ".venv"

    @property
    def pg_base(self) -> Path:
        return self.srv / "var" / "lib" / "postgresql"

    @property
    def pgdata(self) -> Path:
        return self.pg_base / "15" / "main"

    @property
    def redis_data(self) -> Path:
        return self.srv / "var" / "lib" / "redis"

    @property
    def backups_dir(self) -> Path:
        return self.srv / "var" / "backups" / "postgres"

    @property
    def log_dir(self) -> Path:
        return self.srv / "var" / "log"

    @property
    def pg_log_dir(self) -> Path:
        return self.log_dir / "postgresql"

    @property
    def auth_log(self) -> Path:
        """sshd's log (production: /var/log/auth.log, what fail2ban reads)."""
        return self.log_dir / "auth.log"

    # --- sockets ---------------------------------------------------------
    @property
    def sock_dir(self) -> Path:
        digest = hashlib.sha256(str(self.root.resolve()).encode()).hexdigest()[:8]
        return Path("/tmp") / f"rbsb-{digest}"

    @property
    def pg_socket_dir(self) -> Path:
        return self.sock_dir / "pg"

    @property
    def supervisor_socket(self) -> Path:
        return self.sock_dir / "supervisor.sock"

    def program_log(self, program: str) -> Path:
        return self.supervisor_logs / f"{program}.log"
