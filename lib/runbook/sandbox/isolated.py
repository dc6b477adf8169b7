"""Isolated mode (`runbook sandbox up --isolated`, root only): a server host with a real firewall.

On top of the loopback sandbox, a network namespace plays the server's
network side, reached over veth pairs, with its own addresses:

```
 operator (this machine)          server namespace rbs<id>          outside namespace rbo<id>
 10.213.K.1  ── veth ──  10.213.K.2   sshd :22, ufw/iptables, 10.214.K.2  ── veth ──  10.214.K.1
                                      fail2ban (sshd jail)
```

- sshd listens on port 22 inside the namespace (same host key, same
  authorized key as the loopback sshd); its log lines get syslog-style ISO
  timestamps and go to the auth log the profile names, which fail2ban reads.
- The namespace's host firewall is ufw, as on production, when ufw is
  installed (its /etc/ufw is `/etc/netns/<ns>/ufw`, so this machine's own ufw
  stays as it is), else plain iptables (`RUNBOOK_ISOLATED_FIREWALL=iptables`
  forces it). Rules there never touch this machine's own.
- fail2ban runs in the namespace with an `sshd` jail on that auth log and the
  `iptables-multiport` ban action; `fail2ban-client` in an SSH session finds
  it through `/etc/netns/<ns>/fail2ban`, which `ip netns exec` mounts over
  `/etc/fail2ban` for everything started in the namespace.
- A second namespace is an outside client: `outside_probe` in the profile
  runs `ip netns exec rbo<id> …` to test SSH from another address.

The server side runs in the namespace too: PostgreSQL, Redis, the API
(uvicorn) and nginx stay under the sandbox's supervisord, but their commands
are `ip netns exec <ns> …` (build.supervisor.NETNS_PROGRAMS), so they listen on the
namespace's own loopback (Postgres, Redis, the API, as production's bind to
localhost) and nginx on all of the namespace's addresses: the operator reaches the API at
`http://10.213.K.2:<nginx port>` (state `base_url` while isolated) through the
namespace's firewall, which allows SSH and that HTTP port as production's ufw
allows 22 and 80/443. They keep the shared filesystem and Unix sockets (psql
over the socket dir, supervisorctl). The SaaS stubs stay outside ("the
internet"): they also listen on the operator's end of the veth, 10.213.K.1
(the operator keeps using 127.0.0.1, where their control endpoints answer), and
the app's .env points its stub URLs, SENTRY_DSN and POSTHOG_HOST there; the
firewall allows that outbound traffic. `down` puts everything back on
127.0.0.1 exactly as the loopback sandbox has it.

Only our own namespaces' addresses (10.213.K.0/30 and 10.214.K.0/30, K chosen
free at `up`) are ever targeted; the attacker addresses in the faults are
documentation addresses that only appear in logs and ban rules.
"""

from __future__ import annotations

import contextlib
import hashlib
import os
import shutil
import signal
import socket
import subprocess
import time
from pathlib import Path
from typing import TYPE_CHECKING, Any

from runbook.sandbox.build.host import is_root, write_private
from runbook.sandbox.build.nginx import write_nginx_config
from runbook.sandbox.build.ssh import ensure_privsep_dir, host_key_line, sshd_config_text
from runbook.sandbox.build.supervisor import NETNS_PROGRAMS, write_supervisor_config
from runbook.sandbox.procs import SandboxError, start_time

if TYPE_CHECKING:
    from runbook.sandbox.manager import Sandbox

NETNS_ETC = Path("/etc/netns")


def _run(*cmd: str, check: bool = True, ns: str | None = None) -> subprocess.CompletedProcess:
    full = (["ip", "netns", "exec", ns] if ns else []) + list(cmd)
    proc = subprocess.run(full, capture_output=True, text=True, timeout=60)
    if check and proc.returncode != 0:
        raise SandboxError("isolated", f"{' '.join(full)}: exit {proc.returncode}: {proc.stderr}")
    return proc


