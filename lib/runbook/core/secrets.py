"""Secrets: from the environment or a 0600 file named by the profile, never from parameters.

Every secret is registered with the session's redactor the moment it is
loaded. A missing secret is an error naming the variable, raised before
anything changes.

Example::

    >>> import os
    >>> from runbook.core.redact import Redactor
    >>> os.environ["EXAMPLE_TOKEN"] = "tok-123456789"
    >>> store = SecretStore(Redactor(), file=None)
    >>> store.get("EXAMPLE_TOKEN") == "tok-123456789"
    True
"""

from __future__ import annotations

import os
import stat
from collections.abc import Callable, Iterable
from dataclasses import fields
from pathlib import Path
from typing import TYPE_CHECKING, Any

from runbook.core.redact import Redactor
from runbook.errors import ParameterError

if TYPE_CHECKING:
    from runbook.core.profile import Profile


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


def replace_env_line(text: str, key: str, value: str) -> tuple[str, str | None]:
    r"""Set `key` in .env text, keeping every other line as it is; returns (text, old value).

    >>> replace_env_line('A=1\nLLM_PROVIDER_PRIORITY="a,b"\n', "LLM_PROVIDER_PRIORITY", "b,a")
    ('A=1\nLLM_PROVIDER_PRIORITY="b,a"\n', '"a,b"')
    """
    lines = text.splitlines(keepends=True)
    before = None
    for i, line in enumerate(lines):
        name = line.split("=", 1)[0].strip().removeprefix("export ").strip()
        if "=" in line and name == key:
            before = line.split("=", 1)[1].strip()
            end = "\n" if line.endswith("\n") else ""
            lines[i] = f'{key}="{value}"{end}'
            break
    else:
        if lines and not lines[-1].endswith("\n"):
            lines[-1] += "\n"
        lines.append(f'{key}="{value}"\n')
    return "".join(lines), before


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

    def update(self, values: dict[str, str]) -> Path | None:
        """Write `values` into the operator's secrets file; the file's path, or None without one.

        Each named line is replaced in place (comments and other lines kept as they
        are), a name the file lacks is appended. The write is atomic (a 0600 temporary
        file renamed over the old one), so a crash leaves the old file or the new one,
        never half of one and never a moment readable by others. Values a run already
        read with `get` stay as they were for that run: its clients keep the key they
        started with (the file is for the next run).

        >>> import tempfile
        >>> from pathlib import Path
        >>> d = Path(tempfile.mkdtemp()); f = d / "secrets.env"
        >>> _ = f.write_text("# mine\\nexport ADMIN_KEY=old-key-123\\n"); f.chmod(0o600)
        >>> store = SecretStore(Redactor(), str(f))
        >>> store.update({"ADMIN_KEY": "new-key-456", "HOOK": "hook-789xyz"}) == f
        True
        >>> f.read_text(), oct(f.stat().st_mode & 0o777)
        ('# mine\\nADMIN_KEY=new-key-456\\nHOOK=hook-789xyz\\n', '0o600')
        """
        path = self.file
        if path is None or not path.exists():
            return None
        lines = path.read_text().splitlines()
        done: set[str] = set()
        for i, line in enumerate(lines):
            name = line.split("=", 1)[0].removeprefix("export ").strip()
            if name in values and "=" in line and not line.lstrip().startswith("#"):
                lines[i] = f"{name}={values[name]}"
                done.add(name)
        lines += [f"{k}={v}" for k, v in values.items() if k not in done]
        tmp = path.with_name(path.name + ".tmp")
        # a leftover from a crash keeps its own mode through O_CREAT: start afresh
        tmp.unlink(missing_ok=True)
        fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
        with os.fdopen(fd, "w") as fh:
            fh.write("\n".join(lines) + "\n")
        os.replace(tmp, path)
        for name, value in values.items():
            if value:
                self.redactor.register(name, value)
        self._file_values.update(values)
        return path

    def known_values(self) -> list[str]:
        """Every secret value seen so far (for refusing parameters equal to a secret)."""
        return [*self._loaded.values(), *self._file_values.values()]

    def require(self, names: Iterable[str]) -> None:
        """Raise one `ParameterError` naming every variable in `names` that is not set.

        Each found secret is loaded (and registered with the redactor) now.
        """
        missing = [n for n in dict.fromkeys(names) if self.get(n, required=False) is None]
        if not missing:
            return
        where = self.file or "the secrets file named by the profile (secrets.file)"
        raise ParameterError(
            f"this run needs {', '.join(missing)} and "
            f"{'it is' if len(missing) == 1 else 'they are'} not set: nothing was changed. "
            f"Export {' and '.join(f'{n}=…' for n in missing)} in the environment of the "
            f"kernel, or add {'it' if len(missing) == 1 else 'them'} to {where} (mode 0600). "
            "Secrets are never notebook parameters.",
            key=missing[0],
            source=self.source,
        )


