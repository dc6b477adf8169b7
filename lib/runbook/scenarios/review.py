"""Appendix C: the runbook review, done from the evidence the notebooks leave.

"Review every 4 weeks. If any command in this runbook failed during a real
incident, update it immediately after that incident closes." The tool knows
which notebooks ran, when and how they ended (every run leaves a
`record.json` and a `commands.jsonl` under outputs/), so it can do the review
itself. It reads those files only; it never connects to a server.

What is due:

- **stale**: a scenario whose last run is older than the 4-week cycle (or
  that never ran);
- **drill missed**: no successful `restore_drill` in the last 31 days, plus
  the profile's grace (`targets.drill_grace_days`), on a real environment
  (scenario 5: "monthly, required", on staging; a sandbox rehearsal does not
  prove the real backups restore);
- **notification failed**: a real drill since the last review whose message
  or dead-man's ping was not delivered (its `notifications.json`): nobody may
  have heard of it;
- **drill slow**: a real drill since the last review that took longer than
  the median of the successful drills before it on the same environment by
  more than `targets.drill_slow_margin_pct` (Rundeck's "average duration
  exceeded"); it needs at least three earlier drills to know what is usual;
- **runbook update**: a command that failed during a real run (environment
  not the sandbox, not a dry run) since the last review;
- **abandoned**: a real run since the last review whose process died without
  a verdict (outcome "abandoned"): what it left on the server is unknown.
  `Review.abandoned` lists every abandoned run, the sandbox's too.

Example::

    >>> import json, tempfile
    >>> from pathlib import Path
    >>> root = Path(tempfile.mkdtemp())
    >>> d = root / "staging/restore_drill/20261101T000000Z-restore_drill"
    >>> d.mkdir(parents=True)
    >>> _ = (d / "record.json").write_text(json.dumps({"scenario": "restore_drill",
    ...     "environment": "staging", "environment_kind": "staging", "dry_run": False,
    ...     "started": "2026-11-01T00:00:00.000Z", "outcome": "ok"}))
    >>> r = review(root, as_of="2026-11-27T08:00:00Z", scenarios=["restore_drill"])
    >>> r.due_count, bool(r.drill_ok)
    (0, True)
    >>> r = review(root, as_of="2026-12-15T08:00:00Z", scenarios=["restore_drill"])
    >>> sorted(r.due["kind"])
    ['drill missed', 'stale']
"""

from __future__ import annotations

import json
import re
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import TYPE_CHECKING, Any

import pandas as pd

from runbook.clock import parse_time
from runbook.core.paths import notebooks_dir
from runbook.evidence import history
from runbook.scenarios._base import Scenario

if TYPE_CHECKING:
    from matplotlib.figure import Figure

    from runbook.session import Session

CYCLE_DAYS = 28  # "every 4 weeks"
DRILL_DAYS = 31  # scenario 5: the drill is monthly
DRILL_SCENARIO = "restore_drill"
DRILL_GRACE_DAYS = 0.0
SLOW_MARGIN_PCT = 50.0
# fewer earlier successful drills than this and "usual" means nothing yet
SLOW_MIN_HISTORY = 3
REVIEW_SCENARIO = "review"
# A review that ran to its verdict (either way) closes the window for failed commands.
_REVIEW_DONE = ("ok", "dod_not_met")

RUN_COLUMNS = [
    "scenario",
    "environment",
    "kind",
    "dry_run",
    "started",
    "outcome",
    "exit_code",
    "duration_s",
    "run_dir",
]
DUE_COLUMNS = ["kind", "scenario", "environment", "when", "detail", "run_dir"]


