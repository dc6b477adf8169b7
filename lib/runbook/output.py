"""Streaming capture of a command's output: bounded memory, bounded evidence.

Bytes arrive in chunks of any size. They are decoded incrementally (a
multibyte character split across chunks survives), cut into lines, and
every line is redacted before it is kept or written: a secret split across
a chunk boundary is whole again by then. The capture keeps the first
`head` and last `tail` lines; once the output outgrows that, the whole
redacted stream goes to a log file and the capture says where.

Example::

    >>> from runbook.redact import Redactor
    >>> cap = StreamCapture(Redactor(), head=2, tail=2)
    >>> cap.feed("one\\ntwo\\nthr".encode()); cap.feed(b"ee\\nfour\\nfive\\n")
    >>> print(cap.close(), end="")
    one
    two
    … 1 line elided …
    four
    five
"""

from __future__ import annotations

import codecs
from collections import deque
from collections.abc import Callable
from pathlib import Path
from typing import TextIO

from runbook.redact import Redactor

# A line longer than this is cut into pieces so that one endless line
# (a binary blob, a progress bar without newlines) cannot exhaust memory.
MAX_LINE_CHARS = 64 * 1024
# Lines longer than this are shortened in the capture (the log keeps them whole).
SHOW_LINE_CHARS = 2000


class StreamCapture:
    """Collects one stream (stdout or stderr) of one command."""

    def __init__(
        self,
        redactor: Redactor,
        *,
        head: int = 40,
        tail: int = 40,
        log_path: Path | None = None,
        on_line: Callable[[str], None] | None = None,
    ):
        self.redactor = redactor
        self.head_max = head
        self.tail_max = tail
        self.log_path = log_path
        self.on_line = on_line
        self._decoder = codecs.getincrementaldecoder("utf-8")(errors="replace")
        self._pending = ""
        self._head: list[str] = []
        self._tail: deque[str] = deque(maxlen=tail)
        self._log: TextIO | None = None
        self._log_used = False
        self.bytes = 0
        self.lines = 0

    def feed(self, data: bytes) -> None:
        """Add a chunk of raw bytes."""
        if not data:
            return
        self.bytes += len(data)
        text = self._pending + self._decoder.decode(data)
        parts = text.split("\n")
        self._pending = parts.pop()
        for line in parts:
            self._line(line)
        while len(self._pending) > MAX_LINE_CHARS:
            self._line(self._pending[:MAX_LINE_CHARS])
            self._pending = self._pending[MAX_LINE_CHARS:]

    def _line(self, raw: str) -> None:
        line = self.redactor.redact(raw.rstrip("\r"))
        self.lines += 1
        if self.on_line is not None:
            self.on_line(line)
        if self._log is not None:
            self._log.write(line + "\n")
        if len(self._head) < self.head_max:
            self._head.append(line)
            return
        if len(self._tail) == self.tail_max and self._log is None:
            self._open_log()
            # the line about to fall out of the tail was never written
            assert self._log is not None
            self._log.write(line + "\n")
        self._tail.append(line)

    def _open_log(self) -> None:
        if self.log_path is None:
            # no evidence folder: keep head and tail only; the marker says so
            self._log_used = False
            self._log = _NullLog()
            return
        self.log_path.parent.mkdir(parents=True, exist_ok=True)
        self._log = self.log_path.open("w", encoding="utf-8")
        self._log_used = True
        # everything seen so far: the head plus the tail (nothing else was dropped yet)
        for line in [*self._head, *self._tail]:
            self._log.write(line + "\n")

    def close(self) -> str:
        """Flush the last partial line; return the bounded capture."""
        rest = self._pending + self._decoder.decode(b"", final=True)
        self._pending = ""
        if rest:
            self._line(rest)
        if self._log is not None:
            self._log.close()
        return self.text()

    @property
    def full_log(self) -> Path | None:
        """The log file holding the whole stream, if it was needed."""
        return self.log_path if self._log_used else None

    def text(self) -> str:
        shown = self._head + list(self._tail)
        elided = self.lines - len(shown)
        lines = [_shorten(x) for x in self._head]
        if elided > 0:
            where = f", full log at {self.log_path}" if self._log_used else ""
            noun = "line" if elided == 1 else "lines"
            lines.append(f"… {elided} {noun} elided{where} …")
        lines.extend(_shorten(x) for x in self._tail)
        return "\n".join(lines) + ("\n" if lines else "")


class _NullLog:
    def write(self, _text: str) -> int:
        return 0

    def close(self) -> None:
        pass


def _shorten(line: str) -> str:
    if len(line) <= SHOW_LINE_CHARS:
        return line
    return line[:SHOW_LINE_CHARS] + f"… (+{len(line) - SHOW_LINE_CHARS} chars)"
