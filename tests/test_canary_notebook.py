"""Canary secrets printed by the server never reach an executed notebook.

The server prints a planted secret every way it commonly leaks (stdout,
stderr, a password in a URL, URL-encoded, base64 inside a Basic-auth blob,
split across two SSH packets, in the command line itself, in a failing
command's message) and the notebook is executed headless by papermill, as
cron would. Then every byte the run left behind is scanned: the executed
notebook, papermill's own output, and every file of the evidence folder.
"""

from __future__ import annotations

import base64
import subprocess
import sys
import urllib.parse

import nbformat
from conftest import runbook_notebook

CANARY = "cnry-Qm8vT3kZ1xW7pL5s"

SETUP = """\
from runbook import open_session
s = open_session("canary", env="sandbox")
token = s.secrets.get("RB_CANARY_TOKEN")
"""

# the notebook's source never holds the canary: it comes from the server's
# environment ($TOKEN) and from the secret store, like a real leak would
LEAKS = r"""
r = s.probe(
    'echo "out $TOKEN"; echo "err $TOKEN" >&2; '
    'echo "https://dealix:$(printf %s "$TOKEN" | sed s/-/%2D/g)@db.internal/x"; '
    'echo "$(printf "user:%s" "$TOKEN" | base64 -w0)"; '
    'echo "{\"key\": \"$TOKEN\"}"; seq 1 50000; '
    'printf "split %s" "$(printf %s "$TOKEN" | cut -c1-7)"; sleep 0.3; '
    'printf "%s end\n" "$(printf %s "$TOKEN" | cut -c8-)"',
    shell=True, env={"TOKEN": token}, label="leaky",
)
print(r.stdout)
print(r.stderr)
r
"""

CHECK = """\
s.check("the server was reached", expected="exit 0", actual=f"exit {r.exit_code}", passed=r.ok)
s.done()
"""

FAILS = """\
s.probe('echo "about to fail with $TOKEN" >&2; exit 3', shell=True, env={"TOKEN": token})
"""


def _forms(secret: str) -> list[str]:
    blob = base64.b64encode(f"user:{secret}".encode()).decode()
    return [
        secret,
        urllib.parse.quote(secret, safe=""),
        secret.replace("-", "%2D"),
        blob,
        blob[8:24],
    ]


def test_canaries_printed_by_the_server_appear_nowhere(sandbox, tmp_path, monkeypatch) -> None:
    outputs = tmp_path / "outputs"
    monkeypatch.setenv("RUNBOOK_OUTPUTS", str(outputs))
    monkeypatch.setenv("RB_CANARY_TOKEN", CANARY)
    nb = runbook_notebook()
    nb.cells = [nbformat.v4.new_code_cell(c) for c in (SETUP, LEAKS, CHECK, FAILS)]
    src, out = tmp_path / "canary.ipynb", tmp_path / "canary-out.ipynb"
    nbformat.write(nb, src)
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
        ],
        capture_output=True,
        text=True,
        timeout=300,
    )
    # the last cell fails on purpose: its traceback is part of the record
    assert proc.returncode != 0, proc.stderr[-2000:]
    executed = out.read_text()
    assert "split " in executed and " end" in executed, "the leaky command did not run"
    assert "[redacted" in executed, "nothing was masked: the canary never reached the notebook"
    assert "CommandFailed" in executed and "exit 3" in executed

    scanned = {"papermill stdout+stderr": proc.stdout + proc.stderr, str(out): executed}
    evidence = [f for f in outputs.rglob("*") if f.is_file()]
    assert any(f.name == "commands.jsonl" for f in evidence)
    assert any(f.suffix == ".log" for f in evidence), "the long output was not logged"
    for f in evidence:
        scanned[str(f)] = f.read_bytes().decode("utf-8", "replace")
    for where, text in scanned.items():
        for form in _forms(CANARY):
            assert form not in text, f"canary form {form[:4]}… leaked into {where}"
