"""The operator's secrets and the KEY=VALUE files that hold them (0600, never printed).

Example::

    >>> import tempfile
    >>> path = Path(tempfile.mkdtemp()) / "secrets.env"
    >>> write_env_file(path, {"A": "plain", "B": "two words"}, header="example")
    >>> path.read_text()
    '# example\\nA=plain\\nB="two words"\\n'
    >>> read_env_file(path)
    {'A': 'plain', 'B': 'two words'}
"""

from __future__ import annotations

import secrets
import string
from pathlib import Path

from runbook.sandbox.build.host import write_private


def _alnum(n: int) -> str:
    alphabet = string.ascii_letters + string.digits
    return "".join(secrets.choice(alphabet) for _ in range(n))


def generate_secrets() -> dict[str, str]:
    """The operator's secrets, shaped like the real tokens (so redaction patterns see them).

    Example::

        >>> s = generate_secrets()
        >>> s["GITHUB_TOKEN"].startswith("ghp_"), len(s["GITHUB_TOKEN"])
        (True, 40)
    """
    return {
        "DEALIX_ADMIN_KEY": "dlx_admin_" + secrets.token_urlsafe(32),
        "DEALIX_WEBHOOK_SECRET": "whsec_" + secrets.token_urlsafe(32),
        "GITHUB_TOKEN": "ghp_" + _alnum(36),
        "SENTRY_AUTH_TOKEN": "sntrys_" + secrets.token_urlsafe(48),
        "POSTHOG_PERSONAL_API_KEY": "phx_" + _alnum(43),
        "POSTHOG_PROJECT_API_KEY": "phc_" + _alnum(43),
        "ANTHROPIC_API_KEY": "sk-ant-api03-" + secrets.token_urlsafe(70),
        "OPENAI_API_KEY": "sk-proj-" + secrets.token_urlsafe(48),
        "GOOGLE_API_KEY": "AIza" + secrets.token_urlsafe(27)[:35],
    }


def read_env_file(path: Path) -> dict[str, str]:
    """KEY=VALUE lines (optionally quoted), as written by `write_env_file`."""
    out: dict[str, str] = {}
    for line in path.read_text().splitlines():
        line = line.strip()
        if not line or line.startswith("#") or "=" not in line:
            continue
        key, _, value = line.partition("=")
        value = value.strip()
        if len(value) >= 2 and value[0] == value[-1] and value[0] in "\"'":
            value = value[1:-1]
        out[key.strip()] = value
    return out


def write_env_file(path: Path, values: dict[str, str], header: str = "") -> None:
    lines = [f"# {h}" for h in header.splitlines()] if header else []
    for key, value in values.items():
        needs_quotes = any(c in value for c in " ,#$\"'")
        lines.append(f'{key}="{value}"' if needs_quotes else f"{key}={value}")
    write_private(path, "\n".join(lines) + "\n")
