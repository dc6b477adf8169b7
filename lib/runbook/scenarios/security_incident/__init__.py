"""Scenario 6, security incident: contain, prove, investigate, preserve, document.

The runbook's steps, each made provable, each one method of `SecurityIncident`:

1. **Rotate all secrets** with the app's own `scripts/rotate_secrets.sh`, restart
   the API, then prove it: the new admin key is read from the server's `.env`
   (never shown: registered with the redactor the moment it is read), the API
   accepts it and refuses the old one.
2. **Lock down SSH** to the operator's address: the address is the one the
   server sees this very SSH connection come from (`$SSH_CONNECTION`), and
   locking down to any other address is refused unless explicitly overridden
   (no self-lockout). Rules are saved first; a revert timer on the server
   undoes the lockdown unless a NEW connection from the operator succeeds.
   A target without a host firewall (the loopback sandbox) reports every
   firewall step as "not available on this target", never as passed.
3. **Investigate**: the auth log and fail2ban's state as tables (accepted and
   failed logins by address and user, first and last seen, banned
   addresses), and admin API calls from unexpected addresses or with a bad key.
4. **Preserve evidence**: a tarball of the nginx, auth and app logs on the
   server, its SHA-256 recorded, a copy downloaded into the evidence folder
   and its hash checked.
5. **Document**: an incident document and a GitHub security advisory draft.

Beside the class: `findings` (what the logs and the steps' results mean: pure)
and `documents` (the incident document, the advisory and the notification as
text: pure). The server operations are runbook.ops: `firewall` (save, lock,
revert timer, the outside probe), `fail2ban`, `logs`, `app_env`; the
operator's secrets file is `SecretStore.update` (runbook.core.secrets).
"""

from __future__ import annotations

import hashlib
import json
from dataclasses import asdict
from pathlib import Path
from typing import TYPE_CHECKING, Any, ClassVar

from runbook.clock import utc_now
from runbook.evidence.resume import refusal as resume_refusal
from runbook.evidence.story import Summary
from runbook.ops import app_env, fail2ban, logs
from runbook.ops.api import KEY_PROBE_PATH
from runbook.ops.fail2ban import fail2ban_status
from runbook.ops.firewall import NOT_AVAILABLE, Firewall, outside_reachable
from runbook.scenarios._base import Scenario, show
from runbook.scenarios.security_incident.documents import (
    ADVISORY_FILE,
    NOTIFY_FILE,
    NOTIFY_WHO,
    Notification,
    RunFacts,
    advisory_draft,
    incident_document,
    notification,
    notification_parts,
)
from runbook.scenarios.security_incident.findings import (
    ROTATED,
    Findings,
    Lockdown,
    Preserved,
    Rotation,
    ban_outcome,
    lockdown_address,
    operator_values,
    rotation_states,
    ssh_client_address,
)

if TYPE_CHECKING:
    from runbook.session import Session

PROBE_PATH = KEY_PROBE_PATH  # the read-only admin endpoint a key is tested on

PREFLIGHT_STEP = "0. Preflight: operator address"
ROTATE_STEP = "1. Rotate all secrets"
LOCKDOWN_STEP = "2. Lock down SSH"
INVESTIGATE_STEP = "3. Investigate"
#: what the rotation and the lockdown did, secret-free, beside the record: a resume
#: that skips them still documents them (read back by `SecurityIncident._from_parent`)
ROTATION_FILE = "rotation.json"
LOCKDOWN_FILE = "lockdown.json"


