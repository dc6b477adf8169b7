"""Fan-out over 1, 3 and 6 hosts: the session's `s.on` against Ansible and the floor.

Against the fleet twin (`runbook twin up --fleet`, root), through its names:

    sudo .venv/bin/runbook twin exec --fleet -- .venv/bin/python benchmarks/fleet_fanout.py

Measured in the same run, medians of --rounds (never a test: the machine's load moves
every peer together; docs/benchmarks.md has a run's numbers):

- one command (`true`) and ten commands on every host at once:
  - runbook: `s.on(hosts, lambda h: h.probe(["true"]))` on a fresh session ("cold": each
    gate connects, checks the pinned key and reads the server's env files first) and
    again on the same session ("warm": the reused connection, what every step after
    the first gets);
  - Ansible: `ansible all -m command -a true` (one command) and a playbook of ten
    `command: true` tasks (ten), same inventory, forks = hosts, pipelining on, its
    default ControlPersist (the first round warms it and is not counted);
  - the floor: one bare paramiko connection per host, in parallel threads, a channel
    per command ("cold": connect included; "warm": connections already open);
- health_check (appendix A across the fleet, `check_fleet`) on 1, 3 and 6 hosts.

Ansible is a benchmark-only dependency: ansible-core is installed into its own venv
(--ansible-venv, default /var/tmp/runbook-bench-ansible) on first use, never into the
project's.

Six hosts on a four-host twin: api1 and api2 get a second sshd port (2222, opened in their
ufw for the bench and closed again at the end), listed as api1b and api2b: the same
machines under other names and ports, as the sandbox lists one sshd under several names.
So the 6-host numbers put twice the work on two of the machines (a harder case than six
separate machines on this 2-core box). Hosts per size: 1 = api1; 3 = api1, api2, db1;
6 = lb1, api1, api2, db1, api1b, api2b.
"""

from __future__ import annotations

import argparse
import contextlib
import dataclasses
import os
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "lib"))

from runbook.core.inventory import Inventory, InventoryGroup, InventoryHost  # noqa: E402
from runbook.core.profile import Profile, load_profile, twin_fleet_state  # noqa: E402

EXTRA_PORT = 2222
SIZES = {
    1: ["api1"],
    3: ["api1", "api2", "db1"],
    6: ["lb1", "api1", "api2", "db1", "api1b", "api2b"],
}


# ------------------------------------------------------------------ the hosts
def addresses(st: dict[str, Any]) -> dict[str, tuple[str, int, str]]:
    """Every bench host: (address, port, pinned host key line)."""

    def key(n: str) -> str:
        k = st[f"{n}_host_key"]
        return k if isinstance(k, str) else k[0]

    out = {n: (st[f"{n}_address"], 22, key(n)) for n in ("lb1", "api1", "api2", "db1")}
    for n in ("api1", "api2"):
        addr, _p, line = out[n]
        out[f"{n}b"] = (addr, EXTRA_PORT, line)
    return out


def ssh_root(st: dict[str, Any], addr: str, command: str) -> str:
    kh = Path(st["known_hosts"])
    got = subprocess.run(
        ["ssh", "-i", st["ssh_key"], "-o", f"UserKnownHostsFile={kh}", "-o",
         "StrictHostKeyChecking=yes", "-o", "BatchMode=yes", f"root@{addr}", command],
        capture_output=True, text=True, timeout=60, check=True,
    )  # fmt: skip
    return got.stdout


