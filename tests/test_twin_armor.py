"""Layer 2, armor on the server, on the production twin (`-m twin`, root and systemd-nspawn).

The runbook's own preflight arms the twin (a changing scenario run with the twin
profile, i.e. production.yaml); then a root shell on the server, over SSH and
outside the runbook (no guard reads it), tries what the guard misses.
"""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest
from conftest import twin_exec

pytestmark = pytest.mark.twin

KEPT = "server-backup-20260423-084442"
PROTECTED = "/opt/dealix/.env.pre-v3.0.0.bak"
ORIGIN = "/srv/git/dealix.git"


def _run(twin, tmp_path: Path, scenario: str, *extra: str) -> tuple[int, dict]:
    runbook = str(Path(sys.executable).with_name("runbook"))
    outputs = tmp_path / "outputs" / scenario
    got = twin_exec(
        twin,
        [runbook, "run", scenario, "--env", "twin", *extra],
        env={"RUNBOOK_OUTPUTS": str(outputs), "PYTHONDONTWRITEBYTECODE": "1"},
        timeout=900,
    )
    records = sorted(outputs.glob(f"twin/{scenario}/*/record.json"))
    assert records, (got.stdout[-1500:], got.stderr[-1500:])
    return got.returncode, json.loads(records[-1].read_text())


def _root(twin, cmd: str) -> subprocess.CompletedProcess[str]:
    return twin.ssh(cmd, check=False)


def test_armor_on_the_twin_holds_what_a_root_shell_tries(twin, tmp_path) -> None:
    code, record = _run(twin, tmp_path, "restore_drill", "--confirm", "twin")
    armor = {c["name"]: c for c in record["checks"] if c["name"].startswith("Armor: ")}
    assert code == 0 and record["outcome"] == "ok", armor
    assert armor["Armor: app repo hook reference-transaction"]["status"] == "passed", armor
    assert armor["Armor: origin protects main"]["status"] == "passed", armor
    immutable = armor[f"Armor: immutable {PROTECTED}"]
    # nspawn keeps CAP_LINUX_IMMUTABLE by default; if a platform drops it the piece
    # must say "not available", never "passed"
    assert immutable["status"] in ("passed", "not available"), immutable

    kept = _root(twin, f"git -C /opt/dealix rev-parse {KEPT}").stdout.strip()
    deleted = _root(twin, f"git -C /opt/dealix update-ref -d refs/heads/{KEPT}")
    assert deleted.returncode != 0 and "armor" in deleted.stderr, deleted
    assert _root(twin, f"git -C /opt/dealix rev-parse {KEPT}").stdout.strip() == kept

    pushed = _root(
        twin,
        f"rm -rf /tmp/dev && git clone -q {ORIGIN} /tmp/dev && cd /tmp/dev && "
        "git -c user.name=d -c user.email=d@e commit -q --allow-empty -m direct && "
        "git push origin HEAD:main",
    )
    assert pushed.returncode != 0 and "Protected branch" in pushed.stderr, pushed

    if immutable["status"] == "passed":
        before = _root(twin, f"sha256sum {PROTECTED}").stdout
        rm = _root(twin, f"rm -f {PROTECTED}; python3 -c 'import os; os.remove(\"{PROTECTED}\")'")
        assert "Operation not permitted" in rm.stderr, rm
        assert _root(twin, f"sha256sum {PROTECTED}").stdout == before

    code, health = _run(twin, tmp_path, "health_check")
    signal = next(c for c in health["checks"] if c["name"] == "Armor")
    assert signal["status"] in ("passed", "not available"), signal
    assert code == 0, signal
