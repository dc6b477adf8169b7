"""`runbook postmortem RUN_DIR`: a draft for `docs/incidents/YYYY-MM-DD.md` from a run's record.

The draft is the one drafter's (runbook.core.postmortem) with nothing added:
the runbook's five lines from the record (the human parts left as ``TODO``:
a draft never pretends to know the impact), the timeline, the
definition-of-done table, and links to every evidence file relative to the
draft, which is written as ``postmortem-draft.md`` in the run folder (an
unsealed draft: `runbook verify` names it but does not count it as tampering).
"""

from __future__ import annotations

import json
from pathlib import Path

from runbook.core.postmortem import draft

DRAFT = "postmortem-draft.md"


def write(run_dir: Path) -> tuple[Path, str]:
    """Write `postmortem-draft.md` into the run folder; returns (path, text).

    Its own name, so it never overwrites a draft a scenario wrote during the
    run (restore_incident's `postmortem.md`), which the manifest seals.
    """
    run_dir = Path(run_dir)
    record = json.loads((run_dir / "record.json").read_text())
    files = sorted(
        str(p.relative_to(run_dir))
        for p in run_dir.rglob("*")
        if p.is_file() and p.name != DRAFT and not p.name.endswith(".tmp")
    )
    # the evidence files first, the bulky logs after them
    files.sort(key=lambda f: (f.startswith("logs/"), f))
    text = draft(record, files=files)
    path = run_dir / DRAFT
    path.write_text(text, encoding="utf-8")
    return path, text
