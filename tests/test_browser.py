"""JupyterLab in a real browser: Debian's chromium, headless, driven by Playwright.

No browser is downloaded: Playwright launches /usr/bin/chromium (apt packages
`chromium`), with networking features that phone home switched off.
JupyterLab is started by scripts/lab.sh itself (the operator's command), on a
free port bound to 127.0.0.1 with a token, against a copy of the notebooks (a
browser session autosaves, and the committed notebooks must stay clean).

1. health_check.ipynb: open it, run all cells, wait for the rendered
   definition-of-done table, read it, take a screenshot.
2. A change on a non-sandbox environment (a "rehearsal" profile pointing at
   the sandbox) asks in the live kernel; typing the environment name into the
   browser's stdin box lets the change go ahead, once, recorded as typed. The asks
   are counted where they happen: the kernel's input_request messages, read from
   the page's kernel connection; only a box JupyterLab has not marked answered
   (jp-OutputArea-stdin-hiding) counts as still waiting.
3. A wrong answer is refused: nothing changes, nothing is recorded as confirmed.
4. Every changing notebook (deploy, rollback, database_down, llm_provider_down,
   restore_drill, restore_incident, security_incident) on the rehearsal profile,
   its parameters cell edited in the browser as an operator does: one question
   that names the scenario and its change (never the lock's command), one typed
   answer, the definition of done met, the record confirmed by typing. The
   deploy's question and watch are the screenshots in docs/running.md.
"""

from __future__ import annotations

import json
import os
import secrets
import shutil
import signal
import socket
import subprocess
import time
from collections.abc import Iterator
from pathlib import Path

import httpx
import nbformat
import pytest
from conftest import runbook_notebook

from runbook.core.paths import project_root

sync_api = pytest.importorskip(
    "playwright.sync_api", reason="pip install playwright (no browser download)"
)
CHROMIUM = shutil.which("chromium") or "/usr/bin/chromium"
if not Path(CHROMIUM).exists():
    pytest.skip(
        "Debian's chromium is not installed (apt-get install chromium)", allow_module_level=True
    )

ROOT = project_root()
ARGS = [
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
    "--no-first-run",
]
APP = "window.jupyterapp"
KERNEL = f"{APP}.shell.currentWidget?.sessionContext?.session?.kernel"


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def confirm_notebook(path: Path, marker: Path) -> None:
    nb = runbook_notebook()
    nb.cells = [
        nbformat.v4.new_code_cell(
            f'env = "rehearsal"\nmarker = "{marker}"', metadata={"tags": ["parameters"]}
        ),
        nbformat.v4.new_code_cell(
            "from runbook import open_session\n"
            's = open_session("confirm_demo", env=env)\n'
            'r = s.run(["touch", marker])\n'
            'print("changed on", s.env, r.ok)\n'
            'r = s.run(["true"])  # asked once per run\n'
            's.close()\nprint("evidence:", s.run_dir)'
        ),
    ]
    nbformat.write(nb, path)