def extra_listeners(st: dict[str, Any], on: bool) -> None:
    """A second sshd port on api1 and api2 (and its ufw rule), or their removal."""
    conf = "/etc/ssh/sshd_config.d/zz-bench.conf"
    for n in ("api1", "api2"):
        addr = st[f"{n}_address"]
        if on:
            # an explicit Port replaces the default 22: keep 22 unless a file already names it
            script = (
                f"ports='Port {EXTRA_PORT}'; "
                "grep -qsh '^Port ' /etc/ssh/sshd_config /etc/ssh/sshd_config.d/*.conf || "
                f"ports='Port 22\nPort {EXTRA_PORT}'; printf '%b\\n' \"$ports\" > {conf}; "
                "sshd -t && systemctl reload ssh; "
                f"(ufw status | grep -q active) && ufw allow {EXTRA_PORT}/tcp >/dev/null; true"
            )
        else:
            script = (
                f"rm -f {conf}; systemctl reload ssh; "
                f"(ufw status | grep -q active) && ufw delete allow {EXTRA_PORT}/tcp >/dev/null; true"
            )
        ssh_root(st, addr, script)
    if on:
        deadline = time.monotonic() + 20
        import socket

        for n in ("api1", "api2"):
            while True:
                try:
                    socket.create_connection((st[f"{n}_address"], EXTRA_PORT), timeout=2).close()
                    break
                except OSError:
                    if time.monotonic() > deadline:
                        raise
                    time.sleep(0.2)


def profile_for(base: Profile, hosts: dict[str, tuple[str, int, str]], names: list[str]) -> Profile:
    """twin-fleet with an inventory of `names` (roles by name: lb1 lb, db1 db+redis, api*)."""
    inv_hosts = {
        n: InventoryHost(address=hosts[n][0], port=hosts[n][1], host_key=[hosts[n][2]])
        for n in names
    }
    groups = {
        "lb": [n for n in names if n.startswith("lb")],
        "api": [n for n in names if n.startswith("api")],
        "db": [n for n in names if n.startswith("db")],
        "redis": [n for n in names if n.startswith("db")],
    }
    inv = Inventory(
        hosts=inv_hosts, groups={g: InventoryGroup(hosts=h) for g, h in groups.items() if h}
    )
    return dataclasses.replace(base, inventory=inv)


# ------------------------------------------------------------------ measuring
def median_s(fn: Callable[[], float], rounds: int, warmup: int = 1) -> float:
    for _ in range(warmup):
        fn()
    return statistics.median(fn() for _ in range(rounds))


def timed(fn: Callable[[], Any]) -> float:
    t0 = time.perf_counter()
    fn()
    return time.perf_counter() - t0


def runbook_fanout(p: Profile, k: int, out: Path) -> tuple[float, float]:
    """(cold, warm) seconds of k `true` on every host: a fresh session, then the same one."""
    from runbook import open_session

    with contextlib.redirect_stdout(open(os.devnull, "w")):
        s = open_session("health_check", profile=p, run_dir=Path(tempfile.mkdtemp(dir=out)))
    names = list(s.fleet.hosts)

    def step(h: Any) -> None:
        for _ in range(k):
            h.probe(["true"])

    try:
        cold = timed(lambda: s.on(names, step, step="cold"))
        warm = timed(lambda: s.on(names, step, step="warm"))
        for fan in s.fleet_run.recap.steps:
            assert fan.ok, {h: r.error for h, r in fan.hosts.items()}
    finally:
        s.close()
    return cold, warm


def runbook_health(p: Profile, out: Path) -> float:
    from runbook import open_session
    from runbook.scenarios.health_check import check_fleet

    with contextlib.redirect_stdout(open(os.devnull, "w")):
        s = open_session("health_check", profile=p, run_dir=Path(tempfile.mkdtemp(dir=out)))
    try:
        return timed(lambda: check_fleet(s))
    finally:
        s.close()