def names(sb: Sandbox) -> dict[str, str]:
    """Namespace and interface names (≤ 15 chars), stable for one state dir."""
    h = hashlib.sha256(str(sb.state_dir).encode()).hexdigest()[:6]
    return {
        "server_ns": f"rbs{h}",
        "outside_ns": f"rbo{h}",
        "veth_host": f"rbh{h}a",
        "veth_server": f"rbh{h}b",
        "veth_out": f"rbo{h}a",
        "veth_srv_out": f"rbo{h}b",
    }


def _used_subnets() -> set[int]:
    out = subprocess.run(["ip", "-4", "-o", "addr"], capture_output=True, text=True).stdout
    used = set()
    for line in out.splitlines():
        for word in line.split():
            if word.startswith(("10.213.", "10.214.")):
                used.add(int(word.split(".")[2]))
    return used


def _pick_k(sb: Sandbox) -> int:
    start = int(hashlib.sha256(str(sb.state_dir).encode()).hexdigest()[:4], 16) % 250
    used = _used_subnets()
    for i in range(250):
        k = (start + i) % 250 + 1
        if k not in used:
            return k
    raise SandboxError("isolated", "no free 10.213.K.0/30 subnet")


def isolated_dir(sb: Sandbox) -> Path:
    return sb.state_dir / "isolated"


def is_up(sb: Sandbox) -> bool:
    iso = sb.state.get("isolated")
    if not iso:
        return False
    return all(_alive(p) for p in iso.get("pids", {}).values()) and _ns_exists(iso["server_ns"])


def _alive(entry: list[int]) -> bool:
    pid, started = entry
    return start_time(pid) == started


def _ns_exists(ns: str) -> bool:
    return ns in _run("ip", "netns", "list", check=False).stdout.split()


def sshd_config(sb: Sandbox) -> str:
    """The loopback sshd's config, listening on port 22 in the namespace."""
    text = sshd_config_text(sb.state, sb.layout)
    out = []
    for line in text.splitlines():
        if line.startswith("Port "):
            line = "Port 22"
        elif line.startswith("ListenAddress "):
            line = "ListenAddress 0.0.0.0"
        elif line.startswith("PidFile "):
            line = f"PidFile {isolated_dir(sb) / 'sshd.pid'}"
        out.append(line)
    return "\n".join(out) + "\n"


def fail2ban_config(sb: Sandbox, ns: str) -> Path:
    """/etc/netns/<ns>/fail2ban: Debian's config plus our jail and our socket paths."""
    d = isolated_dir(sb)
    etc = NETNS_ETC / ns / "fail2ban"
    if etc.exists():
        shutil.rmtree(etc)
    shutil.copytree("/etc/fail2ban", etc)
    (etc / "fail2ban.local").write_text(
        "[Definition]\n"
        f"socket = {d / 'fail2ban.sock'}\n"
        f"pidfile = {d / 'fail2ban.pid'}\n"
        f"logtarget = {d / 'fail2ban.log'}\n"
        f"dbfile = {d / 'fail2ban.sqlite3'}\n"
    )
    (etc / "jail.local").write_text(
        "[DEFAULT]\n"
        "banaction = iptables-multiport\n"
        "banaction_allports = iptables-allports\n"
        "findtime = 10m\n"
        "maxretry = 5\n"
        "bantime = 1h\n"
        "\n[sshd]\n"
        "enabled = true\n"
        "port = 22\n"
        "backend = polling\n"
        f"logpath = {sb.state['auth_log']}\n"
    )
    return etc


def firewall_kind() -> str:
    """ufw where it is installed (production's), else iptables; the environment may force one."""
    forced = os.environ.get("RUNBOOK_ISOLATED_FIREWALL")
    if forced:
        if forced not in ("ufw", "iptables"):
            raise SandboxError("isolated", f"RUNBOOK_ISOLATED_FIREWALL={forced!r}: ufw or iptables")
        return forced
    return "ufw" if shutil.which("ufw") else "iptables"


def _ufw_config(sb: Sandbox, ns: str) -> Path:
    etc = NETNS_ETC / ns / "ufw"
    if etc.exists():
        shutil.rmtree(etc)
    shutil.copytree("/etc/ufw", etc)
    return etc


