"""The app: its git origin with a short, reproducible history, the clone, its venv and `.env`.

Example::

    >>> env = app_env(
    ...     {"stubs_url": "http://127.0.0.1:9", "pg_port": 5433, "redis_url": "redis://r",
    ...      "sentry_public_key": "k", "stubs_port": 9, "sentry_project_id": "1"},
    ...     {k: "x" for k in ("DEALIX_ADMIN_KEY", "DEALIX_WEBHOOK_SECRET", "ANTHROPIC_API_KEY",
    ...      "OPENAI_API_KEY", "GOOGLE_API_KEY", "POSTHOG_PROJECT_API_KEY")},
    ...     {"DB_PASSWORD": "pw"})
    >>> env["OPENAI_BASE_URL"], env["DATABASE_URL"]
    ('http://127.0.0.1:9/openai', 'postgresql://dealix:pw@127.0.0.1:5433/dealix')
"""

from __future__ import annotations

import os
import secrets
import shlex
import shutil
import sys
import sysconfig
from pathlib import Path
from typing import Any

from runbook.ops.armor import hook_origin_pre_receive
from runbook.sandbox.build.envfiles import read_env_file, write_env_file
from runbook.sandbox.build.host import clean_env, git, project_python, run
from runbook.sandbox.layout import BACKUP_BRANCH, Layout, project_root
from runbook.sandbox.procs import SandboxError

GIT_AUTHOR = ("Sami Assiri", "sami@dealix.me")
# Fixed dates make the origin's SHAs reproducible for a given template.
GIT_DATES = ("2026-04-22T21:03:11+03:00", "2026-04-23T11:05:27+03:00")


def _template() -> Path:
    return project_root() / "sandbox" / "app"


def app_git(
    *args: str, cwd: Path | None = None, log: Path | None = None, date: str | None = None
) -> str:
    """Local git as the app's developer (GIT_AUTHOR), at `date` when given."""
    env = clean_env(GIT_CONFIG_NOSYSTEM="1", GIT_TERMINAL_PROMPT="0")
    # Never read or write the operator's global git config.
    env["GIT_CONFIG_GLOBAL"] = "/dev/null"
    if date:
        env["GIT_AUTHOR_DATE"] = env["GIT_COMMITTER_DATE"] = date
    name, email = GIT_AUTHOR
    config = {"user.name": name, "user.email": email, "init.defaultBranch": "main"}
    return git(*args, env=env, cwd=cwd, log=log, config=config)


def _split_history(work: Path) -> tuple[list[str], list[str]]:
    """Files of commit 1 and of commit 2: the newest migration lands in commit 2."""
    files = sorted(
        str(p.relative_to(work))
        for p in work.rglob("*")
        if p.is_file() and ".git" not in p.relative_to(work).parts
    )
    migrations = sorted(
        f for f in files if f.startswith("migrations/versions/") and f.endswith(".py")
    )
    later = migrations[-1:] if len(migrations) > 1 else []
    return [f for f in files if f not in later], later