def floor(
    hosts: dict[str, tuple[str, int, str]], names: list[str], key: str, k: int
) -> tuple[float, float]:
    """(cold, warm): one bare paramiko connection per host in parallel, a channel per command."""
    import paramiko

    def connect(n: str) -> paramiko.SSHClient:
        addr, port, line = hosts[n]
        c = paramiko.SSHClient()
        kind, b64 = line.split()[:2]
        c.get_host_keys().add(
            addr if port == 22 else f"[{addr}]:{port}", kind,
            paramiko.PKey.from_type_string(kind, __import__("base64").b64decode(b64)),
        )  # fmt: skip
        c.set_missing_host_key_policy(paramiko.RejectPolicy())
        c.connect(addr, port=port, username="root", key_filename=key, look_for_keys=False,
                  allow_agent=False, timeout=10)  # fmt: skip
        return c

    def commands(c: paramiko.SSHClient) -> None:
        t = c.get_transport()
        assert t is not None
        for _ in range(k):
            ch = t.open_session()
            ch.exec_command("true")
            assert ch.recv_exit_status() == 0
            ch.close()

    def parallel(fn: Callable[[str], Any]) -> list[Any]:
        got: dict[str, Any] = {}
        threads = [threading.Thread(target=lambda n=n: got.__setitem__(n, fn(n))) for n in names]
        for t in threads:
            t.start()
        for t in threads:
            t.join()
        return [got[n] for n in names]

    clients: list[paramiko.SSHClient] = []

    def cold_run(n: str) -> paramiko.SSHClient:
        c = connect(n)
        commands(c)
        return c

    t0 = time.perf_counter()
    clients = parallel(cold_run)
    cold = time.perf_counter() - t0
    by = dict(zip(names, clients, strict=True))
    warm = timed(lambda: parallel(lambda n: commands(by[n])))
    for c in clients:
        c.close()
    return cold, warm


# ------------------------------------------------------------------ ansible
def ansible_bin(venv: Path) -> Path:
    if not (venv / "bin" / "ansible").exists():
        print(f"installing ansible-core into {venv} (benchmark only)", file=sys.stderr)
        subprocess.run([sys.executable, "-m", "venv", str(venv)], check=True)
        subprocess.run([str(venv / "bin" / "pip"), "install", "-q", "ansible-core"], check=True)
    return venv / "bin"


def ansible_setup(
    work: Path, hosts: dict[str, tuple[str, int, str]], names: list[str], key: str
) -> tuple[Path, Path, Path]:
    kh = work / f"known_hosts-{len(names)}"
    kh.write_text("".join(
        f"{a if p == 22 else f'[{a}]:{p}'} {line}\n" for a, p, line in (hosts[n] for n in names)
    ))  # fmt: skip
    inv = work / f"inventory-{len(names)}.ini"
    inv.write_text(
        "[bench]\n"
        + "".join(f"{n} ansible_host={hosts[n][0]} ansible_port={hosts[n][1]}\n" for n in names)
        + f"[bench:vars]\nansible_user=root\nansible_ssh_private_key_file={key}\n"
        "ansible_python_interpreter=/usr/bin/python3\n"
        f"ansible_ssh_common_args='-o UserKnownHostsFile={kh} -o StrictHostKeyChecking=yes'\n"
    )
    play = work / "ten.yml"
    play.write_text(
        "- hosts: all\n  gather_facts: false\n  tasks:\n"
        + "".join("    - command: 'true'\n      changed_when: false\n" for _ in range(10))
    )
    return inv, play, kh


def ansible_env(work: Path, forks: int) -> dict[str, str]:
    return {
        **os.environ,
        "ANSIBLE_FORKS": str(forks),
        "ANSIBLE_PIPELINING": "True",
        "ANSIBLE_HOST_KEY_CHECKING": "True",
        "ANSIBLE_LOCAL_TEMP": str(work / "ansible-tmp"),
        "ANSIBLE_SSH_CONTROL_PATH_DIR": str(work / "cp"),
        "ANSIBLE_NOCOLOR": "1",
        "ANSIBLE_DEPRECATION_WARNINGS": "False",
        "ANSIBLE_CONFIG": str(work / "none.cfg"),
    }


def ansible_run(argv: list[str], env: dict[str, str]) -> float:
    t0 = time.perf_counter()
    got = subprocess.run(argv, capture_output=True, text=True, env=env, timeout=300)
    took = time.perf_counter() - t0
    if got.returncode != 0:
        raise RuntimeError(
            f"{' '.join(argv[:3])}: exit {got.returncode}: {got.stdout[-800:]}{got.stderr[-800:]}"
        )
    return took