def _open_ssh(sb: Sandbox, ns: str, kind: str, http_port: int, stubs: tuple[str, int]) -> None:
    """The firewall as a fresh server has it: SSH and HTTP open to all (SSH is what the
    runbook locks down), outbound to the SaaS (the stubs) allowed."""
    if kind == "ufw":
        _run("ufw", "allow", "22/tcp", ns=ns)
        _run("ufw", "allow", f"{http_port}/tcp", ns=ns)
        _run("ufw", "allow", "out", "to", stubs[0], "port", str(stubs[1]), "proto", "tcp", ns=ns)
        _run("ufw", "--force", "enable", ns=ns)
        # kept to put the firewall back after a scenario (reset_firewall)
        for name in ("user.rules", "user6.rules"):
            shutil.copy2(NETNS_ETC / ns / "ufw" / name, isolated_dir(sb) / f"baseline.{name}")
        return
    _run("iptables", "-P", "INPUT", "ACCEPT", ns=ns)
    _run("iptables", "-A", "INPUT", "-p", "tcp", "--dport", "22", "-j", "ACCEPT", ns=ns)
    _run("iptables", "-A", "INPUT", "-p", "tcp", "--dport", str(http_port), "-j", "ACCEPT", ns=ns)
    _run(
        "iptables",
        *("-A", "OUTPUT", "-p", "tcp", "-d", stubs[0], "--dport", str(stubs[1]), "-j", "ACCEPT"),
        ns=ns,
    )


