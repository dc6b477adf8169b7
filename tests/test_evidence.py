"""Evidence you can trust: a true record for every outcome (a killed kernel and an
interrupted run included), a sealed folder that `verify` checks, a chain that notices
a deleted run, history and its plot, postmortem drafts, and no secret anywhere.

Small notebooks are generated into tmp and run with `runner.run_notebook`, the
same code path as `runbook run`; each test reads record.json, not the exit code.
"""

from __future__ import annotations

import contextlib
import json
import os
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import nbformat
import pandas as pd
import pytest
from conftest import runbook_notebook

from runbook.cli import run as runner
from runbook.core.paths import project_root
from runbook.core.profile import load_profile
from runbook.core.secrets import read_env_file
from runbook.evidence import history
from runbook.evidence import seal as evidence_tools

ROOT = project_root()
PY = sys.executable

SETUP = (
    "import os, time\n"
    "from pathlib import Path\n"
    "from runbook import open_session\n"
    "s = open_session(scenario, env=env, dry_run=dry_run, confirm=confirm)"
)
BODIES = {
    "ok": (
        'with s.step("1. Look"):\n'
        '    s.check("Liveness", expected="200 OK", actual=s.api.health().status, passed=True)\n'
        'with s.step("2. Measure"):\n'
        '    s.metric("restore_minutes", 7.5, "min", target=15)'
    ),
    "failed": (
        'with s.step("1. Look"):\n    s.probe(["true"])\nwith s.step("2. Break"):\n    s.probe(["false"])'
    ),
    "dod_not_met": (
        'with s.step("1. Look"):\n'
        '    s.check("Data age", expected="< 24 h", actual="30 h", passed=False)'
    ),
    "refused": (
        'with s.step("1. Push a hotfix"):\n'
        '    s.run(["git", "-C", s.profile.app.dir, "push", "origin", "HEAD:main"])'
    ),
    "kernel_died": (
        'with s.step("1. Die"):\n    print("about to die", flush=True)\n    os.kill(os.getpid(), 9)'
    ),
    "timed_out": ('with s.step("1. Hang"):\n    print("hanging", flush=True)\n    time.sleep(60)'),
    "interrupted": (
        'with s.step("1. Wait for the operator"):\n'
        '    print("waiting", flush=True)\n'
        '    Path(marker).write_text("started")\n'
        "    time.sleep(120)"
    ),
    # interrupted while a command runs on the server (over SSH)
    "interrupted_command": (
        'with s.step("1. Wait for the operator"):\n'
        '    print("waiting", flush=True)\n'
        # the marker holds the pid of the sleep on the server (exec keeps it)
        '    s.probe(["sh", "-c", f"echo $$ > {marker}; exec sleep 120"])'
    ),
    # a careless cell: prints a secret straight to the notebook's output
    "leak": (
        'with s.step("1. Leak"):\n'
        '    print("admin key is", s.secrets.get("DEALIX_ADMIN_KEY"))\n'
        '    s.check("Liveness", expected="200 OK", actual=200, passed=True)'
    ),
}


def make_notebook(folder: Path, kind: str) -> Path:
    nb = runbook_notebook()
    nb.cells = [
        nbformat.v4.new_markdown_cell(f"# Evidence test: {kind}"),
        nbformat.v4.new_code_cell(
            f'env = "sandbox"\ndry_run = False\nconfirm = None\nscenario = "ev_{kind}"\nmarker = ""',
            metadata={"tags": ["parameters"]},
        ),
        nbformat.v4.new_code_cell(SETUP),
        nbformat.v4.new_code_cell(BODIES[kind]),
        nbformat.v4.new_code_cell("s.done()"),
    ]
    path = folder / f"ev_{kind}.ipynb"
    nbformat.write(nb, path)
    return path


@pytest.fixture(scope="module")
def outputs(tmp_path_factory):
    """One outputs folder for the module: the secret scan covers all of it at the end."""
    path = tmp_path_factory.mktemp("outputs")
    old = os.environ.get("RUNBOOK_OUTPUTS")
    os.environ["RUNBOOK_OUTPUTS"] = str(path)
    yield path
    if old is None:
        os.environ.pop("RUNBOOK_OUTPUTS", None)
    else:
        os.environ["RUNBOOK_OUTPUTS"] = old


