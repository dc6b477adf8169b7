"""Runs last (file order): every evidence file the whole test session wrote,
scanned for every secret of the sandbox, and every record it wrote checked
against the documented schema (docs/record.schema.json).

The sandbox generates its secrets fresh (admin key, webhook secret, database
password, provider keys, tokens), so each one is a canary that every test
run registered and printed through the server in one way or another. Any
run folder (one with a record.json or a commands.jsonl) and any executed
notebook under pytest's temporary tree or the project's outputs/ folder must
hold none of them, in any of the encodings the redactor promises to mask.
The server's own env files count too: every value the session's rule
registers (server_secrets.py), most of which the operator never holds.

When scripts/test.sh runs the twin's tests in a second pytest beside this one
(`RUNBOOK_TEST_OTHER_LANE` names its folder), these tests first wait for that
lane to finish, then scan its evidence and check its records as well.
"""

from __future__ import annotations

import base64
import json
import os
import time
import urllib.parse
from pathlib import Path

import jsonschema
import pytest

from runbook.core.paths import project_root
from runbook.core.profile import load_profile
from runbook.core.secrets import read_env_file
from runbook.core.server_secrets import EXAMPLES, secret_values


def _forms(value: str) -> set[bytes]:
    forms = {value, urllib.parse.quote(value, safe=""), json.dumps(value)[1:-1]}
    forms.add(base64.b64encode(value.encode()).decode().rstrip("="))
    return {f.encode() for f in forms if len(f) >= 8}


def _evidence_files(root: Path) -> list[Path]:
    files: set[Path] = set()
    for marker in ("record.json", "commands.jsonl"):
        for hit in root.rglob(marker):
            files.update(p for p in hit.parent.rglob("*") if p.is_file())
    files.update(root.rglob("*.ipynb"))
    return sorted(files)


def _other_lane() -> list[Path]:
    """The twin lane's temporary tree, once that lane has finished; [] when there is none."""
    lane = os.environ.get("RUNBOOK_TEST_OTHER_LANE")
    if not lane:
        return []
    done = Path(lane) / "twin.rc"
    deadline = time.monotonic() + 3600
    while not done.exists():
        assert time.monotonic() < deadline, f"the twin lane did not finish within an hour ({lane})"
        time.sleep(5)
    root = Path(lane) / "twin-tmp"
    return [root] if root.exists() else []


def test_no_sandbox_secret_in_any_evidence_of_the_session(sandbox, request, tmp_path_factory):
    modules = {item.nodeid.split("::")[0] for item in request.session.items}
    if len(modules) < 10:
        pytest.skip("meaningful only after the whole suite ran (it scans what the others wrote)")
    secrets = {
        k: v for k, v in read_env_file(Path(load_profile("sandbox").secrets.file)).items() if v
    }
    assert len(secrets) >= 5, secrets.keys()
    roots = [tmp_path_factory.getbasetemp(), project_root() / "outputs", *_other_lane()]
    files = [f for root in roots if root.exists() for f in _evidence_files(root)]
    run_dirs = {f.parent for f in files if f.name == "record.json"}
    assert len(run_dirs) >= 50, f"only {len(run_dirs)} run folders found under {roots}"
    # and the canaries tests planted and had the server print
    secrets["canary (test_canary_notebook)"] = "cnry-Qm8vT3kZ1xW7pL5s"
    secrets["canary (test_ssh_session)"] = "canary-7Hq2ZpX4vN8rT1wY"
    secrets["server-only canary (test_server_secrets)"] = "srv0nly-Kx4Tq9Lm2Vw7Rz8Bn3"
    # and every secret the server's own env files hold (the database password, keys
    # rotated away into .env.bak.*), which the operator's secrets file never names
    app_env = Path(load_profile("sandbox").app.env_file)
    for path in sorted(app_env.parent.glob(app_env.name + "*")):
        if path.name.endswith(EXAMPLES):
            continue
        found, _ = secret_values(read_env_file(path))
        secrets.update({f"{name} (server {path.name})": v for name, v in found.items()})
    needles = {form: name for name, value in secrets.items() for form in _forms(value)}
    leaks = []
    for path in files:
        data = path.read_bytes()
        leaks += [f"{name} in {path}" for form, name in needles.items() if form in data]
    assert not leaks, "\n".join(leaks[:20])


def test_every_record_of_the_session_follows_the_schema(request, tmp_path_factory) -> None:
    modules = {item.nodeid.split("::")[0] for item in request.session.items}
    if len(modules) < 10:
        pytest.skip("meaningful only after the whole suite ran (it reads what the others wrote)")
    schema = json.loads((project_root() / "docs" / "record.schema.json").read_text())
    validator = jsonschema.Draft202012Validator(schema)
    checked, problems = 0, []
    roots = [tmp_path_factory.getbasetemp(), *_other_lane()]
    for path in (p for root in roots for p in root.rglob("record.json")):
        record = json.loads(path.read_text())
        if "schema" not in record:
            continue  # hand-made records of the history and seal tests
        checked += 1
        problems += [
            f"{path}: {e.json_path}: {e.message[:200]}" for e in validator.iter_errors(record)
        ]
    assert checked >= 50, f"only {checked} records written by the library"
    assert not problems, "\n".join(problems[:20])
