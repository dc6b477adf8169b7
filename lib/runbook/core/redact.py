"""Redaction: the single choke point every string passes before it is shown or stored.

Secrets loaded by a session are registered here with their common
encodings (URL-encoded, base64 at every alignment, JSON-escaped); a second
net of patterns catches well-known token formats and passwords in URLs.
Redaction works on whole lines: callers that stream output split it into
lines first, so a secret split across two chunks is still caught.

Example::

    >>> r = Redactor()
    >>> r.register("ADMIN_KEY", "s3cr3t-value-123")
    >>> r.redact("curl -H 'X-API-Key: s3cr3t-value-123' http://x")
    "curl -H 'X-API-Key: [redacted:ADMIN_KEY]' http://x"
    >>> r.redact("postgresql://dealix:hunter22@127.0.0.1/dealix")
    'postgresql://dealix:[redacted]@127.0.0.1/dealix'
"""

from __future__ import annotations

import base64
import json
import re
import threading
import urllib.parse
from typing import Any

try:  # RE2 scans for every secret and pattern at once, in linear time
    import re2 as _re2
except ImportError:  # pragma: no cover - the slower pure-Python path still redacts
    _re2 = None

# Secrets shorter than this are refused: masking "abc" everywhere would
# make every log unreadable and a short secret is a finding in itself.
MIN_SECRET_LENGTH = 6

# (pattern, replacement, markers): a pattern runs only when one of its
# literal markers is in the text (checked on the lower-cased text), which
# keeps redaction of large outputs fast. No pattern spans a newline.
_PATTERNS: list[tuple[re.Pattern[str], str, tuple[str, ...]]] = [
    # scheme://user:password@host -> keep the user, hide the password
    (
        re.compile(r"(?P<pre>\b[a-zA-Z][a-zA-Z0-9+.-]*://[^\s:/@'\"]+:)[^\s@/'\"]+(?=@)"),
        r"\g<pre>[redacted]",
        ("://",),
    ),
    (
        re.compile(
            r"-----BEGIN [A-Z ]*PRIVATE KEY-----.*?(-----END [A-Z ]*PRIVATE KEY-----|$)", re.M
        ),
        "[redacted private key]",
        ("-----begin",),
    ),
    (
        re.compile(r"\bgh[pousr]_[A-Za-z0-9]{30,}\b"),
        "[redacted]",
        ("ghp_", "gho_", "ghu_", "ghs_", "ghr_"),
    ),
    (re.compile(r"\bgithub_pat_[A-Za-z0-9_]{20,}\b"), "[redacted]", ("github_pat_",)),
    (re.compile(r"\bsk-(?:ant-|proj-)?[A-Za-z0-9_-]{20,}"), "[redacted]", ("sk-",)),
    (re.compile(r"\bAKIA[0-9A-Z]{16}\b"), "[redacted]", ("akia",)),
    (re.compile(r"\bAIza[0-9A-Za-z_-]{35}\b"), "[redacted]", ("aiza",)),
    (
        re.compile(r"\bxox[abprs]-[A-Za-z0-9-]{10,}"),
        "[redacted]",
        ("xoxa-", "xoxb-", "xoxp-", "xoxr-", "xoxs-"),
    ),
    (re.compile(r"\bphx_[A-Za-z0-9]{20,}\b"), "[redacted]", ("phx_",)),
    (re.compile(r"\bsntrys_[A-Za-z0-9_=+/.-]{20,}"), "[redacted]", ("sntrys_",)),
    (
        re.compile(
            r"(?i)\b(authorization:[ \t]*(?:bearer|token|basic)[ \t]+)(?!\[redacted)[^\s'\"]+"
        ),
        r"\1[redacted]",
        ("authorization",),
    ),
    (
        re.compile(r"(?i)\b(x-api-key:[ \t]*)(?!\[redacted)[^\s'\"]+"),
        r"\1[redacted]",
        ("x-api-key",),
    ),
]


# One necessary substring per pattern above: a line with none of these (and
# no registered secret) cannot need redaction, so RE2 rules it out in one pass.
_PREFILTER = [
    r"://[^\s:/@'\"]+:[^\s@/'\"]+@",
    r"-----BEGIN",
    r"\bgh[pousr]_",
    r"\bgithub_pat_",
    r"\bsk-",
    r"\bAKIA",
    r"\bAIza",
    r"\bxox[abprs]-",
    r"\bphx_",
    r"\bsntrys_",
    r"(?i:authorization:)",
    r"(?i:x-api-key:)",
]


