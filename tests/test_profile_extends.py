"""`extends:` in parameters/*.yaml: a variant profile holds only what differs from its base."""

from __future__ import annotations

from pathlib import Path

import pytest

from runbook import ParameterError
from runbook.core.profile import load_profile

BASE = """\
name: base
kind: staging
description: "base"
target:
  transport: ssh
  host: base.example
  port: 2200
  user: deploy
  host_key: ["ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAIExampleExampleExampleExampleExampleExample"]
app:
  dir: /srv/app
do_not_touch:
  protected_branches: [main]
  files: [/srv/app/.env.pre-v3.0.0.bak]
security:
  firewall: ufw
  fail2ban_status_file: /tmp/status
  app_logs: ["/a", "/b"]
"""


def _write(d: Path, name: str, text: str) -> None:
    (d / f"{name}.yaml").write_text(text)


def test_variant_overrides_merges_and_nulls(tmp_path: Path) -> None:
    _write(tmp_path, "base", BASE)
    _write(
        tmp_path,
        "variant",
        "extends: base\nname: variant\ntarget:\n  host: 10.213.1.2\n"
        "security:\n  fail2ban_status_file: null\n  app_logs: [/c]\n",
    )
    p = load_profile("variant", directory=tmp_path)
    assert p.name == "variant"
    assert p.target.host == "10.213.1.2"
    assert p.target.port == 2200 and p.target.user == "deploy"  # kept from the base
    assert p.app.dir == "/srv/app"
    assert p.security.firewall == "ufw"
    assert p.security.fail2ban_status_file is None  # null overrides the base's value
    assert p.security.app_logs == ["/c"]  # lists replace, not append
    # the base itself is untouched
    assert load_profile("base", directory=tmp_path).target.host == "base.example"


def test_extends_chain_and_errors(tmp_path: Path) -> None:
    _write(tmp_path, "base", BASE)
    _write(tmp_path, "mid", "extends: base\nname: mid\ntarget:\n  port: 22\n")
    _write(tmp_path, "leaf", "extends: mid\nname: leaf\n")
    leaf = load_profile("leaf", directory=tmp_path)
    assert (leaf.target.host, leaf.target.port) == ("base.example", 22)
    _write(tmp_path, "c1", "extends: c2\nname: c1\n")
    _write(tmp_path, "c2", "extends: c1\nname: c2\n")
    with pytest.raises(ParameterError, match="cycle"):
        load_profile("c1", directory=tmp_path)
    _write(tmp_path, "orphan", "extends: nosuch\nname: orphan\n")
    with pytest.raises(ParameterError, match="does not exist"):
        load_profile("orphan", directory=tmp_path)


def test_sandbox_isolated_extends_sandbox() -> None:
    """The committed variant is a diff on sandbox.yaml, not a copy that can drift."""
    import yaml

    root = Path(__file__).resolve().parents[1] / "parameters"
    raw = yaml.safe_load((root / "sandbox-isolated.yaml").read_text())
    assert raw["extends"] == "sandbox"
    assert "backups" not in raw and "targets" not in raw and "llm" not in raw
