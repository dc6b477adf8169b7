"""Runbook scenario 5, the incident restore (notebooks/restore_incident.ipynb).

Replace production's database with a backup, keeping the old one renamed as
evidence (`dealix_corrupt_<date>`), with a swap back. The session's
procedure `restore_incident` lifts the rule that protects the production
database, for this scenario only.

Example (in a notebook)::

    s, incident = open_scenario("restore_incident")   # -p reason "..." -p confirm production
    incident.preflight(); incident.snapshot(); incident.stop_api(); incident.restore()
    incident.validate(); incident.swap(); incident.start_api(); incident.loss_window()
    incident.postmortem()
    s.done()
"""

from __future__ import annotations

import json
import shlex
import time
from dataclasses import asdict
from datetime import UTC, datetime
from typing import TYPE_CHECKING, Any, ClassVar

from runbook.errors import (
    CommandFailed,
    ParameterError,
    RestoreFailed,
)
from runbook.evidence import postmortem
from runbook.evidence.resume import refusal as resume_refusal
from runbook.evidence.story import Summary
from runbook.ops.backups import (
    PLAIN,
    RestoreResult,
    admin_sql,
    choose,
    corrupt_name,
    create_database,
    database_exists,
    databases,
    drop_database,
    ident,
    list_backups,
    literal,
    one_row,
    restore,
    table_facts,
)
from runbook.scenarios._restore import RestoreSteps, as_utc, pct, progress_view

if TYPE_CHECKING:
    import pandas as pd

    from runbook.session import Session


def swap_back_instructions(prod: str, renamed: str, psql: str) -> str:
    return (
        f"The original database is intact as {renamed}. To swap it back:\n"
        f"  1. stop the API\n"
        f"  2. {psql} -d postgres -c 'ALTER DATABASE {prod} RENAME TO "
        f"{prod}_failed_restore_{datetime.now(UTC):%Y%m%d%H%M}'\n"
        f"  3. {psql} -d postgres -c 'ALTER DATABASE {renamed} RENAME TO {prod}'\n"
        f"  4. start the API and check /health/deep"
    )


SWAP_STEP = "4. Swap: rename current DB (evidence), the clone becomes production"
#: decisions the parent leaves for a resume: the clone's name, and production's new name
CLONE_DECISION = "restore: clone"
RENAMED_DECISION = "swap: damaged database kept as"


