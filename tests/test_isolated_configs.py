"""Isolated mode's supervisord and nginx configs, as pure functions of state.json.

No root needed: these check what `up --isolated` writes (the namespace
wrapping, the listen addresses) and that loopback mode's configs carry none
of it; tests/test_security_isolated.py proves the running result as root.
"""

from __future__ import annotations

import shlex
from pathlib import Path

from runbook.sandbox.build.nginx import write_nginx_config
from runbook.sandbox.build.supervisor import NETNS_PROGRAMS, program_configs
from runbook.sandbox.layout import Layout

PORTS = {
    "pg_port": 54001,
    "redis_port": 54002,
    "api_port": 54003,
    "nginx_port": 54004,
    "stubs_port": 54005,
    "ssh_port": 54006,
}
ISO = {"services_ns": "rbsabc123", "operator_ip": "10.213.7.1", "server_ip": "10.213.7.2"}


def _command(conf: str) -> list[str]:
    line = next(ln for ln in conf.splitlines() if ln.startswith("command="))
    return shlex.split(line[len("command=") :])


def test_loopback_configs_have_no_namespace(tmp_path: Path) -> None:
    lay = Layout(tmp_path)
    progs = program_configs(dict(PORTS), lay)
    assert not any("netns" in text for text in progs.values())
    stubs = _command(progs["saas-stubs"])
    assert stubs[stubs.index("--host") + 1] == "127.0.0.1" and stubs.count("--host") == 1
    write_nginx_config(dict(PORTS), lay)
    nginx = (lay.nginx_dir / "nginx.conf").read_text()
    assert "listen 127.0.0.1:54004;" in nginx and "listen 54004;" not in nginx


def test_isolated_configs_run_the_server_side_in_the_namespace(tmp_path: Path) -> None:
    lay = Layout(tmp_path)
    state = {**PORTS, "isolated": dict(ISO)}
    plain = program_configs(dict(PORTS), lay)
    progs = program_configs(state, lay)
    for name in NETNS_PROGRAMS:
        cmd = _command(progs[name])
        assert cmd[:4] == ["ip", "netns", "exec", "rbsabc123"], (name, cmd)
        # the program itself is unchanged after the wrapper (and a privilege drop)
        inner = _command(plain[name])
        assert cmd[-len(inner) :] == inner
        user = next((ln[5:] for ln in plain[name].splitlines() if ln.startswith("user=")), None)
        assert "user=" not in progs[name]  # `ip netns exec` must start as root
        if user:
            assert cmd[4:8] == ["setpriv", f"--reuid={user}", f"--regid={user}", "--init-groups"]
    # sshd (the loopback one) and the stubs ("the internet") stay outside
    assert "netns" not in progs["sshd"] and "netns" not in progs["saas-stubs"]
    stubs = _command(progs["saas-stubs"])
    hosts = [stubs[i + 1] for i, a in enumerate(stubs) if a == "--host"]
    assert hosts == ["127.0.0.1", "10.213.7.1"]
    write_nginx_config(state, lay)
    nginx = (lay.nginx_dir / "nginx.conf").read_text()
    assert "listen 127.0.0.1:54004;" in nginx and "listen 54004;" in nginx
    assert "proxy_pass http://127.0.0.1:54003;" in nginx  # the API on the namespace's loopback