def _encodings(value: str) -> set[str]:
    """The forms a secret commonly takes on its way into a log."""
    raw = value.encode()
    forms = {
        value,
        urllib.parse.quote(value, safe=""),
        urllib.parse.quote_plus(value, safe=""),
        json.dumps(value)[1:-1],
    }
    # base64 of the secret inside a longer blob (Basic auth, JSON in base64)
    # depends on its offset modulo 3: keep only the characters that the
    # secret's bytes alone determine, for each of the three offsets.
    for pad in range(3):
        for encode in (base64.b64encode, base64.urlsafe_b64encode):
            enc = encode(b"\0" * pad + raw).decode().rstrip("=")
            start = -(-8 * pad // 6)
            stop = (8 * (pad + len(raw))) // 6
            stable = enc[start:stop]
            if len(stable) >= 8:
                forms.add(stable)
    return {f for f in forms if len(f) >= MIN_SECRET_LENGTH and "\n" not in f}


class Redactor:
    """Masks registered secrets and well-known token formats, line by line."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._forms: dict[str, str] = {}
        self._regex: re.Pattern[str] | None = None
        self._prefilter: Any = None
        self._prefilter_b: Any = None
        self._compile_prefilters()
        self.names: list[str] = []

    def register(self, name: str, value: str) -> None:
        """Register a secret; every encoding of it is masked from now on."""
        if not value:
            return
        if len(value) < MIN_SECRET_LENGTH:
            # Refusing silently would leak it; registering it would shred logs.
            raise ValueError(
                f"secret {name} is shorter than {MIN_SECRET_LENGTH} characters; "
                "use a real secret (a short value cannot be masked safely)"
            )
        with self._lock:
            for form in _encodings(value):
                self._forms.setdefault(form, name)
            if name not in self.names:
                self.names.append(name)
            ordered = sorted(self._forms, key=len, reverse=True)
            self._regex = re.compile("|".join(re.escape(f) for f in ordered))
            self._compile_prefilters()

    def _compile_prefilters(self) -> None:
        if _re2 is None:
            return
        literals = [re.escape(f) for f in sorted(self._forms, key=len, reverse=True)]
        pattern = "|".join([*literals, *_PREFILTER])
        self._prefilter = _re2.compile(pattern)
        self._prefilter_b = _re2.compile(pattern.encode())

    def redact_bytes(self, data: bytes) -> bytes:
        """Redact UTF-8 bytes; untouched lines keep their exact bytes.

        Only the lines the prefilter points at are decoded, redacted and
        re-encoded, which keeps large outputs fast.
        """
        pre = self._prefilter_b
        if pre is None:
            return self.redact(data.decode("utf-8", "replace")).encode()
        if pre.search(data) is None:
            return data
        out: list[bytes] = []
        pos = 0
        for m in pre.finditer(data):
            if m.start() < pos:
                continue
            start = data.rfind(b"\n", 0, m.start()) + 1
            end = data.find(b"\n", m.end())
            end = len(data) if end < 0 else end
            out.append(data[pos:start])
            out.append(self._redact_all(data[start:end].decode("utf-8", "replace")).encode())
            pos = end
        out.append(data[pos:])
        return b"".join(out)

    def is_secret(self, value: str) -> bool:
        """True if `value` is (an encoding of) a registered secret."""
        return value in self._forms

    def redact(self, text: str) -> str:
        """Return `text` with every secret and token-like value masked."""
        if not text:
            return text
        pre = self._prefilter
        if pre is None:
            return self._redact_all(text)
        if pre.search(text) is None:
            return text
        # redact only the lines the prefilter points at
        out: list[str] = []
        pos = 0
        for m in pre.finditer(text):
            if m.start() < pos:
                continue
            start = text.rfind("\n", 0, m.start()) + 1
            end = text.find("\n", m.end())
            end = len(text) if end < 0 else end
            out.append(text[pos:start])
            out.append(self._redact_all(text[start:end]))
            pos = end
        out.append(text[pos:])
        return "".join(out)

    def _redact_all(self, text: str) -> str:
        regex = self._regex
        if regex is not None:
            text = regex.sub(lambda m: f"[redacted:{self._forms[m.group(0)]}]", text)
        low = text.lower()
        for pattern, repl, markers in _PATTERNS:
            if any(m in low for m in markers):
                text = pattern.sub(repl, text)
        return text

    def redact_obj(self, obj: Any) -> Any:
        """Redact every string inside a JSON-like structure (keys included)."""
        if isinstance(obj, str):
            return self.redact(obj)
        if isinstance(obj, dict):
            return {self.redact_obj(k): self.redact_obj(v) for k, v in obj.items()}
        if isinstance(obj, (list, tuple)):
            return [self.redact_obj(v) for v in obj]
        return obj
