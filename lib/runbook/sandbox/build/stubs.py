"""The SaaS stubs' side of the build: which credentials each fake service accepts, and
the stub program's command line (its entry point is sandbox/stubs/saas.py).

Example::

    >>> sec = {k: "x" for k in ("GITHUB_TOKEN", "SENTRY_AUTH_TOKEN", "POSTHOG_PROJECT_API_KEY",
    ...        "POSTHOG_PERSONAL_API_KEY", "ANTHROPIC_API_KEY", "OPENAI_API_KEY", "GOOGLE_API_KEY")}
    >>> state = {"sentry_project_id": "1", "sentry_public_key": "k", "posthog_project_id": "2"}
    >>> stubs_config(state, sec)["github_repo"] == GITHUB_REPO
    True
"""

from __future__ import annotations

import json
from typing import Any

from runbook.sandbox.build.host import project_python, write_private
from runbook.sandbox.layout import GITHUB_REPO, Layout, project_root


def stubs_config(state: dict[str, Any], sec: dict[str, str]) -> dict[str, str]:
    """The SaaS stubs' configuration: which credentials each fake service accepts."""
    return {
        "github_repo": GITHUB_REPO,
        "github_token": sec["GITHUB_TOKEN"],
        "sentry_org": "dealix",
        "sentry_project": "dealix-api",
        "sentry_project_id": state["sentry_project_id"],
        "sentry_public_key": state["sentry_public_key"],
        "sentry_auth_token": sec["SENTRY_AUTH_TOKEN"],
        "posthog_project_id": state["posthog_project_id"],
        "posthog_project_api_key": sec["POSTHOG_PROJECT_API_KEY"],
        "posthog_personal_api_key": sec["POSTHOG_PERSONAL_API_KEY"],
        "anthropic_api_key": sec["ANTHROPIC_API_KEY"],
        "openai_api_key": sec["OPENAI_API_KEY"],
        "google_api_key": sec["GOOGLE_API_KEY"],
    }


def write_stubs_config(state: dict[str, Any], lay: Layout, sec: dict[str, str]) -> None:
    lay.stubs_dir.mkdir(parents=True, exist_ok=True)
    write_private(lay.stubs_config, json.dumps(stubs_config(state, sec), indent=2) + "\n")


def stubs_command(state: dict[str, Any], lay: Layout, hosts: list[str]) -> list[str]:
    """The stub program, listening on each of `hosts` at the stubs' port."""
    return [
        str(project_python()),
        str(project_root() / "sandbox" / "stubs" / "saas.py"),
        *(arg for h in hosts for arg in ("--host", h)),
        "--port",
        str(state["stubs_port"]),
        "--config",
        str(lay.stubs_config),
        "--state",
        str(lay.stubs_state),
    ]
