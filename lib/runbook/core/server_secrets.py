"""Secrets the server holds: its env files' values, learned before any output can show them.

The operator's secrets file names only the secrets the operator uses; the
server's `.env` holds more (the database password, signing secrets, keys
rotated away into `.env.bak.*`). A cell that runs `cat .env`, `source .env;
env` or `base64 -w0 .env` would print those raw, because the redactor never
heard of them. So the session reads every env file it knows of over its own
transport right after connecting, before any command whose output can reach
a notebook, a log or a record, and registers every secret-looking value;
it reads them again after each changing command (a rotation creates new
ones). The read itself goes to memory only: no log, no evidence but names.

Which values count as secrets (`secret_values`):

- every value of a key whose name says secret (KEY, SECRET, TOKEN, PASSWORD,
  PASS, PWD, DSN, CREDENTIAL, AUTH, PRIVATE, SALT, SIGNING, COOKIE,
  DATABASE_URL, REDIS_URL, ...), if at least `MIN_SECRET_LENGTH` characters
  (a shorter one cannot be masked without shredding every log: it is
  reported as unmaskable instead);
- the password inside any URL value (`scheme://user:password@host`); a URL
  without credentials is an address, not a secret, whatever its key's name;
- any other value that looks random: 16 characters or more, no whitespace,
  letters and digits mixed, not a URL, path, host name, version or number.
  Registering "production", "3" or "anthropic,openai,google" would mask
  those words in every log, so plain words, ports, booleans, hosts and URLs
  without credentials are left alone.

Example::

    >>> sorted(secret_values({"DB_PASSWORD": "hunter2-x", "APP_ENV": "production",
    ...                       "PORT": "8000", "SYNC_CODE": "Zq8T2vLx9pW4mN7rK1sD",
    ...                       "REDIS": "redis://:pw-12345@127.0.0.1:6379/0"})[0])
    ['DB_PASSWORD', 'REDIS (password)', 'SYNC_CODE']
"""

from __future__ import annotations

import contextlib
import posixpath
import re
import shlex
import urllib.parse
from collections.abc import Iterable
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from runbook.core.redact import MIN_SECRET_LENGTH, Redactor
from runbook.core.secrets import parse_env_text

if TYPE_CHECKING:
    from runbook.core.profile import Profile
    from runbook.core.transport import Transport

SECRET_NAME = re.compile(
    r"KEY|SECRET|TOKEN|PASSW|PASS\b|PWD|DSN|CREDENTIAL|AUTH|PRIVATE|SALT|SIGNING|COOKIE"
    r"|DATABASE_URL|REDIS_URL|_URI\b",
    re.I,
)
# shapes of values that are configuration, not secrets, whatever their length
_NOT_RANDOM = re.compile(
    r"^(?:[a-z][a-z0-9+.-]*://\S*"  # a URL (its password, if any, is taken apart)
    r"|/\S*"  # a path
    r"|\d+(?:\.\d+)*"  # a number, version or address
    r"|v?\d+(?:\.\d+)+[-+.\w]*"  # a version
    r"|(?:[a-z0-9-]+\.)+[a-z]{2,}"  # a host name
    r"|[a-z]+(?:[,;:_ -][a-z]+)*"  # words (a provider list, an environment name)
    r")$",
    re.I,
)
# committed templates hold placeholders (CHANGE_ME), not secrets
EXAMPLES = (".example", ".sample", ".template", ".dist")
# what one read may take per file: an env file is a few KiB
MAX_FILE_BYTES = 1 << 20
_SEP = b"\0"


def looks_random(value: str) -> bool:
    """True for a value that looks like a generated secret (see the module docstring).

    >>> looks_random("Zq8T2vLx9pW4mN7rK1sD"), looks_random("anthropic,openai,google")
    (True, False)
    >>> looks_random("db-primary-01.internal.example.com"), looks_random("12345678901234567")
    (False, False)
    """
    if len(value) < 16 or any(c.isspace() for c in value) or _NOT_RANDOM.match(value):
        return False
    return any(c.isalpha() for c in value) and any(c.isdigit() for c in value)


def secret_values(env: dict[str, str]) -> tuple[dict[str, str], list[str]]:
    """(values to register by name, names too short to mask) of one env file's values."""
    found: dict[str, str] = {}
    short: list[str] = []
    for name, value in env.items():
        if not value:
            continue
        url = None
        with contextlib.suppress(ValueError):
            url = urllib.parse.urlsplit(value) if "://" in value else None
            password = url.password if url else None
            if password and len(password) >= MIN_SECRET_LENGTH:
                found[f"{name} (password)"] = urllib.parse.unquote(password)
        if url is not None and "@" not in url.netloc:
            # a URL with no credentials in it (REDIS_URL=redis://host:6379/0) is an
            # address: masking it would hide where things went, and protect nothing
            continue
        if SECRET_NAME.search(name):
            if len(value) >= MIN_SECRET_LENGTH:
                found[name] = value
            else:
                short.append(name)
        elif looks_random(value):
            found[name] = value
    return found, short


