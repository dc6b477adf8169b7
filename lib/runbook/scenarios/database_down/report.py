"""Scenario 3's postmortem lines and drain verdicts, from what the run did (pure).

`postmortem_summary` writes the runbook's 5 lines; `action_summary` says each
change in a short phrase; `stopped_because` says why a DLQ drain stopped.
"""

from __future__ import annotations

import re
from datetime import datetime
from pathlib import PurePosixPath
from typing import TYPE_CHECKING

from runbook.core.postmortem import Summary
from runbook.scenarios.database_down.signals import CORRUPT, Branch

if TYPE_CHECKING:
    import pandas as pd


def postmortem_summary(
    *,
    started: datetime,
    finished: datetime,
    branch: Branch,
    actions: list[str],
    webhooks: str,
) -> Summary:
    """The runbook's 5-line postmortem (for docs/incidents/YYYY-MM-DD.md) of this incident.

    >>> from datetime import datetime, UTC
    >>> t = datetime(2026, 11, 27, 3, 0, tzinfo=UTC)
    >>> lines = postmortem_summary(started=t, finished=t, branch=Branch("disk full", "x"),
    ...                            actions=["rm old"], webhooks="0 queued").lines()
    >>> len(lines), lines[0]
    (5, '1. **What happened:** disk full — x')
    """
    minutes = (finished - started).total_seconds() / 60
    return Summary(
        what_happened=f"{branch.name} — {branch.reason}",
        impact=f"Data: {webhooks}. TODO: who or what was affected, for how long.",
        detection=f"triage {started:%H:%M} UTC named the branch “{branch.name}”. "
        "TODO: which signal paged us.",
        resolution=f"{'; '.join(actions) or 'nothing: no action was needed'}; "
        + ("handed over to scenario 5" if branch.name == CORRUPT else "fixed")
        + f" by {finished:%H:%M} UTC ({minutes:.0f} min in this notebook)",
        follow_up="TODO: owner, action, due date (fill in before filing).",
    )


def action_summary(what: str) -> str:
    """One short phrase per change for the postmortem line.

    >>> action_summary("rm -f -- /b/dealix-2026-10-01.sql.gz /b/dealix-2026-10-02.sql.gz")
    'deleted 2 old backups (dealix-2026-10-01.sql.gz … dealix-2026-10-02.sql.gz)'
    """
    if what.startswith("rm -f -- "):
        names = [PurePosixPath(p).name for p in what.removeprefix("rm -f -- ").split()]
        return f"deleted {len(names)} old backups ({names[0]} … {names[-1]})"
    for verb in ("restart", "start", "stop"):
        m = re.search(rf"\b{verb}\s+(\S+)$", what)
        if m:
            return f"{verb} {m.group(1)}"
    return what if len(what) <= 100 else what[:97] + "..."


def stopped_because(batches: pd.DataFrame | None, max_batches: int) -> str:
    if batches is None or not len(batches):
        return "nothing to drain"
    last = batches.iloc[-1]
    if not last["remaining"]:
        return f"empty after {len(batches)} batch(es)"
    if not last["drained"]:
        return f"stopped: batch {len(batches)} made no progress ({last['failed']} failed)"
    return f"stopped after {max_batches} batches"