def secret_values(profile: Profile, store: SecretStore, names: Iterable[str] = ()) -> list[str]:
    """Every secret value a parameter must not hold: the secrets file, secrets read so
    far, and the environment variables the profile names (`secrets:` roles) or the
    run requires (`names`)."""
    values = list(store.known_values())
    roles = [getattr(profile.secrets, f.name) for f in fields(profile.secrets)]
    for var in dict.fromkeys([*(r for r in roles if isinstance(r, str)), *names]):
        if var and var != profile.secrets.file:
            value = os.environ.get(var)
            if value:
                values.append(value)
    return [v for v in values if v]


def parameter_holding_secret(
    params: dict[str, Any],
    values: Iterable[str],
    is_secret: Callable[[str], bool] | None = None,
) -> str | None:
    """The name (with its index or key) of the first parameter holding a secret, or None.

    Looks inside lists, tuples, sets and dicts (keys and values); a string
    holding a secret of 8 characters or more inside it counts too ("Bearer <token>").

    >>> parameter_holding_secret({"hosts": ["a", "s3cr3t-value"]}, ["s3cr3t-value"])
    'hosts[1]'
    >>> parameter_holding_secret({"reason": "db down"}, ["s3cr3t-value"]) is None
    True
    """
    secrets = [v for v in dict.fromkeys(values) if v]

    def holds(text: str) -> bool:
        if not text:
            return False
        if text in secrets or (is_secret is not None and is_secret(text)):
            return True
        return any(len(v) >= 8 and v in text for v in secrets)

    def walk(value: Any, where: str) -> str | None:
        if isinstance(value, str):
            return where if holds(value) else None
        if isinstance(value, dict):
            for k, v in value.items():
                found = walk(str(k), f"{where}[{k!r}]") or walk(v, f"{where}[{k!r}]")
                if found:
                    return found
        elif isinstance(value, (list, tuple, set, frozenset)):
            for i, v in enumerate(value):
                found = walk(v, f"{where}[{i}]")
                if found:
                    return found
        return None

    for name, value in params.items():
        found = walk(value, name)
        if found:
            return found
    return None


def refuse_secret_parameters(
    params: dict[str, Any],
    values: Iterable[str],
    is_secret: Callable[[str], bool] | None = None,
) -> None:
    """Raise `ParameterError` naming the first parameter that holds a secret (never its value).

    >>> refuse_secret_parameters({"note": "Bearer s3cr3t-value"}, ["s3cr3t-value"])
    Traceback (most recent call last):
    ...
    runbook.errors.ParameterError: parameter 'note' holds a secret value: ...
    """
    found = parameter_holding_secret(params, values, is_secret)
    if found is not None:
        raise ParameterError(
            f"parameter {found!r} holds a secret value: secrets are never parameters "
            "(papermill copies parameters into the output notebook). Put it in the "
            "environment or the profile's secrets file instead.",
            key=found,
        )