@pytest.fixture(scope="module")
def notebooks(tmp_path_factory):
    folder = tmp_path_factory.mktemp("notebooks")
    return {kind: make_notebook(folder, kind) for kind in BODIES}


RUNS: dict[str, Path] = {}


def run_kind(notebooks, kind: str, **kw) -> tuple[int, Path, dict]:
    code, run_dir = runner.run_notebook(
        notebooks[kind], f"ev_{kind}", {"scenario": f"ev_{kind}"}, quiet=True, **kw
    )
    RUNS[kind] = run_dir
    return code, run_dir, json.loads((run_dir / "record.json").read_text())


EXPECTED = [
    # kind, outcome, exit code, failed step
    ("ok", "ok", 0, None),
    ("failed", "failed", 1, "2. Break"),
    ("dod_not_met", "dod_not_met", 3, None),
    ("refused", "refused", 4, "1. Push a hotfix"),
    ("kernel_died", "kernel_died", 7, "1. Die"),
]


@pytest.mark.parametrize(("kind", "outcome", "code", "step"), EXPECTED)
def test_record_tells_the_true_outcome(sandbox, outputs, notebooks, kind, outcome, code, step):
    got, run_dir, record = run_kind(notebooks, kind)
    assert (got, record["outcome"], record["exit_code"]) == (code, outcome, code), record
    assert record["schema"] == "runbook.record/1"
    assert record["failed_step"] == step
    steps = {s["name"]: s["status"] for s in record["steps"]}
    if step:
        assert steps[step] in ("failed", outcome)
    assert run_dir.parts[-3:-1] == ("sandbox", f"ev_{kind}")
    # the folder is sealed and the HTML carries the summary on top
    assert evidence_tools.verify_run(run_dir).ok
    page = (run_dir / f"ev_{kind}.html").read_text()
    assert page.index("runbook-summary") < page.index("Evidence test:")
    assert f"ev_{kind}: {outcome} (exit {code})" in page
    assert "# Parameters" not in page  # papermill's injected cell is removed by tag
    assert 'src="http' not in page  # self-contained
    nb = json.loads((run_dir / f"ev_{kind}.ipynb").read_text())
    assert nb["metadata"]["papermill"]["parameters"]["scenario"] == f"ev_{kind}"
    if kind == "ok":
        assert record["metrics"]["restore_minutes"]["value"] == 7.5
        assert "Definition of done" in page and "Liveness" in page
    if kind == "kernel_died":
        # papermill alone would leave exception: null; the dying cell is marked
        assert nb["metadata"]["papermill"]["exception"] is True
        assert nb["metadata"]["runbook"]["stopped_by"] == "DeadKernelError"
        assert "about to die" in json.dumps(nb["cells"])


def test_timeout_is_timed_out(sandbox, outputs, notebooks):
    got, run_dir, record = run_kind(notebooks, "timed_out", timeout=8)
    assert (got, record["outcome"]) == (6, "timed_out"), record
    assert record["failed_step"] == "1. Hang"
    nb = json.loads((run_dir / "ev_timed_out.ipynb").read_text())
    assert "hanging" in json.dumps(nb["cells"])
    assert evidence_tools.verify_run(run_dir).ok


