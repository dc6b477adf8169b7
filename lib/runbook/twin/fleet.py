"""The fleet twin: production-fleet.yaml's hosts as systemd-booted Debian 12 machines.

`Fleet(state_dir).up()` boots one machine per host of the example fleet profile
(parameters/production-fleet.yaml: an nginx load balancer, two API servers, a
database server with Redis beside PostgreSQL), plus the single twin's "internet"
container and SaaS stubs, all on one bridge (`rbtwN`, 10.231.N.0/24: this machine
.1, the internet .3, an "outside" address .9, the hosts from .10 on in the
profile's order). The machines reuse the single twin's cached layers
(runbook.twin.build): API and database servers are overlays over the app layer,
the load balancer over the OS layer; what each host does not serve is masked.

- lb: nginx terminates TLS for api.dealix.me and proxies to every API server
  (an `upstream` block, re-encrypted and verified against the twin's CA); each
  answer names the API server that gave it (`X-Dealix-Upstream`), so a test
  sees the balancing.
- api: the Dealix app behind its own nginx, as on the single server, with
  DATABASE_URL and REDIS_URL naming the database server.
- db (and redis): PostgreSQL listening on the bridge, pg_hba and ufw open to the
  API servers only; Redis bound to the bridge; the nightly backups.

Every host gets its own ed25519 host key (pinned: state.json and known_hosts);
one client key reaches them all. state.json has flat keys for the profile
(`${twin_fleet.api1_address}`, `${twin_fleet.api1_host_key}`, `ssh_key`,
`secrets_file`), which parameters/twin-fleet.yaml reads. `down()` leaves nothing:
machines, stubs, mounts, cgroups, veths and the bridge go.

Example::

    >>> roles_of(("db", "redis"))
    ('app', ('nginx', 'dealix-api'))
    >>> roles_of(("lb",))
    ('os', ('postgresql', 'postgresql@15-main', 'redis-server'))
"""

from __future__ import annotations

import fcntl
import http.client
import json
import os
import shutil
import signal
import socket
import ssl
import subprocess
import time
from pathlib import Path
from typing import Any

from runbook.core.inventory import Fleet as InventoryFleet
from runbook.core.paths import project_root
from runbook.core.profile import load_profile
from runbook.sandbox.build.envfiles import generate_secrets, read_env_file, write_env_file
from runbook.sandbox.build.host import lift_armor, write_private
from runbook.sandbox.build.stubs import stubs_config
from runbook.twin import build, internet
from runbook.twin.common import (
    Echo,
    TwinError,
    mounted,
    mounts_under,
    remove_cgroups,
    require_root_and_tools,
    run,
)
from runbook.twin.instance import (
    ALLOC_LOCK,
    INTERNET_MASKED,
    READY_TIMEOUT,
    STOP_TIMEOUT,
    SUBNET,
    Twin,
    _alive,
    _write,
)

EXAMPLE = "production-fleet"
FIRST_HOST = 10
# each service's units, and the group that runs it
_UNITS = {
    "postgres": (("postgresql", "postgresql@15-main"), "db"),
    "redis": (("redis-server",), "redis"),
    "nginx": (("nginx",), ("lb", "api")),
    "api": (("dealix-api",), "api"),
}
# what `status` checks is active on a host, by group
_CHECKED = (
    ("db", "postgresql@15-main"),
    ("redis", "redis-server"),
    ("lb", "nginx"),
    ("api", "nginx"),
    ("api", "dealix-api"),
)
UPSTREAM_HEADER = "X-Dealix-Upstream"


def fleet_state_dir() -> Path:
    """`$RUNBOOK_TWIN_FLEET_DIR`, else <project>/.twin-fleet."""
    env = os.environ.get("RUNBOOK_TWIN_FLEET_DIR")
    return Path(env).expanduser().resolve() if env else project_root() / ".twin-fleet"


def roles_of(groups: tuple[str, ...]) -> tuple[str, tuple[str, ...]]:
    """The layer a host with these groups boots from, and the units it masks."""
    layer = "app" if {"api", "db"} & set(groups) else "os"
    masked: list[str] = []
    for units, runs_on in _UNITS.values():
        wanted = (runs_on,) if isinstance(runs_on, str) else runs_on
        if not set(wanted) & set(groups) and (layer == "app" or units != ("dealix-api",)):
            masked.extend(units)
    return layer, tuple(masked)