def load_runs(root: Path | str | None = None) -> pd.DataFrame:
    """Every run record under `root` (default: the project's outputs/) as a DataFrame.

    Read by the one record reader, `runbook.evidence.history.load`: one row
    per `record.json`, `run_dir` the folder it is in (records copied from
    another machine keep working), unreadable records skipped (a half-written
    record must not stop the review). A run resumed by a later one (`runbook
    resume`) counts once: as its last resume.
    """
    df = history.load(Path(root) if root else None)
    df = df[df["scenario"].notna() & df["started"].notna() & df["resumed_by"].isna()]
    df = df.assign(
        scenario=df["scenario"].astype(str),
        environment=df["environment"].fillna("").astype(str),
        kind=df["kind"].fillna("").astype(str),
        dry_run=df["dry_run"].astype(bool),
        outcome=df["outcome"].fillna("unknown").astype(str),
    )
    return df[RUN_COLUMNS].reset_index(drop=True)


def known_scenarios(directory: Path | None = None) -> list[str]:
    """The notebooks the review expects to see run (all but the review itself)."""
    d = directory or notebooks_dir()
    return sorted(p.stem for p in d.glob("*.ipynb") if p.stem != REVIEW_SCENARIO)


def failed_commands(run_dir: Path | str) -> list[dict[str, Any]]:
    """Commands in a run's commands.jsonl that failed: an error, or an exit not accepted.

    Sessions record whether the exit code was accepted (``ok``: a probe may
    accept 1, like grep); older entries without it count any non-zero exit.

    >>> import tempfile
    >>> d = Path(tempfile.mkdtemp())
    >>> _ = (d / "commands.jsonl").write_text("\\n".join(json.dumps(e) for e in [
    ...     {"kind": "command", "command": "true", "exit_code": 0, "ok": True},
    ...     {"kind": "command", "command": "grep x f", "exit_code": 1, "ok": True},
    ...     {"kind": "command", "command": "false", "exit_code": 1, "ok": False},
    ...     {"kind": "command", "command": "ssh", "error": "connection refused"},
    ...     {"kind": "http", "status": 500}]))
    >>> [c["command"] for c in failed_commands(d)]
    ['false', 'ssh']
    """
    path = Path(run_dir) / "commands.jsonl"
    out: list[dict[str, Any]] = []
    if not path.exists():
        return out
    for line in path.read_text(encoding="utf-8", errors="replace").splitlines():
        try:
            entry = json.loads(line)
        except ValueError:
            continue
        if not isinstance(entry, dict) or entry.get("kind") != "command":
            continue
        if entry.get("error"):
            failed = True
        elif "ok" in entry:
            failed = not entry["ok"]
        else:
            failed = entry.get("exit_code") != 0
        if failed:
            out.append(entry)
    return out


@dataclass
class ReviewFindings:
    """The review's findings. `due` is empty when nothing needs doing."""

    as_of: datetime
    since: datetime | None
    runs: pd.DataFrame
    last_runs: pd.DataFrame
    failed: pd.DataFrame
    due: pd.DataFrame
    drill_ok: datetime | None
    cycle_days: int = CYCLE_DAYS
    drill_days: int = DRILL_DAYS
    scenarios: list[str] = field(default_factory=list)
    drill_grace_days: float = DRILL_GRACE_DAYS

    @property
    def due_count(self) -> int:
        return len(self.due)

    @property
    def abandoned(self) -> pd.DataFrame:
        """Every run whose process died without a verdict (all environments)."""
        return self.runs[self.runs["outcome"] == "abandoned"]

    def plot(self) -> Figure:
        """Every run on a timeline, one row per scenario, coloured by outcome."""
        import matplotlib

        matplotlib.use("Agg", force=False)
        import matplotlib.pyplot as plt
        from matplotlib.dates import date2num

        names = sorted(set(self.scenarios) | set(self.runs["scenario"]))
        fig, ax = plt.subplots(figsize=(10, 0.45 * max(len(names), 3) + 1.5))
        colours = {"ok": "tab:green", "dod_not_met": "tab:orange"}
        ypos = {n: i for i, n in enumerate(names)}
        for outcome, group in self.runs.groupby("outcome"):
            ax.scatter(
                group["started"].dt.tz_localize(None),
                [ypos[n] for n in group["scenario"]],
                c=colours.get(str(outcome), "tab:red"),
                label=str(outcome),
                s=40,
                zorder=3,
            )
        # the x axis holds dates: matplotlib's float for a date is date2num's
        naive = self.as_of.replace(tzinfo=None)
        ax.axvline(float(date2num(naive)), color="black", lw=1, label="as of")
        ax.axvline(
            float(date2num(naive - timedelta(days=self.cycle_days))),
            color="grey",
            ls="--",
            lw=1,
            label=f"{self.cycle_days}-day cycle",
        )
        if self.since is not None:
            ax.axvline(
                float(date2num(self.since.replace(tzinfo=None))),
                color="tab:blue",
                ls=":",
                lw=1,
                label="last review",
            )
        stale = set(self.due.loc[self.due["kind"] == "stale", "scenario"])
        ax.set_yticks(range(len(names)))
        ax.set_yticklabels([f"{n} (due)" if n in stale else n for n in names])
        ax.set_title(f"Runbook review as of {self.as_of:%Y-%m-%d %H:%M} UTC")
        ax.grid(axis="x", alpha=0.3)
        ax.legend(loc="upper left", fontsize="small", ncols=3)
        fig.autofmt_xdate()
        fig.tight_layout()
        return fig