@pytest.mark.parametrize(
    ("sig", "kind"),
    [
        (signal.SIGINT, "interrupted"),
        (signal.SIGTERM, "interrupted"),
        (signal.SIGINT, "interrupted_command"),
        (signal.SIGTERM, "interrupted_command"),
    ],
)
def test_signal_ends_the_run_cleanly_with_the_notebook_saved(
    sandbox, outputs, notebooks, tmp_path, sig, kind
):
    marker = tmp_path / "started"
    script = (
        "import sys; from pathlib import Path; from runbook.cli.run import run_notebook\n"
        "code, d = run_notebook(Path(sys.argv[1]), 'ev_interrupted', {'marker': sys.argv[2]},"
        " quiet=True)\n"
        "print(d)\nsys.exit(code)"
    )
    proc = subprocess.Popen(
        [PY, "-c", script, str(notebooks[kind]), str(marker)],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    deadline = time.monotonic() + 120
    while not marker.exists():
        assert proc.poll() is None, proc.communicate()
        assert time.monotonic() < deadline, "the cell never started"
        time.sleep(0.2)
    proc.send_signal(sig)
    try:
        out, err = proc.communicate(timeout=120)
    finally:
        if kind == "interrupted_command":
            # the interrupted command was stopped on the target, not left running
            pid = int(marker.read_text().strip())
            end = time.monotonic() + 10
            while Path(f"/proc/{pid}").exists() and time.monotonic() < end:
                time.sleep(0.1)
            alive = Path(f"/proc/{pid}").exists()
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, signal.SIGKILL)
            assert not alive, "the interrupted command still runs on the target"
    assert proc.returncode == 5, err
    run_dir = Path(out.strip().splitlines()[-1])
    record = json.loads((run_dir / "record.json").read_text())
    assert record["outcome"] == "interrupted" and record["exit_code"] == 5
    assert record["stopped_by"] == sig.name
    assert record["failed_step"] == "1. Wait for the operator"
    # the saved notebook is the latest: the interrupted cell's output and its traceback
    nb = json.loads((run_dir / "ev_interrupted.ipynb").read_text())
    if kind == "interrupted_command":
        # the command was stopped, not left running on the server, and logged as such
        events = [json.loads(x) for x in (run_dir / "commands.jsonl").read_text().splitlines()]
        sleeps = [e for e in events if e.get("kind") == "command" and "sleep 120" in e["command"]]
        assert sleeps and sleeps[-1]["status"] == "interrupted", sleeps
        assert "stopped on the target" in sleeps[-1]["error"]
    (cell,) = [c for c in nb["cells"] if "Wait for the operator" in "".join(c["source"])]
    assert "waiting" in json.dumps(cell["outputs"])
    assert any(
        o.get("ename") in ("KeyboardInterrupt", "CommandInterrupted") for o in cell["outputs"]
    )
    assert nb["cells"][-1]["metadata"]["papermill"]["status"] != "completed"  # done() never ran
    assert evidence_tools.verify_run(run_dir).ok


def test_verify_catches_an_edited_a_deleted_and_an_added_file(
    sandbox, outputs, notebooks, tmp_path
):
    if "ok" not in RUNS:
        run_kind(notebooks, "ok")
    for change in ("edit", "delete", "add"):
        copy = tmp_path / change
        shutil.copytree(RUNS["ok"], copy)
        assert evidence_tools.verify_run(copy).ok
        if change == "edit":
            rec = json.loads((copy / "record.json").read_text())
            rec["outcome"] = "ok"
            rec["checks"] = []
            (copy / "record.json").write_text(json.dumps(rec))
        elif change == "delete":
            (copy / "commands.jsonl").unlink()
        else:
            (copy / "extra.txt").write_text("planted")
        result = evidence_tools.verify_run(copy)
        assert not result.ok
        assert {"edit": result.changed, "delete": result.removed, "add": result.added}[change] == [
            {"edit": "record.json", "delete": "commands.jsonl", "add": "extra.txt"}[change]
        ]
        cli = subprocess.run(
            [str(ROOT / ".venv/bin/runbook"), "verify", str(copy)], capture_output=True, text=True
        )
        assert cli.returncode == 1 and "TAMPERED" in cli.stdout
    # and sha256sum itself agrees with an untouched folder
    proc = subprocess.run(
        ["sha256sum", "--strict", "-c", "MANIFEST.sha256"], cwd=RUNS["ok"], capture_output=True
    )
    assert proc.returncode == 0, proc.stdout


def _fake_run(root: Path, n: int) -> Path:
    run_dir = root / "sandbox" / "drill" / f"2026010{n}T000000Z-drill"
    run_dir.mkdir(parents=True)
    (run_dir / "record.json").write_text(json.dumps({"scenario": "drill", "outcome": "ok", "n": n}))
    (run_dir / "commands.jsonl").write_text("{}\n")
    return run_dir


