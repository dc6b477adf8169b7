"""The one postmortem drafter: a run's record in, a `docs/incidents/YYYY-MM-DD.md` draft out.

Every draft has the same skeleton, filled from the record (`record.json`, or
`Session.record()` while the run is still going):

1. the title, `# <day>: <subject> on <environment>`, and a line saying it is a
   draft and where it goes;
2. the runbook's 5-line summary (what happened, impact, detection,
   resolution, follow-up): `summary_from_record` writes it from the record and
   leaves what only a person knows as ``TODO``; a scenario that knows more
   (the branch it took, the backup it restored) passes its own lines;
3. the sections only one scenario has (the data-loss window, the logins),
   passed in as (heading, Markdown) pairs;
4. the timeline: steps, decisions and changes in time order;
5. the definition of done (every check so far);
6. links to the evidence, relative to the draft.

`runbook postmortem RUN_DIR` (runbook.evidence.postmortem) and the scenarios
that draft their own (database_down, restore_incident, security_incident) all
call `draft`.

Example::

    >>> md = draft({"scenario": "database_down", "environment": "production",
    ...             "outcome": "ok", "exit_code": 0, "started": "2026-11-27T08:00:00.000Z",
    ...             "steps": [], "checks": []}, files=["record.json"])
    >>> md.splitlines()[0]
    '# 2026-11-27: database_down on production'
    >>> [ln[:22] for ln in md.splitlines() if ln[:1].isdigit()]  # doctest: +NORMALIZE_WHITESPACE
    ['1. **What happened:** ', '2. **Impact:** TODO: w', '3. **Detection:** Run ',
     '4. **Resolution:** Fir', '5. **Follow-up:** TODO']
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from runbook.evidence.seal import MANIFEST

OUTCOME_WORDS = {
    "ok": "completed; the definition of done is met",
    "failed": "FAILED",
    "dod_not_met": "ran to the end but the definition of done is NOT met",
    "refused": "was refused by a runbook rule or a missing confirmation; nothing changed after that",
    "interrupted": "was interrupted by the operator (SIGINT/SIGTERM)",
    "timed_out": "timed out",
    "kernel_died": "stopped: the notebook's kernel died",
    "parameters": "was refused before it started (bad parameters)",
    "tripped": "was STOPPED by a tripwire: a protected object changed under a command "
    "(see the record's tripwire: what was put back and what was not)",
}

LABELS = ("What happened", "Impact", "Detection", "Resolution", "Follow-up")


@dataclass(frozen=True)
class Summary:
    """The runbook's five lines, in its order."""

    what_happened: str
    impact: str
    detection: str
    resolution: str
    follow_up: str

    def lines(self) -> list[str]:
        """`1. **What happened:** ...` to `5. **Follow-up:** ...`, one line each.

        >>> Summary("a", "b", "c", "d", "e").lines()[4]
        '5. **Follow-up:** e'
        """
        texts = (self.what_happened, self.impact, self.detection, self.resolution, self.follow_up)
        return [
            f"{n}. **{label}:** {' '.join(text.split())}"
            for n, (label, text) in enumerate(zip(LABELS, texts, strict=True), 1)
        ]


def cell(text: Any) -> str:
    """A table cell: no pipes or newlines.

    >>> cell("a|b\\nc"), cell(None)
    ('a\\\\|b c', '')
    """
    return str("" if text is None else text).replace("|", "\\|").replace("\n", " ")


def hhmmss(ts: str | None) -> str:
    """The time of day of an ISO timestamp, '?' when there is none.

    >>> hhmmss("2026-11-27T08:39:05.353Z"), hhmmss(None)
    ('08:39:05', '?')
    """
    return ts[11:19] if ts and len(ts) >= 19 else "?"


