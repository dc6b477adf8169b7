"""Layer 2, armor on the server (runbook.ops.armor), against the real sandbox.

Each test destroys something the way no guard sees: as root, outside the
runbook's session (a subprocess on this machine, which is the sandbox's
server), with forms the guard does not read (an interpreter, git plumbing, a
push from another clone, psql straight to the cluster). The armor, installed
by the runbook's own preflight (conftest's `armor_through_runbook`), holds.
"""

from __future__ import annotations

import dataclasses
import json
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest
from conftest import armor_through_runbook

from runbook.cli import run as runner
from runbook.core.profile import load_profile
from runbook.errors import Forbidden
from runbook.ops.armor import HOLDING, MARK, MISSING, NO_FS, NOT_AVAILABLE
from runbook.sandbox import Sandbox
from runbook.sandbox.layout import BACKUP_BRANCH
from runbook.session import Session, open_session


def root_sh(cmd: str, cwd: str | None = None) -> subprocess.CompletedProcess[str]:
    """A root shell on the server, outside the runbook: no guard reads it."""
    return subprocess.run(
        ["sh", "-c", cmd], cwd=cwd, capture_output=True, text=True, timeout=120, check=False
    )


def git(app: str, *args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        ["git", "-C", app, *args], capture_output=True, text=True, timeout=60, check=False
    )


@pytest.fixture
def session(sandbox: Sandbox, tmp_path: Path) -> Iterator[Session]:
    s = open_session("health_check", "sandbox", run_dir=tmp_path / "run")
    try:
        yield s
    finally:
        s.close()


@pytest.fixture
def armored(sandbox: Sandbox, tmp_path: Path) -> Iterator[Sandbox]:
    """The armor as the runbook installs it; put back after a test that lifted a piece."""
    armor_through_runbook("sandbox", tmp_path / "armor-run")
    yield sandbox
    armor_through_runbook("sandbox", tmp_path / "armor-again")


def protected_file(sb: Sandbox) -> Path:
    return Path(sb.state["app_dir"]) / ".env.pre-v3.0.0.bak"


def test_the_runbooks_preflight_installs_every_piece(armored: Sandbox, session: Session) -> None:
    pieces = {p.name: p for p in session.armor.verify()}
    path = protected_file(armored)
    assert pieces[f"immutable {path}"].status == HOLDING, pieces
    for hook in ("reference-transaction", "pre-commit", "commit-msg"):
        assert pieces[f"app repo hook {hook}"].status == HOLDING, pieces
    assert pieces["origin protects main"].status == HOLDING, pieces
    flags = root_sh(f"lsattr -d {path}").stdout.split()[0]
    assert "i" in flags


def test_rm_and_an_interpreter_cannot_delete_the_protected_file(armored: Sandbox) -> None:
    path = protected_file(armored)
    before = path.read_bytes()
    rm = root_sh(f"rm -f {path}")
    py = subprocess.run(
        [sys.executable, "-c", f"import os; os.remove({str(path)!r})"],
        capture_output=True,
        text=True,
        check=False,
    )
    over = root_sh(f"echo gone > {path}")
    assert rm.returncode != 0 and "Operation not permitted" in rm.stderr, rm
    assert py.returncode != 0 and "PermissionError" in py.stderr, py.stderr[-300:]
    assert over.returncode != 0, over
    assert path.read_bytes() == before


def test_plumbing_cannot_delete_or_move_the_kept_branch(armored: Sandbox) -> None:
    app = armored.state["app_dir"]
    kept = git(app, "rev-parse", BACKUP_BRANCH).stdout.strip()
    tries = [
        git(app, "branch", "-D", BACKUP_BRANCH),
        git(app, "update-ref", "-d", f"refs/heads/{BACKUP_BRANCH}"),
        git(app, "branch", "-M", BACKUP_BRANCH, "moved-away"),
        git(app, "update-ref", f"refs/heads/{BACKUP_BRANCH}", "HEAD"),
    ]
    for got in tries:
        assert got.returncode != 0 and "armor" in got.stderr, got
    assert git(app, "rev-parse", BACKUP_BRANCH).stdout.strip() == kept
    assert git(app, "rev-parse", "--verify", "-q", "moved-away").returncode != 0


def test_no_commit_on_the_server_even_with_no_verify_or_plumbing(armored: Sandbox) -> None:
    app = armored.state["app_dir"]
    head = git(app, "rev-parse", "HEAD").stdout.strip()
    ident = ["-c", "user.name=Tired Operator", "-c", "user.email=op@example.com"]
    porcelain = git(app, *ident, "commit", "--allow-empty", "--no-verify", "-m", "hotfix")
    tree = git(app, "rev-parse", "HEAD^{tree}").stdout.strip()
    new = git(app, *ident, "commit-tree", tree, "-p", head, "-m", "plumbing").stdout.strip()
    plumbing = git(app, "update-ref", "HEAD", new)
    assert porcelain.returncode != 0 and "armor" in porcelain.stderr, porcelain
    assert plumbing.returncode != 0 and "origin does not have" in plumbing.stderr, plumbing
    assert git(app, "rev-parse", "HEAD").stdout.strip() == head
    # what the runbook itself does still works: a commit origin has, and back
    older = git(app, "rev-parse", "HEAD~1").stdout.strip()
    branch = git(app, "symbolic-ref", "--short", "-q", "HEAD").stdout.strip()
    assert git(app, "checkout", "-q", "--detach", older).returncode == 0
    back = git(app, "checkout", "-q", branch or head)
    assert back.returncode == 0, back.stderr
    assert git(app, "rev-parse", "HEAD").stdout.strip() == head


