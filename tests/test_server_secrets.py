"""Secrets only the server holds never reach any output (issue 12, part 1).

A canary is planted in the sandbox server's `.env` that the operator's
secrets file does not name (and whose name does not say "secret": it is
caught by its random look), next to the server-only database password (in DATABASE_URL). A notebook
reads the file every way a cell can: `cat`, `s.read_file` (printed and as
the cell's value), `env` after sourcing it, base64 of a value and of the
whole file, output long enough to go to a log file, a changing command
that writes a new secret and prints it (a rotation), and a failing command
printing it. It runs under plain papermill and under `runbook run`; then
every byte either left behind is scanned for every form of each value.
"""

from __future__ import annotations

import base64
import json
import shlex
import subprocess
import sys
import urllib.parse
from pathlib import Path

import nbformat
import pytest
from conftest import runbook_notebook

from runbook.cli import run as runner
from runbook.core.secrets import read_env_file
from runbook.core.server_secrets import secret_values
from runbook.evidence import seal as evidence_tools

CANARY_NAME = "RB_PARTNER_SYNC_CODE"  # no KEY/SECRET/TOKEN in it, on purpose
CANARY = "srv0nly-Kx4Tq9Lm2Vw7Rz8Bn3"
ROTATED_NAME = "RB_ROTATED_SIGNING_SECRET"

SETUP = """\
import shlex
from runbook import open_session
s = open_session("server_canary", env="sandbox")
envf = s.profile.app.env_file
q = shlex.quote(envf)
"""

CELLS = [
    # cat
    "print(s.probe(f'cat {q}', shell=True, label='cat-env').stdout)",
    # read_file, printed and as the cell's value (its bytes repr)
    "data = s.read_file(envf)\nprint(data.decode())\ndata",
    # env after sourcing it
    "print(s.probe(f'set -a; . {q}; env', shell=True, label='env').stdout)",
    # base64 of one value, and of the whole file on one line
    "print(s.probe(f'set -a; . {q}; printf %s \"$" + CANARY_NAME + '" | base64; '
    "base64 -w0 {q}', shell=True, label='b64').stdout)",
    # long enough to go to a log file
    "r = s.probe(f'seq 1 30000; cat {q}; seq 1 100', shell=True, label='long')\n"
    "assert r.stdout_log is not None\nr",
    # a changing command that creates a secret and prints it (a rotation): a change of
    # .env the tripwire is told of, as scenario 6's rotation tells it
    f"with s.tripwire_allows([{ROTATED_NAME!r}], 'the canary rotation'):\n"
    "    print(s.run(['bash', ROTATE, envf], label='rotate').stdout)\n"
    "print(s.probe(f'cat {q}', shell=True, label='cat-after').stdout)",
    "s.check('read', expected='masked', actual='masked', passed=True)\ns.done()",
    # a failing command printing it
    "s.probe(f'cat {q} >&2; exit 3', shell=True, label='fail')",
]