def build_app_repo(lay: Layout) -> str:
    """Commit the template into a bare origin as a short history; clone it. Returns HEAD."""
    template = _template()
    if not (template / "dealix").is_dir():
        raise SandboxError("app", f"the app template is missing: {template}/dealix")
    log = lay.root / "build.log"
    for d in (lay.origin_dir, lay.app_dir):
        if d.exists():
            shutil.rmtree(d)
    lay.origin_dir.parent.mkdir(parents=True, exist_ok=True)
    lay.app_dir.parent.mkdir(parents=True, exist_ok=True)
    app_git("init", "-q", "--bare", "-b", "main", str(lay.origin_dir), log=log)

    work = lay.root / "tmp" / "app-history"
    if work.exists():
        shutil.rmtree(work)
    shutil.copytree(
        template,
        work,
        ignore=shutil.ignore_patterns(
            "__pycache__", "*.pyc", ".venv", ".env", ".pytest_cache", ".last_good_sha"
        ),
    )
    for script in work.glob("scripts/*.sh"):
        script.chmod(0o755)
    first, later = _split_history(work)
    app_git("init", "-q", "-b", "main", cwd=work, log=log)
    app_git("add", "--", *first, cwd=work, log=log)
    app_git(
        "commit",
        "-q",
        "-m",
        "Dealix API v3.0.0: primitive launch",
        cwd=work,
        log=log,
        date=GIT_DATES[0],
    )
    sha1 = app_git("rev-parse", "HEAD", cwd=work)
    if later:
        msg = f"Add migration {Path(later[0]).stem}"
    else:
        (work / "CHANGELOG.md").write_text("# Changelog\n\n## v3.0.0\n\n- Primitive launch.\n")
        later = ["CHANGELOG.md"]
        msg = "Add changelog"
    app_git("add", "--", *later, cwd=work, log=log)
    app_git("commit", "-q", "-m", msg, cwd=work, log=log, date=GIT_DATES[1])
    app_git("push", "-q", str(lay.origin_dir), "main:main", cwd=work, log=log)
    app_git("--git-dir", str(lay.origin_dir), "branch", BACKUP_BRANCH, sha1, log=log)
    shutil.rmtree(work)

    protect_origin(lay.origin_dir)

    app_git("clone", "-q", str(lay.origin_dir), str(lay.app_dir), log=log)
    app_git("branch", "-q", BACKUP_BRANCH, f"origin/{BACKUP_BRANCH}", cwd=lay.app_dir, log=log)
    # Deploy-local files must not show up as drift in `git status`.
    exclude = lay.app_dir / ".git" / "info" / "exclude"
    with exclude.open("a") as fh:
        fh.write(".venv/\n.env\n.env.*.bak\n.last_good_sha\n__pycache__/\n")
    return app_git("rev-parse", "HEAD", cwd=lay.app_dir)


def protect_origin(origin_dir: Path) -> Path:
    """The bare origin's branch protection: a `pre-receive` hook refusing pushes to main
    and to the kept branch, as GitHub's protection does (runbook.ops.armor). It is part
    of the build because the origin stands for GitHub; the app repo's armor is installed
    by the runbook itself. Returns the hook's path.
    """
    hook = origin_dir / "hooks" / "pre-receive"
    hook.parent.mkdir(parents=True, exist_ok=True)
    hook.write_text(hook_origin_pre_receive(["main"], [BACKUP_BRANCH]))
    hook.chmod(0o755)
    return hook


def build_app_venv(lay: Layout) -> None:
    """A venv with system site packages that also sees the project venv's packages.

    A venv made from a venv inherits the *base* interpreter's site-packages,
    not the project venv's: a .pth file adds those, so the app's
    requirements are satisfied offline and `pip install -r` is a no-op.
    """
    venv = lay.app_venv
    if venv.exists():
        shutil.rmtree(venv)
    run(
        [str(project_python()), "-m", "venv", "--system-site-packages", "--without-pip", str(venv)],
        "app-venv",
        lay.root / "build.log",
    )
    purelib = sysconfig.get_paths()["purelib"] if sys.prefix != sys.base_prefix else None
    if purelib is None:
        out = run(
            [
                str(project_python()),
                "-c",
                "import sysconfig; print(sysconfig.get_paths()['purelib'])",
            ],
            "app-venv",
        )
        purelib = out.stdout.decode().strip()
    site_dirs = sorted(venv.glob("lib/python3*/site-packages"))
    if not site_dirs:
        raise SandboxError("app-venv", f"no site-packages in {venv}")
    # addsitedir (not a bare path) so the project venv's own .pth files run too.
    (site_dirs[0] / "dealix-runbook-project-venv.pth").write_text(
        f"import site; site.addsitedir({str(purelib)!r})\n"
    )
    # Offline by design: a missing requirement fails at once instead of
    # waiting on the network, and pip does not look for its own upgrade.
    (venv / "pip.conf").write_text("[global]\nno-index = true\ndisable-pip-version-check = true\n")
    py = venv / "bin" / "python"
    for tool, module in (("alembic", "alembic"), ("pip", "pip"), ("uvicorn", "uvicorn")):
        script = venv / "bin" / tool
        # The venv has no console scripts of its own (its packages come
        # through the .pth file): stand in for pip's entry points.
        script.write_text(f'#!/bin/sh\nexec {shlex.quote(str(py))} -m {module} "$@"\n')
        script.chmod(0o755)


