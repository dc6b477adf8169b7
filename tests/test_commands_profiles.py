"""Command building, local transport and profile validation: no sandbox needed."""

from __future__ import annotations

import os
import time
from pathlib import Path

import pytest

from runbook.core.command import build_command
from runbook.core.profile import load_profile
from runbook.core.transport import LocalTransport
from runbook.errors import ParameterError

HOSTILE = [
    "; touch {p}",
    "$(touch {p})",
    "`touch {p}`",
    "| touch {p}",
    "&& touch {p}",
    "'\"; touch {p}",
]


def _run_local(cmd: str, timeout: float | None = 10):
    out: list[bytes] = []
    err: list[bytes] = []
    outcome = LocalTransport().execute(
        cmd, on_stdout=out.append, on_stderr=err.append, timeout=timeout
    )
    return outcome, b"".join(out).decode(), b"".join(err).decode()


@pytest.mark.parametrize("template", HOSTILE)
def test_metacharacters_in_arguments_and_env_are_never_executed(tmp_path: Path, template: str):
    canary = tmp_path / "pwned"
    value = template.format(p=canary)
    cmd = build_command(["echo", value], env={"VAL": value})
    outcome, out, _ = _run_local(cmd)
    assert outcome.exit_code == 0
    assert out.strip() == value
    assert not canary.exists()
    outcome, out, _ = _run_local(
        build_command(["sh", "-c", 'printf %s "$VAL"'], env={"VAL": value})
    )
    assert out == value and not canary.exists()


def test_raw_string_needs_shell_true() -> None:
    with pytest.raises(ParameterError, match="shell=True"):
        build_command("ls -l")
    assert build_command("ls -l | wc -l", shell=True) == "ls -l | wc -l"


def test_sudo_is_non_interactive() -> None:
    assert build_command(["id"], sudo="postgres").startswith("sudo -n -u postgres -- ")


def test_bad_env_name_refused() -> None:
    with pytest.raises(ParameterError):
        build_command(["true"], env={"A;B": "x"})


def test_local_timeout_kills_the_whole_process_group(tmp_path: Path) -> None:
    pidfile = tmp_path / "child.pid"
    started = time.monotonic()
    outcome, _, _ = _run_local(f"sleep 60 & echo $! > {pidfile}; wait", timeout=0.5)
    assert outcome.timed_out and outcome.exit_code is None
    assert time.monotonic() - started < 10
    child = int(pidfile.read_text())
    time.sleep(0.2)
    assert not Path(f"/proc/{child}").exists() or "Z" in Path(f"/proc/{child}/stat").read_text()


def test_local_timeout_holds_after_the_command_closes_its_output(tmp_path: Path) -> None:
    pidfile = tmp_path / "self.pid"
    outcome, _, _ = _run_local(f"echo $$ > {pidfile}; exec >/dev/null 2>&1; sleep 60", timeout=0.5)
    assert outcome.timed_out and outcome.exit_code is None and outcome.signal is not None
    pid = int(pidfile.read_text())
    assert not Path(f"/proc/{pid}").exists() or "Z" in Path(f"/proc/{pid}/stat").read_text()


def test_local_floods_on_both_streams_do_not_deadlock() -> None:
    cmd = "head -c 4000000 /dev/zero >&2; head -c 4000000 /dev/zero; head -c 3000000 /dev/zero >&2"
    sizes = {"out": 0, "err": 0}

    def count(key: str):
        def add(b: bytes) -> None:
            sizes[key] += len(b)

        return add

    outcome = LocalTransport().execute(
        cmd, on_stdout=count("out"), on_stderr=count("err"), timeout=60
    )
    assert outcome.exit_code == 0
    assert sizes == {"out": 4_000_000, "err": 7_000_000}


def test_local_killed_by_signal_reports_the_signal() -> None:
    outcome, _, _ = _run_local("kill -TERM $$")
    assert outcome.exit_code is None and outcome.signal == "TERM"


def _write(tmp_path: Path, name: str, text: str) -> Path:
    (tmp_path / f"{name}.yaml").write_text(text)
    return tmp_path