def up(sb: Sandbox) -> dict[str, Any]:
    """Build the namespaces, start sshd and fail2ban in the server one; idempotent."""
    if not is_root():
        raise SandboxError("isolated", "isolated mode needs root (network namespaces, iptables)")
    for tool in ("ip", "iptables", "fail2ban-server", "fail2ban-client"):
        if not shutil.which(tool):
            raise SandboxError(
                "isolated",
                f"{tool} is missing: apt-get install -y iptables fail2ban (scripts/setup.sh does)",
            )
    if is_up(sb):
        # the configs follow state.json, so a restart here stays in the namespace
        sb.up()
        return sb.state["isolated"]
    down(sb)
    sb.up()
    n = names(sb)
    k = _pick_k(sb)
    ip = {
        "operator_ip": f"10.213.{k}.1",
        "server_ip": f"10.213.{k}.2",
        "outside_ip": f"10.214.{k}.1",
        "server_outside_ip": f"10.214.{k}.2",
    }
    srv, out = n["server_ns"], n["outside_ns"]
    d = isolated_dir(sb)
    d.mkdir(parents=True, exist_ok=True)
    _run("ip", "netns", "add", srv)
    _run("ip", "netns", "add", out)
    _run("ip", "link", "add", n["veth_host"], "type", "veth", "peer", "name", n["veth_server"])
    _run("ip", "link", "set", n["veth_server"], "netns", srv)
    _run("ip", "addr", "add", f"{ip['operator_ip']}/30", "dev", n["veth_host"])
    _run("ip", "link", "set", n["veth_host"], "up")
    _run("ip", "link", "add", n["veth_out"], "type", "veth", "peer", "name", n["veth_srv_out"])
    _run("ip", "link", "set", n["veth_out"], "netns", out)
    _run("ip", "link", "set", n["veth_srv_out"], "netns", srv)
    for ns, dev, addr in (
        (srv, n["veth_server"], ip["server_ip"]),
        (srv, n["veth_srv_out"], ip["server_outside_ip"]),
        (out, n["veth_out"], ip["outside_ip"]),
    ):
        _run("ip", "addr", "add", f"{addr}/30", "dev", dev, ns=ns)
        _run("ip", "link", "set", dev, "up", ns=ns)
        _run("ip", "link", "set", "lo", "up", ns=ns)
    kind_fw = firewall_kind()
    if kind_fw == "ufw":
        _ufw_config(sb, srv)  # before anything runs in the namespace (mounted at exec)
    _open_ssh(sb, srv, kind_fw, sb.state["nginx_port"], (ip["operator_ip"], sb.state["stubs_port"]))

    kind, blob = host_key_line(sb.layout)
    known = d / "known_hosts"
    known.write_text(f"{ip['server_ip']} {kind} {blob}\n{ip['server_outside_ip']} {kind} {blob}\n")
    cfg = d / "sshd_config"
    cfg.write_text(sshd_config(sb))
    _run("/usr/sbin/sshd", "-t", "-f", str(cfg))
    ensure_privsep_dir()
    auth_log = sb.state["auth_log"]
    # sshd -e writes bare lines to stderr; stamp them as rsyslog does (ISO time,
    # host, sshd[pid]) so fail2ban can date them, and append to the auth log.
    stamp = (
        f"exec /usr/sbin/sshd -D -e -f {cfg} 2>&1 | while IFS= read -r line; do "
        'printf "%s dealix sshd[%s]: %s\\n" "$(date -u +%Y-%m-%dT%H:%M:%S.%6N+00:00)" '
        f'"$SSHD_PID" "$line"; done >> {auth_log}'
    )
    # Before anything starts in the namespace: `ip netns exec` mounts it over /etc/fail2ban
    # for sshd too, so fail2ban-client in an SSH session finds this server.
    fail2ban_config(sb, srv)
    log = (d / "procs.log").open("ab")
    sshd = subprocess.Popen(
        ["ip", "netns", "exec", srv, "bash", "-c", f"SSHD_PID=$$; {stamp}"],
        stdin=subprocess.DEVNULL,
        stdout=log,
        stderr=log,
        start_new_session=True,
    )
    f2b = subprocess.Popen(
        ["ip", "netns", "exec", srv, "fail2ban-server", "-f", "-x", "start"],
        stdin=subprocess.DEVNULL,
        stdout=log,
        stderr=log,
        start_new_session=True,
    )
    _wait(lambda: _banner(ip["server_ip"], 22, 1).startswith("SSH-2.0-"), "sshd in the namespace")
    _wait(
        lambda: _run("fail2ban-client", "ping", ns=srv, check=False).returncode == 0,
        "fail2ban in the namespace",
    )
    info = {
        **n,
        **ip,
        "k": k,
        "ssh_port": 22,
        "firewall": kind_fw,
        "known_hosts": str(known),
        "sshd_config": str(cfg),
        "outside_probe": f"ip netns exec {out}",
        "pids": {
            "sshd": [sshd.pid, start_time(sshd.pid)],
            "fail2ban": [f2b.pid, start_time(f2b.pid)],
        },
    }
    # Flat keys for profiles (`${sandbox.isolated_server_ip}`), the whole for `down`.
    sb._update(isolated=info, **{f"isolated_{k2}": v for k2, v in info.items() if k2 != "pids"})
    _move_services(sb, srv)
    return sb.state["isolated"]


def _stub_hosts(sb: Sandbox, old: str, new: str) -> None:
    """The app's .env: the stubs' host in its base URLs, SENTRY_DSN, POSTHOG_HOST."""
    env = sb.layout.app_dir / ".env"
    port = sb.state["stubs_port"]
    text = env.read_text()
    if f"{old}:{port}" in text:
        write_private(env, text.replace(f"{old}:{port}", f"{new}:{port}"))


def _reload_programs(sb: Sandbox) -> None:
    """Rewrite the configs from state and restart the server side under supervisord.

    The changed [program:*] sections are removed and added again (supervisord
    only picks a changed command up that way), in start order, waiting for
    each part before the next needs it.
    """
    from runbook.sandbox.procs import supervisor_state

    lay = sb.layout
    write_nginx_config(sb.state, lay)
    write_supervisor_config(sb.state, lay, with_api=True)
    if supervisor_state(lay.supervisor_socket) is None:
        return  # not running: the next `up` starts them from these configs
    rpc = sb.rpc()
    moved = ["saas-stubs", *NETNS_PROGRAMS]
    for name in reversed(moved):
        # not running (or not configured yet): nothing to stop
        with contextlib.suppress(Exception):
            rpc.supervisor.stopProcess(name, True)
    rpc.supervisor.reloadConfig()
    for name in moved:
        with contextlib.suppress(Exception):  # not present: added below
            rpc.supervisor.removeProcessGroup(name)
        rpc.supervisor.reloadConfig()
        rpc.supervisor.addProcessGroup(name)
        if name == "postgresql":
            sb.wait_postgres()
        elif name == "redis":
            sb.wait_redis()
    sb.wait_api()
    sb._update(pids=sb._record_pids())