def review(
    root: Path | str | None = None,
    as_of: datetime | str | None = None,
    *,
    scenarios: list[str] | None = None,
    since: datetime | str | None = None,
    cycle_days: int = CYCLE_DAYS,
    drill_days: int = DRILL_DAYS,
    drill_grace_days: float = DRILL_GRACE_DAYS,
    slow_margin_pct: float = SLOW_MARGIN_PCT,
) -> ReviewFindings:
    """Review the runs under `root` as of `as_of` (default now).

    `scenarios` is what is expected to run every cycle (default: every
    notebook but the review). `since` overrides the start of the failed-command
    window (default: the last review that reached its verdict before `as_of`).
    A drill is missed after `drill_days` plus `drill_grace_days` (the timer's
    1st of the month is 28 to 31 days apart, and a late box should not page);
    one is slow past the median of the earlier ones plus `slow_margin_pct`.
    """
    now = parse_time(as_of) if as_of is not None else datetime.now(UTC)
    if now is None:
        raise ValueError(f"as_of {as_of!r} is not an ISO date or time")
    runs = load_runs(root)
    runs = runs[runs["started"] <= pd.Timestamp(now)].reset_index(drop=True)
    expected = _names(scenarios) if scenarios is not None else known_scenarios()

    # --- the last run of every scenario, and which are stale
    due: list[dict[str, Any]] = []
    real = runs[runs["scenario"] != REVIEW_SCENARIO]
    last_rows = []
    cycle_start = pd.Timestamp(now - timedelta(days=cycle_days))
    for name in sorted(set(expected) | set(real["scenario"])):
        mine = real[real["scenario"] == name]
        if mine.empty:
            last_rows.append(
                {"scenario": name, "environment": None, "started": pd.NaT, "outcome": "never run"}
                | {"age_days": None, "run_dir": None, "due": True}
            )
            due.append(_due("stale", name, None, None, "never run", None))
            continue
        last = mine.iloc[-1]
        age = (pd.Timestamp(now) - last["started"]).total_seconds() / 86400
        stale = name in expected and last["started"] < cycle_start
        last_rows.append(
            {
                "scenario": name,
                "environment": last["environment"],
                "started": last["started"],
                "outcome": last["outcome"],
                "age_days": round(age, 1),
                "run_dir": last["run_dir"],
                "due": bool(stale),
            }
        )
        if stale:
            due.append(
                _due(
                    "stale",
                    name,
                    last["environment"],
                    last["started"],
                    f"last run {age:.0f} days ago (cycle: {cycle_days} days)",
                    last["run_dir"],
                )
            )
    last_runs = pd.DataFrame(
        last_rows,
        columns=["scenario", "environment", "started", "outcome", "age_days", "due", "run_dir"],
    )

    # --- the monthly restore drill, on a real environment, successful
    drills = runs[
        (runs["scenario"] == DRILL_SCENARIO)
        & (runs["kind"] != "sandbox")
        & ~runs["dry_run"]
        & (runs["outcome"] == "ok")
    ]
    drill_ok = drills["started"].iloc[-1].to_pydatetime() if not drills.empty else None
    grace = f" + {drill_grace_days:g} days' grace" if drill_grace_days else ""
    if drill_ok is None or drill_ok < now - timedelta(days=drill_days + drill_grace_days):
        detail = (
            f"last successful drill {(now - drill_ok).days} days ago (required: every "
            f"{drill_days} days{grace})"
            if drill_ok
            else "no successful restore drill on a real environment on record"
        )
        due.append(_due("drill missed", DRILL_SCENARIO, None, drill_ok, detail, None))

    # --- commands that failed in real runs since the last review
    window = parse_time(since) if since is not None else None
    if window is None:
        reviews = runs[(runs["scenario"] == REVIEW_SCENARIO) & runs["outcome"].isin(_REVIEW_DONE)]
        window = reviews["started"].iloc[-1].to_pydatetime() if not reviews.empty else None
    candidates = runs[(runs["kind"] != "sandbox") & ~runs["dry_run"]]
    if window is not None:
        candidates = candidates[candidates["started"] > pd.Timestamp(window)]
    failed_rows = []
    for _, run in candidates.iterrows():
        for entry in failed_commands(run["run_dir"]):
            failed_rows.append(
                {
                    "scenario": run["scenario"],
                    "environment": run["environment"],
                    "run_started": run["started"],
                    "step": entry.get("step"),
                    "command": entry.get("command"),
                    "result": entry.get("error") or entry.get("status") or entry.get("exit_code"),
                    "run_dir": run["run_dir"],
                }
            )
    failed = pd.DataFrame(
        failed_rows,
        columns=["scenario", "environment", "run_started", "step", "command", "result", "run_dir"],
    )
    for _, row in failed.iterrows():
        due.append(
            _due(
                "runbook update",
                row["scenario"],
                row["environment"],
                row["run_started"],
                f"step {row['step']!r}: `{row['command']}` failed ({row['result']})",
                row["run_dir"],
            )
        )
    # --- real drills since the last review: told nobody, or took unusually long
    real_drills = runs[
        (runs["scenario"] == DRILL_SCENARIO) & (runs["kind"] != "sandbox") & ~runs["dry_run"]
    ]
    recent = real_drills
    if window is not None:
        recent = recent[recent["started"] > pd.Timestamp(window)]
    for _, run in recent.iterrows():
        undelivered = undelivered_notifications(run["run_dir"])
        if undelivered:
            due.append(
                _due(
                    "notification failed",
                    DRILL_SCENARIO,
                    run["environment"],
                    run["started"],
                    "not delivered: " + "; ".join(undelivered) + " (nobody may have heard of it)",
                    run["run_dir"],
                )
            )
        slow = _slow_detail(real_drills, run, slow_margin_pct)
        if slow:
            due.append(
                _due(
                    "drill slow",
                    DRILL_SCENARIO,
                    run["environment"],
                    run["started"],
                    slow,
                    run["run_dir"],
                )
            )
    # --- real runs that died without a verdict since the last review
    dead = runs[(runs["outcome"] == "abandoned") & (runs["kind"] != "sandbox") & ~runs["dry_run"]]
    if window is not None:
        dead = dead[dead["started"] > pd.Timestamp(window)]
    for _, run in dead.iterrows():
        due.append(
            _due(
                "abandoned",
                run["scenario"],
                run["environment"],
                run["started"],
                "the run's process died without a verdict: check what it left on the server",
                run["run_dir"],
            )
        )
    return ReviewFindings(
        as_of=now,
        since=window,
        runs=runs,
        last_runs=last_runs,
        failed=failed,
        due=pd.DataFrame(due, columns=DUE_COLUMNS),
        drill_ok=drill_ok,
        cycle_days=cycle_days,
        drill_days=drill_days,
        scenarios=expected,
        drill_grace_days=drill_grace_days,
    )


