"""`runbook history`: every record under outputs/ as a pandas DataFrame, and a plot.

Reads `record.json` only (never the notebooks), so a thousand runs load in
well under a second. The one record reader: the review (runbook.scenarios.
review) reads the runs through `load` too. Drill numbers come from the record's ``metrics`` (what
`session.metric(...)` stores) or, failing that, from checks named like
"Restore duration", "Data age" or "Time to rollback" whose ``actual`` holds a
number and a unit ("7.2 min", "3 h", "95 s").

Example::

    >>> parse_quantity("7.5 min", "min")
    7.5
    >>> parse_quantity("90 s", "min")
    1.5
    >>> parse_quantity("26h", "h")
    26.0
    >>> parse_quantity("n/a", "min") is None
    True
"""

from __future__ import annotations

import json
import os
import re
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from runbook.core.paths import outputs_dir

# (column, unit, target column, default target, metric names, check-name pattern)
DRILL_SERIES = (
    (
        "restore_min",
        "min",
        "restore_target_min",
        15.0,
        ("restore_minutes", "restore_duration", "restore_duration_min"),
        (re.compile(r"restore (duration|time)|time to restore", re.I),),
    ),
    (
        "data_age_h",
        "h",
        "rpo_h",
        24.0,
        ("data_age_hours", "data_age", "data_age_h", "backup_age_hours"),
        # in order: the restored data's age first, the backup file's age only if none
        (re.compile(r"data age", re.I), re.compile(r"backup age|rpo", re.I)),
    ),
    (
        "rollback_min",
        "min",
        "rollback_target_min",
        5.0,
        ("rollback_minutes", "time_to_rollback", "rollback_duration_min"),
        (re.compile(r"time to roll ?back|roll ?back (duration|time)", re.I),),
    ),
)
COLUMNS = [
    "started",
    "scenario",
    "environment",
    # the profile's kind (sandbox, staging, production): a sandbox-isolated run is a sandbox's
    "kind",
    "outcome",
    "exit_code",
    "duration_s",
    "failed_step",
    "checks_passed",
    "checks_failed",
    "dry_run",
    "operator",
    "restore_min",
    "restore_target_min",
    "data_age_h",
    "rpo_h",
    "rollback_min",
    "rollback_target_min",
    # the chain of a resumed run (runbook resume): run ids; `resumed_by` is derived
    # from the children, the parent's sealed folder is never written to
    "resumed_from",
    "resumed_by",
    "run_dir",
]
_SECONDS = {"s": 1, "min": 60, "h": 3600}
_UNITS = {
    **dict.fromkeys(("s", "sec", "secs", "second", "seconds"), "s"),
    **dict.fromkeys(("m", "min", "mins", "minute", "minutes"), "min"),
    **dict.fromkeys(("h", "hr", "hrs", "hour", "hours"), "h"),
}
_NUMBER = re.compile(r"(-?\d+(?:\.\d+)?)\s*([a-zA-Z]*)")


def parse_quantity(text: Any, unit: str) -> float | None:
    """The first number in `text`, converted to `unit` ("s", "min" or "h")."""
    if isinstance(text, (int, float)) and not isinstance(text, bool):
        return float(text)
    m = _NUMBER.search(str(text))
    if not m:
        return None
    value = float(m.group(1))
    given = _UNITS.get(m.group(2).lower())
    if given is None:
        # a bare number is taken to be in the unit asked for
        return value
    return value * _SECONDS[given] / _SECONDS[unit]


def record_files(root: Path) -> list[Path]:
    """`<root>/<env>/<scenario>/<run>/record.json`, found with scandir (no recursion cost)."""
    found = []
    for level in _dirs(root):
        for scenario in _dirs(level):
            for run in _dirs(scenario):
                path = os.path.join(run, "record.json")
                if os.path.exists(path):
                    found.append(Path(path))
    return found


def _dirs(path: Path | str) -> list[str]:
    try:
        return [e.path for e in os.scandir(path) if e.is_dir()]
    except OSError:
        return []


