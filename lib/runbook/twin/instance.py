"""One production twin: a systemd-booted Debian 12 server plus its "internet".

`Twin(state_dir).up()` makes, for this instance only: a /24 on its own bridge
(`rbtwN`, 10.231.N.0/24: this machine .1, the server .2, the internet
container .3, an "outside" address .9 for lockdown proofs), an overlay per
container over the cached layers, a cgroup per container in both
hierarchies, a fresh ed25519 host key (pinned in state.json and
known_hosts), a client key, a test CA with the certificates for
api.dealix.me and the SaaS names, fresh secrets, and the stub server on this
machine. `down()` stops the containers (SIGTERM to nspawn = a clean
poweroff; SIGKILL only as a fallback), the stubs, unmounts, removes the
cgroups and the bridge, and deletes the instance; nothing is left.

state.json (read by parameters/twin.yaml as `${twin.KEY}`): host, ssh_key,
known_hosts, host_key, host_key_fingerprint, ca_file, ca_bundle, hosts_file,
secrets_file, outside_probe, stubs_url, ... (see `runbook twin status --json`).
"""

from __future__ import annotations

import contextlib
import fcntl
import http.client
import json
import os
import secrets
import shlex
import shutil
import signal
import socket
import ssl
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path, PurePosixPath
from typing import Any

from runbook.core.paths import project_root
from runbook.rehearsal import state as rehearsal
from runbook.rehearsal.target import PARTS
from runbook.sandbox.build.envfiles import generate_secrets, read_env_file, write_env_file
from runbook.sandbox.build.host import free_ports, git, lift_armor, write_private
from runbook.sandbox.build.stubs import stubs_config
from runbook.sandbox.layout import CI_RUNS_CONTROL, ci_run_body
from runbook.twin import build, internet
from runbook.twin.common import (
    Echo,
    TwinError,
    cgroup_dirs,
    mounted,
    mounts_under,
    nspawn_argv,
    remove_cgroups,
    require_root_and_tools,
    run,
)

SUBNET = "10.231"
READY_TIMEOUT = 90.0
STOP_TIMEOUT = 15.0
# Units the internet container does not run (it is only nginx in front of the stubs).
INTERNET_MASKED = (
    "postgresql",
    "postgresql@15-main",
    "redis-server",
    "fail2ban",
    "ssh",
    "ufw",
    "rsyslog",
    "cron",
    "e2scrub_reap",
    "apt-daily",
    "apt-daily-upgrade",
)
ALLOC_LOCK = Path("/run/dealix-runbook-twin.lock")
CLUSTER = "postgresql@15-main"


def twin_state_dir() -> Path:
    """`$RUNBOOK_TWIN_DIR`, else <project>/.twin."""
    env = os.environ.get("RUNBOOK_TWIN_DIR")
    return Path(env).expanduser().resolve() if env else project_root() / ".twin"


def _alive(pid: int | None) -> bool:
    if not pid:
        return False
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    # a zombie is not alive
    try:
        with open(f"/proc/{pid}/stat") as fh:
            return fh.read().rsplit(")", 1)[1].split()[0] != "Z"
    except OSError:
        return False


def _write(path: Path, text: str, mode: int = 0o644) -> None:
    """Write into a container's overlay: replace symlinks, never follow them."""
    path.parent.mkdir(parents=True, exist_ok=True)
    if path.is_symlink() or path.exists():
        path.unlink()
    path.write_text(text)
    path.chmod(mode)