def undelivered_notifications(run_dir: Path | str) -> list[str]:
    """What a run's notifications.json says was not delivered: its masked target and error.

    >>> import tempfile
    >>> d = Path(tempfile.mkdtemp())
    >>> _ = (d / "notifications.json").write_text(json.dumps({"sent": [
    ...     {"target": "json://h/x", "delivered": False, "errors": ["HTTP 500"]}],
    ...     "pings": [{"target": "https://hc-ping.com/5f1…", "event": "exit",
    ...     "delivered": True}]}))
    >>> undelivered_notifications(d)
    ['json://h/x (HTTP 500)']
    """
    path = Path(run_dir) / "notifications.json"
    try:
        log = json.loads(path.read_text())
    except (OSError, ValueError):
        return []
    out = []
    for item in [*(log.get("sent") or []), *(log.get("pings") or [])]:
        if isinstance(item, dict) and not item.get("delivered"):
            last = (item.get("errors") or ["?"])[-1]
            event = f" {item['event']}" if item.get("event") else ""
            out.append(f"{item.get('target', '?')}{event} ({last})")
    return out


def _slow_detail(drills: pd.DataFrame, run: pd.Series, margin_pct: float) -> str | None:
    """Why `run` is slow against the successful drills before it on its environment, or None."""
    took = run["duration_s"]
    if not isinstance(took, int | float) or pd.isna(took):
        return None
    earlier = drills[
        (drills["environment"] == run["environment"])
        & (drills["started"] < run["started"])
        & (drills["outcome"] == "ok")
    ]["duration_s"]
    earlier = pd.to_numeric(earlier, errors="coerce").dropna()
    if len(earlier) < SLOW_MIN_HISTORY:
        return None
    usual = float(earlier.median())
    limit = usual * (1 + margin_pct / 100)
    if took <= limit:
        return None
    return (
        f"took {took / 60:.1f} min, usual {usual / 60:.1f} min (median of {len(earlier)} "
        f"earlier drills); more than {margin_pct:g} % over"
    )