def table(columns: Sequence[str], rows: Iterable[Sequence[Any]], *, empty: str = "_none_") -> str:
    """A Markdown table (`empty` when there is no row), ending with a newline.

    >>> print(table(["a", "b"], [(1, "x|y")]), end="")
    | a | b |
    |---|---|
    | 1 | x\\|y |
    >>> table(["a"], [])
    '_none_\\n'
    """
    body = ["| " + " | ".join(cell(v) for v in row) + " |" for row in rows]
    if not body:
        return empty + "\n"
    head = ["| " + " | ".join(columns) + " |", "|" + "---|" * len(columns)]
    return "\n".join(head + body) + "\n"


def frame_table(df: Any, limit: int = 30) -> str:
    """A pandas DataFrame as a Markdown table (its first `limit` rows)."""
    if df is None or df.empty:
        return table([], [])
    df = df.head(limit)
    return table([str(c) for c in df.columns], df.itertuples(index=False))


def summary_from_record(record: Mapping[str, Any]) -> Summary:
    """What the record alone says; the human parts are TODO (a draft never claims to know
    the impact)."""
    scenario = record.get("scenario", "?")
    env = record.get("environment", "?")
    outcome = record.get("outcome") or "unknown"
    failed = [c for c in record.get("checks") or [] if c.get("status") == "failed"]
    steps = record.get("steps") or []
    first = steps[0].get("started") if steps else record.get("started")
    last = (steps[-1].get("finished") if steps else None) or record.get("finished")
    what = f"`{scenario}` on **{env}** {OUTCOME_WORDS.get(outcome, outcome)}"
    if record.get("failed_step"):
        what += f", at step “{record['failed_step']}”"
    if record.get("error"):
        what += f" ({record['error'].get('type')})"
    if record.get("dry_run"):
        what += " (dry run: nothing was changed)"
    detection = f"Run started {record.get('started')} by {record.get('operator', '?')}"
    if failed:
        detection += "; failing checks: " + ", ".join(
            f"{c.get('name')} (expected {c.get('expected')}, got {c.get('actual')})" for c in failed
        )
    resolution = f"First step {hhmmss(first)} UTC, last step {hhmmss(last)} UTC; "
    resolution += f"outcome `{outcome}` (exit {record.get('exit_code')})"
    changes = record.get("changes") or []
    if changes:
        resolution += f"; {len(changes)} change(s) made, listed in record.json"
    took = (record.get("runner") or {}).get("duration_s", record.get("duration_s"))
    return Summary(
        what_happened=f"{what}. TODO: the cause, in one sentence.",
        impact=f"TODO: who or what was affected, for how long (the run took {took} s).",
        detection=f"{detection}. TODO: which signal paged us.",
        resolution=f"{resolution}.",
        follow_up=(
            "TODO: fix the failing checks above; "
            if failed or outcome != "ok"
            else "TODO: anything to change in the runbook; "
        )
        + "owner and date.",
    )


def timeline(record: Mapping[str, Any]) -> str:
    """Steps, decisions and changes in time order, between the run's start and (when the
    record has it) its end.

    >>> print(timeline({"started": "2026-11-27T08:00:00Z", "steps": [
    ...     {"name": "1. Triage", "started": "2026-11-27T08:00:01Z", "duration_s": 2, "status": "ok"}],
    ...     "decisions": {"Branch": {"choice": "disk full", "at": "2026-11-27T08:00:03Z"}},
    ...     "changes": [{"what": "rm -f -- /b/" + "x" * 200, "at": "2026-11-27T08:00:02Z"}]}), end="")
    | time | step | duration (s) | status |
    |---|---|---|---|
    | 08:00:00 | run started |  |  |
    | 08:00:01 | 1. Triage | 2 | ok |
    | 08:00:02 | change: rm -f -- /b/xxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxx… |  | changed |
    | 08:00:03 | decision: Branch: disk full |  |  |
    """
    events: list[tuple[str, int, list[Any]]] = []
    for s in record.get("steps") or []:
        events.append(
            (s.get("started") or "", 0, [s.get("name"), s.get("duration_s"), s.get("status")])
        )
    for name, d in (record.get("decisions") or {}).items():
        events.append((d.get("at") or "", 1, [f"decision: {name}: {d.get('choice')}", "", ""]))
    for c in record.get("changes") or []:
        # a change is a whole command: its start here, all of it in record.json
        what = " ".join(str(c.get("what")).split())
        what = what if len(what) <= 120 else what[:119] + "…"
        events.append((c.get("at") or "", 2, [f"change: {what}", "", "changed"]))
    events.sort(key=lambda e: (e[0], e[1]))
    rows: list[list[Any]] = [[hhmmss(record.get("started")), "run started", "", ""]]
    rows += [[hhmmss(at), *rest] for at, _, rest in events]
    if record.get("finished"):
        rows.append(
            [
                hhmmss(record.get("finished")),
                f"run finished: {record.get('outcome')} (exit {record.get('exit_code')})",
                "",
                "",
            ]
        )
    return table(["time", "step", "duration (s)", "status"], rows)