class IncidentRestore(RestoreSteps):
    procedure = "restore_incident"

    """Replace production's database with a backup, keeping the old one as evidence."""

    # a resume (runbook.evidence.resume): the swap renames production away, and a second
    # rename would take the restored database for the damaged one: never again. Its
    # postcondition tells a swap that happened before the failure. The preflight (the
    # backup checks, the lock) is read-only and runs again. The completed steps rely on
    # the databases' names (read by the postcondition and `_from_parent`), not on the
    # app's HEAD or revision.
    resume_once = (SWAP_STEP,)
    resume_reruns = ("Preflight",)
    resume_postconditions: ClassVar[dict[str, str]] = {SWAP_STEP: "_swapped_already"}
    resume_relies_on = ()
    resumable = True

    def __init__(
        self,
        s: Session,
        *,
        reason: str,
        backup: str | None = None,
        incident_time: str | None = None,
        min_backup_bytes: int | None = None,
        tables: list[str] | None = None,
        api_wait_seconds: float = 90,
    ):
        if not (reason or "").strip():
            raise ParameterError(
                "reason is required: say what happened (it goes into the postmortem)",
                key="reason",
            )
        if s.guards.procedure != "restore_incident":
            raise ParameterError(
                "open the session with procedure='restore_incident'", key="procedure"
            )
        self.s = s
        self.reason = reason.strip()
        self.backup = backup
        self.incident_time = (
            datetime.fromisoformat(incident_time.replace("Z", "+00:00"))
            if incident_time
            else datetime.now(UTC)
        )
        if self.incident_time.tzinfo is None:
            self.incident_time = self.incident_time.replace(tzinfo=UTC)
        self.min_bytes = int(
            min_backup_bytes if min_backup_bytes is not None else s.profile.backups.min_size_bytes
        )
        self.tables = list(tables or s.profile.backups.tables)
        self.api_wait = api_wait_seconds
        self.prod = s.profile.postgres.database
        self.chosen: dict[str, Any] | None = None
        self.frame: pd.DataFrame | None = None
        self.before: dict[str, Any] = {}
        self.owner = "dealix"
        self.renamed: str | None = None
        self.clone: str | None = None
        self.validation: pd.DataFrame | None = None
        self.result: RestoreResult | None = None
        self.loss: dict[str, Any] = {}
        self.deep: dict[str, Any] = {}
        #: the run whose validate() passed, when this run is its resume
        self.validated_in: str | None = None
        self._from_parent()

    def _from_parent(self) -> None:
        """In a resume: the clone and the renamed database the parent's completed steps made."""
        plan = self.s.resume
        if plan is None:
            return
        decisions = plan.record.get("decisions") or {}
        if "2. Restore into a clone" in plan.done:
            self.clone = (decisions.get(CLONE_DECISION) or {}).get("choice")
        if "3. Validate the clone before the swap" in plan.done:
            self.validated_in = plan.parent_id
        if SWAP_STEP in plan.done:
            self.renamed = (decisions.get(RENAMED_DECISION) or {}).get("choice")
            if not self.renamed:
                raise resume_refusal(
                    f"run {plan.parent_id} swapped the databases but its record does not say "
                    "what production was renamed to",
                    "finish the run's remaining steps by hand (start the API, check "
                    "/health/deep), recorded in a postmortem",
                )

    def _swapped_already(self) -> tuple[bool, str]:
        """The swap's postcondition: did the parent rename production away before it failed?"""
        s = self.s
        plan = s.resume
        assert plan is not None
        decisions = plan.record.get("decisions") or {}
        renamed = (decisions.get(RENAMED_DECISION) or {}).get("choice")
        if renamed and database_exists(s, str(renamed)):
            self.renamed = str(renamed)
            return True, f"{self.prod} was renamed to {renamed} in run {plan.parent_id}"
        if self.clone and database_exists(s, self.clone):
            return False, f"the clone {self.clone} still has its name: nothing was swapped"
        raise resume_refusal(
            f"cannot tell whether run {plan.parent_id} swapped the databases (no renamed "
            f"database recorded, the clone {self.clone} is gone)",
            "check the databases by hand (\\l in psql) and finish the run by hand",
        )

    def preflight(self) -> Summary:
        """Confirmation first (fail closed), then the backup list and its size check.

        The backups found are in `incident.frame` (pick another with `-p backup NAME`)."""
        s = self.s
        s.require_confirmation("incident restore: replace the production database")
        self.frame = list_backups(s)
        self.chosen = choose(self.frame, self.backup)
        with s.step("Preflight"):
            # the same checks, in the same words, as the drill's (no RPO: any good backup will do)
            verdict = self.backup_checks(self.chosen, min_bytes=self.min_bytes)
            if not verdict["found"]:
                raise RestoreFailed("no backup to restore: nothing was changed")
            assert self.chosen is not None
            if not verdict["big"]:
                raise RestoreFailed(
                    f"{self.chosen['name']} is too small to be a real backup: nothing was "
                    "changed; pick another with -p backup NAME"
                )
            if self.chosen["format"] == PLAIN:
                # the whole file must decompress before we touch production
                r = s.probe(
                    f"gzip -t {shlex.quote(self.chosen['path'])}",
                    shell=True,
                    warn=True,
                    label="gzip-test",
                )
                s.check(
                    "Backup readable (gzip -t)",
                    expected="exit 0",
                    actual="ok" if r.ok else f"exit {r.exit_code}: {r.tail(2)}",
                    passed=r.ok,
                )
                if not r.ok:
                    raise RestoreFailed(
                        f"{self.chosen['name']} is corrupt: nothing was changed; pick another"
                    )
            s.acquire_lock()
        self.armor_preflight()
        c = self.chosen
        return Summary(
            f"preflight: will restore {c['name']} ({c['size']}, {c['age_hours']} h old) of "
            f"{len(self.frame)} backup(s) on the server (incident.frame); host lock held",
            backup=c["name"],
            backups=len(self.frame),
        )

    def snapshot(self) -> Summary:
        """The damaged database's row counts and owner, for the postmortem."""
        s = self.s
        row = one_row(
            s,
            "SELECT pg_get_userbyid(datdba) AS owner FROM pg_database "  # noqa: S608 - names via ident(), values via literal()
            f"WHERE datname = {literal(self.prod)}",
            "postgres",
        )
        self.owner = str(row.get("owner") or "dealix")
        # resumed after the swap: the damaged database is the renamed one now
        damaged = self.renamed or self.prod
        for t in self.tables:
            # a table the damage took is simply not in the snapshot
            with s.attempt():
                self.before[t] = table_facts(s, damaged, t)
        counts = ", ".join(f"{t} {f.get('rows')} rows" for t, f in self.before.items())
        return Summary(
            f"snapshot of {damaged} (owner {self.owner}): {len(self.before)} of "
            f"{len(self.tables)} table(s) readable"
            + (f" ({counts})" if counts else ": the damage took them"),
            **self.before,
        )

    def stop_api(self) -> None:
        with self.s.step("1. Stop API to freeze writes"):
            self.s.services.stop("api")

    def restore(self) -> RestoreResult:
        """Restore the backup into a fresh clone (`<prod>_restore_<UTC>`), not into production.

        Scenario 5's preflight: "restore into a staging clone first, validate,
        then swap". Production keeps its name (and its damaged data) until
        `validate()` has passed and `swap()` renames the two.
        """
        s = self.s
        assert self.chosen is not None
        with s.step("2. Restore into a clone"):
            self.clone = f"{self.prod}_restore_{datetime.now(UTC):%Y%m%d%H%M%S}"
            s.decide(CLONE_DECISION, self.clone, "production keeps its name until the swap")
            create_database(s, self.clone, owner=self.owner)
            # never cut an incident restore at the profile's command timeout
            self.result = restore(
                s, self.chosen, self.clone, on_progress=progress_view(), timeout=6 * 3600
            )
            r = self.result
            s.judge(
                "Restore completed",
                expected=f"exit 0, into the clone {self.clone}",
                result=r,
                actual=lambda r: "ok" if r.ok else f"exit {r.exit_code}",
                note=r.error[-500:] if r.ran and not r.ok else "",
            )
            if r.ran and not r.ok:
                # the single transaction rolled back: the clone is empty, ours to drop
                with s.attempt():
                    drop_database(s, self.clone)
                raise RestoreFailed(
                    f"the restore of {self.chosen['name']} failed ({r.error.splitlines()[0]}); "
                    f"nothing was swapped: {self.untouched()}"
                )
        return r

    def untouched(self) -> str:
        """What to do when the run stops before the swap (production still in place)."""
        svc = self.s.profile.services
        return (
            f"the production database {self.prod} is untouched and the API is stopped. Either "
            f"start the API on it again (`{svc.control} start {svc.api}`) or run this notebook "
            "again with another backup (-p backup NAME)."
        )

    def validate(self) -> pd.DataFrame:
        """Before the swap: every table restored, not emptier than the damaged database.

        Per table: the clone's rows against the rows production (the damaged
        database, still in place) holds up to the newest restored row, within
        the row tolerance: a mass delete leaves production with fewer, so the
        backup passes; a truncated backup has fewer than production and fails.
        The newest restored row's age at the incident time is checked against
        the RPO (recorded; a stale backup may still be the newest good one, so
        it does not stop the swap). A failed table stops the run here.
        """
        import pandas as pd

        s = self.s
        cols = ["table", "restored_rows", "production_rows_at_dump", "delta_pct", "newest"]
        if s.dry_run or self.clone is None:
            return pd.DataFrame(columns=cols)
        tol = float(s.profile.targets.row_tolerance_pct)
        rpo = float(s.profile.targets.rpo_hours)
        rows: list[dict[str, Any]] = []
        problems: list[str] = []
        newest: datetime | None = None
        with s.step("3. Validate the clone before the swap"):
            for table in self.tables:
                try:
                    got = table_facts(s, self.clone, table)
                except (RestoreFailed, CommandFailed) as exc:
                    problems.append(f"{table} missing")
                    s.check(
                        f"Restored rows {table}",
                        expected="the table restored, with rows",
                        actual=f"not in the restore: {str(exc).splitlines()[0][:200]}",
                        passed=False,
                    )
                    continue
                base: int | None = None
                if got.get("newest") is not None:
                    ts = as_utc(got["newest"])
                    newest = ts if newest is None or ts > newest else newest
                    with s.attempt(also=(KeyError, TypeError, ValueError)):
                        base = int(
                            one_row(
                                s,
                                f"SELECT count(*) AS n FROM public.{ident(table)} "  # noqa: S608 - ident()
                                f"WHERE created_at <= {literal(str(got['newest']))}::timestamptz",
                                self.prod,
                            )["n"]
                        )
                ok = got["rows"] > 0 and (base is None or got["rows"] >= base * (1 - tol / 100))
                if not ok:
                    problems.append(f"{table}: {got['rows']} rows")
                s.check(
                    f"Restored rows {table}",
                    expected=(
                        "> 0"
                        + (
                            f" and >= the damaged database's {base} rows up to the newest "
                            f"restored row (-{tol:g} %)"
                            if base is not None
                            else " (the damaged database cannot be counted)"
                        )
                    ),
                    actual=f"{got['rows']} restored"
                    + (f" ({pct(got['rows'], base):+.2f} %)" if base else ""),
                    passed=ok,
                )
                rows.append(
                    {
                        "table": table,
                        "restored_rows": got["rows"],
                        "production_rows_at_dump": base,
                        "delta_pct": None if base is None else round(pct(got["rows"], base), 2),
                        "newest": str(got.get("newest")),
                    }
                )
            age = None if newest is None else (self.incident_time - newest).total_seconds() / 3600
            s.check(
                "Restored data age (RPO)",
                expected=f"newest restored row <= {rpo:g} h before the incident",
                actual="no created_at in the restore" if age is None else f"{age:.1f} h",
                passed=age is not None and age <= rpo,
                note="" if age is None or age <= rpo else "the backup gap goes in the postmortem",
            )
            self.validation = pd.DataFrame(rows, columns=cols)
            if problems:
                # inside the step: the record names it as the step that failed
                raise RestoreFailed(
                    f"the restored clone failed validation ({'; '.join(problems)}): nothing was "
                    f"swapped; {self.untouched()} The clone is kept as {self.clone} for "
                    f"inspection (drop it when done: DROP DATABASE {self.clone})."
                )
        return self.validation

    def swap(self) -> Summary:
        """Rename production to dealix_corrupt_YYYYMMDD[_n] (never a drop), the clone to production."""
        s = self.s
        validated = self.validation is not None or self.validated_in is not None
        if not s.dry_run and (self.clone is None or not validated):
            # never rename production away without a validated copy to put in its place
            raise RestoreFailed(
                f"swap() before restore() and validate() passed: nothing was swapped; "
                f"{self.untouched()}"
            )
        with s.step("4. Swap: rename current DB (evidence), the clone becomes production"):
            existing = set(databases(s, "dealix_corrupt_%"))
            self.renamed = corrupt_name(existing, datetime.now(UTC).strftime("%Y%m%d"))
            # a rename needs no one connected: the API is stopped, close the rest
            for db in (self.prod, self.clone or self.prod):
                admin_sql(
                    s,
                    "SELECT pg_terminate_backend(pid) FROM pg_stat_activity "  # noqa: S608 - names via ident(), values via literal()
                    f"WHERE datname = {literal(db)} AND pid <> pg_backend_pid()",
                )
            admin_sql(s, f"ALTER DATABASE {ident(self.prod)} RENAME TO {ident(self.renamed)}")
            # a resume reads it: the swap is never done twice
            s.decide(RENAMED_DECISION, self.renamed, "the damaged database, kept as evidence")
            with s.attempt() as a:
                admin_sql(
                    s, f"ALTER DATABASE {ident(self.clone or '')} RENAME TO {ident(self.prod)}"
                )
            if a.error is not None:
                # put production back under its name before stopping
                admin_sql(s, f"ALTER DATABASE {ident(self.renamed)} RENAME TO {ident(self.prod)}")
                self.renamed = None
                raise a.error
            kept = False if s.dry_run else database_exists(s, self.renamed)
            # the evidence outlives even a DROP nobody should run: dumped, then immutable
            sealed = s.armor.seal_dump(self.renamed)
            s.judge(
                "Damaged database dumped (immutable evidence)",
                expected="pg_dump -Fc of it, chattr +i",
                ran=not s.dry_run,
                actual=sealed.status if sealed.passed is not None else sealed.detail,
                passed=sealed.passed,
                note=f"{sealed.name}: {sealed.detail}",
            )
            s.judge(
                "Damaged database kept",
                expected=f"{self.prod} renamed to {self.renamed}, not dropped",
                ran=not s.dry_run,
                actual="exists" if kept else "missing",
                passed=kept,
            )
        return Summary(
            f"swap: {self.prod} renamed to {self.renamed} (kept, dumped read-only); "
            f"{self.clone} is {self.prod} now",
            renamed=self.renamed,
        )

    def start_api(self) -> Summary:
        """Start the API and wait for /health/deep green."""
        s = self.s
        with s.step("5. Restart API + verify"):
            s.services.start("api")
            if s.dry_run:
                return Summary("dry run: the API was not started")
            deadline = time.monotonic() + self.api_wait
            deep: dict[str, Any] = {}
            while time.monotonic() < deadline:
                with s.attempt():
                    deep = s.api.deep_health()
                    if deep.get("status") == "green":
                        break
                time.sleep(2)
            self.deep = deep
            green = deep.get("status") == "green"
            s.check(
                "API deep health",
                expected="/health/deep 200, all green",
                actual=f"{deep.get('http_status')} {deep.get('status')}",
                passed=green,
                note=""
                if green or not self.renamed
                else swap_back_instructions(self.prod, self.renamed, s.profile.postgres.psql),
            )
        return Summary(
            f"API: /health/deep {deep.get('http_status')} {deep.get('status')}"
            + ("" if green else " (the check's note says how to swap back)"),
            **deep,
        )

    def loss_window(self) -> Summary:
        """Newest restored row vs the incident time; rows only in the damaged copy."""
        s = self.s
        if s.dry_run or self.renamed is None:
            return Summary("no data-loss window: nothing was swapped")
        newest: datetime | None = None
        per: dict[str, Any] = {}
        for t in self.tables:
            with s.attempt() as a:
                f = table_facts(s, self.prod, t)
            if a.failed:
                continue
            per[t] = {"restored_rows": f["rows"], "newest": str(f.get("newest"))}
            if f.get("newest") is not None:
                ts = as_utc(f["newest"])
                newest = ts if newest is None or ts > newest else newest
                # rows written after the backup survive only in the renamed database
                with s.attempt():
                    n = one_row(
                        s,
                        f"SELECT count(*) AS n FROM public.{ident(t)} "  # noqa: S608 - names via ident(), values via literal()
                        f"WHERE created_at > {literal(str(f['newest']))}",
                        self.renamed,
                    ).get("n")
                    per[t]["only_in_renamed"] = int(n) if n is not None else None
        window_h = None if newest is None else (self.incident_time - newest).total_seconds() / 3600
        self.loss = {
            "newest_restored": newest.isoformat() if newest else None,
            "incident_time": self.incident_time.isoformat(),
            "window_hours": None if window_h is None else round(window_h, 2),
            "tables": per,
        }
        s.check(
            "Data-loss window",
            expected="documented: newest restored row vs the incident time",
            actual=(
                "unknown (no created_at)"
                if window_h is None
                else f"{window_h:.2f} h (newest restored {newest:%Y-%m-%d %H:%M:%S} UTC, "
                f"incident {self.incident_time:%Y-%m-%d %H:%M:%S} UTC)"
            ),
            passed=window_h is not None,
        )
        only = sum(int(v.get("only_in_renamed") or 0) for v in per.values())
        return Summary(
            "data-loss window: "
            + ("unknown (no created_at)" if window_h is None else f"{window_h:.2f} h")
            + f"; {only} row(s) newer than the backup are only in {self.renamed}",
            **self.loss,
        )

    def postmortem(self) -> str:
        """Draft the mandatory postmortem into the evidence folder (postmortem.md)."""
        s = self.s
        b = self.chosen or {}
        loss = self.loss
        restore = [
            f"- Incident time: {self.incident_time:%Y-%m-%d %H:%M UTC}",
            f"- Damaged database kept as `{self.renamed}` (keep at least "
            f"{s.profile.do_not_touch.corrupt_db_keep_days} days; never dropped by this run)",
            f"- Restored backup: `{b.get('name')}` ({b.get('size')}, {b.get('modified')}, "
            f"{b.get('format')})",
            f"- Restore duration: {self.result.duration_s if self.result else '?'} s, into the "
            f"clone `{self.clone}`, validated before the swap (rows per table against the "
            "damaged database up to the newest restored row)",
            f"- API after restore: /health/deep {self.deep.get('http_status')} "
            f"{self.deep.get('status')}",
        ]
        window = [
            f"- Newest restored row: {loss.get('newest_restored')}",
            f"- Window: {loss.get('window_hours')} h of writes are not in the restored database",
        ]
        for t, f in loss.get("tables", {}).items():
            before = self.before.get(t, {}).get("rows")
            window.append(
                f"- `{t}`: {before} rows in the damaged database before the restore, "
                f"{f.get('restored_rows')} restored; {f.get('only_in_renamed')} rows newer than "
                f"the backup exist only in `{self.renamed}` (candidates for re-import)"
            )
        record = s.record()
        # Scenario 5 step 5: the postmortem is mandatory and names these three things.
        todo = {
            "How the data was lost": "_TODO: the exact cause (statement, deploy, person or "
            "process) and when it was noticed._",
            "Why the backup gap existed": f"_TODO: backups are nightly; "
            f"{loss.get('window_hours')} h passed between the newest restored row and the "
            "incident. Say whether the nightly job ran, and why no WAL archive / "
            "point-in-time recovery covered the gap._",
            "What changed": "_TODO: the fix that prevents it (guard, permission, review) and "
            "the backup change (frequency, PITR, custom format), with owners and dates._",
        }
        summary = postmortem.summary_from_record(record)
        summary = postmortem.Summary(
            what_happened=f"the database was restored from backup `{b.get('name')}`; reason "
            f"given at restore time: {self.reason}. TODO: the cause, in one sentence.",
            impact=f"{loss.get('window_hours')} h of writes (after "
            f"{loss.get('newest_restored')}) are not in the restored database; the rows "
            f"newer than the backup are kept in `{self.renamed}`. TODO: who was affected.",
            detection=f"incident time {self.incident_time:%Y-%m-%d %H:%M} UTC; "
            + summary.detection,
            resolution=f"restored into the clone `{self.clone}`, validated, swapped in; API "
            f"/health/deep {self.deep.get('http_status')} {self.deep.get('status')}.",
            follow_up="TODO: the three sections below (how the data was lost, why the backup "
            "gap existed, what changed), with owners and dates.",
        )
        text = postmortem.draft(
            record,
            subject="data restored from backup",
            by=f"written by the restore_incident notebook at {datetime.now(UTC):%H:%M} UTC",
            summary=summary,
            sections=[
                ("The restore", "\n".join(restore)),
                ("Data-loss window", "\n".join(window)),
                *todo.items(),
            ],
            files=postmortem.run_files(record, ("restore_incident.json", "the numbers above")),
        )
        s.evidence.write_text("postmortem.md", text)
        s.evidence.write_text(
            "restore_incident.json",
            json.dumps(
                {
                    "reason": self.reason,
                    "backup": self.chosen,
                    "renamed": self.renamed,
                    "before": self.before,
                    "restore": asdict(self.result) if self.result else None,
                    "clone": self.clone,
                    "validation": (
                        self.validation.to_dict(orient="records")
                        if self.validation is not None
                        else []
                    ),
                    "loss": self.loss,
                    "deep_health": self.deep,
                },
                indent=2,
                default=str,
            )
            + "\n",
        )
        print(f"postmortem draft: {s.run_dir / 'postmortem.md'}")
        return text