def row(record: dict[str, Any], run_dir: str) -> dict[str, Any]:
    """One DataFrame row from one record."""
    checks = record.get("checks") or []
    out: dict[str, Any] = {
        "started": record.get("started"),
        "scenario": record.get("scenario"),
        "environment": record.get("environment"),
        "kind": record.get("environment_kind") or record.get("environment"),
        "outcome": record.get("outcome"),
        "exit_code": record.get("exit_code"),
        "duration_s": (record.get("runner") or {}).get("duration_s", record.get("duration_s")),
        "failed_step": record.get("failed_step"),
        "checks_passed": sum(1 for c in checks if c.get("status") == "passed"),
        "checks_failed": sum(1 for c in checks if c.get("status") == "failed"),
        "dry_run": bool(record.get("dry_run") or (record.get("parameters") or {}).get("dry_run")),
        "operator": record.get("operator"),
        "resumed_from": (record.get("resume") or {}).get("from"),
        "run_dir": run_dir,
    }
    metrics = record.get("metrics") or {}
    for column, unit, target_col, default, names, patterns in DRILL_SERIES:
        value, target = None, None
        for name in names:
            if name in metrics and metrics[name].get("value") is not None:
                m = metrics[name]
                value = parse_quantity(f"{m['value']} {m.get('unit') or unit}", unit)
                target = m.get("target")
                break
        for pattern in patterns:
            if value is not None:
                break
            for c in checks:
                if pattern.search(str(c.get("name", ""))):
                    value = parse_quantity(c.get("actual"), unit)
                    target = parse_quantity(c.get("expected"), unit)
                    if value is not None:
                        break
        out[column] = value
        out[target_col] = float(target) if target is not None else (default if value else None)
    return out


def load(
    root: Path | None = None,
    *,
    scenario: str | None = None,
    env: str | None = None,
    since: str | None = None,
):  # -> pandas.DataFrame
    """Every record under `root` (default outputs/), newest last, filtered."""
    import pandas as pd

    root = Path(root) if root else outputs_dir()
    rows = []
    for path in record_files(root):
        try:
            record = json.loads(path.read_bytes())
        except (OSError, ValueError):
            continue
        if not isinstance(record, dict):
            # a half-written or foreign record must not stop `runbook history` or the review
            continue
        if scenario and record.get("scenario") != scenario:
            continue
        if env and record.get("environment") != env:
            continue
        rows.append(row(record, str(path.parent)))
    link_resumes(rows)
    df = pd.DataFrame(rows, columns=COLUMNS)
    df["started"] = pd.to_datetime(df["started"], utc=True, errors="coerce", format="ISO8601")
    if since:
        cutoff = pd.Timestamp(since)
        cutoff = cutoff.tz_localize(UTC) if cutoff.tzinfo is None else cutoff
        df = df[df["started"] >= cutoff]
    return df.sort_values("started", kind="stable").reset_index(drop=True)


def link_resumes(rows: list[dict[str, Any]]) -> None:
    """Set each row's `resumed_by` from the rows that name it in `resumed_from` (run ids).

    The newest such run wins; a refused resume did not resume anything (the
    parent stays open for another).

    >>> rows = [{"run_dir": "o/a/1-x", "resumed_from": None},
    ...         {"run_dir": "o/a/2-x", "resumed_from": "1-x", "outcome": "refused", "started": "2"},
    ...         {"run_dir": "o/a/3-x", "resumed_from": "1-x", "outcome": "ok", "started": "3"}]
    >>> link_resumes(rows); [r["resumed_by"] for r in rows]
    ['3-x', None, None]
    """
    children: dict[str, str] = {}
    ordered = sorted(rows, key=lambda r: str(r.get("started") or ""))
    for r in ordered:
        if r.get("resumed_from") and r.get("outcome") != "refused":
            children[str(r["resumed_from"])] = os.path.basename(str(r["run_dir"]))
    for r in rows:
        r["resumed_by"] = children.get(os.path.basename(str(r["run_dir"])))