def _move_services(sb: Sandbox, ns: str) -> None:
    """Postgres, Redis, the API and nginx into namespace `ns`; the stubs on the veth."""
    iso = dict(sb.state["isolated"])
    iso["services_ns"] = ns
    iso["loopback"] = {"base_url": sb.state["base_url"]}
    iso["base_url"] = f"http://{iso['server_ip']}:{sb.state['nginx_port']}"
    # the app's view of the stubs; the operator keeps 127.0.0.1 (control endpoints
    # answer loopback clients only)
    iso["app_stubs_url"] = f"http://{iso['operator_ip']}:{sb.state['stubs_port']}"
    sb._update(
        isolated=iso,
        base_url=iso["base_url"],
        isolated_base_url=iso["base_url"],
        isolated_services_ns=ns,
    )
    _stub_hosts(sb, "127.0.0.1", iso["operator_ip"])
    _reload_programs(sb)


def _restore_services(sb: Sandbox) -> None:
    """Back on this machine's loopback, exactly as the loopback sandbox runs them."""
    iso = sb.state.get("isolated") or {}
    loop = iso.get("loopback")
    if not loop:
        return
    _stub_hosts(sb, iso["operator_ip"], "127.0.0.1")
    sb._update(isolated=None, base_url=loop["base_url"])
    _reload_programs(sb)


def redis_ping(ns: str, port: int, timeout: float = 2.0) -> bool:
    """PING Redis on the namespace's loopback (where it listens in isolated mode)."""
    proc = subprocess.run(
        ["ip", "netns", "exec", ns, "redis-cli", "-h", "127.0.0.1", "-p", str(port), "ping"],
        capture_output=True,
        text=True,
        timeout=timeout + 5,
    )
    return proc.stdout.strip() == "PONG"


def http_status_in_ns(ns: str, url: str, headers: dict[str, str], timeout: float = 10.0) -> int:
    """GET `url` from inside namespace `ns` (the API listens on its loopback only)."""
    import json
    import sys

    code = (
        "import json,sys,urllib.request,urllib.error\n"
        "a=json.loads(sys.stdin.read())\n"
        "r=urllib.request.Request(a['url'],headers=a['headers'])\n"
        "try:\n"
        "    print(urllib.request.urlopen(r,timeout=a['timeout']).status)\n"
        "except urllib.error.HTTPError as e:\n"
        "    print(e.code)\n"
    )
    proc = subprocess.run(
        ["ip", "netns", "exec", ns, sys.executable, "-c", code],
        input=json.dumps({"url": url, "headers": headers, "timeout": timeout}),
        capture_output=True,
        text=True,
        timeout=timeout + 10,
    )
    if proc.returncode != 0:
        raise SandboxError("isolated", f"GET {url} in {ns}: {proc.stderr.strip()[-300:]}")
    return int(proc.stdout.strip())


def _banner(host: str, port: int, timeout: float) -> str:
    try:
        with socket.create_connection((host, port), timeout=timeout) as s:
            s.settimeout(timeout)
            return s.recv(256).decode(errors="replace").strip()
    except OSError as exc:
        return f"{type(exc).__name__}: {exc}"


def _wait(ok: Any, what: str, timeout: float = 20.0) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if ok():
            return
        time.sleep(0.2)
    raise SandboxError("isolated", f"{what} did not come up within {timeout:.0f}s")


