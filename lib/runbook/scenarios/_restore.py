"""What the restore drill and the incident restore (runbook scenario 5) share.

The backup's checks (one wording for both) and the comparison of the restored
tables with production, as methods of `RestoreSteps`, the base of both
scenarios; how a notebook shows a restore's progress (`progress_view`). The
restore itself, its pipeline and its progress poller, is an operation:
`runbook.ops.backups.restore`.
"""

from __future__ import annotations

import contextlib
from datetime import datetime
from typing import TYPE_CHECKING, Any

from runbook.clock import parse_time
from runbook.errors import CommandFailed, RestoreFailed
from runbook.ops.backups import (
    ProgressLines,
    ProgressView,
    human_bytes,
    ident,
    literal,
    one_row,
    table_facts,
)
from runbook.scenarios._base import Scenario, in_jupyterlab

if TYPE_CHECKING:
    import pandas as pd


def as_utc(value: Any) -> datetime:
    """A timestamp from the database (datetime or text) as an aware UTC datetime.

    >>> as_utc("2026-11-27 08:00:00+00:00").isoformat()
    '2026-11-27T08:00:00+00:00'
    """
    ts = parse_time(value)
    if ts is None:
        raise ValueError(f"not a timestamp: {value!r}")
    return ts


def pct(got: int, base: int) -> float:
    """Signed difference in percent of `base`.

    >>> round(pct(95, 100), 1), pct(0, 0)
    (-5.0, 0.0)
    """
    return 100.0 * (got - base) / base if base else (0.0 if got == 0 else 100.0)


# ---------------------------------------------------------------- progress, as a notebook shows it


class NotebookBar:
    """A restore's progress as an ipywidgets bar (tqdm.notebook), for JupyterLab.

    tqdm.notebook, not tqdm.auto: the caller already knows it runs in a
    Jupyter kernel, and tqdm.auto would quietly fall back to a text bar that
    JupyterLab shows as a frozen stderr line. If the widget cannot be made
    (ipywidgets missing), the progress is printed as log lines instead.
    """

    def __init__(self) -> None:
        self.bar: Any = None
        self.lines: ProgressLines | None = None
        self.total = 0

    def start(self, label: str, total: int) -> None:
        self.total = total
        try:
            from tqdm.notebook import tqdm as notebook_tqdm

            self.bar = notebook_tqdm(total=total or None, unit="B", unit_scale=True, desc=label)
        except ImportError:
            self.lines = ProgressLines()
            self.lines.start(label, total)

    def show(self, seconds: float, done: int) -> None:
        if self.lines is not None:
            self.lines.show(seconds, done)
            return
        # a widget that is gone (the kernel's front end closed) must not stop the restore
        with contextlib.suppress(Exception):
            self.bar.n = done
            self.bar.refresh()

    def reading_done(self, seconds: float) -> None:
        if self.lines is not None:
            self.lines.reading_done(seconds)
        elif self.total:
            self.show(seconds, self.total)

    def close(self) -> None:
        if self.bar is not None:
            with contextlib.suppress(Exception):
                self.bar.close()


def progress_view(bar: bool | None = None) -> ProgressView:
    """A widget bar in JupyterLab (or when `bar` is True), log lines elsewhere."""
    return NotebookBar() if (in_jupyterlab() if bar is None else bar) else ProgressLines()


# ---------------------------------------------------------------- the steps both share


