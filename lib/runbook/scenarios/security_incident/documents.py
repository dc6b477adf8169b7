"""Scenario 6's documents as text: the incident document, the advisory draft, the notification.

Pure: each takes what the run found and did (runbook.scenarios.security_incident.
findings) and the run's facts (`RunFacts`), and returns text. The steps write
the text into the evidence folder and record the checks; nothing here is sent.

Example::

    >>> from datetime import UTC, datetime
    >>> parts = notification_parts("To: Sami\\nWhen: now\\nWhat: x\\nsha256 `ab12`", to="Sami",
    ...                            doc_sha="ab12", tarball_sha=None)
    >>> [k for k, ok in parts.items() if not ok]
    []
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path
from typing import Any

from runbook.evidence import postmortem
from runbook.ops.firewall import NOT_AVAILABLE
from runbook.scenarios.security_incident.findings import Findings, Lockdown, Preserved, Rotation

# Scenario 6 step 5 "Notify Sami": the runbook's owner (section 0 / the document's header).
NOTIFY_WHO = "Sami Assiri (runbook owner)"
NOTIFY_FILE = "notify-sami.md"
ADVISORY_FILE = "security-advisory-draft.md"
# the checks the notification lists under "Done so far"
DONE_PREFIXES = (
    "Secrets rotated",
    "Old admin key",
    "New admin key",
    "SSH ",
    "Firewall locked",
    "Attacker addresses banned",
)


@dataclass
class Notification:
    """The message to the runbook's owner: drafted into the evidence, sent by a person."""

    path: Path
    text: str
    sha256: str
    sent: bool = False


@dataclass(frozen=True)
class RunFacts:
    """What the documents say about the run itself, read from the session when drafting."""

    env: str
    host: str
    repo: str
    api_url: str
    started: datetime
    now: datetime
    elapsed_min: float
    run_dir: Path

    @property
    def day(self) -> str:
        return self.started.strftime("%Y-%m-%d")


def incident_document(
    record: Mapping[str, Any],
    run: RunFacts,
    rotation: Rotation | None,
    lockdown: Lockdown | None,
    findings: Findings,
    preserved: Preserved | None,
) -> str:
    """The incident document (`incident-<day>.md`): summary, tables, follow-up, files."""
    attackers = ", ".join(findings.attackers) or "none identified"
    proved = rotation is not None and rotation.proved
    per_key = ", ".join(f"{k} {v}" for k, v in (rotation.keys if rotation else {}).items())
    summary = postmortem.Summary(
        what_happened=f"Suspected breach on `{run.host}`; attacker addresses: "
        f"{attackers}. TODO: how the key leaked.",
        impact=f"admin API calls granted to unknown addresses: {len(findings.granted)} (below). "
        "TODO: whether user data (leads) was read, established from the access log.",
        detection=postmortem.summary_from_record(record).detection,
        resolution="Secrets rotated: "
        + ("yes, proved (new key accepted, old refused)" if proved else "NOT proved")
        + f"; per key: {per_key or '-'}. SSH locked to: "
        f"{lockdown.target if lockdown else '-'} "
        f"({'firewall applied' if lockdown and lockdown.available else NOT_AVAILABLE}). "
        f"Evidence: `{preserved.remote if preserved else '-'}` sha256 "
        f"`{preserved.sha256 if preserved else '-'}`.",
        follow_up="the list under Follow-up below; owner and date for each. Postmortem: how "
        "the key leaked, why it was not noticed sooner, what changes.",
    )
    follow_up = "\n".join(
        [
            f"- Notify {NOTIFY_WHO}: the message is drafted in `{NOTIFY_FILE}` beside this "
            "file; send it.",
            "- Rotate the provider keys (Anthropic, OpenAI, Google) in their consoles: the "
            "script cannot.",
            "- Revert the temporary SSH lockdown once the incident is closed (rules saved in "
            f"`{lockdown.saved if lockdown and lockdown.saved else '-'}`).",
            "- File the GitHub security advisory if user data was touched (draft beside this "
            "file).",
        ]
    )
    tarball = (
        [(f"evidence/{preserved.local.name}", f"the log tarball, sha256 {preserved.sha256}")]
        if preserved and preserved.local
        else []
    )
    return postmortem.draft(
        record,
        subject="security incident",
        by=f"written by the security_incident notebook at {run.now:%Y-%m-%d %H:%M} UTC, "
        f"{run.elapsed_min:.1f} min after the run started (evidence folder: `{run.run_dir}`); "
        "commit it through a PR (never on the server)",
        summary=summary,
        sections=[
            ("Logins (auth log)", postmortem.frame_table(findings.summary)),
            ("Banned by fail2ban", postmortem.frame_table(findings.banned)),
            ("Unexpected admin API calls", postmortem.frame_table(findings.admin_calls)),
            ("Follow-up", follow_up),
        ],
        files=postmortem.run_files(
            record,
            (NOTIFY_FILE, "the notification to send"),
            (ADVISORY_FILE, "the GitHub security advisory draft"),
            *tarball,
        ),
    )