def test_production_profile_is_section_0() -> None:
    p = load_profile("production")
    assert (p.target.host, p.target.user, p.app.dir) == ("188.245.55.180", "root", "/opt/dealix")
    assert p.services.manager == "systemd" and p.services.api == "dealix-api"
    assert p.postgres.psql == "sudo -n -u postgres psql"
    assert p.api.base_url == "https://api.dealix.me"
    assert p.backups.dir == "/var/backups/postgres"
    assert p.posthog.ingest_url == "https://eu.i.posthog.com"
    assert p.target.key == os.path.expanduser("~/.ssh/dealix_deploy")
    assert "server-backup-20260423-084442" in p.do_not_touch.no_force_delete_branches


@pytest.mark.parametrize(
    ("body", "key"),
    [
        ("name: x\nkind: staging\ntarget: {host: h, colour: red}\n", "target.colour"),
        ("name: x\nkind: staging\ntarget: {host: h, port: twenty}\n", "target.port"),
        (
            "name: x\nkind: staging\ntarget: {host: h}\ntargets: {rpo_hours: soon}\n",
            "targets.rpo_hours",
        ),
        ("name: x\nkind: testing\ntarget: {host: h}\n", "kind"),
        ("name: x\nkind: staging\ntarget: {host: ''}\n", "target.host"),
        ("kind: staging\ntarget: {host: h}\n", "name"),
    ],
)
def test_bad_profiles_name_the_key_and_the_file(tmp_path: Path, body: str, key: str) -> None:
    d = _write(tmp_path, "x", body)
    with pytest.raises(ParameterError) as info:
        load_profile("x", directory=d)
    assert info.value.key == key
    assert str(d / "x.yaml") in str(info.value) or info.value.source == str(d / "x.yaml")


SAFE = "do_not_touch: {protected_branches: [main], files: [/opt/dealix/.env.pre-v3.0.0.bak]}\n"


@pytest.mark.parametrize(
    ("body", "key"),
    [
        # a staging/production profile must state appendix B and pin the host key
        ("name: x\nkind: staging\ntarget: {host: h, host_key: [k]}\n", "do_not_touch"),
        (
            "name: x\nkind: production\ntarget: {host: h, host_key: [k]}\n"
            "do_not_touch: {protected_branches: [main]}\n",
            "do_not_touch.files",
        ),
        (
            "name: x\nkind: production\ntarget: {host: h, host_key: [k]}\n"
            "do_not_touch: {files: [/a], protected_branches: []}\n",
            "do_not_touch.protected_branches",
        ),
        ("name: x\nkind: staging\ntarget: {host: h}\n" + SAFE, "target.host_key"),
        ("name: x\nkind: production\ntarget: {host: h, host_key: []}\n" + SAFE, "target.host_key"),
    ],
)
def test_non_sandbox_profiles_need_do_not_touch_and_a_pinned_key(
    tmp_path: Path, body: str, key: str
) -> None:
    d = _write(tmp_path, "x", body)
    with pytest.raises(ParameterError) as info:
        load_profile("x", directory=d)
    assert info.value.key == key
    assert info.value.source == str(d / "x.yaml") and str(d / "x.yaml") in str(info.value)
    if key == "target.host_key":
        assert "ssh-keyscan" in str(info.value)


def test_complete_non_sandbox_and_sandbox_profiles_load(tmp_path: Path) -> None:
    d = _write(tmp_path, "x", "name: x\nkind: staging\ntarget: {host: h, host_key: [k]}\n" + SAFE)
    assert load_profile("x", directory=d).do_not_touch.files == ["/opt/dealix/.env.pre-v3.0.0.bak"]
    # a pinned known_hosts file is a pin too
    d = _write(tmp_path, "y", "name: y\nkind: staging\ntarget: {host: h, known_hosts: /k}\n" + SAFE)
    assert load_profile("y", directory=d).target.known_hosts == "/k"
    # the sandbox kind keeps its defaults
    d = _write(tmp_path, "z", "name: z\nkind: sandbox\ntarget: {transport: local}\n")
    assert load_profile("z", directory=d).do_not_touch.protected_branches == ["main"]


def test_unknown_environment_lists_the_known_ones() -> None:
    with pytest.raises(ParameterError, match="production"):
        load_profile("prod")
