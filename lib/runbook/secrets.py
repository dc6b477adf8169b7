"""Secrets: from the environment or a 0600 file named by the profile, never from parameters.

Every secret is registered with the session's redactor the moment it is
loaded. A missing secret is an error naming the variable, raised before
anything changes.

Example::

    >>> import os
    >>> from runbook.redact import Redactor
    >>> os.environ["EXAMPLE_TOKEN"] = "tok-123456789"
    >>> store = SecretStore(Redactor(), file=None)
    >>> store.get("EXAMPLE_TOKEN") == "tok-123456789"
    True
"""

from __future__ import annotations

import os
import stat
from pathlib import Path

from runbook.errors import ParameterError
from runbook.redact import Redactor


def parse_env_text(text: str) -> dict[str, str]:
    """`NAME=value` lines (optional quotes, `#` comments, optional `export`).

    >>> parse_env_text('# c\\nexport A="x y"\\nB=2\\n')
    {'A': 'x y', 'B': '2'}
    """
    values: dict[str, str] = {}
    for raw in text.splitlines():
        line = raw.strip()
        if not line or line.startswith("#") or "=" not in line:
            continue
        name, value = line.split("=", 1)
        name = name.removeprefix("export ").strip()
        value = value.strip()
        if len(value) >= 2 and value[0] == value[-1] and value[0] in "'\"":
            value = value[1:-1]
        values[name] = value
    return values


def read_env_file(path: Path) -> dict[str, str]:
    """Parse a `.env`-style file (see `parse_env_text`)."""
    return parse_env_text(path.read_text())


class SecretStore:
    """Looks secrets up by variable name; registers each with the redactor."""

    def __init__(self, redactor: Redactor, file: str | None, *, source: str = "profile"):
        self.redactor = redactor
        self.source = source
        self._file_values: dict[str, str] = {}
        self._loaded: dict[str, str] = {}
        self.file = Path(file).expanduser() if file else None
        if self.file is not None and self.file.exists():
            mode = stat.S_IMODE(self.file.stat().st_mode)
            if mode & 0o077:
                raise ParameterError(
                    f"secrets file {self.file} has mode {mode:04o}; it must be readable by its "
                    f"owner only: chmod 600 {self.file}",
                    key="secrets.file",
                    source=source,
                )
            self._file_values = read_env_file(self.file)
            # Register everything in the file at once: a value printed by the
            # server is masked even if this run never asked for it.
            for name, value in self._file_values.items():
                if value:
                    self.redactor.register(name, value)

    def get(self, name: str, *, required: bool = True) -> str | None:
        """The secret held by variable `name` (environment first, then the file)."""
        if name in self._loaded:
            return self._loaded[name]
        value = os.environ.get(name) or self._file_values.get(name)
        if not value:
            if not required:
                return None
            where = f"the environment or {self.file}" if self.file else "the environment"
            raise ParameterError(
                f"secret {name} is not set: export {name}=… or add it to "
                f"{self.file or 'the secrets file named by the profile (secrets.file)'} "
                f"(looked in {where}). Secrets are never notebook parameters.",
                key=name,
                source=self.source,
            )
        self.redactor.register(name, value)
        self._loaded[name] = value
        return value

    def known_values(self) -> list[str]:
        """Every secret value seen so far (for refusing parameters equal to a secret)."""
        return [*self._loaded.values(), *self._file_values.values()]