def advisory_draft(run: RunFacts, findings: Findings) -> str:
    """The GitHub security advisory draft (text only: never filed from here)."""
    granted = len(findings.granted)
    attackers = ", ".join(findings.attackers) or "none identified"
    return f"""# GitHub security advisory (DRAFT, text only: not filed)

Repository: {run.repo}
Title: Dealix admin API key exposure ({run.day})
Severity: {"High" if granted else "Moderate"} (to be assessed)
Affected: Dealix API deployment {run.api_url}

## Summary

An administrative API key of the Dealix API was {"used" if granted else "probed"} from
addresses outside the operators' ({attackers}). The key and the webhook secret
were rotated on {run.day}; the old key is refused by the API.

## Impact

Admin endpoints reachable with the key: DLQ statistics and drains, pending
approvals, Sentry/PostHog probes. Whether user data (leads) was read must be
established from the access log before filing: calls granted to unknown
addresses: {granted}.

## Patches / workarounds

No code change is needed for the rotation itself. Operators must use the new
key from the server's `.env`; integrations holding the old webhook secret must be
updated.

## Timeline

Detected and contained on {run.day}; see the incident document.
"""


def notification(
    run: RunFacts,
    statuses: Mapping[str, str],
    doc_name: str,
    doc_sha: str | None,
    preserved: Preserved | None,
    findings: Findings | None,
    *,
    to: str = NOTIFY_WHO,
) -> str:
    """The message to the runbook's owner: who, what, when and the evidence hashes.

    `statuses` maps each check's name to its status, in the order recorded.
    """
    attackers = ", ".join(findings.attackers) if findings and findings.attackers else "none found"
    tar = (
        f"`{preserved.remote}` sha256 `{preserved.sha256}` ({preserved.size} bytes)"
        if preserved and preserved.sha256
        else "not preserved (dry run or failed: see the record)"
    )
    lines = [
        f"To: {to}",
        f"Subject: [SECURITY] Dealix incident {run.started:%Y-%m-%d} on {run.env}: contained, "
        "evidence preserved",
        "",
        f"When: response started {run.started:%Y-%m-%d %H:%M} UTC; this message drafted "
        f"{run.now:%Y-%m-%d %H:%M} UTC ({run.elapsed_min:.1f} min in).",
        f"What: suspected breach on {run.host}. Attacker addresses: {attackers}.",
        "Done so far:",
        *(
            f"- {name}: {status}"
            for name, status in statuses.items()
            if name.startswith(DONE_PREFIXES)
        ),
        "Evidence:",
        f"- log tarball on the server: {tar}",
        f"- incident document: `{doc_name}` sha256 `{doc_sha}`",
        f"- run folder: `{run.run_dir}` (record.json, commands.jsonl)",
        "Next: rotate the provider keys in their consoles; decide on the GitHub security "
        "advisory (draft in the run folder) if user data was touched.",
        "",
    ]
    return "\n".join(lines)


def notification_parts(
    written: str, *, to: str, doc_sha: str | None, tarball_sha: str | None
) -> dict[str, bool]:
    """Each part the notification must hold, and whether the written text holds it."""
    parts = {
        "who": f"To: {to}" in written,
        "when": "When: " in written,
        "what": "What: " in written,
        "evidence hash": bool(doc_sha and doc_sha in written),
    }
    if tarball_sha:
        parts["tarball hash"] = tarball_sha in written
    return parts