def ssh_reachable_from_outside(sb: Sandbox, timeout: float = 3.0) -> bool:
    """Does the outside namespace get sshd's banner? (DROP makes it time out.)"""
    iso = sb.state["isolated"]
    code = (
        "import socket,sys\n"
        "try:\n"
        f"    s=socket.create_connection(({iso['server_outside_ip']!r},22),timeout={timeout})\n"
        f"    s.settimeout({timeout}); sys.exit(0 if s.recv(64).startswith(b'SSH-') else 1)\n"
        "except OSError:\n"
        "    sys.exit(1)\n"
    )
    import sys

    proc = subprocess.run(
        ["ip", "netns", "exec", iso["outside_ns"], sys.executable, "-c", code],
        capture_output=True,
        timeout=timeout + 10,
    )
    return proc.returncode == 0


def ssh_reachable_from_operator(sb: Sandbox, timeout: float = 3.0) -> bool:
    return _banner(sb.state["isolated"]["server_ip"], 22, timeout).startswith("SSH-2.0-")


def iptables(sb: Sandbox, *args: str) -> str:
    return _run("iptables", *args, ns=sb.state["isolated"]["server_ns"]).stdout


def reset_firewall(sb: Sandbox) -> list[str]:
    """Back to a fresh server's firewall (SSH open to all); fail2ban's chain is kept."""
    iso = sb.state["isolated"]
    if iso.get("firewall") == "ufw":
        etc = NETNS_ETC / iso["server_ns"] / "ufw"
        for name in ("user.rules", "user6.rules"):
            shutil.copy2(isolated_dir(sb) / f"baseline.{name}", etc / name)
        _run("ufw", "reload", ns=iso["server_ns"])
        return ["ufw: baseline user rules"]
    removed = []
    base = "-A INPUT -p tcp -m tcp --dport 22 -j ACCEPT"
    for rule in iptables(sb, "-S", "INPUT").splitlines():
        if rule.startswith("-A INPUT") and "--dport 22 " in rule + " " and "f2b-" not in rule:
            if rule == base:
                continue
            iptables(sb, "-D", *rule.split()[1:])
            removed.append(rule)
    if base not in iptables(sb, "-S", "INPUT").splitlines():
        iptables(sb, *base.split())
    return removed


def fail2ban(sb: Sandbox, *args: str) -> str:
    """`fail2ban-client ARGS` in the server namespace."""
    return _run("fail2ban-client", *args, ns=sb.state["isolated"]["server_ns"]).stdout


def down(sb: Sandbox) -> None:
    """Stop sshd and fail2ban in the namespace, delete namespaces, veths, /etc/netns dirs."""
    iso = sb.state.get("isolated") or {}
    n = names(sb)
    # the server side first, while its namespace still exists
    _restore_services(sb)
    for entry in (iso.get("pids") or {}).values():
        pid, started = entry
        if start_time(pid) == started:
            try:
                os.killpg(pid, signal.SIGTERM)
            except ProcessLookupError:
                pass
    deadline = time.monotonic() + 5
    for entry in (iso.get("pids") or {}).values():
        pid, started = entry
        while start_time(pid) == started and time.monotonic() < deadline:
            time.sleep(0.1)
        if start_time(pid) == started:
            try:
                os.killpg(pid, signal.SIGKILL)
            except ProcessLookupError:
                pass
    # per-connection sshd children in the namespace outlive the listener: kill what is left
    for ns in (n["server_ns"], n["outside_ns"]):
        if _ns_exists(ns):
            pids = _run("ip", "netns", "pids", ns, check=False).stdout.split()
            for p in pids:
                try:
                    os.kill(int(p), signal.SIGKILL)
                except (ProcessLookupError, ValueError):
                    pass
            _run("ip", "netns", "del", ns, check=False)
        etc = NETNS_ETC / ns
        if etc.exists():
            shutil.rmtree(etc)
    # deleting the namespace removes its veth ends, and with them the peers
    _run("ip", "link", "del", n["veth_host"], check=False)
    if sb.state.get("isolated"):
        sb._update(isolated=None)