def lb_nginx_conf(api_addresses: list[str]) -> str:
    """nginx on the load balancer: api.dealix.me on 443 -> every API server's nginx."""
    servers = "".join(f"    server {a}:443;\n" for a in api_addresses)
    return f"""# Written by `runbook twin up --fleet`: the load balancer in front of the API servers.
upstream dealix_api {{
{servers}    keepalive 16;
}}

server {{
    listen 80;
    server_name api.dealix.me dealix.me;
    return 301 https://$host$request_uri;
}}

server {{
    listen 443 ssl;
    server_name api.dealix.me;
    ssl_certificate /etc/ssl/dealix/api.dealix.me.crt;
    ssl_certificate_key /etc/ssl/dealix/api.dealix.me.key;

    location / {{
        proxy_pass https://dealix_api;
        proxy_http_version 1.1;
        proxy_set_header Connection "";
        proxy_set_header Host $host;
        proxy_set_header X-Real-IP $remote_addr;
        proxy_set_header X-Forwarded-For $proxy_add_x_forwarded_for;
        proxy_set_header X-Forwarded-Proto $scheme;
        proxy_ssl_server_name on;
        proxy_ssl_name api.dealix.me;
        proxy_ssl_verify on;
        proxy_ssl_trusted_certificate /etc/ssl/certs/ca-certificates.crt;
        proxy_read_timeout 60s;
        # the twin's tests see which API server answered
        add_header {UPSTREAM_HEADER} $upstream_addr always;
    }}
}}
"""


def ufw_allow(rules: str, port: int, sources: list[str]) -> str:
    """ufw's user.rules with `allow from SOURCE to any port PORT proto tcp` for each
    source, as `ufw allow` writes them (applied at boot, before any API server asks).

    >>> print(ufw_allow("### RULES ###\\n### END RULES ###\\n", 5432, ["10.0.0.11"]), end="")
    ### RULES ###
    ### tuple ### allow tcp 5432 0.0.0.0/0 any 10.0.0.11 in
    -A ufw-user-input -p tcp --dport 5432 -s 10.0.0.11 -j ACCEPT
    <BLANKLINE>
    ### END RULES ###
    """
    added = "".join(
        f"### tuple ### allow tcp {port} 0.0.0.0/0 any {s} in\n"
        f"-A ufw-user-input -p tcp --dport {port} -s {s} -j ACCEPT\n\n"
        for s in sources
    )
    if "### END RULES ###" not in rules:
        raise TwinError("ufw", "the app layer's /etc/ufw/user.rules has no '### END RULES ###'")
    return rules.replace("### END RULES ###", added + "### END RULES ###", 1)