@pytest.fixture
def lab(sandbox, tmp_path) -> Iterator[dict]:
    # a healthy server to look at: earlier tests may leave a fault or a red CI run
    # among the last three
    sandbox.heal()
    for _ in range(3):
        sandbox.add_ci_run("success")
    root = tmp_path / "notebooks"
    root.mkdir()
    shutil.copy(ROOT / "notebooks" / "health_check.ipynb", root)
    params = tmp_path / "parameters"
    shutil.copytree(ROOT / "parameters", params)
    text = (params / "sandbox.yaml").read_text()
    (params / "rehearsal.yaml").write_text(
        text.replace("name: sandbox", "name: rehearsal").replace("kind: sandbox", "kind: staging")
    )
    marker = tmp_path / "changed-by-typed-confirmation"
    confirm_notebook(root / "confirm_demo.ipynb", marker)
    port, token = free_port(), secrets.token_hex(16)
    env = {
        **os.environ,
        "LAB_ROOT": str(root),
        "LAB_SETUP": "0",
        "LAB_PORT": str(port),
        "JUPYTER_TOKEN": token,
        "JUPYTER_CONFIG_DIR": str(tmp_path / "jupyter-config"),
        "JUPYTER_RUNTIME_DIR": str(tmp_path / "jupyter-runtime"),
        "JUPYTERLAB_WORKSPACES_DIR": str(tmp_path / "workspaces"),
        "RUNBOOK_PARAMETERS_DIR": str(params),
        "RUNBOOK_OUTPUTS": str(tmp_path / "outputs"),
    }
    log = (tmp_path / "lab.log").open("w")
    proc = subprocess.Popen(
        [str(ROOT / "scripts" / "lab.sh"), "--LabApp.expose_app_in_browser=True"],
        env=env,
        stdout=log,
        stderr=subprocess.STDOUT,
        start_new_session=True,  # its own process group: teardown stops it and its kernels
    )
    base = f"http://127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + 90
        while True:
            assert proc.poll() is None, (tmp_path / "lab.log").read_text()[-3000:]
            try:
                if httpx.get(f"{base}/api/status?token={token}", timeout=2).status_code == 200:
                    break
            except httpx.HTTPError:
                pass
            assert time.monotonic() < deadline, (tmp_path / "lab.log").read_text()[-3000:]
            time.sleep(0.5)
        # the token is required: without it the API refuses
        assert httpx.get(f"{base}/api/contents", timeout=5).status_code == 403
        yield {"base": base, "token": token, "tmp": tmp_path, "marker": marker}
    finally:
        os.killpg(proc.pid, signal.SIGTERM)
        try:
            proc.wait(timeout=20)
        except subprocess.TimeoutExpired:
            os.killpg(proc.pid, signal.SIGKILL)
            proc.wait()
        log.close()
        # the next test file finds the server as `healed` leaves it (a rehearsal deploy
        # would otherwise stay live, its fault marked active)
        sandbox.heal()


@pytest.fixture
def page(lab) -> Iterator:
    with sync_api.sync_playwright() as p:
        browser = p.chromium.launch(executable_path=CHROMIUM, args=ARGS, headless=True)
        page = browser.new_page(viewport={"width": 1400, "height": 1000})
        page.set_default_timeout(60_000)
        try:
            yield page
        finally:
            browser.close()


def open_notebook(page, lab: dict, name: str) -> None:
    page.goto(f"{lab['base']}/lab/tree/{name}?token={lab['token']}")
    page.wait_for_selector(".jp-Notebook", timeout=90_000)
    page.wait_for_function(f"{KERNEL}?.status === 'idle'", timeout=90_000)
    assert page.evaluate(f"{KERNEL}.name") == "dealix-runbook"


def run_all(page) -> None:
    """Run > Run All Cells. Not awaited: the command's promise settles only when every
    cell is done, and a cell waiting for typed input would never be."""
    page.evaluate(f"() => {{ {APP}.commands.execute('notebook:run-all-cells'); }}")


def test_health_check_runs_in_jupyterlab(lab, page) -> None:
    open_notebook(page, lab, "health_check.ipynb")
    run_all(page)
    # the verdict heading in the output (the table of contents repeats it, hidden)
    verdict = page.wait_for_selector(
        ".jp-OutputArea-output h3:has-text('DEFINITION OF DONE')", timeout=180_000
    )
    assert verdict.inner_text() == "DEFINITION OF DONE MET"
    verdict.scroll_into_view_if_needed()
    # the rendered definition-of-done table: the output that holds the verdict
    # (done() displays the styled table once and returns None)
    output = page.locator(".jp-OutputArea", has=page.locator("h3:has-text('DEFINITION OF DONE')"))
    output = output.locator("table").first
    header = output.locator("thead").inner_text()
    assert all(word in header for word in ("check", "expected", "actual", "status"))
    rows = {
        cells[0]: cells[3]
        for cells in (r.split("\t") for r in output.locator("tbody tr").all_inner_texts())
    }
    assert rows["Liveness"] == rows["Deep health"] == rows["Nginx"] == "passed", rows
    assert rows["fail2ban"] == "not available", rows
    assert rows["Armor"] == "passed", rows  # the runbook armed the test sandbox
    shot = lab["tmp"] / "health_check.png"
    page.screenshot(path=str(shot))
    assert shot.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n" and shot.stat().st_size > 20_000
    # the run in the browser left its evidence like a headless one
    (record_path,) = (lab["tmp"] / "outputs" / "sandbox" / "health_check").glob("*/record.json")
    record = json.loads(record_path.read_text())
    assert record["outcome"] == "ok" and len(record["checks"]) == 9