def test_the_origin_refuses_a_push_to_main(armored: Sandbox, tmp_path: Path) -> None:
    origin = armored.state["origin_dir"]
    main = git(origin, "rev-parse", "refs/heads/main").stdout.strip()
    work = str(tmp_path / "dev-clone")
    assert subprocess.run(["git", "clone", "-q", origin, work], check=False).returncode == 0
    ident = ["-c", "user.name=Dev", "-c", "user.email=dev@example.com"]
    assert git(work, *ident, "commit", "-q", "--allow-empty", "-m", "direct").returncode == 0
    # `git push -u origin HEAD` while on main: the refspec never names main plainly
    pushed = git(work, "push", "-u", "origin", "HEAD")
    assert pushed.returncode != 0 and "Protected branch" in pushed.stderr, pushed
    assert git(origin, "rev-parse", "refs/heads/main").stdout.strip() == main
    # a branch for a pull request is fine, as on GitHub
    assert git(work, "push", "-q", "origin", "HEAD:refs/heads/feature-x").returncode == 0
    git(origin, "update-ref", "-d", "refs/heads/feature-x")


def test_the_guard_refuses_lifting_the_armor(armored: Sandbox, session: Session) -> None:
    path = protected_file(armored)
    with pytest.raises(Forbidden) as info:
        session.run(f"cd {path.parent} && chattr -i {path.name}", shell=True)
    assert info.value.rule == "keep-armor"
    assert "i" in root_sh(f"lsattr -d {path}").stdout.split()[0]


def test_corrupt_db_dump_survives_a_drop(armored: Sandbox, session: Session) -> None:
    name = "dealix_corrupt_20261207_armor"
    psql = armored.state["psql"]
    root_sh(f"{psql} -X -q -d postgres -c 'DROP DATABASE IF EXISTS {name}'")
    made = root_sh(f"{psql} -X -q -d postgres -c 'CREATE DATABASE {name} TEMPLATE dealix'")
    assert made.returncode == 0, made.stderr
    piece = session.armor.seal_dump(name)
    assert piece.status == HOLDING, piece
    dump = piece.name.removeprefix("evidence dump ")
    # a root psql outside the runbook drops the evidence: the guard never sees it
    dropped = root_sh(f"{psql} -X -q -d postgres -c 'DROP DATABASE {name}'")
    assert dropped.returncode == 0, dropped.stderr
    assert Path(dump).stat().st_size > 0
    assert root_sh(f"rm -f {dump}").returncode != 0 and Path(dump).exists()
    listing = root_sh(f"{Path(armored.state['pg_bindir']) / 'pg_restore'} -l {dump}")
    assert "TABLE public leads" in listing.stdout, listing.stdout[-500:]


def test_health_check_turns_red_when_a_piece_is_lifted(
    armored: Sandbox, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("RUNBOOK_OUTPUTS", str(tmp_path / "outputs"))
    code, run_dir = runner.run("health_check", {}, quiet=True)
    record = json.loads((run_dir / "record.json").read_text())
    armor = next(c for c in record["checks"] if c["name"] == "Armor")
    assert code == 0 and armor["status"] == "passed", armor
    path = protected_file(armored)
    # a root shell outside the runbook lifts it: the next health check says so
    assert root_sh(f"chattr -i {path}").returncode == 0
    code, run_dir = runner.run("health_check", {}, quiet=True)
    record = json.loads((run_dir / "record.json").read_text())
    armor = next(c for c in record["checks"] if c["name"] == "Armor")
    assert armor["status"] == "failed" and str(path) in armor["note"], armor
    assert code == 3 and record["outcome"] == "dod_not_met"


def test_github_branch_protection_is_read_back(armored: Sandbox, session: Session) -> None:
    piece = session.armor._github_protection("origin protects main")
    assert piece.status == HOLDING, piece
    armored.stub_control("/_stub/github/protection", {"branch": "main", "protected": False})
    try:
        off = session.armor._github_protection("origin protects main")
    finally:
        armored.stub_control("/_stub/github/protection", {"branch": "main", "protected": True})
    assert off.status == MISSING and "not protected on GitHub" in off.detail, off


def test_a_filesystem_without_the_attribute_is_not_available_never_passed(
    armored: Sandbox, tmp_path: Path
) -> None:
    profile = load_profile("sandbox")
    # /proc has no file attributes at all: lsattr/chattr say "Operation not supported"
    dnt = dataclasses.replace(profile.do_not_touch, files=["/proc/version"])
    profile = dataclasses.replace(profile, do_not_touch=dnt)
    s = open_session("health_check", "sandbox", run_dir=tmp_path / "run", profile=profile)
    try:
        pieces = s.armor.install()
    finally:
        s.close()
    piece = next(p for p in pieces if p.name == "immutable /proc/version")
    assert piece.status == NOT_AVAILABLE and piece.detail == NO_FS, piece
    assert piece.passed is None


def test_the_hooks_carry_the_mark(armored: Sandbox) -> None:
    hook = Path(armored.state["app_dir"]) / ".git" / "hooks" / "reference-transaction"
    assert MARK in hook.read_text()
    assert MARK in (Path(armored.state["origin_dir"]) / "hooks" / "pre-receive").read_text()


def test_a_read_cannot_write_least_privilege(armored: Sandbox, session: Session) -> None:
    # a read-only call (db.query, db.probe) runs in read-only transactions: a read that
    # would write fails, and nothing was written
    r = session.db.probe("CREATE TABLE armor_probe_wrote (a int)")
    assert not r.ok and "read-only transaction" in r.stderr, r.stderr
    exists = session.db.query("SELECT to_regclass('public.armor_probe_wrote') IS NULL AS gone")
    assert bool(exists["gone"][0])