class Twin:
    """The twin in `state_dir` (default `$RUNBOOK_TWIN_DIR` or <project>/.twin), a rehearsal
    Target (runbook.rehearsal.target): faults break it through the primitives below.
    """

    kind = "twin"

    def __init__(self, state_dir: Path | str | None = None, echo: Echo | None = None):
        self.dir = Path(state_dir).resolve() if state_dir else twin_state_dir()
        self._echo = echo or (lambda _line: None)

    def __repr__(self) -> str:
        return f"Twin({str(self.dir)!r})"

    @property
    def state_file(self) -> Path:
        return self.dir / "state.json"

    @property
    def state(self) -> dict[str, Any]:
        if not self.state_file.exists():
            raise TwinError(
                "twin",
                f"the twin is not up ({self.state_file} is missing): run `runbook twin up` as root",
            )
        return json.loads(self.state_file.read_text())

    def _save(self, state: dict[str, Any]) -> None:
        tmp = self.state_file.with_suffix(".tmp")
        tmp.write_text(json.dumps(state, indent=2, sort_keys=True) + "\n")
        tmp.replace(self.state_file)

    def secrets(self) -> dict[str, str]:
        return read_env_file(Path(self.state["secrets_file"]))

    # ------------------------------------------------------------------ up

    def up(self, fresh: bool = False) -> dict[str, Any]:
        """Build (cached) and boot the twin; idempotent: a healthy twin is left as it is."""
        require_root_and_tools()
        if self.state_file.exists():
            if not fresh and self._running():
                return self.state
            self.down()
        t0 = time.monotonic()
        layers = build.ensure_layers(self._echo)
        self._echo(f"  layers     {time.monotonic() - t0:5.1f} s")
        t1 = time.monotonic()
        self.dir.mkdir(parents=True, exist_ok=True)
        with ALLOC_LOCK.open("w") as lock:
            fcntl.flock(lock, fcntl.LOCK_EX)
            n = self._free_index()
            state = self._new_state(n, layers)
            self._save(state)
            self._make_bridge(state)
        try:
            self._prepare(state, layers)
            self._start_stubs(state)
            self._spawn(state, "internet")
            self._spawn(state, "server")
            self._save(state)
            self._wait_ready(state, t1)
            self._nightly_backup(state)
            self._seed_ci(state)
        except BaseException:
            self._save(state)
            self.down()
            raise
        state["up_seconds"] = round(time.monotonic() - t1, 2)
        self._save(state)
        return state

    def _running(self) -> bool:
        try:
            st = self.state
        except TwinError:
            return False
        return all(_alive(st.get("pids", {}).get(k)) for k in ("server", "internet", "stubs"))

    @staticmethod
    def _free_index() -> int:
        used = subprocess.run(["ip", "-o", "addr"], capture_output=True, text=True).stdout
        links = subprocess.run(["ip", "-o", "link"], capture_output=True, text=True).stdout
        for n in range(10, 250):
            if f" {SUBNET}.{n}." not in used and f"rbtw{n}:" not in links:
                return n
        raise TwinError("network", f"no free {SUBNET}.N.0/24 (10..249 all in use)")

    def _new_state(self, n: int, layers: build.Layers) -> dict[str, Any]:
        net = f"{SUBNET}.{n}"
        d = self.dir
        host, inet, outside = f"{net}.2", f"{net}.3", f"{net}.9"
        return {
            "index": n,
            "bridge": f"rbtw{n}",
            "operator_ip": f"{net}.1",
            "host": host,
            "internet_ip": inet,
            "outside_ip": outside,
            "machines": {"server": f"twin{n}", "internet": f"inet{n}"},
            "layers": {"os": layers.os_key, "app": layers.app_key},
            "ssh_key": str(d / "ssh" / "id_ed25519"),
            "known_hosts": str(d / "ssh" / "known_hosts"),
            "ca_file": str(d / "tls" / "ca.crt"),
            "ca_bundle": str(d / "tls" / "ca-bundle.pem"),
            "hosts_file": str(d / "hosts"),
            "secrets_file": str(d / "secrets.env"),
            "base_url": "https://api.dealix.me",
            # exit 0 = SSH reachable from an address other than this machine's .1
            "outside_probe": (
                f'{sys.executable} -c "import socket; s=socket.create_connection(({{host!r}}, '
                f"{{port}}), timeout=5, source_address=('{outside}', 0)); "
                "assert s.recv(4) == b'SSH-'\""
            ),
            "stubs_port": (port := free_ports(["stubs"])["stubs"]),
            "stubs_url": f"http://127.0.0.1:{port}",
            "pids": {},
            "faults": [],
            "started_at": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
        }

    def _make_bridge(self, st: dict[str, Any]) -> None:
        br = st["bridge"]
        run(["ip", "link", "add", br, "type", "bridge"], "bridge")
        run(["ip", "addr", "add", f"{st['operator_ip']}/24", "dev", br], "bridge")
        # a second address of this machine: the "outside" vantage point of scenario 6
        run(["ip", "addr", "add", f"{st['outside_ip']}/24", "dev", br], "bridge")
        run(["ip", "link", "set", br, "up"], "bridge")

    def _inst(self, which: str) -> Path:
        return self.dir / which

    def _prepare(self, st: dict[str, Any], layers: build.Layers) -> None:
        d = self.dir
        ssh = d / "ssh"
        tls = d / "tls"
        for p in (ssh, tls):
            if p.exists():
                shutil.rmtree(p)
            p.mkdir(parents=True, mode=0o700)
        # client key and this instance's own host key
        for key, comment in (
            (st["ssh_key"], "runbook-twin-operator"),
            (str(ssh / "ssh_host_ed25519_key"), ""),
        ):
            run(
                ["ssh-keygen", "-q", "-t", "ed25519", "-N", "", "-C", comment, "-f", key],
                "ssh keys",
            )
        pub = (ssh / "ssh_host_ed25519_key.pub").read_text().split()
        st["host_key"] = f"{pub[0]} {pub[1]}"
        Path(st["known_hosts"]).write_text(f"{st['host']} {st['host_key']}\n")
        fp = run(["ssh-keygen", "-lf", str(ssh / "ssh_host_ed25519_key.pub")], "ssh keys")
        st["host_key_fingerprint"] = fp.stdout.decode().split()[1]
        # the test CA, api.dealix.me's certificate, the SaaS names' certificate
        ca = internet.make_ca(tls, st["machines"]["server"])
        api = internet.make_leaf(tls, "api.dealix.me", list(internet.API_NAMES), ca)
        saas = internet.make_leaf(tls, "saas", list(internet.SAAS), ca)
        system_bundle = Path("/etc/ssl/certs/ca-certificates.crt")
        base = system_bundle.read_text() if system_bundle.exists() else ""
        Path(st["ca_bundle"]).write_text(base + ca[0].read_text())
        Path(st["hosts_file"]).write_text(
            internet.hosts_text(internet.runner_names(st["host"], st["internet_ip"]))
        )
        # secrets: the operator's file (0600) and the app's .env on the server
        sec = generate_secrets()
        st["sentry_project_id"] = "4507000000000001"
        st["sentry_public_key"] = secrets.token_hex(16)
        st["posthog_project_id"] = "10001"
        write_env_file(
            Path(st["secrets_file"]), sec, header="The operator's secrets for the production twin."
        )
        st["github_repo"] = "VoXc2/dealix"
        stubs = d / "stubs"
        stubs.mkdir(exist_ok=True)
        write_private(stubs / "config.json", json.dumps(stubs_config(st, sec), indent=2) + "\n")
        st["origin_head"] = (layers.app / "opt/dealix/.last_good_sha").read_text().strip()

        server = self._mount(st, "server", f"{layers.app}:{layers.os}")
        self._common_files(st, server, st["host"], st["machines"]["server"])
        etc = server / "etc"
        (etc / "ssh").mkdir(exist_ok=True)
        for name, mode in (("ssh_host_ed25519_key", 0o600), ("ssh_host_ed25519_key.pub", 0o644)):
            _write(etc / "ssh" / name, (ssh / name).read_text(), mode)
        (server / "root/.ssh").mkdir(parents=True, exist_ok=True, mode=0o700)
        _write(
            server / "root/.ssh/authorized_keys", Path(st["ssh_key"] + ".pub").read_text(), 0o600
        )
        _write(etc / "ssl/dealix/api.dealix.me.crt", api[0].read_text())
        _write(etc / "ssl/dealix/api.dealix.me.key", api[1].read_text(), 0o600)
        self._trust_ca(server, ca[0])
        env_path = server / "opt/dealix/.env"
        env = read_env_file(env_path)
        fresh = build.twin_app_env(
            sec,
            db_password=env["DATABASE_URL"].split(":", 2)[2].split("@")[0],
            sentry_public_key=st["sentry_public_key"],
            sentry_project_id=st["sentry_project_id"],
        )
        env.update(fresh)
        write_env_file(
            env_path,
            env,
            header=(
                "Dealix API configuration (production twin). Never edit on the server:\n"
                "changes flow through GitHub PR -> deploy script."
            ),
        )

        inet = self._mount(st, "internet", str(layers.os))
        self._common_files(st, inet, st["internet_ip"], st["machines"]["internet"])
        for unit in INTERNET_MASKED:
            link = inet / f"etc/systemd/system/{unit}.service"
            if link.is_symlink() or link.exists():
                link.unlink()
            link.symlink_to("/dev/null")
        (inet / "etc/nginx/sites-enabled/default").unlink(missing_ok=True)
        _write(
            inet / "etc/nginx/conf.d/saas.conf",
            internet.nginx_conf(f"{st['operator_ip']}:{st['stubs_port']}"),
        )
        _write(inet / "etc/ssl/saas/saas.crt", saas[0].read_text())
        _write(inet / "etc/ssl/saas/saas.key", saas[1].read_text(), 0o600)

    def _mount(self, st: dict[str, Any], which: str, lower: str) -> Path:
        inst = self._inst(which)
        if inst.exists():
            lift_armor(inst)  # the armor the runbook put on the server's files (ops.armor)
            shutil.rmtree(inst)
        for sub in ("upper", "work", "root"):
            (inst / sub).mkdir(parents=True)
        root = inst / "root"
        run(
            [
                "mount",
                "-t",
                "overlay",
                f"twin-{which}",
                "-o",
                f"lowerdir={lower},upperdir={inst / 'upper'},workdir={inst / 'work'}",
                str(root),
            ],
            f"overlay {which}",
        )
        st.setdefault("mounts", []).append(str(root))
        return root

    def _common_files(self, st: dict[str, Any], root: Path, ip: str, hostname: str) -> None:
        etc = root / "etc"
        _write(etc / "hostname", hostname + "\n")
        # No DNS in the private network: a resolver that fails at once, and every
        # name the box needs in /etc/hosts (TWIN_NOTES §1.4). api.dealix.me is the box
        # itself, as on production; the SaaS names are the internet container.
        names = {n: st["internet_ip"] for n in internet.SAAS}
        lines = [
            "127.0.0.1 localhost",
            f"127.0.1.1 {hostname}",
            "::1 localhost ip6-localhost ip6-loopback",
        ]
        if ip == st["host"]:
            lines.append("127.0.0.1 " + " ".join(internet.API_NAMES))
        lines.extend(f"{a} {n}" for n, a in names.items())
        _write(etc / "hosts", "\n".join(lines) + "\n")
        _write(etc / "resolv.conf", "nameserver 127.0.0.1\n")
        _write(
            etc / "systemd/network/10-host0.network",
            f"[Match]\nName=host0\n\n[Network]\nAddress={ip}/24\nGateway={st['operator_ip']}\n"
            "LinkLocalAddressing=no\nIPv6AcceptRA=no\n",
        )
        self._trust_ca(root, Path(st["ca_file"]))

    @staticmethod
    def _trust_ca(root: Path, ca: Path) -> None:
        """What update-ca-certificates does, without running anything in the image."""
        pem = ca.read_text()
        _write(root / "usr/local/share/ca-certificates/dealix-twin-ca.crt", pem)
        bundle = root / "etc/ssl/certs/ca-certificates.crt"
        base = bundle.read_text() if bundle.exists() else ""
        if pem not in base:
            _write(bundle, base + pem)

    def _start_stubs(self, st: dict[str, Any]) -> None:
        stubs = self.dir / "stubs"
        log = (stubs / "stubs.log").open("ab")
        proc = subprocess.Popen(
            [
                sys.executable,
                str(project_root() / "sandbox/stubs/saas.py"),
                "--host",
                "127.0.0.1",
                "--host",
                st["operator_ip"],
                "--port",
                str(st["stubs_port"]),
                "--config",
                str(stubs / "config.json"),
                "--state",
                str(stubs / "state.json"),
            ],
            stdout=log,
            stderr=subprocess.STDOUT,
            stdin=subprocess.DEVNULL,
            start_new_session=True,
            cwd="/",
        )
        st["pids"]["stubs"] = proc.pid

    def _spawn(self, st: dict[str, Any], which: str) -> None:
        name = st["machines"][which]
        root = self._inst(which) / "root"
        console = (self._inst(which) / "console.log").open("ab")
        env = {
            "PATH": "/usr/sbin:/usr/bin:/sbin:/bin",
            "SYSTEMD_NSPAWN_UNIFIED_HIERARCHY": "1",
            "LC_ALL": "C.UTF-8",
        }
        proc = subprocess.Popen(
            nspawn_argv(
                name,
                [
                    "-b",
                    "-D",
                    str(root),
                    "-M",
                    name,
                    "--register=no",
                    "--keep-unit",
                    "--resolv-conf=off",
                    "--timezone=off",
                    f"--network-bridge={st['bridge']}",
                    "--console=read-only",
                ],
            ),
            stdout=console,
            stderr=subprocess.STDOUT,
            stdin=subprocess.DEVNULL,
            start_new_session=True,
            env=env,
            cwd="/",
        )
        st["pids"][which] = proc.pid
        st.setdefault("cgroups", []).extend(str(p) for p in cgroup_dirs(name))

    # ------------------------------------------------------------------ waiting

    def ssh_options(self, st: dict[str, Any] | None = None) -> list[str]:
        """The operator's key and the pinned host key, as `ssh` options (never a prompt)."""
        st = st or self.state
        return [
            "-i",
            st["ssh_key"],
            "-o",
            "BatchMode=yes",
            "-o",
            "StrictHostKeyChecking=yes",
            "-o",
            f"UserKnownHostsFile={st['known_hosts']}",
        ]

    def ssh_argv(self, command: str, st: dict[str, Any] | None = None) -> list[str]:
        st = st or self.state
        return [
            "ssh",
            "-q",
            *self.ssh_options(st),
            "-o",
            "ConnectTimeout=5",
            f"root@{st['host']}",
            command,
        ]

    def ssh(
        self,
        command: str,
        timeout: float = 120,
        check: bool = True,
        st: dict[str, Any] | None = None,
    ) -> subprocess.CompletedProcess[str]:
        """Run a shell command on the twin as root (pinned host key)."""
        proc = subprocess.run(
            self.ssh_argv(command, st), capture_output=True, text=True, timeout=timeout, check=False
        )
        if check and proc.returncode != 0:
            raise TwinError(
                "ssh",
                f"`{command[:120]}` exited {proc.returncode}",
                log_tail=(proc.stdout + proc.stderr).splitlines()[-10:],
            )
        return proc

    def https_get(
        self,
        path: str,
        name: str = "api.dealix.me",
        ip: str | None = None,
        timeout: float = 5,
        st: dict[str, Any] | None = None,
    ) -> tuple[int, bytes]:
        """GET https://<name><path> at `ip` (default: where the runner resolves the name),
        verified against the twin's CA; the machine's own resolver is never used."""
        st = st or self.state
        ip = ip or internet.runner_names(st["host"], st["internet_ip"])[name]
        ctx = ssl.create_default_context(cafile=st["ca_file"])
        sock = socket.create_connection((ip, 443), timeout=timeout)
        tls = ctx.wrap_socket(sock, server_hostname=name)
        conn = http.client.HTTPSConnection(name, timeout=timeout)
        conn.sock = tls
        try:
            conn.request("GET", path, headers={"Host": name})
            resp = conn.getresponse()
            return resp.status, resp.read()
        finally:
            conn.close()

    def _wait_ready(self, st: dict[str, Any], t0: float) -> None:
        deadline = time.monotonic() + READY_TIMEOUT
        marks: dict[str, float] = {}
        last = ""
        while time.monotonic() < deadline:
            for which in ("server", "internet", "stubs"):
                if not _alive(st["pids"].get(which)):
                    raise TwinError(
                        which,
                        f"exited during boot (see {self._log_of(which)})",
                        log_tail=self._tail(which),
                    )
            if "ssh" not in marks:
                if self.ssh("true", timeout=10, check=False, st=st).returncode == 0:
                    marks["ssh"] = time.monotonic() - t0
            if "internet" not in marks:
                try:
                    code, _ = self.https_get("/api/v2/status.json", "status.anthropic.com", st=st)
                    if code == 200:
                        marks["internet"] = time.monotonic() - t0
                except OSError as exc:
                    last = f"internet: {exc}"
            if "ssh" in marks and "https" not in marks:
                try:
                    code, body = self.https_get("/health/deep", st=st)
                    last = f"/health/deep answered {code}: {body[:200]!r}"
                    if code == 200 and json.loads(body).get("status") == "green":
                        marks["https"] = time.monotonic() - t0
                except (OSError, ValueError) as exc:
                    last = f"/health/deep: {exc}"
            if len(marks) == 3:
                st["ready"] = {k: round(v, 2) for k, v in marks.items()}
                self._echo("  ready      " + ", ".join(f"{k} {v:.1f} s" for k, v in marks.items()))
                return
            time.sleep(0.2)
        raise TwinError(
            "boot",
            f"not ready after {READY_TIMEOUT:.0f} s ({sorted(marks)} ready; last: {last})",
            log_tail=self._tail("server"),
        )

    def _log_of(self, which: str) -> Path:
        return (
            self.dir / "stubs/stubs.log" if which == "stubs" else self._inst(which) / "console.log"
        )

    def _tail(self, which: str, n: int = 15) -> list[str]:
        try:
            return self._log_of(which).read_text(errors="replace").splitlines()[-n:]
        except OSError:
            return []

    def _nightly_backup(self, st: dict[str, Any]) -> None:
        """Today's `pg_dump | gzip`, as the nightly job would have made it (the cached
        layer's dumps are from its build day)."""
        self.ssh(
            "cd / && f=/var/backups/postgres/dealix-$(date -u +%F).sql.gz; "
            '[ -e "$f" ] || { sudo -n -u postgres pg_dump dealix | gzip -6 > "$f.part" '
            '&& chown postgres:postgres "$f.part" && mv "$f.part" "$f"; }',
            st=st,
        )

    def _seed_ci(self, st: dict[str, Any]) -> None:
        for _ in range(3):
            internet.stub_control(
                st["stubs_url"],
                "/_stub/github/runs",
                {
                    "head_sha": st["origin_head"],
                    "conclusion": "success",
                    "status": "completed",
                    "name": "CI",
                    "branch": "main",
                },
            )

    # ------------------------------------------------------------------ down

    def down(self) -> dict[str, Any]:
        """Stop and remove everything of this instance. Returns what was stopped."""
        if not self.state_file.exists():
            return {}
        st = json.loads(self.state_file.read_text())
        done: dict[str, Any] = {"stopped": {}}
        for which in ("server", "internet"):
            pid = st.get("pids", {}).get(which)
            if _alive(pid):
                done["stopped"][which] = self._stop(pid, which)
        pid = st.get("pids", {}).get("stubs")
        if _alive(pid):
            done["stopped"]["stubs"] = self._stop(pid, "stubs")
        for which in ("server", "internet"):
            root = self._inst(which) / "root"
            for m in reversed(mounts_under(self._inst(which))):
                subprocess.run(["umount", m], capture_output=True, check=False)
                if mounted(Path(m)):
                    subprocess.run(["umount", "-l", m], capture_output=True, check=False)
            if mounted(root):
                raise TwinError("down", f"{root} is still mounted")
        left: list[str] = []
        for name in st.get("machines", {}).values():
            left += remove_cgroups(name)
        br = st.get("bridge")
        if br and Path(f"/sys/class/net/{br}").exists():
            run(["ip", "link", "del", br], "bridge")
        for name in st.get("machines", {}).values():
            veth = f"vb-{name}"
            if Path(f"/sys/class/net/{veth}").exists():
                subprocess.run(["ip", "link", "del", veth], capture_output=True, check=False)
        if left:
            raise TwinError("down", f"cgroups still in use: {', '.join(left)}")
        for which in ("server", "internet"):
            if self._inst(which).exists():
                lift_armor(self._inst(which))  # the server's armor (runbook.ops.armor)
                shutil.rmtree(self._inst(which))
        self.state_file.unlink(missing_ok=True)
        return done

    def _stop(self, pid: int, which: str) -> str:
        """SIGTERM (nspawn turns it into a clean poweroff), wait, SIGKILL as the fallback."""
        t0 = time.monotonic()
        os.kill(pid, signal.SIGTERM)
        while time.monotonic() - t0 < STOP_TIMEOUT:
            if not _alive(pid):
                return f"SIGTERM, {time.monotonic() - t0:.1f} s"
            time.sleep(0.1)
        try:
            os.killpg(pid, signal.SIGKILL)
        except ProcessLookupError:
            pass
        while _alive(pid) and time.monotonic() - t0 < STOP_TIMEOUT + 5:
            time.sleep(0.1)
        if _alive(pid):
            raise TwinError("down", f"{which} (pid {pid}) survived SIGKILL")
        return f"SIGKILL after {STOP_TIMEOUT:.0f} s"

    # ------------------------------------------------------------------ status

    def status(self) -> list[dict[str, Any]]:
        """Every component, healthy or not (never raises for an unhealthy twin)."""
        if not self.state_file.exists():
            return [
                {
                    "name": "twin",
                    "healthy": False,
                    "detail": f"not up ({self.state_file} missing): runbook twin up",
                }
            ]
        st = self.state
        rows: list[dict[str, Any]] = []

        def row(name: str, healthy: bool, detail: str) -> None:
            rows.append({"name": name, "healthy": healthy, "detail": detail})

        for which in ("server", "internet", "stubs"):
            pid = st["pids"].get(which)
            row(which, _alive(pid), f"pid {pid}" + ("" if _alive(pid) else " (not running)"))
        if not _alive(st["pids"].get("server")):
            return rows
        probe = self.ssh(
            "systemctl is-system-running; systemctl is-active postgresql@15-main "
            "redis-server nginx fail2ban ufw ssh rsyslog dealix-api | paste -sd' '; "
            "ls -l --time-style=+%F /var/backups/postgres | tail -n +2 | wc -l; "
            "stat -c '%s %n' $(ls -t /var/backups/postgres/dealix-*.sql.gz | head -1)",
            check=False,
            timeout=30,
        )
        lines = probe.stdout.splitlines()
        row(
            "ssh",
            probe.returncode == 0 or len(lines) >= 2,
            f"root@{st['host']} pinned {st['host_key_fingerprint']}"
            if lines
            else (probe.stderr.strip() or f"exit {probe.returncode}"),
        )
        if len(lines) >= 4:
            row("systemd", lines[0] == "running", lines[0])
            units = lines[1].split()
            row(
                "units",
                all(u == "active" for u in units),
                "postgresql@15-main redis-server nginx fail2ban ufw ssh rsyslog dealix-api: "
                + " ".join(units),
            )
            size, newest = lines[3].split(maxsplit=1)
            row(
                "backups",
                int(size) >= 1_048_576,
                f"{lines[2]} files, newest {Path(newest).name} ({int(size) / 2**20:.1f} MiB)",
            )
        try:
            code, body = self.https_get("/health/deep")
            deep = json.loads(body).get("status") if body else None
            row(
                "https",
                code == 200 and deep == "green",
                f"https://api.dealix.me/health/deep {code} {deep} (test CA verified)",
            )
        except (OSError, ValueError) as exc:
            row("https", False, f"https://api.dealix.me/health/deep: {exc}")
        try:
            code, _ = self.https_get("/api/v2/summary.json", "status.anthropic.com")
            row(
                "internet",
                code == 200,
                f"https://status.anthropic.com {code} (and "
                f"{len(internet.SAAS) - 1} other names) at {st['internet_ip']}",
            )
        except OSError as exc:
            row("internet", False, f"https://status.anthropic.com: {exc}")
        row("faults", True, ", ".join(st.get("faults", [])) or "none active")
        return rows

    # ------------------------------------------------------------------ faults

    def fault(self, name: str) -> str:
        """Apply a fault by name (runbook.rehearsal.state.fault)."""
        return rehearsal.fault(self, name)

    def heal(self) -> list[str]:
        """Undo every active fault, newest first, then settle (runbook.rehearsal.state.heal)."""
        return rehearsal.heal(self)

    # ------------------------------------------------------------------ the rehearsal Target
    # The twin's server is reached over SSH as root (pinned host key); its services are
    # systemd units; the SaaS are the stubs behind the internet container.

    def sh(
        self, command: str, timeout: float = 120, check: bool = True
    ) -> subprocess.CompletedProcess[str]:
        return self.ssh(command, timeout=timeout, check=check)

    def wait_sh(self, what: str, probe: str, timeout: float = 60) -> str:
        """Poll a shell probe on the server until it exits 0; its output."""
        deadline = time.monotonic() + timeout
        last = ""
        while time.monotonic() < deadline:
            r = self.ssh(probe, check=False, timeout=30)
            if r.returncode == 0:
                return r.stdout
            last = (r.stdout + r.stderr).strip()[-300:]
            time.sleep(0.5)
        raise TwinError("fault", f"{what}: not reached within {timeout:.0f} s (last: {last})")

    def service_stop(self, part: str) -> None:
        self.ssh(f"systemctl stop {PARTS[part][1]}", timeout=180)

    def service_start(self, part: str) -> None:
        """Start `part` (after a failure too) and wait until it answers."""
        unit = PARTS[part][1]
        if part == "postgres":
            # the cluster itself: after a SIGKILL the wrapper postgresql.service still
            # says active, and starting only the wrapper would start nothing
            self.ssh(
                f"systemctl reset-failed {CLUSTER} 2>/dev/null; systemctl start {CLUSTER} {unit}",
                timeout=180,
            )
        else:
            self.ssh(f"systemctl reset-failed {unit} 2>/dev/null; systemctl start {unit}")
        probe = {
            "postgres": "cd / && sudo -n -u postgres psql -XAtq -d postgres -c 'SELECT 1'",
            "redis": "redis-cli ping | grep -q PONG",
            "api": "curl -sf http://127.0.0.1:8001/health >/dev/null",
        }[part]
        self.wait_sh(f"{unit} answers", probe)

    def service_restart(self, part: str) -> None:
        self.ssh(f"systemctl restart {PARTS[part][1]}", timeout=180)
        self.service_start(part)

    def sql(self, query: str, dbname: str = "dealix") -> list[tuple[Any, ...]]:
        """Rows as the postgres superuser on the server (psql, fields split on \\x1f)."""
        out = self.ssh(
            f"cd / && sudo -n -u postgres psql -XAtq -v ON_ERROR_STOP=1 -F \"$(printf '\\037')\" "
            f"-d {shlex.quote(dbname)} -c {shlex.quote(query)}"
        ).stdout
        return [tuple(line.split("\x1f")) for line in out.splitlines() if line]

    backups_dir = PurePosixPath("/var/backups/postgres")
    pgdata = PurePosixPath("/var/lib/postgresql/15/main")
    app_dir = PurePosixPath("/opt/dealix")
    # https://github.com/VoXc2/dealix.git is rewritten to it on the server
    origin_dir = PurePosixPath("/srv/git/dealix.git")
    scratch = PurePosixPath("/var/tmp/runbook-fault")

    @property
    def origin_url(self) -> str:
        """The origin as the developer's clone on this machine reaches it (SSH)."""
        return f"root@{self.state['host']}:{self.origin_dir}"

    def developer_git(self, *args: str, cwd: Path | None = None) -> str:
        """The app developer's git on this machine, reaching the origin over SSH."""
        env = {
            "PATH": "/usr/local/bin:/usr/bin:/bin",
            "HOME": str(self.dir),
            "GIT_SSH_COMMAND": shlex.join(["ssh", *self.ssh_options()]),
            "GIT_AUTHOR_NAME": "Dealix developer",
            "GIT_AUTHOR_EMAIL": "dev@dealix.me",
            "GIT_COMMITTER_NAME": "GitHub",
            "GIT_COMMITTER_EMAIL": "noreply@github.com",
            "GIT_CONFIG_NOSYSTEM": "1",
            "LC_ALL": "C.UTF-8",
        }
        return git(*args, env=env, cwd=cwd, error=TwinError)

    def api(
        self,
        path: str,
        *,
        method: str = "GET",
        admin: bool = False,
        timeout: float = 10,
    ) -> tuple[int, Any]:
        """(status, JSON or text) of one API call made on the server itself, as an
        operator there would (curl to the API's loopback port). `admin=True` sends the
        app's ADMIN_KEY, read from its .env on the server: never on a command line here."""
        key = (
            "key=$(sed -n 's/^ADMIN_KEY=//p' /opt/dealix/.env | tr -d \"\\\"'\"); "
            if admin
            else "key=; "
        )
        out = self.ssh(
            key + f"curl -s -m {int(timeout)} -X {shlex.quote(method)} "
            '-H "X-API-Key: $key" -w "\\n%{http_code}" '
            + shlex.quote(f"http://127.0.0.1:8001{path}"),
            timeout=timeout + 30,
            check=False,
        ).stdout
        body, _, code = out.rpartition("\n")
        try:
            return int(code), json.loads(body)
        except ValueError:
            return int(code) if code.isdigit() else 0, body

    def wait_deep(self, part: str, status: str, timeout: float = 60) -> None:
        # On the box itself, as production's `curl https://api.dealix.me/health/deep | jq`.
        self.wait_sh(
            f"deep health {part} {status}",
            "curl -s https://api.dealix.me/health/deep | jq -e "
            + shlex.quote(f'.{part}.status == "{status}"'),
            timeout,
        )

    def stub_control(self, path: str, body: Any) -> Any:
        return internet.stub_control(self.state["stubs_url"], path, body)

    def add_ci_run(self, conclusion: str, head_sha: str | None = None) -> Any:
        """A completed GitHub Actions run on main, for `head_sha` (default: the origin's main)."""
        head = (
            head_sha
            or self.ssh(f"git --git-dir={self.origin_dir} rev-parse refs/heads/main").stdout.strip()
        )
        return self.stub_control(CI_RUNS_CONTROL, ci_run_body(conclusion, head))

    @contextlib.contextmanager
    def locked(self) -> Iterator[None]:
        """One fault or heal at a time per twin."""
        with (self.dir / "faults.lock").open("w") as fh:
            fcntl.flock(fh, fcntl.LOCK_EX)
            try:
                yield
            finally:
                fcntl.flock(fh, fcntl.LOCK_UN)

    def ensure_up(self) -> None:
        self.state  # noqa: B018 - raises, naming the fix, when the twin is not up

    def update_state(self, **changes: Any) -> None:
        st = self.state
        st.update(changes)
        self._save(st)

    def after_heal(self) -> None:
        return None

    # ------------------------------------------------------------------ runner side

    def exec_argv(self, command: list[str]) -> tuple[list[str], dict[str, str]]:
        """argv and environment that run `command` with the twin's names and CA.

        A private mount namespace (`unshare --mount`) in which the twin's hosts
        file is bind-mounted over /etc/hosts: api.dealix.me -> the twin, the SaaS
        names -> the internet container. The machine's /etc/hosts is never
        written, and no other process sees the mapping. SSL_CERT_FILE (httpx,
        OpenSSL) and CURL_CA_BUNDLE name the system bundle plus the twin's test CA;
        RUNBOOK_TWIN_DIR lets `${twin.KEY}` in parameters/twin.yaml find this twin.
        """
        st = self.state
        env = dict(os.environ)
        env.update(
            {
                "SSL_CERT_FILE": st["ca_bundle"],
                "CURL_CA_BUNDLE": st["ca_bundle"],
                "REQUESTS_CA_BUNDLE": st["ca_bundle"],
                "RUNBOOK_TWIN_DIR": str(self.dir),
            }
        )
        argv = [
            "unshare",
            "--mount",
            "--propagation",
            "private",
            "--",
            "sh",
            "-c",
            'mount --bind "$0" /etc/hosts && exec "$@"',
            st["hosts_file"],
            *command,
        ]
        return argv, env
