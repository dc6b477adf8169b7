"""Scenario 3 (database down): gather every signal at once, name the branch, run only that branch.

`DatabaseDown` holds one method per runbook step: each opens its step, calls
the operations (runbook.ops: services, postgres, disk, backups, the API),
judges and records its checks. The judging that needs no server lives beside
it and never takes a Session: `signals` (the triage table and the branch),
`rotation` (which old backups may go), `report` (the postmortem lines).

Example (in a notebook)::

    s, dd = open_scenario("database_down")
    dd.triage(); dd.take_lock()
    dd.service_failed(); dd.disk_full_report(); dd.disk_full_rotate()
    dd.pool_exhausted(); dd.corrupt_hand_off(); dd.recheck(); dd.drain(); dd.postmortem()
    s.done()
"""

from __future__ import annotations

import json
from pathlib import PurePosixPath
from typing import TYPE_CHECKING, Any, ClassVar

from runbook.clock import utc_now, wait_for
from runbook.errors import CommandFailed
from runbook.evidence import postmortem as postmortem_draft
from runbook.evidence.story import Summary
from runbook.ops import backups as backup_ops
from runbook.ops import disk
from runbook.ops.logs import last_lines, log_gist
from runbook.ops.postgres import psql_error
from runbook.scenarios._base import ARMOR_STEP, Scenario, show
from runbook.scenarios.database_down.report import (
    after_restart,
    postmortem_facts,
    postmortem_summary,
    stopped_because,
)
from runbook.scenarios.database_down.rotation import (
    backup_files,
    backups_table,
    rotation_candidates,
)
from runbook.scenarios.database_down.signals import (
    CHANGING,
    CORRUPT,
    DISK_FULL,
    DISK_FULL_PCT,
    NO_INCIDENT,
    NOT_THE_DATABASE,
    POOL_EXHAUSTED,
    SERVICE_FAILED,
    Branch,
    changes_server,
    classify,
    handoff_command,
    readable,
    reason_for_restore,
    signal_table,
)

if TYPE_CHECKING:
    import pandas as pd

    from runbook.session import Session

TRIAGE_STEP = "1. Triage: every signal at once"
SERVICE_STEP = "2. Service failed: logs, restart, wait, SELECT 1"
REPORT_STEP = "2. Disk full: space report and rotation candidates"
ROTATE_STEP = "2. Disk full: delete the listed old backups, re-check"
POOL_STEP = "2. Pool exhausted: connections by state, restart the API, re-check"
RECHECK_STEP = "3. Re-check: deep health postgres"
DRAIN_STEP = "4. Post-incident: drain the DLQs (webhooks, queued LLM work)"
# the decisions that name the branch, in the record (a resume reads the parent's)
TRIAGE_DECISION = "Triage: branch"
RESTART_DECISION = "Branch after the restart"

# What the post-incident drain replays: check name, (api queue name, DLQ)
DRAINS = (
    ("No lost webhooks", "webhooks", "WEBHOOKS_DLQ"),
    ("No lost LLM work", "outbound", "OUTBOUND_DLQ"),
    ("No lost LLM work", "enrichment", "ENRICHMENT_DLQ"),
)

# what this scenario writes into the evidence folder, linked from the postmortem when there
EVIDENCE = (
    ("triage.json", "every signal triage read, and the branch"),
    ("postgres-log-before-restart.txt", "Postgres's log before the restart"),
    ("postgres-log-after-restart.txt", "Postgres's log after a restart that did not help"),
)


def housekeeping(step: str | None) -> bool:
    """A step that takes the host lock or installs the armor: no part of an incident's fix.

    >>> housekeeping("2. Take the host lock"), housekeeping("2. Service failed: restart")
    (True, False)
    """
    return step == ARMOR_STEP or (step or "").endswith("Take the host lock")