# ------------------------------------------------------------------ main
def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--rounds", type=int, default=5)
    ap.add_argument("--ansible-venv", type=Path, default=Path("/var/tmp/runbook-bench-ansible"))
    args = ap.parse_args()
    st = twin_fleet_state()
    base = load_profile("twin-fleet")
    hosts = addresses(st)
    key = st["ssh_key"]
    bin_dir = ansible_bin(args.ansible_venv)
    work = Path(tempfile.mkdtemp(prefix="runbook-fleet-bench-"))
    out = work / "runs"
    out.mkdir()
    os.environ.setdefault("RUNBOOK_OUTPUTS", str(out))
    rows: dict[str, dict[int, float]] = {}

    def put(name: str, n: int, v: float) -> None:
        rows.setdefault(name, {})[n] = v

    extra_listeners(st, on=True)
    try:
        for n, names in SIZES.items():
            p = profile_for(base, hosts, names)
            for k in (1, 10):
                got = [runbook_fanout(p, k, out) for _ in range(args.rounds + 1)][1:]
                put(f"runbook cold, {k} cmd", n, statistics.median(c for c, _w in got))
                put(f"runbook warm, {k} cmd", n, statistics.median(w for _c, w in got))
                fl = [floor(hosts, names, key, k) for _ in range(args.rounds + 1)][1:]
                put(f"floor cold, {k} cmd", n, statistics.median(c for c, _w in fl))
                put(f"floor warm, {k} cmd", n, statistics.median(w for _c, w in fl))
            inv, play, _kh = ansible_setup(work, hosts, names, key)
            env = ansible_env(work, len(names))
            one = [str(bin_dir / "ansible"), "all", "-i", str(inv), "-m", "command", "-a", "true"]
            ten = [str(bin_dir / "ansible-playbook"), "-i", str(inv), str(play)]
            put(
                "ansible, 1 cmd",
                n,
                median_s(lambda one=one, env=env: ansible_run(one, env), args.rounds),
            )
            put(
                "ansible, 10 cmd",
                n,
                median_s(lambda ten=ten, env=env: ansible_run(ten, env), args.rounds),
            )
            put("health_check", n, median_s(lambda p=p: runbook_health(p, out), args.rounds))
            print(f"measured {n} host(s)", file=sys.stderr)
    finally:
        extra_listeners(st, on=False)

    print(f"fleet fan-out benchmark on the fleet twin ({os.cpu_count()} cores), "
          f"median of {args.rounds} rounds, seconds")  # fmt: skip
    print(f"  {'':24}{'1 host':>10}{'3 hosts':>10}{'6 hosts':>10}{'6 / 1':>8}")
    for name, by in rows.items():
        print(f"  {name:24}" + "".join(f"{by[n]:10.3f}" for n in SIZES) + f"{by[6] / by[1]:8.2f}x")

    def verdict(label: str, ratio: float, target: float) -> None:
        print(
            f"  {label:58} {ratio:5.2f}x  (target <= {target}x) -> {'MET' if ratio <= target else 'MISSED'}"
        )

    print("targets")
    verdict(
        "one command, 6 hosts / 1 host (runbook warm)",
        rows["runbook warm, 1 cmd"][6] / rows["runbook warm, 1 cmd"][1],
        1.5,
    )
    verdict(
        "one command, 6 hosts / 1 host (runbook cold)",
        rows["runbook cold, 1 cmd"][6] / rows["runbook cold, 1 cmd"][1],
        1.5,
    )
    verdict(
        "one command on 6 hosts, runbook / floor (warm)",
        rows["runbook warm, 1 cmd"][6] / rows["floor warm, 1 cmd"][6],
        1.3,
    )
    verdict(
        "one command on 6 hosts, runbook / floor (cold)",
        rows["runbook cold, 1 cmd"][6] / rows["floor cold, 1 cmd"][6],
        1.3,
    )
    verdict(
        "health_check, 6 hosts / 1 host", rows["health_check"][6] / rows["health_check"][1], 1.5
    )
    print("against ansible (ansible / runbook cold; higher is better for runbook)")
    for k in (1, 10):
        for n in SIZES:
            r = rows[f"ansible, {k} cmd"][n] / rows[f"runbook cold, {k} cmd"][n]
            print(f"  {k:2} cmd on {n} host(s): {r:6.1f}x")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