class Fleet(Twin):
    """The fleet twin in `state_dir` (default `$RUNBOOK_TWIN_FLEET_DIR` or <project>/.twin-fleet)."""

    def __init__(self, state_dir: Path | str | None = None, echo: Echo | None = None):
        super().__init__(state_dir or fleet_state_dir(), echo)

    def __repr__(self) -> str:
        return f"Fleet({str(self.dir)!r})"

    @property
    def state(self) -> dict[str, Any]:
        if not self.state_file.exists():
            raise TwinError(
                "fleet",
                f"the fleet twin is not up ({self.state_file} is missing): run "
                "`runbook twin up --fleet` as root",
            )
        return json.loads(self.state_file.read_text())

    @staticmethod
    def inventory() -> InventoryFleet:
        """The hosts to boot: the example fleet profile's, in its groups."""
        return load_profile(EXAMPLE).require_groups("lb", "api", "db", scenario="the fleet twin")

    # ------------------------------------------------------------------ up

    def up(self, fresh: bool = False) -> dict[str, Any]:
        """Build (cached) and boot the fleet; idempotent: a healthy fleet is left as it is."""
        require_root_and_tools()
        if self.state_file.exists():
            if not fresh and self._running():
                return self.state
            self.down()
        inv = self.inventory()
        t0 = time.monotonic()
        layers = build.ensure_layers(self._echo)
        self._echo(f"  layers     {time.monotonic() - t0:5.1f} s")
        t1 = time.monotonic()
        self.dir.mkdir(parents=True, exist_ok=True)
        with ALLOC_LOCK.open("w") as lock:
            fcntl.flock(lock, fcntl.LOCK_EX)
            n = self._free_index()
            state = self._new_fleet_state(n, layers, inv)
            self._save(state)
            self._make_bridge(state)
        try:
            self._prepare_fleet(state, layers)
            self._start_stubs(state)
            for which in state["machines"]:
                self._spawn(state, which)
            self._save(state)
            self._wait_fleet(state, t1)
            self._nightly_backup(self._on(state, state["db_host"]))
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
        return all(_alive(st.get("pids", {}).get(k)) for k in (*st["machines"], "stubs"))

    def _new_fleet_state(self, n: int, layers: build.Layers, inv: InventoryFleet) -> dict[str, Any]:
        net = f"{SUBNET}.{n}"
        st = self._new_state(n, layers)  # the single twin's keys: bridge, CA, stubs, ...
        hosts: dict[str, dict[str, Any]] = {}
        for i, (name, h) in enumerate(inv.hosts.items()):
            hosts[name] = {
                "address": f"{net}.{FIRST_HOST + i}",
                "groups": list(h.groups),
                # nspawn names the host's veth vb-<machine>: 15 characters at most
                "machine": f"fl{n}-{name}" if len(f"fl{n}-{name}") <= 12 else f"fl{n}-h{i}",
            }
        lb = inv.names("lb")[0]
        st.update(
            {
                "kind": "fleet",
                "hosts": hosts,
                "machines": {"internet": f"inet{n}", **{k: v["machine"] for k, v in hosts.items()}},
                # api.dealix.me resolves to the load balancer on the runner side
                "host": hosts[lb]["address"],
                "lb_host": lb,
                "api_hosts": inv.names("api"),
                "db_host": inv.names("db")[0],
                "redis_host": (inv.names("redis") or inv.names("db"))[0],
            }
        )
        for name, spec in hosts.items():
            st[f"{name}_address"] = spec["address"]
        return st

    def _on(self, st: dict[str, Any], name: str) -> dict[str, Any]:
        """`st` as the single twin's methods read it, with host `name` as "the server"."""
        return {**st, "host": st["hosts"][name]["address"]}

    def _prepare_fleet(self, st: dict[str, Any], layers: build.Layers) -> None:
        d = self.dir
        ssh, tls = d / "ssh", d / "tls"
        for p in (ssh, tls):
            if p.exists():
                shutil.rmtree(p)
            p.mkdir(parents=True, mode=0o700)
        run(
            [
                *(
                    "ssh-keygen",
                    "-q",
                    "-t",
                    "ed25519",
                    "-N",
                    "",
                    "-C",
                    "runbook-twin-fleet-operator",
                ),
                *("-f", st["ssh_key"]),
            ],
            "ssh keys",
        )
        known = []
        for name, h in st["hosts"].items():
            key = ssh / f"{name}_host_ed25519_key"
            run(["ssh-keygen", "-q", "-t", "ed25519", "-N", "", "-C", "", "-f", str(key)], "keys")
            pub = Path(f"{key}.pub").read_text().split()
            h["host_key"] = st[f"{name}_host_key"] = f"{pub[0]} {pub[1]}"
            fp = run(["ssh-keygen", "-lf", f"{key}.pub"], "ssh keys")
            h["host_key_fingerprint"] = fp.stdout.decode().split()[1]
            known.append(f"{h['address']} {h['host_key']}\n")
        Path(st["known_hosts"]).write_text("".join(known))
        ca = internet.make_ca(tls, f"fleet {st['index']}")
        api = internet.make_leaf(tls, "api.dealix.me", list(internet.API_NAMES), ca)
        saas = internet.make_leaf(tls, "saas", list(internet.SAAS), ca)
        system_bundle = Path("/etc/ssl/certs/ca-certificates.crt")
        base = system_bundle.read_text() if system_bundle.exists() else ""
        Path(st["ca_bundle"]).write_text(base + ca[0].read_text())
        Path(st["hosts_file"]).write_text(
            internet.hosts_text(internet.runner_names(st["host"], st["internet_ip"]))
        )
        sec = generate_secrets()
        st["sentry_project_id"] = "4507000000000001"
        st["sentry_public_key"] = os.urandom(16).hex()
        st["posthog_project_id"] = "10001"
        write_env_file(
            Path(st["secrets_file"]), sec, header="The operator's secrets for the fleet twin."
        )
        st["github_repo"] = "VoXc2/dealix"
        (d / "stubs").mkdir(exist_ok=True)
        write_private(d / "stubs/config.json", json.dumps(stubs_config(st, sec), indent=2) + "\n")
        st["origin_head"] = (layers.app / "opt/dealix/.last_good_sha").read_text().strip()

        db_ip = st["hosts"][st["db_host"]]["address"]
        redis_ip = st["hosts"][st["redis_host"]]["address"]
        api_ips = [st["hosts"][a]["address"] for a in st["api_hosts"]]
        db_password = read_env_file(layers.app / "opt/dealix/.env")["DATABASE_URL"]
        db_password = db_password.split(":", 2)[2].split("@")[0]
        for name, h in st["hosts"].items():
            layer, masked = roles_of(tuple(h["groups"]))
            lower = f"{layers.app}:{layers.os}" if layer == "app" else str(layers.os)
            root = self._mount(st, name, lower)
            self._host_files(st, root, name)
            self._mask(root, masked)
            etc = root / "etc"
            (etc / "ssh").mkdir(exist_ok=True)
            key = ssh / f"{name}_host_ed25519_key"
            _write(etc / "ssh/ssh_host_ed25519_key", key.read_text(), 0o600)
            _write(etc / "ssh/ssh_host_ed25519_key.pub", Path(f"{key}.pub").read_text())
            (root / "root/.ssh").mkdir(parents=True, exist_ok=True, mode=0o700)
            _write(
                root / "root/.ssh/authorized_keys", Path(st["ssh_key"] + ".pub").read_text(), 0o600
            )
            groups = set(h["groups"])
            if groups & {"lb", "api"}:
                _write(etc / "ssl/dealix/api.dealix.me.crt", api[0].read_text())
                _write(etc / "ssl/dealix/api.dealix.me.key", api[1].read_text(), 0o600)
            if "lb" in groups:
                (etc / "nginx/sites-enabled/default").unlink(missing_ok=True)
                _write(etc / "nginx/conf.d/dealix-lb.conf", lb_nginx_conf(api_ips))
            if "api" in groups:
                env = read_env_file(root / "opt/dealix/.env")
                env.update(
                    build.twin_app_env(
                        sec,
                        db_password=db_password,
                        sentry_public_key=st["sentry_public_key"],
                        sentry_project_id=st["sentry_project_id"],
                    )
                )
                env["DATABASE_URL"] = env["DATABASE_URL"].replace("@127.0.0.1:", f"@{db_ip}:")
                env["REDIS_URL"] = f"redis://{redis_ip}:6379/0"
                write_env_file(
                    root / "opt/dealix/.env",
                    env,
                    header=(
                        "Dealix API configuration (fleet twin). Never edit on the server:\n"
                        "changes flow through GitHub PR -> deploy script."
                    ),
                )
            if "db" in groups:
                self._open_postgres(root, db_ip, api_ips)
            if "redis" in groups:
                conf = etc / "redis/redis.conf"
                stat, text = conf.stat(), conf.read_text()
                bound = text.replace("\nbind 127.0.0.1 -::1\n", f"\nbind 127.0.0.1 {redis_ip}\n")
                if bound == text:
                    raise TwinError("redis", f"no 'bind 127.0.0.1 -::1' line in {conf}")
                # no password on production's Redis either: the firewall keeps it in
                bound = bound.replace("\nprotected-mode yes\n", "\nprotected-mode no\n")
                _write(conf, bound, 0o640)
                os.chown(conf, stat.st_uid, stat.st_gid)
            if groups & {"db", "redis"} and (etc / "ufw/user.rules").exists():
                rules = (etc / "ufw/user.rules").read_text()
                if "db" in groups:
                    rules = ufw_allow(rules, 5432, api_ips)
                if "redis" in groups:
                    rules = ufw_allow(rules, 6379, api_ips)
                _write(etc / "ufw/user.rules", rules, 0o640)

        inet = self._mount(st, "internet", str(layers.os))
        self._host_files(st, inet, "internet")
        self._mask(inet, INTERNET_MASKED)
        (inet / "etc/nginx/sites-enabled/default").unlink(missing_ok=True)
        _write(
            inet / "etc/nginx/conf.d/saas.conf",
            internet.nginx_conf(f"{st['operator_ip']}:{st['stubs_port']}"),
        )
        _write(inet / "etc/ssl/saas/saas.crt", saas[0].read_text())
        _write(inet / "etc/ssl/saas/saas.key", saas[1].read_text(), 0o600)

    @staticmethod
    def _mask(root: Path, units: tuple[str, ...]) -> None:
        for unit in units:
            link = root / f"etc/systemd/system/{unit}.service"
            if link.is_symlink() or link.exists():
                link.unlink()
            link.symlink_to("/dev/null")

    @staticmethod
    def _open_postgres(root: Path, db_ip: str, api_ips: list[str]) -> None:
        """PostgreSQL on the bridge address, for the dealix role from the API servers only."""
        main = root / "etc/postgresql/15/main"
        _write(
            main / "conf.d/fleet.conf",
            "# runbook twin up --fleet: the API servers connect over the bridge\n"
            f"listen_addresses = 'localhost,{db_ip}'\n",
        )
        hba = main / "pg_hba.conf"
        stat = hba.stat()
        lines = "".join(f"host dealix dealix {ip}/32 scram-sha-256\n" for ip in api_ips)
        _write(hba, hba.read_text() + "# the API servers (fleet twin)\n" + lines, 0o640)
        os.chown(hba, stat.st_uid, stat.st_gid)
        os.chown(main / "conf.d/fleet.conf", stat.st_uid, stat.st_gid)

    def _host_files(self, st: dict[str, Any], root: Path, name: str) -> None:
        """hostname, /etc/hosts (the fleet's names, the SaaS at the internet container),
        no DNS, the networkd address, the twin's CA in the trust store."""
        if name == "internet":
            ip, hostname, groups = st["internet_ip"], st["machines"]["internet"], set()
        else:
            h = st["hosts"][name]
            ip, hostname, groups = h["address"], name, set(h["groups"])
        etc = root / "etc"
        _write(etc / "hostname", hostname + "\n")
        lines = [
            "127.0.0.1 localhost",
            f"127.0.1.1 {hostname}",
            "::1 localhost ip6-localhost ip6-loopback",
        ]
        # api.dealix.me: the box itself where its nginx serves the name, else the lb
        api_at = "127.0.0.1" if groups & {"lb", "api"} else st["host"]
        lines.append(f"{api_at} " + " ".join(internet.API_NAMES))
        lines.extend(f"{h['address']} {n}" for n, h in st["hosts"].items() if n != name)
        lines.extend(f"{st['internet_ip']} {n}" for n in internet.SAAS)
        _write(etc / "hosts", "\n".join(lines) + "\n")
        _write(etc / "resolv.conf", "nameserver 127.0.0.1\n")
        _write(
            etc / "systemd/network/10-host0.network",
            f"[Match]\nName=host0\n\n[Network]\nAddress={ip}/24\nGateway={st['operator_ip']}\n"
            "LinkLocalAddressing=no\nIPv6AcceptRA=no\n",
        )
        self._trust_ca(root, Path(st["ca_file"]))

    # ------------------------------------------------------------------ waiting

    def ssh_to(
        self, name: str, command: str, timeout: float = 120, check: bool = True
    ) -> subprocess.CompletedProcess[str]:
        """Run a shell command as root on the fleet's host `name` (its pinned host key)."""
        return self.ssh(command, timeout=timeout, check=check, st=self._on(self.state, name))

    def request(
        self, path: str, ip: str | None = None, timeout: float = 5
    ) -> tuple[int, dict[str, str], bytes]:
        """GET https://api.dealix.me<path> at `ip` (default: the load balancer), verified
        against the twin's CA: status, headers, body."""
        st = self.state
        ctx = ssl.create_default_context(cafile=st["ca_file"])
        sock = socket.create_connection((ip or st["host"], 443), timeout=timeout)
        conn = http.client.HTTPSConnection("api.dealix.me", timeout=timeout)
        conn.sock = ctx.wrap_socket(sock, server_hostname="api.dealix.me")
        try:
            conn.request("GET", path, headers={"Host": "api.dealix.me"})
            resp = conn.getresponse()
            return resp.status, dict(resp.getheaders()), resp.read()
        finally:
            conn.close()

    def _wait_fleet(self, st: dict[str, Any], t0: float) -> None:
        deadline = time.monotonic() + READY_TIMEOUT
        marks: dict[str, float] = {}
        want = [*(f"ssh {n}" for n in st["hosts"]), *(f"api {a}" for a in st["api_hosts"])]
        # systemd done booting on each host: SSH and the API answer earlier, and `status`
        # (which reads `systemctl is-system-running`) said "starting" right after an up (CI)
        want += [*(f"boot {n}" for n in st["hosts"]), "internet", "lb"]
        last = ""
        while time.monotonic() < deadline:
            for which in (*st["machines"], "stubs"):
                if not _alive(st["pids"].get(which)):
                    raise TwinError(
                        which,
                        f"exited during boot (see {self._log_of(which)})",
                        log_tail=self._tail(which),
                    )
            for n in st["hosts"]:
                if f"ssh {n}" not in marks:
                    on = self._on(st, n)
                    if self.ssh("true", timeout=10, check=False, st=on).returncode == 0:
                        marks[f"ssh {n}"] = time.monotonic() - t0
            for n in st["hosts"]:
                if f"boot {n}" not in marks and f"ssh {n}" in marks:
                    on = self._on(st, n)
                    state = self.ssh("systemctl is-system-running", timeout=10, check=False, st=on)
                    last = f"{n}: systemd {state.stdout.strip() or state.returncode}"
                    if state.stdout.strip() == "running":
                        marks[f"boot {n}"] = time.monotonic() - t0
            if "internet" not in marks:
                try:
                    code, _ = self.https_get("/api/v2/status.json", "status.anthropic.com", st=st)
                    if code == 200:
                        marks["internet"] = time.monotonic() - t0
                except OSError as exc:
                    last = f"internet: {exc}"
            for a in st["api_hosts"]:
                if f"api {a}" in marks or f"ssh {a}" not in marks:
                    continue
                try:
                    ip = st["hosts"][a]["address"]
                    code, body = self.https_get("/health/deep", ip=ip, st=st)
                    last = f"{a} /health/deep answered {code}: {body[:200]!r}"
                    if code == 200 and json.loads(body).get("status") == "green":
                        marks[f"api {a}"] = time.monotonic() - t0
                except (OSError, ValueError) as exc:
                    last = f"{a} /health/deep: {exc}"
            if "lb" not in marks and all(f"api {a}" in marks for a in st["api_hosts"]):
                try:
                    code, body = self.https_get("/health/deep", st=st)
                    last = f"lb /health/deep answered {code}: {body[:200]!r}"
                    if code == 200:
                        marks["lb"] = time.monotonic() - t0
                except (OSError, ValueError) as exc:
                    last = f"lb /health/deep: {exc}"
            if all(w in marks for w in want):
                st["ready"] = {k: round(v, 2) for k, v in marks.items()}
                self._echo("  ready      " + ", ".join(f"{k} {v:.1f} s" for k, v in marks.items()))
                return
            time.sleep(0.2)
        missing = [w for w in want if w not in marks]
        raise TwinError(
            "boot",
            f"not ready after {READY_TIMEOUT:.0f} s ({', '.join(missing)} not ready; last: {last})",
            log_tail=self._tail(missing[0].split()[-1]) if missing else [],
        )

    # ------------------------------------------------------------------ down

    def down(self) -> dict[str, Any]:
        """Stop and remove everything of this fleet. Returns what was stopped."""
        if not self.state_file.exists():
            return {}
        st = json.loads(self.state_file.read_text())
        done: dict[str, Any] = {"stopped": {}}
        machines = list(st.get("machines", {}))
        # SIGTERM to every machine at once (each powers off cleanly), then wait for each
        started = time.monotonic()
        for which in machines:
            pid = st.get("pids", {}).get(which)
            if _alive(pid):
                os.kill(pid, signal.SIGTERM)
        for which in machines:
            pid = st.get("pids", {}).get(which)
            if pid:
                done["stopped"][which] = self._wait_stopped(pid, which, started)
        pid = st.get("pids", {}).get("stubs")
        if _alive(pid):
            done["stopped"]["stubs"] = self._stop(pid, "stubs")
        for which in machines:
            inst = self._inst(which)
            for m in reversed(mounts_under(inst)):
                subprocess.run(["umount", m], capture_output=True, check=False)
                if mounted(Path(m)):
                    subprocess.run(["umount", "-l", m], capture_output=True, check=False)
            if mounted(inst / "root"):
                raise TwinError("down", f"{inst / 'root'} is still mounted")
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
        for which in machines:
            if self._inst(which).exists():
                lift_armor(self._inst(which))
                shutil.rmtree(self._inst(which))
        self.state_file.unlink(missing_ok=True)
        return done

    def _wait_stopped(self, pid: int, which: str, started: float) -> str:
        while time.monotonic() - started < STOP_TIMEOUT:
            if not _alive(pid):
                return f"SIGTERM, {time.monotonic() - started:.1f} s"
            time.sleep(0.1)
        return self._stop(pid, which)  # SIGTERM again, then SIGKILL

    # ------------------------------------------------------------------ status

    def status(self) -> list[dict[str, Any]]:
        """Every machine and what it serves, healthy or not (never raises)."""
        if not self.state_file.exists():
            return [
                {
                    "name": "fleet",
                    "healthy": False,
                    "detail": f"not up ({self.state_file} missing): runbook twin up --fleet",
                }
            ]
        st = self.state
        rows: list[dict[str, Any]] = []

        def row(name: str, healthy: bool, detail: str) -> None:
            rows.append({"name": name, "healthy": healthy, "detail": detail})

        for which in (*st["machines"], "stubs"):
            pid = st["pids"].get(which)
            row(which, _alive(pid), f"pid {pid}" + ("" if _alive(pid) else " (not running)"))
        for name, h in st["hosts"].items():
            if not _alive(st["pids"].get(name)):
                continue
            units = [u for g, u in _CHECKED if g in h["groups"]]
            units = list(dict.fromkeys(units))
            probe = self.ssh_to(
                name,
                "systemctl is-system-running; systemctl is-active ssh "
                + " ".join(units)
                + " | paste -sd' '",
                check=False,
                timeout=30,
            )
            lines = probe.stdout.splitlines()
            ok = len(lines) >= 2 and lines[0] == "running" and set(lines[1].split()) == {"active"}
            row(
                f"{name} ({'+'.join(h['groups'])})",
                ok,
                f"root@{h['address']} pinned {h['host_key_fingerprint']}; "
                + (
                    f"systemd {lines[0]}; ssh {' '.join(units)}: {lines[1]}"
                    if len(lines) >= 2
                    else (probe.stderr.strip() or f"exit {probe.returncode}")
                ),
            )
        seen: set[str] = set()
        try:
            for _ in range(2 * len(st["api_hosts"])):
                code, headers, body = self.request("/health/deep")
                deep = json.loads(body).get("status") if body else None
                seen.add(headers.get(UPSTREAM_HEADER, "?").rsplit(":", 1)[0])
            api_ips = {st["hosts"][a]["address"] for a in st["api_hosts"]}
            row(
                "lb",
                code == 200 and deep == "green" and api_ips <= seen,
                f"https://api.dealix.me/health/deep {code} {deep} through "
                f"{st['lb_host']}; answered by {', '.join(sorted(seen))}",
            )
        except (OSError, ValueError) as exc:
            row("lb", False, f"https://api.dealix.me/health/deep: {exc}")
        try:
            code, _ = self.https_get("/api/v2/summary.json", "status.anthropic.com")
            row("internet", code == 200, f"https://status.anthropic.com {code}")
        except OSError as exc:
            row("internet", False, f"https://status.anthropic.com: {exc}")
        return rows

    def fault(self, name: str) -> str:
        """Apply fleet fault `name` (runbook.twin.fleet_faults); `heal()` undoes it."""
        from runbook.twin import fleet_faults

        apply, _heal = fleet_faults.get(name)
        said = apply(self)
        st = self.state
        st["faults"] = [*[x for x in st.get("faults", []) if x != name], name]
        self._save(st)
        return said

    def heal(self) -> list[str]:
        """Heal every applied fleet fault, newest first."""
        from runbook.twin import fleet_faults

        healed = []
        for name in reversed(self.state.get("faults", [])):
            fleet_faults.get(name)[1](self)
            healed.append(name)
            # a failed heal leaves the faults not yet healed listed
            st = self.state
            st["faults"] = [x for x in st.get("faults", []) if x != name]
            self._save(st)
        return healed

    # ------------------------------------------------------------------ runner side

    def exec_argv(self, command: list[str]) -> tuple[list[str], dict[str, str]]:
        """As the single twin's, with `${twin_fleet.KEY}` finding this fleet."""
        argv, env = super().exec_argv(command)
        env["RUNBOOK_TWIN_FLEET_DIR"] = str(self.dir)
        if "RUNBOOK_TWIN_DIR" in os.environ:
            env["RUNBOOK_TWIN_DIR"] = os.environ["RUNBOOK_TWIN_DIR"]
        else:
            env.pop("RUNBOOK_TWIN_DIR", None)
        return argv, env