# Every message the kernel sends on the stdin channel, counted in the page: the browser's
# own record of how many times the run asked, whatever JupyterLab does with the boxes.
COUNT_INPUT_REQUESTS = f"""() => {{
    const kernel = {KERNEL};
    window.__inputRequests = [];
    kernel.anyMessage.connect((_, args) => {{
        if (args.direction === 'recv' && args.msg.header.msg_type === 'input_request') {{
            window.__inputRequests.push(args.msg.content.prompt);
        }}
    }});
}}"""
# A box that still waits for an answer. JupyterLab (4.6) marks an answered box's panel
# jp-OutputArea-stdin-hiding and removes it 500 ms later: that box is not waiting.
WAITING_BOX = ".jp-OutputArea-stdin-item:not(.jp-OutputArea-stdin-hiding) .jp-Stdin-input"


def answer_the_question(page, lab: dict, answer: str) -> str:
    """Run the confirmation notebook, wait for its one question, type `answer`; the prompt."""
    open_notebook(page, lab, "confirm_demo.ipynb")
    page.evaluate(COUNT_INPUT_REQUESTS)
    run_all(page)
    box = page.wait_for_selector(WAITING_BOX, timeout=120_000)
    prompt = page.locator(".jp-Stdin-prompt").inner_text()
    assert not lab["marker"].exists()  # nothing changed before the answer
    box.fill(answer)
    box.press("Enter")
    return prompt


def confirmation_events(lab: dict) -> list[dict]:
    (log,) = (lab["tmp"] / "outputs" / "rehearsal" / "confirm_demo").glob("*/commands.jsonl")
    events = [json.loads(line) for line in log.read_text().splitlines()]
    return [e for e in events if e["kind"] == "confirmation"]


def test_confirmation_prompt_accepts_the_typed_environment_name(lab, page) -> None:
    prompt = answer_the_question(page, lab, "rehearsal")
    assert "REHEARSAL" in prompt and "Type the environment name (rehearsal)" in prompt, prompt
    page.wait_for_selector(".jp-OutputArea-output:has-text('changed on rehearsal True')")
    page.wait_for_selector(".jp-OutputArea-output:has-text('evidence:')")
    page.screenshot(path=str(lab["tmp"] / "confirm.png"))
    assert lab["marker"].exists()
    # asked once: the kernel sent one input_request for two changes, and no box is left
    # waiting once the run printed its evidence folder (after both changes)
    requests = page.evaluate("window.__inputRequests")
    assert len(requests) == 1 and "Type the environment name (rehearsal)" in requests[0], requests
    assert page.locator(WAITING_BOX).count() == 0
    # recorded as typed, once, for this environment
    confirmations = confirmation_events(lab)
    assert confirmations == [{**confirmations[0], "environment": "rehearsal", "how": "typed"}], (
        confirmations
    )


def test_a_wrong_answer_is_refused_and_changes_nothing(lab, page) -> None:
    answer_the_question(page, lab, "production")
    # the cell fails with the refusal; the change after the question never ran
    page.wait_for_selector(".jp-OutputArea-output:has-text('NotConfirmed')", timeout=60_000)
    assert not lab["marker"].exists()
    assert page.locator(".jp-OutputArea-output:has-text('changed on rehearsal')").count() == 0
    # one question, none left waiting, and no confirmation recorded
    assert len(page.evaluate("window.__inputRequests")) == 1
    assert page.locator(WAITING_BOX).count() == 0
    assert confirmation_events(lab) == []


def wait_or_show(page, selector: str, timeout: float):
    """wait_for_selector, failing with what the notebook printed (the why of a timeout)."""
    try:
        return page.wait_for_selector(selector, timeout=timeout)
    except sync_api.TimeoutError:
        shown = "\n".join(page.locator(".jp-OutputArea-output").all_inner_texts())
        pytest.fail(
            f"no {selector} within {timeout / 1000:.0f} s; the notebook showed:\n{shown[-4000:]}"
        )


def set_parameters(page, **values: str) -> None:
    """Edit lines of the open notebook's parameters cell, as an operator types into it
    (`env='"rehearsal"'` turns the line `env = ...` into `env = "rehearsal"`)."""
    page.evaluate(
        f"""(values) => {{
            const model = {APP}.shell.currentWidget.content.model;
            for (let i = 0; i < model.cells.length; i++) {{
                const cell = model.cells.get(i);
                if (!(cell.getMetadata('tags') || []).includes('parameters')) continue;
                const lines = cell.sharedModel.getSource().split('\\n').map((line) => {{
                    const name = line.split('=')[0].trim();
                    return name in values ? `${{name}} = ${{values[name]}}` : line;
                }});
                cell.sharedModel.setSource(lines.join('\\n'));
                return;
            }}
            throw new Error('no parameters cell');
        }}""",
        values,
    )


