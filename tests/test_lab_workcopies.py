"""JupyterLab's way in: per-operator working copies, and a lock held by a kernel left open.

`scripts/lab.sh --prepare-only` runs the real script up to the point where it
would start JupyterLab (no browser, no server); the lock test holds the host
lock from a real ipykernel started as a Jupyter server starts one (with
JPY_SESSION_NAME naming the notebook) and refuses a second run against the
sandbox.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

from runbook.core.paths import project_root

ROOT = project_root()


def _tracked_state() -> str:
    return subprocess.run(
        ["git", "status", "--porcelain", "--", "notebooks"],
        cwd=ROOT,
        capture_output=True,
        text=True,
        check=True,
    ).stdout


def _lab_prepare(env: dict[str, str]) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        ["scripts/lab.sh", "--prepare-only"],
        cwd=ROOT,
        env={**os.environ, "LAB_SETUP": "0", **env},
        capture_output=True,
        text=True,
        timeout=120,
    )


def test_lab_sh_serves_fresh_stripped_copies_per_operator_and_keeps_changed_ones(
    tmp_path: Path,
) -> None:
    before = _tracked_state()
    home = tmp_path / "home"
    env = {"HOME": str(home), "XDG_DATA_HOME": "", "LAB_ROOT": ""}
    p = _lab_prepare(env)
    assert p.returncode == 0, p.stdout + p.stderr
    user = subprocess.run(["id", "-un"], capture_output=True, text=True).stdout.strip()
    where = home / ".local" / "share" / "dealix-runbook" / "lab" / user
    assert f"lab: your working copies of the notebooks are in {where}" in p.stdout
    tracked = sorted(x.name for x in (ROOT / "notebooks").glob("*.ipynb"))
    assert sorted(x.name for x in where.glob("*.ipynb")) == tracked
    # an operator's session: outputs and an edited parameters cell, autosaved into the copy
    copy = where / "deploy.ipynb"
    nb = json.loads(copy.read_text())
    params = next(c for c in nb["cells"] if "parameters" in c["metadata"].get("tags", []))
    params["source"] = 'env = "production"\n'
    code = next(c for c in nb["cells"] if c["cell_type"] == "code" and c is not params)
    code["outputs"] = [{"output_type": "stream", "name": "stdout", "text": "ran\n"}]
    copy.write_text(json.dumps(nb))
    # the next start: a fresh copy, the changed one kept aside, the tracked files untouched
    p = _lab_prepare(env)
    assert p.returncode == 0, p.stdout + p.stderr
    fresh = json.loads(copy.read_text())
    assert 'env = "production"' not in "".join("".join(c["source"]) for c in fresh["cells"])
    assert all(not c.get("outputs") for c in fresh["cells"] if c["cell_type"] == "code")
    [kept] = list((where / ".previous").glob("*/deploy.ipynb"))
    assert 'env = "production"' in "".join(
        "".join(c["source"]) for c in json.loads(kept.read_text())["cells"]
    )
    assert f"changed copies from last time are in {kept.parent}" in p.stdout
    assert _tracked_state() == before
    # LAB_ROOT names the folder instead; never the tracked notebooks themselves
    other = tmp_path / "mine"
    assert _lab_prepare({**env, "LAB_ROOT": str(other)}).returncode == 0
    assert (other / "deploy.ipynb").exists()
    p = _lab_prepare({**env, "LAB_ROOT": str(ROOT / "notebooks")})
    assert p.returncode != 0 and "cannot be the tracked notebooks" in p.stderr
    assert _tracked_state() == before


def test_a_lock_held_by_a_notebook_kernel_is_named_with_how_to_free_it(
    sandbox, tmp_path: Path
) -> None:
    from jupyter_client.manager import start_new_kernel

    notebook = "lab/deploy.ipynb"
    km, kc = start_new_kernel(
        kernel_name="dealix-runbook",
        env={**os.environ, "JPY_SESSION_NAME": notebook, "RUNBOOK_OUTPUTS": str(tmp_path)},
    )
    try:
        kernel_id = Path(km.connection_file).stem.removeprefix("kernel-")
        reply = kc.execute_interactive(
            "from runbook import open_session\n"
            "s = open_session('deploy', env='sandbox')\n"
            "s.acquire_lock()\n",
            timeout=120,
        )
        assert reply["content"]["status"] == "ok", reply["content"]
        # the tab is left open: the kernel idles, holding the lock
        p = subprocess.run(
            [sys.executable, "-m", "runbook.cli", "run", "restore_drill"],
            cwd=ROOT,
            env={**os.environ, "RUNBOOK_OUTPUTS": str(tmp_path)},
            capture_output=True,
            text=True,
            timeout=600,
        )
        out = p.stdout + p.stderr
        assert p.returncode == 4, out
        assert f"held by a notebook kernel: {notebook} (kernel {kernel_id})" in out
        assert "Kernel > Shut Down Kernel" in out and "--break-stale-lock" in out
    finally:
        kc.stop_channels()
        km.shutdown_kernel(now=False)
    # shut down, the kernel released the lock as it exited
    lock = Path(sandbox.state["log_dir"]).parent / "lock" / "dealix-runbook.lock"
    assert not lock.exists()
