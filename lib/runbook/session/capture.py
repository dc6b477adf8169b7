"""Streaming capture of a command's output: bounded memory, bounded evidence.

Bytes arrive in chunks of any size and are cut at the last newline, so a
secret split across a chunk boundary is whole again before anything is
redacted (no redaction pattern spans a newline), and a multibyte character
is never cut. The capture keeps the first `head` and last `tail` lines and
redacts them when they are shown; once the output outgrows that, the whole
stream goes to a log file through a writer thread that redacts each block
before it reaches the disk (RE2 releases the GIL, so scanning and writing
overlap with receiving).

Example::

    >>> from runbook.core.redact import Redactor
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

import queue
import threading
from collections import deque
from pathlib import Path
from typing import Protocol

from runbook.core.redact import Redactor

# A line longer than this is cut into pieces so that one endless line
# (a binary blob, a progress bar without newlines) cannot exhaust memory.
MAX_LINE_BYTES = 64 * 1024
# Lines longer than this are shortened in the capture (the log keeps them whole).
SHOW_LINE_CHARS = 2000


class StreamCapture:
    """Collects one stream (stdout or stderr) of one command.

    Works on bytes: a newline byte never occurs inside a UTF-8 character, so
    cutting at the last newline keeps characters whole; only the lines that
    are shown get decoded, and the log gets the redacted bytes as they came.
    """

    def __init__(
        self,
        redactor: Redactor,
        *,
        head: int = 40,
        tail: int = 40,
        log_path: Path | None = None,
    ):
        self.redactor = redactor
        self.head_max = head
        self.tail_max = tail
        self.log_path = log_path
        self._pending = b""
        self._head: list[bytes] = []
        self._tail: deque[bytes] = deque(maxlen=tail)
        self._log: _Log | None = None
        self._overflowed = False
        self._no_final_newline = False
        self.bytes = 0
        self.lines = 0

    def feed(self, data: bytes) -> None:
        """Add a chunk of raw bytes."""
        if not data:
            return
        self.bytes += len(data)
        cut = data.rfind(b"\n")
        if cut < 0:
            self._pending += data
        else:
            # one copy at most: this runs on every byte of a large output
            if not self._pending and cut == len(data) - 1:
                block = data
            else:
                block = b"".join((self._pending, memoryview(data)[: cut + 1]))
            self._pending = data[cut + 1 :]
            self._block(block)
        while len(self._pending) > MAX_LINE_BYTES:
            piece = self._pending[:MAX_LINE_BYTES]
            # never cut inside a UTF-8 character: back off to a lead byte
            back = 0
            while back < 4 and (piece[len(piece) - 1 - back] & 0xC0) == 0x80:
                back += 1
            if back < 4 and piece[len(piece) - 1 - back] >= 0xC0:
                piece = piece[: len(piece) - 1 - back]
            self._pending = self._pending[len(piece) :]
            self._block(piece + b"\n")

    def _block(self, block: bytes) -> None:
        """Take complete lines (ending in a newline); the log redacts them."""
        self.lines += block.count(b"\n")
        if self._overflowed:
            assert self._log is not None
            self._log.write(block)
            self._tail.extend(_last_lines(block, self.tail_max))
            return
        lines = block.split(b"\n")[:-1]
        room = self.head_max - len(self._head)
        if room > 0:
            self._head.extend(lines[:room])
            lines = lines[room:]
        if len(self._tail) + len(lines) > self.tail_max:
            # the first line is about to fall out of the tail: from now on the
            # whole stream goes to the log, starting with everything seen so far
            self._open_log()
            assert self._log is not None
            self._log.write(b"".join(x + b"\n" for x in lines))
        self._tail.extend(lines)

    def _open_log(self) -> None:
        self._overflowed = True
        if self.log_path is None:
            self._log = _NullLog()
            return
        self.log_path.parent.mkdir(parents=True, exist_ok=True)
        self._log = log = _LogWriter(self.log_path, self.redactor)
        log.write(b"".join(x + b"\n" for x in [*self._head, *self._tail]))

    def close(self) -> str:
        """Flush the last partial line; return the bounded capture."""
        rest, self._pending = self._pending, b""
        if rest:
            self._block(rest + b"\n")
            self._no_final_newline = True
        if self._log is not None:
            self._log.close()
        return self.text()

    def _show(self, raw: bytes) -> str:
        return _show_line(self.redactor, raw)

    @property
    def full_log(self) -> Path | None:
        """The log file holding the whole stream, if it was needed."""
        return self.log_path if self._overflowed and self.log_path is not None else None

    def text(self) -> str:
        shown = len(self._head) + len(self._tail)
        elided = self.lines - shown
        show = self._show
        lines = [show(x) for x in self._head]
        if elided > 0:
            where = f", full log at {self.log_path}" if self.full_log else ""
            noun = "line" if elided == 1 else "lines"
            lines.append(f"… {elided} {noun} elided{where} …")
        lines.extend(show(x) for x in self._tail)
        end = "\n" if lines and not self._no_final_newline else ""
        return "\n".join(lines) + end


class _Log(Protocol):
    """Where an overflowing capture writes its full stream."""

    def write(self, data: bytes, /) -> int: ...

    def close(self) -> None: ...


class _LogWriter:
    """Redacts and writes the log in a two-stage pipeline of threads: one
    scans a block (RE2 releases the GIL) while the other writes the previous
    one, and both overlap with receiving the next. Queues of one block keep
    memory bounded."""

    def __init__(self, path: Path, redactor: Redactor):
        self._fh = path.open("wb")
        self._redactor = redactor
        self._raw: queue.Queue[bytes | None] = queue.Queue(maxsize=1)
        self._clean: queue.Queue[bytes | None] = queue.Queue(maxsize=1)
        self._error: BaseException | None = None
        self._threads = [
            threading.Thread(target=self._scan, daemon=True, name="runbook-log-scan"),
            threading.Thread(target=self._write, daemon=True, name="runbook-log-write"),
        ]
        for t in self._threads:
            t.start()

    def _scan(self) -> None:
        while (data := self._raw.get()) is not None:
            try:
                self._clean.put(self._redactor.redact_bytes(data))
            except BaseException as exc:  # surfaced on close; never write unredacted
                self._error = exc
        self._clean.put(None)

    def _write(self) -> None:
        while (data := self._clean.get()) is not None:
            try:
                self._fh.write(data)
            except BaseException as exc:  # surfaced on close
                self._error = exc

    def write(self, data: bytes) -> int:
        self._raw.put(data)
        return len(data)

    def close(self) -> None:
        self._raw.put(None)
        for t in self._threads:
            t.join()
        self._fh.close()
        if self._error is not None:
            raise self._error


class _NullLog:
    def write(self, _data: bytes) -> int:
        return 0

    def close(self) -> None:
        pass


def _last_lines(block: bytes, n: int) -> list[bytes]:
    """The last `n` lines of a block that ends with a newline.

    `rsplit` with a limit would copy the whole rest of the block into its
    first item; walking back `n` newlines touches only the tail.

    >>> _last_lines(b"a\\nb\\nc\\n", 2), _last_lines(b"a\\n", 5), _last_lines(b"a\\n", 0)
    ([b'b', b'c'], [b'a'], [])
    """
    if n <= 0:
        return []
    start = len(block) - 1
    for _ in range(n):
        start = block.rfind(b"\n", 0, start)
        if start < 0:
            break
    return block[start + 1 : -1].split(b"\n")


def _show_line(redactor: Redactor, raw: bytes) -> str:
    line = redactor.redact(raw.decode("utf-8", "replace").rstrip("\r"))
    if len(line) <= SHOW_LINE_CHARS:
        return line
    return line[:SHOW_LINE_CHARS] + f"… (+{len(line) - SHOW_LINE_CHARS} chars)"