def test_the_chain_notices_a_deleted_run(tmp_path):
    root = tmp_path / "outputs"
    runs = []
    for n in range(1, 5):
        runs.append(_fake_run(root, n))
        evidence_tools.seal(runs[-1], env="sandbox")
    assert evidence_tools.verify_chain(root) == []
    assert (runs[1] / "PREVIOUS").read_text().split()[0] == evidence_tools.chain_entries(root)[0][
        "manifest"
    ]
    # deleting a run is named
    shutil.rmtree(runs[1])
    problems = evidence_tools.verify_chain(root)
    assert any("DELETED" in p and runs[1].name in p for p in problems), problems
    # deleting it AND its line in CHAIN: the next run's link no longer fits
    chain = root / "CHAIN"
    chain.write_text(
        "".join(ln + "\n" for ln in chain.read_text().splitlines() if runs[1].name not in ln)
    )
    problems = evidence_tools.verify_chain(root)
    assert any(runs[2].name in p and "removed or reordered" in p for p in problems), problems
    cli = subprocess.run(
        [str(ROOT / ".venv/bin/runbook"), "verify", "--chain", str(root)],
        capture_output=True,
        text=True,
    )
    assert cli.returncode == 1 and "CHAIN BROKEN" in cli.stdout


def _records(root: Path, n: int) -> None:
    """n records as runbook writes them, spread over a year, some over target."""
    for i in range(n):
        scenario = ("restore_drill", "rollback", "health_check")[i % 3]
        env = "production" if i % 2 else "staging"
        day = f"2026-{1 + i % 12:02d}-{1 + i % 28:02d}T03:{i % 60:02d}:00.000Z"
        run_dir = root / env / scenario / f"{day[:10].replace('-', '')}T03{i:04d}Z-{scenario}"
        run_dir.mkdir(parents=True)
        checks, metrics = [], {}
        if scenario == "restore_drill":
            metrics = {
                "restore_minutes": {"value": 5 + i % 17, "unit": "min", "target": 15},
                "data_age_hours": {"value": 2 + i % 30, "unit": "h", "target": 24},
            }
        elif scenario == "rollback":
            # no metrics: the number comes from the check
            checks = [
                {
                    "name": "Time to rollback",
                    "expected": "< 5 min",
                    "actual": f"{60 + i % 400} s",
                    "status": "passed",
                }
            ]
        record = {
            "schema": "runbook.record/1",
            "scenario": scenario,
            "environment": env,
            "started": day,
            "outcome": "ok" if i % 7 else "dod_not_met",
            "exit_code": 0 if i % 7 else 3,
            "steps": [],
            "checks": checks,
            "metrics": metrics,
            "runner": {"duration_s": 10.0 + i},
        }
        (run_dir / "record.json").write_text(json.dumps(record))


def test_history_table_csv_json_and_plot(tmp_path):
    root = tmp_path / "outputs"
    _records(root, 60)
    df = history.load(root)
    assert len(df) == 60
    drills = history.load(root, scenario="restore_drill", env="production")
    assert len(drills) == 10 and set(drills["scenario"]) == {"restore_drill"}
    assert drills["restore_min"].notna().all() and (drills["restore_target_min"] == 15).all()
    rollbacks = history.load(root, scenario="rollback")
    # "Time to rollback" actual "61 s" → minutes
    first = rollbacks.iloc[0]  # i = 1, the earliest rollback: "61 s"
    assert first["rollback_min"] == pytest.approx(61 / 60)
    assert set(rollbacks["rollback_target_min"]) == {5.0}
    later = history.load(root, since="2026-07-01")
    assert 0 < len(later) < 60
    assert later["started"].min() >= pd.Timestamp("2026-07-01", tz="UTC")
    csv = history.render(df, "csv")
    assert csv.splitlines()[0].startswith("started,scenario")
    assert len(csv.strip().splitlines()) == 61
    lines = history.render(df, "json").strip().splitlines()
    assert json.loads(lines[0])["scenario"] in ("restore_drill", "rollback", "health_check")
    png = history.plot(df, tmp_path / "drills.png")
    assert png.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n" and png.stat().st_size > 10_000
    fig = history.figure(df)
    panels = {ax.get_title(): ax for ax in fig.axes}
    assert list(panels) == [
        "Restore duration (min)",
        "Data age at restore (h) vs RPO",
        "Time to rollback (min)",
    ]
    for title, col, target in (
        ("Restore duration (min)", "restore_min", 15.0),
        ("Time to rollback (min)", "rollback_min", 5.0),
    ):
        ax = panels[title]
        values = df[col].dropna()
        green, red = (c.get_offsets() for c in ax.collections[:2])
        assert len(green) + len(red) == len(values) > 0
        assert len(red) == int((values > target).sum())
        assert all(y > target for _, y in red) and all(y <= target for _, y in green)
        dashed = [line for line in ax.get_lines() if line.get_linestyle() == "--"]
        assert [line.get_ydata()[0] for line in dashed] == [target]
    cli = subprocess.run(
        [
            str(ROOT / ".venv/bin/runbook"),
            "history",
            "--outputs",
            str(root),
            "--scenario",
            "restore_drill",
            "--format",
            "csv",
            "--plot",
            str(tmp_path / "cli.png"),
        ],
        capture_output=True,
        text=True,
    )
    assert cli.returncode == 0, cli.stderr
    assert len(cli.stdout.strip().splitlines()) == 21 and (tmp_path / "cli.png").exists()