def _names(value: Any) -> list[str]:
    """Scenario names from a list or a string (`-p scenarios deploy,rollback` passes one).

    >>> _names("deploy, rollback"), _names('["deploy"]'), _names(["a", "b"])
    (['deploy', 'rollback'], ['deploy'], ['a', 'b'])
    """
    if isinstance(value, str):
        return [w for w in re.split(r"[\s,\[\]\"']+", value) if w]
    return [str(v) for v in value]


def _due(
    kind: str, scenario: str, env: Any, when: Any, detail: str, run_dir: Any
) -> dict[str, Any]:
    return {
        "kind": kind,
        "scenario": scenario,
        "environment": env,
        "when": when,
        "detail": detail,
        "run_dir": run_dir,
    }


# --------------------------------------------------------------------------- the scenario


class Review(Scenario):
    """Appendix C, the periodic review, one method per step. Reads local records only.

    Example (in a notebook)::

        s, review = open_scenario("review")
        review.read(); review.drills(); review.failed_commands(); review.plot(); review.verdict()
        s.done()
    """

    def __init__(
        self,
        s: Session,
        *,
        outputs_dir: str | None = None,
        as_of: str | None = None,
        scenarios: list[str] | None = None,
        since: str | None = None,
    ):
        super().__init__(s)
        self.outputs_dir = outputs_dir
        self.as_of = as_of
        self.scenarios = scenarios
        self.since = since
        self.findings: ReviewFindings | None = None

    def read(self) -> pd.DataFrame:
        """Step 1: read the run records; the last run of each scenario."""
        with self.s.step("1. Read the run records"):
            targets = self.s.profile.targets
            r = self.findings = review(
                self.outputs_dir,
                self.as_of,
                scenarios=self.scenarios,
                since=self.since,
                drill_grace_days=targets.drill_grace_days,
                slow_margin_pct=targets.drill_slow_margin_pct,
            )
        print(f"{len(r.runs)} runs on record up to {r.as_of:%Y-%m-%d %H:%M} UTC")
        return r.last_runs.drop(columns=["run_dir"])

    def drills(self) -> pd.DataFrame:
        """Step 2: the restore drills, and the last successful one on a real environment."""
        r = self._findings()
        with self.s.step("2. Restore drill"):
            drills = r.runs[r.runs["scenario"] == DRILL_SCENARIO]
        print("last successful drill on a real environment:", r.drill_ok or "none")
        return drills.drop(columns=["run_dir"])

    def failed_commands(self) -> pd.DataFrame:
        """Step 3: the commands that failed in real runs since the window's start."""
        r = self._findings()
        with self.s.step("3. Failed commands in real runs"):
            print("window starts:", r.since or "the first run on record")
        return r.failed.drop(columns=["run_dir"])

    def plot(self) -> Figure:
        """Step 4: the runs against their cycles, saved as review.png in the evidence."""
        fig = self._findings().plot()
        fig.savefig(self.s.run_dir / "review.png", dpi=100)
        return fig

    def verdict(self) -> pd.DataFrame:
        """Step 5: what is due, as checks (done() fails when something is)."""
        r = self._findings()
        with self.s.step("5. Verdict"):
            self.s.evidence.write_text("review_due.csv", r.due.to_csv(index=False))
            self.s.evidence.write_text("last_runs.csv", r.last_runs.to_csv(index=False))
            self._record_checks(r)
        return r.due

    def _findings(self) -> ReviewFindings:
        assert self.findings is not None, "run read() first"
        return self.findings

    def _record_checks(self, r: ReviewFindings) -> None:
        """One check per finding kind, so `s.done()` fails (exit 3) when something is due."""
        s = self.s
        stale = r.due[r.due["kind"] == "stale"]
        s.check(
            f"Every scenario ran within {r.cycle_days} days",
            expected="none overdue",
            actual=", ".join(stale["scenario"]) or "none overdue",
            passed=stale.empty,
            note=f"{len(r.last_runs)} scenarios reviewed",
        )
        s.check(
            f"Restore drill within {r.drill_days} days",
            expected="a successful restore_drill on a real environment",
            actual=f"last: {r.drill_ok:%Y-%m-%d %H:%M} UTC" if r.drill_ok else "none on record",
            passed=not (r.due["kind"] == "drill missed").any(),
        )
        s.check(
            "No command failed in a real incident since the last review",
            expected="0 failed commands",
            actual=f"{len(r.failed)} failed commands",
            passed=r.failed.empty,
            note=(
                f"since {r.since:%Y-%m-%d %H:%M} UTC (last review)"
                if r.since
                else "since the first run"
            )
            + ("; update the runbook for each (appendix C)" if not r.failed.empty else ""),
        )
        told = r.due[r.due["kind"] == "notification failed"]
        s.check(
            "Every real drill's notifications delivered",
            expected="0 undelivered",
            actual=f"{len(told)} drills with an undelivered notification",
            passed=told.empty,
            note="; ".join(told["detail"]) if not told.empty else "",
        )
        slow = r.due[r.due["kind"] == "drill slow"]
        s.check(
            "No real drill took much longer than usual",
            expected="within the usual time and its margin",
            actual=f"{len(slow)} slow drills",
            passed=slow.empty,
            note="; ".join(slow["detail"]) if not slow.empty else "",
        )
        dead = r.due[r.due["kind"] == "abandoned"]
        s.check(
            "No real run abandoned since the last review",
            expected="0 abandoned runs",
            actual=f"{len(dead)} abandoned runs",
            passed=dead.empty,
            note=f"{len(r.abandoned)} abandoned on record in every environment, the sandbox's too",
        )