def app_env(state: dict[str, Any], sec: dict[str, str], internal: dict[str, str]) -> dict[str, str]:
    stubs = state["stubs_url"]
    return {
        "APP_ENV": "sandbox",
        "APP_VERSION": "3.0.0",
        "DATABASE_URL": (
            f"postgresql://dealix:{internal['DB_PASSWORD']}@127.0.0.1:{state['pg_port']}/dealix"
        ),
        "REDIS_URL": state["redis_url"],
        "ADMIN_KEY": sec["DEALIX_ADMIN_KEY"],
        "WEBHOOK_SECRET": sec["DEALIX_WEBHOOK_SECRET"],
        "ANTHROPIC_API_KEY": sec["ANTHROPIC_API_KEY"],
        "OPENAI_API_KEY": sec["OPENAI_API_KEY"],
        "GOOGLE_API_KEY": sec["GOOGLE_API_KEY"],
        "ANTHROPIC_BASE_URL": f"{stubs}/anthropic",
        "OPENAI_BASE_URL": f"{stubs}/openai",
        "GOOGLE_BASE_URL": f"{stubs}/google",
        "LLM_PROVIDER_PRIORITY": "anthropic,openai,google",
        "BREAKER_FAILURE_THRESHOLD": "3",
        # Production waits 60 s before a half-open probe; drills cannot.
        "BREAKER_RESET_SECONDS": "3",
        "WORKLOAD_INTERVAL_SECONDS": "2",
        "SENTRY_DSN": (
            f"http://{state['sentry_public_key']}@127.0.0.1:{state['stubs_port']}"
            f"/sentry/{state['sentry_project_id']}"
        ),
        "POSTHOG_API_KEY": sec["POSTHOG_PROJECT_API_KEY"],
        "POSTHOG_HOST": f"{stubs}/posthog",
    }


def write_app_env(lay: Layout, state: dict[str, Any], sec: dict[str, str], head: str) -> None:
    internal = {"DB_PASSWORD": secrets.token_urlsafe(24)}
    env = app_env(state, sec, internal)
    write_env_file(
        lay.app_dir / ".env",
        env,
        header="Dealix API configuration (sandbox). Never edit on the server:\n"
        "changes flow through GitHub PR -> deploy script.",
    )
    # The pre-v3 file predates the provider priority and the breakers, and
    # holds the secrets that were rotated at the v3.0.0 launch.
    old = {
        k: v
        for k, v in env.items()
        if not k.startswith(("BREAKER_", "LLM_", "WORKLOAD_", "POSTHOG_", "APP_VERSION"))
    }
    old.update(
        {
            "APP_ENV": "production",
            "ADMIN_KEY": "dlx_admin_" + secrets.token_urlsafe(32),
            "ANTHROPIC_API_KEY": "sk-ant-api03-" + secrets.token_urlsafe(70),
            "OPENAI_API_KEY": "sk-" + secrets.token_urlsafe(36),
        }
    )
    old.pop("GOOGLE_API_KEY", None)
    old.pop("GOOGLE_BASE_URL", None)
    bak = lay.app_dir / ".env.pre-v3.0.0.bak"
    write_env_file(
        bak,
        old,
        header="Backup taken 2026-04-23 08:44:42 before the v3.0.0 launch."
        "\nEmergency reference: never delete.",
    )
    stamp = 1776923082.0  # 2026-04-23T08:44:42+03:00, when the backup was taken
    os.utime(bak, (stamp, stamp))
    (lay.app_dir / ".last_good_sha").write_text(head + "\n")


def read_app_env(lay: Layout) -> dict[str, str]:
    return read_env_file(lay.app_dir / ".env")
