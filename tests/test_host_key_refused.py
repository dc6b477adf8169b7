"""An unknown or changed SSH host key ends a run "refused" (exit 4), as the
README's exit-code table says, and the next step is the pinning commands.

Against the real sandbox sshd, through `runbook run` as an operator types it.
"""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
from pathlib import Path

import paramiko
import pytest

ROOT = Path(__file__).resolve().parents[1]


def _profile(tmp_path: Path, monkeypatch, pinned: str) -> str:
    """A production-kind profile pointing at the sandbox, its host key replaced by `pinned`."""
    params = tmp_path / "parameters"
    shutil.copytree(ROOT / "parameters", params)
    text = (params / "sandbox.yaml").read_text()
    assert "  known_hosts: ${sandbox.known_hosts}\n" in text
    text = text.replace(
        "  known_hosts: ${sandbox.known_hosts}\n", f'  host_key:\n    - "{pinned}"\n'
    )
    text = text.replace("name: sandbox", "name: unpinned").replace(
        "kind: sandbox", "kind: production"
    )
    (params / "unpinned.yaml").write_text(text)
    monkeypatch.setenv("RUNBOOK_PARAMETERS_DIR", str(params))
    monkeypatch.setenv("RUNBOOK_OUTPUTS", str(tmp_path / "outputs"))
    return "unpinned"


def _run(*args: str) -> tuple[int, str, dict]:
    p = subprocess.run(
        [sys.executable, "-m", "runbook.cli", "run", *args],
        capture_output=True,
        text=True,
        timeout=600,
        cwd=ROOT,
    )
    facts: dict[str, str] = {}
    for line in p.stdout.splitlines():
        if line and not line.startswith(" ") and ":" in line:
            label, _, value = line.partition(":")
            facts.setdefault(label.strip(), value.strip())
    record = json.loads((Path(facts["evidence"]) / "record.json").read_text())
    return p.returncode, p.stdout + p.stderr, {"facts": facts, "record": record}


@pytest.mark.parametrize("case", ["placeholder", "other key"])
def test_deploy_with_no_or_a_wrong_pinned_key_ends_refused_with_the_pin_commands(
    sandbox, tmp_path, monkeypatch, case
) -> None:
    st = sandbox.state
    if case == "placeholder":
        pinned = "PLACEHOLDER: pinned ssh-ed25519 key (see the comment above)"
    else:
        other = paramiko.Ed25519Key.from_private_key_file(st["ssh_key"])  # not the host key
        pinned = f"{other.get_name()} {other.get_base64()}"
    env = _profile(tmp_path, monkeypatch, pinned)
    code, out, got = _run("deploy", "--env", env, "--confirm", env)
    facts, record = got["facts"], got["record"]
    assert code == 4, out
    assert facts["outcome"] == "refused (exit 4)", out
    assert record["outcome"] == "refused" and record["commands_run"] == 0, record
    assert record["error"]["type"] in ("HostKeyUnknown", "HostKeyMismatch"), record["error"]
    pin = f"ssh-keyscan -p {int(st['ssh_port'])} -t ed25519 {st['ssh_host']} > /tmp/hostkey"
    assert facts["next"].startswith(pin), out
    assert facts["next"].endswith("ssh-keygen -lf /tmp/hostkey"), out
    assert record["next_command"] == facts["next"]