@dataclass
class Learned:
    """What one read of the server's env files found: names and paths, never values."""

    files: list[str] = field(default_factory=list)
    unreadable: list[str] = field(default_factory=list)
    names: list[str] = field(default_factory=list)
    new: list[str] = field(default_factory=list)
    unmaskable: list[str] = field(default_factory=list)
    error: str | None = None

    def to_dict(self) -> dict[str, Any]:
        return {
            "files": self.files,
            "unreadable": self.unreadable,
            "names": sorted(set(self.names)),
            "new": sorted(set(self.new)),
            "unmaskable": sorted(set(self.unmaskable)),
            "error": self.error,
        }


def env_file_patterns(profile: Profile) -> list[str]:
    """Shell words naming every env file the profile knows of on the server.

    The app's env file and its siblings (`.env.bak.<time>` from rotations and
    edits, `.env.pre-v3.0.0.bak`), plus any do-not-touch file named like one.
    """
    env_file = profile.app.env_file
    directory, base = posixpath.split(env_file)
    words = [f"{shlex.quote(directory or '.')}/{shlex.quote(base)}*"]
    for path in getattr(profile.do_not_touch, "files", []) or []:
        if ".env" in posixpath.basename(str(path)) and not str(path).startswith(env_file):
            words.append(shlex.quote(str(path)))
    return words


def read_script(words: Iterable[str]) -> str:
    r"""One shell command printing each readable env file as `\0path\0content`.

    Templates (`.env.example`, ...) are skipped. A file the login cannot read is tried with `sudo -n` (which fails at once
    instead of asking for a password) and named with a `\1` mark when that
    fails too.
    """
    lim = MAX_FILE_BYTES
    return (
        f'for f in {" ".join(words)}; do [ -f "$f" ] || continue; '
        f'case "$f" in {"|".join("*" + e for e in EXAMPLES)}) continue;; esac; '
        f'if [ -r "$f" ]; then printf \'\\000%s\\000\' "$f"; head -c {lim} -- "$f"; '
        f"elif sudo -n true 2>/dev/null; then printf '\\000%s\\000' \"$f\"; "
        f'sudo -n head -c {lim} -- "$f"; '
        f"else printf '\\001%s\\001' \"$f\"; fi; done"
    )


def parse_read(data: bytes) -> tuple[dict[str, str], list[str]]:
    r"""(path -> text, unreadable paths) from the output of `read_script`.

    >>> parse_read(b"\0/a/.env\0A=1\nB=2\n\x01/a/.env.bak\x01")
    ({'/a/.env': 'A=1\nB=2\n'}, ['/a/.env.bak'])
    """
    texts: dict[str, str] = {}
    unreadable: list[str] = []
    for chunk in data.split(b"\x01")[1::2]:
        unreadable.append(chunk.decode("utf-8", "replace"))
    readable = re.sub(rb"\x01[^\x01]*\x01", b"", data)
    parts = readable.split(_SEP)
    for i in range(1, len(parts) - 1, 2):
        texts[parts[i].decode("utf-8", "replace")] = parts[i + 1].decode("utf-8", "replace")
    return texts, unreadable


def register_env_text(redactor: Redactor, text: str, learned: Learned) -> None:
    """Register every secret value of one env file's text; note names in `learned`."""
    found, short = secret_values(parse_env_text(text))
    for name, value in found.items():
        learned.names.append(name)
        if not redactor.is_secret(value):
            redactor.register(name, value)
            learned.new.append(name)
    learned.unmaskable += short


def learn(
    redactor: Redactor, transport: Transport, profile: Profile, *, timeout: float = 30
) -> Learned:
    """Read the server's env files over `transport` (output kept in memory) and register.

    Connection errors propagate (the caller was about to connect anyway and
    must see a host-key refusal); anything else is reported in `error`.
    """
    learned = Learned()
    out: list[bytes] = []
    outcome = transport.execute(
        read_script(env_file_patterns(profile)),
        on_stdout=out.append,
        on_stderr=lambda b: None,
        timeout=timeout,
    )
    texts, learned.unreadable = parse_read(b"".join(out))
    if outcome.exit_code not in (0, None) and not texts:
        learned.error = f"reading the env files exited {outcome.exit_code}"
    for path, text in texts.items():
        learned.files.append(path)
        register_env_text(redactor, text, learned)
    return learned


def learn_for_seal(redactor: Redactor, profile: Profile) -> dict[str, Any]:
    """The seal's own read of the server's env files (another process, a new connection).

    Returns what `record["secret_scan"]["server_env"]` says: the files and
    names read, or why they could not be.
    """
    try:
        transport = _transport_of(profile)
    except Exception as exc:  # an unusable profile: say so, the scan goes on
        return {"read": False, "why": f"{type(exc).__name__}: {redactor.redact(str(exc))}"[:500]}
    try:
        learned = learn(redactor, transport, profile, timeout=20)
    except Exception as exc:
        return {"read": False, "why": f"{type(exc).__name__}: {redactor.redact(str(exc))}"[:500]}
    finally:
        with contextlib.suppress(Exception):
            transport.close()
    return {"read": True, **learned.to_dict()}


def _transport_of(profile: Profile) -> Transport:
    """A transport to the profile's target, built exactly as a session builds its own.

    The session's builder (`transport_for`, not a copy of it) keeps the seal's
    connection under the same host-key pinning and options.
    """
    from runbook.core.transport import transport_for, transport_for_host

    if profile.inventory is not None:
        # a fleet: the app's env files are on its API hosts (the first, in rank order)
        return transport_for_host(profile, profile.fleet.names("api")[0])
    return transport_for(profile)
