"""Runbook scenario 2, rollback (notebooks/rollback.ipynb): one method per step.

What deploy and rollback share (the app on the server, migrations, health) is
runbook.scenarios._release.
"""

from __future__ import annotations

import json
import time
from datetime import UTC, datetime
from pathlib import Path
from typing import TYPE_CHECKING, Any, ClassVar

from runbook.clock import iso, utc_now, wait_for
from runbook.core.output import Progress
from runbook.core.paths import outputs_dir
from runbook.errors import ParameterError, RunbookError
from runbook.evidence.story import Summary, Text
from runbook.ops.sentry import SENTRY_BUCKET_S, Sentry
from runbook.scenarios._base import show
from runbook.scenarios._release import (
    MIGRATIONS_DIR,
    SHA,
    Release,
    arrived_at,
    deep_green,
    error_rate_ok,
    find_detection,
    heads,
    migration_chain,
)

if TYPE_CHECKING:
    from runbook.session import Session


# --------------------------------------------------------------------------
# scenario 2: rollback


DOWNGRADE_STEP = "3. Downgrade migrations (bad code still checked out)"


class Rollback(Release):
    """Runbook scenario 2, one method per step; the clock is the session's (first cell)."""

    # a resume (runbook.evidence.resume): the announcement went out once and the downgrade
    # ran once; neither runs again. The plan is read-only and sets what the later steps
    # read (the last good SHA, the target revision), so it runs again, from the server
    # as the parent left it. A downgrade that failed first checks whether the database
    # already is at the last good SHA's head. The completed steps rely on the app's
    # HEAD and the alembic revision the parent left.
    resume_once = ("1. Announce", DOWNGRADE_STEP)
    resume_reruns = ("2. Determine what the bad deploy added",)
    resume_postconditions: ClassVar[dict[str, str]] = {DOWNGRADE_STEP: "_downgraded_already"}
    resume_relies_on = ("app_head", "alembic_revision")
    resumable = True

    def __init__(
        self,
        session: Session,
        reason: str | None,
        *,
        issue_number: int | None = None,
        health_wait: float | None = None,
        error_rate_minutes: float | None = None,
    ):
        super().__init__(session, health_wait)
        reason = (reason or "").strip()
        if not reason:
            raise ParameterError(
                "reason is required: why are we rolling back? e.g. "
                '-p reason "/health/deep red after deploy of 1a2b3c4" (it is announced and '
                "recorded in the evidence)",
                key="reason",
            )
        self.reason = reason
        self.issue_number = int(issue_number) if issue_number not in (None, "", 0) else None
        targets = session.profile.targets
        self.target_s = float(targets.rollback_minutes) * 60
        minutes = targets.watch_minutes if error_rate_minutes is None else error_rate_minutes
        # at least two whole Sentry buckets, so a stopped spike can show as stopped
        self.error_rate_wait = max(float(minutes) * 60, 3.0 * SENTRY_BUCKET_S)
        self.last_good: str | None = None
        self.head: str | None = None
        self.current: str | None = None
        self.target_rev: str | None = None
        self.to_undo: list[str] = []
        self.complete_s: float | None = None
        self.complete_at: float | None = None
        self.deployed_at: float | None = None

    # -- step 1 -----------------------------------------------------------
    def announce(self) -> None:
        s = self.s
        with s.step("1. Announce"):
            text = f"Rolling back {s.env} to last good SHA due to {self.reason}."
            s.evidence.write_text(
                "announcement.txt",
                f"{iso(utc_now())} {text}\nOperator: {s.record()['operator']}\n",
            )
            s.evidence.append({"kind": "announce", "text": text})
            print(text)
            where = "recorded in the evidence (announcement.txt)"
            if self.issue_number:
                token = s.secrets.get(s.profile.secrets.github_token, required=False)
                if not token:
                    s.check(
                        "Announced",
                        expected="comment on the GitHub issue",
                        actual="no GitHub token in the secrets",
                        passed=False,
                    )
                    return None
                resp = s.github.post(
                    f"/repos/{s.profile.github.repo}/issues/{self.issue_number}/comments",
                    json={"body": text},
                    headers={"Authorization": f"Bearer {token}"},
                    changing=True,
                    accept=(201,),
                )
                if resp.dry_run:
                    where += f"; dry run: would comment on issue #{self.issue_number}"
                else:
                    url = (resp.json() or {}).get("html_url", "")
                    where += f"; commented on issue #{self.issue_number} {url}".rstrip()
            s.check("Announced", expected="reason recorded", actual=where, passed=True)
            print(f"announced: {where}")
            return None

    # -- step 2: what to undo ----------------------------------------------
    def plan(self) -> None:
        """Last good SHA, the bad deploy's migrations, and the approval rule: before any change."""
        import pandas as pd

        s = self.s
        with s.step("2. Determine what the bad deploy added"):
            last_good = self.read_last_good()
            if not last_good or not SHA.match(last_good):
                raise ParameterError(
                    f"{self.app.last_good_sha_file} holds no SHA ({last_good!r}): find the last "
                    "good commit in the deploy records (outputs/<env>/deploy/*/record.json)",
                    key="last_good_sha",
                )
            s.git.rev_parse(last_good)  # the commit must be in the server's checkout
            self.last_good = last_good
            self.head = s.git.head()
            self.current = s.alembic.current()
            head_revs = self.revisions_at("HEAD")
            good_revs = self.revisions_at(last_good)
            good_heads = heads(good_revs)
            if len(good_heads) > 1:
                raise ParameterError(f"the last good SHA has several alembic heads: {good_heads}")
            self.target_rev = good_heads[0] if good_heads else None
            added = s.git.read(
                "diff",
                "--name-only",
                "--diff-filter=A",
                last_good,
                "HEAD",
                "--",
                MIGRATIONS_DIR,
                label="git-diff",
            ).stdout.split()
            try:
                self.to_undo = migration_chain(head_revs, self.current, self.target_rev)
            except ValueError as exc:
                raise ParameterError(
                    f"cannot get from the database's revision {self.current} down to the last "
                    f"good SHA's head {self.target_rev} with this checkout's migrations ({exc}); "
                    "stop and ask for help: this needs a hand-made plan",
                    key="migrations",
                ) from None
            r = s.git.read("log", "-1", "--format=%ct", "HEAD", label="git-log")
            reflog = s.git.read(
                "reflog",
                "-50",
                "--date=unix",
                "--format=%H %gd",
                "HEAD",
                warn=True,
                label="git-reflog",
            ).stdout
            when = arrived_at(reflog, self.head)
            self.deployed_at = when if when is not None else float(r.stdout.strip() or time.time())
            plan = pd.DataFrame(
                [
                    ("last good SHA (.last_good_sha)", last_good[:12]),
                    ("checked out now (bad deploy)", self.head[:12]),
                    ("running now", (self.running_sha() or "no answer")[:12]),
                    ("database revision now", self.current),
                    ("last good SHA's alembic head", self.target_rev),
                    ("migration files the bad deploy added", ", ".join(added) or "none"),
                    ("downgrades needed (newest first)", ", ".join(self.to_undo) or "none"),
                ],
                columns=["what", "value"],
            )
            show(plan)
            if s.dry_run:
                self.preview()
            s.evidence.append(
                {
                    "kind": "rollback",
                    "event": "plan",
                    "last_good": last_good,
                    "head": self.head,
                    "current": self.current,
                    "target": self.target_rev,
                    "to_undo": self.to_undo,
                    "added_files": added,
                }
            )
            steps = len(self.to_undo)
            if steps > 1:
                s.enforce(s.guards.check_downgrade, steps, f"alembic downgrade -{steps}")
            # Not a check: a refusal raised above, so "allowed" could never fail here.
            s.decide(
                "Downgrades",
                f"{steps} step(s)",
                "none needed: the bad deploy added no applied migration"
                if not steps
                else "one step: allowed without approval (runbook scenario 2, step 3)"
                if steps == 1
                else f"{steps} steps: approved by {s.approved_by}",
            )
            # shown above; kept for code that wants the table
            self.plan_table = plan
            return None

    def preview(self) -> dict[str, list[str]]:
        """Dry run: what the rollback would change (after `plan`, read-only)."""
        s = self.s
        good, head = self.last_good or "", self.head or ""
        log = s.git.read("log", "--oneline", f"{good}..{head}", label="git-log").stdout
        s.preview_change(
            f"commits to leave (git log {good[:7]}..HEAD --oneline)",
            log.splitlines() or [f"none: HEAD already is {good[:12]}"],
        )
        s.preview_change("checkout", [f"{head[:12]} -> {good[:12]} (last good SHA, detached)"])
        s.preview_change(
            f"migrations to undo (alembic downgrade -{len(self.to_undo)}, to {self.target_rev})",
            self.to_undo or [f"none: the database is at {self.current}"],
        )
        self.preview_unchanged_env_and_restart("the rollback")
        return dict(s.preview)

    def change_summary(self) -> list[str]:
        """What the rollback will change, for the confirmation question (after `plan`)."""
        s = self.s
        if self.last_good is None or self.head is None:
            return ["roll back to .last_good_sha (run plan() first to see what changes)"]
        undo = self.to_undo
        return [
            f"migrations: alembic downgrade -{len(undo)} to {self.target_rev} ("
            + (", ".join(undo) if undo else f"none: the database is at {self.current}")
            + ")",
            f"checkout {self.head[:12]} -> {self.last_good[:12]} (last good SHA, detached)",
            f"restart {s.services.unit('api')} ({s.profile.services.manager})",
        ]

    def confirm_plan(self) -> None:
        """Under the lock: the server is still as planned (nobody deployed meanwhile)."""
        s = self.s
        head, current = s.git.head(), s.alembic.current()
        if (head, current) != (self.head, self.current):
            raise RunbookError(
                f"the server changed since the plan (HEAD {self.head[:12] if self.head else '?'} -> "
                f"{head[:12]}, revision {self.current} -> {current}): run the plan again"
            )

    # -- step 3: `take_lock()` (one changing run per host) after the plan, before any
    # change; then downgrade first, with the bad code still checked out
    lock_step = "3. Take the host lock"

    def downgrade(self) -> None:
        s = self.s
        with s.step(DOWNGRADE_STEP):
            self.confirm_plan()
            if not self.to_undo:
                s.check(
                    "Migrations rolled back",
                    expected=f"at {self.target_rev}",
                    actual=f"{self.current}: the bad deploy added none applied",
                    passed=True,
                )
                return
            s.alembic.downgrade(len(self.to_undo))
            now = s.alembic.current()
            s.judge(
                "Migrations rolled back",
                expected=f"at {self.target_rev} (undo {', '.join(self.to_undo)})",
                ran=not s.dry_run,
                actual=now,
                passed=now == self.target_rev,
                note=f"still {now}" if s.dry_run else "",
            )

    def _downgraded_already(self) -> tuple[bool, str]:
        """The downgrade's postcondition: is the database at the last good SHA's head?"""
        current = self.s.alembic.current()
        held = self.target_rev is not None and current == self.target_rev
        return held, (
            f"the database is at {current}, the last good SHA's head is {self.target_rev}"
            + (": already downgraded" if held else ": downgrade still to do")
        )

    # -- step 4: old code ----------------------------------------------------
    def checkout(self) -> None:
        s = self.s
        with s.step("4. Check out the last good SHA + pip install"):
            s.git.checkout(self.last_good or "")
            self.pip_install()

    # -- step 5: restart and verify ---------------------------------------
    def restart(self) -> None:
        with self.s.step("5. Restart service"):
            self.restart_api(self.last_good)

    def verify(self) -> Summary | None:
        """Deep health green on the old SHA; the clock stops here (rollback complete)."""
        s = self.s
        with s.step("6. Verify deep health on the old SHA"):
            if s.dry_run:
                for name in ("Healthy on the last good SHA", "Rollback time"):
                    s.judge(name, expected="see the runbook", ran=False)
                return None
            ok, deep, _ = self.wait_deep_green()
            head, running = s.git.head(), self.running_sha()
            on_old = head == self.last_good and running == self.last_good
            self.complete_s = s.elapsed
            self.complete_at = time.time()
            s.check(
                "Healthy on the last good SHA",
                expected=f"deep health green, HEAD and API on {(self.last_good or '?')[:12]}",
                actual=f"{deep_green(deep)[1]}; HEAD {head[:12]}, API {(running or '?')[:12]}",
                passed=ok and on_old,
            )
            rev = s.alembic.current()
            s.check(
                "Alembic at the last good head",
                expected=self.target_rev,
                actual=rev,
                passed=rev == self.target_rev,
            )
            s.metric("rollback_minutes", self.complete_s / 60, "min", target=self.target_s / 60)
            s.check(
                "Rollback time",
                expected=f"< {self.target_s / 60:g} min from the first cell",
                actual=f"{self.complete_s:.1f} s",
                passed=self.complete_s < self.target_s,
            )
            detected = self.detection()
            from_detection = (
                None if detected is None else round(self.complete_at - detected["at"], 3)
            )
            # A measurement, not a check: the time before the rollback started
            # (someone reading the alert, deciding) is not the notebook's to pass or fail.
            s.metric("seconds_from_detection", from_detection, "s", target=self.target_s)
            # one rollback time on the page (the check's); the time since detection
            # is a metric in the record, said in words
            since = (
                f"; the bad deploy was detected {from_detection:.0f} s before "
                f"(deploy run {Path(detected['run_dir']).name})"
                if detected is not None and from_detection is not None
                else ""
            )
            s.evidence.write_text(
                "rollback_timing.json",
                json.dumps(
                    {
                        "started": iso(s.started),
                        "complete": iso(datetime.fromtimestamp(self.complete_at, UTC)),
                        "seconds_to_complete": round(self.complete_s, 3),
                        "target_seconds": self.target_s,
                        "bad_sha": self.head,
                        "detected": None if detected is None else detected["ts"],
                        "detected_in_run": None if detected is None else detected["run_dir"],
                        "seconds_from_detection": from_detection,
                    },
                    indent=2,
                ),
            )
            return Summary(
                f"rollback complete: {self.complete_s:.1f} s "
                f"(target < {self.target_s / 60:g} min){since}",
                seconds=round(self.complete_s, 3),
                seconds_from_detection=from_detection,
            )

    def detection(self) -> dict[str, Any] | None:
        """When a deploy run of this environment logged "bad deploy detected" for the SHA
        being rolled back (`find_detection`), looked up in the outputs folder of the evidence."""
        s = self.s
        places = [outputs_dir() / s.env / "deploy", s.run_dir.parent.parent / "deploy"]
        seen: set[Path] = set()
        for place in places:
            place = place.resolve()
            if place in seen:
                continue
            seen.add(place)
            found = find_detection(place, self.head, until=self.complete_at)
            if found is not None:
                return found
        return None

    # -- DoD: Sentry error rate back to baseline --------------------------
    def error_rate(self) -> Summary:
        s = self.s
        with s.step("DoD. Sentry error rate back to baseline"):
            if s.dry_run or self.complete_at is None:
                s.judge(
                    "Sentry error rate at baseline",
                    expected="<= baseline",
                    ran=not s.dry_run,
                    actual="rollback not complete",
                    passed=None,
                )
                return Summary(
                    "error rate: dry run" if s.dry_run else "error rate: rollback not complete"
                )
            sentry = Sentry(s)
            try:
                deployed = self.deployed_at or self.complete_at
                baseline = sentry.rate(deployed - 1800, deployed - SENTRY_BUCKET_S) or 0.0
                spike = sentry.rate(deployed, self.complete_at)
                since = self.complete_at
                recent: float | None = None

                def settled() -> bool:
                    nonlocal recent
                    recent = sentry.rate(since, time.time())
                    return recent is not None and error_rate_ok(recent, baseline)

                progress = Progress(
                    f"Sentry error rate (baseline {baseline:.1f}/min)", seconds=self.error_rate_wait
                )

                def said(ok: bool, waited: float) -> None:
                    rate = "no data" if recent is None else f"{recent:.1f}/min"
                    verdict = "at baseline" if ok else "not yet at baseline"
                    progress.say(f"{rate}, {verdict}", waited=waited, final=True)

                ok, waited = wait_for(settled, self.error_rate_wait, 2.0, on_poll=said)
            finally:
                sentry.close()
            numbers = {
                "baseline_per_min": round(baseline, 2),
                "during_bad_deploy_per_min": None if spike is None else round(spike, 2),
                "after_rollback_per_min": None if recent is None else round(recent, 2),
                "waited_s": round(waited, 1),
            }
            s.evidence.append({"kind": "rollback", "event": "error-rate", **numbers})
            s.check(
                "Sentry error rate at baseline",
                expected=f"<= max(2 x baseline, baseline + 5)/min, baseline {baseline:.1f}/min",
                actual=(
                    f"{'n/a' if recent is None else f'{recent:.1f}'}/min after the rollback "
                    f"(during the bad deploy {'n/a' if spike is None else f'{spike:.1f}'}/min)"
                ),
                passed=ok,
            )
            after = numbers["after_rollback_per_min"]
            return Summary(
                f"error rate {'n/a' if after is None else after}/min after the rollback, "
                f"baseline {numbers['baseline_per_min']}/min: "
                + ("back to baseline" if ok else "NOT back to baseline"),
                **numbers,
            )

    def reminder(self) -> Text:
        text = (
            "Rollback done. The fix goes through a PR to main (main is protected: no commits or "
            "pushes from the server), then the deploy notebook. The server is on a detached HEAD "
            f"at {(self.last_good or '?')[:12]} until then."
        )
        return Text(text)