def test_postmortem_draft_from_a_real_run(sandbox, outputs, notebooks):
    if "failed" not in RUNS:
        run_kind(notebooks, "failed")
    run_dir = RUNS["failed"]
    cli = subprocess.run(
        [str(ROOT / ".venv/bin/runbook"), "postmortem", str(run_dir)],
        capture_output=True,
        text=True,
    )
    assert cli.returncode == 0, cli.stderr
    text = cli.stdout
    assert text == (run_dir / "postmortem-draft.md").read_text()
    for n, label in enumerate(
        ("What happened", "Impact", "Detection", "Resolution", "Follow-up"), 1
    ):
        assert f"{n}. **{label}:**" in text
    assert "at step “2. Break”" in text
    record = json.loads((run_dir / "record.json").read_text())
    for step in record["steps"]:
        assert f"| {step['started'][11:19]} | {step['name']} |" in text
    links = [ln.split("](")[1].rstrip(")") for ln in text.splitlines() if ln.startswith("- [")]
    assert "record.json" in links and "ev_failed.ipynb" in links and "ev_failed.html" in links
    assert all((run_dir / link).exists() for link in links)
    # a draft written after sealing is named by verify, not counted as tampering
    v = evidence_tools.verify_run(run_dir)
    assert v.ok and v.drafts == ["postmortem-draft.md"]


def test_plain_papermill_run_leaves_a_record_that_can_be_sealed(
    sandbox, outputs, notebooks, tmp_path
):
    out = tmp_path / "plain.ipynb"
    proc = subprocess.run(
        [
            str(ROOT / ".venv/bin/papermill"),
            str(notebooks["ok"]),
            str(out),
            "-k",
            "dealix-runbook",
            "-p",
            "scenario",
            "ev_plain",
            "--no-progress-bar",
        ],
        capture_output=True,
        text=True,
        cwd=tmp_path,
    )
    assert proc.returncode == 0, proc.stderr[-2000:]
    (run_dir,) = (outputs / "sandbox" / "ev_plain").iterdir()
    assert json.loads((run_dir / "record.json").read_text())["outcome"] == "ok"
    shutil.copy(out, run_dir / "ev_plain.ipynb")
    cli = subprocess.run(
        [str(ROOT / ".venv/bin/runbook"), "seal", str(run_dir)], capture_output=True, text=True
    )
    assert cli.returncode == 0, cli.stderr
    assert evidence_tools.verify_run(run_dir).ok and (run_dir / "ev_plain.html").exists()


def test_a_leaked_secret_is_masked_in_the_evidence(sandbox, outputs, notebooks):
    code, run_dir, record = run_kind(notebooks, "leak")
    assert code == 0, record
    # masked by the kernel as the cell printed it (runbook.session.notebook.redact_kernel_output), so
    # the seal's scan, the second net, finds nothing left to mask in the notebook
    masked = {m["file"] for m in record["secret_scan"]["masked"]}
    assert "ev_leak.ipynb" not in masked
    assert "[redacted:DEALIX_ADMIN_KEY]" in (run_dir / "ev_leak.ipynb").read_text()
    assert evidence_tools.verify_run(run_dir).ok


