"""The production twin (lib/runbook/twin): a systemd-booted Debian 12 server and its
"internet", reached from the runner side with production.yaml's own settings.

Root and systemd-nspawn only (`-m twin` selects these tests); see the `twin`
fixture in conftest.py for how they skip or, with RUNBOOK_REQUIRE_TWIN=1, fail.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
from conftest import twin_exec

from runbook.core.paths import project_root

pytestmark = pytest.mark.twin


def _links() -> str:
    return subprocess.run(["ip", "-o", "link"], capture_output=True, text=True).stdout


def _pids_in(cgroup_dirs: list[str]) -> set[int]:
    pids: set[int] = set()
    for d in cgroup_dirs:
        for procs in Path(d).rglob("cgroup.procs"):
            pids.update(int(x) for x in procs.read_text().split())
    return pids


def _alive(pid: int) -> bool:
    try:
        with open(f"/proc/{pid}/stat") as fh:
            return fh.read().rsplit(")", 1)[1].split()[0] != "Z"
    except OSError:
        return False


def test_a_second_twin_comes_up_on_its_own_and_down_leaves_nothing(twin) -> None:
    from runbook.twin import Twin

    other = Twin(project_root() / ".twin-test-2")
    other.down()  # whatever an interrupted earlier run left
    st = other.up()
    try:
        main = twin.state
        # its own address, bridge, host key, CA and secrets
        assert st["host"] != main["host"] and st["bridge"] != main["bridge"]
        assert st["host_key"] != main["host_key"]
        assert Path(st["ca_file"]).read_text() != Path(main["ca_file"]).read_text()
        assert other.secrets()["DEALIX_ADMIN_KEY"] != twin.secrets()["DEALIX_ADMIN_KEY"]
        rows = {r["name"]: r for r in other.status()}
        assert all(r["healthy"] for r in rows.values()), rows
        # own cgroups in every hierarchy, each holding only its container's processes
        assert st["cgroups"] and all(Path(d).is_dir() for d in st["cgroups"])
        inside = _pids_in(st["cgroups"])
        assert len(inside) > 10 and not inside & _pids_in(main["cgroups"])
        links = _links()
        for name in (st["bridge"], *(f"vb-{m}" for m in st["machines"].values())):
            assert f" {name}:" in links or f" {name}@" in links, name
        pids = [*st["pids"].values(), *inside]
    finally:
        done = other.down()
    assert set(done["stopped"]) == {"server", "internet", "stubs"}
    assert "SIGTERM" in done["stopped"]["server"], done  # a clean poweroff, no SIGKILL
    left = [p for p in pids if _alive(p)]
    assert not left, f"processes left behind: {left}"
    links = _links()
    assert st["bridge"] not in links and not any(
        f"vb-{m}" in links for m in st["machines"].values()
    )
    with open("/proc/mounts") as fh:
        mounts = fh.read()
    assert str(other.dir) not in mounts
    assert not [d for d in st["cgroups"] if Path(d).exists()]
    assert not other.state_file.exists()


def test_the_host_key_is_pinned_and_a_changed_key_is_refused(twin, tmp_path) -> None:
    from runbook.core.transport import SSHTarget, SSHTransport
    from runbook.errors import HostKeyMismatch

    st = twin.state
    out: list[bytes] = []

    def target(keys: list[str]) -> SSHTarget:
        return SSHTarget(host=st["host"], user="root", key_path=st["ssh_key"], host_keys=keys)

    t = SSHTransport(target([st["host_key"]]))
    try:
        done = t.execute(
            "systemctl is-active ssh dealix-api",
            on_stdout=out.append,
            on_stderr=lambda _b: None,
            timeout=30,
        )
    finally:
        t.close()
    assert done.exit_code == 0 and b"".join(out).split() == [b"active", b"active"]
    subprocess.run(
        ["ssh-keygen", "-q", "-t", "ed25519", "-N", "", "-f", str(tmp_path / "k")], check=True
    )
    other_key = " ".join((tmp_path / "k.pub").read_text().split()[:2])
    t = SSHTransport(target([other_key]))
    with pytest.raises(HostKeyMismatch):
        try:
            t.execute("true", on_stdout=out.append, on_stderr=lambda _b: None, timeout=30)
        finally:
            t.close()


PY_GET = """
import json, sys, httpx
r = httpx.get(sys.argv[1], headers=json.loads(sys.argv[2]) if len(sys.argv) > 2 else None)
print(r.status_code, r.text[:300].replace(chr(10), ' '))
"""


def test_https_deep_health_is_green_from_the_runner_side_through_the_test_ca(twin) -> None:
    deep = "import httpx; r = httpx.get('https://api.dealix.me/health/deep'); print(r.status_code, r.json()['status'])"
    got = twin_exec(twin, [sys.executable, "-c", deep])
    assert got.returncode == 0, got.stderr
    assert got.stdout.split() == ["200", "green"]
    # the CA is what makes it verify: without it the same call fails verification
    bare = twin_exec(
        twin,
        [
            "env",
            "SSL_CERT_FILE=/etc/ssl/certs/ca-certificates.crt",
            sys.executable,
            "-c",
            PY_GET,
            "https://api.dealix.me/health",
        ],
    )
    assert bare.returncode != 0 and "CERTIFICATE_VERIFY_FAILED" in bare.stderr
    # and the names exist only inside `twin exec`: the machine's /etc/hosts is untouched
    assert "api.dealix.me" not in Path("/etc/hosts").read_text()


def test_the_internet_container_answers_at_the_real_hostnames(twin) -> None:
    from runbook.twin.internet import SAAS

    st = twin.state
    sec = twin.secrets()
    gh = twin_exec(
        twin,
        [
            sys.executable,
            "-c",
            PY_GET,
            "https://api.github.com/repos/VoXc2/dealix/actions/runs?branch=main&per_page=3",
            json.dumps(
                {
                    "Authorization": f"Bearer {sec['GITHUB_TOKEN']}",
                    "Accept": "application/vnd.github+json",
                }
            ),
        ],
    )
    assert gh.stdout.startswith("200 "), gh.stdout + gh.stderr
    assert st["origin_head"] in gh.stdout
    # every name: TLS verified with the twin's CA, and the answer is the stub's (no 502)
    script = (
        "import httpx, sys\n"
        "for name in sys.argv[1:]:\n"
        "    r = httpx.get(f'https://{name}/api/v2/summary.json')\n"
        "    print(name, r.status_code, r.headers.get('server', ''))\n"
    )
    got = twin_exec(twin, [sys.executable, "-c", script, *SAAS])
    assert got.returncode == 0, got.stderr
    answers = {line.split()[0]: line.split()[1:] for line in got.stdout.splitlines()}
    assert set(answers) == set(SAAS)
    for name, (code, *_server) in answers.items():
        assert code not in ("502", "504"), (name, code)
    for page in ("status.anthropic.com", "status.openai.com"):
        assert answers[page][0] == "200"
    # and the twin itself reaches them by name, trusting the same CA
    on_box = twin.ssh(
        "curl -sf https://status.openai.com/api/v2/summary.json | jq -r .status.indicator"
    )
    assert on_box.stdout.strip() == "none"


def _record(outputs: Path, scenario: str) -> dict:
    records = sorted(outputs.glob(f"twin/{scenario}/*/record.json"))
    assert records, f"no record under {outputs}"
    return json.loads(records[-1].read_text())


def _runbook_run(
    twin, tmp_path: Path, scenario: str, *extra: str
) -> tuple[subprocess.CompletedProcess, dict]:
    runbook = str(Path(sys.executable).with_name("runbook"))
    outputs = tmp_path / "outputs"
    got = twin_exec(
        twin,
        [runbook, "run", scenario, "--env", "twin", *extra],
        env={"RUNBOOK_OUTPUTS": str(outputs), "PYTHONDONTWRITEBYTECODE": "1"},
        timeout=900,
    )
    return got, _record(outputs, scenario)


def test_health_check_with_the_twin_profile_reaches_the_twin(twin, tmp_path) -> None:
    got, record = _runbook_run(twin, tmp_path, "health_check")
    assert record["environment"] == "twin"
    assert twin.state["host"] in str(record["target"])
    failed = [c for c in record["checks"] if c["status"] != "passed"]
    assert got.returncode == 0 and record["outcome"] == "ok", (failed, got.stderr[-2000:])


def test_restore_drill_passes_on_the_twin(twin, tmp_path) -> None:
    got, record = _runbook_run(twin, tmp_path, "restore_drill", "--confirm", "twin")
    failed = [c for c in record["checks"] if c["status"] != "passed"]
    assert got.returncode == 0 and record["outcome"] == "ok", (failed, got.stderr[-2000:])
    # the drill read the production-sized nightly dump the twin made with pg_dump | gzip
    assert any("dealix-" in json.dumps(c) for c in record["checks"])


def test_twin_commands_refuse_without_root_with_the_fix() -> None:
    if os.geteuid() == 0:
        got = subprocess.run(
            [
                "setpriv",
                "--reuid=65534",
                "--regid=65534",
                "--clear-groups",
                str(Path(sys.executable).with_name("runbook")),
                "twin",
                "status",
            ],
            capture_output=True,
            text=True,
            cwd="/",
            env={**os.environ, "HOME": "/nonexistent"},
        )
    else:
        got = subprocess.run(
            [str(Path(sys.executable).with_name("runbook")), "twin", "status"],
            capture_output=True,
            text=True,
        )
    assert got.returncode == 1
    assert "needs root" in got.stderr and "sudo" in got.stderr
