"""The pieces of record.json a run collects as it goes (its steps, its changes, its error), and reading one back.

The session assembles the record (`Session.record()`); these are the parts
that other layers write too (the change check records what a dry run would
have changed).

Example::

    >>> from runbook.errors import ParameterError
    >>> error_dict(ParameterError("bad env", key="env"), Redactor())["details"]
    {'key': 'env'}
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from datetime import datetime
from pathlib import Path
from typing import Any

from runbook.clock import iso, utc_now
from runbook.core.redact import Redactor
from runbook.errors import RunbookError


@dataclass
class Step:
    name: str
    started: datetime
    finished: datetime | None = None
    status: str = "running"
    error: str | None = None
    #: the scenario method that opened the step (what a resume skips as a whole)
    method: str | None = None
    #: why a step was skipped ("done in run X")
    note: str | None = None

    @property
    def duration(self) -> float | None:
        if self.finished is None:
            return None
        return (self.finished - self.started).total_seconds()

    def to_dict(self) -> dict[str, Any]:
        return {
            "name": self.name,
            "started": iso(self.started),
            "finished": iso(self.finished),
            "duration_s": None if self.duration is None else round(self.duration, 3),
            "status": self.status,
            "error": self.error,
            **({"method": self.method} if self.method else {}),
            **({"note": self.note} if self.note else {}),
        }


@dataclass
class Change:
    """Something a changing call did (or, in dry-run, would have done)."""

    kind: str
    what: str
    step: str | None
    at: datetime = field(default_factory=utc_now)
    done: bool = True

    def to_dict(self) -> dict[str, Any]:
        return {"kind": self.kind, "what": self.what, "step": self.step, "at": iso(self.at)}


def error_dict(exc: BaseException, redactor: Redactor) -> dict[str, Any]:
    """record.json's `error`: type, message and, for our errors, `details` (all redacted)."""
    out: dict[str, Any] = {
        "type": type(exc).__name__,
        "message": redactor.redact(str(exc))[:4000],
    }
    if isinstance(exc, RunbookError):
        details = exc.details()
        if details:
            out["details"] = {str(k): redactor.redact(str(v)) for k, v in details.items()}
    return out


def read_record(run_dir: Path | None) -> dict[str, Any] | None:
    """A run folder's record.json, or None when there is none or it cannot be read.

    The one lenient reader (seal, verify, the schedule); `runbook resume` reads
    its parent strictly (runbook.evidence.resume.read_record names the fix),
    and many runs are read by runbook.evidence.history.
    """
    if run_dir is None:
        return None
    try:
        data = json.loads((Path(run_dir) / "record.json").read_bytes())
    except (OSError, ValueError):
        return None
    return data if isinstance(data, dict) else None