class SecurityIncident(Scenario):
    """Runbook scenario 6, one method per step. The host lock is taken first, before step 0.

    Example (in a notebook)::

        s, sec = open_scenario("security_incident")
        sec.preflight(); sec.rotate(); sec.lock_down(); sec.investigate(); sec.ban()
        sec.preserve(); sec.draft(); sec.notify()
        s.done()
    """

    # rotated in step 1: checked before any change
    require_secrets = ("admin_key",)

    # a resume (runbook.evidence.resume): a second rotation would lock out whoever took the
    # first new key, so the rotation never runs again, and a rotation that failed is
    # not resumed (nothing on the server tells whether it half happened). The operator's
    # address and the investigation are read-only and set what later steps read: they
    # run again. Locking SSH down again to the same address, banning again and drafting
    # again are safe to repeat (nothing is sent). The completed steps rely on no app
    # HEAD or revision; the host key is checked by every connection.
    resume_once = (ROTATE_STEP,)
    resume_reruns = (PREFLIGHT_STEP, INVESTIGATE_STEP)
    resume_postconditions: ClassVar[dict[str, str]] = {}
    resume_relies_on = ()
    resumable = True

    def __init__(
        self,
        s: Session,
        *,
        allow_ssh_from: str | None = None,
        override_lockout_check: bool = False,
        known_addresses: Any = (),
        update_operator_secrets: bool = True,
        lockdown_revert_seconds: int = 300,
    ):
        super().__init__(s)
        self.allow_ssh_from = allow_ssh_from
        self.override_lockout_check = bool(override_lockout_check)
        self.known_addresses = known_addresses
        self.update_operator_secrets = bool(update_operator_secrets)
        self.lockdown_revert_seconds = int(lockdown_revert_seconds)
        self.operator: str | None = None
        self.lock_to: str | None = None
        self.rotation: Rotation | None = None
        self.lockdown: Lockdown | None = None
        self.findings: Findings | None = None
        self.preserved: Preserved | None = None
        self.doc: Path | None = None
        self.advisory: Path | None = None
        self._from_parent()

    def _from_parent(self) -> None:
        """In a resume: what the parent's rotation and lockdown did, for the documents."""
        plan = self.s.resume
        if plan is None:
            return
        for step, name in ((ROTATE_STEP, ROTATION_FILE), (LOCKDOWN_STEP, LOCKDOWN_FILE)):
            if step not in plan.done:
                continue
            path = plan.parent / name
            if not path.exists():
                raise resume_refusal(
                    f"run {plan.parent_id} did {step!r} but left no {name} saying what it did",
                    "finish the run's remaining steps by hand (the rotation must not run "
                    "again), recorded in the incident document",
                )
            data = json.loads(path.read_text())
            if step == ROTATE_STEP:
                self.rotation = Rotation(output=f"rotated in run {plan.parent_id}", **data)
            else:
                self.lockdown = Lockdown(**data)

    def change_summary(self) -> list[str]:
        """What the response will change, for the confirmation question."""
        s = self.s
        sec = s.profile.security
        where = self.allow_ssh_from or "the address this connection comes from"
        return [
            f"rotate every app secret (the app's rotation script), restart "
            f"{s.services.unit('api')}; the old admin key stops working"
            + ("; your secrets file gets the new values" if self.update_operator_secrets else ""),
            f"lock SSH (port {sec.ssh_port}) down to {where} with {sec.firewall or 'no firewall'}"
            f", reverted after {self.lockdown_revert_seconds} s unless a new connection works",
            "ban the attacking addresses found in the logs",
        ]

    # ------------------------------------------------------------ 0. preflight

    def preflight(self) -> Summary:
        """The host lock, then step 0: the operator's address, and the address SSH is locked to."""
        s = self.s
        self.take_lock()
        with s.step(PREFLIGHT_STEP):
            # the address the server sees this very SSH connection come from
            r = s.probe('echo "$SSH_CONNECTION"', shell=True, warn=True, label="ssh-connection")
            self.operator = ssh_client_address(r.stdout.strip())
            self.lock_to = lockdown_address(
                self.operator, self.allow_ssh_from, override=self.override_lockout_check
            )
            if self.lock_to != self.operator:  # only with the override: recorded
                s.evidence.append(
                    {
                        "kind": "override",
                        "rule": "no-self-lockout",
                        "seen": self.operator,
                        "target": self.lock_to,
                    }
                )
        return Summary(
            f"preflight: the server sees this connection from {self.operator}; "
            f"SSH will be restricted to {self.lock_to}",
            operator=self.operator,
            lock_to=self.lock_to,
        )

    # ------------------------------------------------------- 1. rotate and prove

    def rotate(self) -> Summary:
        """Step 1: rotate with the app's script, restart the API, prove new key in, old key out.

        Records four checks. The old key is the operator's current admin key
        (from the secrets file or environment). Afterwards, the operator's
        secrets file gets the new values (or the run says where to put them),
        otherwise every later notebook would hold a dead key.
        """
        s = self.s
        with s.step(ROTATE_STEP):
            self.rotation = self._rotate()
            kept = {k: v for k, v in asdict(self.rotation).items() if k != "output"}
            s.evidence.write_text(ROTATION_FILE, json.dumps(kept, indent=1) + "\n")
        rot = self.rotation
        if rot.output.strip():
            # the app script's own words (its "next:" is for a person running it by hand:
            # the restart it asks for is done above)
            print("scripts/rotate_secrets.sh said:")
            print(rot.output.rstrip())
        # the four checks are in the definition-of-done table at the end: one line here
        if not rot.rotated:
            line = "rotation: dry run, nothing rotated"
        else:
            keys = ", ".join(f"{k} {v}" for k, v in rot.keys.items())
            line = (
                f"rotation: {keys}; new admin key {rot.new_status}, old admin key "
                f"{rot.old_status}; operator's secrets file: {rot.operator_secrets_updated}"
            )
        return Summary(line, **{k: v for k, v in asdict(rot).items() if k != "output"})

    def _rotate(self) -> Rotation:
        s = self.s
        var = s.profile.secrets.admin_key
        old = s.secrets.get(var)
        assert old is not None
        before = s.api.key_status(old)
        s.check(
            "Old admin key worked before rotation",
            expected="200 (so that its refusal afterwards means something)",
            actual=before,
            passed=before == 200,
            note="the operator's key did not match the server's already" if before != 200 else "",
        )
        # every key the script must change, read (and registered with the redactor) first,
        # so the proof compares each one and not only the admin key
        before_env = {} if s.dry_run else app_env.read(s)
        # the rotation rewrites these .env keys: the tripwire lets exactly them change
        with s.tripwire_allows(list(ROTATED), "Scenario 6 step 1: rotate all secrets"):
            r = s.run(
                ["bash", "scripts/rotate_secrets.sh"], cwd=s.profile.app.dir, label="rotate-secrets"
            )
        if not r.ran:
            # key names only: the values are what the rotation replaces
            s.preview_change(".env keys", [f"{k}: new value (rotated)" for k in ROTATED])
            s.preview_change(
                "services to restart",
                [f"{s.services.unit('api')} ({s.profile.services.manager} restart)"],
            )
            if self.update_operator_secrets:
                s.preview_change(
                    "operator's secrets file",
                    [f"{v}: new value" for v in [var, *(v for v in ROTATED.values() if v)]],
                )
            for name in ("Secrets rotated", "New admin key accepted", "Old admin key refused"):
                s.judge(name, expected="proved", result=r)
            return Rotation(False, "", before, None, None, False, "dry run")
        s.services.restart("api")
        s.api.wait_healthy()
        values = app_env.read(s)
        new = values.get("ADMIN_KEY", "")
        changed = bool(new) and new != old
        states = rotation_states(before_env, values)
        s.check(
            "Secrets rotated",
            expected=f"{' and '.join(ROTATED)} replaced in .env (each compared before/after)",
            actual=", ".join(f"{k} {v}" for k, v in states.items()),
            passed=all(v in ("replaced", "added") for v in states.values()),
            note=r.stdout.splitlines()[0] if r.stdout else "",
        )
        new_status = s.api.key_status(new) if new else None
        s.check("New admin key accepted", expected=200, actual=new_status, passed=new_status == 200)
        old_status = s.api.key_status(old)
        s.check(
            "Old admin key refused",
            expected=401,
            actual=old_status,
            passed=old_status == 401,
            note="the leaked key no longer opens the admin API" if old_status == 401 else "",
        )
        updated = "not asked"
        if self.update_operator_secrets and changed:
            updated = self._update_operator_secrets(operator_values(var, new, values))
        return Rotation(True, r.stdout, before, new_status, old_status, changed, updated, states)

    def _update_operator_secrets(self, values: dict[str, str]) -> str:
        """The new values into the operator's 0600 secrets file; what was done, in words."""
        s = self.s
        path = s.secrets.update(values)
        if path is None:
            return (
                f"no secrets file: set {', '.join(values)} in your environment from the "
                "server's .env"
            )
        s.evidence.append(
            {"kind": "secrets-file", "op": "update", "path": str(path), "names": sorted(values)}
        )
        return f"updated {', '.join(sorted(values))} in {path}"

    # ------------------------------------------------------------ 2. lockdown

    def lock_down(self) -> Summary:
        """Step 2: lock SSH down to one address, proven from a new connection (or reverted),
        and from outside."""
        assert self.lock_to is not None, "run preflight() first"
        s = self.s
        with s.step(LOCKDOWN_STEP):
            self.lockdown = self._restrict_ssh(self.lock_to)
            self._prove_from_outside(self.lockdown)
            s.evidence.write_text(
                LOCKDOWN_FILE, json.dumps(asdict(self.lockdown), indent=1, default=str) + "\n"
            )
        lock = self.lockdown
        if not lock.available:
            line = (
                f"lockdown: not available on {s.env} (no host firewall): restrict SSH to "
                f"{lock.target} by hand; {lock.new_connection or 'no new connection tried'}"
            )
        else:
            show(lock.table())
            done = ", ".join(f"{st['step']} {st['result']}" for st in lock.steps)
            line = (
                f"lockdown: SSH to {lock.target} only ({done}); "
                f"{lock.new_connection or 'no new connection tried'}"
            )
        return Summary(line, **asdict(lock))

    def _restrict_ssh(self, target: str) -> Lockdown:
        """Save the rules, restrict SSH to `target`, prove a new connection still works.

        A revert timer on the server restores the saved rules after
        `lockdown_revert_seconds` unless the new connection succeeds (then it
        is cancelled).
        """
        s = self.s
        sec = s.profile.security
        lock = Lockdown(available=bool(sec.firewall), target=target)
        names = (
            "Firewall rules saved",
            f"SSH restricted to {target}",
            "New SSH connection from the operator works",
        )
        if not sec.firewall:
            ok, how = self._new_connection()
            lock.new_connection = how
            for name in names:
                s.check(
                    name,
                    expected="done and proved",
                    actual=NOT_AVAILABLE,
                    passed=None,
                    note=f"no host firewall on {s.env} (security.firewall is empty)"
                    + (f"; {how}" if name.startswith("New SSH") else ""),
                )
            return lock
        fw = Firewall(s, target)
        r = fw.save()
        lock.saved = fw.saved
        lock.steps.append({"step": "save", "command": r.command, "result": r.status})
        s.judge(
            names[0], expected="saved", result=r, actual=lambda r: fw.saved if r.ok else r.status
        )
        if not r.ran:
            for name in names[1:]:
                s.judge(name, expected="done and proved", result=r)
            return lock
        lock.outside_before, what = outside_reachable(s)
        if lock.outside_before is not None:
            s.check(
                "Outside reaches SSH before lockdown",
                expected="reachable (otherwise the proof after means nothing)",
                actual=what,
                passed=lock.outside_before,
            )
        pid = fw.revert_after(self.lockdown_revert_seconds)
        r = fw.lock()
        lock.steps.append({"step": "lock", "command": r.command, "result": r.status})
        shown = fw.show()
        s.check(
            names[1],
            expected=f"only {target} may reach port {fw.port}",
            actual=f"rules applied ({r.status})",
            passed=r.ok and target in shown.stdout,
            note=shown.tail(5),
        )
        ok, how = self._new_connection()
        lock.new_connection = how
        if ok and pid.isdigit():
            fw.cancel_revert(pid)
            how += "; revert timer cancelled"
        elif not ok:
            how += f"; the revert timer restores {fw.saved} in {self.lockdown_revert_seconds}s"
        s.check(names[2], expected="exit 0", actual=how, passed=ok)
        return lock

    def _new_connection(self) -> tuple[bool, str]:
        """Open a NEW SSH connection (as the operator) and run `true` on it."""
        import paramiko

        s = self.s
        if s.profile.target.transport != "ssh":
            return False, "not an SSH target"
        # any failure to connect is the answer; a refusal is not (the gate latches it)
        with s.attempt(also=(OSError, EOFError, paramiko.SSHException)) as a:
            with s.gate.new_connection() as conn:
                out = conn.execute("true", timeout=20)
        if a.error is not None:
            why = f"{type(a.error).__name__}: {a.error}"
            return False, s.redactor.redact(f"new connection failed: {why}")
        return out.exit_code == 0, f"new connection: exit {out.exit_code}"

    def _prove_from_outside(self, lock: Lockdown) -> None:
        """The DoD's "firewall locked, proved from outside": a connection from another
        address must fail now (and must have worked before, or the proof is empty)."""
        s = self.s
        name = "Firewall locked (proved from outside)"
        how = (
            "no outside vantage point on this target: check from another network "
            f"(`nc -vz -w5 {s.profile.target.host} {s.profile.security.ssh_port}` must time out)"
        )
        if not lock.available:
            s.check(
                name,
                expected="SSH refused from another address",
                actual=NOT_AVAILABLE,
                passed=None,
                note=how,
            )
            return
        if s.dry_run:
            s.judge(name, expected="SSH refused from another address", ran=False)
            return
        reachable, what = outside_reachable(s)
        if reachable is None:
            s.check(
                name,
                expected="SSH refused from another address",
                actual=what,
                passed=None,
                note=how,
            )
            return
        s.check(
            name,
            expected="reachable before, not after",
            actual=f"before: {'reachable' if lock.outside_before else 'not reachable'}; after: {what}",
            passed=bool(lock.outside_before) and not reachable,
        )

    # --------------------------------------------------------- 3. investigate

    def investigate(self) -> Findings:
        """Step 3: logins, fail2ban, admin API calls; nothing on the server changes.

        The known addresses (the operator's, `known_addresses`, loopback) are never flagged.
        """
        with self.s.step(INVESTIGATE_STEP):
            logins = logs.auth_log(self.s)
            f2b = fail2ban_status(self.s)
            requests = logs.access_log(self.s)
            self.findings = Findings.of(logins, f2b, requests, self.operator, self.known_addresses)
        return self.findings

    def ban(self) -> Summary:
        """Step 3b: ban the attackers found and unban authorized addresses; check the result."""
        assert self.findings is not None, "run investigate() first"
        s = self.s
        findings = self.findings
        attackers = findings.attackers
        found = ", ".join(attackers) or "none found"
        with s.step("3b. Ban attackers"):
            if not s.profile.services.fail2ban:
                s.check(
                    "Attacker addresses banned",
                    expected=", ".join(attackers) or "none found",
                    actual=NOT_AVAILABLE,
                    passed=None,
                    note=f"no fail2ban on {s.env}: ban {', '.join(attackers) or 'nothing'} by hand",
                )
                if findings.authorized_banned:
                    s.check(
                        "Authorized addresses unbanned",
                        expected="none banned",
                        actual=NOT_AVAILABLE,
                        passed=None,
                        note=f"banned: {', '.join(findings.authorized_banned)}",
                    )
                return Summary(
                    f"ban: attackers {found}; no fail2ban on {s.env}: ban them by hand",
                    attackers=attackers,
                    banned=[],
                )
            for addr in attackers:
                fail2ban.ban(s, addr)
            for addr in findings.authorized_banned:
                fail2ban.unban(s, addr)
            after = fail2ban_status(s) or {"banned": []}
            out = ban_outcome(attackers, findings.authorized_banned, after["banned"])
            s.judge(
                "Attacker addresses banned",
                expected=", ".join(attackers) or "none found",
                actual=", ".join(out["banned"]) or "none",
                passed=not out["missing"],
                ran=not s.dry_run,
                note=f"not banned: {', '.join(out['missing'])}" if out["missing"] else "",
            )
            if findings.authorized_banned:
                s.judge(
                    "Authorized addresses unbanned",
                    expected="none banned",
                    ran=not s.dry_run,
                    actual=", ".join(out["still"]) or "none banned",
                    passed=not out["still"],
                )
        if s.dry_run:
            line = f"ban: attackers {found}; dry run, nobody banned"
        else:
            line = f"ban: attackers {found}; banned now: {', '.join(out['banned']) or 'none'}"
            if out["missing"]:
                line += f"; NOT banned: {', '.join(out['missing'])}"
        return Summary(line, attackers=attackers, **out)

    # ------------------------------------------------------ 4. preserve evidence

    def preserve(self) -> Preserved:
        """Step 4: tar the nginx, auth and app logs on the server, hash it, download, re-hash."""
        s = self.s
        with s.step("4. Preserve evidence"):
            self.preserved = self._preserve()
        p = self.preserved
        if p.remote is None:
            print("evidence: dry run, no tarball made")
        else:
            same = "hash matches" if p.local_sha256 == p.sha256 else "HASH DIFFERS"
            print(
                f"evidence: {p.remote} ({p.size} bytes, sha256 {p.sha256}); "
                f"copy in evidence/{p.local.name if p.local else '?'}, {same}"
            )
        return p

    def _preserve(self) -> Preserved:
        s = self.s
        sec = s.profile.security
        stamp = utc_now().strftime("%Y%m%dT%H%M%SZ")
        remote = f"{sec.evidence_dir}/incident-{stamp}.tgz"
        r = logs.archive(s, remote)
        if not r.ran:
            s.judge("Evidence preserved", expected="tarball hashed", result=r)
            return Preserved(None, None, None, None)
        h = s.probe(["sha256sum", remote], label="sha256")
        digest = h.stdout.split()[0]
        data = s.read_file(remote)
        local = s.run_dir / "evidence" / Path(remote).name
        local.parent.mkdir(parents=True, exist_ok=True)
        # Byte-exact copy (not redacted): the hash must match the server's.
        local.write_bytes(data)
        local_digest = hashlib.sha256(local.read_bytes()).hexdigest()
        (local.parent / (local.name + ".sha256")).write_text(f"{digest}  {local.name}\n")
        s.check(
            "Evidence tarball hash matches",
            expected=digest,
            actual=local_digest,
            passed=local_digest == digest,
            note=f"{remote} on the server, {len(data)} bytes; copy in evidence/{local.name}",
        )
        s.evidence.append(
            {"kind": "evidence", "remote": remote, "sha256": digest, "bytes": len(data)}
        )
        return Preserved(remote, digest, local, local_digest, len(data))

    # -------------------------------------------------------------- 5. document

    def _facts(self) -> RunFacts:
        s = self.s
        return RunFacts(
            env=s.env,
            host=s.profile.target.host,
            repo=s.profile.github.repo,
            api_url=s.profile.api.base_url,
            started=s.started,
            now=utc_now(),
            elapsed_min=s.elapsed / 60,
            run_dir=s.run_dir,
        )

    def draft(self) -> Summary:
        """Step 5: the incident document and a GitHub security advisory draft (text only)."""
        assert self.findings is not None, "run investigate() first"
        s = self.s
        with s.step("5. Draft incident document"):
            run = self._facts()
            incident = incident_document(
                s.record(), run, self.rotation, self.lockdown, self.findings, self.preserved
            )
            self.doc = s.evidence.write_text(f"incident-{run.day}.md", incident)
            self.advisory = s.evidence.write_text(ADVISORY_FILE, advisory_draft(run, self.findings))
            s.check(
                "Incident document drafted",
                expected="incident document and advisory draft in the evidence folder",
                actual=f"{self.doc.name}, {self.advisory.name}",
                passed=self.doc.stat().st_size > 0 and self.advisory.stat().st_size > 0,
            )
        return Summary(
            f"drafted: {self.doc.name} and {self.advisory.name} in {self.doc.parent}",
            doc=self.doc,
            advisory=self.advisory,
        )

    def notify(self) -> Notification:
        """Step 5b, "Notify Sami": who, what, when and the evidence hashes in `notify-sami.md`,
        a check that every part is there; then the elapsed-time check.

        Nothing is sent from here: the profiles name no notification channel, and a
        message claiming "sent" that nobody received is worse than none. The run
        says "drafted, send it now" and records that decision.
        """
        assert self.doc is not None and self.findings is not None, "run draft() first"
        s = self.s
        doc, preserved, to = self.doc, self.preserved, NOTIFY_WHO
        with s.step("5b. Notify Sami"):
            doc_sha = hashlib.sha256(doc.read_bytes()).hexdigest() if doc.exists() else None
            text = notification(
                self._facts(),
                {c.name: c.status for c in s.checks},
                doc.name,
                doc_sha,
                preserved,
                self.findings,
                to=to,
            )
            path = s.evidence.write_text(NOTIFY_FILE, text)
            written = path.read_text()
            parts = notification_parts(
                written,
                to=to,
                doc_sha=doc_sha,
                tarball_sha=preserved.sha256 if preserved else None,
            )
            missing = [k for k, ok in parts.items() if not ok]
            s.check(
                f"Notification to {to.split(' (')[0]} drafted",
                expected="who, what, when and the evidence hashes in notify-sami.md",
                actual=(
                    f"{path.name}: drafted, NOT sent: send it now"
                    if not missing
                    else f"{path.name}: missing {', '.join(missing)}"
                ),
                passed=not missing,
            )
            s.decide(
                "Notify the runbook owner",
                "drafted; a person sends it",
                "the profile names no notification channel, so this run cannot send it and "
                "does not claim it was sent",
            )
            print(f"DRAFTED, NOT SENT: send {path.name} to {to} now")
            self._elapsed_check()
        print(text)
        return Notification(path, text, hashlib.sha256(written.encode()).hexdigest(), sent=False)

    def _elapsed_check(self) -> None:
        """The DoD's 1-hour target, measured from the session's start (after the notification)."""
        s = self.s
        target = s.profile.targets.incident_doc_minutes
        minutes = s.elapsed / 60
        s.judge(
            f"Contained and documented within {target:.0f} min",
            expected=f"<= {target:.0f} min",
            ran=not s.dry_run,  # a dry run contained nothing: its speed proves nothing
            actual=f"{minutes:.1f} min",
            passed=minutes <= target,
        )
