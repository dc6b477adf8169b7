"""Runbook scenario 5, the monthly restore drill (notebooks/restore_drill.ipynb).

The newest backup into a scratch database, validated against production,
torn down. What it shares with the incident restore is runbook.scenarios.
_restore (`RestoreSteps`); the backup operations, the restore and its
progress included, are runbook.ops.backups.

Example (in a notebook)::

    s, drill = open_scenario("restore_drill")
    drill.list()           # the newest backups: name, size, age
    drill.preflight()      # RPO and minimum size, as checks
    drill.restore()        # into the scratch database, with progress
    drill.validate()       # row counts, data age, sample checksums
    drill.teardown()       # drop the scratch database (always)
    s.done()
"""

from __future__ import annotations

import atexit
import contextlib
import fnmatch
import json
from collections.abc import Sequence
from dataclasses import asdict
from typing import TYPE_CHECKING, Any, ClassVar

from runbook.errors import HostKeyMismatch, HostKeyUnknown
from runbook.evidence.resume import refusal as resume_refusal
from runbook.evidence.story import Summary
from runbook.ops.backups import (
    PLAIN,
    SYSTEM_DBS,
    RestoreResult,
    choose,
    create_database,
    database_exists,
    drop_database,
    human_bytes,
    ident,
    list_backups,
    restore,
)
from runbook.safety.guards import forbid
from runbook.scenarios._restore import RestoreSteps, progress_view

if TYPE_CHECKING:
    import pandas as pd

    from runbook.session import Session


def scratch_problem(profile: Any, name: str) -> str | None:
    """Why `name` must not be the drill's scratch database, or None when it may be.

    >>> from runbook.core.profile import load_profile
    >>> p = load_profile("production")
    >>> scratch_problem(p, "dealix")
    'the scratch database must not be the production database (dealix)'
    >>> scratch_problem(p, "dealix_corrupt_20261127")
    'dealix_corrupt_20261127 is kept evidence or a system database, not a scratch database'
    >>> scratch_problem(p, "dealix_restore_test") is None
    True
    """
    ident(name)
    prod = profile.postgres.database
    if name == prod:
        return f"the scratch database must not be the production database ({prod})"
    if fnmatch.fnmatch(name, profile.do_not_touch.corrupt_db_pattern) or name in SYSTEM_DBS:
        return f"{name} is kept evidence or a system database, not a scratch database"
    return None


#: the decision that names the backup a drill restores (a resume restores it again)
BACKUP_DECISION = "backup restored"


