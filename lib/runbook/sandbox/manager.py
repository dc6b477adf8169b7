"""`Sandbox`: build, start, check, break and stop the stand-in Dealix server.

A cold `up` takes a few seconds; a second one, on a healthy sandbox, well
under one.

Example (tests/test_sandbox.py runs all of this for real)::

    sb = Sandbox()
    state = sb.up()
    state["base_url"]                                # 'http://127.0.0.1:40123'
    [r["name"] for r in sb.status() if not r["healthy"]]   # []
    sb.fault("postgres-down"); sb.heal()
    sb.down()
"""

from __future__ import annotations

import contextlib
import fcntl
import json
import os
import secrets
import shlex
import shutil
import subprocess
import time
from collections.abc import Callable, Iterator
from datetime import UTC, datetime
from pathlib import Path, PurePosixPath
from typing import Any

from runbook.rehearsal import state as rehearsal
from runbook.rehearsal.target import PARTS
from runbook.sandbox import seed
from runbook.sandbox.build import (
    app,
    envfiles,
    host,
    nginx,
    postgres,
    redis,
    ssh,
    stubs,
    supervisor,
)
from runbook.sandbox.layout import (
    BACKUP_BRANCH,
    CI_RUNS_CONTROL,
    GITHUB_REPO,
    LAYOUT_VERSION,
    PROGRAMS,
    Layout,
    ci_run_body,
    default_state_dir,
)
from runbook.sandbox.procs import (
    SandboxError,
    alive,
    children_map,
    descendants,
    http_get,
    http_post,
    proc_name,
    reap,
    redis_ping,
    ssh_banner,
    start_time,
    supervisor_rpc,
    supervisor_state,
    tail,
    wait_for,
)

# Build steps in order, and what each one needs: redoing a step redoes its dependants.
STEPS = ("ssh-keys", "cluster", "app-repo", "app-venv", "app-env", "database", "ci-runs")
DEPENDS = {
    "app-venv": ("app-repo",),
    "app-env": ("app-repo",),
    "database": ("cluster", "app-env", "app-venv"),
    "ci-runs": ("app-repo",),
}

READY_TIMEOUT = 30.0


def _now() -> str:
    return datetime.now(UTC).isoformat(timespec="seconds")