def render(df, fmt: str = "table") -> str:
    """The DataFrame as a table (the useful columns), CSV or JSON lines."""
    if fmt == "csv":
        return df.to_csv(index=False)
    if fmt == "json":
        return df.to_json(orient="records", date_format="iso", lines=True)
    if df.empty:
        return "no runs"
    shown = df.drop(columns=["run_dir", "operator", "dry_run", "kind"])
    shown = shown.dropna(axis=1, how="all")
    numbers = shown.select_dtypes("number").columns
    shown[numbers] = shown[numbers].round(3)
    return shown.to_string(index=False, na_rep="") + "\n\n" + outcome_counts(df)


def outcome_counts(df) -> str:
    """One line: how many runs ended how; abandoned runs (died without a verdict) named.

    >>> import pandas as pd
    >>> outcome_counts(pd.DataFrame({"outcome": ["ok", "abandoned", "ok", "running"]}))
    '4 runs: ok 2, abandoned 1, running 1 (1 abandoned: its process died without a verdict)'
    """
    # a run resumed by a later one counts once, with the outcome of the last in its chain
    import pandas as pd

    resumed = df["resumed_by"].notna() if "resumed_by" in df else pd.Series(False, index=df.index)
    counts = df[~resumed]["outcome"].fillna("unknown").value_counts()
    parts = ", ".join(f"{name} {n}" for name, n in counts.items())
    line = f"{int((~resumed).sum())} runs: {parts}"
    if resumed.any():
        line += f" ({int(resumed.sum())} more resumed, counted with their resume)"
    abandoned = int(counts.get("abandoned", 0))
    if abandoned:
        line += f" ({abandoned} abandoned: its process died without a verdict)"
    return line


def plot(df, path: Path) -> Path:
    """Drills against their targets, saved as a PNG at `path` (see `figure`)."""
    import matplotlib.pyplot as plt

    fig = figure(df)
    path = Path(path)
    fig.savefig(path, dpi=100)
    plt.close(fig)
    return path


def figure(df):  # -> matplotlib.figure.Figure
    """Three panels: restore time vs 15 min, data age vs RPO, rollback vs 5 min.

    Each run that recorded the number is a point, green within its target and
    red over it; the target (the newest run's, else the runbook's) is a dashed
    line.
    """
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    panels = [
        ("restore_min", "restore_target_min", "Restore duration (min)", 15.0),
        ("data_age_h", "rpo_h", "Data age at restore (h) vs RPO", 24.0),
        ("rollback_min", "rollback_target_min", "Time to rollback (min)", 5.0),
    ]
    fig, axes = plt.subplots(len(panels), 1, figsize=(9, 9), sharex=False)
    for ax, (col, target_col, title, default) in zip(axes, panels, strict=True):
        data = df[df[col].notna()] if col in df else df.iloc[0:0]
        ax.set_title(title)
        if data.empty:
            ax.text(0.5, 0.5, "no runs recorded this number", ha="center", transform=ax.transAxes)
            ax.set_yticks([])
            continue
        target = (
            float(data[target_col].dropna().iloc[-1]) if data[target_col].notna().any() else default
        )
        over = data[col] > target
        ax.scatter(
            data.loc[~over, "started"], data.loc[~over, col], color="#1a7f37", label="within target"
        )
        ax.scatter(
            data.loc[over, "started"], data.loc[over, col], color="#cf222e", label="over target"
        )
        ax.plot(data["started"], data[col], color="#8c959f", linewidth=0.8, zorder=0)
        ax.axhline(target, color="#cf222e", linestyle="--", label=f"target {target:g}")
        ax.legend(loc="upper left", fontsize="small")
        ax.tick_params(axis="x", labelrotation=20)
    fig.suptitle(
        f"Drills and rollbacks, {len(df)} runs (generated {datetime.now(UTC):%Y-%m-%d %H:%M} UTC)"
    )
    fig.tight_layout()
    return fig
