"""The run's evidence folder: commands.jsonl as it happens, logs, record.json.

Layout (docs/evidence.md): `outputs/<environment>/<scenario>/<UTC time>-<scenario>/`
holding the executed notebook, `record.json`, `commands.jsonl` and `logs/`.
`runbook run` chooses the folder and passes it to the kernel in
`RUNBOOK_RUN_DIR`; a plain papermill run gets a folder of its own.

Every line written here has already been redacted by the caller's redactor;
`Evidence` redacts once more on the way out, so that a string that slipped
past a caller still cannot reach the disk.
"""

from __future__ import annotations

import json
import os
import re
import threading
from pathlib import Path
from typing import Any

from runbook.clock import iso, utc_now
from runbook.core.paths import outputs_dir
from runbook.core.redact import Redactor

RECORD_SCHEMA = "runbook.record/1"


def new_run_dir(environment: str, scenario: str, *, base: Path | None = None) -> Path:
    """A fresh `outputs/<env>/<scenario>/<UTC time>-<scenario>/` (suffixed if taken)."""
    stamp = utc_now().strftime("%Y%m%dT%H%M%SZ")
    parent = (base or outputs_dir()) / environment / scenario
    parent.mkdir(parents=True, exist_ok=True)
    for n in range(1000):
        name = f"{stamp}-{scenario}" + (f"-{n}" if n else "")
        path = parent / name
        try:
            path.mkdir()
            return path
        except FileExistsError:
            continue
    raise RuntimeError(f"cannot create a run folder under {parent}")


class Evidence:
    """Append-only evidence of one run."""

    def __init__(self, run_dir: Path, redactor: Redactor):
        self.run_dir = run_dir
        self.redactor = redactor
        self.run_dir.mkdir(parents=True, exist_ok=True)
        self.logs_dir = run_dir / "logs"
        self.commands_path = run_dir / "commands.jsonl"
        self.record_path = run_dir / "record.json"
        self._lock = threading.Lock()
        self._seq = 0

    def next_seq(self) -> int:
        with self._lock:
            self._seq += 1
            return self._seq

    def log_path(self, seq: int, label: str, stream: str) -> Path:
        slug = re.sub(r"[^A-Za-z0-9]+", "-", label).strip("-")[:40] or "command"
        return self.logs_dir / f"{seq:04d}-{slug}.{stream}.log"

    def append(self, entry: dict[str, Any]) -> None:
        """Write one event to commands.jsonl now (flushed: a crash keeps it)."""
        entry = {"ts": iso(utc_now()), **entry}
        line = json.dumps(self.redactor.redact_obj(entry), default=str, ensure_ascii=False)
        with self._lock, self.commands_path.open("a", encoding="utf-8") as fh:
            fh.write(line + "\n")
            fh.flush()
            os.fsync(fh.fileno())

    def write_record(self, record: dict[str, Any]) -> Path:
        """Write record.json atomically."""
        record = self.redactor.redact_obj(record)
        tmp = self.record_path.with_suffix(".json.tmp")
        tmp.write_text(json.dumps(record, indent=2, default=str, ensure_ascii=False) + "\n")
        os.replace(tmp, self.record_path)
        return self.record_path

    def write_text(self, name: str, text: str) -> Path:
        """A redacted text file in the evidence folder (drafts, reports)."""
        path = self.run_dir / name
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(self.redactor.redact(text), encoding="utf-8")
        return path