class Sandbox:
    """One sandbox, identified by its state dir.

    `echo` receives one line per step of `up`/`down` (the CLI prints them). A rehearsal
    Target (runbook.rehearsal.target): faults break it through the primitives at the
    end of this class, and `fault`/`heal` are runbook.rehearsal.state's.
    """

    kind = "sandbox"

    def __init__(
        self, state_dir: Path | str | None = None, *, echo: Callable[[str], None] | None = None
    ):
        self.state_dir = (
            Path(state_dir).expanduser().resolve() if state_dir is not None else default_state_dir()
        )
        self.layout = Layout(self.state_dir)
        self._echo = echo or (lambda _line: None)

    def __repr__(self) -> str:
        return f"Sandbox({str(self.state_dir)!r})"

    # ------------------------------------------------------------------ state

    @property
    def state(self) -> dict[str, Any]:
        """state.json as a dict (read afresh on every access; {} before the first up)."""
        try:
            return json.loads(self.layout.state_file.read_text())
        except FileNotFoundError:
            return {}

    def _save(self, state: dict[str, Any]) -> None:
        tmp = self.layout.state_file.with_suffix(".tmp")
        tmp.write_text(json.dumps(state, indent=2, sort_keys=True) + "\n")
        tmp.replace(self.layout.state_file)

    def _update(self, **changes: Any) -> dict[str, Any]:
        state = self.state
        state.update(changes)
        self._save(state)
        return state

    @contextlib.contextmanager
    def _locked(self) -> Iterator[None]:
        """One `up`/`down`/`fault` at a time per state dir (pytest-xdist, two shells)."""
        self.state_dir.mkdir(parents=True, exist_ok=True)
        with self.layout.lock_file.open("w") as fh:
            fcntl.flock(fh, fcntl.LOCK_EX)
            try:
                yield
            finally:
                fcntl.flock(fh, fcntl.LOCK_UN)

    def secrets(self) -> dict[str, str]:
        """The operator's secrets (secrets.env). Never print them."""
        return envfiles.read_env_file(self.layout.secrets_file)

    @property
    def admin_key(self) -> str:
        return self.secrets()["DEALIX_ADMIN_KEY"]

    # ------------------------------------------------------------------ up

    def up(self, fresh: bool = False) -> dict[str, Any]:
        """Build what is missing, start what is stopped, wait until every part answers.

        Idempotent: on a running, healthy sandbox it returns in well under a
        second. `fresh=True` stops everything and wipes the state dir first.
        Active faults are healed: `up` always leaves a healthy sandbox.
        """
        with self._locked():
            if fresh:
                self._down()
                self._wipe()
            state = self.state
            if state and state.get("layout_version") != LAYOUT_VERSION:
                raise SandboxError(
                    "state",
                    f"{self.layout.state_file} was written by another "
                    "version of the sandbox: run `runbook sandbox up --fresh`",
                )
            if state.get("ready") and self._running_and_healthy(state):
                pids = self._record_pids()
                if pids != state.get("pids"):  # restarted by hand since: keep state.json true
                    self._update(pids=pids)
                if state.get("faults"):
                    rehearsal.heal(self, lock=False)
                return self.state
            started = time.monotonic()
            state = self._bring_up(state)
            state = self._update(last_up_seconds=round(time.monotonic() - started, 2))
            if state.get("faults"):
                rehearsal.heal(self, lock=False)
            return self.state

    def _running_and_healthy(self, state: dict[str, Any]) -> bool:
        """The fast path of `up`: everything RUNNING and answering."""
        lay = self.layout
        if supervisor_state(lay.supervisor_socket) != "RUNNING":
            return False
        try:
            info = {p["name"]: p for p in self.rpc(timeout=3).supervisor.getAllProcessInfo()}
            if any(info.get(name, {}).get("statename") != "RUNNING" for name in PROGRAMS):
                return False
            if not ssh_banner(state["ssh_port"], 1).startswith("SSH-2.0-"):
                return False
            if not self._redis_ping(1):
                return False
            self.query("SELECT 1", timeout=2)
            if http_get(state["base_url"] + "/health", timeout=2)[0] != 200:
                return False
            return http_get(state["stubs_url"] + "/_stub/health", timeout=2)[0] == 200
        except Exception:
            return False

    def _new_state(self) -> dict[str, Any]:
        lay = self.layout
        root = host.is_root()
        user = "root" if root else host.current_user()
        superuser = "postgres" if root else user
        ports = host.free_ports(
            ["ssh_port", "pg_port", "redis_port", "api_port", "nginx_port", "stubs_port"]
        )
        psql = [
            str(postgres.pg_bindir() / "psql"),
            "-h",
            str(lay.pg_socket_dir),
            "-p",
            str(ports["pg_port"]),
        ]
        state: dict[str, Any] = {
            "layout_version": LAYOUT_VERSION,
            "created_at": _now(),
            "state_dir": str(lay.root),
            **ports,
            "ssh_host": "127.0.0.1",
            "ssh_user": user,
            "ssh_key": str(lay.client_key),
            "known_hosts": str(lay.known_hosts),
            "app_dir": str(lay.app_dir),
            "origin_dir": str(lay.origin_dir),
            "origin_url": str(lay.origin_dir),  # what `git remote get-url origin` shows
            "backups_dir": str(lay.backups_dir),
            "pgdata": str(lay.pgdata),
            "log_dir": str(lay.log_dir),
            "auth_log": str(lay.auth_log),
            "pg_socket_dir": str(lay.pg_socket_dir),
            "pg_superuser": superuser,
            "pg_bindir": str(postgres.pg_bindir()),
            "psql": shlex.join(postgres.as_db_superuser(psql)),
            "redis_url": f"redis://127.0.0.1:{ports['redis_port']}/0",
            "base_url": f"http://127.0.0.1:{ports['nginx_port']}",
            "stubs_url": f"http://127.0.0.1:{ports['stubs_port']}",
            "supervisorctl": supervisor.supervisorctl_prefix(lay),
            "supervisor_conf": str(lay.supervisor_conf),
            "supervisor_socket": str(lay.supervisor_socket),
            "sock_dir": str(lay.sock_dir),
            "secrets_file": str(lay.secrets_file),
            "github_repo": GITHUB_REPO,
            "backup_branch": BACKUP_BRANCH,
            "sentry_public_key": secrets.token_hex(16),
            "sentry_project_id": str(4508000000000000 + secrets.randbelow(10**12)),
            "posthog_project_id": str(10000 + secrets.randbelow(90000)),
            "programs": list(PROGRAMS),
            "faults": [],
            "built": [],
            "pids": {},
            "ready": False,
        }
        envfiles.write_env_file(
            lay.secrets_file,
            envfiles.generate_secrets(),
            header="The operator's secrets for the Dealix sandbox. Never commit.",
        )
        self._save(state)
        return state

    def _step(self, state: dict[str, Any], step: str, fn: Callable[[], Any]) -> Any:
        t0 = time.monotonic()
        result = fn()
        built = [s for s in state.get("built", []) if s != step] + [step]
        state["built"] = built
        state.setdefault("timings", {})[step] = round(time.monotonic() - t0, 2)
        self._save(state)
        self._echo(f"  {step:<10} {time.monotonic() - t0:5.1f} s")
        return result

    def _bring_up(self, state: dict[str, Any]) -> dict[str, Any]:
        lay = self.layout
        if not state:
            self._echo(f"building the sandbox in {lay.root}")
            state = self._new_state()
        else:
            self._echo(f"starting the sandbox in {lay.root}")
        if supervisor_state(lay.supervisor_socket) is None:
            # supervisord died (or was killed): clear its orphans before reusing ports.
            self._reap_orphans(state)
        built = set(state.get("built", []))
        for step in STEPS:
            if step not in built:
                for later, needs in DEPENDS.items():
                    if step in needs:
                        built.discard(later)
        state["built"] = [s for s in STEPS if s in built]
        state["ready"] = False
        self._save(state)

        if "ssh-keys" not in built:
            self._step(state, "ssh-keys", lambda: ssh.ensure_ssh_keys(lay))
        state["host_key_fingerprint"] = ssh.host_key_fingerprint(lay)
        initdb = None
        if "cluster" not in built:
            initdb = postgres.start_initdb(lay, state["pg_superuser"])
            t_initdb = time.monotonic()
        try:
            if "app-repo" not in built:
                state["origin_head"] = self._step(
                    state, "app-repo", lambda: app.build_app_repo(lay)
                )
            if "app-venv" not in built:
                self._step(state, "app-venv", lambda: app.build_app_venv(lay))
            if "app-env" not in built:
                self._step(
                    state,
                    "app-env",
                    lambda: app.write_app_env(lay, state, self.secrets(), state["origin_head"]),
                )
        finally:
            if initdb is not None:
                # Started before the app steps so that it ran alongside them.
                self._step(state, "cluster", lambda: postgres.finish_initdb(lay, initdb))
                state["timings"]["cluster"] = round(time.monotonic() - t_initdb, 2)
        # every time, so a sandbox built before the origin had it gets it too
        app.protect_origin(lay.origin_dir)

        self._write_configs(state)
        self._start_supervisord(state)
        self.wait_postgres()
        if "database" not in state["built"]:
            self._step(state, "database", lambda: self._build_database(state))
            supervisor.write_supervisor_config(state, lay, with_api=True)
            self._add_new_programs()
        else:
            # An earlier `up` may have stopped between the schema and the API.
            self._add_new_programs()
            made = seed.ensure_daily_backups(self, state)
            if made:
                self._echo(f"  backups    made {', '.join(made)}")
        self._start_all()
        self._wait_ready(state)
        if "ci-runs" not in state["built"]:
            self._step(state, "ci-runs", lambda: self._seed_ci(state))
        state = self._update(
            built=state["built"],
            timings=state.get("timings", {}),
            host_key_fingerprint=state["host_key_fingerprint"],
            origin_head=state.get("origin_head"),
        )
        return self._update(pids=self._record_pids(), ready=True, up_at=_now())

    def _write_configs(self, state: dict[str, Any]) -> None:
        lay = self.layout
        sec = self.secrets()
        ssh.write_known_hosts(lay, state["ssh_port"])
        lay.run_dir.mkdir(parents=True, exist_ok=True)
        lay.sshd_config.write_text(ssh.sshd_config_text(state, lay))
        ssh.ensure_privsep_dir()
        ssh.check_account_usable(state["ssh_user"])
        ssh.check_sshd_config(lay)
        postgres.write_pg_config(state, lay)
        redis.write_redis_config(state, lay)
        nginx.write_nginx_config(state, lay)
        stubs.write_stubs_config(state, lay, sec)
        postgres.prepare_sockets(lay)
        supervisor.write_supervisor_config(state, lay, with_api="database" in state["built"])

    def _start_supervisord(self, state: dict[str, Any]) -> None:
        lay = self.layout
        if supervisor_state(lay.supervisor_socket) == "RUNNING":
            return
        lay.supervisor_socket.unlink(missing_ok=True)
        t0 = time.monotonic()
        supervisor.start_supervisord(lay)
        wait_for(
            "supervisord",
            lambda: supervisor_state(lay.supervisor_socket) == "RUNNING",
            15,
            log=lay.supervisor_dir / "supervisord.log",
        )
        self._echo(f"  supervisord {time.monotonic() - t0:4.1f} s")

    def _add_new_programs(self) -> None:
        """Make a running supervisord pick up programs added to its config since it started."""
        rpc = self.rpc()
        added, _changed, _removed = rpc.supervisor.reloadConfig()[0]
        for name in added:
            rpc.supervisor.addProcessGroup(name)

    def _start_all(self) -> None:
        """Start every configured program that is not running (a no-op when all are)."""
        rpc = self.rpc()
        for info in rpc.supervisor.getAllProcessInfo():
            if info["statename"] in ("STOPPED", "EXITED", "FATAL", "BACKOFF"):
                with contextlib.suppress(Exception):  # raced with autostart: ALREADY_STARTED
                    rpc.supervisor.startProcess(info["name"], False)

    def _wait_ready(self, state: dict[str, Any]) -> None:
        lay = self.layout
        t0 = time.monotonic()
        self.wait_postgres()
        wait_for(
            "sshd",
            lambda: ssh_banner(state["ssh_port"]).startswith("SSH-2.0-"),
            READY_TIMEOUT,
            log=[lay.program_log("sshd"), lay.auth_log],
        )
        self.wait_redis()
        wait_for(
            "saas-stubs",
            lambda: http_get(state["stubs_url"] + "/_stub/health", timeout=2)[0] == 200,
            READY_TIMEOUT,
            log=lay.program_log("saas-stubs"),
        )
        self.wait_api()

        def all_running() -> bool:
            states = {n: p["statename"] for n, p in self.programs().items()}
            return all(states.get(name) == "RUNNING" for name in PROGRAMS)

        # Answering is not enough: supervisord says RUNNING only after startsecs.
        wait_for(
            "supervisord",
            all_running,
            READY_TIMEOUT,
            log=lay.supervisor_dir / "supervisord.log",
            what="a program is not RUNNING",
        )
        self._echo(f"  ready      {time.monotonic() - t0:5.1f} s")

    def _build_database(self, state: dict[str, Any]) -> None:
        from psycopg import sql

        env = app.read_app_env(self.layout)
        password = env["DATABASE_URL"].split("://", 1)[1].split("@", 1)[0].split(":", 1)[1]
        with self.connect("postgres") as conn:
            conn.execute("DROP DATABASE IF EXISTS dealix WITH (FORCE)")
            conn.execute("DROP ROLE IF EXISTS dealix")
            # A SCRAM verifier, not the password: no statement (and so no
            # server log line, should it fail) ever holds the plain secret.
            conn.execute(
                sql.SQL("CREATE ROLE dealix LOGIN PASSWORD {}").format(
                    sql.Literal(postgres.scram_verifier(password))
                )
            )
            conn.execute("CREATE DATABASE dealix OWNER dealix")
        host.run(
            [str(self.layout.app_venv / "bin" / "alembic"), "upgrade", "head"],
            "alembic",
            self.layout.root / "build.log",
            cwd=self.layout.app_dir,
        )
        seed.seed_and_backup(self, state)

    def _seed_ci(self, state: dict[str, Any]) -> None:
        for _ in range(3):
            self.add_ci_run("success", head_sha=state["origin_head"])

    def _record_pids(self) -> dict[str, int]:
        rpc = self.rpc()
        pids = {"supervisord": int(rpc.supervisor.getPID())}
        for info in rpc.supervisor.getAllProcessInfo():
            if info["pid"]:
                pids[info["name"]] = int(info["pid"])
        return pids

    # ------------------------------------------------------------------ down

    def down(self) -> None:
        """Stop every program and supervisord; kill whatever is left; remove pid files.

        Safe to call when nothing runs. Per-connection sshd processes (which
        outlive the listener) and anything else below supervisord are found
        by walking the process tree before the shutdown.
        """
        with self._locked():
            self._down()

    def _down(self) -> None:
        lay = self.layout
        state = self.state
        if not state:
            return
        if state.get("isolated"):
            from runbook.sandbox import isolated  # isolated mode: namespaces, sshd, fail2ban

            isolated.down(self)
            state = self.state
        t0 = time.monotonic()
        victims: dict[int, int | None] = {}
        tree = children_map()

        def collect(pid: int) -> None:
            for p in [pid, *descendants(pid, tree)]:
                st = start_time(p)
                if st is not None:
                    victims[p] = st

        if supervisor_state(lay.supervisor_socket) is not None:
            rpc = self.rpc(timeout=90)
            sup_pid = int(rpc.supervisor.getPID())
            collect(sup_pid)
            with contextlib.suppress(Exception):
                rpc.supervisor.stopAllProcesses(True)
            # Whatever the programs left behind (sshd's per-connection
            # processes are in their own sessions): stop it now, not at SIGKILL time.
            for pid, st in victims.items():
                if pid != sup_pid and alive(pid, st):
                    with contextlib.suppress(ProcessLookupError):
                        os.kill(pid, 15)
            with contextlib.suppress(Exception):
                rpc.supervisor.shutdown()
        for pid in self._known_pids(state):
            collect(pid)
        killed = reap(victims, grace=15)
        if killed:
            self._echo(f"  killed stragglers: {', '.join(map(str, killed))}")
        for pidfile in (
            lay.run_dir / "supervisord.pid",
            lay.run_dir / "sshd.pid",
            lay.run_dir / "nginx.pid",
            lay.supervisor_socket,
        ):
            pidfile.unlink(missing_ok=True)
        if lay.sock_dir.exists() and lay.sock_dir.stat().st_uid == os.geteuid():
            shutil.rmtree(lay.sock_dir, ignore_errors=True)
        self._update(ready=False, pids={}, down_at=_now())
        self._echo(f"down in {time.monotonic() - t0:.1f} s")

    def _known_pids(self, state: dict[str, Any]) -> list[int]:
        """PIDs from state.json and pid files whose process still looks like ours."""
        lay = self.layout
        pids = set(state.get("pids", {}).values())
        for pidfile in (
            lay.run_dir / "supervisord.pid",
            lay.run_dir / "sshd.pid",
            lay.run_dir / "nginx.pid",
            lay.pgdata / "postmaster.pid",
        ):
            with contextlib.suppress(OSError, ValueError, IndexError):
                pids.add(int(pidfile.read_text().split()[0]))
        markers = (str(lay.root), str(lay.sock_dir))
        out = []
        for pid in pids:
            cmd = proc_name(pid)
            # PIDs get reused: only touch processes that name our state dir.
            if alive(pid) and any(m in cmd for m in markers):
                out.append(pid)
            elif alive(pid) and pid in state.get("pids", {}).values() and self._in_tree(pid):
                out.append(pid)
        return out

    def _in_tree(self, pid: int) -> bool:
        """True if `pid` has our state dir open as its cwd (postgres, uvicorn, stubs)."""
        try:
            cwd = os.readlink(f"/proc/{pid}/cwd")
        except OSError:
            return False
        return cwd.startswith(str(self.layout.root))

    def _reap_orphans(self, state: dict[str, Any]) -> None:
        victims: dict[int, int | None] = {}
        tree = children_map()
        for pid in self._known_pids(state):
            for p in [pid, *descendants(pid, tree)]:
                victims[p] = start_time(p)
        if victims:
            self._echo(f"  stopping {len(victims)} orphaned processes of a dead supervisord")
            for pid, st in victims.items():
                if alive(pid, st):
                    with contextlib.suppress(ProcessLookupError):
                        os.kill(pid, 15)
            reap(victims, grace=10)

    def _wipe(self) -> None:
        lay = self.layout
        host.lift_armor(lay.root)
        if lay.sock_dir.exists() and lay.sock_dir.stat().st_uid == os.geteuid():
            shutil.rmtree(lay.sock_dir, ignore_errors=True)
        for child in lay.root.iterdir():
            if child == lay.lock_file:
                continue
            if child.is_dir() and not child.is_symlink():
                shutil.rmtree(child)
            else:
                child.unlink()

    # ------------------------------------------------------------------ programs

    def rpc(self, timeout: float = 30.0) -> Any:
        """XML-RPC proxy to supervisord (`.supervisor.getAllProcessInfo()` …)."""
        return supervisor_rpc(self.layout.supervisor_socket, timeout=timeout)

    def programs(self) -> dict[str, dict[str, Any]]:
        """supervisorctl status as {name: info} (statename, pid, description, …)."""
        return {p["name"]: p for p in self.rpc(timeout=5).supervisor.getAllProcessInfo()}

    def pid(self, program: str) -> int:
        """The program's PID (0 when not running)."""
        return int(self.programs()[program]["pid"])

    def pids(self) -> dict[str, int]:
        """Live PIDs: supervisord and every running program (also kept in state.json)."""
        return self._record_pids()

    def stop(self, program: str) -> None:
        """As `supervisorctl stop NAME`; waits until it has stopped."""
        info = self.programs()[program]
        if info["statename"] in ("RUNNING", "STARTING", "BACKOFF"):
            self.rpc(timeout=60).supervisor.stopProcess(program, True)
        self._update(pids=self._record_pids())

    def start(self, program: str) -> None:
        """As `supervisorctl start NAME`; waits for supervisord's RUNNING (startsecs)."""
        info = self.programs()[program]
        if info["statename"] not in ("RUNNING", "STARTING"):
            self.rpc(timeout=60).supervisor.startProcess(program, True)
        self._update(pids=self._record_pids())

    def restart(self, program: str) -> None:
        """As `supervisorctl restart NAME` (systemctl restart on production)."""
        self.stop(program)
        self.start(program)

    # ------------------------------------------------------------------ clients

    def connect(self, dbname: str = "dealix", timeout: float = 5) -> Any:
        """A psycopg connection as the database superuser over the unix socket (autocommit)."""
        import psycopg

        state = self.state
        return psycopg.connect(
            host=state["pg_socket_dir"],
            port=state["pg_port"],
            user=state["pg_superuser"],
            dbname=dbname,
            autocommit=True,
            connect_timeout=max(1, int(timeout)),
            application_name="runbook-sandbox",
        )

    def query(
        self, sql: str, params: Any = None, dbname: str = "dealix", timeout: float = 5
    ) -> list[tuple[Any, ...]]:
        """Rows of one query as the superuser: `sb.query("SELECT count(*) FROM leads")`."""
        with self.connect(dbname, timeout) as conn:
            cur = conn.execute(sql, params)
            return cur.fetchall() if cur.description else []

    def api(
        self,
        path: str,
        *,
        method: str = "GET",
        admin: bool = False,
        body: Any = None,
        timeout: float = 10,
    ) -> tuple[int, Any]:
        """(status, JSON) of one API call through nginx; `admin=True` sends X-API-Key."""
        headers = {"X-API-Key": self.admin_key} if admin else {}
        url = self.state["base_url"] + path
        if method == "GET":
            return http_get(url, headers=headers, timeout=timeout)
        return http_get(
            url, headers=headers, timeout=timeout, method=method, body={} if body is None else body
        )

    def stub_control(self, path: str, body: Any) -> Any:
        status, answer = http_post(self.state["stubs_url"] + path, body)
        if status >= 300:
            raise SandboxError("saas-stubs", f"POST {path} answered {status}: {answer}")
        return answer

    def add_ci_run(self, conclusion: str, head_sha: str | None = None) -> Any:
        """Record a completed GitHub Actions run on main (newest first in the stub's list)."""
        return self.stub_control(
            CI_RUNS_CONTROL, ci_run_body(conclusion, head_sha or self.state["origin_head"])
        )

    def ci_runs(self, per_page: int = 3) -> list[dict[str, Any]]:
        """Newest runs on main as the GitHub API lists them."""
        state = self.state
        status, body = http_get(
            f"{state['stubs_url']}/github/repos/{state['github_repo']}/actions/runs"
            f"?branch=main&per_page={per_page}",
            headers={
                "Authorization": f"Bearer {self.secrets()['GITHUB_TOKEN']}",
                "Accept": "application/vnd.github+json",
            },
        )
        if status != 200:
            raise SandboxError("saas-stubs", f"GitHub runs answered {status}")
        return list(body["workflow_runs"])

    # ------------------------------------------------------------------ waiting

    def wait_postgres(self, timeout: float = READY_TIMEOUT) -> None:
        lay = self.layout
        wait_for(
            "postgresql",
            lambda: self.query("SELECT 1", dbname="postgres", timeout=2),
            timeout,
            log=[lay.program_log("postgresql"), lay.pg_log_dir / "postgresql-15-main.log"],
        )

    def _redis_ping(self, timeout: float = 2.0) -> bool:
        """PING Redis where it listens: this machine's loopback, or (isolated
        mode) the server namespace's."""
        ns = (self.state.get("isolated") or {}).get("services_ns")
        if ns:
            from runbook.sandbox import isolated

            return isolated.redis_ping(ns, self.state["redis_port"], timeout)
        return redis_ping(self.state["redis_port"], timeout)

    def wait_redis(self, timeout: float = READY_TIMEOUT) -> None:
        lay = self.layout
        wait_for(
            "redis",
            lambda: self._redis_ping(),
            timeout,
            log=[lay.program_log("redis"), lay.log_dir / "redis" / "redis-server.log"],
        )

    def wait_api(self, timeout: float = READY_TIMEOUT) -> None:
        """Until GET /health answers 200 through nginx."""
        lay = self.layout
        base = self.state["base_url"]
        wait_for(
            "dealix-api",
            lambda: http_get(base + "/health", timeout=2)[0] == 200,
            timeout,
            log=[
                lay.program_log("dealix-api"),
                lay.program_log("nginx"),
                lay.log_dir / "nginx" / "error.log",
            ],
        )

    def wait_deep(self, part: str, status: str, timeout: float = READY_TIMEOUT) -> None:
        """Until /health/deep reports `part` (postgres, redis, llm_providers) as `status`."""

        def probe() -> bool:
            _, body = self.api("/health/deep", timeout=5)
            return isinstance(body, dict) and body.get(part, {}).get("status") == status

        wait_for(
            "dealix-api",
            probe,
            timeout,
            log=self.layout.program_log("dealix-api"),
            what=f"/health/deep {part} is not {status}",
        )

    # ------------------------------------------------------------------ status

    def status(self) -> list[dict[str, Any]]:
        """One row per component: {"name", "healthy", "detail"}; never raises."""
        rows: list[dict[str, Any]] = []
        state = self.state
        lay = self.layout

        def row(name: str, fn: Callable[[], tuple[bool, str]]) -> None:
            try:
                healthy, detail = fn()
            except Exception as exc:
                healthy, detail = False, f"{type(exc).__name__}: {exc}".splitlines()[0][:200]
            rows.append({"name": name, "healthy": healthy, "detail": detail})

        if not state:
            return [
                {
                    "name": "sandbox",
                    "healthy": False,
                    "detail": f"not built ({lay.state_file} missing): run `runbook sandbox up`",
                }
            ]

        def supervisord() -> tuple[bool, str]:
            st = supervisor_state(lay.supervisor_socket)
            if st is None:
                return False, "not running"
            return st == "RUNNING", f"{st}, pid {self.rpc(5).supervisor.getPID()}"

        row("supervisord", supervisord)

        try:
            programs = self.programs()
        except Exception:
            programs = {}
        for name in PROGRAMS:

            def prog(name: str = name) -> tuple[bool, str]:
                info = programs.get(name)
                if info is None:
                    return False, "unknown to supervisord"
                return info["statename"] == "RUNNING", f"{info['statename']} {info['description']}"

            row(f"program {name}", prog)

        row("ssh login", lambda: self._check_ssh(state))
        row("postgres", lambda: self._check_postgres())
        row("dealix db", lambda: self._check_leads())
        row(
            "redis",
            lambda: (self._redis_ping(), f"PING 127.0.0.1:{state['redis_port']}"),
        )
        row("api /health", lambda: self._check_health(state))
        row("api /health/deep", lambda: self._check_deep())
        row("api dlq", lambda: self._check_dlq())
        row("saas stubs", lambda: self._check_stubs(state))
        row("ci main", lambda: self._check_ci())
        row("backups", lambda: seed.backups_summary(lay.backups_dir))
        faults = state.get("faults", [])
        rows.append(
            {
                "name": "faults",
                "healthy": not faults,
                "detail": ", ".join(faults) if faults else "none active",
            }
        )
        return rows

    def _check_ssh(self, state: dict[str, Any]) -> tuple[bool, str]:
        import paramiko

        client = paramiko.SSHClient()
        # Only our own known_hosts: an unknown or changed host key is refused.
        client.load_host_keys(state["known_hosts"])
        client.set_missing_host_key_policy(paramiko.RejectPolicy())
        try:
            client.connect(
                state["ssh_host"],
                port=state["ssh_port"],
                username=state["ssh_user"],
                key_filename=state["ssh_key"],
                allow_agent=False,
                look_for_keys=False,
                timeout=5,
                banner_timeout=5,
                auth_timeout=5,
            )
            _, out, _ = client.exec_command("id -un", timeout=5)
            who = out.read().decode().strip()
        finally:
            client.close()
        ok = who == state["ssh_user"]
        return ok, (
            f"logged in as {who} on port {state['ssh_port']} ({state['host_key_fingerprint']})"
        )

    def _check_postgres(self) -> tuple[bool, str]:
        t0 = time.monotonic()
        self.query("SELECT 1", dbname="postgres", timeout=3)
        ms = (time.monotonic() - t0) * 1000
        return True, f"SELECT 1 as {self.state['pg_superuser']} in {ms:.0f} ms"

    def _check_leads(self) -> tuple[bool, str]:
        count, newest = self.query("SELECT count(*), max(created_at) FROM leads", timeout=3)[0]
        age = (datetime.now(UTC) - newest).total_seconds() / 3600 if newest else float("inf")
        return count > 0, f"{count} leads, newest {age:.1f} h old"

    def _check_health(self, state: dict[str, Any]) -> tuple[bool, str]:
        status, body = http_get(state["base_url"] + "/health", timeout=5)
        sha = body.get("sha", "?")[:12] if isinstance(body, dict) else "?"
        return status == 200, f"{status} via nginx, sha {sha}"

    def _check_deep(self) -> tuple[bool, str]:
        status, body = self.api("/health/deep", timeout=10)
        if not isinstance(body, dict):
            return False, f"{status} {str(body)[:100]}"
        parts = [f"{k} {v.get('status')}" for k, v in body.items() if isinstance(v, dict)]
        return status == 200 and body.get("status") == "green", f"{status}: " + ", ".join(parts)

    def _check_dlq(self) -> tuple[bool, str]:
        queues = rehearsal.dlq_depths(self)
        return not any(queues.values()), ", ".join(f"{k} {v}" for k, v in queues.items())

    def _check_stubs(self, state: dict[str, Any]) -> tuple[bool, str]:
        status, _ = http_get(state["stubs_url"] + "/_stub/health", timeout=5)
        return status == 200, f"/_stub/health {status}"

    def _check_ci(self) -> tuple[bool, str]:
        runs = self.ci_runs(3)
        if not runs:
            return False, "no CI runs on main"
        newest = runs[0]
        return (
            newest.get("conclusion") == "success",
            "newest runs on main: "
            + ", ".join(
                f"{r.get('conclusion') or r.get('status')} {r['head_sha'][:7]}" for r in runs
            ),
        )

    # ------------------------------------------------------------------ faults

    def fault(self, name: str) -> str:
        """Apply a fault by name (runbook.rehearsal.state.fault)."""
        return rehearsal.fault(self, name)

    def heal(self) -> list[str]:
        """Undo every active fault, newest first, then settle (runbook.rehearsal.state.heal)."""
        return rehearsal.heal(self)

    # ------------------------------------------------------------------ the rehearsal Target
    # The sandbox's server is this machine, run by its owner; its services are
    # supervisord programs.

    def sh(
        self, command: str, timeout: float = 120, check: bool = True
    ) -> subprocess.CompletedProcess[str]:
        """A shell command on the sandbox's server: this machine, as the sandbox's owner,
        with the clean environment (never the operator's git config)."""
        env = host.clean_env(GIT_CONFIG_NOSYSTEM="1", GIT_TERMINAL_PROMPT="0")
        env["GIT_CONFIG_GLOBAL"] = "/dev/null"
        proc = subprocess.run(
            ["sh", "-c", command],
            capture_output=True,
            text=True,
            timeout=timeout,
            env=env,
            check=False,
        )
        if check and proc.returncode != 0:
            raise SandboxError(
                "sh",
                f"`{command[:120]}` exited {proc.returncode}",
                log_tail=(proc.stdout + proc.stderr).splitlines()[-10:],
            )
        return proc

    def service_stop(self, part: str) -> None:
        self.stop(PARTS[part][0])

    def service_start(self, part: str) -> None:
        """Start `part` and wait until it answers (SELECT 1, PING, GET /health)."""
        self.start(PARTS[part][0])
        {"postgres": self.wait_postgres, "redis": self.wait_redis, "api": self.wait_api}[part]()

    def service_restart(self, part: str) -> None:
        self.service_stop(part)
        self.service_start(part)

    def sql(self, query: str, dbname: str = "dealix") -> list[tuple[Any, ...]]:
        return self.query(query, dbname=dbname, timeout=10)

    @property
    def backups_dir(self) -> PurePosixPath:
        return PurePosixPath(self.layout.backups_dir)

    @property
    def pgdata(self) -> PurePosixPath:
        return PurePosixPath(self.layout.pgdata)

    @property
    def app_dir(self) -> PurePosixPath:
        return PurePosixPath(self.state["app_dir"])

    @property
    def origin_dir(self) -> PurePosixPath:
        return PurePosixPath(self.state["origin_dir"])

    @property
    def origin_url(self) -> str:
        """The origin as the developer's clone names it (a local path)."""
        return self.state["origin_dir"]

    @property
    def scratch(self) -> PurePosixPath:
        return PurePosixPath(self.state_dir)

    @staticmethod
    def developer_git(*args: str, cwd: Path | None = None) -> str:
        """The app developer's git on this machine (a deploy fault's clone and push)."""
        return app.app_git(*args, cwd=cwd)

    def locked(self) -> contextlib.AbstractContextManager[None]:
        return self._locked()

    def ensure_up(self) -> None:
        if not self.state.get("ready"):
            raise SandboxError("sandbox", "not up: run `runbook sandbox up` first")

    def update_state(self, **changes: Any) -> None:
        self._update(**changes)

    def after_heal(self) -> None:
        # a drill may have restarted programs (rotate_secrets restarts the API):
        # record the baseline's pids as `up` would
        self._update(pids=self._record_pids())

    def logs(self, program: str, lines: int = 50) -> list[str]:
        """The last lines of a program's log (as `supervisorctl tail`)."""
        return tail(self.layout.program_log(program), lines)