class DatabaseDown(Scenario):
    """Runbook scenario 3, one method per step: triage names the branch, only its steps act."""

    # Step 2, `take_lock()`: only on a branch that changes the server
    lock_step, lock_once = "2. Take the host lock", True

    # a resume (runbook.evidence.resume): the drain replays what waited in the DLQs, and
    # a second drain would replay what arrived since as if it were the outage's: never
    # again. The parent's branch is read from its record, so triage is not run again
    # (a fixed database would now say "no incident" and skip the branch's checks). The
    # space report is read-only and sets the list the rotation deletes: it runs again.
    # A failed step first checks whether its effect is already there.
    resume_once = (DRAIN_STEP,)
    resume_reruns = (REPORT_STEP,)
    resume_postconditions: ClassVar[dict[str, str]] = {
        SERVICE_STEP: "_answers_already",
        POOL_STEP: "_api_connects_already",
        DRAIN_STEP: "_drained_already",
    }
    resume_relies_on = ()
    resumable = True

    def __init__(self, s: Session, *, keep_newest_backups: int = 7, wait_seconds: float = 60):
        super().__init__(s)
        self.keep_newest_backups = int(keep_newest_backups)
        self.wait_seconds = float(wait_seconds)
        self.table: pd.DataFrame | None = None
        self.branch: Branch | None = None
        self.disk: dict[str, Any] | None = None
        self.drained: dict[str, Any] | None = None
        self._from_parent()

    # ---------------------------------------------------------------- resume

    def _from_parent(self) -> None:
        """In a resume: the branch the parent's triage named, or its restart when that step
        is done (a restart that failed is the failed step: it is checked and tried again)."""
        plan = self.s.resume
        if plan is None or TRIAGE_STEP not in plan.done:
            return
        decisions = plan.record.get("decisions") or {}
        restarted = SERVICE_STEP in plan.done
        for name in (RESTART_DECISION, TRIAGE_DECISION) if restarted else (TRIAGE_DECISION,):
            d = decisions.get(name) or {}
            if d.get("choice"):
                self.branch = Branch(str(d["choice"]), str(d.get("reason") or ""))
                # recorded here too: this run's record says which branch it continued
                self.s.decide(
                    TRIAGE_DECISION,
                    self.branch.name,
                    f"from run {plan.parent_id} ({name}): {self.branch.reason}",
                )
                return

    def _answers_already(self) -> tuple[bool, str]:
        """The restart's postcondition: Postgres answers SELECT 1 now."""
        r = self.s.db.select1(timeout=10)
        return r.ok, "SELECT 1 answers" if r.ok else f"SELECT 1 fails: {psql_error(r.stderr)}"

    def _api_connects_already(self) -> tuple[bool, str]:
        """The API restart's postcondition: deep health says postgres green."""
        with self.s.attempt() as a:
            pg = self.s.api.deep_health().get("postgres") or {}
        if a.failed:
            return False, f"deep health did not answer ({a.actual})"
        return pg.get("status") == "green", f"deep health postgres {pg.get('status')}"

    def _drained_already(self) -> tuple[bool, str]:
        """The drain's postcondition: the DLQs the parent did not empty are empty now.

        A queue the parent drained (its "0 left" check passed) is never drained
        again (see `_drained_in_parent`); what arrived there since is named.
        """
        plan = self.s.resume
        assert plan is not None
        depths = self._dlq_depths()
        if depths is None:
            return False, "the API cannot say the DLQ depths"
        done = self._drained_in_parent()
        said = []
        for queue, n in sorted(depths.items()):
            if queue in done:
                said.append(f"{queue} drained in run {plan.parent_id} ({done[queue]}), {n} now")
            else:
                said.append(f"{queue} {n} now")
        ours = [queue for _, _, queue in self._drains()]
        left = [q for q, n in depths.items() if n and q in ours and q not in done]
        return not left, "; ".join(said)

    def _drained_in_parent(self) -> dict[str, str]:
        """In a resume of a failed drain: queue -> the parent's "before, after" for each DLQ
        the parent drained to 0. The resume never drains those again: what waited there
        during the outage was replayed once, and a second drain is not this run's to do."""
        plan = self.s.resume
        if plan is None or plan.failed_step != DRAIN_STEP:
            return {}
        out: dict[str, str] = {}
        for c in plan.record.get("checks") or []:
            name = str(c.get("name") or "")
            if c.get("step") == DRAIN_STEP and c.get("status") == "passed" and ": " in name:
                out[name.split(": ", 1)[1].split()[0]] = str(c.get("actual"))
        return out

    # ---------------------------------------------------------------- step 1

    def triage(self) -> Branch:
        """Step 1: every signal at once, one table, one branch (recorded, and in triage.json)."""
        s = self.s
        with s.step(TRIAGE_STEP):
            values, seen = self._measure()
            self.table = signal_table(values, seen)
            self.branch = classify(self.table)
            s.decide(TRIAGE_DECISION, self.branch.name, self.branch.reason)
            raw = {
                k: (v if isinstance(v, (str, int, float, bool, type(None))) else str(v))
                for k, v in values.items()
            }
            s.evidence.write_text(
                "triage.json",
                json.dumps(
                    {"branch": self.branch.name, "reason": self.branch.reason, "signals": raw},
                    indent=2,
                    default=str,
                ),
            )
        show(readable(self.table))
        return self.branch

    def _measure(self, log_lines: int = 30) -> tuple[dict[str, Any], dict[str, str]]:
        """Every triage signal, read-only, all of them even when one fails: (values, seen)."""
        s = self.s
        v: dict[str, Any] = {}
        seen: dict[str, str] = {}
        with s.attempt() as a:
            deep = s.api.deep_health()
            v["deep_status"] = deep.get("status")
            pg = deep.get("postgres") or {}
            v["deep_postgres"] = pg.get("status")
            v["deep_postgres_detail"] = pg.get("detail")
            red = [
                k
                for k in ("postgres", "redis", "llm_providers")
                if (deep.get(k) or {}).get("status") not in (None, "green")
            ]
            v["deep_red_parts"] = ", ".join(red)
            seen["deep_status"] = f"{deep.get('status')} (HTTP {deep.get('http_status')})" + (
                f"; not green: {', '.join(red)}" if red else ""
            )
        if a.error is not None:
            v["deep_status_error"] = v["deep_postgres_error"] = str(a.error)[:200]
        for key, role in (("api_service", "api"), ("postgres_service", "postgres")):
            st = s.services.status(role)
            v[key] = st.active if key == "api_service" else st.words
            # The unit that runs the server (postgresql@15-main under Debian's wrapper).
            v[key.replace("_service", "_unit")] = st.name
            seen[key] = st.label + (f", pid {st.pid}" if st.pid else "")
        r = s.db.select1()
        v["select1"] = r.ok
        v["select1_error"] = "" if r.ok else psql_error(r.stderr or r.stdout)
        paths = {"disk_data": s.profile.postgres.data_dir, "disk_backups": s.profile.backups.dir}
        for key, u in disk.usage(s, paths).items():
            if u.error is not None:
                v[f"{key}_error"] = u.error
                continue
            v[key], v[f"{key}_free"], v[f"{key}_mount"] = u.pct, disk.human(u.avail), u.mount
            seen[key] = (
                f"{u.pct:.0f}% used, {disk.human(u.avail)} free of "
                f"{disk.human(u.size)} ({u.path} on {u.mount})"
            )
        c = s.db.connections()
        if c.error is None:
            v["connections"] = c.used
            v["connections_by_state"] = ", ".join(f"{k} {n}" for k, n in c.by_state)
            if c.max is not None:
                v["connections_max"], v["connections_reserved"] = c.max, c.reserved
        else:
            v["connections_error"] = c.error
        logs = s.services.logs("postgres", log_lines).stdout
        v["postgres_log"] = "\n".join(last_lines(logs, log_lines))
        seen["postgres_log"] = (
            " | ".join(ln.strip()[-150:] for ln in last_lines(logs, 2)) or "(empty)"
        )
        return v, seen

    # ---------------------------------------------------------------- step 2: the lock

    def no_lock_needed(self) -> str | None:
        assert self.branch is not None, "run triage() first"
        nothing = f"{self.branch.name}: this branch changes nothing on the server, no lock needed"
        return None if changes_server(self.branch) else nothing

    def change_summary(self) -> list[str]:
        """What this branch will change, for the confirmation question (after `triage`)."""
        s = self.s
        name = self.branch.name if self.branch is not None else None
        manager = s.profile.services.manager
        fix = {
            SERVICE_FAILED: f"restart {s.services.unit('postgres')} ({manager}), then SELECT 1",
            DISK_FULL: "delete the old backups listed above (the newest "
            f"{self.keep_newest_backups} are never deleted)",
            POOL_EXHAUSTED: f"restart {s.services.unit('api')} ({manager}) to drop its "
            "stale connections",
        }.get(name or "", f"branch {name!r}: no change of its own")
        return [
            f"branch {name!r}: {fix}",
            "afterwards: drain the dead-letter queues that hold messages (admin API)",
        ]

    def _on(self, *names: str) -> bool:
        assert self.branch is not None, "run triage() first"
        if self.branch.name in names:
            return True
        print(f"skipped: branch is {self.branch.name!r}")
        return False

    # ---------------------------------------------------------------- step 2: service failed

    def service_failed(self) -> Summary | None:
        """Branch service failed: recent logs, restart, wait, SELECT 1; recorded as a check.

        A restart that does not bring it back (the start fails, SELECT 1 never
        answers) means it will not start: the branch becomes "corrupt", with
        the log's last words, and the run hands over to scenario 5.
        """
        if not self._on(SERVICE_FAILED):
            return None
        s, wait = self.s, self.wait_seconds
        with s.step(SERVICE_STEP):
            res = self._restart_postgres()
            actual, res["branch"] = after_restart(res, wait)
            s.judge(
                "Postgres answers SELECT 1 after the restart",
                expected="1",
                ran=not res["dry_run"],
                actual=actual,
                passed=bool(res["select1"]),
                note="" if res["dry_run"] or res["select1"] else f"log: {res.get('log_after', '')}",
            )
            if res["branch"].name == CORRUPT:
                s.decide(RESTART_DECISION, res["branch"].name, res["branch"].reason)
        if res.get("log_tail"):
            print("postgres log before the restart, last lines:")
            print(res["log_tail"].rstrip())
        if res["branch"].name == CORRUPT:
            self.branch = res["branch"]
            show(self.branch)
        if res["dry_run"]:
            line = "service failed: dry run, postgres not restarted"
        elif res["select1"]:
            line = "service failed: postgres restarted, SELECT 1 answers"
        else:
            line = f"service failed: the restart did not bring postgres back ({actual})"
        return Summary(line, **res)

    def _restart_postgres(self) -> dict[str, Any]:
        """Recent logs, restart, wait for SELECT 1. Returns what happened.

        The restart's failure is information, not an error: a failed start is
        what tells this branch from "will not start".
        """
        s = self.s
        logs = s.services.logs("postgres", 200)
        s.evidence.write_text("postgres-log-before-restart.txt", logs.stdout)
        try:
            r = s.services.restart("postgres")
        except CommandFailed as exc:
            r = exc.result  # recorded as a change and in commands.jsonl like any command
        if r.dry_run:
            return {"restarted": False, "dry_run": True, "select1": None}

        seen_after: list[str] = []
        gave_up: list[bool] = [False]

        def manager_gave_up() -> bool:
            # The unit that runs the server, not the restart's exit code: Debian's
            # `systemctl restart postgresql` restarts a wrapper (ExecStart=/bin/true) and
            # exits 0 even when postgresql@15-main fails to start. The restart returns only
            # after the member's start job ended (it is ordered Before= the wrapper), so
            # "failed" now is this start's failure; a good start is "activating" until it
            # answers.
            st = s.services.status("postgres")
            seen_after[:] = [st.label]
            gave_up[0] = st.words.startswith("failed")
            return gave_up[0]

        ok, _ = wait_for(
            lambda: s.db.select1(timeout=10).ok, self.wait_seconds, 1.0, give_up=manager_gave_up
        )
        res: dict[str, Any] = {
            "restarted": True,
            "dry_run": False,
            "restart_ok": r.ok,
            "restart_exit": r.exit_code,
            "restart_output": " ".join((r.stderr or r.stdout).split())[-300:],
            "select1": ok,
            "log_tail": logs.tail(10),
            "service_after": seen_after[0] if seen_after else "",
            "gave_up": not ok and gave_up[0],
        }
        if not ok:
            after = s.services.logs("postgres", 200)
            s.evidence.write_text("postgres-log-after-restart.txt", after.stdout)
            res["log_after"] = log_gist(after.stdout)
        return res

    # ---------------------------------------------------------------- step 2: disk full

    def disk_full_report(self) -> Summary | None:
        """Branch disk full: the space report and the old backups to delete, BEFORE deleting.

        `kept` is the newest `keep_newest_backups` backups: never candidates,
        checked again on the server after the deletion.
        """
        if not self._on(DISK_FULL):
            return None
        s, keep = self.s, self.keep_newest_backups
        with s.step(REPORT_STEP):
            pg_base = str(PurePosixPath(s.profile.postgres.data_dir).parent)
            report = disk.space_report(s, [pg_base, s.profile.backups.dir])
            backups = self._list_backups()
            where = {
                "backups_dir": s.profile.backups.dir,
                "pattern": s.profile.backups.pattern,
                "data_dir": s.profile.postgres.data_dir,
            }
            candidates = rotation_candidates(backups, keep_newest=keep, **where)
            kept = backup_files(backups, **where).head(keep).reset_index(drop=True)
            s.evidence.append(
                {
                    "kind": "rotation",
                    "event": "candidates",
                    "delete": list(candidates["path"]),
                    "keep": list(kept["path"]),
                }
            )
            self.disk = {
                "report": report,
                "backups": backups,
                "candidates": candidates,
                "kept": kept,
                "keep_newest": keep,
            }
        print(f"What takes the space under {pg_base} and {s.profile.backups.dir}, biggest first:")
        show(report.head(20))
        print(f"Old backups to delete ({len(candidates)}), oldest first:")
        show(backups_table(candidates))
        print(f"Never deleted: the newest {keep} backups:")
        show(backups_table(kept))
        return Summary(
            f"disk full: {len(candidates)} old backups to delete (listed above), "
            f"the newest {len(kept)} kept",
            **self.disk,
        )

    def _list_backups(self) -> pd.DataFrame:
        """Every file in the backups dir with its mtime and size: path, bytes, modified."""
        import pandas as pd

        files = backup_ops.list_backups(self.s, limit=None, every_file=True)
        return pd.DataFrame(
            {"path": files["path"], "bytes": files["size_bytes"], "modified": files["mtime"]},
            columns=["path", "bytes", "modified"],
        )

    def disk_full_rotate(self) -> Summary | None:
        """Branch disk full: delete exactly the list shown (a changing call), re-check."""
        if not self._on(DISK_FULL):
            return None
        assert self.disk is not None, "run disk_full_report() first"
        s, plan = self.s, self.disk
        candidates, kept = plan["candidates"], plan["kept"]
        with s.step(ROTATE_STEP):
            paths = [str(p) for p in candidates["path"]]
            # Guards refuse pg_wal and do-not-touch paths on the command itself as well.
            r = s.run(["rm", "-f", "--", *paths], label="rotate-old-backups") if paths else None
            dry = r is not None and not r.ran
            usage = disk.usage_table(
                s, {"data": s.profile.postgres.data_dir, "backups": s.profile.backups.dir}
            )
            worst = float(usage["used %"].max()) if len(usage) else float("nan")
            s.check(
                "Data and backups filesystems below the full mark",
                expected=f"< {DISK_FULL_PCT:.0f}% used",
                actual=f"{worst:.0f}% used" + (" (nothing deleted: dry run)" if dry else ""),
                passed=worst < DISK_FULL_PCT,
                note=f"deleted {0 if dry else len(candidates)} old backups, "
                f"kept the newest {plan['keep_newest']}",
            )
            # Listed again after the deletion: the check reads the server, not the plan.
            present = set(self._list_backups()["path"])
            newest = [str(p) for p in kept["path"]]
            missing = [p for p in newest if p not in present]
            gone = [str(p) for p in candidates["path"] if str(p) in present]
            names = ", ".join(PurePosixPath(p).name for p in missing)
            s.judge(
                "Newest backups kept",
                ran=not dry,  # nothing was deleted: "kept" would say nothing
                expected=f"the newest {plan['keep_newest']} backups still on the server",
                actual=f"{len(newest) - len(missing)} of {len(newest)} still there"
                + (f"; MISSING: {names}" if missing else "")
                + (
                    f" ({', '.join(PurePosixPath(p).name for p in newest[:3])}, ...)"
                    if newest
                    else ""
                ),
                passed=bool(newest) and not missing,
                note=f"{len(gone)} listed backups still present" + (" (dry run)" if dry else ""),
            )
        used = ", ".join(
            f"{r['filesystem']} {r['used %']:.0f}% used" for r in usage.to_dict("records")
        )
        deleted = "dry run, nothing deleted" if dry else f"deleted {len(paths) - len(gone)}"
        return Summary(
            f"rotation: {deleted} of {len(paths)} old backups; {used}; "
            f"newest kept: {len(newest) - len(missing)} of {len(newest)}",
            usage=usage,
            deleted=[] if dry else [p for p in paths if p not in present],
            missing=missing,
        )

    # ---------------------------------------------------------------- step 2: pool exhausted

    def pool_exhausted(self) -> Summary | None:
        """Branch pool exhausted: pg_stat_activity by state, restart the API (drops its stale
        connections), wait for deep health postgres green."""
        if not self._on(POOL_EXHAUSTED):
            return None
        s = self.s
        with s.step(POOL_STEP):
            before = s.db.connections_by_state()
            r = s.services.restart("api")
            deep = s.api.wait_green("postgres", self.wait_seconds) if r.ran else {}
            after = s.db.connections_by_state()
            # a restart a dry run skipped: nothing to judge, and never a pass
            self._judge_postgres_green(
                "API gets database connections again",
                "deep health postgres green",
                deep.get("postgres"),
                ran=r.ran,
            )
        print("connections by state, before the API restart:")
        show(before)
        print("and after it:")
        show(after)
        pg = deep.get("postgres") or {}
        line = (
            f"pool exhausted: API restarted, deep health postgres {pg.get('status')}"
            if r.ran
            else "pool exhausted: dry run, API not restarted"
        )
        return Summary(
            line,
            before=before,
            after=after,
            restarted=r.ran,
            dry_run=not r.ran,
            **({"deep_postgres": deep.get("postgres")} if r.ran else {}),
        )

    def _judge_postgres_green(
        self, name: str, expected: str, part: dict[str, Any] | None, *, ran: bool = True
    ) -> None:
        """A check that deep health's postgres part is green."""
        pg = part or {}
        self.s.judge(
            name,
            expected=expected,
            ran=ran,
            actual=f"{pg.get('status')}: {pg.get('detail')}",
            passed=pg.get("status") == "green",
        )

    # ---------------------------------------------------------------- step 2: corrupt

    def corrupt_hand_off(self) -> str | None:
        """Branch corrupt or will not start: stop here; the hand-off to scenario 5
        (restore_incident) is a failed check naming the command."""
        assert self.branch is not None, "run triage() first"
        if self.branch.name in (NO_INCIDENT, NOT_THE_DATABASE):
            print(f"{self.branch.name}: {self.branch.reason}. Nothing was changed.")
            return None
        if not self._on(CORRUPT):
            return None
        s = self.s
        with s.step("2. Corrupt: hand-off to restore_incident"):
            command = handoff_command(s.env, reason_for_restore(self.branch))
            s.check(
                "Hand-off to scenario 5 (restore_incident)",
                expected="database readable",
                actual="corrupt or will not start: restore from backup",
                passed=False,
                note=f"run: {command}",
            )
            s.set_next_command(command)
        print("The database is corrupt or will not start. Do NOT restart it again and again.")
        print("Restore from backup with scenario 5 (notebooks/restore_incident.ipynb):")
        print()
        print("    " + command)
        return command

    # ---------------------------------------------------------------- steps 3 and 4

    def recheck(self) -> Summary | None:
        """Step 3, the runbook's DoD: /health/deep postgres green (waits a little after a fix)."""
        assert self.branch is not None, "run triage() first"
        if self.branch.name == CORRUPT:
            print("skipped: the database is handed over to restore_incident")
            return None
        wait = self.wait_seconds if self.branch.name != NO_INCIDENT else 0
        with self.s.step(RECHECK_STEP):
            deep = self.s.api.wait_green("postgres", wait)
            self._judge_postgres_green("Deep health postgres green", "green", deep.get("postgres"))
        pg = deep.get("postgres") or {}
        return Summary(
            f"re-check: deep health postgres {pg.get('status')}: {pg.get('detail')}", **deep
        )

    def drain(self, max_batches: int = 200) -> pd.DataFrame | None:
        """Step 4, post-incident: replay what waited in the DLQs, depths before and after.

        WEBHOOKS_DLQ is drained whenever it holds something (batches of the
        runbook's webhooks limit). OUTBOUND_DLQ and ENRICHMENT_DLQ hold the LLM
        jobs the workload could not record while the database was down: after a
        database incident they are drained too when they hold anything (batches
        of the runbook's outbound limit). Each queue is drained until it is empty
        or a batch makes no progress; a check per queue says "0 left". Not
        after a hand-off: the database is not restored yet.
        """
        import pandas as pd

        assert self.branch is not None, "run triage() first"
        if self.branch.name == CORRUPT:
            print("skipped: the database is handed over to restore_incident")
            return None
        s, t = self.s, self.s.profile.targets
        queues: dict[str, dict[str, Any]] = {}
        rows: list[dict[str, Any]] = []
        done = self._drained_in_parent()
        with s.step(DRAIN_STEP):
            before = self._dlq_depths() or {}
            for check, name, queue in self._drains():
                is_llm = queue != "WEBHOOKS_DLQ"
                if queue in done:
                    self._drained_before(queue, done[queue], before.get(queue), queues, rows)
                    continue
                limit = t.outbound_drain_limit if is_llm else t.webhooks_drain_limit
                depth = before.get(queue)
                batches = None
                if depth:
                    # draining changes the server's data: the lock, once
                    self.hold_lock("4. Take the host lock", once=True)
                    batches = s.api.drain_all(name, limit, max_batches)
                left = (self._dlq_depths() or {}).get(queue)
                skipped = s.dry_run and bool(depth)
                why = "dry run: not drained" if skipped else stopped_because(batches, max_batches)
                s.judge(
                    f"{check}: {queue} drained",
                    expected="0 left",
                    ran=not skipped,
                    actual=f"{depth} before, {left} after",
                    passed=left == 0,
                    note=f"batches of {limit}; {why}",
                )
                queues[queue] = {"before": depth, "after": left, "batches": batches, "stopped": why}
                rows.append(
                    {"queue": queue, "before": depth, "after": left, "limit": limit, "how": why}
                )
        table = pd.DataFrame(rows, columns=["queue", "before", "after", "limit", "how"])
        self.drained = {"queues": queues, "table": table}
        return table

    def _drains(self) -> list[tuple[str, str, str]]:
        """The DRAINS this branch replays: the LLM queues only after a database incident."""
        assert self.branch is not None, "run triage() first"
        incident = self.branch.name in (*CHANGING, CORRUPT)
        # No database incident: LLM jobs queued now are scenario 4's (provider down).
        return [d for d in DRAINS if d[2] == "WEBHOOKS_DLQ" or incident]

    def _drained_before(
        self,
        queue: str,
        parent: str,
        now: int | None,
        queues: dict[str, dict[str, Any]],
        rows: list[dict[str, Any]],
    ) -> None:
        """A queue the parent of this resume drained: said, never drained again."""
        plan = self.s.resume
        assert plan is not None
        how = f"drained in run {plan.parent_id}: not again"
        was, _, after = parent.partition(" before, ")
        print(
            f"{queue}: {how} ({parent}); {now} there now"
            + (": they arrived since, a new run drains them" if now else "")
        )
        queues[queue] = {"before": was, "after": after.removesuffix(" after"), "stopped": how}
        rows.append({"queue": queue, "before": was, "after": now, "limit": None, "how": how})

    def _dlq_depths(self) -> dict[str, int] | None:
        """DLQ depths, or None when the API cannot say (it may be the thing that is down)."""
        with self.s.attempt():
            return self.s.api.dlq_depths()
        return None  # it failed: the API cannot say

    # ---------------------------------------------------------------- postmortem

    def postmortem(self) -> str | None:
        """Draft the postmortem (the 5 lines, the timeline, the checks, the evidence) and save
        it as `<YYYY-MM-DD>.md` in the evidence folder (none when no incident was found)."""
        assert self.branch is not None, "run triage() first"
        if self.branch.name == NO_INCIDENT:
            print("no incident found: no postmortem")
            return None
        s, branch = self.s, self.branch
        actions, data = postmortem_facts(
            branch=branch,
            # the lock and the armor are the runbook's own housekeeping, not the fix: the
            # resolution line named the lock's mkdir command first
            changes=[c.what for c in s.changes if not housekeeping(c.step)],
            would_change=[c.what for c in s.would_change if not housekeeping(c.step)],
            drained=self.drained if branch.name != CORRUPT else None,
            handoff=handoff_command(s.env, reason_for_restore(branch)),
        )
        now = utc_now()
        summary = postmortem_summary(
            started=s.started, finished=now, branch=branch, actions=actions, webhooks=data
        )
        record = s.record()
        written = [f for f in EVIDENCE if (s.run_dir / f[0]).exists()]
        text = postmortem_draft.draft(
            record,
            subject=f"database incident: {branch.name}",
            by=f"written by the database_down notebook at {now:%H:%M} UTC",
            summary=summary,
            files=postmortem_draft.run_files(record, *written),
        )
        name = f"{s.started:%Y-%m-%d}.md"
        path = s.evidence.write_text(name, f"<!-- draft for docs/incidents/{name} -->\n" + text)
        # the five lines here; the timeline, every check and the evidence list are in the file
        print(text.split("\n## ", 1)[0].rstrip())
        print(f"\nthe whole draft (timeline, checks, evidence): {path}")
        return text