def test_a_rehearsal_deploy_asks_about_the_change_and_shows_the_watch(lab, page, sandbox) -> None:
    """The deploy notebook on a non-sandbox environment, as an operator runs it: the one
    question names the SHA, the migrations and the restart (never the lock's command); one
    typed answer lets the run go ahead; the watch window shows a line per poll."""
    sandbox.fault("good-deploy")
    target = sandbox.state["deploy_faults"]["good-deploy"]["pushed"]
    open_notebook(page, lab, "deploy.ipynb")
    set_parameters(page, env='"rehearsal"', watch_minutes="0.1")
    page.evaluate(COUNT_INPUT_REQUESTS)
    run_all(page)
    box = wait_or_show(page, WAITING_BOX, 180_000)
    prompt = page.locator(".jp-Stdin-prompt").inner_text()
    assert "deploy is about to change REHEARSAL" in prompt, prompt
    assert f"-> {target[:12]}" in prompt, (target, prompt)
    assert "migrations to apply" in prompt and "restart" in prompt, prompt
    assert "mkdir" not in prompt and "owner.json" not in prompt, prompt
    box.scroll_into_view_if_needed()
    page.screenshot(path=str(lab["tmp"] / "deploy-question.png"))
    box.fill("rehearsal")
    box.press("Enter")
    verdict = wait_or_show(page, ".jp-OutputArea-output h3:has-text('DEFINITION OF DONE')", 300_000)
    # a long notebook: JupyterLab renders the cells out of view lazily, so read the text
    # itself rather than what is painted
    assert (verdict.text_content() or "").strip() == "DEFINITION OF DONE MET"
    # the watch window's progress: one display, updated in place at every poll
    watch = page.locator(".jp-OutputArea-output", has_text="watch (0.1 min on rehearsal)")
    assert watch.count() == 1, watch.all_inner_texts()
    watch.scroll_into_view_if_needed()
    page.screenshot(path=str(lab["tmp"] / "deploy-watch.png"))
    if os.environ.get("RUNBOOK_DOCS_SCREENSHOTS"):  # regenerate the pictures in docs/running.md
        for name in ("deploy-question.png", "deploy-watch.png"):
            shutil.copy(lab["tmp"] / name, ROOT / "docs" / "img" / name)
    assert len(page.evaluate("window.__inputRequests")) == 1
    assert page.locator(WAITING_BOX).count() == 0
    (record_path,) = (lab["tmp"] / "outputs" / "rehearsal" / "deploy").glob("*/record.json")
    record = json.loads(record_path.read_text())
    assert record["outcome"] == "ok", [c for c in record["checks"] if c["status"] == "failed"]
    (log,) = record_path.parent.glob("commands.jsonl")
    events = [json.loads(line) for line in log.read_text().splitlines()]
    confirmations = [e for e in events if e["kind"] == "confirmation"]
    assert [(e["environment"], e["how"]) for e in confirmations] == [("rehearsal", "typed")]


@pytest.fixture
def server_put_back(sandbox) -> Iterator[None]:
    """What a rehearsal run changed for good, put back: .env (a failover edits it) and
    the evidence databases an incident restore keeps."""
    env = Path(sandbox.state["app_dir"]) / ".env"
    original = env.read_bytes()
    corrupt = "SELECT datname FROM pg_database WHERE datname LIKE 'dealix_corrupt_%'"
    kept = {r[0] for r in sandbox.query(corrupt, dbname="postgres")}
    yield
    if env.read_bytes() != original:
        env.write_bytes(original)
        sandbox.restart("dealix-api")
        sandbox.wait_api()
    for bak in env.parent.glob(".env.bak.*"):
        bak.unlink()
    for (name,) in sandbox.query(corrupt, dbname="postgres"):
        if name not in kept:
            sandbox.query(f'DROP DATABASE "{name}" WITH (FORCE)', dbname="postgres")


