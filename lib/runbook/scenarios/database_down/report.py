"""Scenario 3's verdicts and postmortem lines, from what the run did (pure).

`after_restart` says what a restart came to and the branch it leaves;
`postmortem_summary` writes the runbook's 5 lines from `postmortem_facts`;
`action_summary` says each change in a short phrase; `stopped_because` says
why a DLQ drain stopped.
"""

from __future__ import annotations

import re
from datetime import datetime
from pathlib import PurePosixPath
from typing import TYPE_CHECKING, Any

from runbook.evidence.postmortem import Summary
from runbook.scenarios.database_down.signals import CORRUPT, SERVICE_FAILED, WONT_START, Branch

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


def after_restart(res: dict[str, Any], wait_seconds: float) -> tuple[str, Branch]:
    """The SELECT 1 check's actual after the restart, and the branch it leaves.

    When the restart does not bring Postgres back (the start fails, SELECT 1
    never answers), the branch becomes "database corrupt or will not start",
    with the log's last words: the run hands over to scenario 5.

    >>> after_restart({"dry_run": False, "select1": True}, 60)[0]
    '1'
    >>> actual, b = after_restart({"dry_run": False, "select1": False, "restart_ok": False,
    ...                            "restart_exit": 1, "restart_output": "", "log_after": "FATAL"}, 60)
    >>> actual, b.name, b.reason
    ('no answer: the restart failed (exit 1)', 'database corrupt or will not start', 'Postgres will not start: the restart failed; its log ends: FATAL')
    """
    restarted = Branch(SERVICE_FAILED, "restarted")
    if res["dry_run"]:
        return "", restarted  # judge() says "not run (dry run)": nothing was restarted
    if res["select1"]:
        return "1", restarted
    if not res["restart_ok"]:
        actual = f"no answer: the restart failed (exit {res['restart_exit']})"
        out = res["restart_output"]
        how = "the restart failed" + (f" ({out})" if out else "")
    elif res.get("gave_up"):
        actual = f"no answer: {res['service_after']}"
        how = f"the restart exited 0 but {res.get('service_after') or ''}"
    else:
        actual = f"no answer within {wait_seconds:.0f} s"
        how = f"it was restarted but does not answer SELECT 1 within {wait_seconds:.0f} s"
    log = res.get("log_after") or "(empty)"
    return actual, Branch(CORRUPT, f"{WONT_START}: {how}; its log ends: {log}")


def postmortem_facts(
    *,
    branch: Branch,
    changes: list[str],
    would_change: list[str],
    drained: dict[str, Any] | None,
    handoff: str,
) -> tuple[list[str], str]:
    """The postmortem's actions (one phrase per change) and its line on the replayed data.

    `drained` is what the drain step left (None: nothing replayed, the
    database is not restored yet); `handoff` the command that hands over to
    scenario 5, named when the branch is "corrupt".

    >>> postmortem_facts(branch=Branch("service failed", ""), changes=["supervisorctl restart pg"],
    ...                  would_change=[], drained=None, handoff="")
    (['restart pg'], 'webhooks and queued LLM work: not replayed (database not restored yet)')
    """
    actions = [action_summary(w) for w in changes] or [
        f"would run: {action_summary(w)}" for w in would_change
    ]
    if branch.name == CORRUPT:
        actions.append(f"handed over to scenario 5: {handoff}")
    if drained is None:
        return actions, "webhooks and queued LLM work: not replayed (database not restored yet)"
    depths = ", ".join(f"{q} {d['before']} → {d['after']}" for q, d in drained["queues"].items())
    return actions, (
        f"DLQ depth before → after the drain: {depths} "
        "(work received during the outage was queued, then replayed)"
    )
