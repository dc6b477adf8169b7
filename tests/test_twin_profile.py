"""parameters/twin.yaml overrides production.yaml only where the twin must differ.

The list below is the documented one (parameters/twin.yaml's comments): a new
override must be added here, with its reason in twin.yaml, or this test fails,
so a run on the twin keeps proving production's own profile.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest
from conftest import profile_keys

from runbook.core.profile import load_profile
from runbook.errors import ParameterError

# key -> why (the same reasons as the comments in parameters/twin.yaml)
DOCUMENTED_OVERRIDES = {
    "name": "a profile is named after its file; records say twin",
    "description": "says what the target is",
    "target.host": "the twin's address on its bridge",
    "target.key": "a client key made for the twin, never production's deploy key",
    "target.host_key": "the host key generated for this instance",
    "secrets.file": "rotations write here: never the operator's production secrets",
    "security.outside_probe": "the second address that proves a lockdown from outside",
}


def test_twin_profile_differs_from_production_exactly_by_the_documented_overrides() -> None:
    prod, twin = profile_keys("production"), profile_keys("twin")
    differs = {
        k for k in prod.keys() | twin.keys() if prod.get(k, "<absent>") != twin.get(k, "<absent>")
    }
    assert differs == set(DOCUMENTED_OVERRIDES)
    # kind stays production: changes on the twin need confirmation, as on production
    assert twin["kind"] == "production"
    # every override is filled from the twin's state, nothing machine-specific in the repo
    for key in DOCUMENTED_OVERRIDES:
        if key not in ("name", "description"):
            assert str(twin[key]).startswith("${twin."), key


def _fake_state(tmp_path: Path) -> dict[str, Any]:
    state = {
        "host": "10.231.77.2",
        "ssh_key": str(tmp_path / "id_ed25519"),
        "host_key": "ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAIBk2y9h1S4QvnV6gWq0oZ3m1bU6o9y5eIY1vFf8y0c2n",
        "secrets_file": str(tmp_path / "secrets.env"),
        "outside_probe": "python3 -c 'probe {host} {port}'",
    }
    (tmp_path / "state.json").write_text(json.dumps(state))
    return state


def test_twin_profile_loads_from_the_twin_state(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    state = _fake_state(tmp_path)
    monkeypatch.setenv("RUNBOOK_TWIN_DIR", str(tmp_path))
    p = load_profile("twin")
    prod = load_profile("production")
    assert (p.name, p.kind) == ("twin", "production")
    assert p.target.host == state["host"]
    assert p.target.key == state["ssh_key"]
    assert p.target.host_key == [state["host_key"]]
    assert p.secrets.file == state["secrets_file"]
    assert p.security.outside_probe == state["outside_probe"]
    # and the rest is production's
    assert p.api == prod.api and p.services == prod.services and p.backups == prod.backups
    assert p.github == prod.github and p.llm == prod.llm and p.do_not_touch == prod.do_not_touch


def test_twin_profile_without_a_twin_says_how_to_start_one(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("RUNBOOK_TWIN_DIR", str(tmp_path / "none"))
    with pytest.raises(ParameterError, match=r"runbook twin up"):
        load_profile("twin")