@pytest.mark.parametrize(
    ("notebook", "faults", "parameters", "change"),
    [
        ("restore_drill", (), {}, "create the scratch database"),
        ("database_down", ("postgres-down",), {}, "then SELECT 1"),
        (
            "llm_provider_down",
            ("llm-down:anthropic",),
            {"failover_after_minutes": "0"},
            "LLM_PROVIDER_PRIORITY in .env",
        ),
        (
            "restore_incident",
            ("mass-delete",),
            {"reason": '"rehearsal: most leads deleted"'},
            "replace the production database",
        ),
        (
            "security_incident",
            ("intrusion", "leaked-admin-key"),
            {},
            "rotate every app secret",
        ),
    ],
)
def test_a_rehearsal_run_asks_once_about_its_change(
    lab,
    page,
    sandbox,
    server_put_back,
    notebook: str,
    faults: tuple[str, ...],
    parameters: dict[str, str],
    change: str,
) -> None:
    """Each changing notebook on a non-sandbox environment in JupyterLab: one question,
    naming the scenario and its change; one typed answer; the verdict met."""
    for fault in faults:
        sandbox.fault(fault)
    open_notebook(page, lab, f"{notebook}.ipynb")
    set_parameters(page, env='"rehearsal"', **parameters)
    page.evaluate(COUNT_INPUT_REQUESTS)
    run_all(page)
    box = wait_or_show(page, WAITING_BOX, 180_000)
    prompt = page.locator(".jp-Stdin-prompt").inner_text()
    assert "is about to change REHEARSAL" in prompt and change in prompt, prompt
    assert "mkdir" not in prompt and "owner.json" not in prompt, prompt
    box.fill("rehearsal")
    box.press("Enter")
    verdict = wait_or_show(page, ".jp-OutputArea-output h3:has-text('DEFINITION OF DONE')", 300_000)
    assert (verdict.text_content() or "").strip() == "DEFINITION OF DONE MET"
    assert len(page.evaluate("window.__inputRequests")) == 1
    assert page.locator(WAITING_BOX).count() == 0
    (record_path,) = (lab["tmp"] / "outputs" / "rehearsal" / notebook).glob("*/record.json")
    record = json.loads(record_path.read_text())
    assert record["outcome"] == "ok", [c for c in record["checks"] if c["status"] == "failed"]
    events = [
        json.loads(line)
        for line in (record_path.parent / "commands.jsonl").read_text().splitlines()
    ]
    confirmations = [e for e in events if e["kind"] == "confirmation"]
    assert [(e["environment"], e["how"]) for e in confirmations] == [("rehearsal", "typed")]


def test_a_rehearsal_rollback_asks_once_about_the_downgrade_and_the_checkout(
    lab, page, sandbox, monkeypatch
) -> None:
    """After a deploy (headless, on the sandbox), the rollback notebook on a rehearsal
    profile in JupyterLab: the question names the downgrade and the checkout."""
    from runbook.cli import run as runner

    monkeypatch.setenv("RUNBOOK_OUTPUTS", str(lab["tmp"] / "outputs"))
    sandbox.fault("good-deploy")
    code, _ = runner.run("deploy", {"watch_minutes": 0.05}, quiet=True)
    assert code == 0
    open_notebook(page, lab, "rollback.ipynb")
    set_parameters(page, env='"rehearsal"', reason='"rehearsal of a rollback in JupyterLab"')
    page.evaluate(COUNT_INPUT_REQUESTS)
    run_all(page)
    box = wait_or_show(page, WAITING_BOX, 180_000)
    prompt = page.locator(".jp-Stdin-prompt").inner_text()
    assert "rollback is about to change REHEARSAL" in prompt, prompt
    assert "alembic downgrade -1" in prompt and "(last good SHA, detached)" in prompt, prompt
    box.fill("rehearsal")
    box.press("Enter")
    verdict = wait_or_show(page, ".jp-OutputArea-output h3:has-text('DEFINITION OF DONE')", 300_000)
    assert (verdict.text_content() or "").strip() == "DEFINITION OF DONE MET"
    assert len(page.evaluate("window.__inputRequests")) == 1
    (record_path,) = (lab["tmp"] / "outputs" / "rehearsal" / "rollback").glob("*/record.json")
    record = json.loads(record_path.read_text())
    assert record["outcome"] == "ok", [c for c in record["checks"] if c["status"] == "failed"]