class RestoreSteps(Scenario):
    """The checks the drill and the incident restore share, one wording for both."""

    def backup_checks(
        self,
        chosen: dict[str, Any] | None,
        *,
        min_bytes: int,
        rpo_hours: float | None = None,
    ) -> dict[str, bool]:
        """The backup's checks, one wording for the drill and the incident restore.

        Records "Backup found", "Backup fresh (RPO)" (when `rpo_hours` is given)
        and "Backup size"; never raises. Returns each check's verdict by name
        ("found", "fresh", "big"), so the incident restore can stop on them.
        """
        s = self.s
        b = s.profile.backups
        verdict = {"found": chosen is not None}
        s.check(
            "Backup found",
            expected=f"a {b.pattern} or {b.custom_pattern} in {b.dir}",
            actual=chosen["name"] if chosen else "none",
            passed=verdict["found"],
        )
        if chosen is None:
            return verdict
        if rpo_hours is not None:
            fresh = verdict["fresh"] = float(chosen["age_hours"]) <= rpo_hours
            age_from = chosen.get("age_from", "mtime")
            source = (
                f"by the date in its name; its mtime {chosen['modified']} is newer"
                if age_from == "name"
                else f"by its mtime {chosen['modified']}"
            )
            s.check(
                "Backup fresh (RPO)",
                expected=f"newest backup <= {rpo_hours:g} h old (the older of its mtime and its name's date)",
                actual=f"{chosen['age_hours']:.1f} h old ({chosen['name']}, {source})",
                passed=fresh,
                note=(
                    f"age taken from the {'name' if age_from == 'name' else 'mtime'}"
                    + (
                        ""
                        if fresh
                        else "; no backup within the RPO: the nightly dump is not running"
                    )
                ),
            )
        verdict["big"] = int(chosen["size_bytes"]) >= min_bytes
        s.check(
            "Backup size",
            expected=f">= {human_bytes(min_bytes)} ({min_bytes} bytes)",
            actual=f"{human_bytes(chosen['size_bytes'])} ({chosen['size_bytes']} bytes, {chosen['name']})",
            passed=verdict["big"],
            note="" if verdict["big"] else "a backup this small is empty or truncated",
        )
        return verdict

    def compare(
        self,
        scratch: str,
        tables: list[str],
        *,
        tolerance_pct: float,
        rpo_hours: float,
        sample: int = 1000,
    ) -> pd.DataFrame:
        """Per table: rows in the restore vs production (delta %), data age, sample checksum.

        Each comparison is a check; a table missing from the restore is a failed check.
        """
        s = self.s
        import pandas as pd

        prod = s.profile.postgres.database
        rows: list[dict[str, Any]] = []
        ages: list[float] = []
        for table in tables:
            try:
                got = table_facts(s, scratch, table, sample)
            except (RestoreFailed, CommandFailed) as exc:
                s.check(
                    f"Row count {table}",
                    expected=f"within ±{tolerance_pct:g} % of production",
                    actual=f"not in the restore: {str(exc).splitlines()[0][:200]}",
                    passed=False,
                )
                rows.append({"table": table, "restored_rows": None})
                continue
            want = table_facts(s, prod, table, sample)
            # Compare with what production held when the dump was taken (rows
            # created up to the newest restored one): production's growth since
            # the dump is the RPO check's business, and counting it here would
            # fail a complete backup on a busy day and pass one missing rows on a
            # quiet one. Production's total is shown as well.
            base = want["rows"]
            basis = "production"
            if got.get("newest") is not None and "newest" in want:
                base = int(
                    one_row(
                        s,
                        f"SELECT count(*) AS n FROM public.{ident(table)} "  # noqa: S608 - ident()
                        f"WHERE created_at <= {literal(str(got['newest']))}::timestamptz",
                        prod,
                    )["n"]
                )
                basis = "production up to the newest restored row"
            delta = pct(got["rows"], base)
            s.check(
                f"Row count {table}",
                expected=f"within ±{tolerance_pct:g} % of {basis} ({base})",
                actual=(
                    f"{got['rows']} restored ({delta:+.2f} %); production now {want['rows']} "
                    f"({pct(got['rows'], want['rows']):+.2f} %)"
                ),
                passed=abs(delta) <= tolerance_pct,
            )
            same = None
            if "sample_md5" in got and "sample_md5" in want:
                same = got["sample_md5"] == want["sample_md5"]
                s.check(
                    f"Sample checksum {table}",
                    expected=f"md5 of the first {sample} rows by id equals production's",
                    actual=f"{'equal' if same else 'different'} ({got['sample_md5']})",
                    passed=same,
                )
            if got.get("age_hours") is not None:
                ages.append(got["age_hours"])
            # per table, as numbers in record.json (history and dashboards read these)
            s.metric(f"rows_restored_{table}", got["rows"], "rows")
            s.metric(f"rows_production_at_dump_{table}", base, "rows")
            s.metric(f"rows_production_now_{table}", want["rows"], "rows")
            s.metric(f"row_delta_pct_{table}", round(delta, 2), "%", target=tolerance_pct)
            rows.append(
                {
                    "table": table,
                    "restored_rows": got["rows"],
                    "production_rows_at_dump": base,
                    "delta_rows": got["rows"] - base,
                    "delta_pct": round(delta, 2),
                    "production_rows_now": want["rows"],
                    "delta_now_pct": round(pct(got["rows"], want["rows"]), 2),
                    "newest_restored": str(got.get("newest")),
                    "data_age_hours": got.get("age_hours"),
                    "sample_checksum_equal": same,
                }
            )
        age = min(ages) if ages else None
        if age is not None:
            s.metric("data_age_hours", age, "h", target=rpo_hours)
        s.check(
            "Data age (RPO)",
            expected=f"newest restored row <= {rpo_hours:g} h old",
            actual="no created_at in the restore" if age is None else f"{age:.1f} h old",
            passed=age is not None and age <= rpo_hours,
        )
        return pd.DataFrame(rows)