def _forms(value: str) -> set[str]:
    """Every form a reviewer could read the value back from."""
    forms = {
        value,
        urllib.parse.quote(value, safe=""),
        urllib.parse.quote_plus(value, safe=""),
        json.dumps(value)[1:-1],
        value.replace("-", "%2D"),
    }
    raw = value.encode()
    for pad in range(3):  # base64 at each alignment inside a longer blob
        enc = base64.b64encode(b"\0" * pad + raw).decode().rstrip("=")
        forms.add(enc[-(-8 * pad // 6) : (8 * (pad + len(raw))) // 6])
    return {f for f in forms if len(f) >= 8}


@pytest.fixture
def planted(sandbox):
    """The canary in the server's .env; the .env as it was afterwards."""
    env_file = Path(sandbox.state["app_dir"]) / ".env"
    before = env_file.read_bytes()
    assert CANARY_NAME not in read_env_file(Path(sandbox.state["secrets_file"]))
    env_file.write_bytes(before + f"{CANARY_NAME}={CANARY}\n".encode())
    try:
        yield env_file
    finally:
        env_file.write_bytes(before)


# like the app's scripts/rotate_secrets.sh, but printing the new value (a careless one)
ROTATE_SH = f"""\
v=$(head -c 24 /dev/urandom | base64 | tr -d '/+=')
echo "{ROTATED_NAME}=$v" >> "$1"
echo "rotated: $v"
"""


def _notebook(tmp_path: Path) -> Path:
    script = tmp_path / "rotate.sh"
    script.write_text(ROTATE_SH)
    nb = runbook_notebook()
    setup = SETUP + f"ROTATE = {str(script)!r}\n"
    nb.cells = [nbformat.v4.new_code_cell(c) for c in (setup, *CELLS)]
    path = tmp_path / "server_canary.ipynb"
    nbformat.write(nb, path)
    return path


def _server_values(env_file: Path, sandbox) -> dict[str, str]:
    """The server-only values the rule picks from the planted .env (the rotated one too)."""
    found, _ = secret_values(read_env_file(env_file))
    assert (
        found[CANARY_NAME] == CANARY
        and "DATABASE_URL (password)" in found
        and ROTATED_NAME in found
    )
    operator = set(read_env_file(Path(sandbox.state["secrets_file"])).values())
    server_only = {k: v for k, v in found.items() if v not in operator}
    assert {CANARY_NAME, "DATABASE_URL (password)", ROTATED_NAME} <= set(server_only), (
        server_only.keys()
    )
    return server_only


def _scan(scanned: dict[str, str], values: dict[str, str]) -> list[str]:
    return [
        f"{name} ({form[:4]}…) in {where}"
        for where, text in scanned.items()
        for name, value in values.items()
        for form in _forms(value)
        if form in text
    ]


def _files(root: Path) -> dict[str, str]:
    return {
        str(f): f.read_bytes().decode("utf-8", "replace") for f in root.rglob("*") if f.is_file()
    }


def test_server_only_secret_under_plain_papermill(sandbox, planted, tmp_path, monkeypatch):
    outputs = tmp_path / "outputs"
    monkeypatch.setenv("RUNBOOK_OUTPUTS", str(outputs))
    src, out = _notebook(tmp_path), tmp_path / "executed.ipynb"
    proc = subprocess.run(
        [
            sys.executable,
            "-m",
            "papermill",
            str(src),
            str(out),
            "-k",
            "dealix-runbook",
            "--cwd",
            str(tmp_path),
            "--log-output",
        ],
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert proc.returncode != 0, proc.stderr[-2000:]  # the last cell fails on purpose
    executed = out.read_text()
    assert "rotated: [redacted:" in executed, "the rotation's output was not masked"
    assert f"[redacted:{CANARY_NAME}]" in executed, "the canary never reached the notebook"
    assert "CommandFailed" in executed and "exit 3" in executed
    values = _server_values(planted, sandbox)
    (run_dir,) = {p.parent for p in outputs.rglob("record.json")}
    record = json.loads((run_dir / "record.json").read_text())
    assert {CANARY_NAME, "DATABASE_URL (password)"} <= set(record["server_secrets"]["names"])
    files = [Path(f).name for f in record["server_secrets"]["files"]]
    assert ".env" in files and ".env.pre-v3.0.0.bak" in files and ".env.example" not in files
    assert any(f.suffix == ".log" for f in run_dir.rglob("*")), "the long output was not logged"
    scanned = {"papermill stdout+stderr": proc.stdout + proc.stderr, str(out): executed}
    leaks = _scan({**scanned, **_files(outputs)}, values)
    assert not leaks, "\n".join(leaks[:20])

    # a plain papermill run is sealed afterwards, with its notebook
    info = evidence_tools.seal(run_dir, notebook=out)
    assert info["html"] is not None and info["html"].exists(), info["html_why"]
    assert info["server_env"]["read"] and CANARY_NAME in info["server_env"]["names"]
    leaks = _scan(_files(run_dir), values)
    assert not leaks, "\n".join(leaks[:20])


def test_server_only_secret_under_runbook_run(sandbox, planted, tmp_path, monkeypatch, capsys):
    outputs = tmp_path / "outputs"
    monkeypatch.setenv("RUNBOOK_OUTPUTS", str(outputs))
    code, run_dir = runner.run_notebook(_notebook(tmp_path), "server_canary", {})
    assert code == runner.EXIT["failed"], code
    terminal = capsys.readouterr()
    executed = (run_dir / "server_canary.ipynb").read_text()
    assert f"[redacted:{CANARY_NAME}]" in executed
    record = json.loads((run_dir / "record.json").read_text())
    scan = record["secret_scan"]["server_env"]
    assert scan["read"] and {CANARY_NAME, "DATABASE_URL (password)", ROTATED_NAME} <= set(
        scan["names"]
    )
    assert (run_dir / "server_canary.html").exists()
    values = _server_values(planted, sandbox)
    leaks = _scan({"terminal": terminal.out + terminal.err, **_files(outputs)}, values)
    assert not leaks, "\n".join(leaks[:20])


def test_seal_finds_a_server_only_secret_the_session_never_saw(sandbox, planted, tmp_path):
    """A leak that got past the session (here: written into the folder by hand) is
    masked by the seal, which re-reads the server's env files itself."""
    run_dir = tmp_path / "run"
    run_dir.mkdir()
    (run_dir / "record.json").write_text(json.dumps({"environment": "sandbox"}))
    (run_dir / "notes.txt").write_text(f"someone pasted {CANARY} here\n")
    info = evidence_tools.seal(run_dir, chain=False)
    assert info["masked"] == [{"file": "notes.txt", "masks": 1}], info
    assert CANARY not in (run_dir / "notes.txt").read_text()
    record = json.loads((run_dir / "record.json").read_text())
    assert record["secret_scan"]["server_env"]["read"] is True
    assert "no executed notebook" in info["html_why"]


def test_seal_says_why_when_the_server_cannot_be_read(tmp_path, monkeypatch):
    params = tmp_path / "parameters"
    params.mkdir()
    (params / "nowhere.yaml").write_text(
        "name: nowhere\nkind: staging\ntarget:\n  transport: ssh\n  host: 127.0.0.1\n"
        "  port: 9\n  user: nobody\n  connect_timeout: 2\n"
    )
    monkeypatch.setenv("RUNBOOK_PARAMETERS_DIR", str(params))
    run_dir = tmp_path / "run"
    run_dir.mkdir()
    (run_dir / "record.json").write_text(json.dumps({"environment": "nowhere"}))
    info = evidence_tools.seal(run_dir, chain=False)
    assert info["server_env"]["read"] is False and info["server_env"]["why"]


def test_seal_refuses_a_notebook_of_another_run(tmp_path):
    run_dir = tmp_path / "run"
    run_dir.mkdir()
    (run_dir / "record.json").write_text(
        json.dumps({"scenario": "health_check", "started": "2026-01-01T00:00:00Z"})
    )
    other = tmp_path / "other.ipynb"
    nbformat.write(nbformat.v4.new_notebook(), other)
    from runbook.errors import ParameterError

    with pytest.raises(ParameterError, match="is not the notebook of"):
        evidence_tools.seal(run_dir, chain=False, notebook=other, server=False)
    assert not (run_dir / evidence_tools.MANIFEST).exists()


@pytest.mark.parametrize(
    ("name", "value", "registered"),
    [
        ("DB_PASSWORD", "hunter2-x", True),
        ("RB_SYNC_CODE", "Zq8T2vLx9pW4mN7rK1sD", True),
        ("REDIS", "redis://:pw-123456@127.0.0.1:6379/0", True),
        ("APP_ENV", "production", False),
        ("PORT", "8000", False),
        ("LLM_PROVIDER_PRIORITY", "anthropic,openai,google", False),
        ("ANTHROPIC_BASE_URL", "http://127.0.0.1:8123/anthropic", False),
        ("REDIS_URL", "redis://127.0.0.1:6379/0", False),
        ("SENTRY_DSN", "http://0123456789abcdef@127.0.0.1:9000/sentry/42", True),
        ("DB_HOST", "db-primary-01.internal.example.com", False),
        ("SENTRY_PROJECT_ID", "4508000000123456", False),
    ],
)
def test_which_values_count_as_secrets(name: str, value: str, registered: bool) -> None:
    found, _ = secret_values({name: value})
    assert bool(found) is registered, found


def test_short_secret_named_value_is_reported_not_registered() -> None:
    found, short = secret_values({"API_TOKEN": "abc"})
    assert not found and short == ["API_TOKEN"]


def test_shell_quoting_of_the_env_file_patterns() -> None:
    from types import SimpleNamespace

    from runbook.core.server_secrets import env_file_patterns

    profile = SimpleNamespace(
        app=SimpleNamespace(env_file="/opt/my app/.env"),
        do_not_touch=SimpleNamespace(
            files=["/opt/my app/.env.pre-v3.0.0.bak", "/etc/hosts", "/srv/other/.env.keep"]
        ),
    )
    words = env_file_patterns(profile)  # type: ignore[arg-type]
    assert words == [f"{shlex.quote('/opt/my app')}/.env*", "/srv/other/.env.keep"]