def definition_of_done(record: Mapping[str, Any]) -> str:
    """Every check of the record; a failed one in bold."""
    checks = record.get("checks") or []
    rows = [
        [
            c.get("name"),
            c.get("expected"),
            c.get("actual"),
            f"**{cell(c.get('status'))}**" if c.get("status") == "failed" else c.get("status"),
        ]
        for c in checks
    ]
    return table(
        ["check", "expected", "actual", "status"],
        rows,
        empty="No check was recorded (the run stopped before its checks).",
    )


def links(files: Sequence[str | tuple[str, str]]) -> str:
    """`- [path](path)` per evidence file, with what it holds when given as (path, what).

    >>> print(links(["record.json", ("commands.jsonl", "every command")]), end="")
    - [record.json](record.json)
    - [commands.jsonl](commands.jsonl): every command
    """
    out = []
    for f in files:
        path, what = (f, "") if isinstance(f, str) else f
        out.append(f"- [{path}]({path})" + (f": {what}" if what else ""))
    if any((f if isinstance(f, str) else f[0]) == MANIFEST for f in files):
        out += ["", f"Check the files against `{MANIFEST}` with `runbook verify <run folder>`."]
    return "\n".join(out) + "\n" if out else "_none_\n"


def run_files(
    record: Mapping[str, Any], *extra: str | tuple[str, str]
) -> list[str | tuple[str, str]]:
    """The evidence every run folder holds, for a draft written during the run.

    >>> run_files({"scenario": "restore_incident"})[0]
    ('restore_incident.ipynb', 'the executed notebook')
    """
    return [
        (f"{record.get('scenario', '?')}.ipynb", "the executed notebook"),
        ("record.json", "steps, checks, decisions, changes"),
        ("commands.jsonl", "every command as it ran"),
        *extra,
    ]


def draft(
    record: Mapping[str, Any],
    *,
    subject: str | None = None,
    by: str = "generated by `runbook postmortem` from the run's record",
    summary: Summary | None = None,
    sections: Sequence[tuple[str, str]] = (),
    files: Sequence[str | tuple[str, str]] = (),
) -> str:
    """The Markdown draft. `subject` goes in the title (default: the scenario's name);
    `by` says who wrote the draft; `summary` replaces the record's own five lines;
    `sections` come after the summary; `files` are the evidence links, relative to
    the draft."""
    day = (record.get("started") or "????-??-??")[:10]
    env = record.get("environment", "?")
    title = f"# {day}: {subject or record.get('scenario', '?')} on {env}"
    intro = f"DRAFT {by}. Fill in the TODOs, then copy to `docs/incidents/{day}.md`."
    parts = [title, "", intro, "", *(summary or summary_from_record(record)).lines(), ""]
    for heading, body in sections:
        parts += [f"## {heading}", "", body.rstrip("\n"), ""]
    parts += [
        "## Timeline (UTC: steps, decisions and changes)",
        "",
        timeline(record).rstrip("\n"),
        "",
        "## Definition of done",
        "",
        definition_of_done(record).rstrip("\n"),
        "",
        "## Evidence",
        "",
        links(files).rstrip("\n"),
    ]
    return "\n".join(parts) + "\n"
