"""Runbook scenario 1, routine deploy (notebooks/deploy.ipynb): one method per step.

What deploy and rollback share (the app on the server, migrations, health) is
runbook.scenarios._release.
"""

from __future__ import annotations

import contextlib
import time
from collections.abc import Iterator
from typing import TYPE_CHECKING, ClassVar

from runbook.clock import utc_now, wait_for
from runbook.core.output import Progress
from runbook.errors import Forbidden, HTTPFailed, ParameterError
from runbook.evidence.story import Summary, Text
from runbook.ops.posthog import PostHog
from runbook.ops.sentry import SENTRY_BUCKET_S, Sentry, per_minute
from runbook.scenarios._base import in_kernel, show
from runbook.scenarios._release import (
    DETECTED_EVENT,
    Release,
    deep_green,
    error_rate_ok,
    heads,
    migration_chain,
    rollback_command,
    snapshot_decision,
)

if TYPE_CHECKING:
    import pandas as pd

    from runbook.session import Session


# --------------------------------------------------------------------------
# scenario 1: deploy


class Deploy(Release):
    """Runbook scenario 1, one method per step; checks land in the session."""

    # a resume (runbook.evidence.resume): the snapshot must not run twice (it would record
    # the half-deployed state as the last good SHA); the CI gate is read-only and sets
    # the commit to deploy, so it runs again; pulling again is harmless, and checks first
    resume_once = ("3. Snapshot current state",)
    resume_reruns = ("1. Verify CI green on main",)
    resume_postconditions: ClassVar[dict[str, str]] = {
        "4. Pull + install + migrate": "_pulled_already"
    }
    resume_relies_on = ("app_head", "alembic_revision")
    resumable = True

    def __init__(
        self,
        session: Session,
        *,
        watch_minutes: float | None = None,
        health_wait: float | None = None,
    ):
        super().__init__(session, health_wait)
        targets = session.profile.targets
        self.watch_minutes = float(
            targets.watch_minutes if watch_minutes is None else watch_minutes
        )
        if self.watch_minutes < 0:
            raise ParameterError("watch_minutes must be >= 0", key="watch_minutes")
        self.probe_seconds = float(targets.sentry_probe_seconds)
        self.target_sha: str | None = None
        self.previous_sha: str | None = None
        self.head_before: str | None = None
        self.rev_before: str | None = None
        self.running_before: str | None = None
        self.started_at = time.time()
        self.changes_started = False
        self.healthy: bool | None = None
        self.failure: str | None = None
        self.hint_shown = False
        # why the watch window ended early (its first red poll), or None
        self.watch_stopped: str | None = None

    # -- failure handling ------------------------------------------------
    def rollback_hint(self) -> str:
        reason = self.failure or "deploy failed"
        sha = (self.target_sha or "?")[:7]
        return rollback_command(
            self.s.env, f"deploy of {sha}: {reason}", confirm=not self.s.profile.is_sandbox
        )

    def _say_rollback(self) -> None:
        if self.hint_shown:
            return
        self.hint_shown = True
        cmd = self.rollback_hint()
        self.s.evidence.append(
            {
                "kind": "deploy",
                "event": DETECTED_EVENT,
                # the rollback's clock reads this line: which SHA went bad, and when
                "sha": self.target_sha,
                "failure": self.failure,
                "rollback": cmd,
            }
        )
        print(
            "DEPLOY FAILED: " + (self.failure or "see above") + "\n"
            "Roll back now (runbook scenario 2, target < 5 min): run the next command below "
            "headless, or step through notebooks/rollback.ipynb with the same parameters."
        )
        self.s.set_next_command(cmd)

    @contextlib.contextmanager
    def step(self, name: str) -> Iterator[None]:
        """`session.step`, and on an error after the first change: the rollback command."""
        with self.s.step(name):
            try:
                yield
            except Exception as exc:
                if self.changes_started and not self.s.dry_run:
                    self.failure = self.failure or f"{name} failed ({type(exc).__name__})"
                    if self._untouched():
                        self._say_nothing_deployed()
                    else:
                        self._say_rollback()
                raise

    def _untouched(self) -> bool:
        """True when the failed step left the server as the snapshot saw it (nothing live)."""
        with self.s.attempt():
            head = self.s.git.head()
            return (
                self.head_before is not None
                and head == self.head_before
                and self.running_sha() == self.running_before
                and self.s.alembic.current() == self.rev_before
            )
        return False  # cannot tell: assume the worst and say how to roll back

    def _say_nothing_deployed(self) -> None:
        sha = (self.running_before or "?")[:12]
        self.s.evidence.append(
            {"kind": "deploy", "event": "stopped, nothing deployed", "failure": self.failure}
        )
        print(
            f"DEPLOY STOPPED: {self.failure}\n"
            f"Nothing went live: the server still runs {sha}, checkout and migrations unchanged. "
            "No rollback needed: fix the cause (for a failed `pull --ff-only`, commits on the "
            "server that are not on main: drift, which goes through a PR) and deploy again."
        )

    # -- step 1 -----------------------------------------------------------
    def ci_gate(self) -> Summary:
        """CI green on main (the last three runs completed/success, one of them on the commit
        to deploy); otherwise abort before any change, showing the runs."""
        s = self.s
        with s.step("1. Verify CI green on main"):
            branch = s.profile.github.branch
            self.target_sha = s.git.origin_sha(branch)
            green, runs = s.github.ci_green(3)
            covered = bool(self.target_sha) and self.target_sha in set(runs["head_sha"])
            s.check(
                "CI green on main",
                expected="last 3 runs completed / success",
                actual=", ".join(
                    f"{a}/{b}" for a, b in zip(runs["status"], runs["conclusion"], strict=True)
                )
                or "no runs",
                passed=green,
            )
            s.check(
                "CI ran on the commit to deploy",
                expected=f"a run on {(self.target_sha or '?')[:12]} (origin/{branch})",
                actual="yes" if covered else "no run on it among the last 3",
                passed=covered,
            )
            if not (green and covered):
                show(runs)  # the cell raises: show the runs that made us abort
                raise Forbidden(
                    "ci-green-before-deploy",
                    f"deploy {(self.target_sha or '?')[:12]} to {s.env}",
                    source="Scenario 1 step 1: all three latest must be completed/success. "
                    "If not, abort.",
                    why="CI is not green for the commit on main; nothing was changed",
                )
            self.ci_runs = runs
            return Summary(
                f"CI green: the last {len(runs)} runs on {branch} passed, one on "
                f"{(self.target_sha or '?')[:12]} (the commit to deploy)",
                runs=runs,
                target_sha=self.target_sha,
            )

    # -- step 2: `take_lock()`, SSH to the server and take the host lock (one changing
    # run per host), as a step
    lock_step = "2. Take the host lock"

    # -- step 3 -----------------------------------------------------------
    def snapshot(self) -> Summary:
        """`.last_good_sha` only when the current deployment is healthy; `.env` backed up."""
        s = self.s
        with self.step("3. Snapshot current state"):
            head = s.git.head()
            running = self.running_sha()
            deep = s.api.deep_health()
            healthy, summary = deep_green(deep)
            before = self.read_last_good()
            write, why = snapshot_decision(head, running, healthy)
            self.previous_sha = head if write else before
            if write and before != head:
                s.write_file(self.app.last_good_sha_file, (head + "\n").encode())
            # the write a dry run skipped is "not run", never a pass
            skipped = s.dry_run and write and before != head
            s.judge(
                "Snapshot: .last_good_sha is a healthy SHA",
                expected="written only when deep health is green and HEAD is running",
                ran=not skipped,
                actual=(
                    f"{head[:12]} recorded"
                    if write and before != head
                    else f"{head[:12]} already recorded"
                    if write
                    else f"kept {(before or 'none')[:12]}"
                ),
                passed=True if write else (before is not None and before != head),
                note=(f"would record {head[:12]}; " if skipped else "")
                + why
                + f" (deep health: {summary})",
            )
            backup = s.backup_file(self.app.env_file)
            s.judge(
                ".env backed up",
                expected=".env.bak.<UTC time>",
                ran=not s.dry_run,
                actual=backup,
                passed=True,
                note=f"would copy to {backup}" if s.dry_run else "",
            )
            info = {
                "head": head,
                "running": running,
                "deep_health": summary,
                "last_good_before": before,
                "last_good_after": head if write else before,
                "env_backup": backup,
            }
            s.evidence.append({"kind": "deploy", "event": "snapshot", **info})
            kept = (
                f"last good SHA {head[:12]}"
                if write
                else f"last good SHA kept {(before or '?')[:12]}"
            )
            return Summary(f"snapshot: running {head[:12]}, {summary}; {kept}", **info)

    # -- step 4 -----------------------------------------------------------
    def pull_install_migrate(self) -> Summary:
        """fetch, checkout main, pull --ff-only, pip install -r, alembic upgrade head."""
        s = self.s
        branch = s.profile.github.branch
        with self.step("4. Pull + install + migrate"):
            rev_before = s.alembic.current()
            self.head_before, self.rev_before = s.git.head(), rev_before
            self.running_before = self.running_sha()
            self.changes_started = True
            if s.dry_run:
                self.preview()
            s.git.fetch()
            s.git.checkout(branch)
            s.git.pull_ff_only("origin", branch)
            self.pip_install()
            s.alembic.upgrade("head")
            rev_after = s.alembic.current()
            head = s.git.head()
            heads_now = s.alembic.heads()
            try:
                applied = migration_chain(self.revisions_at("HEAD"), rev_after, rev_before)
            except ValueError:
                applied = []
            s.judge(
                "Checked out the commit to deploy",
                expected=(self.target_sha or "?")[:12],
                ran=not s.dry_run,
                actual=head[:12],
                passed=head == self.target_sha,
                note=f"still {head[:12]}" if s.dry_run else "",
            )
            s.judge(
                "Migrations at head",
                expected=", ".join(heads_now),
                ran=not s.dry_run,
                actual=f"{rev_before} -> {rev_after}"
                + (f" (applied {', '.join(reversed(applied))})" if applied else " (none new)"),
                passed=rev_after in heads_now,
                note=f"still {rev_before}" if s.dry_run else "",
            )
            info = {
                "migrations_before": rev_before,
                "migrations_after": rev_after,
                "applied": list(reversed(applied)),
                "head": head,
            }
            s.evidence.append({"kind": "deploy", "event": "migrated", **info})
            moved = (
                "dry run: nothing pulled or migrated" if s.dry_run else f"checked out {head[:12]}"
            )
            return Summary(
                f"{moved}; alembic {rev_before} -> {rev_after}"
                + (f" (applied {', '.join(info['applied'])})" if info["applied"] else ""),
                **info,
            )

    def _pulled_already(self) -> tuple[bool, str]:
        """Step 4's postcondition: the checkout is the commit to deploy, migrations at head."""
        s = self.s
        head, rev, heads_now = s.git.head(), s.alembic.current(), s.alembic.heads()
        held = bool(self.target_sha) and head == self.target_sha and rev in heads_now
        return held, (
            f"HEAD {head[:12]} (to deploy: {(self.target_sha or '?')[:12]}), "
            f"database at {rev} (heads: {', '.join(heads_now)})"
        )

    def preview(self) -> dict[str, list[str]]:
        """Dry run: what step 4 and 5 would change, read on the server without changing it.

        The commits come from the origin's objects, fetched without touching a
        ref (`--refmap=` and no FETCH_HEAD: HEAD, branches, remote-tracking refs
        and the working tree stay as they are; the unreferenced objects are
        git's to prune). The migrations are read from the commit to deploy
        (`git show`, no checkout), compared with the database's revision.
        """
        s = self.s
        branch = s.profile.github.branch
        target = self.target_sha or s.git.origin_sha(branch)
        if target is None:
            s.preview_change("commits", [f"cannot tell: origin has no branch {branch}"])
            return dict(s.preview)
        # fetches the origin's objects first: the log below needs them
        current, items = self.migrations_to_apply(target)
        head = s.git.head()
        log = s.git.read("log", "--oneline", f"HEAD..{target}", label="git-log").stdout
        s.preview_change(
            f"commits (git log HEAD..origin/{branch} --oneline)",
            log.splitlines() or [f"none: HEAD {head[:12]} already is origin/{branch}"],
        )
        s.preview_change("checkout", [f"{head[:12]} -> {target[:12]} (origin/{branch})"])
        s.preview_change(f"migrations to apply (alembic upgrade head, from {current})", items)
        self.preview_unchanged_env_and_restart("the deploy")
        return dict(s.preview)

    def migrations_to_apply(self, target: str) -> tuple[str | None, list[str]]:
        """The database's revision and the migrations `alembic upgrade head` would apply at
        `target` (read-only: the origin's objects fetched without touching a ref)."""
        s = self.s
        branch = s.profile.github.branch
        s.git.read(
            "fetch",
            "--quiet",
            "--no-write-fetch-head",
            "--refmap=",
            "origin",
            f"refs/heads/{branch}",
            label="git-fetch-objects",
        )
        current = s.alembic.current()
        files = self.migration_files_at(target)
        revs = {r: down for r, (down, _) in files.items()}
        found = heads(revs)
        try:
            if len(found) != 1:
                raise ValueError(f"{len(found)} alembic heads at {target[:12]}: {found}")
            todo = list(reversed(migration_chain(revs, found[0], current)))
            items = [f"{r} ({files[r][1]})" for r in todo] or [
                f"none: the database is at {current}"
            ]
        except ValueError as exc:
            items = [f"cannot tell: {exc}"]
        return current, items

    def change_summary(self) -> list[str]:
        """What the deploy will change, for the confirmation question (read-only)."""
        s = self.s
        branch = s.profile.github.branch
        target = self.target_sha or s.git.origin_sha(branch)
        if target is None:
            return [f"deploy origin/{branch}: origin has no such branch (the run will stop)"]
        head = s.git.head()
        current, items = self.migrations_to_apply(target)
        return [
            f"deploy {head[:12]} -> {target[:12]} (origin/{branch}), pip install -r requirements",
            f"migrations to apply (from {current}): {', '.join(items)}",
            f"restart {s.services.unit('api')} ({s.profile.services.manager})",
            ".env backed up; .last_good_sha written if the running deploy is healthy",
        ]

    # -- step 5 -----------------------------------------------------------
    def restart(self) -> None:
        with self.step("5. Restart service"):
            self.restart_api(self.target_sha)

    # -- step 6 -----------------------------------------------------------
    def verify_health(self) -> Summary:
        """/health, /health/deep (postgres, redis, llm_providers green), pricing plans > 0."""
        s = self.s
        with self.step("6. Health verification"):
            live = s.api.health()
            s.check("Liveness", expected="200 OK", actual=live.status, passed=live.status == 200)
            ok, deep, waited = self.wait_deep_green()
            summary = deep_green(deep)[1]
            s.check(
                "Deep health",
                expected="postgres + redis + llm_providers green",
                actual=f"{deep.get('http_status')}: {summary}"
                + ("" if ok else f" (waited {waited:.0f} s)"),
                passed=ok,
            )
            try:
                plans = len(s.api.pricing_plans())
            except (HTTPFailed, KeyError, TypeError) as exc:
                plans, note = 0, f"{type(exc).__name__}"
            else:
                note = ""
            s.check("Pricing plans", expected="> 0", actual=plans, passed=plans > 0, note=note)
            self.healthy = live.status == 200 and ok and plans > 0
            if not self.healthy and not s.dry_run:
                bad = [c.name for c in s.checks[-3:] if c.passed is False]
                self.failure = f"{' and '.join(bad) or 'health'} red after deploy"
                self._say_rollback()
            return Summary(
                f"health: {'green' if self.healthy else 'RED'} (liveness {live.status}, "
                f"deep health {summary}, {plans} pricing plans)",
                healthy=self.healthy,
            )

    # -- step 7 -----------------------------------------------------------
    def probes(self) -> Summary:
        """Trigger admin/sentry-check; confirm through Sentry's and PostHog's APIs."""
        s = self.s
        with self.step("7. Sentry + PostHog probes"):
            if self.healthy is False and not s.dry_run:
                for name in ("Sentry probe received", "PostHog probe received"):
                    s.check(
                        name,
                        expected="event via API",
                        actual="skipped: health red",
                        passed=False,
                        note="roll back first",
                    )
                return Summary("probes skipped: health red, roll back first")
            sent_at = utc_now()
            resp = s.api.sentry_check()
            if not resp.ran:
                for name in ("Sentry probe received", "PostHog probe received"):
                    s.judge(name, expected="event via API", result=resp)
                return Summary("dry run: no probe sent")
            event_id = (resp.json() or {}).get("sentry_event_id", "")
            sentry, posthog = Sentry(s), PostHog(s)
            try:
                seen = Progress("waiting for the probe in Sentry", seconds=self.probe_seconds)
                got, waited = wait_for(
                    lambda: sentry.has_event(event_id), self.probe_seconds, on_poll=seen.poll
                )
                s.check(
                    "Sentry probe received",
                    expected=f"event {event_id[:12]} in Sentry within {self.probe_seconds:.0f} s",
                    actual=f"after {waited:.1f} s" if got else "not seen",
                    passed=got,
                )
                seen = Progress("waiting for the probe in PostHog", seconds=self.probe_seconds)
                got_ph, waited_ph = wait_for(
                    lambda: posthog.has_event("sentry_check", sent_at, sentry_event_id=event_id),
                    self.probe_seconds,
                    on_poll=seen.poll,
                )
                s.check(
                    "PostHog probe received",
                    expected=f"sentry_check event within {self.probe_seconds:.0f} s",
                    actual=f"after {waited_ph:.1f} s" if got_ph else "not seen",
                    passed=got_ph,
                )
            finally:
                sentry.close()
                posthog.close()
            return Summary(
                f"probe {event_id[:12]}: Sentry {'seen' if got else 'NOT seen'}, "
                f"PostHog {'seen' if got_ph else 'NOT seen'}",
                event_id=event_id,
            )

    # -- definition of done: the watch window ---------------------------
    def watch(self, interval: float | None = None) -> Summary:
        """Poll deep health and Sentry's error count for `watch_minutes`, a line per poll, until
        the first red poll; plot; check. The polls are in the result's "polls" (a DataFrame)."""
        import pandas as pd

        s = self.s
        cols = ["t_s", "deep_green", "errors_per_min"]
        with s.step("DoD. Watch window"):
            if s.dry_run or self.healthy is False:
                s.judge(
                    "No error spike during the watch",
                    expected="rate at baseline",
                    ran=not s.dry_run,
                    actual="skipped: health red, roll back first",
                    passed=False,
                )
                why = "dry run" if s.dry_run else "skipped: health red, roll back first"
                return Summary(f"watch: {why}", polls=pd.DataFrame(columns=cols))
            seconds = self.watch_minutes * 60
            step = interval or max(1.0, min(30.0, seconds / 10))
            sentry = Sentry(s)
            try:
                baseline = sentry.rate(self.started_at - 1800, self.started_at) or 0.0
                rows = []
                progress = Progress(f"watch ({self.watch_minutes:g} min on {s.env})")
                t0 = time.time()
                self.watch_stopped = None
                while True:
                    now = time.time()
                    deep = s.api.deep_health()
                    buckets = sentry.stats(now - 60, now)
                    # the last whole bucket, as errors per minute
                    rate = per_minute(buckets, now - 2 * SENTRY_BUCKET_S - 1, now) or 0.0
                    green, summary = deep_green(deep)
                    rows.append(
                        {"t_s": round(now - t0, 1), "deep_green": green, "errors_per_min": rate}
                    )
                    red = [] if green else [f"deep health {summary}"]
                    if not error_rate_ok(rate, baseline):
                        red.append(f"errors {rate:.1f}/min over baseline {baseline:.1f}/min")
                    progress.say(
                        f"{now - t0:5.0f} s of {seconds:.0f} s  deep health "
                        f"{'green' if green else 'RED'}  errors {rate:.1f}/min "
                        f"(baseline {baseline:.1f})",
                        final=True,
                    )
                    if red:
                        # a red poll is the rollback's signal: waiting out the window
                        # (10 min on production) only delays it
                        self.watch_stopped = (
                            f"stopped at the first red poll, {now - t0:.0f} s in: {'; '.join(red)}"
                        )
                        print(f"watch {self.watch_stopped}")
                        s.evidence.append(
                            {"kind": "deploy", "event": "watch stopped", "why": self.watch_stopped}
                        )
                        break
                    if now - t0 >= seconds:
                        break
                    time.sleep(min(step, max(0.0, seconds - (time.time() - t0))))
                whole = sentry.rate(t0, time.time())
            finally:
                sentry.close()
            df = pd.DataFrame(rows, columns=cols)
            self._plot(df, baseline)
            stopped = f" ({self.watch_stopped})" if self.watch_stopped else ""
            s.check(
                "Deep health green during the watch",
                expected=f"green for {self.watch_minutes:g} min",
                actual=f"{int(df['deep_green'].sum())}/{len(df)} polls green{stopped}",
                passed=bool(df["deep_green"].all()),
            )
            peak = float(df["errors_per_min"].max()) if len(df) else 0.0
            worst = max(peak, whole or 0.0)
            s.check(
                "No error spike during the watch",
                expected=f"<= max(2 x baseline, baseline + 5)/min (baseline {baseline:.1f}/min)",
                actual=f"peak {worst:.1f}/min",
                passed=error_rate_ok(worst, baseline),
            )
            verdict = self.watch_stopped or f"{len(df)} polls, all green"
            return Summary(
                f"watch: {verdict}; peak {worst:.1f} errors/min (baseline {baseline:.1f})",
                polls=df,
            )

    def _plot(self, df: pd.DataFrame, baseline: float) -> None:
        import matplotlib

        if not in_kernel():
            matplotlib.use("Agg")  # no display outside a kernel (tests, cron)
        import matplotlib.pyplot as plt

        fig, ax = plt.subplots(figsize=(6, 2.2))
        ax.plot(df["t_s"], df["errors_per_min"], marker="o", label="Sentry errors/min")
        ax.axhline(baseline, linestyle="--", color="grey", label="baseline")
        red = df[~df["deep_green"].astype(bool)]
        if len(red):
            ax.scatter(
                red["t_s"],
                red["errors_per_min"],
                color="red",
                zorder=3,
                label="deep health not green",
            )
        ax.set_xlabel("seconds into the watch")
        ax.set_ylabel("errors / min")
        ax.set_title(f"Watch window: {self.watch_minutes:g} min on {self.s.env}")
        ax.legend(loc="upper right", fontsize="small")
        fig.tight_layout()
        fig.savefig(self.s.run_dir / "watch.png", dpi=80)
        if in_kernel():
            show(fig)
        plt.close(fig)

    def advice(self) -> Text:
        """What to do now: all good, or the exact rollback command line (plain text)."""
        failed = [c.name for c in self.s.checks if c.passed is False]
        if self.s.dry_run:
            msg = "Dry run: nothing was changed. Run again without dry_run to deploy."
        elif not failed:
            msg = f"Deploy of {(self.target_sha or '?')[:12]} is healthy. Keep watching Sentry."
        else:
            self.failure = self.failure or f"{', '.join(failed)} failed"
            self._say_rollback()
            msg = f"next: {self.rollback_hint()}"
        return Text(msg)