def test_runbook_list_shows_parameters_and_needs(sandbox):
    # `runbook list` names secrets as the sandbox profile's variables, and that
    # profile resolves only with a sandbox's state.json: without one it shows
    # the roles (admin_key), so this test needs the sandbox, not just a checkout.
    cli = subprocess.run([str(ROOT / ".venv/bin/runbook"), "list"], capture_output=True, text=True)
    assert cli.returncode == 0, cli.stderr
    blocks: dict[str, str] = {}
    for line in cli.stdout.splitlines():
        if line and not line.startswith(" "):
            name = line.split()[0]
            blocks[name] = line
        else:
            blocks[name] += "\n" + line
    assert set(blocks) == {p.stem for p in (ROOT / "notebooks").glob("*.ipynb")}
    for block in blocks.values():
        assert 'env="sandbox"' in block and "needs:" in block, block
    assert "read-only; secrets DEALIX_ADMIN_KEY, GITHUB_TOKEN" in blocks["health_check"]
    assert "needs:      read-only" in blocks["review"] and "confirmation" not in blocks["review"]
    for changing in (
        "deploy",
        "rollback",
        "database_down",
        "llm_provider_down",
        "restore_drill",
        "restore_incident",
        "security_incident",
    ):
        assert "confirmation off the sandbox (--confirm ENV)" in blocks[changing], changing
        # a run that died leaves the host lock: every changing notebook can break it
        assert "break_stale_lock=False" in blocks[changing], changing
    deploy = blocks["deploy"]
    for var in (
        "DEALIX_ADMIN_KEY",
        "GITHUB_TOKEN",
        "SENTRY_AUTH_TOKEN",
        "POSTHOG_PERSONAL_API_KEY",
    ):
        assert var in deploy, (var, deploy)
    assert "approver (--approved-by NAME)" in blocks["rollback"]


def test_zz_no_secret_in_any_evidence_file(sandbox, outputs):
    """Every file the runs of this module left under outputs/, every secret of the sandbox
    (tests/test_zz_no_secret_anywhere.py does the same for the whole session)."""
    secrets = [v for v in read_env_file(Path(load_profile("sandbox").secrets.file)).values() if v]
    assert secrets
    files = [p for p in outputs.rglob("*") if p.is_file()]
    assert len(files) > 20 and RUNS
    for path in files:
        data = path.read_bytes()
        for value in secrets:
            assert value.encode() not in data, f"a secret in {path}"


def test_history_reads_the_restore_drills_own_check_names():
    """restore_drill.ipynb records "Backup fresh (RPO)" before "Data age (RPO)": the data's
    age is the one plotted against the RPO, the backup file's only when there is no other."""
    record = {
        "checks": [
            {
                "name": "Backup fresh (RPO)",
                "expected": "newest backup <= 24 h old",
                "actual": "5.6 h old",
            },
            {"name": "Restore time", "expected": "<= 15 min", "actual": "0.1 s for 835.2 KiB"},
            {
                "name": "Data age (RPO)",
                "expected": "newest restored row <= 24 h old",
                "actual": "6.1 h old",
            },
        ]
    }
    got = history.row(record, "x")
    assert got["data_age_h"] == 6.1 and got["rpo_h"] == 24.0
    assert got["restore_min"] == pytest.approx(0.1 / 60) and got["restore_target_min"] == 15.0
    assert got["rollback_min"] is None


def test_seal_masks_a_secret_given_as_an_environment_variable(sandbox, tmp_path, monkeypatch):
    """Secrets can come from the environment instead of the file: the scan knows those too."""
    value = "env-only-token-" + "7" * 24
    monkeypatch.setenv("SENTRY_AUTH_TOKEN", value)
    run_dir = _fake_run(tmp_path / "outputs", 1)
    (run_dir / "notes.log").write_text(f"token={value}\n")
    info = evidence_tools.seal(run_dir, env="sandbox", chain=False)
    assert value not in (run_dir / "notes.log").read_text()
    assert "[redacted:SENTRY_AUTH_TOKEN]" in (run_dir / "notes.log").read_text()
    assert info["masked"] == [{"file": "notes.log", "masks": 1}]
    assert (
        json.loads((run_dir / "record.json").read_text())["secret_scan"]["masked"] == info["masked"]
    )
    assert evidence_tools.verify_run(run_dir).ok