class RestoreDrill(RestoreSteps):
    """The monthly drill: newest backup into a scratch database, validated, torn down.

    Every step records checks instead of raising, so the teardown cell always
    runs; an interrupt during the restore drops the scratch database before
    it propagates, and an `atexit` hook is the last resort if the kernel is
    shut down between cells.
    """

    # a resume (runbook.evidence.resume): the drill changes only its scratch database, which
    # its teardown drops, so nothing it did survives for a resume to build on: every step
    # is safe to repeat and runs again (the scratch database is replaced, restored,
    # validated and dropped). What a resume keeps is the backup: the parent's, never a
    # newer one, and refused if it is gone. No app HEAD or revision is involved.
    resume_once = ()
    resume_reruns = (
        "Preflight: backup age and size",
        "1. Create isolated DB",
        "2. Restore",
        "3. Validate row counts, 4. data age",
        "5. Teardown",
    )
    resume_postconditions: ClassVar[dict[str, str]] = {}
    resume_relies_on = ()
    resumable = True

    def __init__(
        self,
        s: Session,
        *,
        backup: str | None = None,
        rpo_hours: float | None = None,
        row_tolerance_pct: float | None = None,
        time_target_minutes: float | None = None,
        tables: list[str] | None = None,
        scratch_db: str = "dealix_restore_test",
        min_backup_bytes: int | None = None,
        jobs: int | None = None,
    ):
        t = s.profile.targets
        self.s = s
        self.backup = backup
        self.rpo_hours = float(rpo_hours if rpo_hours is not None else t.rpo_hours)
        self.tolerance = float(
            row_tolerance_pct if row_tolerance_pct is not None else t.row_tolerance_pct
        )
        self.target_min = float(
            time_target_minutes if time_target_minutes is not None else t.restore_minutes
        )
        self.tables = list(tables or s.profile.backups.tables)
        self.scratch = scratch_db
        self.min_bytes = int(
            min_backup_bytes if min_backup_bytes is not None else s.profile.backups.min_size_bytes
        )
        self.jobs = jobs
        self.frame: pd.DataFrame | None = None
        self.chosen: dict[str, Any] | None = None
        self.ready = False
        self.result: RestoreResult | None = None
        self.comparison: pd.DataFrame | None = None
        self.created = False
        self.torn_down = False
        self._guard_scratch()
        atexit.register(self._last_resort)

    def _guard_scratch(self) -> None:
        """Record whether the scratch database is distinct from production (and the kept and
        system databases), then refuse it when it is not."""
        s, name = self.s, self.scratch
        problem = scratch_problem(s.profile, name)
        prod = s.profile.postgres.database
        s.check(
            "Scratch database is not production",
            expected=f"!= {prod}, not {s.profile.do_not_touch.corrupt_db_pattern}, not a system DB",
            actual=name if problem is None else f"{name}: {problem}",
            passed=problem is None,
        )
        if problem is not None:
            raise forbid("no-restore-into-production-db", f"restore drill into {name}", problem)

    def list(self) -> pd.DataFrame:
        """The newest backups (name, format, size, modified, age)."""
        self.frame = list_backups(self.s)
        return self.frame

    def preflight(self) -> Summary:
        """Choose the backup, check RPO and size (failed checks, not errors), take the lock."""
        if self.frame is None:
            self.list()
        assert self.frame is not None
        self.chosen = choose(self.frame, self._parent_backup() or self.backup)
        if self.chosen is not None:
            # a resume restores this one again (`_parent_backup`)
            self.s.decide(
                BACKUP_DECISION, str(self.chosen["path"]), "the backup this drill restores"
            )
        with self.s.step("Preflight: backup age and size"):
            verdict = self.backup_checks(
                self.chosen, rpo_hours=self.rpo_hours, min_bytes=self.min_bytes
            )
            self.ready = all(verdict.values()) and len(verdict) == 3
        if self.ready:
            # the drill changes the server (a scratch database): armor first
            self.armor_preflight()
        name = (self.chosen or {}).get("name")
        if not self.ready:
            return Summary(
                "preflight failed: the backup is NOT restored (see the failed checks)",
                ready=False,
                backup=name,
            )
        return Summary(
            f"preflight: {name} is fresh and large enough; the server's armor holds",
            ready=True,
            backup=name,
        )

    def _parent_backup(self) -> str | None:
        """In a resume: the backup the parent restored (refused when it is gone)."""
        plan = self.s.resume
        if plan is None:
            return None
        path = ((plan.record.get("decisions") or {}).get(BACKUP_DECISION) or {}).get("choice")
        if not path:
            raise resume_refusal(
                f"run {plan.parent_id}'s record does not say which backup it restored",
                "start a new drill",
            )
        assert self.frame is not None
        if path not in set(self.frame["path"]):
            raise resume_refusal(
                f"the backup run {plan.parent_id} restored, {path}, is no longer on the server",
                "start a new drill (`runbook run restore_drill`): it picks the newest backup",
            )
        return str(path)

    def change_summary(self) -> Sequence[str]:
        """What the drill will change, for the confirmation question (after `preflight`)."""
        name = (self.chosen or {}).get("name") or "the newest backup"
        return [
            f"create the scratch database {self.scratch} and restore {name} into it",
            f"drop {self.scratch} at the end (the production database is never touched)",
        ]

    def restore(self) -> RestoreResult | None:
        """Create the scratch database and restore into it."""
        if not self.ready or self.chosen is None:
            print("skipped: the preflight did not pass")
            return None
        s = self.s
        s.acquire_lock()
        try:
            with s.attempt("Restore completed", expected="exit 0, the whole dump read") as a:
                with s.step("1. Create isolated DB"):
                    if database_exists(s, self.scratch):
                        # left by an earlier drill that died: it is ours to replace
                        print(f"{self.scratch} exists from an earlier run: dropping it first")
                        drop_database(s, self.scratch)
                    create_database(s, self.scratch)
                    self.created = True
                with s.step("2. Restore"):
                    # let a slow restore finish (it fails "Restore time", with its real
                    # duration) instead of dying at the profile's command timeout
                    self.result = restore(
                        s,
                        self.chosen,
                        self.scratch,
                        on_progress=progress_view(),
                        jobs=self.jobs,
                        timeout=max(3600.0, 4 * self.target_min * 60),
                    )
        except BaseException as exc:
            # refused, interrupted, or a bug (attempt lets these through): the scratch
            # database goes now, since the runner runs no more cells after a signal. After
            # a host-key refusal nothing goes out, so there is nothing to tear down with.
            if not isinstance(exc, (HostKeyMismatch, HostKeyUnknown)):
                with contextlib.suppress(BaseException):
                    self.teardown()
            raise
        if a.failed or self.result is None:
            return None
        r = self.result
        s.judge(
            "Restore completed",
            expected="exit 0, the whole dump read",
            result=r,
            actual=lambda r: "ok" if r.ok else f"exit {r.exit_code}: {r.error.splitlines()[0]}",
            note=r.error[-500:] if r.ran and not r.ok else "",
        )
        if not r.ran:
            s.judge("Restore time", expected=f"<= {self.target_min:g} min", result=r)
            return r
        target_s = self.target_min * 60
        advice = ""
        if r.format == PLAIN and r.duration_s > 0.5 * target_s:
            advice = (
                "the restore takes over half its time target: switch the nightly dump to "
                "custom format (pg_dump -Fc) and restore it with pg_restore -j <cores>"
            )
            print("RECOMMENDATION:", advice)
        # the record's numbers (record.json "metrics"), not only the checks' text
        s.metric("restore_bytes", r.bytes_total, "B")
        if r.ok:
            s.metric("restore_minutes", r.duration_s / 60, "min", target=self.target_min)
            if r.rate_mb_s is not None:
                s.metric("restore_rate_mb_s", r.rate_mb_s, "MB/s")
        s.judge(
            "Restore time",
            expected=f"<= {self.target_min:g} min",
            result=r,
            actual=(
                f"{r.duration_s:.1f} s for {human_bytes(r.bytes_total)} "
                f"({r.rate_mb_s or 0:.1f} MB/s, {r.format}, jobs {r.jobs})"
            ),
            # a failed restore has no meaningful time: "not available", not a second failure
            passed=(r.duration_s <= target_s) if r.ok else None,
            note=advice,
        )
        return r

    def validate(self) -> pd.DataFrame | None:
        """Row counts vs production, max(created_at) vs RPO, sample checksums."""
        if self.result is None or not self.result.ok:
            print("skipped: nothing restored to validate")
            return None
        with self.s.attempt(
            "Validation", expected="row counts, data age and checksums measured"
        ) as a:
            with self.s.step("3. Validate row counts, 4. data age"):
                self.comparison = self.compare(
                    self.scratch,
                    self.tables,
                    tolerance_pct=self.tolerance,
                    rpo_hours=self.rpo_hours,
                )
        if a.failed:
            return None
        return self.comparison

    def teardown(self) -> Summary:
        """Drop the scratch database (always; the verdict comes after, in done())."""
        if self.torn_down:
            return Summary(f"teardown: {self.scratch} already dropped", dropped=True)
        s = self.s
        if s.dry_run:
            self.torn_down = True
            return Summary(f"dry run: {self.scratch} was never created", dropped=True)
        expected = f"scratch database {self.scratch} dropped"
        with s.attempt("Teardown", expected=expected) as a:
            with s.step("5. Teardown"):
                if self.created or database_exists(s, self.scratch):
                    drop_database(s, self.scratch)
                gone = not database_exists(s, self.scratch)
            s.check(
                "Teardown",
                expected=expected,
                actual="dropped" if gone else "still exists",
                passed=gone,
            )
        if a.failed:
            return Summary(f"teardown FAILED: {self.scratch} may still exist", dropped=False)
        self.torn_down = gone
        return Summary(
            f"teardown: {self.scratch} dropped"
            if gone
            else f"teardown: {self.scratch} STILL EXISTS",
            dropped=gone,
        )

    def _last_resort(self) -> None:
        if self.created and not self.torn_down:
            with contextlib.suppress(BaseException):
                self.teardown()

    def summary(self) -> Summary:
        """The drill's numbers (a dict), also written to `restore_drill.json` in the evidence;
        a notebook shows them as one line."""
        data: dict[str, Any] = {
            "backup": self.chosen,
            "scratch_db": self.scratch,
            "rpo_hours": self.rpo_hours,
            "row_tolerance_pct": self.tolerance,
            "time_target_minutes": self.target_min,
            "restore": asdict(self.result) if self.result else None,
            "tables": (
                self.comparison.to_dict(orient="records") if self.comparison is not None else []
            ),
            "checks": {c.name: c.status for c in self.s.checks},
            "torn_down": self.torn_down,
        }
        self.s.evidence.write_text(
            "restore_drill.json", json.dumps(data, indent=2, default=str) + "\n"
        )
        failed = [name for name, status in data["checks"].items() if status == "failed"]
        took = f"in {self.result.duration_s:.1f} s" if self.result else "not restored"
        line = (
            f"drill numbers: {(self.chosen or {}).get('name', 'no backup')} {took} "
            f"(target {self.target_min:g} min), {len(data['tables'])} tables compared, "
            f"{len(failed)} failed check(s); in restore_drill.json"
        )
        return Summary(line, **data)
